"""Seed-level statistics for ablations: mean ± t interval per setting, paired tests against a baseline.

With ``n`` training seeds of one setting the only honest interval is Student's ``t``
with ``n − 1`` degrees of freedom; with fewer than 3 seeds it is so wide (two seeds:
``t₀.₉₇₅,₁ = 12.7``) that we print none rather than a misleading ``±``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from ..errors import StatisticsError
from .bootstrap import check_level

__all__ = ["MIN_SEEDS", "NO_INTERVAL", "paired_seed_test", "seed_summary", "t_interval"]

#: Fewest seeds for which an interval (and a paired test) is reported.
MIN_SEEDS = 3
#: The note reported instead of an interval.
NO_INTERVAL = f"n < {MIN_SEEDS}: no interval"


def _values(owner: str, values: Sequence[float] | Mapping[Hashable, float]) -> list[float]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | Mapping):
        raise StatisticsError(
            f"{owner}: expected a sequence of numbers, got {type(values).__name__}"
        )
    if isinstance(values, Mapping):
        values = list(values.values())
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise StatisticsError(f"{owner}: expected numbers, got {list(values)!r}") from None
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of ``values``: ``x̄ ± t_{(1+level)/2, n−1} · s / √n``.

    ``s`` is the sample standard deviation (``n − 1`` divisor) and ``t`` the quantile of
    ``scipy.stats.t``. Needs at least 2 finite values (NaN values are dropped).

    >>> [round(v, 3) for v in t_interval([1.0, 2.0, 3.0])]
    [-0.484, 4.484]
    """
    from scipy.stats import t as student_t  # here: importing scipy.stats takes a second or two

    level = check_level(level)
    xs = [v for v in _values("t_interval", values) if math.isfinite(v)]
    if len(xs) < 2:
        raise StatisticsError(f"t_interval: needs at least 2 finite values, got {len(xs)}")
    mean = statistics.fmean(xs)
    half = (
        float(student_t.ppf((1 + level) / 2, len(xs) - 1))
        * statistics.stdev(xs)
        / math.sqrt(len(xs))
    )
    return mean - half, mean + half


def seed_summary(
    values: Sequence[float] | Mapping[Hashable, float], level: float = 0.95
) -> dict[str, Any]:
    """Mean, std, n and (from 3 seeds on) the t interval of one setting's per-seed results.

    Returns ``{"mean", "std", "n", "ci_low", "ci_high", "level", "note"}``: ``std`` is
    the sample std (``None`` below 2 seeds), ``ci_low`` / ``ci_high`` come from
    :func:`t_interval` and are ``None`` with fewer than 3 seeds, where ``note`` says
    ``"n < 3: no interval"`` (``""`` otherwise). Non-finite values (a failed seed) are
    dropped, and ``n`` counts the rest. ``values`` may be a ``{seed: value}`` mapping.

    >>> seed_summary([0.81, 0.83])["note"]
    'n < 3: no interval'
    """
    level = check_level(level)
    xs = [v for v in _values("seed_summary", values) if math.isfinite(v)]
    out: dict[str, Any] = {
        "mean": statistics.fmean(xs) if xs else math.nan,
        "std": statistics.stdev(xs) if len(xs) >= 2 else None,
        "n": len(xs),
        "ci_low": None,
        "ci_high": None,
        "level": level,
        "note": NO_INTERVAL if len(xs) < MIN_SEEDS else "",
    }
    if len(xs) >= MIN_SEEDS:
        out["ci_low"], out["ci_high"] = t_interval(xs, level)
    return out


def _pairs(
    values: Mapping[Hashable, float] | Sequence[float],
    baseline: Mapping[Hashable, float] | Sequence[float],
) -> tuple[list[float], list[float]]:
    owner = "paired_seed_test"
    if isinstance(values, Mapping) != isinstance(baseline, Mapping):
        raise StatisticsError(
            f"{owner}: pass both as {{seed: value}} mappings or both as sequences in seed order"
        )
    if isinstance(values, Mapping) and isinstance(baseline, Mapping):
        seeds = [s for s in values if s in baseline]
        a = _values(owner, [values[s] for s in seeds])
        b = _values(owner, [baseline[s] for s in seeds])
    else:
        a, b = _values(owner, values), _values(owner, baseline)
        if len(a) != len(b):
            raise StatisticsError(
                f"{owner}: {len(a)} values but {len(b)} baseline values; sequences pair by "
                "position (same seeds in the same order), or pass {seed: value} mappings"
            )
    keep = [i for i in range(len(a)) if math.isfinite(a[i]) and math.isfinite(b[i])]
    return [a[i] for i in keep], [b[i] for i in keep]


def paired_seed_test(
    values: Mapping[Hashable, float] | Sequence[float],
    baseline: Mapping[Hashable, float] | Sequence[float],
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired t-test of a setting against the baseline over the seeds both ran.

    Seeds pair by key (``{seed: value}`` mappings: only seeds present in both count) or
    by position (two sequences of equal length). Returns ``{"delta", "ci_low", "ci_high",
    "p", "n", "level", "method", "note"}``: ``delta`` = mean of the per-seed differences
    ``value − baseline``, the t interval of those differences and the two-sided
    ``scipy.stats.ttest_rel`` p-value. With fewer than 3 pairs there is no interval and
    no test (``None``; ``note`` = ``"n < 3: no interval"``). Differences that are all
    equal have no spread: the interval is that difference and ``p`` is 1 if it is 0,
    else 0 (the limit of the t statistic).

    >>> r = paired_seed_test({0: 0.80, 1: 0.82, 2: 0.81}, {0: 0.78, 1: 0.79, 2: 0.80})
    >>> round(r["delta"], 3), r["n"], round(r["p"], 3)
    (0.02, 3, 0.074)
    """
    level = check_level(level)
    a, b = _pairs(values, baseline)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    out: dict[str, Any] = {
        "delta": statistics.fmean(diffs) if diffs else math.nan,
        "ci_low": None,
        "ci_high": None,
        "p": None,
        "n": n,
        "level": level,
        "method": "paired t-test over seeds (scipy.stats.ttest_rel), t interval of differences",
        "note": NO_INTERVAL if n < MIN_SEEDS else "",
    }
    if n < MIN_SEEDS:
        return out
    if max(diffs) == min(diffs):
        out["ci_low"] = out["ci_high"] = diffs[0]
        out["p"] = 1.0 if diffs[0] == 0 else 0.0
        return out
    from scipy.stats import ttest_rel

    out["ci_low"], out["ci_high"] = t_interval(diffs, level)
    out["p"] = float(ttest_rel(a, b).pvalue)
    return out
