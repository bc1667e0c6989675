"""Scaling and resizing CAM maps: per-image min-max, one shared scale, bilinear resize.

Every function takes maps ``[B, h, w]`` and works on whole batches at once. A map
with no variation (all-zero gradients, a dead layer, a 1x1 layer) comes out as
zeros, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .result import CamResult

__all__ = ["NORMALIZE_CHOICES", "minmax_per_image", "normalize_shared", "resize_maps", "scale_by"]

#: Valid values of ``compute_cam(normalize=...)``.
NORMALIZE_CHOICES = ("per_image", "none", "shared")

_FLAT_ULPS = 16  # a span within this many ulps of the map's magnitude is rounding noise

T = TypeVar("T", Tensor, "CamResult")


def minmax_per_image(maps: Tensor) -> Tensor:
    """Scale each map of ``[B, ...]`` to [0, 1] by its own min and max.

    A flat map (max - min within rounding noise of its magnitude, e.g. a constant
    map upsampled from 1x1) becomes all zeros: it carries no localisation, and
    dividing by its span would turn rounding noise into a full-range map.
    """
    flat = maps.flatten(1)
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    span = hi - lo
    tol = _FLAT_ULPS * torch.finfo(maps.dtype).eps * torch.maximum(lo.abs(), hi.abs())
    varies = span > tol
    out = (flat - lo) / torch.where(varies, span, torch.ones_like(span))
    return torch.where(varies, out, torch.zeros_like(out)).view_as(maps)


def scale_by(maps: Tensor, scale: Tensor | float) -> Tensor:
    """``maps / scale``, or zeros when the scale is 0 (every map flat at zero)."""
    scale = torch.as_tensor(scale, dtype=maps.dtype, device=maps.device)
    positive = scale > 0
    return torch.where(positive, maps / torch.where(positive, scale, 1), 0)


def shared_scale(maps: Sequence[Tensor]) -> Tensor:
    """The largest absolute value over every map of every tensor (one scale for all)."""
    device = maps[0].device
    return torch.stack([m.detach().abs().amax().to(device, torch.float64) for m in maps]).amax()


def normalize_shared(cams: Sequence[T]) -> list[T]:
    """Put maps of several models (or runs) on one scale: divide all by one common maximum.

    Per-image min-max (``normalize="per_image"``) erases magnitude: a model whose
    CAM is ten times weaker looks the same. To compare models, compute their maps
    with ``normalize="none"`` and pass them here together: every map is divided
    by the largest absolute value found in any of them, so non-negative maps end
    in [0, 1] (signed maps, ``relu=False``, in [-1, 1]) and stay comparable in
    magnitude.

    ``cams``: tensors ``[B, H, W]`` (any shapes), returned as a list of scaled
    tensors; or :class:`CamResult` objects computed with ``normalize="none"``,
    returned as new results where each (method, layer) map and each fused map
    shares its scale across the results.

    >>> import torch
    >>> a, b = normalize_shared([torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[4.0, 0.0]]])])
    >>> a.tolist(), b.tolist()
    ([[[0.25, 0.5]]], [[[1.0, 0.0]]])
    """
    cams = list(cams)
    if not cams:
        return []
    if all(isinstance(c, Tensor) for c in cams):
        scale = shared_scale(cams)
        return [scale_by(c, scale) for c in cams]
    from .result import CamResult

    if not all(isinstance(c, CamResult) for c in cams):
        kinds = sorted({type(c).__name__ for c in cams})
        raise TypeError(f"cams must be all tensors or all CamResult objects, got {kinds}")
    return _shared_results(cams)


def _shared_results(results: list[CamResult]) -> list[CamResult]:
    bad = [i for i, r in enumerate(results) if r.normalize == "per_image"]
    if bad:
        raise ValueError(
            f"results {bad} were computed with normalize='per_image', which erased their "
            "magnitude; compute them with normalize='none' to put them on a shared scale"
        )
    keys = set(results[0].all_maps)
    for i, r in enumerate(results[1:], 1):
        if set(r.all_maps) != keys:
            raise ValueError(
                f"result {i} holds (method, layer) maps {sorted(r.all_maps)}, result 0 holds "
                f"{sorted(keys)}; compute every result with the same methods and layers"
            )
    maps = [dict(r.all_maps) for r in results]
    fused = [dict(r.fused_maps) for r in results]
    for key in keys:
        scale = shared_scale([m[key] for m in maps])
        for m in maps:
            m[key] = scale_by(m[key], scale)
    for method in results[0].fused_maps:
        scale = shared_scale([f[method] for f in fused])
        for f in fused:
            f[method] = scale_by(f[method], scale)
    return [
        r.replace(all_maps=m, fused_maps=f, normalize="shared")
        for r, m, f in zip(results, maps, fused)
    ]


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[B, h, w]`` to ``size`` (``align_corners=False``, no antialias).

    The same resampling as the references (``cv2.resize`` ``INTER_LINEAR`` in
    pytorch-grad-cam, ``F.interpolate(..., "bilinear")`` in torchcam and captum).
    Returns ``maps`` itself when it already has that size.
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[
        :, 0
    ]


def apply_normalize(maps: Tensor, normalize: str) -> Tensor:
    """One of :data:`NORMALIZE_CHOICES` on a batch of maps (``shared``: one scale over the batch)."""
    if normalize == "per_image":
        return minmax_per_image(maps)
    if normalize == "shared":
        return scale_by(maps, maps.abs().amax() if maps.numel() else 0.0)
    return maps
