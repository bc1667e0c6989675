"""pytorch-grad-cam users at home: its target objects, model outputs beyond logits, reshape_transform.

Each behaviour is checked against pytorch-grad-cam itself (within 1e-5) where it has
one: classifier targets on resnet18, a segmentation target on a torchvision FCN
(whose ``{"out": ..., "aux": ...}`` output needs no option here, and a wrapper
module there), a ViT's tokens through ``reshape_transform``.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCN, FCNHead

from attnviz.cam import (
    SegmentationTarget,
    SoftmaxTarget,
    compute_cam,
    minmax,
    resize_maps,
)
from attnviz.errors import CamError, UnknownNameError

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    SemanticSegmentationTarget,
)

TOL = 1e-5


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def pgc_maps(cls, model, module, x, targets, **kw) -> np.ndarray:
    """pytorch-grad-cam on a copy of ``model`` (it hooks the module and forces eval)."""
    model = copy.deepcopy(model)
    layer = model.get_submodule(module)
    with cls(model, [layer], **kw) as cam, contextlib.redirect_stderr(io.StringIO()):
        return cam(x, targets)


def small_fcn() -> nn.Module:
    """A torchvision FCN (``{"out", "aux"}`` outputs) on a resnet18 backbone: fast at 64 px."""
    torch.manual_seed(0)
    backbone = IntermediateLayerGetter(
        torchvision.models.resnet18(), {"layer3": "aux", "layer4": "out"}
    )
    return FCN(backbone, FCNHead(512, 3), FCNHead(256, 3)).eval()


class OutWrapper(nn.Module):
    """What pytorch-grad-cam's segmentation tutorial wraps models in: ``model(x)["out"]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def masks() -> list[np.ndarray]:
    a = np.zeros((64, 64), np.float32)
    a[8:40, 16:56] = 1
    b = np.zeros((64, 64), np.float32)
    b[30:60, 4:30] = 1
    return [a, b]


# -- classifier targets -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradcam", "layercam", "hirescam"])
def test_pytorch_grad_cam_classifier_targets_give_its_maps(resnet18, x64, method):
    cls = {"gradcam": pgc.GradCAM, "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM}[method]
    for targets in (
        [ClassifierOutputTarget(1), ClassifierOutputTarget(5)],
        [ClassifierOutputSoftmaxTarget(1), ClassifierOutputSoftmaxTarget(5)],
    ):
        ours = compute_cam(resnet18, x64, "layer4", method, targets)
        ref = pgc_maps(cls, resnet18, "layer4", x64, targets)
        assert np.abs(ours.maps.numpy() - ref).max() < TOL, (method, targets)
        assert ours.targets.tolist() == [1, 5]  # their `category`


def test_softmax_target_is_pytorch_grad_cams_softmax_target(resnet18, x64):
    theirs = compute_cam(resnet18, x64, "layer4", targets=[ClassifierOutputSoftmaxTarget(3)] * 2)
    ours = compute_cam(resnet18, x64, "layer4", targets=[SoftmaxTarget(3)] * 2)
    batch = compute_cam(resnet18, x64, "layer4", targets=SoftmaxTarget(3))  # one for all images
    torch.testing.assert_close(ours.raw, theirs.raw)
    torch.testing.assert_close(batch.raw, theirs.raw)
    torch.testing.assert_close(ours.scores, theirs.probs)


def test_mixed_int_and_object_targets_score_each_image_like_separate_calls(tiny_resnet):
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    mixed = [3, ClassifierOutputTarget(4), SoftmaxTarget(2)]
    methods = ["gradcam", "scorecam", "ablationcam"]
    r = compute_cam(tiny_resnet, x, "layer2", methods, mixed, normalize="none", batch_size=2)
    for i, t in enumerate(mixed):
        alone = compute_cam(tiny_resnet, x[i : i + 1], "layer2", methods, [t], normalize="none")
        for m in methods:
            torch.testing.assert_close(r.raw_map(m, "layer2")[i], alone.raw_map(m, "layer2")[0])
    assert r.targets.tolist() == [3, 4, 2]
    assert r.target_labels == ("3", "ClassifierOutputTarget(4)", "SoftmaxTarget(2)")


def test_object_targets_score_the_copies_of_score_cam_and_ablation_cam(tiny_resnet, x16):
    # masked and ablated copies of several images share a forward: each row must be scored
    # with its own image's target object
    objects = [ClassifierOutputTarget(1), ClassifierOutputTarget(4)]
    for method, kw in (("scorecam", {"scorecam_weights": "softmax"}), ("ablationcam", {})):
        ours = compute_cam(tiny_resnet, x16, "layer2", method, objects, batch_size=3, **kw)
        ints = compute_cam(tiny_resnet, x16, "layer2", method, [1, 4], batch_size=3, **kw)
        torch.testing.assert_close(ours.maps, ints.maps)


def test_per_image_target_lists_of_the_wrong_length_raise(resnet18, x64):
    with pytest.raises(CamError, match="one target per image"):
        compute_cam(resnet18, x64, "layer4", targets=[ClassifierOutputTarget(1)])
    with pytest.raises(TypeError, match=r"targets\[1\] is str"):
        compute_cam(resnet18, x64, "layer4", targets=[ClassifierOutputTarget(1), "cat"])
    with pytest.raises(CamError, match="one score"):
        compute_cam(resnet18, x64, "layer4", targets=[lambda o: o, lambda o: o])
    with pytest.raises(CamError, match="out of range"):
        compute_cam(resnet18, x64, "layer4", targets=[SoftmaxTarget(1000)] * 2)
    with pytest.raises(CamError, match="needs class-index targets"):
        compute_cam(resnet18, x64, "layer4", "cam", targets=[ClassifierOutputTarget(1)] * 2)


# -- segmentation -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fcn() -> nn.Module:
    return small_fcn()


def test_fcn_segmentation_target_matches_pytorch_grad_cam_with_no_option(fcn, x64):
    targets = [SemanticSegmentationTarget(1, m) for m in masks()]
    ours = compute_cam(fcn, x64, "backbone.layer4", ["gradcam", "layercam"], targets)
    for method, cls in (("gradcam", pgc.GradCAM), ("layercam", pgc.LayerCAM)):
        ref = pgc_maps(cls, OutWrapper(fcn), "model.backbone.layer4", x64, targets)
        assert np.abs(ours[method, "backbone.layer4"].numpy() - ref).max() < TOL, method
    assert ours.targets.tolist() == [1, 1] and ours.probs is None
    own = [SegmentationTarget(1, m) for m in masks()]
    torch.testing.assert_close(
        compute_cam(fcn, x64, "backbone.layer4", "gradcam", own).maps,
        ours["gradcam", "backbone.layer4"],
    )
    with torch.no_grad():
        out = fcn(x64)["out"]
    expected = torch.stack([(out[i, 1] * torch.from_numpy(m)).sum() for i, m in enumerate(masks())])
    torch.testing.assert_close(ours.scores, expected)


def test_segmentation_target_for_the_whole_batch_and_the_aux_output(fcn, x64):
    mask = torch.from_numpy(masks()[0])
    one = compute_cam(fcn, x64, "backbone.layer4", targets=SegmentationTarget(2, mask))
    each = compute_cam(fcn, x64, "backbone.layer4", targets=[SegmentationTarget(2, mask)] * 2)
    torch.testing.assert_close(one.maps, each.maps)
    aux = compute_cam(
        fcn, x64, "backbone.layer3", targets=SegmentationTarget(2, mask), output="aux"
    )
    ref = pgc_maps(
        pgc.GradCAM,
        AuxWrapper(fcn),
        "model.backbone.layer3",
        x64,
        [SemanticSegmentationTarget(2, masks()[0])] * 2,
    )
    assert np.abs(aux.maps.numpy() - ref).max() < TOL
    with pytest.raises(CamError, match=r"mask is \[32, 32\] but the output maps are \[64, 64\]"):
        compute_cam(fcn, x64, "backbone.layer4", targets=SegmentationTarget(1, torch.ones(32, 32)))


class AuxWrapper(OutWrapper):
    def forward(self, x):
        return self.model(x)["aux"]


# -- outputs --------------------------------------------------------------------------------
class TupleOut(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        return logits.tanh(), logits


class DictOut(TupleOut):
    def forward(self, x):
        return {"features": x.mean((2, 3)), "logits": self.net(x)}


def test_output_option_takes_a_key_an_index_or_a_callable(resnet18, x64):
    ref = compute_cam(resnet18, x64, "layer4", ["gradcam", "ablationcam"], [1, 5])
    for model, output in (
        (TupleOut(resnet18), 1),
        (TupleOut(resnet18), -1),
        (DictOut(resnet18), "logits"),
        (DictOut(resnet18), lambda out: out["logits"]),
    ):
        r = compute_cam(model, x64, "net.layer4", ["gradcam", "ablationcam"], [1, 5], output=output)
        for m in ("gradcam", "ablationcam"):
            torch.testing.assert_close(r[m, "net.layer4"], ref[m, "layer4"])
        torch.testing.assert_close(r.probs, ref.probs)


def test_outputs_that_cannot_be_scored_name_what_the_model_returned_and_the_option(resnet18, x64):
    with pytest.raises(CamError, match=r"returned a tuple of 2 \(\[2, 1000\].*pass output=0"):
        compute_cam(TupleOut(resnet18), x64, "net.layer4")
    with pytest.raises(CamError, match=r"dict with keys \['features', 'logits'\].*output="):
        compute_cam(DictOut(resnet18), x64, "net.layer4", targets=[1, 2])
    with pytest.raises(UnknownNameError, match=r"unknown model output key 'logit'.*'logits'"):
        compute_cam(DictOut(resnet18), x64, "net.layer4", output="logit")
    with pytest.raises(CamError, match="out of range"):
        compute_cam(TupleOut(resnet18), x64, "net.layer4", output=2)
    with pytest.raises(CamError, match="output must be None, a key"):
        compute_cam(resnet18, x64, "layer4", output=1.5)
    # a callable target still receives whatever the model returned
    r = compute_cam(TupleOut(resnet18), x64, "net.layer4", targets=lambda out: out[1][:, 3])
    torch.testing.assert_close(r.maps, compute_cam(resnet18, x64, "layer4", targets=3).maps)


# -- reshape_transform --------------------------------------------------------------------
def tiny_vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
    ).eval()


def tokens_to_map(t: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ViT example: drop the class token, [B, 16, C] -> [B, C, 4, 4]."""
    return t[:, 1:, :].reshape(t.size(0), 4, 4, t.size(2)).transpose(2, 3).transpose(1, 2)


@pytest.mark.parametrize(
    "method", ["gradcam", "xgradcam", "layercam", "hirescam", "scorecam", "eigencam"]
)
def test_reshape_transform_on_a_vit_matches_pytorch_grad_cam(method, monkeypatch):
    vit = tiny_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kw = {"scorecam_weights": "softmax"} if method == "scorecam" else {}
    layer, rt = "blocks.1.norm1", tokens_to_map
    ours = compute_cam(vit, x, layer, method, [1, 5], reshape_transform=rt, **kw)
    cls = {
        "gradcam": pgc.GradCAM,
        "xgradcam": pgc.XGradCAM,
        "layercam": pgc.LayerCAM,
        "hirescam": pgc.HiResCAM,
        "scorecam": pgc.ScoreCAM,
        "eigencam": pgc.EigenCAM,
    }[method]
    # pgc's Score-CAM upsamples its masks with align_corners=True, unlike everything else
    # (see test_cam_parity.py): aligned here for the comparison
    monkeypatch.setattr(
        torch.nn,
        "UpsamplingBilinear2d",
        lambda size: nn.Upsample(size=size, mode="bilinear", align_corners=False),
    )
    tg = None if method == "eigencam" else [ClassifierOutputTarget(1), ClassifierOutputTarget(5)]
    ref = pgc_maps(cls, vit, layer, x, tg, reshape_transform=rt)
    diff = np.abs(ours.maps.numpy() - ref).max((1, 2))
    if method == "eigencam":  # up to the SVD's sign, which pgc leaves to LAPACK
        signed = compute_cam(
            vit, x, layer, method, relu=False, normalize="none", size="layer", reshape_transform=rt
        )
        other = minmax(resize_maps((-signed.raw).clamp(min=0), (32, 32)), flat="zero").numpy()
        diff = np.minimum(diff, np.abs(other - ref).max((1, 2)))
    assert diff.max() < TOL, method


def test_reshape_transform_errors_say_what_the_layer_gives():
    vit = tiny_vit()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(CamError, match=r"gives \[1, 17, 32\].*pass reshape_transform="):
        compute_cam(vit, x, "blocks.1.norm1")
    with pytest.raises(CamError, match="reshape_transform must return one"):
        compute_cam(vit, x, "blocks.1.norm1", reshape_transform=lambda t: t[:, 0])
    with pytest.raises(TypeError, match="reshape_transform must be a callable"):
        compute_cam(vit, x, "blocks.1.norm1", reshape_transform="vit")
