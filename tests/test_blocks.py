"""The attention block registry: every block, both inits, user blocks, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnviz import Gate, attention_block, list_attention, list_intermediates, register_attention
from attnviz.blocks import IdentityBlend, attention_info

BUILTINS = [
    "se",
    "ese",
    "eca",
    "ceca",
    "cbam",
    "cbam_channel",
    "cbam_spatial",
    "gc",
    "gc_scale",
    "coord",
    "simam",
    "ge",
]


def test_required_blocks_are_registered():
    assert set(BUILTINS) <= set(list_attention())
    for name in BUILTINS:
        info = attention_info(name)
        assert info.builtin and info.description and info.reference


@pytest.mark.parametrize("name", BUILTINS)
def test_block_keeps_shape_and_identity_init_is_exact(name):
    x = torch.randn(2, 32, 7, 9)
    default = attention_block(name, 32).eval()
    assert default(x).shape == x.shape
    ident = attention_block(name, 32, init="identity").eval()
    assert torch.equal(ident(x), x)
    ident.train()
    assert torch.equal(ident(x), x)


@pytest.mark.parametrize("name", ["se", "eca", "cbam_channel", "coord", "simam", "ge", "gc_scale"])
def test_default_block_actually_modulates(name):
    """The paper's block at default init is not the identity (gates near 0.5)."""
    x = torch.randn(2, 32, 8, 8)
    y = attention_block(name, 32).eval()(x)
    assert (y - x).abs().mean() > 0.05 * x.abs().mean()


def test_gc_default_is_paper_identity_at_init():
    """GCNet zero-initialises the last layer (weight and bias): it adds exactly 0 at first."""
    blk = attention_block("gc", 16).eval()
    x = torch.randn(1, 16, 5, 5)
    assert torch.equal(blk(x), x)
    assert blk.mlp_add.fc2.bias.abs().sum() == 0


@pytest.mark.parametrize(
    ("name", "gates"),
    [
        ("se", ["gate"]),
        ("eca", ["gate"]),
        ("cbam", ["channel.gate", "spatial.gate"]),
        ("coord", ["gate", "gate_1"]),
        ("simam", ["gate"]),
        ("gc", ["attn_pool"]),
    ],
)
def test_gate_is_a_named_capturable_value(name, gates):
    blk = attention_block(name, 16)
    names = [i.name for i in list_intermediates(blk, torch.randn(1, 16, 6, 6))]
    for g in gates:
        assert g in names


def test_identity_gate_trains_away_from_identity():
    blk = attention_block("se", 16, init="identity")
    x = torch.randn(4, 16, 5, 5)
    gate = blk.gate
    assert isinstance(gate, Gate) and gate.identity
    loss = (blk(x) - 2 * x).pow(2).mean()
    loss.backward()
    assert gate.blend.grad is not None and gate.blend.grad.abs() > 0


def test_se_matches_timm_parameter_count():
    from timm.layers import SEModule

    assert sum(p.numel() for p in attention_block("se", 256).parameters()) == sum(
        p.numel() for p in SEModule(256).parameters()
    )


def test_ge_works_even_where_timm_ge_is_broken():
    """timm >= 1.0.21 builds GatherExcite with ``*dd``; ours builds and runs for every variant."""
    x = torch.randn(2, 32, 16, 16)
    for kwargs in (
        {},
        {"extent": 2},
        {"extent": 4, "extra_params": True},
        {"extra_params": True, "feat_size": (16, 16)},
    ):
        blk = attention_block("ge", 32, **kwargs).eval()
        assert blk(x).shape == x.shape
        assert torch.equal(attention_block("ge", 32, init="identity", **kwargs).eval()(x), x)
    with pytest.raises(ValueError, match="power of two"):
        attention_block("ge", 32, extent=3)


def test_unknown_block_name_lists_closest_first():
    with pytest.raises(KeyError) as err:
        attention_block("sse", 8)
    msg = str(err.value)
    assert "unknown attention 'sse'" in msg
    assert msg.split("closest valid: [")[1].startswith("'se'")


def test_unknown_kwarg_lists_valid_ones():
    with pytest.raises(KeyError, match="rd_ratio"):
        attention_block("se", 8, rd_ratoi=0.25)


def test_bad_init_and_channels():
    with pytest.raises(KeyError, match="identity"):
        attention_block("se", 8, init="zero")
    with pytest.raises(ValueError, match="positive int"):
        attention_block("se", 0)


def test_user_block_registers_and_gets_identity_blend():
    class Scale(nn.Module):
        def __init__(self, channels, init_value=0.5):
            super().__init__()
            self.w = nn.Parameter(torch.full((channels, 1, 1), init_value))

        def forward(self, x):
            return x * self.w

    register_attention("user_scale", Scale, description="a per-channel scale", overwrite=True)
    assert "user_scale" in list_attention()
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(attention_block("user_scale", 4)(x), 0.5 * x)
    wrapped = attention_block("user_scale", 4, init="identity")
    assert isinstance(wrapped, IdentityBlend)
    assert torch.equal(wrapped(x), x)
    with pytest.raises(ValueError, match="already registered"):
        register_attention("user_scale", Scale)


def test_user_block_with_gate_gets_exact_identity():
    class MyGate(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.fc = nn.Conv2d(channels, channels, 1)
            self.gate = Gate("sigmoid")

        def forward(self, x):
            return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))

    register_attention("user_gate", MyGate, overwrite=True)
    blk = attention_block("user_gate", 6, init="identity")
    assert not isinstance(blk, IdentityBlend)
    x = torch.randn(1, 6, 4, 4)
    assert torch.equal(blk(x), x)


def test_register_rejects_bad_names():
    with pytest.raises(ValueError, match="identifier"):
        register_attention("bad-name", lambda c: nn.Identity())


def test_simam_on_a_one_by_one_map_is_finite():
    """A 1x1 map has no spatial variance: SimAM's n = HW - 1 = 0 must not give 0/0 = NaN."""
    x = torch.randn(2, 4, 1, 1)
    for init in ("default", "identity"):
        y = attention_block("simam", 4, init=init)(x)
        assert torch.isfinite(y).all()
    assert torch.equal(attention_block("simam", 4, init="identity")(x), x)
