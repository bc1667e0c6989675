"""CamResult for notebooks: it keeps its images (by reference), draws itself, shows in Jupyter."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from attnviz.cam import compute_cam
from attnviz.errors import CamError
from attnviz.plots import overlay_batch

from .conftest import TinyResNet, randomize_bn

NAMES = ["cat", "dog", "car", "cup", "<b>bold</b>"]


@pytest.fixture(scope="module")
def model() -> TinyResNet:
    torch.manual_seed(0)
    return randomize_bn(TinyResNet()).eval()


@pytest.fixture(scope="module")
def pictures() -> torch.Tensor:
    """Images in [0, 1], as a plotting user has them."""
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_result_keeps_a_reference_to_its_images_not_a_copy(model, pictures):
    r = compute_cam(model, pictures, "layer2", targets=[0, 1, 4])
    assert r.images is pictures
    dropped = compute_cam(model, pictures, "layer2", targets=[0, 1, 4], keep_images=False)
    assert dropped.images is None
    torch.testing.assert_close(dropped.maps, r.maps)
    assert r.cpu().images is pictures  # already on the CPU: .to() returns the same tensor


def test_overlay_is_the_map_blended_over_each_image(model, pictures):
    r = compute_cam(model, pictures, ["layer1", "layer2"], ["gradcam", "layercam"], [0, 1, 4])
    out = r.overlay("gradcam", "layer2", alpha=0.4)
    np.testing.assert_allclose(out, overlay_batch(pictures, r["gradcam", "layer2"], alpha=0.4))
    fused = r.overlay("layercam")  # a method alone: its fused map
    np.testing.assert_allclose(fused, overlay_batch(pictures, r.fused_maps["layercam"]))
    with pytest.raises(CamError, match="pass method="):
        r.overlay()


def test_show_draws_one_row_per_image_and_one_column_per_map(model, pictures):
    r = compute_cam(model, pictures, ["layer1", "layer2"], ["gradcam", "layercam"], [0, 1, 4])
    fig = r.show()
    assert isinstance(fig, Figure)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 3 * (1 + 4)  # image + (2 methods x 2 layers)
    titles = {ax.get_title() for ax in image_axes}
    assert {"gradcam @ layer1", "layercam @ layer2"} <= titles
    fused = r.show(fused=True, max_images=2)
    assert len([ax for ax in fused.axes if ax.images]) == 2 * (1 + 2)


def test_show_labels_rows_with_class_names_and_scores(model, pictures):
    r = compute_cam(model, pictures, "layer2", "gradcam", [0, 1, 4], class_names=NAMES)
    fig = r.show()
    labels = [ax.get_ylabel() for ax in fig.axes if ax.images and ax.get_ylabel()]
    assert labels == ["cat (0)", "dog (1)", "<b>bold</b> (4)"]
    corners = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert corners == [f"P={float(p):.2f}" for p in r.probs]


def test_normalised_images_are_shown_without_their_statistics(model, pictures):
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    normalised = (pictures - mean) / std
    r = compute_cam(model, normalised, "layer2", targets=[0, 1, 4])
    auto = r.overlay()  # min-max scaled per image for display
    true = r.overlay(denormalize="imagenet")
    np.testing.assert_allclose(true, overlay_batch(pictures, r.maps), atol=1e-6)
    assert auto.shape == true.shape and not np.allclose(auto, true)
    with pytest.raises(ValueError, match="denormalize"):
        r.overlay(denormalize=None)  # insisting on [0, 1]


def test_result_without_images_asks_for_them(model, pictures):
    r = compute_cam(model, pictures, "layer2", targets=[0, 1, 4], keep_images=False)
    with pytest.raises(CamError, match="keep_images=False"):
        r.show()
    assert isinstance(r.show(pictures), Figure)
    assert "no images kept" in r._repr_html_()


def test_repr_html_is_a_table_and_a_small_inline_png(model, pictures):
    x = torch.cat([pictures] * 4)  # 12 images: the table lists 8, the picture shows 4
    r = compute_cam(model, x, "layer2", ["gradcam", "layercam"], [0, 1, 4] * 4, class_names=NAMES)
    html = r._repr_html_()
    assert "gradcam" in html and "layercam" in html and "cat (0)" in html
    assert "&lt;b&gt;bold&lt;/b&gt; (4)" in html and "<b>bold</b>" not in html  # escaped
    assert html.count("<tr>") == 1 + 8 + 1 and "4 more" in html
    assert f"{float(r.probs[0]):.3f}" in html
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", html).group(1))
    assert len(png) < 150_000
    picture = Image.open(io.BytesIO(png))
    assert picture.width < 800


def test_repr_html_of_callable_targets_describes_them(model, pictures):
    def logit_gap(out):
        return out[:, 1] - out[:, 0]

    r = compute_cam(model, pictures, "layer2", targets=logit_gap)
    html = r._repr_html_()
    assert "logit_gap" in html and "P(target)" not in html
