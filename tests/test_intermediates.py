"""Hook-free intermediates: exact values at in-place ops, gradients, the classic hook recipes."""

from __future__ import annotations

import threading

import pytest
import torch
import torchvision
from torch import nn

from attnviz import insert_attention, list_intermediates, with_intermediates

from .conftest import DataDependent, randomize_bn


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.resnet18(num_classes=10)).eval()


@pytest.fixture
def x64():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


# -- exact values at in-place ops ------------------------------------------------------------
def test_bn1_before_inplace_relu(resnet18, x64):
    wrapped = with_intermediates(resnet18, ["bn1", "layer1.0.bn2", "layer1.0.add"])
    _no_hooks(wrapped)
    out, feats = wrapped(x64)
    with torch.no_grad():
        bn1 = resnet18.bn1(resnet18.conv1(x64))
        assert torch.equal(feats["bn1"], bn1)
        assert feats["bn1"].min() < 0
        # layer1.0.bn2 is the branch output before `out += identity` and the in-place ReLU
        blk = resnet18.layer1[0]
        inp = resnet18.maxpool(resnet18.relu(bn1.clone()))
        branch = blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(inp)))))
        assert torch.equal(feats["layer1.0.bn2"], branch)
        assert feats["layer1.0.bn2"].min() < 0
        assert torch.equal(feats["layer1.0.add"], branch + inp)
        assert feats["layer1.0.add"].min() < 0
        assert (out - resnet18(x64)).abs().max() <= 1e-6


def test_mutation_the_tracer_cannot_see_is_an_error_not_a_wrong_value():
    class SneakyInplace(nn.Module):  # a leaf that mutates its input without an `inplace` flag
        def forward(self, x):
            return x.mul_(2)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), SneakyInplace(), nn.Flatten())
    wrapped = with_intermediates(model, ["0"])
    with pytest.raises(RuntimeError, match=r"\['0'\] were modified in place"):
        wrapped(torch.randn(1, 3, 4, 4))


# -- gradients -----------------------------------------------------------------------------------
def _split_gradient(model, x, k):
    """Independent reference: run the model by hand in two halves around layer2."""
    with torch.no_grad():
        h = model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))
    h = h.clone().requires_grad_(True)
    y = model.fc(torch.flatten(model.avgpool(model.layer4(model.layer3(h))), 1))
    return torch.autograd.grad(y[:, k].sum(), h)[0]


@pytest.mark.parametrize("frozen", [False, True])
def test_gradient_to_captured_value(resnet18, x64, frozen):
    model = resnet18
    if frozen:
        import copy

        model = copy.deepcopy(resnet18)
        for p in model.parameters():
            p.requires_grad_(False)
    wrapped = with_intermediates(model, "layer2")
    x = x64.clone().requires_grad_(
        frozen
    )  # with every weight frozen, a graph needs a leaf that requires grad
    out, feats = wrapped(x)
    grad = torch.autograd.grad(out[:, 3].sum(), feats["layer2"])[0]
    assert torch.allclose(grad, _split_gradient(model, x64, 3), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


# -- the classic hook recipes -----------------------------------------------------------------
class AlexNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, 2, 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def test_every_conv_of_a_sequential_model():
    model = AlexNetStyle().eval()
    x = torch.randn(2, 3, 32, 32)
    out, feats = with_intermediates(model, nn.Conv2d)(x)
    assert list(feats) == ["features.0", "features.3", "features.5"]
    with torch.no_grad():
        h = x
        for i, layer in enumerate(model.features):
            h = layer(h.clone())
            if isinstance(layer, nn.Conv2d):
                assert torch.equal(feats[f"features.{i}"], h)
    # the same with a glob restricted to a type
    out2, feats2 = with_intermediates(model, "features.*", types=nn.Conv2d)(x)
    assert list(feats2) == list(feats) and torch.equal(out, out2)


def test_chosen_indices_of_a_sequential():
    model = AlexNetStyle().eval()
    _, feats = with_intermediates(model, ["features.2", "features.7", "classifier.1"])(
        torch.randn(1, 3, 32, 32)
    )
    assert [tuple(v.shape) for v in feats.values()] == [(1, 8, 8, 8), (1, 16, 4, 4), (1, 10)]


def test_conv_inside_a_nested_and_a_recursive_model():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x))

    class Recursive(nn.Module):
        def __init__(self, depth):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.child = Recursive(depth - 1) if depth > 1 else None

        def forward(self, x):
            x = self.conv(x)
            return self.child(x) if self.child is not None else x

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 1)
            self.inner = Inner()
            self.rec = Recursive(3)

        def forward(self, x):
            return self.rec(self.inner(self.stem(x)))

    model = Outer().eval()
    x = torch.randn(1, 3, 8, 8)
    _, feats = with_intermediates(model, ["inner.conv", "rec.child.child.conv"])(x)
    with torch.no_grad():
        inner = model.inner.conv(model.stem(x))
        assert torch.equal(feats["inner.conv"], inner)
        deep = model.rec.child.child.conv(model.rec.child.conv(model.rec.conv(torch.relu(inner))))
        assert torch.equal(feats["rec.child.child.conv"], deep)


def test_resnet_first_convs_of_stages(resnet18, x64):
    names = ["layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"]
    _, feats = with_intermediates(resnet18, names)(x64)
    with torch.no_grad():
        h = resnet18.maxpool(resnet18.relu(resnet18.bn1(resnet18.conv1(x64))))
        assert torch.equal(feats["layer1.0.conv1"], resnet18.layer1[0].conv1(h))
        h = resnet18.layer1(h)
        assert torch.equal(feats["layer2.0.conv1"], resnet18.layer2[0].conv1(h))
        h = resnet18.layer2(h)
        assert torch.equal(feats["layer3.0.conv1"], resnet18.layer3[0].conv1(h))


def test_attention_gates_after_surgery(resnet18, x64):
    model = insert_attention(resnet18, "se", "residual").eval()
    wrapped = with_intermediates(model, "layer*.?.attn.gate")
    out, gates = wrapped(x64)
    assert len(gates) == 8 and next(iter(gates)) == "layer1.0.attn.gate"
    assert all(g.shape[2:] == (1, 1) and g.min() > 0 and g.max() < 1 for g in gates.values())
    with torch.no_grad():
        assert torch.equal(out, model(x64))
        blk = model.layer4[1]
        _, f = with_intermediates(model, ["layer4.1.bn2"])(x64)
        expect = blk.attn.gate(
            blk.attn.fc2(blk.attn.act(blk.attn.fc1(f["layer4.1.bn2"].mean((2, 3), keepdim=True))))
        )
        assert torch.allclose(gates["layer4.1.attn.gate"], expect, atol=1e-6)


# -- untraceable models ---------------------------------------------------------------------------
def test_data_dependent_top_level_still_gives_intermediates(x16):
    model = randomize_bn(DataDependent()).eval()
    names = [i.name for i in list_intermediates(model, x16)]
    assert {"layer1.0.bn2", "layer1.0.add", "layer2", "fc"} <= set(names)
    wrapped = with_intermediates(model, ["layer1.0.bn2", "layer2.1.add", "layer2"])
    out, feats = wrapped(x16)
    assert torch.equal(out, model(x16))
    with torch.no_grad():
        h = model.relu(model.bn1(model.conv1(x16)))
        blk = model.layer1[0]
        assert torch.equal(
            feats["layer1.0.bn2"], blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(h.clone())))))
        )
        assert torch.equal(feats["layer2"], model.layer2(model.layer1(h.clone())))
    grad = torch.autograd.grad(out.sum(), feats["layer2"])[0]
    assert grad.shape == feats["layer2"].shape


def test_untraceable_names_the_module_and_op():
    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            for _ in range(int(y.mean() > 0)):  # data-dependent loop
                y = y * 2
            return y

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Opaque()

        def forward(self, x):
            return self.body(x) + 1

    with pytest.raises(KeyError, match=r"'body' \(Opaque\).*int\(y.mean\(\) > 0\)"):
        with_intermediates(Model(), "body.mul")


# -- names and errors ----------------------------------------------------------------------------
def test_list_intermediates_in_execution_order(resnet18):
    info = list_intermediates(resnet18, torch.randn(1, 3, 64, 64))
    names = [i.name for i in info]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert (
        names.index("layer1.0.bn2")
        < names.index("layer1.0.add")
        < names.index("layer1.0.relu_1")
        < names.index("layer1.0")
    )
    assert names.index("layer1.1") < names.index("layer1") < names.index("layer2.0.conv1")
    by_name = {i.name: i for i in info}
    assert by_name["layer4"].shape == (1, 512, 2, 2) and by_name["layer4"].type == "Sequential"
    assert by_name["layer1.0.add"].kind == "op"


def test_unknown_name_lists_closest(resnet18):
    with pytest.raises(KeyError) as err:
        with_intermediates(resnet18, "layer1.0.bn3")
    closest = str(err.value).split("closest valid: [")[1]
    assert closest.startswith(("'layer1.0.bn2', 'layer1.0.bn1'", "'layer1.0.bn1', 'layer1.0.bn2'"))
    with pytest.raises(KeyError, match="matched nothing"):
        with_intermediates(resnet18, "layer9.*")
    with pytest.raises(ValueError, match="empty"):
        with_intermediates(resnet18, [])


# -- stateless, threads, modes, compile, DDP -------------------------------------------------------
def test_repeated_calls_and_modes(resnet18, x64):
    wrapped = with_intermediates(resnet18, ["layer3"])
    a = wrapped(x64)[1]["layer3"]
    b = wrapped(x64)[1]["layer3"]
    assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    wrapped.train()
    out, _ = wrapped(x64)
    assert out.shape == (2, 10) and resnet18.training
    wrapped.eval()
    assert not resnet18.training


def test_threads_get_their_own_values(resnet18):
    wrapped = with_intermediates(resnet18, ["layer2.1.add"])
    inputs = [
        torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(6)
    ]
    results = {}

    def run(i):
        results[i] = wrapped(inputs[i])[1]["layer2.1.add"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(inputs):
        assert torch.equal(results[i], wrapped(x)[1]["layer2.1.add"])


def test_torch_compile(resnet18, x64):
    wrapped = with_intermediates(resnet18, ["layer1.0.bn2", "layer4"])
    compiled = torch.compile(wrapped, backend="aot_eager")
    out, feats = compiled(x64)
    ref_out, ref = wrapped(x64)
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert torch.allclose(feats["layer1.0.bn2"], ref["layer1.0.bn2"], atol=1e-5)


def test_ddp_wrapping(resnet18, x64, tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        import copy

        model = copy.deepcopy(resnet18).train()
        ddp = DDP(with_intermediates(model, ["layer3"]))
        out, feats = ddp(x64)
        (out.sum() + feats["layer3"].mean()).backward()
        assert model.conv1.weight.grad is not None
    finally:
        dist.destroy_process_group()


def test_grad_from_records_autograd_only_after_the_layer(resnet18, x64):
    wrapped = with_intermediates(resnet18, ["layer2", "layer3"], grad_from="layer3")
    out, feats = wrapped(x64)
    assert feats["layer3"].is_leaf and feats["layer3"].requires_grad
    assert not feats["layer2"].requires_grad  # nothing before layer3 was recorded
    grad = torch.autograd.grad(out[:, 2].sum(), feats["layer3"])[0]
    _, ref = with_intermediates(resnet18, ["layer3"])(x64)
    ref_grad = torch.autograd.grad(
        resnet18.fc(torch.flatten(resnet18.avgpool(resnet18.layer4(ref["layer3"])), 1))[:, 2].sum(),
        ref["layer3"],
    )[0]
    assert torch.allclose(grad, ref_grad, atol=1e-6) and torch.equal(feats["layer3"], ref["layer3"])
    assert torch.is_grad_enabled()
    with torch.no_grad():
        out, feats = wrapped(x64)
        assert not out.requires_grad and not torch.is_grad_enabled()
    with pytest.raises(ValueError, match="must be one of the captured names"):
        with_intermediates(resnet18, ["layer2"], grad_from="layer3")


def test_user_hooks_never_see_proxies_and_lost_ones_are_reported(resnet18, x64):
    seen: list[str] = []
    h1 = resnet18.layer4.register_forward_hook(lambda m, i, o: seen.append(type(o).__name__))
    h2 = resnet18.layer4[0].conv1.register_forward_hook(
        lambda m, i, o: seen.append("conv:" + type(o).__name__)
    )
    try:
        with pytest.warns(UserWarning, match=r"hooks on \['layer4'\] will not run"):
            wrapped = with_intermediates(resnet18, ["layer3"])
        assert not any("Proxy" in s for s in seen)
        seen.clear()
        wrapped(x64)
        assert seen == ["conv:Tensor"]  # the leaf's hook runs, the traced-through module's does not
    finally:
        h1.remove()
        h2.remove()


def test_repeated_tracing_does_not_grow_linecache(resnet18):
    import linecache

    with_intermediates(resnet18, ["layer4"])
    n = len(linecache.cache)
    for _ in range(5):
        with_intermediates(resnet18, ["layer4"])
    assert len(linecache.cache) == n
