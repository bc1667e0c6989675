"""Every registered block family: contract, identity, gradients, capture, save/load, references.

The contract tests run over every built-in name in ``list_attention()``, so a
block added later is covered without touching this file (give it small
settings in ``SMALL`` if its defaults do not fit a 16x16 map).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import (
    bottleneck_attn,
    cbam,
    coord_attn,
    global_context,
    halo_attn,
    lambda_layer,
    non_local_attn,
    selective_kernel,
    split_attn,
)
from timm.layers.eca import EcaModule
from torch import nn

import attnviz
from attnviz.blocks import KINDS, attention_block, attention_info, list_attention
from attnviz.errors import AttnvizError

C, H, W = 16, 16, 16
BUILTIN = [n for n in list_attention() if attention_info(n).builtin]
REPLACING = [n for n in BUILTIN if attention_info(n).replaces]
EXACT = [n for n in BUILTIN if attention_info(n).identity_exact]
#: Settings that fit 16 channels on a 16x16 map (defaults are sized for ImageNet stages).
SMALL = {
    "bat": {"block_size": 4},
    "halo": {"block_size": 4, "halo_size": 1, "num_heads": 2},
    "bottleneck": {"num_heads": 2},
    "lambda": {"num_heads": 2, "dim_head": 4, "r": 5},
}


def build(name: str, channels: int = C, **kw) -> nn.Module:
    return attention_block(name, channels, feat_size=(H, W), **{**SMALL.get(name, {}), **kw})


def perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random parameters and BN statistics, so zero inits cannot hide a wrong formula."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    return module


class Holder(nn.Module):
    """A stem conv, the block's site, a head: the smallest model a block can be inserted in."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, C, 3, padding=1)
        self.head = nn.Linear(C, 3)

    def forward(self, x):
        return self.head(self.stem(x).mean((2, 3)))


# -- the contract, for every registered block ----------------------------------------
def test_every_builtin_says_what_it_is():
    assert len(BUILTIN) >= 29
    for name in BUILTIN:
        info = attention_info(name)
        assert info.kind in KINDS and info.description and info.reference and info.values, name
        if info.replaces:
            assert {"out_channels", "stride"} <= set(info.site_args), name


@pytest.mark.parametrize("name", BUILTIN)
def test_block_keeps_the_shape(name):
    x = torch.randn(2, C, H, W)
    blk = build(name)
    assert blk(x).shape == x.shape
    assert blk.eval()(x).shape == x.shape


@pytest.mark.parametrize("name", REPLACING)
def test_replacing_block_gives_out_channels_and_stride(name):
    x = torch.randn(2, C, H, W)
    assert build(name, out_channels=2 * C)(x).shape == (2, 2 * C, H, W)
    assert build(name, out_channels=2 * C, stride=2)(x).shape == (2, 2 * C, H // 2, W // 2)


@pytest.mark.parametrize("name", EXACT)
def test_identity_init_is_exact(name):
    x = torch.randn(2, C, H, W)
    blk = build(name, init="identity")
    assert torch.equal(blk(x), x)
    assert torch.equal(blk.eval()(x), x)


@pytest.mark.parametrize("name", [n for n in BUILTIN if n not in EXACT])
def test_identity_init_is_refused_where_it_has_no_meaning(name):
    with pytest.raises(AttnvizError, match="no identity form"):
        build(name, init="identity")


@pytest.mark.parametrize("name", BUILTIN)
def test_gradients_reach_every_parameter(name):
    for init in ("default", "identity") if name in EXACT else ("default",):
        blk = perturb(build(name, init=init))
        x = torch.randn(2, C, H, W, requires_grad=True)
        blk(x).square().mean().backward()
        for pname, p in blk.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (name, init, pname)
        assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", BUILTIN)
def test_attention_values_are_capturable(name):
    model = Holder()
    model.stem = nn.Sequential(model.stem, build(name))
    names = {i.name for i in attnviz.list_intermediates(model, torch.randn(1, 3, H, W))}
    for value in attention_info(name).values:
        assert f"stem.1.{value}" in names, (name, value)


@pytest.mark.parametrize("name", BUILTIN)
def test_inserted_block_survives_save_and_load(name, tmp_path):
    torch.manual_seed(0)
    kwargs = {**SMALL.get(name, {}), "feat_size": (H, W)}
    x = torch.randn(2, 3, H, W)
    model = attnviz.insert_attention(Holder(), name, where="stem", example_input=x, **kwargs)
    model = perturb(model).eval()
    path = attnviz.save(model, tmp_path / f"{name}.safetensors")
    back = attnviz.load(path, base=Holder).eval()
    assert torch.equal(model(x), back(x))
    assert attnviz.attention_modules(back)["stem_attn"].__class__ is type(
        attnviz.attention_modules(model)["stem_attn"]
    )


# -- wrapped timm blocks: exactly timm's output with timm's weights -------------------------
TIMM_TWINS = {
    "ecam": (lambda: EcaModule(C, use_mlp=True), {}),
    "lcbam": (lambda: cbam.LightCbamModule(C), {}),
    "gca": (lambda: global_context.GlobalContext(C, fuse_add=True, fuse_scale=False), {}),
    "gc_scale": (lambda: global_context.GlobalContext(C), {}),
    "coord": (lambda: coord_attn.CoordAttn(C), {}),
    "scoord": (lambda: coord_attn.SimpleCoordAttn(C), {}),
    "ela": (lambda: coord_attn.EfficientLocalAttn(C), {}),
    "strip": (lambda: coord_attn.StripAttn(C), {}),
    "nl": (lambda: non_local_attn.NonLocalAttn(C), {}),
    "bat": (lambda: non_local_attn.BatNonLocalAttn(C, block_size=4), {}),
    "sk": (
        lambda: selective_kernel.SelectiveKernel(C, 2 * C, stride=2),
        {"out_channels": 2 * C, "stride": 2},
    ),
    "splat": (lambda: split_attn.SplitAttn(C, stride=2, radix=2), {"stride": 2}),
    "lambda": (lambda: lambda_layer.LambdaLayer(C, num_heads=2, dim_head=4, r=5), {}),
    "lambda_rel": (
        lambda: lambda_layer.LambdaLayer(C, feat_size=(H, W), num_heads=2, dim_head=4, r=None),
        {"r": None},
    ),
    "bottleneck": (
        lambda: bottleneck_attn.BottleneckAttn(C, 2 * C, feat_size=(H, W), stride=2, num_heads=2),
        {"out_channels": 2 * C, "stride": 2},
    ),
    "halo": (lambda: halo_attn.HaloAttn(C, block_size=4, halo_size=1, num_heads=2), {}),
    "halo_s2": (
        lambda: halo_attn.HaloAttn(C, stride=2, block_size=4, halo_size=1, num_heads=2),
        {"stride": 2},
    ),
}


@pytest.mark.parametrize("case", sorted(TIMM_TWINS))
def test_wrapped_block_computes_exactly_what_timm_computes(case):
    make_timm, kwargs = TIMM_TWINS[case]
    name = case.split("_s2")[0].split("_rel")[0] if case not in ("gc_scale",) else case
    torch.manual_seed(0)
    ref = perturb(make_timm()).eval()
    ours = build(name, **kwargs)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, C, H, W)
    assert torch.equal(ours.eval()(x), ref(x))


# -- our blocks against the papers' formulas ------------------------------------------------
def _conv_bn(x, conv, bn):
    y = F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation)
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)


def test_triplet_matches_the_paper():
    """Rotate, Z-pool (max, mean), 7x7 conv + BN, sigmoid, rotate back; average of 3 branches."""
    blk = perturb(build("triplet")).eval()
    x = torch.randn(2, C, H, W)

    def branch(t, b):
        z = torch.cat([t.max(1, keepdim=True)[0], t.mean(1, keepdim=True)], 1)
        return t * torch.sigmoid(_conv_bn(z, b.conv, b.bn))

    out_cw = branch(x.permute(0, 2, 1, 3), blk.cw).permute(0, 2, 1, 3)
    out_ch = branch(x.permute(0, 3, 2, 1), blk.ch).permute(0, 3, 2, 1)
    out_hw = branch(x, blk.hw)
    torch.testing.assert_close(blk(x), (out_cw + out_ch + out_hw) / 3)


def test_fca_matches_the_paper():
    """DCT basis cos(pi f (t + 1/2) / N) / sqrt(N) (x sqrt 2 for f > 0), FcaNet's top-16 frequencies."""
    top_x = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
    top_y = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]
    n = 14  # a 14x14 DCT: frequencies scaled x2 from the 7x7 grid

    def basis(t, f):
        v = math.cos(math.pi * f * (t + 0.5) / n) / math.sqrt(n)
        return v * math.sqrt(2) if f else v

    filt = torch.zeros(2 * C, n, n)
    per = 2 * C // 16
    for i, (u, v) in enumerate(zip(top_x, top_y)):
        for tx in range(n):
            for ty in range(n):
                filt[i * per : (i + 1) * per, tx, ty] = basis(tx, 2 * u) * basis(ty, 2 * v)
    blk = perturb(attention_block("fca", 2 * C, dct_size=n)).eval()
    torch.testing.assert_close(blk.dct, filt, rtol=0, atol=1e-6)
    x = torch.randn(2, 2 * C, 28, 28)  # pooled to 14x14 first
    y = (F.adaptive_avg_pool2d(x, n) * filt).sum((2, 3))
    hidden = F.relu(F.conv2d(y[..., None, None], blk.mlp.fc1.weight))
    g = torch.sigmoid(F.conv2d(hidden, blk.mlp.fc2.weight))
    torch.testing.assert_close(blk(x), x * g)


def test_srm_matches_the_paper():
    """Style pooling (mean, std with unbiased variance + eps), channel-wise FC, BN, sigmoid."""
    blk = perturb(build("srm")).eval()
    x = torch.randn(2, C, H, W)
    flat = x.flatten(2)
    t = torch.stack([flat.mean(2), (flat.var(2, unbiased=True) + 1e-5).sqrt()], dim=2)
    z = (t * blk.cfc[None]).sum(2)[..., None, None]
    bn = blk.bn
    z = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
    torch.testing.assert_close(blk(x), x * torch.sigmoid(z))


def test_bam_matches_the_paper():
    """F' = F + F * sigmoid(M_c(F) + M_s(F)), with BN and ReLU inside both branches."""
    blk = perturb(build("bam", rd_ratio=0.25)).eval()
    x = torch.randn(2, C, H, W)
    mlp = blk.channel
    h = F.relu(
        F.batch_norm(
            F.conv2d(x.mean((2, 3), keepdim=True), mlp.fc1.weight, mlp.fc1.bias),
            mlp.norm.running_mean,
            mlp.norm.running_var,
            mlp.norm.weight,
            mlp.norm.bias,
        )
    )
    m_c = F.conv2d(h, mlp.fc2.weight, mlp.fc2.bias)
    s = x
    for layer in list(blk.spatial)[:-1]:
        s = F.relu(_conv_bn(s, layer.conv, layer.bn))
    m_s = F.conv2d(s, blk.spatial[-1].weight, blk.spatial[-1].bias)
    torch.testing.assert_close(blk(x), x + x * torch.sigmoid(m_c + m_s))


def test_bam_gate_is_one_plus_the_attention():
    x = torch.randn(2, C, H, W)
    _, vals = attnviz.with_intermediates(build("bam").eval(), ["gate"])(x)
    assert vals["gate"].shape == (2, C, H, W)
    assert vals["gate"].min() > 1 and vals["gate"].max() < 2


# -- self-attention maps -----------------------------------------------------------------
QUERIES = [(0, 0), (5, 9), (15, 15)]


def _captured(blk, names, x):
    _, vals = attnviz.with_intermediates(blk.eval(), names)(x)
    return vals


def test_bottleneck_query_maps_rebuild_the_output():
    """out[:, head, q] = sum over the map of query_maps(head) * v(head): layout and heads agree."""
    blk = perturb(build("bottleneck")).eval()
    x = torch.randn(2, C, H, W)
    vals = _captured(blk, ["attention", "qkv"], x)
    attn = vals["attention"]
    assert attn.shape == (2, 2, H * W, H * W)
    v = vals["qkv"][:, -blk.dim_out_v :].reshape(2, 2, blk.dim_head_v, H, W)
    out = blk(x).reshape(2, 2, blk.dim_head_v, H, W)
    for head in range(2):
        maps = blk.query_maps(attn, QUERIES, head=head)
        assert maps.shape == (2, len(QUERIES), H, W)
        torch.testing.assert_close(maps.sum((2, 3)), torch.ones(2, len(QUERIES)))
        rebuilt = torch.einsum("bqhw,bchw->bcq", maps, v[:, head])
        direct = torch.stack([out[:, head, :, y, x_] for y, x_ in QUERIES], dim=-1)
        torch.testing.assert_close(rebuilt, direct)


def test_halo_query_maps_rebuild_the_output_from_the_windows():
    """Padded keys have v = 0, so the windows laid on the map rebuild each query's output."""
    blk = perturb(build("halo")).eval()
    x = torch.randn(2, C, H, W)
    vals = _captured(blk, ["attention", "kv"], x)
    attn = vals["attention"]
    blocks, q2, win2 = (H // 4) * (W // 4), 16, 36
    assert attn.shape == (2, 2, blocks, q2, win2)
    dqk, dv = blk.dim_head_qk, blk.dim_head_v
    kv = vals["kv"].reshape(2, 2, dqk + dv, H, W)
    out = blk(x).reshape(2, 2, dv, H, W)
    for head in range(2):
        maps = blk.query_maps(attn, QUERIES, (H, W), head=head)
        rebuilt = torch.einsum("bqhw,bchw->bcq", maps, kv[:, head, dqk:])
        direct = torch.stack([out[:, head, :, y, x_] for y, x_ in QUERIES], dim=-1)
        torch.testing.assert_close(rebuilt, direct)
        inner = maps[:, 1]  # query (5, 9): block (1, 2), window rows 3..8, cols 7..12
        assert inner.sum((1, 2)).allclose(torch.ones(2)) and inner[:, :3].abs().sum() == 0


@settings(max_examples=12, deadline=None)
@given(
    block=st.sampled_from([2, 4]),
    halo=st.integers(0, 2),
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.sampled_from([1, 2]),
)
def test_halo_query_maps_are_windows_of_the_map(block, halo, grid, stride):
    """Each map lies in its query's window, sums to 1 minus the weight on the padding."""
    h, w = block * grid[0], block * grid[1]
    blk = attention_block("halo", 8, stride=stride, block_size=block, halo_size=halo, num_heads=2)
    x = torch.randn(1, 8, h, w)
    attn = _captured(blk, ["attention"], x)["attention"]
    queries = [(y, x_) for y in range(h) for x_ in range(w)]
    maps = blk.query_maps(attn, queries, (h, w))
    assert (maps >= 0).all() and (maps.sum((2, 3)) <= 1 + 1e-5).all()
    for i, (y, x_) in enumerate(queries):
        top, left = (y // block) * block - halo, (x_ // block) * block - halo
        outside = maps[0, i].clone()
        outside[max(top, 0) : top + block + 2 * halo, max(left, 0) : left + block + 2 * halo] = 0
        assert outside.abs().sum() == 0
        if halo == 0:
            torch.testing.assert_close(maps[0, i].sum(), torch.tensor(1.0))


def test_nl_query_maps_are_the_attention_rows():
    blk = perturb(build("nl")).eval()
    x = torch.randn(2, C, H, W)
    attn = _captured(blk, ["attention"], x)["attention"]
    assert attn.shape == (2, H * W, H * W)
    maps = blk.query_maps(attn, QUERIES, (H, W))
    assert torch.equal(maps[:, 1].flatten(1), attn[:, 5 * W + 9])


def test_bat_query_maps_rebuild_the_bilinear_transform():
    blk = perturb(build("bat")).eval()
    x = torch.randn(2, C, H, W)
    vals = _captured(blk, ["ba.rows", "ba.cols", "conv1", "ba.matmul_1"], x)
    rows, cols, inp, out = vals["ba.rows"], vals["ba.cols"], vals["conv1"], vals["ba.matmul_1"]
    groups = rows.shape[1]
    per = inp.shape[1] // groups
    for g in range(groups):
        maps = blk.query_maps((rows, cols), QUERIES, (H, W), head=g)
        torch.testing.assert_close(maps.sum((2, 3)), torch.ones(2, len(QUERIES)))
        chans = slice(g * per, (g + 1) * per)
        rebuilt = torch.einsum("bqhw,bchw->bcq", maps, inp[:, chans])
        direct = torch.stack([out[:, chans, y, x_] for y, x_ in QUERIES], dim=-1)
        torch.testing.assert_close(rebuilt, direct)


def test_lambda_keys_are_distributions_over_positions():
    blk = build("lambda").eval()
    keys = _captured(blk, ["keys"], torch.randn(2, C, H, W))["keys"]
    assert keys.shape == (2, 4, H * W)
    torch.testing.assert_close(keys.sum(-1), torch.ones(2, 4))
    assert not hasattr(blk, "query_maps")


def test_query_outside_the_map_is_an_error():
    blk = build("nl").eval()
    attn = _captured(blk, ["attention"], torch.randn(1, C, H, W))["attention"]
    with pytest.raises(AttnvizError, match=r"outside the 16x16 map"):
        blk.query_maps(attn, [(16, 0)], (H, W))


# -- bad input: one line naming what was wrong ---------------------------------------------
def test_halo_window_that_does_not_divide_the_map_names_both():
    with pytest.raises(AttnvizError, match=r"block_size 8 must divide .* 12x12"):
        attention_block("halo", C, feat_size=(12, 12), num_heads=2)
    blk = attention_block("halo", C, num_heads=2)  # no feat_size: checked in the forward
    with pytest.raises(AttnvizError, match=r"block_size 8 must divide .* 12x20"):
        blk(torch.randn(1, C, 12, 20))


def test_bottleneck_needs_its_map_size():
    with pytest.raises(AttnvizError, match="needs feat_size"):
        attention_block("bottleneck", C)
    blk = build("bottleneck")
    with pytest.raises(AttnvizError, match=r"built for 16x16 .* got 8x8"):
        blk(torch.randn(1, C, 8, 8))


def test_bat_grid_that_does_not_divide_the_map_names_both():
    with pytest.raises(AttnvizError, match=r"block_size 7 must divide .* 16x16"):
        attention_block("bat", C, feat_size=(H, W))


def test_channel_or_stride_change_on_a_block_that_keeps_the_shape():
    with pytest.raises(AttnvizError, match=r"'se' keeps its input's shape: .* 16 channels to out_channels=32; blocks that can: \['bottleneck'"):  # fmt: skip
        attention_block("se", C, out_channels=2 * C)
    with pytest.raises(AttnvizError, match=r"stride=2"):
        attention_block("cbam", C, stride=2)
    assert attention_block("se", C, out_channels=C, stride=1, feat_size=(7, 9))  # the uniform call


def test_user_block_with_site_arguments_receives_them():
    class Down(nn.Module):
        def __init__(self, channels, out_channels=None, stride=1, feat_size=None):
            super().__init__()
            self.feat_size = feat_size
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, stride, 1)

        def forward(self, x):
            return self.conv(x)

    attnviz.register_attention("user_down", Down, kind="conv", overwrite=True)
    info = attention_info("user_down")
    assert info.replaces and set(info.site_args) == {"out_channels", "stride", "feat_size"}
    blk = attention_block("user_down", 4, out_channels=8, stride=2, feat_size=(6, 6))
    assert blk(torch.randn(1, 4, 6, 6)).shape == (1, 8, 3, 3) and blk.feat_size == (6, 6)
    attnviz.register_attention("user_keep", lambda channels: nn.Identity(), overwrite=True)
    assert not attention_info("user_keep").replaces
    with pytest.raises(AttnvizError, match="cannot take stride=2"):
        attention_block("user_keep", 4, stride=2)


def test_factory_names_for_site_arguments_are_refused():
    with pytest.raises(AttnvizError, match="pass out_channels="):
        attention_block("halo", C, dim_out=32, num_heads=2)


def test_timm_asserts_and_bad_settings_become_one_line_errors():
    with pytest.raises(AttnvizError, match="num_heads=3 must divide"):
        attention_block("halo", C, num_heads=3)
    with pytest.raises(AttnvizError, match="cannot be built"):
        attention_block("sk", C, kernel_size=4)  # timm asserts odd kernels >= 3
    with pytest.raises(AttnvizError, match="must divide the 24 channels"):
        attention_block("fca", 24)
    with pytest.raises(AttnvizError, match="has_skip"):
        attention_block("coord", C, has_skip=True, init="identity")
    with pytest.raises(AttnvizError, match="needs feat_size"):
        attention_block("lambda", C, r=None)
    with pytest.raises(AttnvizError, match="feat_size must be"):
        attention_block("se", C, feat_size=(0, 3))
