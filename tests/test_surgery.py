"""Surgery on user models, the SE-ResNet-50 reference, weights, errors and known pitfalls."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from torch import nn

import attnviz
from attnviz import (
    SurgeryError,
    attention_keys,
    attention_modules,
    base_reference,
    create_model,
    insert_attention,
    list_intermediates,
    load,
    load_base_weights,
    remove_attention,
    save,
    surgery_spec,
)

from .conftest import DataDependent, TinyResNet, randomize_bn


def _out(model, x):
    with torch.no_grad():
        return model.eval()(x)


# -- the reference placement ------------------------------------------------------------
def test_resnet50_se_residual_matches_timm_seresnet50():
    base = torchvision.models.resnet50()
    model = insert_attention(base, "se", where="residual", example_input=torch.randn(1, 3, 64, 64))
    assert sum(p.numel() for p in model.parameters()) == 28_088_024
    assert sum(p.numel() for p in timm.create_model("seresnet50").parameters()) == 28_088_024
    sites = surgery_spec(model)["insertions"][0]["sites"]
    bottlenecks = [
        n for n, m in base.named_modules() if isinstance(m, torchvision.models.resnet.Bottleneck)
    ]
    assert [s["owner"] for s in sites] == bottlenecks
    assert all(s["site"] == f"{s['owner']}.bn3" and s["attr"] == "attn" for s in sites)
    # the block sits after bn3 and before the add
    names = [i.name for i in list_intermediates(model, torch.randn(1, 3, 64, 64))]
    i_bn3, i_attn, i_add = (names.index(f"layer1.0.{n}") for n in ("bn3", "attn", "add"))
    assert i_bn3 < i_attn < i_add


def test_model_keeps_class_methods_and_attributes():
    base = timm.create_model("resnet18", num_classes=7)
    model = insert_attention(base, "eca", "stages", example_input=torch.randn(1, 3, 64, 64))
    # a subclass of the original class, with its name: isinstance and every method keep working
    assert isinstance(model, type(base)) and type(model).__name__ == type(base).__name__
    assert type(model).__mro__[1] is type(base)
    assert model.pretrained_cfg == base.pretrained_cfg
    model.reset_classifier(3)
    assert model.fc.out_features == 3
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    feats = model.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.ndim == 4


# -- users' own models ---------------------------------------------------------------------
def plain_sequential():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = TinyResNet(num_classes=6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.backbone(x))


@pytest.mark.parametrize(
    ("factory", "wheres"),
    [
        (plain_sequential, ["stages", nn.Conv2d, "4", ["0", "5"]]),
        (Nested, ["residual", "stages", "backbone.layer*", nn.BatchNorm2d]),
        (TinyResNet, ["residual", "stages", "layer1.0.bn2", "**.conv2"]),
        (DataDependent, ["residual", "stages", "layer*.*.conv2", nn.Conv2d]),
    ],
    ids=["sequential", "nested", "hand_residual", "data_dependent"],
)
@pytest.mark.parametrize("attention", ["se", "cbam", "eca"])
def test_user_models(factory, wheres, attention, x16):
    torch.manual_seed(0)
    base = randomize_bn(factory()).eval()
    ref = _out(base, x16)
    for where in wheres:
        model = insert_attention(base, attention, where, init="identity", example_input=x16[:1])
        assert torch.equal(_out(model, x16), ref), where
        default = insert_attention(base, attention, where, example_input=x16[:1])
        assert not torch.allclose(_out(default, x16), ref), where
        assert torch.equal(_out(remove_attention(model), x16), ref)


def test_data_dependent_top_level_keeps_working_for_both_branches(x16):
    base = randomize_bn(DataDependent()).eval()
    model = insert_attention(base, "se", "residual", example_input=x16[:1]).eval()
    owners = {s["owner"] for s in surgery_spec(model)["insertions"][0]["sites"]}
    assert owners == {"layer1.0", "layer1.1", "layer2.0", "layer2.1"}
    for sign in (1.0, -1.0):  # both sides of the data-dependent branch
        x = x16.abs() * sign
        blocks = attention_modules(model)
        assert len(blocks) == 4
        ident = insert_attention(base, "se", "residual", init="identity", example_input=x16[:1])
        assert torch.equal(_out(ident, x), _out(base, x))


def test_stages_on_untraceable_top_level_go_inside_the_stage(x16):
    base = DataDependent().eval()
    model = insert_attention(base, "se", "stages", example_input=x16[:1])
    sites = surgery_spec(model)["insertions"][0]["sites"]
    # layer1/layer2 outputs cannot be rewired in the untraceable top level: their last blocks own them
    assert {(s["site"], s["owner"], s["attr"]) for s in sites} >= {
        ("layer1", "layer1.1", "output_attn"),
        ("layer2", "layer2.1", "output_attn"),
    }


# -- state dict, weights, copies -------------------------------------------------------------
def test_keys_kept_and_only_attention_keys_are_new(tiny_resnet):
    model = insert_attention(tiny_resnet, "se", "residual")
    base_keys = set(tiny_resnet.state_dict())
    new_keys = set(model.state_dict()) - base_keys
    assert base_keys <= set(model.state_dict())
    assert new_keys == set(attention_keys(model))
    assert all(".attn." in k for k in new_keys)
    assert "layer1.0.attn.fc1.weight" in new_keys


def test_base_weights_file_loads_with_only_attention_keys_missing(tmp_path, tiny_resnet):
    trained = copy.deepcopy(tiny_resnet)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1)
    torch.save(trained.state_dict(), tmp_path / "base.pth")
    model = insert_attention(tiny_resnet, "cbam", "residual", init="identity")
    missing = load_base_weights(model, tmp_path / "base.pth")
    assert set(missing) == set(attention_keys(model))
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(_out(model, x), _out(trained, x))
    # a file of another architecture is refused with the offending key
    torch.save(TinyResNet(widths=(8, 32)).state_dict(), tmp_path / "other.pth")
    with pytest.raises(ValueError, match="shape mismatch"):
        load_base_weights(model, tmp_path / "other.pth")


def test_create_model_local_weights_and_pretrained_paths(tmp_path, monkeypatch):
    base = torchvision.models.resnet18(num_classes=10)
    from safetensors.torch import save_file

    save_file(base.state_dict(), str(tmp_path / "r18.safetensors"))
    model = create_model(
        "torchvision:resnet18", num_classes=10, weights=tmp_path / "r18.safetensors"
    )
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values())
    )
    # torchvision's own download path, with the download replaced by the file we wrote
    full = torchvision.models.resnet18()
    import torchvision.models._api as tv_api

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: full.state_dict())
    pre = create_model("torchvision:resnet18", pretrained=True)
    assert torch.equal(pre.fc.weight, full.fc.weight)
    # timm's pretrained path with a local file (timm's pretrained_cfg_overlay)
    tb = timm.create_model("resnet18", num_classes=5)
    save_file(tb.state_dict(), str(tmp_path / "t.safetensors"))
    tm = create_model("timm:resnet18", num_classes=5, weights=tmp_path / "t.safetensors")
    assert torch.equal(tm.fc.weight, tb.fc.weight)


def test_weights_with_another_class_count_load_all_but_a_new_classifier(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    imagenet = torchvision.models.resnet18()  # 1000 classes
    save_file(imagenet.state_dict(), str(tmp_path / "r18.safetensors"))
    with pytest.warns(UserWarning, match=r"classifier 'fc' has 1000 outputs and the model 10"):
        model = create_model(
            "torchvision:resnet18", num_classes=10, weights=tmp_path / "r18.safetensors"
        )
    ref = imagenet.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("fc."):
            assert value.shape[0] == 10
        else:
            assert torch.equal(value, ref[key]), key
    assert base_reference(model)["kwargs"] == {"num_classes": 10}  # load() rebuilds a 10-way head
    # torchvision refuses weights= with num_classes=10 itself; attnviz loads the rest
    import torchvision.models._api as tv_api

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: imagenet.state_dict())
    with pytest.warns(UserWarning, match="keeps its random initialisation"):
        pre = create_model("torchvision:resnet18", pretrained=True, num_classes=10)
    assert torch.equal(pre.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert pre.fc.out_features == 10
    # any other mismatch is still a strict load's error naming the key
    save_file(torchvision.models.resnet34().state_dict(), str(tmp_path / "r34.safetensors"))
    with pytest.raises(attnviz.FileFormatError, match=r"layer1\.2"):
        create_model("torchvision:resnet18", num_classes=10, weights=tmp_path / "r34.safetensors")


def test_training_the_modified_model_never_changes_the_original(tiny_resnet):
    before = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    model = insert_attention(tiny_resnet, "se", "residual").train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        loss = model(torch.randn(4, 3, 16, 16)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = tiny_resnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert tiny_resnet.layer1[0].bn1.running_mean is not model.layer1[0].bn1.running_mean


def test_save_load_roundtrip_user_model_needs_base(tmp_path, tiny_resnet, x16):
    model = insert_attention(tiny_resnet, "eca", "residual").eval()
    path = save(model, tmp_path / "m.safetensors")
    assert (tmp_path / "m.json").is_file()
    # the test module's class is recognised and recorded, but a file may not make attnviz
    # import it: the load needs base= or an explicit trust_code=True
    spec = attnviz.serialization.read_spec(path)
    assert spec["base"]["ref"].endswith(":TinyResNet")
    with pytest.raises(attnviz.UntrustedCodeError, match=r"base=.*trust_code=True"):
        load(path)
    for loaded in (load(path, trust_code=True), load(path, base=type(tiny_resnet))):
        assert torch.equal(_out(loaded, x16), _out(model, x16))


def test_load_rejects_non_attnviz_files(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load(tmp_path / "x.safetensors")


def test_two_surgeries_stack_and_remove_together(tiny_resnet, x16):
    ref = _out(tiny_resnet, x16)
    one = insert_attention(tiny_resnet, "se", "residual", init="identity")
    two = insert_attention(one, "cbam", "stages", init="identity")
    assert len(surgery_spec(two)["insertions"]) == 2
    assert torch.equal(_out(two, x16), ref)
    assert torch.equal(_out(remove_attention(two), x16), ref)
    assert set(remove_attention(two).state_dict()) == set(tiny_resnet.state_dict())


def test_sequential_owner_keeps_len_and_indexing():
    base = plain_sequential()
    model = insert_attention(base, "se", ["0", "4"], example_input=torch.randn(1, 3, 16, 16))
    assert len(model) == len(base)
    assert isinstance(model[-1], nn.Linear) and isinstance(model[0], nn.Conv2d)
    assert [type(m) for m in model] == [type(m) for m in base]
    assert "0_attn" in dict(model.named_children())


# -- pitfalls -----------------------------------------------------------------------------------
def test_module_called_three_times_gets_three_blocks():
    """torchvision's Bottleneck calls one ReLU three times: one block after each call."""
    base = torchvision.models.resnet50()
    model = insert_attention(base, "eca", "layer1.0.relu", example_input=torch.randn(1, 3, 64, 64))
    sites = surgery_spec(model)["insertions"][0]["sites"]
    assert [(s["site"], s["attr"], s["channels"]) for s in sites] == [
        ("layer1.0.relu", "relu_attn", 64),
        ("layer1.0.relu_1", "relu_1_attn", 64),
        ("layer1.0.relu_2", "relu_2_attn", 256),
    ]


def test_timm_vgg_traces_with_timm_leaf_lists():
    base = timm.create_model("vgg11", num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    model = insert_attention(base, "se", "stages", init="identity", example_input=x)
    assert torch.equal(_out(model, x), _out(base, x))


def test_names_stay_stable_after_surgery(x16, tiny_resnet):
    before = [i.name for i in list_intermediates(tiny_resnet, x16)]
    model = insert_attention(tiny_resnet, "cbam", "residual")
    after = [i.name for i in list_intermediates(model, x16)]
    assert [n for n in after if ".attn" not in n] == before


# -- bad input --------------------------------------------------------------------------------
def test_unknown_attention(tiny_resnet):
    with pytest.raises(KeyError, match=r"unknown attention 'cbma'; closest valid: \['cbam'"):
        insert_attention(tiny_resnet, "cbma")


def test_selector_matching_nothing(tiny_resnet):
    with pytest.raises(KeyError, match=r"unknown site selector 'layer3\*'.*'layer1'"):
        insert_attention(tiny_resnet, "se", "layer3*")
    with pytest.raises(KeyError, match="Conv3d"):
        insert_attention(tiny_resnet, "se", nn.Conv3d)


def test_site_that_is_not_a_feature_map(tiny_resnet):
    with pytest.raises(SurgeryError, match=r"4-D feature maps.*fc -> \[1, 5\]"):
        insert_attention(tiny_resnet, "se", ["layer2", "fc"])


def test_untraceable_module_is_named_with_its_op():
    class GatedResidual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            if y.sum() > 0:
                y = y + x
            return y

    with pytest.raises(
        SurgeryError, match=r"no residual adds.*top level \(GatedResidual\): `if y.sum\(\) > 0:`"
    ):
        insert_attention(GatedResidual(), "se", "residual", example_input=torch.randn(1, 3, 8, 8))
    # a leaf under the untraceable forward still takes a block: inside the leaf itself
    model = insert_attention(
        GatedResidual(), "se", "conv", init="identity", example_input=torch.randn(1, 3, 8, 8)
    )
    assert surgery_spec(model)["insertions"][0]["sites"][0]["owner"] == "conv"


def test_block_that_changes_shape_is_refused(tiny_resnet):
    attnviz.register_attention("halve", lambda c: nn.Conv2d(c, c // 2, 1), overwrite=True)
    with pytest.raises(SurgeryError, match="must keep the feature shape"):
        insert_attention(tiny_resnet, "halve", "residual")


def test_bad_where_types(tiny_resnet):
    with pytest.raises(SurgeryError, match="cannot be combined"):
        insert_attention(tiny_resnet, "se", ["residual", "layer1"])
    with pytest.raises(TypeError, match=r"nn\.Module"):
        insert_attention("resnet", "se")


def test_remove_without_surgery(tiny_resnet):
    with pytest.raises(SurgeryError, match="no attention surgery"):
        remove_attention(tiny_resnet)


def test_inplace_residual_add_is_kept_only_where_safe(tiny_resnet, x16):
    """`out += identity` stays in place after SE (its output ends in a multiply), and turns
    out-of-place after a block whose output autograd saved (a sigmoid), so backward works."""
    import inspect

    se = insert_attention(tiny_resnet, "se", "residual")
    assert "+= " in inspect.getsource(type(se.layer1[0]).forward)
    attnviz.register_attention("squash", lambda c: nn.Sigmoid(), overwrite=True)
    squash = insert_attention(tiny_resnet, "squash", "residual").train()
    src = inspect.getsource(type(squash.layer1[0]).forward)
    assert "+= " not in src and " + " in src
    squash(x16).sum().backward()
    assert squash.conv1.weight.grad is not None
