"""Tests for attnviz.plots: files on disk, real pixel properties, colour-scale maths, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from attnviz.plots import (
    bar_chart,
    cam_grid,
    cam_panel,
    compare_feature_maps,
    feature_grid,
    feature_grid_array,
    figure_to_array,
    figure_to_png_bytes,
    gate_histograms,
    gate_profiles,
    metric_curves,
    overlay,
    overlay_batch,
    save_channels,
    scatter_tradeoff,
)
from attnviz.plots._common import DPI, cell_origin


def _png(path: Path) -> np.ndarray:
    """Open a written PNG and return its RGB pixels; checks it is a real, non-blank image."""
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as im:
        assert im.format == "PNG"
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 10, f"{path} looks blank (pixel std {arr.std():.1f})"
    return arr


def _blobs(c: int = 8, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    """Feature maps with structure: one Gaussian bump per channel plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    cy, cx = torch.rand(c, 1, 1, generator=g), torch.rand(c, 1, 1, generator=g)
    bump = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
    return bump * (1 + torch.arange(c).view(c, 1, 1)) + 0.05 * torch.rand(c, h, w, generator=g)


def _cell(grid: np.ndarray, i: int, ncols: int, size: tuple[int, int], pad: int = 1):
    y, x = cell_origin(i, ncols, size, pad)
    return grid[y : y + size[0], x : x + size[1]]


# --------------------------------------------------------------------------- feature maps


def test_feature_grid_saves_png_and_returns_figure(tmp_path):
    fmap = _blobs(8).unsqueeze(0).to(torch.bfloat16).requires_grad_(True)
    out = tmp_path / "nested" / "dir" / "grid.png"
    fig = feature_grid(fmap, title="layer2", path=out)
    assert isinstance(fig, Figure)
    arr = _png(out)
    w, h = fig.get_size_inches() * DPI
    assert abs(arr.shape[0] - h) <= 1 and abs(arr.shape[1] - w) <= 1
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == [f"ch {i}" for i in range(8)]


def test_feature_grid_more_channels_is_larger(tmp_path):
    fmap = _blobs(16)
    feature_grid(fmap, max_channels=4, path=tmp_path / "a.png")
    feature_grid(fmap, max_channels=16, path=tmp_path / "b.png")
    small, large = _png(tmp_path / "a.png"), _png(tmp_path / "b.png")
    assert large.shape[1] > small.shape[1]  # 4x4 grid is wider than 2x2
    assert large.shape[0] > small.shape[0]


def test_feature_grid_energy_order_and_explicit_channels():
    fmap = torch.rand(6, 5, 5) * 0.1
    fmap[4] += 3.0
    fmap[1] += 2.0
    fig = feature_grid(fmap, max_channels=3, order="energy")
    assert [t.get_text() for t in fig.axes[0].texts][:2] == ["ch 4", "ch 1"]
    fig = feature_grid(fmap, channels=[5, 0])
    assert [t.get_text() for t in fig.axes[0].texts] == ["ch 5", "ch 0"]
    with pytest.raises(ValueError, match=r"channels \[9\] out of range .* 6 channels"):
        feature_grid(fmap, channels=[9])


def test_feature_grid_colorbar_only_for_shared_scales():
    fmap = _blobs(4)
    assert len(feature_grid(fmap, normalize="per_channel").axes) == 1
    assert len(feature_grid(fmap, normalize="global").axes) == 2  # grid + colorbar
    fig = feature_grid(fmap, normalize="none", vmin=0.0, vmax=10.0)
    assert fig.axes[1].get_ylim() == pytest.approx((0.0, 10.0))


@pytest.mark.parametrize("normalize", ["per_channel", "global", "none"])
def test_constant_and_nan_maps_render_as_zero(normalize):
    fmap = torch.full((3, 4, 4), 5.0)
    fmap[2, 0, 0] = float("nan")
    grid = feature_grid_array(fmap, normalize=normalize, cmap=None, as_uint8=False, pad=1)
    assert np.isfinite(grid).all()
    for i in range(3):
        assert np.all(_cell(grid, i, 2, (4, 4)) == 0.0)
    rgb = feature_grid_array(fmap, normalize=normalize)  # colormap of 0, never NaN garbage
    assert rgb.dtype == np.uint8 and rgb.shape[-1] == 3
    bottom = np.round(np.asarray(matplotlib.colormaps["viridis"](0.0)[:3]) * 255)
    assert np.all(_cell(rgb, 0, 2, (4, 4)) == bottom)


def test_per_channel_vs_global_normalisation():
    base = torch.linspace(0, 1, 16).reshape(4, 4)
    fmap = torch.stack([base, 0.1 * base])  # channel 1 is ten times weaker
    per = feature_grid_array(fmap, normalize="per_channel", cmap=None, as_uint8=False)
    glob = feature_grid_array(fmap, normalize="global", cmap=None, as_uint8=False)
    np.testing.assert_allclose(_cell(per, 0, 2, (4, 4)), _cell(per, 1, 2, (4, 4)))
    np.testing.assert_allclose(_cell(glob, 0, 2, (4, 4)), base.numpy(), atol=1e-6)
    np.testing.assert_allclose(_cell(glob, 1, 2, (4, 4)), 0.1 * base.numpy(), atol=1e-6)
    fixed = feature_grid_array(
        fmap, normalize="none", vmin=0.0, vmax=2.0, cmap=None, as_uint8=False
    )
    assert _cell(fixed, 0, 2, (4, 4)).max() == pytest.approx(0.5)


def test_feature_grid_array_layout_and_scale():
    grid = feature_grid_array(torch.rand(10, 7, 5), scale=3, pad=2)
    rows, cols = 3, 4  # near-square for 10 cells
    assert grid.shape == (rows * 21 + (rows + 1) * 2, cols * 15 + (cols + 1) * 2, 3)
    assert grid.dtype == np.uint8


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 4, 5, 5), r"batch of 2 .* fmap\[0\]"),
        ((5, 5), r"fmap must have shape \[C, H, W\] or \[1, C, H, W\], got \(5, 5\)"),
    ],
)
def test_feature_grid_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        feature_grid(torch.rand(*shape))


def test_feature_grid_bad_options():
    with pytest.raises(ValueError, match="normalize must be one of"):
        feature_grid(torch.rand(2, 3, 3), normalize="minmax")
    with pytest.raises(ValueError, match="order must be one of"):
        feature_grid(torch.rand(2, 3, 3), order="random")
    with pytest.raises(ValueError, match="not a matplotlib colormap"):
        feature_grid(torch.rand(2, 3, 3), cmap="no-such-map")


def test_save_channels(tmp_path):
    paths = save_channels(_blobs(5, 6, 8), tmp_path / "chans", scale=2)
    assert [p.name for p in paths] == [f"channel_{i:03d}.png" for i in range(5)]
    for p in paths:
        arr = _png(p)
        assert arr.shape == (12, 16, 3)
    paths = save_channels(np.zeros((2, 3, 3)), tmp_path / "zeros", prefix="c")
    assert [p.name for p in paths] == ["c_000.png", "c_001.png"]


def test_compare_feature_maps_shared_scale_shows_magnitude(tmp_path):
    a = _blobs(6)
    maps = {"base": a, "+SE": 2 * a}
    shared = compare_feature_maps(maps, 4, "shared", cmap="gray", path=tmp_path / "cmp.png")
    _png(tmp_path / "cmp.png")

    def rows(fig: Figure) -> tuple[np.ndarray, np.ndarray]:
        grid = np.asarray(fig.axes[0].images[0].get_array(), dtype=float)
        h, w = grid.shape[:2]
        pad = 2 * h - w  # h = 2 s + 3 pad, w = 4 s + 5 pad
        s = (h - 3 * pad) // 2
        return tuple(_cell(grid, i, 1, (s, w - 2 * pad), pad) for i in range(2))  # whole rows

    top, bottom = rows(shared)
    assert (bottom >= top).all()  # twice the activation: brighter on a shared scale ...
    lit = (top > 20) & (top < 250)  # ... twice as bright, away from the white padding
    assert np.median(bottom[lit] / top[lit]) == pytest.approx(2.0, rel=0.1)
    top, bottom = rows(compare_feature_maps(maps, 4, "per_channel", cmap="gray"))
    np.testing.assert_allclose(top, bottom, atol=1.0)  # each map min-max scaled: same picture
    labels = [t.get_text().splitlines()[0] for t in shared.axes[0].get_yticklabels()]
    assert labels == ["base", "+SE"]
    ranges = [t.get_text() for t in shared.axes[0].get_xticklabels()]
    assert len(ranges) == 4 and all("…" in r for r in ranges)


def test_compare_feature_maps_channel_choice_and_sizes():
    a = torch.rand(5, 8, 8) * 0.1
    a[3] += 5
    b = torch.rand(1, 5, 4, 4)  # other resolution is fine
    fig = compare_feature_maps({"base": a, "other": b}, max_channels=2)
    top = fig.axes[0].child_axes[0]
    assert top.get_xticklabels()[0].get_text() == "ch 3"
    fig = compare_feature_maps({"base": a, "other": b}, max_channels=2, order="index")
    assert [t.get_text() for t in fig.axes[0].child_axes[0].get_xticklabels()] == ["ch 0", "ch 1"]


def test_compare_feature_maps_errors():
    with pytest.raises(ValueError, match=r"same number of channels.*'a': 4, 'b': 6"):
        compare_feature_maps({"a": torch.rand(4, 3, 3), "b": torch.rand(6, 3, 3)})
    with pytest.raises(ValueError, match="non-empty dict"):
        compare_feature_maps({})
    with pytest.raises(ValueError, match=r"fmaps\['b'\] has a batch of 3"):
        compare_feature_maps({"a": torch.rand(4, 3, 3), "b": torch.rand(3, 4, 3, 3)})


# --------------------------------------------------------------------------- CAMs


def test_overlay_math_on_tiny_example():
    image = np.array([[[0.0, 0.2, 0.4], [1.0, 1.0, 1.0]], [[0.5, 0.5, 0.5], [0.1, 0.9, 0.3]]])
    cam = np.array([[0.0, 0.25], [0.75, 1.0]])
    jet = matplotlib.colormaps["jet"](cam)[..., :3]
    np.testing.assert_allclose(overlay(image, cam, alpha=0.0), image)
    np.testing.assert_allclose(overlay(image, cam, alpha=1.0), jet)
    np.testing.assert_allclose(overlay(image, cam, alpha=0.3), 0.7 * image + 0.3 * jet)
    # values outside [0, 1] are clipped, NaN counts as 0
    np.testing.assert_allclose(
        overlay(image, np.array([[-1.0, 0.25], [0.75, 7.0]]), alpha=1.0), jet
    )


def test_overlay_input_layouts_agree():
    rng = np.random.default_rng(0)
    hwc = rng.random((6, 8, 3))
    cam = rng.random((3, 4))
    ref = overlay(hwc, cam)
    chw = torch.tensor(hwc).permute(2, 0, 1).float().requires_grad_(True)
    np.testing.assert_allclose(overlay(chw, torch.tensor(cam)), ref, atol=1e-6)
    np.testing.assert_allclose(overlay(chw.unsqueeze(0), cam[None]), ref, atol=1e-6)
    u8 = (hwc * 255).round().astype(np.uint8)
    np.testing.assert_allclose(overlay(u8, cam), overlay(u8 / 255.0, cam), atol=1e-12)
    grey = overlay(hwc[..., 0], cam, alpha=0.0)
    assert grey.shape == (6, 8, 3) and np.allclose(grey[..., 0], grey[..., 2])


def test_overlay_resizes_cam_bilinearly():
    image = np.zeros((8, 8, 3))
    cam = torch.tensor([[0.0, 1.0], [1.0, 0.5]])
    up = torch.nn.functional.interpolate(cam[None, None], size=(8, 8), mode="bilinear")
    expected = matplotlib.colormaps["jet"](up[0, 0].numpy())[..., :3]
    np.testing.assert_allclose(overlay(image, cam, alpha=1.0), expected, atol=1e-6)


def test_overlay_denormalize():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    img = torch.rand(3, 5, 5)
    normed = (img - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    cam = torch.rand(5, 5)
    expected = overlay(img, cam, alpha=0.0)
    np.testing.assert_allclose(
        overlay(normed, cam, alpha=0.0, denormalize=(mean, std)), expected, atol=1e-5
    )
    np.testing.assert_allclose(
        overlay(normed, cam, alpha=0.0, denormalize="imagenet"), expected, atol=1e-5
    )
    with pytest.raises(ValueError, match=r"denormalize=\(mean, std\)"):
        overlay(normed, cam)


@pytest.mark.parametrize(
    ("image", "cam", "match"),
    [
        (torch.rand(2, 3, 4, 4), torch.rand(4, 4), r"image has a batch of 2 .* image\[0\]"),
        (torch.rand(5, 4, 6), torch.rand(4, 6), r"image must have shape \[3, H, W\]"),
        (torch.rand(3, 4, 4), torch.rand(2, 4, 4), r"cam must have shape \[h, w\]"),
        (torch.rand(3, 4, 4) * 255, torch.rand(4, 4), "divide by 255"),
    ],
)
def test_overlay_bad_inputs(image, cam, match):
    with pytest.raises(ValueError, match=match):
        overlay(image, cam)
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay(torch.rand(3, 4, 4), torch.rand(4, 4), alpha=1.5)


def test_overlay_batch():
    out = overlay_batch(torch.rand(3, 3, 10, 12), torch.rand(3, 1, 5, 6))
    assert out.shape == (3, 10, 12, 3) and out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(ValueError, match="cams has 2 maps but images has 3"):
        overlay_batch(torch.rand(3, 3, 10, 12), torch.rand(2, 5, 6))


def _cam_inputs():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 7), torch.linspace(0, 1, 7), indexing="ij")
    image = torch.stack([xx, yy, 1 - xx]).repeat_interleave(8, 1).repeat_interleave(8, 2)
    cam_a = torch.exp(-((yy - 0.5) ** 2 + (xx - 0.3) ** 2) / 0.05)
    cam_b = 0.6 * torch.exp(-((yy - 0.5) ** 2 + (xx - 0.7) ** 2) / 0.05)
    return image, cam_a, cam_b


def test_cam_panel_difference_symmetric(tmp_path):
    image, cam_a, cam_b = _cam_inputs()
    fig = cam_panel(
        image,
        {"base": cam_a, "+SE": cam_b},
        scores={"base": 0.61, "+SE": 0.934},
        difference=("base", "+SE"),
        path=tmp_path / "panel.png",
    )
    _png(tmp_path / "panel.png")
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 4  # image, two overlays, difference
    assert "P=0.93" in image_axes[2].get_title()
    diff_im = image_axes[3].images[0]
    lo, hi = diff_im.get_clim()
    assert lo == pytest.approx(-hi) and hi > 0
    assert hi == pytest.approx(np.abs(diff_im.get_array()).max())
    assert diff_im.get_cmap().name == "RdBu_r"
    assert len(fig.axes) == 6  # plus the CAM and difference colorbars
    assert "+SE − base" in image_axes[3].get_title()


def test_cam_panel_wider_with_more_models(tmp_path):
    image, cam_a, cam_b = _cam_inputs()
    one = cam_panel(image, {"a": cam_a}, path=tmp_path / "one.png")
    three = cam_panel(image, {"a": cam_a, "b": cam_b, "c": cam_a}, path=tmp_path / "three.png")
    assert isinstance(one, Figure) and isinstance(three, Figure)
    assert _png(tmp_path / "three.png").shape[1] > _png(tmp_path / "one.png").shape[1]


def test_cam_panel_errors():
    image, cam_a, cam_b = _cam_inputs()
    with pytest.raises(ValueError, match="difference must be a pair of names"):
        cam_panel(image, {"a": cam_a, "b": cam_b}, difference=("a", "zzz"))
    with pytest.raises(ValueError, match="non-empty dict"):
        cam_panel(image, {})


def test_cam_grid_difference_columns_and_scales(tmp_path):
    images = torch.rand(2, 3, 16, 16)
    cams = {"base": torch.rand(2, 4, 4), "+SE": torch.rand(2, 4, 4), "+ECA": torch.rand(2, 4, 4)}
    fig = cam_grid(
        images,
        cams,
        difference=True,
        scores={"+SE": [0.1, 0.2]},
        row_labels=["cat", "dog"],
        path=tmp_path / "grid.png",
    )
    _png(tmp_path / "grid.png")
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 2 * (1 + 3 + 2)
    diff_axes = [ax for ax in image_axes if ax.images[0].get_cmap().name == "RdBu_r"]
    clims = {ax.images[0].get_clim() for ax in diff_axes}
    assert len(diff_axes) == 4 and len(clims) == 1  # one shared symmetric scale
    lo, hi = clims.pop()
    assert lo == -hi
    own = cam_grid(images, cams, difference=True, shared_scale=False)
    own_clims = {
        ax.images[0].get_clim()
        for ax in own.axes
        if ax.images and ax.images[0].get_cmap().name == "RdBu_r"
    }
    assert len(own_clims) == 4 and all(a == -b for a, b in own_clims)
    assert max(b for _, b in own_clims) == pytest.approx(hi)


def test_cam_grid_max_images_and_errors():
    images = torch.rand(5, 3, 8, 8)
    cams = {"base": torch.rand(5, 2, 2)}
    fig = cam_grid(images, cams, max_images=2)
    assert len([ax for ax in fig.axes if ax.images]) == 2 * 2
    with pytest.raises(ValueError, match="needs at least two models"):
        cam_grid(images, cams, difference=True)
    with pytest.raises(ValueError, match=r"cams\['b'\] has 3 maps but 5 images"):
        cam_grid(images, {"a": torch.rand(5, 2, 2), "b": torch.rand(3, 2, 2)})
    with pytest.raises(ValueError, match=r"images must have shape \[B, 3, H, W\]"):
        cam_grid(torch.rand(3, 8, 8, 8, 1), cams)


# --------------------------------------------------------------------------- comparisons


def test_metric_curves(tmp_path):
    layers = ["layer1", "layer2", "layer3", "layer4"]
    table = {
        "resnet18": dict(zip(layers, [0.9, 0.7, 0.5, 0.3])),
        "resnet18+SE": dict(zip(layers[1:], [0.8, 0.6, 0.55])),
    }
    fig = metric_curves(table, "CKA", path=tmp_path / "curves.png")
    _png(tmp_path / "curves.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == layers
    assert len(ax.get_lines()) == 2 and ax.get_ylabel() == "CKA"
    assert np.isnan(ax.get_lines()[1].get_ydata()[0])  # missing layer leaves a gap


def test_gate_histograms(tmp_path):
    g = torch.Generator().manual_seed(0)
    gates = {
        "SE": {f"stage{i}": torch.rand(500, generator=g) for i in range(3)},
        "ECA": {f"stage{i}": torch.rand(10, 50, 1, 1, generator=g) ** 2 for i in range(3)},
    }
    fig = gate_histograms(gates, bins=20, path=tmp_path / "hist.png")
    _png(tmp_path / "hist.png")
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in axes] == ["stage0", "stage1", "stage2"]
    assert all(ax.get_xlim() == (0.0, 1.0) for ax in axes)
    assert fig.legends and [t.get_text() for t in fig.legends[0].get_texts()] == ["SE", "ECA"]


def test_gate_profiles(tmp_path):
    profiles = {f"class {k}": torch.rand(32) for k in range(12)}
    fig = gate_profiles(profiles, layer="layer3.se", max_classes=4, path=tmp_path / "prof.png")
    _png(tmp_path / "prof.png")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 5
    mean = np.stack([p.numpy() for p in profiles.values()]).mean(0)
    np.testing.assert_allclose(lines[-1].get_ydata(), mean, rtol=1e-6)
    assert lines[-1].get_linewidth() > lines[0].get_linewidth()
    assert "layer3.se" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="same number of channels"):
        gate_profiles({"a": np.zeros(3), "b": np.zeros(4)}, layer="x")


def test_bar_chart_and_scatter(tmp_path):
    fig = bar_chart(
        {"none": (71.2, 0.3), "SE": (72.9, 0.2), "ECA": 72.6},
        ylabel="top-1",
        path=tmp_path / "b.png",
    )
    _png(tmp_path / "b.png")
    assert len(fig.axes[0].patches) == 3
    assert fig.axes[0].get_ylim()[0] > 60  # zoomed in on close values
    assert bar_chart({"a": (1.0, 0.1), "b": 1.1}, ylabel="x", zoom=False).axes[0].get_ylim()[0] == 0
    with pytest.raises(ValueError, match=r"values\['a'\] must be mean or \(mean, std\)"):
        bar_chart({"a": (1, 2, 3)}, ylabel="x")

    points = {
        "r18": (11.7, 69.8),
        "r18+SE": (11.8, 71.0),
        "r18+ECA": (11.7, 70.7),
        "r50": (25.6, 76.1),
    }
    fig = scatter_tradeoff(points, "params (M)", "top-1", path=tmp_path / "s.png")
    _png(tmp_path / "s.png")
    texts = fig.axes[0].texts
    assert [t.get_text() for t in texts] == list(points)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i in range(len(boxes)):
        for j in range(i):
            assert not boxes[i].overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
    with pytest.raises(ValueError, match=r"points\['a'\] must be an \(x, y\) pair"):
        scatter_tradeoff({"a": (1.0,)}, "x", "y")


# --------------------------------------------------------------------------- helpers


def test_figure_to_array_and_png_bytes():
    fig = metric_curves({"m": {"a": 1.0, "b": 2.0}}, "v")
    w, h = fig.get_size_inches()
    arr = figure_to_array(fig)
    assert arr.dtype == np.uint8 and arr.shape[2] == 3
    assert abs(arr.shape[0] - h * DPI) <= 1 and abs(arr.shape[1] - w * DPI) <= 1
    assert arr.std() > 10
    small = figure_to_array(fig, dpi=50)
    assert abs(small.shape[0] - h * 50) <= 1 and abs(small.shape[1] - w * 50) <= 1
    assert fig.dpi == DPI  # restored
    png = figure_to_png_bytes(fig, dpi=60)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    with Image.open(io.BytesIO(png)) as im:
        assert abs(im.size[0] - w * 60) <= 1 and abs(im.size[1] - h * 60) <= 1


def test_figures_are_independent_of_pyplot_and_threads(tmp_path):
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            feature_grid(_blobs(4, seed=k), path=tmp_path / f"t{k}.png")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(3):
        _png(tmp_path / f"t{k}.png")
    import sys

    if "matplotlib.pyplot" in sys.modules:  # figures are never registered with pyplot
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []
