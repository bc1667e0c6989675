"""aug_smooth, eigen_smooth and SmoothGrad-CAM++ by their definitions (references in test_cam_parity)."""

from __future__ import annotations

import copy

import pytest
import torch

from attnviz.cam import compute_cam
from attnviz.cam.augment import AUGMENTATIONS
from attnviz.errors import CamError
from attnviz.intermediates import with_intermediates

from .conftest import TinyResNet, randomize_bn


@pytest.fixture(scope="module")
def model() -> TinyResNet:
    torch.manual_seed(0)
    return randomize_bn(TinyResNet()).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


# -- aug_smooth -----------------------------------------------------------------------------
def test_aug_smooth_is_the_mean_of_six_versions_flipped_back(model, x):
    layers, methods, targets = ["layer1", "layer2"], ["gradcam", "scorecam"], [0, 3, 4]
    r = compute_cam(model, x, layers, methods, targets, aug_smooth=True)
    assert len(AUGMENTATIONS) == 6 and AUGMENTATIONS[0] == (False, 1.0)
    versions = []
    for flip, factor in AUGMENTATIONS:
        v = compute_cam(model, (x.flip(-1) if flip else x) * factor, layers, methods, targets)
        versions.append((flip, v))

    def mean(get):
        return torch.stack([get(v).flip(-1) if f else get(v) for f, v in versions]).mean(0)

    for key in r:
        torch.testing.assert_close(r[key], mean(lambda v, k=key: v[k]))
        torch.testing.assert_close(r.raw_map(*key), mean(lambda v, k=key: v.raw_map(*k)))
    for m in methods:
        torch.testing.assert_close(r.fused_maps[m], mean(lambda v, m=m: v.fused_maps[m]))
    torch.testing.assert_close(r.scores, versions[0][1].scores)
    chunked = compute_cam(model, x, layers, methods, targets, aug_smooth=True, batch_size=2)
    for key in r:
        torch.testing.assert_close(chunked[key], r[key])


def test_aug_smooth_explains_the_class_predicted_on_the_original_image(model, x):
    predicted = model(x).argmax(1)
    r = compute_cam(model, x, "layer2", aug_smooth=True)
    assert r.targets.tolist() == predicted.tolist()
    explicit = compute_cam(model, x, "layer2", targets=predicted, aug_smooth=True)
    torch.testing.assert_close(r.maps, explicit.maps)


# -- eigen_smooth -----------------------------------------------------------------------------
def test_eigen_smooth_is_the_first_component_of_the_weighted_activations(model, x):
    targets = torch.tensor([0, 3, 4])
    out, feats = with_intermediates(model, ["layer2"])(x)
    a = feats["layer2"]
    (g,) = torch.autograd.grad(out.gather(1, targets[:, None]).sum(), a)
    a, g = a.detach(), g.detach()
    weighted = {
        "gradcam": g.mean((2, 3))[:, :, None, None] * a,
        "layercam": g.clamp(min=0) * a,
        "hirescam": g * a,
    }
    for method, wa in weighted.items():
        r = compute_cam(
            model,
            x,
            "layer2",
            method,
            targets,
            eigen_smooth=True,
            relu=False,
            size="layer",
            normalize="none",
        )
        flat = wa.flatten(2).transpose(1, 2)
        flat = flat - flat.mean(1, keepdim=True)
        v = torch.linalg.svd(flat, full_matrices=False).Vh[:, 0]
        proj = (flat @ v[:, :, None]).squeeze(-1).view_as(r.raw)
        torch.testing.assert_close(r.raw.abs(), proj.abs(), atol=1e-5, rtol=1e-4)
        plain = wa.sum(1)  # the map without smoothing: the projection is signed to agree with it
        assert ((r.raw * plain).sum((1, 2)) > 0).all(), method


# -- SmoothGrad-CAM++ -----------------------------------------------------------------------
def test_smoothgradcampp_noise_is_reproducible_and_independent_of_chunks(model, x):
    r = compute_cam(model, x, "layer2", "smoothgradcam++", [0, 3, 4], noise_seed=3)
    again = compute_cam(model, x, "layer2", "smoothgradcam++", [0, 3, 4], noise_seed=3)
    chunked = compute_cam(
        model, x, "layer2", "smoothgradcam++", [0, 3, 4], noise_seed=3, batch_size=2
    )
    other = compute_cam(model, x, "layer2", "smoothgradcam++", [0, 3, 4], noise_seed=4)
    torch.testing.assert_close(again.maps, r.maps)
    torch.testing.assert_close(chunked.maps, r.maps)
    assert (other.maps - r.maps).abs().max() > 1e-3


def test_smoothgradcampp_with_vanishing_noise_is_its_formula_on_the_image(model, x):
    targets = torch.tensor([0, 3, 4])
    r = compute_cam(
        model,
        x,
        "layer2",
        "smoothgradcam++",
        targets,
        noise_std=1e-7,
        normalize="none",
        size="layer",
    )
    out, feats = with_intermediates(model, ["layer2"])(x)
    a = feats["layer2"]
    (g,) = torch.autograd.grad(out.gather(1, targets[:, None]).sum(), a)
    a, g = a.detach(), g.detach()
    alpha = g**2 / (2 * g**2 + (g**3 * a).sum((2, 3), keepdim=True))
    alpha = torch.where(g != 0, alpha, 0)
    ref = torch.einsum("bc,bchw->bhw", (alpha * g.clamp(min=0)).sum((2, 3)), a).relu()
    torch.testing.assert_close(r.raw, ref, atol=1e-5, rtol=1e-3)


# -- options ----------------------------------------------------------------------------------
def test_new_method_names_and_option_errors(model, x):
    r = compute_cam(model, x, "layer2", ["Ablation-CAM", "SmoothGradCAMpp"], [0, 1, 2])
    assert r.methods == ("ablationcam", "smoothgradcam++")
    for bad, match in (
        ({"noise_samples": 0}, "noise_samples"),
        ({"noise_std": 0.0}, "noise_std"),
        ({"noise_seed": 1.5}, "noise_seed"),
    ):
        with pytest.raises(CamError, match=match):
            compute_cam(model, x, "layer2", "smoothgradcam++", **bad)
    with pytest.raises(TypeError, match="aug_smooth must be True or False"):
        compute_cam(model, x, "layer2", aug_smooth="yes")
    with pytest.raises(TypeError, match="class_names"):
        compute_cam(model, x, "layer2", class_names="cat dog")


def test_new_methods_under_no_grad_and_inference_mode_on_a_frozen_model(model, x):
    methods = ["ablationcam", "smoothgradcam++", "gradcam"]
    ref = compute_cam(model, x, "layer2", methods, [0, 1, 2], aug_smooth=True)
    frozen = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        a = compute_cam(frozen, x, "layer2", methods, [0, 1, 2], aug_smooth=True)
    with torch.inference_mode():
        b = compute_cam(frozen, x.clone(), "layer2", methods, [0, 1, 2], aug_smooth=True)
    for key in ref:
        torch.testing.assert_close(a[key], ref[key])
        torch.testing.assert_close(b[key], ref[key])
    assert all(p.grad is None for p in model.parameters())
