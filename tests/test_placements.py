"""Placements: ``parallel`` (a branch beside a module, scale at 0) and ``replace`` (the module swapped).

On torchvision resnet18/resnet50, timm resnet50 and the demo network at 64 px: parallel is
exactly the original until trained and keeps every key; replace removes the replaced keys
with a warning; remove_attention restores both exactly; save/load round trips; spec /1 and
/2 both load; bad input fails in one line naming the site and the valid choices.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import attnviz
from attnviz import (
    AttnvizError,
    FileFormatError,
    SurgeryError,
    attention_keys,
    attention_modules,
    insert_attention,
    load,
    load_base_weights,
    read_spec,
    remove_attention,
    save,
    surgery_spec,
)
from attnviz.errors import UnknownNameError
from attnviz.surgery import ReplacedWeightsWarning
from attnviz.surgery.placements import ParallelBranch

from .conftest import randomize_bn

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

# model -> (parallel sites, replace sites); layer4 of a ResNet at 64 px is 4x4 -> 2x2
MODELS = {
    "torchvision:resnet18": ("layer4.*.conv2", "layer4.*.conv?"),
    "torchvision:resnet50": ("layer4.*.conv2", "layer4.*.conv2"),
    "timm:resnet50": ("layer4.*.conv2", "layer4.*.conv2"),
    "attnviz:small_resnet": ("layer*.*.conv2", "layer3.*.conv?"),
}
KWARGS = {"num_classes": 10}
DEMO = {"num_classes": 10, "widths": [16, 32, 64], "depths": [1, 1, 1], "stem_stride": 2}


def build(ref: str) -> nn.Module:
    torch.manual_seed(0)
    model = attnviz.create_model(ref, **(DEMO if ref.startswith("attnviz") else KWARGS))
    return randomize_bn(model).eval()


def _out(model: nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _replace(model, attention, where, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = insert_attention(model, attention, where, placement="replace", **kw)
    return new, [w for w in caught if issubclass(w.category, ReplacedWeightsWarning)]


@pytest.mark.parametrize("ref", list(MODELS))
def test_parallel_is_exact_until_trained_and_replace_removes_only_the_replaced_keys(ref):
    base = build(ref)
    ref_out = _out(base)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    parallel_where, replace_where = MODELS[ref]
    example = X[:1]

    # parallel: every key kept, exactly the original at init whatever the block's init
    par = insert_attention(
        base, "bottleneck", parallel_where, placement="parallel", example_input=example
    )
    assert isinstance(par, type(base)) and type(par).__name__ == type(base).__name__
    assert torch.equal(_out(par), ref_out)
    state = par.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base_state.items())
    branches = attention_modules(par)
    assert branches and all(isinstance(b, ParallelBranch) for b in branches.values())
    assert set(state) - set(base_state) == set(attention_keys(par))
    with torch.no_grad():  # trained: the branch now contributes
        for b in branches.values():
            b.scale.fill_(0.5)
    assert not torch.allclose(_out(par), ref_out)
    back = remove_attention(par)
    assert type(back) is type(base) and set(back.state_dict()) == set(base_state)
    assert torch.equal(_out(back), ref_out)

    # replace: the replaced keys leave the model (one warning lists them), nothing else does
    rep, caught = _replace(base, "bottleneck", replace_where, example_input=example)
    sites = surgery_spec(rep)["insertions"][0]["sites"]
    removed = {k for s in sites for k in s["replaced"]}
    assert removed and set(base_state) - set(rep.state_dict()) == removed
    assert len(caught) == 1 and all(k in str(caught[0].message) for k in removed)
    for s in sites:
        assert type(rep.get_submodule(s["site"])).__name__ == "BottleneckAttn"
    assert _out(rep).shape == ref_out.shape
    restored = remove_attention(rep)
    assert set(restored.state_dict()) == set(base_state)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in base_state.items())
    assert torch.equal(_out(restored), ref_out)
    assert torch.equal(_out(base), ref_out)  # the input model was never touched


def test_parallel_trains_its_scale_first_then_its_block():
    base = build("attnviz:small_resnet").train()
    model = insert_attention(
        base, "se", "layer2.*.conv2", placement="parallel", example_input=X[:1]
    ).train()
    branch = attention_modules(model)["layer2.0.conv2_attn"]
    loss = model(X).square().mean()
    loss.backward()
    assert branch.scale.grad is not None and branch.scale.grad.abs() > 0
    assert all(p.grad is None or not p.grad.any() for p in branch.block.parameters())
    with torch.no_grad():
        branch.scale.fill_(0.1)
    model.zero_grad()
    model(X).square().mean().backward()
    assert any(p.grad is not None and p.grad.any() for p in branch.block.parameters())


def test_a_parallel_block_that_changes_channels_and_stride_gets_them_from_the_module():
    base = build("torchvision:resnet18")
    model = insert_attention(
        base, "sk", "layer2.0.conv1", placement="parallel", example_input=X[:1]
    )
    site = surgery_spec(model)["insertions"][0]["sites"][0]
    assert site["in_shape"] == [1, 64, 16, 16] and site["shape"] == [1, 128, 8, 8]
    block = attention_modules(model)["layer2.0.conv1_attn"].block
    assert block.out_channels == 128 and torch.equal(_out(model), _out(base))


def test_blocks_get_the_map_size_of_their_site():
    base = build("attnviz:small_resnet")
    model, _ = _replace(base, "bottleneck", "layer3.*.conv?", example_input=X[:1])
    assert model.layer3[0].conv1.feat_size == (16, 16)  # the map it reads, before its stride
    assert model.layer3[0].conv2.feat_size == (8, 8)
    # "after" blocks receive it too: a global-extent gather-excite with parameters needs it
    ge = insert_attention(base, "ge", "residual", example_input=X[:1], extra_params=True)
    assert _out(ge).shape == (2, 10)


def test_save_load_round_trip_and_base_weights_fill_what_replace_took_out(tmp_path):
    base = build("torchvision:resnet18")
    torch.save(base.state_dict(), tmp_path / "base.pth")
    rep, _ = _replace(base, "sk", "layer*.*.conv1", example_input=X[:1])
    model = insert_attention(
        rep, "bottleneck", "layer4.*.conv2", placement="parallel", example_input=X[:1]
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    expected = _out(model)
    path = save(model, tmp_path / "m.safetensors")
    spec = read_spec(path)
    assert spec["format"] == "attnviz.surgery/2"
    assert [i.get("placement", "after") for i in spec["insertions"]] == ["replace", "parallel"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading does not warn about weights the file never held
        loaded = load(path)
    assert torch.equal(_out(loaded), expected)
    assert surgery_spec(loaded)["insertions"] == surgery_spec(model)["insertions"]
    # the replaced convs were not saved: remove_attention says they come back initialised
    with pytest.warns(ReplacedWeightsWarning, match="builder initialises"):
        remove_attention(loaded)
    # the base file fills them (the model itself is unchanged by them), then removal is exact
    with pytest.warns(ReplacedWeightsWarning, match=r"layer1\.0\.conv1\.weight"):
        missing = load_base_weights(loaded, tmp_path / "base.pth")
    assert set(missing) == set(attention_keys(loaded))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restored = remove_attention(loaded)
    assert torch.equal(_out(restored), _out(base))


def test_replace_restores_on_the_model_device_and_dtype():
    base = build("attnviz:small_resnet")
    rep, _ = _replace(base, "sk", "layer*.*.conv1", example_input=X[:1])
    restored = remove_attention(rep.double())
    assert restored.layer1[0].conv1.weight.dtype == torch.float64
    assert torch.equal(_out(restored, X.double()), _out(base.double(), X.double()))


def test_an_after_only_spec_is_written_as_format_1_and_both_formats_load(tmp_path):
    base = build("attnviz:small_resnet")
    after = insert_attention(base, "se", "residual", example_input=X[:1])
    p1 = save(after, tmp_path / "after.safetensors")
    assert read_spec(p1)["format"] == "attnviz.surgery/1"
    assert "placement" not in read_spec(p1)["insertions"][0]
    rep, _ = _replace(base, "sk", "layer*.*.conv1", example_input=X[:1])
    p2 = save(rep, tmp_path / "replace.safetensors")
    assert read_spec(p2)["format"] == "attnviz.surgery/2"
    assert torch.equal(_out(load(p1)), _out(after)) and torch.equal(_out(load(p2)), _out(rep))


def _rewrite_spec(path, target, edit):
    meta_spec = read_spec(path)
    edit(meta_spec)
    save_file(load_file(str(path)), str(target), metadata={"attnviz_spec": json.dumps(meta_spec)})
    return target


def test_a_format_1_spec_cannot_carry_placements_and_placements_are_validated(tmp_path):
    base = build("attnviz:small_resnet")
    rep, _ = _replace(base, "sk", "layer*.*.conv1", example_input=X[:1])
    path = save(rep, tmp_path / "r.safetensors")

    def as_v1(spec):
        spec["format"] = "attnviz.surgery/1"

    with pytest.raises(FileFormatError, match="placement"):
        load(_rewrite_spec(path, tmp_path / "v1.safetensors", as_v1))

    def unknown(spec):
        spec["insertions"][0]["placement"] = "beside"

    with pytest.raises(FileFormatError, match="placement"):
        load(_rewrite_spec(path, tmp_path / "u.safetensors", unknown))

    def not_a_stride(spec):
        spec["insertions"][0]["sites"][0]["in_shape"] = [1, 16, 30, 32]

    with pytest.raises(SurgeryError, match="stride"):
        load(_rewrite_spec(path, tmp_path / "s.safetensors", not_a_stride))

    def elsewhere(spec):
        spec["insertions"][0]["sites"][0]["owner"] = "layer2.0"

    with pytest.raises(FileFormatError):  # the block's weights then sit at another path
        load(_rewrite_spec(path, tmp_path / "e.safetensors", elsewhere))


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    return build("attnviz:small_resnet")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_unknown_placement_lists_the_placements(demo):
    with pytest.raises(UnknownNameError) as exc:
        insert_attention(demo, "se", "residual", placement="paralel")
    assert "'parallel'" in _one_line(exc)


def test_replace_at_a_value_names_it_and_the_modules_near_it(demo):
    with pytest.raises(SurgeryError) as exc:
        insert_attention(demo, "sk", "layer1.0.add", placement="replace", example_input=X[:1])
    text = _one_line(exc)
    assert "'layer1.0.add'" in text and "layer1.0" in text.split("closest first")[1]


@pytest.mark.parametrize("placement", ["parallel", "replace"])
def test_keywords_name_values_not_modules(demo, placement):
    with pytest.raises(SurgeryError, match="module selectors") as exc:
        insert_attention(demo, "sk", "residual", placement=placement, example_input=X[:1])
    _one_line(exc)


def test_a_block_that_cannot_take_the_stride_names_the_site_and_the_blocks_that_can(demo):
    base = build("torchvision:resnet50")  # layer2.0.conv2: 128 -> 128 channels, stride 2
    with pytest.raises(AttnvizError) as exc:
        insert_attention(base, "se", "layer2.0.conv2", placement="replace", example_input=X[:1])
    text = _one_line(exc)
    assert "'layer2.0.conv2'" in text and "stride=2" in text and "'bottleneck'" in text
    with pytest.raises(AttnvizError) as exc:  # and the demo's conv1 also changes channels
        insert_attention(demo, "eca", "layer2.0.conv1", placement="parallel", example_input=X[:1])
    text = _one_line(exc)
    assert "[16, 32, 32] -> [32, 16, 16]" in text and "out_channels=32" in text


def test_a_block_that_cannot_take_the_map_names_the_site_and_both_sizes(demo):
    with pytest.raises(AttnvizError) as exc:  # layer3 maps are 8x8 at 64 px
        insert_attention(
            demo, "halo", "layer3.0.conv2", placement="replace", example_input=X[:1], block_size=5
        )
    text = _one_line(exc)
    assert "'layer3.0.conv2'" in text and "block_size 5" in text and "8x8" in text


def test_parallel_beside_an_inplace_module_is_refused():
    base = build("torchvision:resnet18")
    with pytest.raises(SurgeryError, match="inplace") as exc:
        insert_attention(base, "se", "relu", placement="parallel", example_input=X[:1])
    _one_line(exc)


def test_replace_refuses_a_shared_module_nested_sites_and_earlier_blocks(demo):
    base = build("torchvision:resnet18")
    with pytest.raises(SurgeryError, match="called 2 times") as exc:  # relu, twice per block
        insert_attention(base, "sk", "layer1.0.relu", placement="replace", example_input=X[:1])
    _one_line(exc)
    with pytest.raises(SurgeryError, match="nested"):
        insert_attention(
            demo, "splat", ["layer2.0", "layer2.0.conv2"], placement="replace", example_input=X[:1]
        )
    se = insert_attention(demo, "se", "layer2.0.bn2", example_input=X[:1])
    with pytest.raises(SurgeryError, match="earlier insertion"):
        insert_attention(se, "splat", "layer2.0", placement="replace", example_input=X[:1])


def test_remove_attention_undoes_stacked_placements_in_reverse_order(demo):
    rep, _ = _replace(demo, "splat", "layer2.0.conv2", example_input=X[:1])
    model = insert_attention(rep, "se", "layer2.0.conv2.conv", example_input=X[:1])  # inside it
    model = insert_attention(
        model, "eca", "layer2.0.bn2", placement="parallel", example_input=X[:1]
    )
    assert {"layer2.0.conv2", "layer2.0.conv2.conv_attn", "layer2.0.bn2_attn"} <= set(
        attention_modules(model)
    )
    assert _out(model).shape == (2, 10)
    restored = remove_attention(model)
    assert set(restored.state_dict()) == set(demo.state_dict())
    assert torch.equal(_out(restored), _out(demo))


def test_load_base_weights_refuses_a_replaced_key_of_another_shape(tmp_path, demo):
    rep, _ = _replace(demo, "sk", "layer1.0.conv1", example_input=X[:1])
    state = copy.deepcopy(demo.state_dict())
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight"):
        load_base_weights(rep, state)


def test_the_surgery_command_takes_a_placement(capsys):
    from attnviz.cli import main

    args = ["surgery", "attnviz:small_resnet", "--attention", "sk", "--where", "layer*.*.conv1"]
    assert main([*args, "--placement", "replace", "--input-size", "3", "32", "32"]) == 0
    out, err = capsys.readouterr()
    assert "placement=replace" in out and "layer1.0.conv1" in out
    # the ReplacedWeightsWarning as one line of the command, not Python's file:line + source
    (line,) = [x for x in err.splitlines() if "took" in x]
    assert line.startswith("attnviz surgery: warning: placement='replace' took")


# -- timm's native twins -------------------------------------------------------------------
# Surgery on timm's plain counterpart plus a weight transfer gives the native network's
# logits, on random weights with random BatchNorm statistics.
def _transfer(native: nn.Module, model: nn.Module, rename) -> set[str]:
    """Load ``native``'s weights into ``model`` under ``rename``d keys; the keys left over."""
    own = model.state_dict()
    state = {}
    for key, value in native.state_dict().items():
        new = rename(key)
        assert new in own and own[new].shape == value.shape, (key, new)
        state[new] = value
    missing = set(own) - set(state)
    model.load_state_dict(state, strict=False)
    return missing


def _identity_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.weight.fill_(1)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1 - bn.eps)


def test_resnet18_with_sk_replacing_conv1_is_timm_skresnet18():
    """skresnet18's SK conv stands in for conv1 *and* its BN + ReLU; the plain block keeps bn1
    and act1 after the SK conv, so the twin sets bn1 to the identity (ReLU after the SK conv's
    own ReLU changes nothing)."""
    torch.manual_seed(0)
    native = randomize_bn(timm.create_model("skresnet18", num_classes=10)).eval()
    plain = timm.create_model("resnet18", num_classes=10).eval()
    model, _ = _replace(
        plain, "sk", "layer*.*.conv1", example_input=X[:1], rd_ratio=1 / 8, rd_divisor=16
    )

    def rename(key: str) -> str:
        return key.replace("conv2.conv.", "conv2.").replace("conv2.bn.", "bn2.")

    missing = _transfer(native, model, rename)
    assert missing and all(".bn1." in k for k in missing)  # the block's bn1 has no twin
    for name, m in model.named_modules():
        if name.endswith(".bn1") and name.startswith("layer"):
            _identity_bn(m)
    torch.testing.assert_close(_out(model), _out(native), atol=1e-5, rtol=0)
    assert sum(p.numel() for p in model.parameters()) - sum(
        m.bn1.weight.numel() + m.bn1.bias.numel()
        for s in (model.layer1, model.layer2, model.layer3, model.layer4)
        for m in s
    ) == sum(p.numel() for p in native.parameters())


RESNET_TWINS = {  # native -> (plain, attention): SE / ECA on the residual branch, before the add
    "seresnet50": ("resnet50", "se"),
    "ecaresnet50d": ("resnet50d", "eca"),
}


@pytest.mark.parametrize("native_name", list(RESNET_TWINS))
def test_timm_resnet_with_attention_on_the_residual_branch_is_timms_native_network(native_name):
    plain_name, attention = RESNET_TWINS[native_name]
    torch.manual_seed(0)
    native = randomize_bn(timm.create_model(native_name, num_classes=10)).eval()
    plain = timm.create_model(plain_name, num_classes=10).eval()
    model = insert_attention(plain, attention, "residual", example_input=X[:1])
    assert not _transfer(native, model, lambda key: key.replace(".se.", ".attn."))
    torch.testing.assert_close(_out(model), _out(native), atol=1e-5, rtol=0)


BYOB_TWINS = {  # native -> (plain, attention, block kwargs, input size)
    "gcresnext26ts": ("resnext26ts", "gca", {}, 64),
    "seresnext26ts": ("resnext26ts", "se", {}, 64),
    "eca_resnext26ts": ("resnext26ts", "eca", {}, 64),
    "bat_resnext26ts": ("resnext26ts", "bat", {"block_size": 8}, 256),
}


@pytest.mark.parametrize("native_name", list(BYOB_TWINS))
def test_byobnet_attention_after_the_kxk_conv_is_timms_native_network(native_name):
    plain_name, attention, kwargs, size = BYOB_TWINS[native_name]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    native = randomize_bn(timm.create_model(native_name, num_classes=10)).eval()
    plain = timm.create_model(plain_name, num_classes=10).eval()
    model = insert_attention(plain, attention, "stages.*.*.conv2_kxk", example_input=x, **kwargs)

    def rename(key: str) -> str:
        return key.replace(".attn.", ".conv2_kxk_attn.")

    assert not _transfer(native, model, rename)
    torch.testing.assert_close(_out(model, x), _out(native, x), atol=1e-5, rtol=0)


def _plain_cfg(native_name: str):
    """timm's own config of a self-attention ByobNet with every self_attn block a bottle block."""
    import dataclasses

    from timm.models import byoanet

    cfg = byoanet.model_cfgs[native_name.removesuffix("_256")]
    blocks = tuple(
        tuple(dataclasses.replace(b, type="bottle") if b.type == "self_attn" else b for b in stage)
        if isinstance(stage, tuple)
        else dataclasses.replace(stage, type="bottle")
        if stage.type == "self_attn"
        else stage
        for stage in cfg.blocks
    )
    return dataclasses.replace(cfg, blocks=blocks)


SELF_ATTN_TWINS = {  # native -> (attention, block kwargs, input size)
    "botnet26t_256": ("bottleneck", {}, 64),
    "lambda_resnet26t": ("lambda", {"r": 9}, 64),
    "halonet26t": ("halo", {"block_size": 8, "halo_size": 2}, 256),
}


@pytest.mark.parametrize("native_name", list(SELF_ATTN_TWINS))
def test_self_attention_replacing_the_kxk_conv_is_timms_native_network(native_name):
    """timm registers no plain twin of these: the plain network is the ByobNet timm builds from
    the native model's own config with its self_attn blocks as bottle blocks. A self_attn block
    is conv1 - self_attn - norm+act - conv3 and a bottle block conv1 - conv(+norm+act) - conv3:
    replacing the bottle block's conv by the self-attention gives the same network."""
    from timm.models.byobnet import ByobNet

    attention, kwargs, size = SELF_ATTN_TWINS[native_name]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    extra = {"img_size": size} if native_name.endswith("_256") else {}
    native = randomize_bn(timm.create_model(native_name, num_classes=10, **extra)).eval()
    plain = ByobNet(_plain_cfg(native_name), num_classes=10, **extra).eval()
    attn_blocks = [n for n, m in native.named_modules() if hasattr(m, "self_attn")]
    model, _ = _replace(
        plain,
        attention,
        [f"{n}.conv2_kxk.conv" for n in attn_blocks],
        example_input=x,
        **kwargs,
    )

    def rename(key: str) -> str:
        block = next((n for n in attn_blocks if key.startswith(n + ".")), None)
        if block is None:
            return key
        return key.replace(f"{block}.self_attn.", f"{block}.conv2_kxk.conv.").replace(
            f"{block}.post_attn.", f"{block}.conv2_kxk.bn."
        )

    assert not _transfer(native, model, rename)
    torch.testing.assert_close(_out(model, x), _out(native, x), atol=1e-5, rtol=0)
