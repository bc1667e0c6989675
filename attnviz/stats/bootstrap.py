"""Intervals and p-values from bootstrap replicates of a statistic."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import StatisticsError

__all__ = ["bootstrap_pvalue", "check_level", "percentile_interval"]


def check_level(level: float) -> float:
    """``level`` as a float in (0, 1), or a :class:`StatisticsError` naming it."""
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < level < 1.0:
        raise StatisticsError(f"confidence `level` must be in (0, 1), e.g. 0.95; got {level!r}")
    return float(level)


def _finite(replicates: Tensor) -> Tensor:
    r = torch.as_tensor(replicates, dtype=torch.float64).flatten()
    return r[torch.isfinite(r)]


def percentile_interval(replicates: Tensor, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` percentile interval of bootstrap replicates ``[B]``.

    The ``(1 − level)/2`` and ``(1 + level)/2`` quantiles, linearly interpolated between
    order statistics (numpy's default). Non-finite replicates (a Poisson replicate that
    drew no image: ``0/0``) are left out; with none left the interval is ``(nan, nan)``.
    """
    level = check_level(level)
    r = _finite(replicates)
    if r.numel() == 0:
        return math.nan, math.nan
    q = torch.tensor([(1.0 - level) / 2, (1.0 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(r, q.to(r.device)).tolist()
    return lo, hi


def bootstrap_pvalue(replicates: Tensor, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value for "the statistic equals ``null``", by inverting the percentile interval.

    ``L = (#{θ*_b < null} + ½ #{θ*_b = null}) / B`` over the finite replicates and
    ``p = min(1, 2 · min(L, 1 − L))``: the smallest ``α`` whose ``1 − α`` percentile
    interval excludes ``null``. So ``p < α`` exactly when :func:`percentile_interval` at
    level ``1 − α`` leaves ``null`` out (up to the quantile interpolation between two
    neighbouring replicates), and a table never shows a "significant" difference whose
    interval covers 0. Ties count half on each side, so a statistic that is exactly
    ``null`` in every replicate (two identical models) gets ``p = 1``.

    Why this construction: it needs nothing but the replicates the streaming state
    already holds, and its level is that of the percentile interval, whose coverage error
    for a mean of ``n`` independent values is ``O(1/n)``; the simulations in the tests
    (400 null comparisons of 100 images, 1000 replicates) reject at 0.02-0.08 for
    ``α = 0.05``. The resolution is ``1/B``: ``p = 0`` means ``p < 1/B``. NaN when no
    replicate is finite.
    """
    r = _finite(replicates)
    if r.numel() == 0:
        return math.nan
    below = float((r < null).sum()) + 0.5 * float((r == null).sum())
    lower = below / r.numel()
    return min(1.0, 2.0 * min(lower, 1.0 - lower))
