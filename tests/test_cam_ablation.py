"""Ablation-CAM: the weights by definition, the forward cut after the layer, and its fallback.

Parity with pytorch-grad-cam's ``AblationCAM`` is in ``test_cam_parity.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnviz._tail import LayerTail
from attnviz.cam import compute_cam
from attnviz.errors import CamError, TraceError
from attnviz.intermediates import with_intermediates

from .conftest import DataDependent, TinyResNet, randomize_bn


def tiny(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    return randomize_bn(TinyResNet(), seed).eval()


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def by_hand_ablation(model: nn.Module, x: torch.Tensor, path: str, targets) -> torch.Tensor:
    """The definition, one full forward per (image, channel), the channel zeroed by a hook."""
    t = torch.as_tensor(targets)
    module = model.get_submodule(path)
    store = []
    handle = module.register_forward_hook(lambda m, i, o: store.append(o.clone()))  # -> None
    with torch.no_grad():
        base = model(x).gather(1, t[:, None])[:, 0]
    handle.remove()
    acts = store[0]
    weights = torch.zeros(acts.shape[:2])
    for k in range(acts.shape[1]):

        def zero(m, i, o, k=k):
            o = o.clone()
            o[:, k] = 0
            return o

        handle = module.register_forward_hook(zero)
        with torch.no_grad():
            ablated = model(x).gather(1, t[:, None])[:, 0]
        handle.remove()
        weights[:, k] = (base - ablated) / base
    return torch.einsum("bc,bchw->bhw", weights, acts).relu()


def count_full_forwards(monkeypatch) -> list[int]:
    calls = []
    real = LayerTail.full

    def full(self, replaced, imgs, owner):
        calls.append(owner.shape[0])
        return real(self, replaced, imgs, owner)

    monkeypatch.setattr(LayerTail, "full", full)
    return calls


@pytest.mark.parametrize("layer", ["layer1", "layer2.0.bn1", "layer2.1.bn2"])
def test_ablationcam_weights_are_the_score_drop_per_zeroed_channel(layer, monkeypatch):
    # layer2.0.bn1 sits inside a block: the tail reads the block input (the skip path)
    # from the ordinary forward; layer2.1.bn2 is mutated in place by `out += identity`.
    full = count_full_forwards(monkeypatch)
    model, x = tiny(), images()
    r = compute_cam(model, x, layer, "ablationcam", [1, 3], normalize="none", size="layer")
    torch.testing.assert_close(r.raw, by_hand_ablation(model, x, layer, [1, 3]))
    assert full == []  # every chunk ran the layers after `layer` only


def test_ablationcam_chunks_and_batches_give_the_same_maps():
    model, x = tiny(), images(3)
    ref = compute_cam(model, x, "layer2", "ablationcam", [0, 1, 2], normalize="none")
    for batch_size in (1, 5, 64):
        r = compute_cam(
            model, x, "layer2", "ablationcam", [0, 1, 2], normalize="none", batch_size=batch_size
        )
        torch.testing.assert_close(r.raw, ref.raw)


class HoldsBatchSize(nn.Module):
    """Reads the batch size before the layer and uses it after: the cut cannot run alone."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        b = x.shape[0]
        h = self.conv2(self.conv1(x).relu()).relu()
        return self.fc(h.mean((2, 3)).reshape(b, -1))


class MutatesAcrossTheCut(nn.Module):
    """An in-place op after the layer changes a value from before it that later ops read."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a = self.conv1(x)
        b = self.conv2(a).relu()
        a.add_(b)  # conv3 below reads `a`, which now depends on the layer
        return self.fc(self.conv3(a).mean((2, 3)))


@pytest.mark.parametrize(("cls", "layer"), [(HoldsBatchSize, "conv2"), (MutatesAcrossTheCut, "b")])
def test_ablationcam_runs_the_full_forward_where_the_cut_is_not_exact(cls, layer, monkeypatch):
    full = count_full_forwards(monkeypatch)
    torch.manual_seed(0)
    model, x = cls().eval(), images()
    name = {"b": "relu"}.get(layer, layer)  # the value of `b` is the ReLU's output
    r = compute_cam(model, x, name, "ablationcam", [0, 2], normalize="none", size="layer")
    path = "conv2"
    if cls is MutatesAcrossTheCut:  # by hand: zero the ReLU's output, i.e. conv2 after ReLU
        ref = _by_hand_relu_output(model, x, [0, 2])
    else:
        ref = by_hand_ablation(model, x, path, [0, 2])
    torch.testing.assert_close(r.raw, ref)
    assert full and sum(full) >= 2 * r.raw.shape[0]  # the chunks went through the whole model


def _by_hand_relu_output(model: MutatesAcrossTheCut, x, targets) -> torch.Tensor:
    t = torch.as_tensor(targets)

    def run(k=None):
        a = model.conv1(x)
        b = model.conv2(a).relu()
        if k is not None:
            b = b.clone()
            b[:, k] = 0
        acts = b.clone()
        a.add_(b)
        return model.fc(model.conv3(a).mean((2, 3))).gather(1, t[:, None])[:, 0], acts

    with torch.no_grad():
        base, acts = run()
        w = torch.stack([(base - run(k)[0]) / base for k in range(acts.shape[1])], dim=1)
    return torch.einsum("bc,bchw->bhw", w, acts).relu()


def test_ablationcam_callable_and_per_image_targets_score_each_ablated_copy():
    model, x = tiny(), images()
    ref = compute_cam(model, x, "layer2", "ablationcam", [1, 3], normalize="none")
    per_image = [lambda o: o[1], lambda o: o[3]]
    r = compute_cam(model, x, "layer2", "ablationcam", per_image, normalize="none")
    torch.testing.assert_close(r.raw, ref.raw)
    r = compute_cam(model, x, "layer2", "ablationcam", lambda o: o[:, 1], normalize="none")
    torch.testing.assert_close(
        r.raw[0], compute_cam(model, x, "layer2", "ablationcam", 1, normalize="none").raw[0]
    )


def test_ablationcam_image_with_a_zero_score_gets_a_zero_map():
    model, x = tiny(), images()
    r = compute_cam(model, x, "layer2", "ablationcam", [lambda o: o[0], lambda o: 0 * o[0]])
    assert (r.maps[1] == 0).all() and r.maps[0].amax() == 1


def test_ablationcam_errors():
    model, x = tiny(), images()
    with pytest.raises(CamError, match="reshape_transform"):
        compute_cam(model, x, "layer2", "ablationcam", reshape_transform=lambda t: t)
    with pytest.raises(CamError, match="pass the model itself"):
        compute_cam(with_intermediates(model, ["layer2"]), x, "layer2", "ablationcam")
    torch.manual_seed(0)
    with pytest.raises(TraceError, match="cannot be traced"):
        compute_cam(DataDependent().eval(), x, "layer2", "ablationcam")
