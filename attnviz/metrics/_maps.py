"""Per-image operations on saliency maps: min-max scaling, resizing, ranking."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "average_ranks",
    "descending_order",
    "minmax_per_image",
    "normalised_entropy",
    "resize_maps",
]


def minmax_per_image(maps: Tensor) -> Tensor:
    """Scale each map ``[B, ...]`` to [0, 1] by its own min and max.

    A constant map carries no ranking information; it becomes all ones (uniform
    saliency), so it scores like a uniform map in every metric rather than dividing by 0.
    """
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    span = hi - lo
    const = span <= 0
    out = (flat - lo) / torch.where(const, torch.ones_like(span), span)
    out = torch.where(const, torch.ones_like(out), out)
    return out.reshape(maps.shape)


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[B, h, w]`` maps to ``size`` (``align_corners=False``); no-op if equal."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


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


def normalised_entropy(mass: Tensor) -> Tensor:
    """``−Σ p log p / log(N)`` for each row of a non-negative ``[B, N]``; NaN for all-zero rows."""
    mass = mass.to(torch.float64)
    p = mass / mass.sum(dim=1, keepdim=True)
    ent = -torch.special.xlogy(p, p).sum(dim=1)
    return ent / math.log(mass.shape[1])
