"""Where the attention looks, on the images of the CAM panels: spatial gates and query maps.

After the streaming pass, the few images kept for the CAM panels go once more through
every model that has spatial gates (CBAM, BAM, triplet: a gate over positions) or
self-attention (non-local, BAT, bottleneck, halo: a block that can say, for a query
position, which positions it attends to). The result is plain tensors for the figures:

* ``spatial[model] = (gate name, maps [N, H, W])``: the deepest spatial gate;
* ``queries[model] = (block path, maps [N, Q, h, w], points: per image Q (y, x) in [0, 1])``:
  the deepest self-attention block's "where does this position look" maps for a few
  query points: the baseline CAM's peak, the image centre and a corner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import eval_mode
from ..blocks import Gate, attention_info
from ..errors import AttnvizError
from ..intermediates import with_intermediates
from ..surgery.spec import spec_of

__all__ = ["attention_pictures"]


def _spatial_gates(model: nn.Module) -> list[str]:
    """Gates that may span positions: none when every inserted block is a channel gate."""
    spec = spec_of(model)
    if spec is not None and spec.insertions:
        infos = [
            attention_info(ins.attention) if ins.attention else None for ins in spec.insertions
        ]
        if all(i is not None and i.kind == "channel" for i in infos):
            return []  # SE, ECA, ...: [B, C, 1, 1]; no forward needed to know it
    return [p for p, m in model.named_modules() if isinstance(m, Gate)]


def _query_blocks(model: nn.Module) -> list[tuple[str, nn.Module, tuple[str, ...]]]:
    """``(path, block, captured value names)`` of every block that has ``query_maps``."""
    spec = spec_of(model)
    out = []
    for ins in spec.insertions if spec else []:
        info = attention_info(ins.attention) if ins.attention else None
        if info is None or info.kind != "self-attention":
            continue
        for s in ins.sites:
            site = model.get_submodule(s.path)
            for rel, m in site.named_modules():
                if callable(getattr(m, "query_maps", None)):
                    path = f"{s.path}.{rel}" if rel else s.path
                    out.append((path, m, tuple(f"{path}.{v}" for v in info.values)))
                    break
    return out


def _feat_size(attention: Tensor, image_hw: Sequence[int]) -> tuple[int, int]:
    """The key grid of a global attention ``[..., N]`` with the images' aspect ratio."""
    n = attention.shape[-1]
    h = max(1, round(math.sqrt(n * image_hw[0] / image_hw[1])))
    return h, max(1, n // h)


def attention_pictures(
    models: Mapping[str, nn.Module],
    images: Tensor,
    baseline_cams: Tensor | None,
    device: torch.device,
) -> dict[str, dict[str, Any]]:
    """The spatial gates and query maps of ``images`` for every model that has them."""
    spatial: dict[str, Any] = {}
    queries: dict[str, Any] = {}
    if images.numel() == 0:
        return {"spatial": spatial, "queries": queries}
    x = images.to(device)
    peak = _peaks(baseline_cams, images.shape[-2:]) if baseline_cams is not None else None
    for name, model in models.items():
        gates = _spatial_gates(model)
        blocks = _query_blocks(model)
        if not gates and not blocks:
            continue
        wanted = list(
            dict.fromkeys([*gates, *(v for p, _, vs in blocks for v in (*vs, p))])
        )  # the blocks' own outputs too: their map size is the query grid (stride-1 blocks)
        with eval_mode(model), torch.no_grad():
            try:
                _, values = with_intermediates(model, wanted)(x)
            except (AttnvizError, KeyError):
                continue
        # gates over positions: [B, 1, H, W] (CBAM), or [B, C, H, W] (BAM: shown as the
        # channel mean); directional gates ([B, C, H, 1], coordinate attention) are left out
        spatial_gates = [
            g for g in gates if values.get(g) is not None and values[g].ndim == 4
            and values[g].shape[2] > 1 and values[g].shape[3] > 1
        ]  # fmt: skip
        if spatial_gates:
            g = spatial_gates[-1]
            spatial[name] = (g, values[g].float().mean(1).cpu())
        for path, block, names in reversed(blocks):
            captured = [values.get(v) for v in names]
            if any(c is None for c in captured):
                continue
            attention = captured[0] if len(captured) == 1 else tuple(captured)
            out = values.get(path)
            if isinstance(out, Tensor) and out.ndim == 4:
                hw = tuple(out.shape[-2:])
            else:
                hw = _feat_size(captured[0], images.shape[-2:])
            points = _points(peak, len(images))
            try:
                maps = []
                for i in range(len(images)):  # each image its own query points, one call each
                    grid = [
                        (round(py * (hw[0] - 1)), round(px * (hw[1] - 1))) for py, px in points[i]
                    ]
                    maps.append(block.query_maps(attention, grid, hw)[i])
                maps = torch.stack(maps)
            except (AttnvizError, RuntimeError, IndexError, ValueError):
                continue
            queries[name] = (path, maps.float().cpu(), points)
            break
    return {"spatial": spatial, "queries": queries}


def _peaks(cams: Tensor, hw: Sequence[int]) -> list[tuple[float, float]]:
    """Each CAM's maximum as (y, x) in [0, 1]."""
    flat = cams.flatten(1).argmax(1)
    h, w = cams.shape[-2:]
    return [(float(i // w) / max(h - 1, 1), float(i % w) / max(w - 1, 1)) for i in flat.tolist()]


def _points(peaks: list[tuple[float, float]] | None, n: int) -> list[list[tuple[float, float]]]:
    """Per image: the CAM peak (when known), the centre and a corner, as (y, x) in [0, 1]."""
    out = []
    for i in range(n):
        pts = [(0.5, 0.5), (0.1, 0.1)]
        if peaks is not None:
            pts.insert(0, peaks[i])
        out.append(pts)
    return out
