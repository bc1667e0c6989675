"""A :class:`~attnviz.cam.CamResult` as pictures: overlays, a figure grid, the notebook view.

The result keeps a reference to its input images (``compute_cam(keep_images=True)``,
the default), so ``result.show()`` is one call, like pytorch-grad-cam's
``show_cam_on_image`` and torchcam's ``overlay_mask``; the drawing is
:func:`attnviz.plots.cam_grid` and :func:`attnviz.plots.overlay_batch`.

Images in [0, 1] are shown as they are. ``denormalize="auto"`` (the default here)
shows any other float images min-max scaled per image, so a normalised tensor
displays without knowing its statistics (colours shift); pass
``denormalize="imagenet"`` or ``(mean, std)`` for the true colours, ``None`` to insist
on [0, 1]. Maps outside [0, 1] (``normalize="none"``) are min-max scaled per image
for display.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from .._maps import minmax
from ..errors import AttnvizError, CamError
from ..plots import cam_grid, figure_to_png_bytes, overlay_batch
from ..plots.cams import Denormalize

if TYPE_CHECKING:
    from .result import CamResult

__all__ = ["result_figure", "result_html", "result_overlay"]

Auto = Denormalize | str

_HTML_ROWS = 8  # images listed in the notebook table
_HTML_IMAGES = 4  # images drawn in the notebook grid
_HTML_DPI = 56  # small inline PNG...
_HTML_COLOURS = 128  # ...with a palette


def result_overlay(
    result: CamResult,
    method: str | None = None,
    layer: str | None = None,
    *,
    images: Tensor | np.ndarray | None = None,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    denormalize: Auto = "auto",
) -> np.ndarray:
    """The heatmap of one map blended over each image: ``[B, H, W, 3]`` float in [0, 1]."""
    maps = _pick(result, method, layer)
    imgs, denorm = _images(result, images, denormalize)
    return overlay_batch(imgs, _displayable(maps), alpha, cmap, denormalize=denorm)


def result_figure(
    result: CamResult,
    images: Tensor | np.ndarray | None = None,
    *,
    fused: bool = False,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    denormalize: Auto = "auto",
    max_images: int = 8,
    title: str | None = None,
    path: str | None = None,
) -> Figure:
    """A grid: one row per image (labelled with its target), one column per (method, layer) map."""
    imgs, denorm = _images(result, images, denormalize)
    if fused:
        cams = {m: result.fused_maps[m] for m in result.methods}
    elif len(result.layers) == 1:
        cams = {m: result.all_maps[m, result.layers[0]] for m in result.methods}
    elif len(result.methods) == 1:
        cams = {layer: result.all_maps[result.methods[0], layer] for layer in result.layers}
    else:
        cams = {f"{m} @ {layer}": v for (m, layer), v in result.all_maps.items()}
    cams = {k: _displayable(v) for k, v in cams.items()}
    n = min(int(imgs.shape[0]), max_images)
    shown = [_score_text(result, i) for i in range(n)]
    scores = {k: shown for k in cams}
    return cam_grid(
        imgs,
        cams,
        alpha=alpha,
        cmap=cmap,
        scores=scores,
        row_labels=[target_label(result, i) for i in range(n)],
        max_images=max_images,
        denormalize=denorm,
        title=title,
        path=path,
    )


def result_html(result: CamResult) -> str:
    """The notebook view: a summary, a small table per image, and the overlay grid as a PNG."""
    first = next(iter(result.all_maps.values()))
    b = first.shape[0]
    head = (
        f"<b>CamResult</b>: methods {_esc(list(result.methods))}, layers "
        f"{_esc(list(result.layers))}, maps {list(first.shape)}, normalize "
        f"{_esc(result.normalize)}"
    )
    cols = ["#", "target", "score"] + (["P(target)"] if result.probs is not None else [])
    rows = []
    for i in range(min(b, _HTML_ROWS)):
        cells = [str(i), _esc(target_label(result, i)), f"{float(result.scores[i]):.4g}"]
        if result.probs is not None:
            cells.append(f"{float(result.probs[i]):.3f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if b > _HTML_ROWS:
        rows.append(f'<tr><td colspan="{len(cols)}">… {b - _HTML_ROWS} more</td></tr>')
    table = (
        '<table style="font-size:90%"><tr>'
        + "".join(f"<th>{c}</th>" for c in cols)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )
    picture = ""
    if result.images is not None:
        try:
            fig = result_figure(result, max_images=_HTML_IMAGES)
        except (AttnvizError, ValueError, TypeError) as exc:  # images the grid cannot draw
            picture = f"<p><i>no overlay: {_esc(str(exc))}</i></p>"
        else:
            png = base64.b64encode(_small_png(fig)).decode("ascii")
            picture = f'<img src="data:image/png;base64,{png}" style="max-width:100%"/>'
    else:
        picture = "<p><i>no images kept (keep_images=False): result.show(images) draws them</i></p>"
    return f"<div>{head}{table}{picture}</div>"


def target_label(result: CamResult, i: int) -> str:
    """Image ``i``'s target: its class name and index, or the target's description."""
    if result.targets is not None:
        c = int(result.targets[i])
        names = result.class_names
        return f"{names[c]} ({c})" if names is not None and 0 <= c < len(names) else f"class {c}"
    if result.target_labels is not None:
        return result.target_labels[i]
    return "callable"


# -- helpers ------------------------------------------------------------------------
def _small_png(fig: Figure) -> bytes:
    """The figure at a low resolution, as a palette PNG (a few tens of kB for real images)."""
    rgb = Image.open(io.BytesIO(figure_to_png_bytes(fig, dpi=_HTML_DPI))).convert("RGB")
    out = io.BytesIO()
    rgb.quantize(_HTML_COLOURS).save(out, format="PNG", optimize=True)
    return out.getvalue()


def _score_text(result: CamResult, i: int) -> str:
    if result.probs is not None:
        return f"P={float(result.probs[i]):.2f}"
    return f"{float(result.scores[i]):.3g}"


def _pick(result: CamResult, method: str | None, layer: str | None) -> Tensor:
    if method is None and layer is None:
        if len(result.all_maps) == 1:
            return result.maps
        raise CamError(
            f"this result holds methods {list(result.methods)} at layers "
            f"{list(result.layers)}: pass method= (its fused map) and layer="
        )
    if layer is None:
        return result[method]
    if method is None:
        if len(result.methods) != 1:
            raise CamError(f"pass method= too: this result holds {list(result.methods)}")
        method = result.methods[0]
    return result[method, layer]


def _images(
    result: CamResult, images: Tensor | np.ndarray | None, denormalize: Auto
) -> tuple[Tensor | np.ndarray, Denormalize]:
    imgs = result.images if images is None else images
    if imgs is None:
        raise CamError(
            "this result keeps no images (compute_cam(keep_images=False)): pass them, "
            "result.show(images)"
        )
    if not (isinstance(denormalize, str) and denormalize == "auto"):
        return imgs, denormalize
    t = torch.as_tensor(imgs).detach()
    if t.dtype == torch.uint8:
        return t, None
    t = t.float()
    if t.numel() and float(t.amin()) >= 0.0 and float(t.amax()) <= 1.0:
        return t, None
    return minmax(t.cpu(), flat="zero"), None


def _displayable(maps: Tensor) -> Tensor:
    m = maps.detach().float().cpu()
    if m.numel() and (float(m.amin()) < 0.0 or float(m.amax()) > 1.0):
        return minmax(m, flat="zero")
    return m


def _esc(value: object) -> str:
    return html.escape(str(value))
