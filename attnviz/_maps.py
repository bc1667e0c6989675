"""Per-image kernels on saliency maps, one of each: min-max scaling, resizing, ranking, entropy.

Used by the CAM engine, the metrics and the pictures alike. :func:`minmax` takes the
flat-map rule as an explicit argument because the two users need different answers: a
CAM with no variation carries no localisation (``flat="zero"``), while a metric ranking
pixels by saliency scores a constant map like a uniform one (``flat="one"``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import AttnvizError

__all__ = [
    "FLAT_ULPS",
    "average_ranks",
    "descending_order",
    "minmax",
    "normalized_entropy",
    "resize_maps",
]


#: A span within this many ulps of the map's magnitude is rounding noise (``tol_ulps``).
FLAT_ULPS = 16


def minmax(maps: Tensor, *, flat: str, tol_ulps: int = FLAT_ULPS) -> Tensor:
    """Scale each map of ``[B, ...]`` to [0, 1] by its own min and max.

    A map is flat when ``max - min <= tol_ulps * eps * max(|min|, |max|)`` (rounding
    noise of its magnitude, e.g. a constant map upsampled from 1x1; ``tol_ulps=0``:
    only an exactly constant map). A flat map becomes all zeros (``flat="zero"``: it
    carries no localisation, and dividing by its span would turn rounding noise into
    a full-range map) or all ones (``flat="one"``: uniform saliency).

    >>> minmax(torch.tensor([[1.0, 3.0], [2.0, 2.0]]), flat="zero").tolist()
    [[0.0, 1.0], [0.0, 0.0]]
    """
    if flat not in ("zero", "one"):
        raise AttnvizError(f"flat must be 'zero' or 'one', got {flat!r}")
    rows = maps.reshape(maps.shape[0], -1)
    lo = rows.amin(dim=1, keepdim=True)
    hi = rows.amax(dim=1, keepdim=True)
    span = hi - lo
    tol = tol_ulps * torch.finfo(maps.dtype).eps * torch.maximum(lo.abs(), hi.abs())
    varies = span > tol
    out = (rows - lo) / torch.where(varies, span, torch.ones_like(span))
    fill = torch.zeros_like(out) if flat == "zero" else torch.ones_like(out)
    return torch.where(varies, out, fill).reshape(maps.shape)


def resize_maps(maps: Tensor | np.ndarray, size: tuple[int, int]) -> Tensor | np.ndarray:
    """Bilinear resize of ``[B, h, w]`` maps to ``size`` (``align_corners=False``, no antialias).

    The same resampling as the references (``cv2.resize`` ``INTER_LINEAR`` in
    pytorch-grad-cam, ``F.interpolate(..., "bilinear")`` in torchcam and captum).
    A numpy array comes back as a float64 numpy array; the input itself when it
    already has that size.
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if isinstance(maps, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float64))
        return resize_maps(t, size).numpy()
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[
        :, 0
    ]


def descending_order(values: Tensor) -> Tensor:
    """Indices sorting each row of ``[B, N]`` by value, descending; ties keep index order.

    Uses a stable sort of the negated values, so equal values are taken in row-major
    pixel order (the torchcam convention for deletion / insertion).
    """
    return torch.sort(-values, dim=1, stable=True).indices


def average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of each row of ``[B, N]``, ties given the mean of their ranks.

    Equal to ``scipy.stats.rankdata(row, method="average")`` for every row, computed
    batched in torch: sort, find the first and last position of each run of equal
    values, and give every member of the run ``(first + last) / 2 + 1``.
    """
    b, n = values.shape
    sorted_vals, order = torch.sort(values, dim=1, stable=True)
    pos = torch.arange(n, device=values.device).expand(b, n)
    starts = torch.ones_like(sorted_vals, dtype=torch.bool)
    starts[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
    last_rev = torch.where(ends, pos, torch.full_like(pos, n)).flip(1)
    last = torch.cummin(last_rev, dim=1).values.flip(1)
    avg = (first + last).to(torch.float64) / 2 + 1
    ranks = torch.empty_like(avg)
    ranks.scatter_(1, order, avg)
    return ranks


def normalized_entropy(mass: Tensor) -> Tensor:
    """``−Σ p log p / log(N)`` for each row of a non-negative ``[B, N]``; NaN for all-zero rows."""
    mass = mass.to(torch.float64)
    p = mass / mass.sum(dim=1, keepdim=True)
    ent = -torch.special.xlogy(p, p).sum(dim=1)
    return ent / math.log(mass.shape[1])
