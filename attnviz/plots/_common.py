"""Shared plumbing for the picture layer: input conversion, figures, saving, scaling, tiling.

Every figure in :mod:`attnviz.plots` is a :class:`matplotlib.figure.Figure` created here
with an Agg canvas attached, never through ``pyplot``: no global state, no display, safe to
use from several threads, and garbage-collected like any other object.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from ..errors import AttnvizError

ArrayLike = torch.Tensor | np.ndarray
PathArg = str | PathLike[str]

#: Resolution of every figure, on screen and on disk.
DPI = 110


# --------------------------------------------------------------------------- inputs


def to_numpy(x: Any, name: str, *, keep_uint8: bool = False) -> np.ndarray:
    """Return ``x`` as a float64 numpy array (detached, on the CPU).

    ``uint8`` data is returned unchanged when ``keep_uint8`` is set, so that images can tell
    0-255 from 0-1.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise TypeError(f"{name} must be real-valued, got a complex tensor")
        if keep_uint8 and t.dtype == torch.uint8:
            return t.cpu().numpy()
        return t.to(device="cpu", dtype=torch.float64).numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}"
        ) from exc
    if keep_uint8 and arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array of numbers, "
            f"got {type(x).__name__} with dtype {arr.dtype}"
        )
    return arr.astype(np.float64, copy=False)


def drop_batch(arr: np.ndarray, name: str, ndim: int, expected: str) -> np.ndarray:
    """Check ``arr.ndim == ndim``, accepting (and removing) a leading batch of one."""
    if arr.ndim == ndim + 1:
        if arr.shape[0] != 1:
            raise AttnvizError(
                f"{name} has a batch of {arr.shape[0]} (shape {tuple(arr.shape)}); "
                f"expected {expected} for one image: index one image first, e.g. {name}[0]"
            )
        arr = arr[0]
    if arr.ndim != ndim:
        raise AttnvizError(f"{name} must have shape {expected}, got {tuple(arr.shape)}")
    return arr


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise AttnvizError(f"{name} must be one of {options}, got {value!r}")
    return value


def get_cmap(cmap: str | Colormap, name: str = "cmap") -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise AttnvizError(f"{name}={cmap!r} is not a matplotlib colormap name") from None


# --------------------------------------------------------------------------- scaling


def finite_range(x: np.ndarray, axis: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Min and max over ``axis`` ignoring NaN/inf (keepdims); all-non-finite gives inf, -inf."""
    finite = np.isfinite(x)
    lo = np.where(finite, x, np.inf).min(axis=axis, keepdims=True)
    hi = np.where(finite, x, -np.inf).max(axis=axis, keepdims=True)
    return lo, hi


def rescale(x: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    """Map ``[lo, hi]`` linearly onto ``[0, 1]``, clipping; empty ranges and NaN give 0."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    span = np.broadcast_to(hi - lo, x.shape)
    out = np.zeros(x.shape, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        np.divide(x - lo, span, out=out, where=np.isfinite(span) & (span > 0))
    out[~np.isfinite(out)] = 0.0
    return np.clip(out, 0.0, 1.0, out=out)


def minmax(x: np.ndarray, axis: Any = None) -> np.ndarray:
    """Min-max normalise over ``axis`` (``None``: the whole array). Constant input gives 0."""
    lo, hi = finite_range(x, axis)
    return rescale(x, lo, hi)


def colorize(x01: np.ndarray, cmap: str | Colormap) -> np.ndarray:
    """Apply a colormap to values in [0, 1]; returns float RGB in [0, 1], shape ``x.shape + (3,)``."""
    return get_cmap(cmap)(x01)[..., :3]


def to_uint8(x01: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x01, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------- layout


def grid_shape(n: int, ncols: int | None = None, aspect: float = 1.0) -> tuple[int, int]:
    """(rows, cols) of a grid holding ``n`` cells of height/width ``aspect`` that is near-square
    overall (for square cells: cols >= rows)."""
    n = max(int(n), 1)
    cols = ncols if ncols is not None else math.ceil(math.sqrt(n * aspect))
    cols = max(1, min(int(cols), n))
    return math.ceil(n / cols), cols


def tile(
    cells: np.ndarray,
    ncols: int | None = None,
    pad: int = 2,
    pad_value: float = 1.0,
    band: int = 0,
) -> np.ndarray:
    """Arrange equally-sized images ``cells`` [N, h, w(, 3)] in a near-square grid.

    Cells are separated (and framed) by ``pad`` pixels of ``pad_value``; ``band`` extra rows
    above each cell leave room for a label (see :func:`cell_origin`).
    """
    n, h, w = cells.shape[:3]
    rows, cols = grid_shape(n, ncols)
    shape = (rows * (h + band + pad) + pad, cols * (w + pad) + pad, *cells.shape[3:])
    out = np.full(shape, pad_value, dtype=cells.dtype)
    for i in range(n):
        y, x = cell_origin(i, cols, (h, w), pad, band)
        out[y : y + h, x : x + w] = cells[i]
    return out


def cell_origin(
    i: int, ncols: int, size: tuple[int, int], pad: int, band: int = 0
) -> tuple[int, int]:
    """Top-left pixel (y, x) of cell ``i`` in a :func:`tile` grid."""
    r, c = divmod(i, ncols)
    return pad + r * (size[0] + band + pad) + band, pad + c * (size[1] + pad)


def resize_nearest(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [H, W, ...] to ``size`` (blocky on purpose: shows pixels)."""
    h, w = img.shape[:2]
    if (h, w) == tuple(size):
        return img
    ys = (np.arange(size[0]) * h) // size[0]
    xs = (np.arange(size[1]) * w) // size[1]
    return img[ys][:, xs]


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of [..., H, W] by an integer factor (keeps pixels crisp)."""
    if factor <= 1:
        return img
    return img.repeat(factor, axis=-2).repeat(factor, axis=-1)


# --------------------------------------------------------------------------- figures


def new_figure(width: float, height: float) -> Figure:
    """A white, constrained-layout figure with its own Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def trim_to_images(
    fig: Figure, axes: Sequence[Axes], min_width: float = 3.5, passes: int = 2
) -> None:
    """Shrink ``fig`` by the blank space that aspect-locked image axes leave in their cells.

    Image cells are sized from estimates of the room titles, labels and colorbars take;
    this measures what the images could not fill after a layout pass and removes it, so
    grids have no stray gaps between rows or columns. Labels move when the images grow, so
    it repeats (at most ``passes`` layouts) until the slack is gone.
    """
    for _ in range(passes):
        fig.draw_without_rendering()
        w_in, h_in = fig.get_size_inches()
        rows: dict[int, float] = {}
        cols: dict[int, float] = {}
        for ax in axes:
            spec = ax.get_subplotspec()
            if spec is None:
                continue
            cell, box = ax.get_position(original=True), ax.get_position(original=False)
            r, c = spec.rowspan.start, spec.colspan.start
            rows[r] = min(rows.get(r, np.inf), (cell.height - box.height) * h_in)
            cols[c] = min(cols.get(c, np.inf), (cell.width - box.width) * w_in)
        dh = 0.97 * sum(max(v, 0.0) for v in rows.values() if np.isfinite(v))
        dw = 0.97 * sum(max(v, 0.0) for v in cols.values() if np.isfinite(v))
        new_w = max(w_in - dw, min(w_in, min_width))
        if w_in - new_w < 0.1 and dh < 0.1:  # inches: not worth another layout pass
            return
        fig.set_size_inches(new_w, h_in - dh)


def caption(fig: Figure, text: str) -> None:
    """A small grey note under the figure, wrapped to the figure's width."""
    chars = max(30, int(fig.get_figwidth() * 15))
    fig.supxlabel(textwrap.fill(text, chars), fontsize=8, color="0.3")


def plain_axes(ax: Axes) -> None:
    """Hide ticks but keep a thin frame (and room for x/y labels) around an image."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("0.6")


def save_figure(fig: Figure, path: PathArg) -> Path:
    """Save ``fig`` to ``path`` in the format its suffix names, creating parent folders.

    No suffix means PNG; a suffix matplotlib cannot write (``x.jpgx``) is an error, never
    PNG bytes under another name.
    """
    p = Path(path)
    fmt = p.suffix[1:].lower() or "png"
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise AttnvizError(
            f"cannot save a figure as {p.name!r}: .{fmt} is not an image format; "
            f"use one of {sorted('.' + f for f in supported)}"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format=fmt, dpi=DPI, facecolor="white")
    return p


def finish(fig: Figure, path: PathArg | None) -> Figure:
    """Save when a path is given; always return the figure."""
    if path is not None:
        save_figure(fig, path)
    return fig


def figure_to_png_bytes(fig: Figure, dpi: float = 100) -> bytes:
    """Encode ``fig`` as PNG bytes, e.g. to inline into an HTML report as base64.

    >>> from attnviz.plots import metric_curves, figure_to_png_bytes
    >>> png = figure_to_png_bytes(metric_curves({"a": {"l1": 1.0, "l2": 2.0}}, "m"))
    >>> png[:4]
    b'\\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def figure_to_array(fig: Figure, dpi: float | None = None) -> np.ndarray:
    """Render ``fig`` to an RGB array [H, W, 3] uint8 (e.g. for TensorBoard or tiling).

    ``dpi`` defaults to the figure's own resolution.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    old = fig.dpi
    try:
        if dpi is not None:
            fig.set_dpi(dpi)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        if dpi is not None:
            fig.set_dpi(old)
