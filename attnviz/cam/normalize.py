"""Scaling CAM maps: per-image min-max (:func:`attnviz._maps.minmax`), one shared scale.

Every function takes maps ``[B, h, w]`` and works on whole batches at once. A map
with no variation (all-zero gradients, a dead layer, a 1x1 layer) comes out as
zeros, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import Tensor

from .._maps import minmax
from ..errors import AttnvizError

if TYPE_CHECKING:
    from .result import CamResult

__all__ = ["NORMALIZE_CHOICES", "apply_normalize", "normalize_shared", "scale_by", "shared_scale"]

#: Valid values of ``compute_cam(normalize=...)``.
NORMALIZE_CHOICES = ("per_image", "none", "shared")

T = TypeVar("T", Tensor, "CamResult")


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
        raise AttnvizError(
            f"results {bad} were computed with normalize='per_image', which erased their "
            "magnitude; compute them with normalize='none' to put them on a shared scale"
        )
    keys = set(results[0].all_maps)
    for i, r in enumerate(results[1:], 1):
        if set(r.all_maps) != keys:
            raise AttnvizError(
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


def apply_normalize(maps: Tensor, normalize: str) -> Tensor:
    """One of :data:`NORMALIZE_CHOICES` on a batch of maps (``shared``: one scale over the batch)."""
    if normalize == "per_image":
        return minmax(maps, flat="zero")
    if normalize == "shared":
        return scale_by(maps, maps.abs().amax() if maps.numel() else 0.0)
    return maps
