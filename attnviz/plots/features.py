"""Feature-map pictures: channel grids, one PNG per channel, and the same layer across models.

Feature maps are ``[C, H, W]`` (or ``[1, C, H, W]``) tensors or arrays. Three ways to put
their values on a colour scale:

* ``"per_channel"``: min-max each map on its own; shows *where* each channel fires.
* ``"global"``: one min-max over all shown channels; shows *which* channels are strong.
* ``"none"``: raw values on one scale (``vmin``/``vmax`` fixed by you or by the data), with a
  colorbar in the layer's own units, so several figures can share one scale.

Constant maps render as zeros, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from PIL import Image

from ..errors import AttnvizError
from ._common import (
    DPI,
    ArrayLike,
    PathArg,
    caption,
    cell_origin,
    check_choice,
    colorize,
    drop_batch,
    finish,
    finite_range,
    get_cmap,
    grid_shape,
    minmax,
    new_figure,
    rescale,
    resize_nearest,
    tile,
    to_numpy,
    to_uint8,
    trim_to_images,
    upscale,
)

NORMALIZE = ("per_channel", "global", "none")
ORDERS = ("index", "energy")
_SHAPE = "[C, H, W] or [1, C, H, W]"


def _as_fmap(fmap: ArrayLike, name: str = "fmap") -> np.ndarray:
    return drop_batch(to_numpy(fmap, name), name, 3, _SHAPE)


def channel_energy(fmap: np.ndarray) -> np.ndarray:
    """L2 energy (sum of squares) of each channel of a [C, H, W] map; NaN counts as 0."""
    return np.nansum(np.square(fmap.reshape(fmap.shape[0], -1)), axis=1)


def select_channels(
    fmap: np.ndarray,
    max_channels: int | None,
    order: str,
    channels: Sequence[int] | None,
    name: str = "fmap",
) -> np.ndarray:
    """Indices of the channels to show: ``channels`` as given, else the first
    ``max_channels`` in index order or by decreasing L2 energy."""
    n = fmap.shape[0]
    if channels is not None:
        idx = np.asarray(channels, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise AttnvizError("channels must name at least one channel")
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise AttnvizError(f"channels {bad.tolist()} out of range for {name} with {n} channels")
        return idx
    check_choice(order, "order", ORDERS)
    if max_channels is not None and max_channels < 1:
        raise AttnvizError(f"max_channels must be >= 1, got {max_channels}")
    k = n if max_channels is None else min(n, int(max_channels))
    if order == "index":
        return np.arange(k)
    return np.argsort(-channel_energy(fmap), kind="stable")[:k]


def _scale(
    maps: np.ndarray, normalize: str, vmin: float | None, vmax: float | None
) -> tuple[np.ndarray, float, float]:
    """Scale [N, H, W] maps to [0, 1]; also return the raw (vmin, vmax) of a shared scale."""
    check_choice(normalize, "normalize", NORMALIZE)
    if normalize == "per_channel":
        return minmax(maps, axis=(1, 2)), 0.0, 1.0
    lo_a, hi_a = finite_range(maps)
    lo, hi = float(lo_a.item()), float(hi_a.item())
    if normalize == "none":  # a fixed raw scale, e.g. shared by several figures
        lo = lo if vmin is None else float(vmin)
        hi = hi if vmax is None else float(vmax)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # nothing finite to show
        lo, hi = 0.0, 1.0
    return rescale(maps, lo, hi), lo, hi


def feature_grid_array(
    fmap: ArrayLike,
    max_channels: int | None = 64,
    normalize: str = "per_channel",
    *,
    channels: Sequence[int] | None = None,
    order: str = "index",
    cmap: str | Colormap | None = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    scale: int = 1,
    pad: int = 1,
    ncols: int | None = None,
    as_uint8: bool = True,
) -> np.ndarray:
    """The channel grid of :func:`feature_grid` as one image, without axes or labels.

    Returns ``[H', W', 3]`` RGB (or ``[H', W']`` grey when ``cmap=None``), ``uint8`` or, with
    ``as_uint8=False``, float in [0, 1]. Cells are separated by ``pad`` white pixels and
    upscaled ``scale`` times (nearest neighbour) so small maps stay visible.

    >>> import torch
    >>> feature_grid_array(torch.rand(10, 7, 7), scale=4).shape
    (88, 117, 3)
    """
    fm = _as_fmap(fmap)
    idx = select_channels(fm, max_channels, order, channels)
    grid, _, _, _ = _grid_image(
        fm, idx, normalize, vmin, vmax, cmap, int(scale), int(pad), 0, ncols
    )
    return to_uint8(grid) if as_uint8 else grid


def _grid_image(
    fm: np.ndarray,
    idx: np.ndarray,
    normalize: str,
    vmin: float | None,
    vmax: float | None,
    cmap: str | Colormap | None,
    scale: int,
    pad: int,
    band: int,
    ncols: int | None,
) -> tuple[np.ndarray, int, float, float]:
    """Scale, upscale, colour and tile channels ``idx`` of ``fm``: (grid, ncols, vmin, vmax)."""
    maps01, lo, hi = _scale(fm[idx], normalize, vmin, vmax)
    cells = upscale(maps01, scale)
    if cmap is not None:
        cells = colorize(cells, cmap)
    _, cols = grid_shape(len(idx), ncols, aspect=fm.shape[1] / fm.shape[2])
    return tile(cells, cols, pad=pad, pad_value=1.0, band=band), cols, lo, hi


def _describe(fm: np.ndarray, shown: int, order: str, normalize: str, explicit: bool) -> str:
    c, h, w = fm.shape
    if explicit:
        which = f"{shown} chosen"
    elif shown == c:
        which = "all" if order == "index" else "all, by energy"
    else:
        which = f"first {shown}" if order == "index" else f"top {shown} by L2 energy"
    scale = {
        "per_channel": "each map min-max scaled",
        "global": "one min-max scale",
        "none": "raw values",
    }[normalize]
    return f"{c} channels of {h}×{w}, showing {which}; {scale}"


def feature_grid(
    fmap: ArrayLike,
    max_channels: int | None = 64,
    normalize: str = "per_channel",
    *,
    channels: Sequence[int] | None = None,
    order: str = "index",
    cmap: str | Colormap = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    ncols: int | None = None,
    title: str | None = None,
    path: PathArg | None = None,
) -> Figure:
    """Plot the channels of one feature map in a near-square grid, one titled cell each.

    ``order="energy"`` shows the channels with the highest L2 energy first; ``channels``
    picks exact indices (``max_channels`` and ``order`` are then ignored). With
    ``normalize="global"`` or ``"none"`` a colorbar gives the scale (``vmin``/``vmax`` fix it
    for ``"none"``). Saves to ``path`` (PNG) when given.

    >>> import torch
    >>> fmap = torch.rand(1, 32, 14, 14)
    >>> fmap[0, 5] *= 3; fmap[0, 9] *= 2
    >>> fig = feature_grid(fmap, max_channels=16, order="energy", title="layer3", path=None)
    >>> [t.get_text() for t in fig.axes[0].texts][:2]
    ['ch 5', 'ch 9']
    """
    fm = _as_fmap(fmap)
    idx = select_channels(fm, max_channels, order, channels)
    cm = get_cmap(cmap)
    n, (h, w) = len(idx), fm.shape[1:]
    _, cols = grid_shape(n, ncols, aspect=h / w)
    cell_in = min(1.45, 12.0 / cols)  # longest side of a cell, inches
    fontsize = 9.0 if cell_in >= 1.2 else 7.0 if cell_in >= 0.8 else 6.0
    # One image for the whole grid (fast: one axes, however many channels). Each map is
    # upscaled (nearest) to at least screen resolution so pixels stay crisp, and gets a
    # white band above it for its label.
    factor = max(1, math.ceil(cell_in * DPI / max(h, w)))
    px_per_in = max(h, w) * factor / cell_in
    band = math.ceil(fontsize * 1.7 / 72 * px_per_in)
    pad = max(1, round(0.05 * px_per_in))
    grid, cols, lo, hi = _grid_image(fm, idx, normalize, vmin, vmax, cm, factor, pad, band, cols)
    grid = to_uint8(grid)
    colorbar = normalize != "per_channel"
    fig = new_figure(
        max(3.5, grid.shape[1] / px_per_in + (1.1 if colorbar else 0.3)),
        grid.shape[0] / px_per_in + 0.5 + (0.35 if title else 0.0),
    )
    ax = fig.add_subplot()
    ax.imshow(grid, interpolation="antialiased")
    ax.set_axis_off()
    for i, c in enumerate(idx):
        y, x = cell_origin(i, cols, (h * factor, w * factor), pad, band)
        ax.text(
            x + w * factor / 2, y - band / 2, f"ch {c}", ha="center", va="center", fontsize=fontsize
        )
    if colorbar:
        norm = Normalize(lo, hi if hi > lo else lo + 1.0)  # constant maps: bottom of the scale
        cb = fig.colorbar(ScalarMappable(norm, cm), ax=ax, shrink=0.9, aspect=25)
        cb.ax.tick_params(labelsize=8)
        cb.set_label("activation", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=12)
    caption(fig, _describe(fm, n, order, normalize, channels is not None))
    trim_to_images(fig, [ax])
    return finish(fig, path)


def save_channels(
    fmap: ArrayLike,
    folder: PathArg,
    *,
    normalize: str = "per_channel",
    cmap: str | Colormap = "viridis",
    prefix: str = "channel",
    scale: int = 1,
    vmin: float | None = None,
    vmax: float | None = None,
) -> list[Path]:
    """Write each channel of ``fmap`` as its own PNG (``channel_000.png``...) in ``folder``.

    Colours are applied directly with the colormap and written with PIL, so thousands of
    channels take seconds (no matplotlib figure per channel). Returns the paths in channel
    order. ``scale`` upscales each image (nearest neighbour).
    """
    fm = _as_fmap(fmap)
    maps01, _, _ = _scale(fm, normalize, vmin, vmax)
    rgb = to_uint8(colorize(upscale(maps01, int(scale)), cmap))
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(fm.shape[0] - 1)))
    paths = []
    for c in range(fm.shape[0]):
        p = out / f"{prefix}_{c:0{digits}d}.png"
        Image.fromarray(rgb[c]).save(p)
        paths.append(p)
    return paths


def compare_feature_maps(
    fmaps: Mapping[str, ArrayLike],
    max_channels: int | None = 16,
    normalize: str = "shared",
    *,
    order: str = "energy",
    channels: Sequence[int] | None = None,
    cmap: str | Colormap = "viridis",
    title: str | None = None,
    path: PathArg | None = None,
) -> Figure:
    """The same layer of several models side by side: one row per model, one column per channel.

    Every row shows the same channel indices, chosen from the first model (by L2 energy or
    index order, or given as ``channels``). ``normalize="shared"`` puts each column on one
    colour scale across models, so a brighter cell is a larger activation (the range is
    printed under the column); ``"per_channel"`` min-max scales every cell on its own.
    Channel counts must agree; spatial sizes may differ (each map keeps its resolution).

    >>> import torch
    >>> fig = compare_feature_maps({"resnet18": torch.rand(64, 28, 28),
    ...                             "resnet18+SE": torch.rand(1, 64, 28, 28)}, max_channels=8)
    >>> [t.get_text().splitlines()[0] for t in fig.axes[0].get_yticklabels()]
    ['resnet18', 'resnet18+SE']
    """
    check_choice(normalize, "normalize", ("shared", "per_channel"))
    if not isinstance(fmaps, Mapping) or not fmaps:
        raise AttnvizError("fmaps must be a non-empty dict {model_name: fmap [C, H, W]}")
    maps = {name: _as_fmap(f, f"fmaps[{name!r}]") for name, f in fmaps.items()}
    counts = {name: m.shape[0] for name, m in maps.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{k!r}: {v}" for k, v in counts.items())
        raise AttnvizError(
            f"fmaps must have the same number of channels to compare them, got {listing}"
        )
    names = list(maps)
    first = maps[names[0]]
    idx = select_channels(first, max_channels, order, channels, f"fmaps[{names[0]!r}]")
    cm = get_cmap(cmap)
    rows, cols = len(names), len(idx)
    cell_in = min(1.3, 15.0 / cols)
    hmax = max(m.shape[1] for m in maps.values())
    wmax = max(m.shape[2] for m in maps.values())
    factor = max(1, math.ceil(cell_in * DPI / max(hmax, wmax)))
    size = (hmax * factor, wmax * factor)
    px_per_in = max(size) / cell_in
    pad = max(1, round(0.06 * px_per_in))
    cells = np.empty((rows, cols, *size, 3))
    ranges = []
    for j, c in enumerate(idx):
        column = [maps[name][c] for name in names]
        if normalize == "shared":  # one scale per channel across models
            lo = min(float(finite_range(m)[0].item()) for m in column)
            hi = max(float(finite_range(m)[1].item()) for m in column)
            scaled = [rescale(m, lo, hi) for m in column]
            ranges.append(f"{lo:.3g} … {hi:.3g}")
        else:
            scaled = [minmax(m) for m in column]
        for i, m in enumerate(scaled):  # each map keeps its own pixels, shown at one size
            cells[i, j] = resize_nearest(colorize(m, cm), size)
    grid = to_uint8(tile(cells.reshape(rows * cols, *size, 3), cols, pad=pad, pad_value=1.0))
    fig = new_figure(
        grid.shape[1] / px_per_in + 1.3,
        grid.shape[0] / px_per_in + 0.9 + (0.35 if title else 0.0) + (0.2 if ranges else 0.0),
    )
    ax = fig.add_subplot()
    ax.imshow(grid, interpolation="antialiased")
    for spine in ax.spines.values():
        spine.set_visible(False)
    xs = [cell_origin(j, cols, size, pad)[1] + size[1] / 2 for j in range(cols)]
    ys = [cell_origin(i * cols, cols, size, pad)[0] + size[0] / 2 for i in range(rows)]
    fontsize = 9 if cols <= 12 else 8
    ax.set_yticks(ys, [f"{name}\n{maps[name].shape[1]}×{maps[name].shape[2]}" for name in names])
    ax.set_xticks(xs, ranges or [""] * cols)
    ax.tick_params(length=0, labelsize=fontsize)
    ax.tick_params(axis="x", labelsize=7, labelcolor="0.3")
    top = ax.secondary_xaxis("top")
    top.set_xticks(xs, [f"ch {c}" for c in idx])
    top.tick_params(length=0, labelsize=fontsize)
    top.spines["top"].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=12)
    how = (
        "one colour scale per column (shared across models; range below)"
        if normalize == "shared"
        else "each map min-max scaled"
    )
    which = "by L2 energy" if order == "energy" and channels is None else "by index"
    if channels is not None:
        which = "chosen"
    caption(fig, f"{len(idx)} of {first.shape[0]} channels, {which} in {names[0]!r}; {how}")
    trim_to_images(fig, [ax])
    return finish(fig, path)
