"""Surgery across the torchvision and timm zoo: every placement, identity, removal, round-trip.

Small inputs (64 px, batch 2) keep this cheap; each model runs its three
placements in one test so it is built once.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from attnviz import insert_attention, load, remove_attention, save, surgery_spec

from .conftest import randomize_bn

TORCHVISION = [
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "regnet_y_400mf",
    "convnext_tiny",
    "densenet121",
    "vgg11_bn",
]
TIMM = ["resnet50", "efficientnet_b0", "mobilenetv3_large_100", "convnext_nano"]
NO_RESIDUAL = {"densenet121", "vgg11_bn"}
SELECTOR = {"vgg11_bn": "features.*", "densenet121": "features.denseblock*"}


def build(source: str, name: str) -> nn.Module:
    torch.manual_seed(0)
    model = (
        getattr(torchvision.models, name)() if source == "torchvision" else timm.create_model(name)
    )
    return randomize_bn(model).eval()


CASES = [("torchvision", n) for n in TORCHVISION] + [("timm", n) for n in TIMM]


@pytest.mark.parametrize(("source", "name"), CASES, ids=[f"{s}:{n}" for s, n in CASES])
def test_zoo_surgery(source, name, tmp_path):
    base = build(source, name)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    example = x[:1]
    with torch.no_grad():
        ref = base(x)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    placements = ["stages", SELECTOR.get(name, nn.Conv2d)]
    if name not in NO_RESIDUAL:
        placements.insert(0, "residual")
    for i, where in enumerate(placements):
        model = insert_attention(base, "se", where, init="identity", example_input=example).eval()
        assert type(model) is not nn.Module and isinstance(model, type(base))
        sites = surgery_spec(model)["insertions"][0]["sites"]
        assert sites, where
        with torch.no_grad():
            out = model(x)
        assert out.shape == ref.shape
        assert (out - ref).abs().max() <= 1e-5, (where, (out - ref).abs().max())
        state = model.state_dict()
        for key, value in base_state.items():
            assert key in state, key
            assert torch.equal(state[key], value), key
        restored = remove_attention(model)
        assert set(restored.state_dict()) == set(base_state)
        with torch.no_grad():
            assert torch.equal(restored(x), ref)
        if i == 0:
            path = save(model, tmp_path / f"{name}.safetensors")
            loaded = load(path).eval()
            with torch.no_grad():
                assert torch.equal(loaded(x), out)
    # the input model was never touched
    assert all(torch.equal(base.state_dict()[k], v) for k, v in base_state.items())


def test_no_residual_models_say_so():
    with pytest.raises(ValueError, match="no residual adds"):
        insert_attention(
            torchvision.models.vgg11_bn(), "se", "residual", example_input=torch.randn(1, 3, 64, 64)
        )
