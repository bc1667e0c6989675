"""Tests for attnviz.nets: the small demo ResNet."""

from __future__ import annotations

import math
import operator
import time

import pytest
import torch
from torch import nn

from attnviz.nets import DEMO_NET, BasicBlock, SmallResNet, small_resnet


def test_output_shape_and_attributes():
    m = small_resnet(7, widths=(8, 16, 32), depths=(1, 2, 1))
    assert isinstance(m, SmallResNet)
    assert m(torch.randn(2, 3, 40, 40)).shape == (2, 7)
    assert m.num_classes == 7 and m.num_features == 32
    assert isinstance(m.avgpool, nn.AdaptiveAvgPool2d) and isinstance(m.fc, nn.Linear)
    assert [len(s) for s in m.stages] == [1, 2, 1]
    assert all(isinstance(b, BasicBlock) for s in m.stages for b in s)
    assert m.get_classifier() is m.fc


def test_torchvision_style_names():
    m = small_resnet(3, widths=(8, 16), depths=(1, 1))
    names = [n for n, _ in m.named_children()]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "avgpool", "fc"]
    keys = set(m.state_dict())
    for k in ("conv1.weight", "layer1.0.conv1.weight", "layer1.0.bn2.weight",
              "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
              "fc.weight"):  # fmt: skip
        assert k in keys, k
    assert m.layer1[0].downsample is None  # same width, stride 1: identity shortcut


@pytest.mark.parametrize(
    ("stem_stride", "stem_pool", "side"),
    [(1, False, 16), (2, False, 8), (2, True, 4), (4, False, 4)],
)
def test_stem_sets_resolution(stem_stride, stem_pool, side):
    m = small_resnet(2, widths=(8, 8, 8), stem_stride=stem_stride, stem_pool=stem_pool)
    feats = m.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, 8, side, side)


def test_block_forward_order_puts_bn2_right_before_the_add():
    block = BasicBlock(
        4, 8, stride=2, downsample=nn.Sequential(nn.Conv2d(4, 8, 1, 2), nn.BatchNorm2d(8))
    )
    gm = torch.fx.symbolic_trace(block)
    order = [n.target for n in gm.graph.nodes if n.op in ("call_module", "call_function")]
    assert order[:5] == ["conv1", "bn1", "relu", "conv2", "bn2"]
    add = next(n for n in gm.graph.nodes if n.target in (operator.add, operator.iadd, torch.add))
    assert {a.target for a in add.args} == {"bn2", "downsample.1"}
    assert order[-1] == "relu"
    x = torch.randn(2, 4, 8, 8)
    block.eval()
    expected = torch.relu(
        block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + block.downsample(x)
    )
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_fx_symbolic_trace_matches_eager():
    m = small_resnet(5, **DEMO_NET).eval()
    gm = torch.fx.symbolic_trace(m)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(gm(x), m(x), atol=1e-5)
    targets = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    assert {"layer1.0.bn2", "layer3.0.downsample.0", "avgpool", "fc"} <= targets


def test_reset_classifier():
    m = small_resnet(10, widths=(8, 16))
    m.reset_classifier(3)
    assert m.num_classes == 3 and m(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    m.reset_classifier(0)
    assert isinstance(m.fc, nn.Identity) and m(torch.randn(1, 3, 32, 32)).shape == (1, 16)
    with pytest.raises(ValueError, match="num_classes"):
        m.reset_classifier(-1)


def test_kaiming_init_and_zero_init_residual():
    torch.manual_seed(0)
    m = small_resnet(10, widths=(64, 64), depths=(2, 2))
    w = m.layer1[0].conv1.weight
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(w.std().item() - math.sqrt(2.0 / fan_out)) < 0.1 * math.sqrt(2.0 / fan_out)
    assert all((b.bn2.weight == 1).all() for s in m.stages for b in s)
    z = small_resnet(10, widths=(8, 8), zero_init_residual=True)
    assert all((b.bn2.weight == 0).all() for s in z.stages for b in s)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"widths": ()}, "widths"),
        ({"widths": (8, 0)}, "widths"),
        ({"widths": (8, 16), "depths": (1,)}, "depths"),
        ({"depths": (1, 0, 1)}, "depths"),
        ({"stem_stride": 3}, "stem_stride"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": -2}, "num_classes"),
    ],
)
def test_invalid_config_errors(kwargs, word):
    with pytest.raises(ValueError, match=word):
        small_resnet(**kwargs)


def test_in_chans_and_gradients_flow():
    m = small_resnet(4, in_chans=1, widths=(8, 16))
    out = m(torch.randn(3, 1, 32, 32))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_demo_net_is_cheap_enough():
    m = small_resnet(10, **DEMO_NET)
    assert sum(p.numel() for p in m.parameters()) < 1_000_000
    x = torch.randn(32, 3, 64, 64)
    m(x)  # warm up
    t = time.perf_counter()
    m(x).sum().backward()
    # One training step of 32 images takes ~0.1 s on 2 cores; a 10x margin for busy machines.
    assert time.perf_counter() - t < 2.0


@pytest.mark.slow
def test_demo_recipe_reaches_85_percent():
    """The demo recipe (DEMO_NET + DEMO_TRAINING) learns SyntheticShapes: >= 85% val.

    Takes ~1.5 min on 2 idle CPU cores (plus ~10 s to render the images).
    """
    import torch.nn.functional as F

    from attnviz.data import DEMO_TRAINING, SyntheticShapes

    cfg = DEMO_TRAINING
    torch.manual_seed(0)
    torch.set_num_threads(cfg["num_threads"])

    def tensors(split, n):
        ds = SyntheticShapes(n, size=cfg["size"], num_classes=cfg["num_classes"], split=split)
        xs, ys, _ = zip(*(ds[i] for i in range(n)))
        return torch.stack(xs), torch.tensor(ys)

    x_train, y_train = tensors("train", cfg["train_images"])
    x_val, y_val = tensors("val", cfg["val_images"])
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    model = small_resnet(cfg["num_classes"], **DEMO_NET).to(memory_format=fmt)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg["lr"],
        momentum=cfg["momentum"],
        nesterov=cfg["nesterov"],
        weight_decay=cfg["weight_decay"],
    )
    bs = cfg["batch_size"]
    steps = math.ceil(len(x_train) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * steps, pct_start=cfg["warmup_pct"]
    )
    t0 = time.perf_counter()
    for _ in range(cfg["epochs"]):
        model.train()
        perm = torch.randperm(len(x_train))
        for s in range(steps):
            idx = perm[s * bs : (s + 1) * bs]
            xb, yb = x_train[idx], y_train[idx]
            for dim, on in ((-1, cfg["hflip"]), (-2, cfg["vflip"])):
                flip = torch.rand(len(xb)) < 0.5 if on else torch.zeros(len(xb), dtype=torch.bool)
                xb[flip] = xb[flip].flip(dim)
            loss = F.cross_entropy(model(xb.contiguous(memory_format=fmt)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [model(x.contiguous(memory_format=fmt)).argmax(1) for x in x_val.split(500)]
        )
    acc = (pred == y_val).float().mean().item()
    print(f"demo recipe: val accuracy {acc:.3f} after {time.perf_counter() - t0:.0f} s of training")
    assert acc >= 0.85, acc
