"""Exact tests for paired outcomes and the multiple-comparison adjustment."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar, overload

from ..errors import StatisticsError

__all__ = ["holm", "holm_significance", "mcnemar"]

K = TypeVar("K", bound=Hashable)


def _count(name: str, value: object) -> int:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not v.is_integer() or v < 0:
        raise StatisticsError(f"mcnemar: `{name}` must be a count ≥ 0, got {value!r}")
    return int(v)


def mcnemar(n01: int, n10: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pair counts.

    ``n01``: images only the variant gets right; ``n10``: only the baseline gets right.
    Under "same accuracy" each discordant image is equally likely to fall on either side,
    so ``p = binomtest(n01, n01 + n10, 0.5).pvalue`` (``scipy.stats.binomtest``, two-sided:
    the sum of the probabilities of all outcomes no more likely than the one seen). With
    no discordant image there is no evidence either way: ``p = 1``.

    >>> round(mcnemar(10, 2), 4)
    0.0386
    """
    from scipy.stats import binomtest  # here: importing scipy.stats takes a second or two

    a, b = _count("n01", n01), _count("n10", n10)
    if a + b == 0:
        return 1.0
    return float(binomtest(a, a + b, 0.5).pvalue)


@overload
def holm(pvalues: Mapping[K, float]) -> dict[K, float]: ...
@overload
def holm(pvalues: Sequence[float]) -> list[float]: ...
def holm(pvalues: Mapping[K, float] | Sequence[float]) -> dict[K, float] | list[float]:
    """Holm's step-down adjusted p-values (family-wise error control over all the tests given).

    Sort the ``m`` p-values ascending, ``p₍₁₎ ≤ … ≤ p₍ₘ₎``; the adjusted value of the
    ``i``-th is ``max_{j ≤ i} min(1, (m − j + 1) p₍ⱼ₎)``. A test is significant at ``α``
    when its adjusted p is ≤ ``α``; Holm controls the family-wise error at ``α`` under any
    dependence and rejects everything Bonferroni does. NaN p-values (a metric that could
    not be tested) stay NaN and do not count in ``m``. Takes a sequence (returns a list in
    the same order) or a mapping such as ``{(variant, metric): p}`` (returns a dict).

    >>> holm([0.5, 0.125, 0.25])
    [0.5, 0.375, 0.5]
    """
    if isinstance(pvalues, Mapping):
        keys = list(pvalues)
        adjusted = holm([pvalues[k] for k in keys])
        return dict(zip(keys, adjusted, strict=True))
    ps = [float(p) for p in pvalues]
    for p in ps:
        if not math.isnan(p) and not 0.0 <= p <= 1.0:
            raise StatisticsError(f"holm: p-values must lie in [0, 1] (or be NaN), got {p}")
    order = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    m = len(order)
    out = [math.nan] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def holm_significance(
    results: Mapping[K, Mapping[str, Any]], alpha: float = 0.05
) -> dict[K, dict[str, Any]]:
    """Holm-adjust the ``"p"`` of every result of one comparison and mark what is significant.

    ``results``: ``{(variant, metric): result}``, each result a dict with a ``"p"`` (as
    the accumulators of :mod:`attnviz.metrics.bootstrap` return; ``None`` or NaN: not a
    test). Returns copies with ``"p_holm"`` (the adjusted p, :func:`holm` over all the
    tests given) and ``"significant"`` (``p_holm ≤ alpha``; ``False`` for non-tests), so
    that "significant" always means "after adjustment over the whole comparison".

    >>> out = holm_significance({("se", "iou"): {"p": 0.01}, ("se", "acc"): {"p": 0.04}})
    >>> out["se", "iou"]["significant"], out["se", "acc"]["significant"]
    (True, True)
    """
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"holm_significance: `alpha` must be in (0, 1), got {alpha}")
    raw = {k: (math.nan if r.get("p") is None else float(r["p"])) for k, r in results.items()}
    adjusted = holm(raw)
    out: dict[K, dict[str, Any]] = {}
    for k, r in results.items():
        p = adjusted[k]
        out[k] = {**r, "p_holm": p, "significant": bool(not math.isnan(p) and p <= alpha)}
    return out
