"""Intervals and p-values from bootstrap replicates of a statistic.

The interval is the percentile interval of the replicates. Given ``n``, the number of
resampled units (images, or batches), it is Hesterberg's *expanded* percentile interval
(T. Hesterberg, "What teachers should know about the bootstrap", The American
Statistician, 2015): the percentile interval at the wider level ``2Φ(√(n/(n−1)) ·
t_{(1+level)/2, n−1}) − 1``. The plain percentile interval is too narrow for small
samples, like a z-interval with the ``n`` divisor; the expansion gives it the width of
a t interval (0.956 for 64 images, 0.9504 for 1000, 0.983 for 10 batches). In simulation
(paired skewed values, B = 1000) it raises the coverage of a nominal 95% interval from
0.938 to 0.944 at 64 images and from 0.926 to 0.938 at 30.

The percentile interval assumes the bootstrap distribution is centred on the estimate.
For a biased estimator it is not: the replicates of η² (between-class over total
variance), computed on resamples with repeated images, sit above the estimate, which
itself sits above the true value. :func:`basic_interval` (Davison & Hinkley's basic
bootstrap interval) uses the replicates' spread around the statistic's value in the
bootstrap world, ``θ* − θ(F̂)``, as the estimator's error, so the shift cancels: in
simulation (1000 images, 10 classes, 16 channels, B = 500) it covers the population η²
in 0.93 of the runs where the percentile interval covers it in 0.03. ``θ(F̂)`` is the
plug-in value: the estimate itself for η², but η² (not ε²) for the bias-adjusted ε²,
whose replicates estimate the η² of the sample (covers 0.93 and 0.965 at 300 images,
against 0.36 when reflected about ε² itself).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import StatisticsError

__all__ = [
    "basic_interval",
    "basic_pvalue",
    "bootstrap_pvalue",
    "check_level",
    "expanded_level",
    "percentile_interval",
]


def check_level(level: float) -> float:
    """``level`` as a float in (0, 1), or a :class:`StatisticsError` naming it."""
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < level < 1.0:
        raise StatisticsError(f"confidence `level` must be in (0, 1), e.g. 0.95; got {level!r}")
    return float(level)


def _check_n(n: int | None) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not float(n).is_integer() or n < 0:
        raise StatisticsError(f"`n` (resampled units) must be an int ≥ 0, got {n!r}")
    return int(n)


def expanded_level(level: float, n: int) -> float:
    """The percentile level of Hesterberg's expanded interval: ``2Φ(√(n/(n−1)) t_{(1+level)/2, n−1}) − 1``.

    NaN for ``n < 2`` (no interval from fewer than two units).

    >>> round(expanded_level(0.95, 64), 4), round(expanded_level(0.95, 10), 4)
    (0.956, 0.9829)
    """
    from scipy.special import ndtr, stdtrit  # normal CDF, Student-t quantile

    level = check_level(level)
    n = _check_n(n)  # type: ignore[assignment]
    if n is None or n < 2:
        return math.nan
    z = math.sqrt(n / (n - 1)) * float(stdtrit(n - 1, (1 + level) / 2))
    return float(2 * ndtr(z) - 1)


def _finite(replicates: Tensor) -> Tensor:
    r = torch.as_tensor(replicates, dtype=torch.float64).flatten()
    return r[torch.isfinite(r)]


def percentile_interval(
    replicates: Tensor, level: float = 0.95, n: int | None = None
) -> tuple[float, float]:
    """The ``level`` percentile interval of bootstrap replicates ``[B]`` (expanded when ``n`` is given).

    The ``(1 − l)/2`` and ``(1 + l)/2`` quantiles, linearly interpolated between order
    statistics (numpy's default), with ``l = level``, or ``l =``
    :func:`expanded_level` ``(level, n)`` for ``n`` resampled units (``(nan, nan)`` when
    ``n < 2``). Non-finite replicates (a Poisson replicate that drew no unit: ``0/0``)
    are left out; with none left the interval is ``(nan, nan)``.
    """
    level = check_level(level)
    if _check_n(n) is not None:
        level = expanded_level(level, n)  # type: ignore[arg-type]
    r = _finite(replicates)
    if r.numel() == 0 or math.isnan(level):
        return math.nan, math.nan
    q = torch.tensor([(1.0 - level) / 2, (1.0 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(r, q.to(r.device)).tolist()
    return lo, hi


def bootstrap_pvalue(replicates: Tensor, null: float = 0.0, n: int | None = None) -> float:
    """Two-sided bootstrap p-value for "the statistic equals ``null``", by inverting the interval.

    With ``L = (#{θ*_b < null} + ½ #{θ*_b = null}) / B`` over the finite replicates, the
    percentile p-value is ``p₀ = min(1, 2 · min(L, 1 − L))``: the smallest ``α`` whose
    ``1 − α`` percentile interval excludes ``null``. With ``n`` resampled units the
    interval is the expanded one (:func:`percentile_interval`), and the p-value inverts
    that instead: ``p = 2 (1 − T_{n−1}(Φ⁻¹(1 − p₀/2) · √((n−1)/n)))``. Either way
    ``p < α`` exactly when :func:`percentile_interval` at level ``1 − α`` (same ``n``)
    leaves ``null`` out, up to the interpolation between two neighbouring replicates, so
    a table never shows a "significant" difference whose interval covers 0.

    Why this construction: it needs nothing but the replicates the streaming state already
    holds, is consistent with the reported interval by construction, and inherits its
    calibration. Ties count half on each side, so a statistic that equals ``null`` in
    every replicate (two identical models) gets ``p = 1``. Checked by simulation in the
    tests: 400 null comparisons of 64 images (B = 1000) are significant at ``α = 0.05``
    at a rate within 0.02-0.08, 3000 comparisons (continuous and 0/1 per-image values)
    within 0.035-0.065. The resolution is ``1/B``: when no replicate reaches ``null`` the
    data say only "``p₀`` is below ``1/B``", so ``p₀ = 1/B`` is returned (never 0, which
    would claim more than ``B`` replicates can show, and would survive any Holm factor).
    NaN when no replicate is finite or ``n < 2``.
    """
    r = _finite(replicates)
    n = _check_n(n)
    if r.numel() == 0 or (n is not None and n < 2):
        return math.nan
    below = float((r < null).sum()) + 0.5 * float((r == null).sum())
    lower = below / r.numel()
    p0 = min(1.0, max(2.0 * min(lower, 1.0 - lower), 1.0 / r.numel()))
    if n is None or p0 >= 1.0:
        return p0
    from scipy.special import ndtri, stdtr  # normal quantile, Student-t CDF

    z = float(ndtri(1.0 - p0 / 2.0)) if p0 > 0 else math.inf
    return float(2.0 * (1.0 - stdtr(n - 1, z * math.sqrt((n - 1) / n))))


def basic_interval(
    replicates: Tensor,
    point: float,
    level: float = 0.95,
    n: int | None = None,
    plug_in: float | None = None,
) -> tuple[float, float]:
    """The basic bootstrap interval ``[θ̂ − (q_hi − θ(F̂)), θ̂ − (q_lo − θ(F̂))]`` (expanded with ``n``).

    ``θ̂ = point``; ``q_lo``, ``q_hi``: the bounds of :func:`percentile_interval` (same
    ``level``, ``n``); ``θ(F̂) = plug_in``, the statistic's value on the sample seen as
    the population (default: ``point``, giving ``[2θ̂ − q_hi, 2θ̂ − q_lo]``). It is the
    percentile interval of the reflected replicates ``θ̂ + θ(F̂) − θ*_b``. Use it for
    estimators biased enough that their replicates do not straddle the estimate (η²).
    ``(nan, nan)`` for a non-finite point.

    >>> basic_interval(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), 2.0, 0.5)  # replicates above 2
    (0.0, 2.0)
    """
    if not math.isfinite(point):
        return math.nan, math.nan
    return percentile_interval(_reflect(replicates, point, plug_in), level, n)


def basic_pvalue(
    replicates: Tensor,
    point: float,
    null: float = 0.0,
    n: int | None = None,
    plug_in: float | None = None,
) -> float:
    """Two-sided p-value for ``= null`` that inverts :func:`basic_interval` (same ``n``, ``plug_in``).

    :func:`bootstrap_pvalue` of the reflected replicates; NaN for a non-finite point.
    """
    if not math.isfinite(point):
        return math.nan
    return bootstrap_pvalue(_reflect(replicates, point, plug_in), null, n)


def _reflect(replicates: Tensor, point: float, plug_in: float | None) -> Tensor:
    centre = point if plug_in is None else plug_in
    return point + centre - torch.as_tensor(replicates, dtype=torch.float64)
