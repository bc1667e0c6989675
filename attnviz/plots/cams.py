"""CAM pictures: heatmap overlays, one image against several models, and their differences.

Images are ``[3, H, W]``, ``[H, W, 3]`` or ``[H, W]`` (grey), float in [0, 1] or ``uint8``;
normalised tensors are brought back with ``denormalize=(mean, std)`` (or ``"imagenet"``).
CAMs are ``[h, w]`` maps in [0, 1] (values outside are clipped) at any resolution; they are
resized bilinearly to the image (torch, ``align_corners=False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec, SubplotSpec

from .._maps import resize_maps
from ..errors import AttnvizError
from ._common import (
    ArrayLike,
    PathArg,
    colorize,
    finish,
    get_cmap,
    new_figure,
    plain_axes,
    resize_nearest,
    to_numpy,
    trim_to_images,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Denormalize = str | tuple[Sequence[float] | float, Sequence[float] | float] | None

_DIFF_CMAP = "RdBu_r"
_RANGE_TOL = 0.02  # float images may overshoot [0, 1] this much (rounding, resampling)


# --------------------------------------------------------------------------- inputs


def _channel_last(img: np.ndarray, is_tensor: bool, name: str, expected: str) -> np.ndarray:
    """[..., 3, H, W] or [..., H, W, 3 (or 1, 4)] -> [..., H, W, 3].

    A layout that reads both ways (e.g. [3, H, 3]) is taken as channels-first for tensors,
    channels-last for arrays, as each is usually stored.
    """
    first_c, last_c = img.shape[-3] in (1, 3), img.shape[-1] in (1, 3, 4)
    if first_c and (not last_c or is_tensor):
        img = np.moveaxis(img, -3, -1)
    elif not last_c:
        raise AttnvizError(f"{name} must have shape {expected}, got {tuple(img.shape)}")
    if img.shape[-1] == 4:  # RGBA: drop alpha
        img = img[..., :3]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return img


def _denorm_params(denormalize: Denormalize) -> tuple[np.ndarray, np.ndarray] | None:
    if denormalize is None:
        return None
    if isinstance(denormalize, str):
        if denormalize.lower() != "imagenet":
            raise AttnvizError(
                f"denormalize must be (mean, std) or 'imagenet', got {denormalize!r}"
            )
        return np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    try:
        mean, std = denormalize
    except (TypeError, ValueError):
        raise AttnvizError(
            f"denormalize must be a (mean, std) pair or 'imagenet', got {denormalize!r}"
        ) from None
    mean = np.asarray(to_numpy(mean, "denormalize mean"), dtype=np.float64).reshape(-1)
    std = np.asarray(to_numpy(std, "denormalize std"), dtype=np.float64).reshape(-1)
    if mean.size not in (1, 3) or std.size not in (1, 3):
        raise AttnvizError(
            f"denormalize mean/std must have 1 or 3 values, got {mean.size} and {std.size}"
        )
    return mean, std


def prepare_images(
    images: ArrayLike, name: str, batched: bool, denormalize: Denormalize = None
) -> np.ndarray:
    """Return float RGB images in [0, 1]: [H, W, 3], or [B, H, W, 3] when ``batched``."""
    is_tensor = isinstance(images, torch.Tensor)
    arr = to_numpy(images, name, keep_uint8=True)
    if batched:
        expected, grey = "[B, 3, H, W], [B, H, W, 3] or [B, H, W] (grey)", arr.ndim == 3
        if not grey and arr.ndim != 4:
            raise AttnvizError(f"{name} must have shape {expected}, got {tuple(arr.shape)}")
    else:
        expected = "[3, H, W], [H, W, 3] or [H, W] (grey)"
        if arr.ndim == 4:
            if arr.shape[0] != 1:
                raise AttnvizError(
                    f"{name} has a batch of {arr.shape[0]} (shape {tuple(arr.shape)}); "
                    f"expected {expected}: pass one image, e.g. {name}[0]"
                )
            arr = arr[0]
        grey = arr.ndim == 2
        if not grey and arr.ndim != 3:
            raise AttnvizError(f"{name} must have shape {expected}, got {tuple(arr.shape)}")
    if grey:
        img = np.repeat(arr[..., None], 3, axis=-1)
    else:
        img = _channel_last(arr, is_tensor, name, expected)
    params = _denorm_params(denormalize)
    if img.dtype == np.uint8:
        if params is not None:
            raise AttnvizError("denormalize applies to normalised float images, not uint8 ones")
        return img.astype(np.float64) / 255.0
    if params is not None:
        img = img * params[1] + params[0]
    finite = img[np.isfinite(img)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo < -_RANGE_TOL or hi > 1.0 + _RANGE_TOL:
        hint = (
            "divide by 255"
            if hi > 2.0 and lo >= 0.0
            else "pass denormalize=(mean, std) (or 'imagenet') for normalised tensors"
        )
        raise AttnvizError(
            f"{name} values span [{lo:.3g}, {hi:.3g}] but float images must lie in [0, 1]; {hint}"
        )
    return np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0)


def prepare_cams(cams: ArrayLike, name: str, batched: bool) -> np.ndarray:
    """Return CAMs as float [B, h, w] (or [h, w]) clipped to [0, 1], NaN as 0."""
    arr = to_numpy(cams, name)
    want = 3 if batched else 2
    # accept a singleton channel axis: [B, 1, h, w] or [1, h, w]
    if arr.ndim == want + 1 and arr.shape[-3] == 1:
        arr = arr.reshape(*arr.shape[:-3], *arr.shape[-2:])
    if arr.ndim != want:
        expected = "[B, h, w]" if batched else "[h, w]"
        raise AttnvizError(f"{name} must have shape {expected}, got {tuple(arr.shape)}")
    return np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0)


# --------------------------------------------------------------------------- arrays


def _blend(images: np.ndarray, cams: np.ndarray, alpha: float, cmap: str | Colormap) -> np.ndarray:
    if not 0.0 <= alpha <= 1.0:
        raise AttnvizError(f"alpha must be in [0, 1], got {alpha}")
    cams = resize_maps(cams, images.shape[1:3])
    heat = colorize(np.clip(cams, 0.0, 1.0), cmap)
    return (1.0 - alpha) * images + alpha * heat


def overlay(
    image: ArrayLike,
    cam: ArrayLike,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    *,
    denormalize: Denormalize = None,
) -> np.ndarray:
    """Blend a CAM heatmap over an image; returns [H, W, 3] float in [0, 1].

    ``result = (1 - alpha) * image + alpha * cmap(cam)``, exactly: unlike some libraries the
    blend is *not* renormalised by its maximum, so ``alpha=0`` gives the image back and
    ``alpha=1`` the bare colormap, and the same CAM value always has the same colour.
    ``cam`` ([h, w], values clipped to [0, 1]) is resized bilinearly to the image size.

    >>> import torch
    >>> out = overlay(torch.rand(3, 224, 224), torch.rand(7, 7), alpha=0.4)
    >>> out.shape, float(out.min()) >= 0.0, float(out.max()) <= 1.0
    ((224, 224, 3), True, True)
    """
    img = prepare_images(image, "image", batched=False, denormalize=denormalize)
    c = prepare_cams(cam, "cam", batched=False)
    return _blend(img[None], c[None], alpha, cmap)[0]


def overlay_batch(
    images: ArrayLike,
    cams: ArrayLike,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    *,
    denormalize: Denormalize = None,
) -> np.ndarray:
    """:func:`overlay` for a batch: images [B, 3, H, W] (or [B, H, W, 3]), cams [B, h, w];
    returns [B, H, W, 3] float in [0, 1]."""
    imgs = prepare_images(images, "images", batched=True, denormalize=denormalize)
    c = prepare_cams(cams, "cams", batched=True)
    if c.shape[0] != imgs.shape[0]:
        raise AttnvizError(
            f"cams has {c.shape[0]} maps but images has {imgs.shape[0]}; expected one per image"
        )
    return _blend(imgs, c, alpha, cmap)


def cam_difference(cam_a: np.ndarray, cam_b: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cam_b - cam_a`` after resizing both [h, w] maps to ``size``."""
    a = resize_maps(cam_a[None], size)[0]
    b = resize_maps(cam_b[None], size)[0]
    return b - a


def symmetric_limit(*diffs: np.ndarray) -> float:
    """Largest |value| over ``diffs`` (1.0 when all are zero), for a centred diverging scale."""
    m = max((float(np.abs(d).max()) for d in diffs if d.size), default=0.0)
    return m if m > 0 else 1.0


# --------------------------------------------------------------------------- figures


def difference_title(variant: str, baseline: str, width: int = 20) -> str:
    """``"se − base"``, on two lines when it would not fit above one panel."""
    one = f"{variant} − {baseline}"
    return one if len(one) <= width else f"{variant}\n− {baseline}"


def _format_score(score: float | str) -> str:
    return score if isinstance(score, str) else f"P={float(score):.2f}"


def _corner_text(ax: Axes, text: str) -> None:
    ax.text(
        0.03, 0.97, text, transform=ax.transAxes, ha="left", va="top", fontsize=7,
        color="white", bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "linewidth": 0},
    )  # fmt: skip


def _show_difference(ax: Axes, diff: np.ndarray, limit: float) -> ScalarMappable:
    return ax.imshow(diff, cmap=_DIFF_CMAP, vmin=-limit, vmax=limit, interpolation="bilinear")


_CBAR_GAP_IN, _CBAR_ROW_IN = 0.08, 0.14  # gap above the colorbar row, and its height, inches


def _image_grid(fig: Figure, nrows: int, ncols: int, cell_h: float) -> tuple[np.ndarray, GridSpec]:
    """``nrows`` x ``ncols`` image axes plus a thin bottom row that holds the colorbars.

    Colorbars live in that row rather than beside some axes, so every image cell keeps the
    same size and the rows and columns stay aligned.
    """
    ratios = [1.0] * nrows + [_CBAR_GAP_IN / cell_h, _CBAR_ROW_IN / cell_h]
    gs = fig.add_gridspec(nrows + 2, ncols, height_ratios=ratios)
    axes = np.empty((nrows, ncols), dtype=object)
    for i in range(nrows):
        for j in range(ncols):
            axes[i, j] = fig.add_subplot(gs[i, j])
            plain_axes(axes[i, j])
    return axes, gs


def _bottom_colorbar(
    fig: Figure,
    slot: SubplotSpec,
    mappable: ScalarMappable,
    label: str,
    ticks: Sequence[float] | None = None,
    ticklabels: Sequence[str] | None = None,
) -> None:
    """A horizontal colorbar across the middle 80% of ``slot`` (a span of the bottom row)."""
    holder = fig.add_subplot(slot)
    holder.set_axis_off()
    cax = holder.inset_axes((0.1, 0.0, 0.8, 1.0))
    cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    if ticks is not None:
        cb.set_ticks(ticks, labels=ticklabels)
    cb.set_label(label, fontsize=8, labelpad=1)
    cb.ax.tick_params(labelsize=7, pad=1)


def _cam_colorbar(fig: Figure, slot: SubplotSpec, cmap: Colormap) -> None:
    sm = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    _bottom_colorbar(fig, slot, sm, "CAM")


def _check_names(cams: Mapping[str, object], arg: str) -> list[str]:
    if not isinstance(cams, Mapping) or not cams:
        raise AttnvizError(f"{arg} must be a non-empty dict {{model_name: cam}}")
    return [str(k) for k in cams]


def cam_panel(
    image: ArrayLike,
    cams: Mapping[str, ArrayLike],
    *,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    titles: Mapping[str, str] | None = None,
    scores: Mapping[str, float | str] | None = None,
    difference: tuple[str, str] | None = None,
    denormalize: Denormalize = None,
    title: str | None = None,
    path: PathArg | None = None,
) -> Figure:
    """One row: the image, then its CAM overlay for each model, optionally their difference.

    ``scores`` (name -> probability, or a ready string) goes under each title, e.g.
    ``P=0.93``. ``difference=(a, b)`` adds a last panel with ``cam_b - cam_a`` on a diverging
    ``RdBu_r`` scale with symmetric limits and a colorbar: red where ``b`` looks more.

    >>> import torch
    >>> img, cams = torch.rand(3, 64, 64), {"base": torch.rand(8, 8), "+SE": torch.rand(8, 8)}
    >>> fig = cam_panel(img, cams, scores={"base": 0.61, "+SE": 0.93},
    ...                 difference=("base", "+SE"), path=None)
    >>> len(fig.axes)  # image, two overlays, difference, two colorbars
    6
    """
    names = _check_names(cams, "cams")
    img = prepare_images(image, "image", batched=False, denormalize=denormalize)
    maps = {name: prepare_cams(c, f"cams[{name!r}]", batched=False) for name, c in cams.items()}
    titles = dict(titles or {})
    scores = dict(scores or {})
    if difference is not None and (len(difference) != 2 or any(d not in maps for d in difference)):
        raise AttnvizError(
            f"difference must be a pair of names from cams ({names}), got {difference!r}"
        )
    cm = get_cmap(cmap)
    k = len(names)
    n = 1 + k + (difference is not None)
    h, w = img.shape[:2]
    cell_h = 2.6
    cell_w = cell_h * min(max(w / h, 0.5), 2.0)
    fig = new_figure(n * cell_w + 0.3, cell_h + 1.3 + (0.3 if title else 0.0))
    axes, gs = _image_grid(fig, 1, n, cell_h)
    axes = axes[0]
    axes[0].imshow(img, interpolation="bilinear")
    axes[0].set_title("image", fontsize=10)
    for ax, name in zip(axes[1:], names):
        ax.imshow(_blend(img[None], maps[name][None], alpha, cm)[0], interpolation="bilinear")
        label = titles.get(name, name)
        if name in scores:
            label += f"\n{_format_score(scores[name])}"
        ax.set_title(label, fontsize=10)
    _cam_colorbar(fig, gs[-1, 1 : 1 + k], cm)
    if difference is not None:
        a, b = difference
        diff = cam_difference(maps[a], maps[b], (h, w))
        ax = axes[-1]
        im = _show_difference(ax, diff, symmetric_limit(diff))  # symmetric: 0 is white
        ax.set_title(difference_title(titles.get(b, b), titles.get(a, a)), fontsize=10)
        lim = symmetric_limit(diff)
        _bottom_colorbar(
            fig, gs[-1, -1], im, "CAM difference",
            ticks=[-lim, 0.0, lim], ticklabels=[f"−{lim:.2g}", "0", f"+{lim:.2g}"],
        )  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=12)
    trim_to_images(fig, [ax for ax in fig.axes if ax.images])
    return finish(fig, path)


def cam_grid(
    images: ArrayLike,
    cams: Mapping[str, ArrayLike],
    *,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    difference: bool = False,
    shared_scale: bool = True,
    scores: Mapping[str, Sequence[float]] | None = None,
    row_labels: Sequence[str] | None = None,
    max_images: int = 8,
    denormalize: Denormalize = None,
    title: str | None = None,
    masks: ArrayLike | None = None,
    path: PathArg | None = None,
) -> Figure:
    """Several images (rows) × models (columns) of CAM overlays in one figure.

    ``cams`` maps each model name to its CAMs [B, h, w] for the same images [B, 3, H, W]; the
    first model is the baseline. ``difference=True`` adds one column per other model with
    ``cam_model - cam_baseline`` (``RdBu_r``, symmetric limits): ``shared_scale=True`` puts
    every difference on one scale with one colorbar so rows and columns compare; ``False``
    scales each difference panel on its own (its limit printed in the corner). ``scores`` (name ->
    one value per image) are printed in the corner of each overlay. ``masks`` ``[B, H, W]``
    (the objects' masks, where the data has them) are outlined in white on the image and on
    every overlay. At most ``max_images`` rows are shown.

    >>> import torch
    >>> fig = cam_grid(torch.rand(4, 3, 32, 32),
    ...                {"base": torch.rand(4, 7, 7), "+ECA": torch.rand(4, 7, 7)},
    ...                difference=True, row_labels=["cat", "dog", "car", "cup"])
    >>> len([ax for ax in fig.axes if ax.images])  # 4 rows × (image, 2 overlays, 1 diff)
    16
    """
    names = _check_names(cams, "cams")
    imgs = prepare_images(images, "images", batched=True, denormalize=denormalize)
    if max_images < 1:
        raise AttnvizError(f"max_images must be >= 1, got {max_images}")
    n = min(imgs.shape[0], int(max_images))
    imgs = imgs[:n]
    maps = {}
    for name, c in cams.items():
        arr = prepare_cams(c, f"cams[{name!r}]", batched=True)
        if arr.shape[0] < n:
            raise AttnvizError(
                f"cams[{name!r}] has {arr.shape[0]} maps but {n} images are shown; "
                "expected one CAM per image"
            )
        maps[name] = arr[:n]
    if difference and len(names) < 2:
        raise AttnvizError("difference=True needs at least two models in cams (baseline first)")
    scores = dict(scores or {})
    for name, vals in scores.items():
        if name not in maps:
            raise AttnvizError(f"scores names {name!r}, which is not in cams ({names})")
        if len(vals) < n:
            raise AttnvizError(f"scores[{name!r}] has {len(vals)} values, expected {n}")
    if row_labels is not None and len(row_labels) < n:
        raise AttnvizError(f"row_labels has {len(row_labels)} labels, expected {n}")

    outlines = None
    if masks is not None:
        outlines = np.asarray(to_numpy(masks, "masks"), dtype=np.float64)
        if outlines.ndim != 3 or outlines.shape[0] < n:
            raise AttnvizError(
                f"masks must be [B, H, W] with one mask per image, got {outlines.shape}"
            )
        outlines = outlines[:n]
    cm = get_cmap(cmap)
    h, w = imgs.shape[1:3]
    base, variants = names[0], names[1:]
    diffs = (
        {v: [cam_difference(maps[base][i], maps[v][i], (h, w)) for i in range(n)] for v in variants}
        if difference
        else {}
    )
    shared_limit = symmetric_limit(*(d for ds in diffs.values() for d in ds)) if diffs else 1.0
    k, cols = len(names), 1 + len(names) + len(diffs)
    cell_w = min(2.0, 14.0 / cols)
    cell_h = cell_w * min(max(h / w, 0.5), 2.0)
    fig = new_figure(cols * cell_w + 0.4, n * cell_h + 1.3 + (0.3 if title else 0.0))
    axes, gs = _image_grid(fig, n, cols, cell_h)
    overlays = {name: _blend(imgs, maps[name], alpha, cm) for name in names}
    diff_im = None
    for i in range(n):
        axes[i, 0].imshow(imgs[i], interpolation="bilinear")
        axes[i, 0].set_ylabel(row_labels[i] if row_labels is not None else f"#{i}", fontsize=9)
        for j, name in enumerate(names, start=1):
            axes[i, j].imshow(overlays[name][i], interpolation="bilinear")
            if name in scores:
                _corner_text(axes[i, j], _format_score(scores[name][i]))
        if outlines is not None and outlines[i].any():
            mask = (
                resize_nearest(outlines[i], (h, w)) if outlines[i].shape != (h, w) else outlines[i]
            )
            for j in range(1 + k):
                axes[i, j].contour(mask, levels=[0.5], colors="white", linewidths=0.9)
        for j, v in enumerate(diffs, start=1 + k):
            d = diffs[v][i]
            limit = shared_limit if shared_scale else symmetric_limit(d)
            diff_im = _show_difference(axes[i, j], d, limit)
            if not shared_scale:
                _corner_text(axes[i, j], f"±{limit:.2g}")
    axes[0, 0].set_title("image", fontsize=10)
    for j, name in enumerate(names, start=1):
        axes[0, j].set_title(name + (" (baseline)" if diffs and j == 1 else ""), fontsize=10)
    for j, v in enumerate(diffs, start=1 + k):
        axes[0, j].set_title(difference_title(v, base), fontsize=10)
    _cam_colorbar(fig, gs[-1, 1 : 1 + k], cm)
    if diff_im is not None:
        if shared_scale:
            _bottom_colorbar(
                fig, gs[-1, 1 + k :], diff_im, "CAM difference",
                ticks=[-shared_limit, 0.0, shared_limit],
                ticklabels=[f"−{shared_limit:.2g}", "0", f"+{shared_limit:.2g}"],
            )  # fmt: skip
        else:  # each panel has its own limit (in its corner): show the scale in relative terms
            sm = ScalarMappable(norm=Normalize(-1.0, 1.0), cmap=_DIFF_CMAP)
            _bottom_colorbar(
                fig, gs[-1, 1 + k :], sm, "difference (own scale per panel)", ticks=[-1.0, 0.0, 1.0], ticklabels=["−max", "0", "+max"],
            )  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=12)
    trim_to_images(fig, [ax for ax in fig.axes if ax.images])
    return finish(fig, path)


def query_grid(
    images: ArrayLike,
    maps: ArrayLike,
    points: Sequence[Sequence[tuple[float, float]]],
    *,
    alpha: float = 0.55,
    cmap: str | Colormap = "magma",
    query_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    denormalize: Denormalize = None,
    title: str | None = None,
    path: PathArg | None = None,
) -> Figure:
    """Self-attention "where does this position look" maps: images (rows) × query points (columns).

    ``maps`` ``[N, Q, h, w]`` are each query's attention weights over the key positions
    (each map scaled to its own maximum for display); ``points[i][q]`` is query ``q`` of
    image ``i`` as ``(y, x)`` in [0, 1], marked with a white cross.

    >>> import torch
    >>> fig = query_grid(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4), [[(0.5, 0.5)] * 3] * 2)
    >>> len([ax for ax in fig.axes if ax.images])
    8
    """
    imgs = prepare_images(images, "images", batched=True, denormalize=denormalize)
    arr = np.asarray(to_numpy(maps, "maps"), dtype=np.float64)
    if arr.ndim != 4 or arr.shape[0] != imgs.shape[0]:
        raise AttnvizError(f"maps must be [N, Q, h, w] with one row per image, got {arr.shape}")
    n, q = arr.shape[:2]
    if len(points) != n or any(len(p) != q for p in points):
        raise AttnvizError(f"points must hold {q} (y, x) pairs for each of the {n} images")
    peak = arr.reshape(n, q, -1).max(axis=2)[:, :, None, None]
    arr = np.where(peak > 0, arr / np.where(peak > 0, peak, 1.0), 0.0)
    cm = get_cmap(cmap)
    h, w = imgs.shape[1:3]
    cell_w = min(2.0, 14.0 / (q + 1))
    cell_h = cell_w * min(max(h / w, 0.5), 2.0)
    fig = new_figure((q + 1) * cell_w + 0.4, n * cell_h + 1.3 + (0.3 if title else 0.0))
    axes, gs = _image_grid(fig, n, q + 1, cell_h)
    for i in range(n):
        axes[i, 0].imshow(imgs[i], interpolation="bilinear")
        axes[i, 0].set_ylabel(row_labels[i] if row_labels is not None else f"#{i}", fontsize=9)
        for j in range(q):
            ax = axes[i, j + 1]
            ax.imshow(
                _blend(imgs[i : i + 1], arr[i, j][None], alpha, cm)[0], interpolation="nearest"
            )
            y, x = points[i][j]
            ax.plot([x * (w - 1)], [y * (h - 1)], marker="x", color="white", markersize=8, mew=2.2)
            axes[i, 0].plot(
                [x * (w - 1)], [y * (h - 1)], marker="x", color="white", markersize=5, mew=1.5
            )
    axes[0, 0].set_title("image", fontsize=10)
    for j in range(q):
        label = query_labels[j] if query_labels is not None else f"query {j + 1}"
        axes[0, j + 1].set_title(label, fontsize=10)
    _cam_colorbar(fig, gs[-1, 1:], cm)
    if title:
        fig.suptitle(title, fontsize=11)
    return finish(fig, path)
