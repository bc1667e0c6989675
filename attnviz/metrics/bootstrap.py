"""Before/after comparisons with uncertainty: paired differences, accuracy and means with 95% CIs.

Per-image metrics (the values the per-image accumulators' ``update`` returns) are fed
with each image's index in the dataset; each accumulator keeps a fixed-size streaming
Poisson bootstrap (:mod:`attnviz.metrics._resampling`): ``B`` weighted sums and ``B``
weight sums next to the exact sums. The state has ``2B + 7`` numbers whatever the
number of images, results do not depend on the batch split, and :meth:`sync` reduces
it over DDP ranks like every accumulator.

* :class:`PairedDifference`: mean of ``variant − baseline`` per image, CI, bootstrap p.
* :class:`PairedAccuracy`: accuracy difference, McNemar exact p, bootstrap CI.
* :class:`BootstrapMean`: mean of one per-image value (e.g. CAM agreement, already a
  comparison of two models), CI, optional p against a null value.
* :func:`bootstrap_difference`: ``variant − baseline`` of the replicated layer metrics
  (:class:`~attnviz.metrics.FeatureStats` ... built with ``replicates=``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..errors import AttnvizError, StatisticsError
from ..stats import mcnemar
from ._base import Accumulator, ratio
from ._checks import check_tensor
from ._resampling import KEYS_STATE, Resampling, check_index

__all__ = ["BootstrapMean", "PairedAccuracy", "PairedDifference", "bootstrap_difference"]


def _values(owner: str, arg: str, x: object) -> Tensor:
    t = check_tensor(owner, arg, x, (1,), "[B] (one value per image)")
    if t.is_complex():
        raise TypeError(f"{owner}: `{arg}` must hold real numbers, got dtype {t.dtype}")
    return t.detach().to(torch.float64)


class _PerImageBootstrap(Accumulator):
    """Exact and ``B`` Poisson-weighted sums of one per-image value; NaN / inf = missing."""

    def __init__(self, replicates: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        super().__init__()
        self.resampling = Resampling(type(self).__name__, replicates, seed, level)
        for name in ("n", "n_missing", "sum", "sum_sq"):
            self.add_state(name)
        self.add_state("rep_sum", (replicates,))
        self.add_state("rep_weight", (replicates,))
        self.add_state(KEYS_STATE, dtype=torch.int64)

    def settings(self) -> dict[str, Any]:
        return self.resampling.settings()

    def _add(self, values: Tensor, index: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Add the finite ``values`` ``[B]`` of images ``index``; returns the states and the mask."""
        ok = torch.isfinite(values)
        v, idx = values[ok], index[ok]
        st = self._running(values.device)
        st["n"].add_(v.numel())
        st["n_missing"].add_((~ok).sum())
        st["sum"].add_(v.sum())
        st["sum_sq"].add_(v.square().sum())
        if v.numel():
            w, keys = self.resampling.weights(idx)
            st["rep_sum"].add_(v @ w)
            st["rep_weight"].add_(w.sum(0))
            st[KEYS_STATE].add_(keys)
        return st, ok

    #: The ``compute()`` key of the bootstrapped mean.
    _headline: str = "mean"

    def _replicates(self) -> Tensor:
        s = self._states
        return s["rep_sum"] / s["rep_weight"]

    def replicate_values(self) -> dict[str, Tensor]:
        """``{headline: [B]}``: the bootstrap replicates of the mean (NaN: a replicate drew no image)."""
        return {self._headline: self._replicates()}

    def resampled_units(self) -> int:
        """How many images the replicates resample (those with a value)."""
        return int(self._states["n"])

    def _mean_std(self) -> tuple[float, float, int]:
        s = self._states
        n = int(s["n"])
        mean = ratio(s["sum"], n)
        var = float(s["sum_sq"]) / n - mean * mean if n else math.nan
        return mean, math.sqrt(max(var, 0.0)) if n else math.nan, n


class PairedDifference(_PerImageBootstrap):
    """Mean paired difference ``variant − baseline`` of a per-image metric, with a bootstrap CI.

    ``update(variant, baseline, index)``: the metric's value per image for the variant
    and for the baseline ``[B]`` (the same images) and the images' indices in the
    dataset ``[B]``, which key their Poisson(1) weights. An image whose value is NaN (or
    infinite) in either model is missing for this metric (no mask, a constant map) and
    is left out. ``compute()``:

    * ``delta`` = mean of ``d_i = variant_i − baseline_i`` over the ``n`` paired images;
      ``variant`` and ``baseline``: the two means over the same images; ``std`` of ``d``;
    * ``ci_low`` / ``ci_high``: the ``level`` expanded percentile interval (for ``n``
      images, :func:`attnviz.stats.percentile_interval`) of the ``B`` replicates
      ``Σ w_ib d_i / Σ w_ib`` (each image's weights are shared by both models: the
      interval is for the paired difference);
    * ``p``: two-sided bootstrap p-value for ``delta = 0`` (percentile-interval inversion,
      :func:`attnviz.stats.bootstrap_pvalue`): ``p < 1 − level`` exactly when the interval
      excludes 0. Adjust all the tests of a comparison together with
      :func:`attnviz.stats.holm_significance`;
    * ``n``, ``n_missing``, ``replicates``, ``seed``, ``level``, ``method``.

    Two identical models give ``delta = 0``, the interval ``[0, 0]`` and ``p = 1``.

    >>> import torch
    >>> acc = PairedDifference(replicates=200, seed=0)
    >>> v = torch.linspace(0.5, 1.0, 64)
    >>> acc.update(v, v.flip(0) - 0.1, torch.arange(64))
    >>> out = acc.compute()
    >>> round(out["delta"], 3), out["ci_low"] < 0.1 < out["ci_high"], out["p"] < 0.05
    (0.1, True, True)
    """

    definition = (
        "delta = mean_i (variant_i − baseline_i) over images with both values; 95% CI = "
        "expanded percentile interval of B Poisson-bootstrap replicates Σ w_ib d_i / Σ w_ib, "
        "w_ib ~ Poisson(1) keyed by (seed, image index), shared by both models; p by "
        "inverting that interval."
    )

    _headline = "delta"

    def __init__(self, replicates: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        super().__init__(replicates, seed, level)
        self.add_state("sum_variant")
        self.add_state("sum_baseline")

    def update(self, variant: Tensor, baseline: Tensor, index: Tensor) -> None:
        """Add one batch: per-image values ``[B]`` of both models and the image indices ``[B]``."""
        owner = f"{type(self).__name__}.update"
        v = _values(owner, "variant", variant)
        b = _values(owner, "baseline", baseline).to(v.device)
        if v.shape != b.shape:
            raise AttnvizError(
                f"{owner}: `variant` has shape {tuple(v.shape)} but `baseline` has "
                f"{tuple(b.shape)}; pass both models' values for the same images"
            )
        idx = check_index(owner, index, v.shape[0], v.device)
        st, ok = self._add(v - b, idx)
        st["sum_variant"].add_(v[ok].sum())
        st["sum_baseline"].add_(b[ok].sum())

    def compute(self) -> dict[str, Any]:
        delta, std, n = self._mean_std()
        s = self._states
        return {
            "delta": delta,
            **self.resampling.summary(delta, self._replicates(), 0.0, n),
            "variant": ratio(s["sum_variant"], n),
            "baseline": ratio(s["sum_baseline"], n),
            "std": std,
            "n": n,
            "n_missing": int(s["n_missing"]),
            **self.resampling.meta(),
        }


class PairedAccuracy(PairedDifference):
    """Accuracy of a variant minus the baseline's on the same images: McNemar exact p, bootstrap CI.

    ``update(variant_correct, baseline_correct, index)``: whether each model got each
    image right (bool or 0/1 ``[B]``, e.g. ``ClassificationStats.update(...)["correct"]``)
    and the images' indices. ``compute()`` is :class:`PairedDifference`'s on the 0/1
    values (``delta`` = accuracy difference, its bootstrap ``ci_low`` / ``ci_high``,
    ``variant`` / ``baseline`` accuracies) with ``p`` from McNemar's exact test on the
    discordant images (:func:`attnviz.stats.mcnemar`), ``n_variant_only`` (variant right,
    baseline wrong) and ``n_baseline_only``, and ``p_bootstrap`` for reference.
    """

    definition = (
        "delta = accuracy(variant) − accuracy(baseline) on the same images; p = exact "
        "McNemar (binomtest of the discordant counts, 0.5); 95% CI = Poisson-bootstrap "
        "expanded percentile interval of the paired 0/1 differences."
    )

    def __init__(self, replicates: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        super().__init__(replicates, seed, level)
        self.add_state("n_variant_only")
        self.add_state("n_baseline_only")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "test": "McNemar exact (scipy.stats.binomtest)"}

    def update(self, variant_correct: Tensor, baseline_correct: Tensor, index: Tensor) -> None:
        """Add one batch: per-image correctness ``[B]`` of both models and the image indices ``[B]``."""
        owner = "PairedAccuracy.update"
        v = _values(owner, "variant_correct", variant_correct)
        b = _values(owner, "baseline_correct", baseline_correct).to(v.device)
        for arg, t in (("variant_correct", v), ("baseline_correct", b)):
            if not bool(((t == 0) | (t == 1)).all()):
                raise AttnvizError(f"{owner}: `{arg}` must be bool or 0/1 per image")
        super().update(v, b, index)
        st = self._states
        st["n_variant_only"].add_(((v == 1) & (b == 0)).sum())
        st["n_baseline_only"].add_(((v == 0) & (b == 1)).sum())

    def compute(self) -> dict[str, Any]:
        out = super().compute()
        n01, n10 = int(self._states["n_variant_only"]), int(self._states["n_baseline_only"])
        out["p_bootstrap"] = out["p"]
        out["p"] = mcnemar(n01, n10) if out["n"] else math.nan
        out["n_variant_only"], out["n_baseline_only"] = n01, n10
        out["test"] = "mcnemar exact"
        return out


class BootstrapMean(_PerImageBootstrap):
    """Mean of a per-image value with a bootstrap CI (and a p-value when a null value is given).

    For values that already compare two models per image, such as CAM agreement
    (``CamAgreement.update(...)["pearson"]``). ``update(values, index)``; NaN / inf values
    are missing. ``compute()``: ``mean``, ``ci_low`` / ``ci_high`` (expanded percentile interval of
    ``Σ w_ib x_i / Σ w_ib``), ``p`` for ``mean = null`` (NaN without ``null``), ``null``,
    ``std``, ``n``, ``n_missing``, ``replicates``, ``seed``, ``level``, ``method``.
    """

    definition = (
        "mean = mean_i x_i over images with a value; 95% CI = expanded percentile interval of B "
        "Poisson-bootstrap replicates Σ w_ib x_i / Σ w_ib, w_ib ~ Poisson(1) keyed by "
        "(seed, image index)."
    )

    def __init__(
        self,
        replicates: int = 1000,
        seed: int = 0,
        level: float = 0.95,
        null: float | None = None,
    ) -> None:
        super().__init__(replicates, seed, level)
        self.null = None if null is None else float(null)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "null": self.null}

    def update(self, values: Tensor, index: Tensor) -> None:
        """Add one batch of per-image values ``[B]`` and the image indices ``[B]``."""
        owner = "BootstrapMean.update"
        x = _values(owner, "values", values)
        self._add(x, check_index(owner, index, x.shape[0], x.device))

    def compute(self) -> dict[str, Any]:
        mean, std, n = self._mean_std()
        return {
            "mean": mean,
            **self.resampling.summary(mean, self._replicates(), self.null, n),
            "null": self.null,
            "std": std,
            "n": n,
            "n_missing": int(self._states["n_missing"]),
            **self.resampling.meta(),
        }


def bootstrap_difference(variant: Accumulator, baseline: Accumulator) -> dict[str, dict[str, Any]]:
    """``variant − baseline`` of every bootstrapped headline value of two layer accumulators.

    Both must be the same class with the same settings (``replicates``, ``seed``...) and
    must have seen the same images (or, for batch-level weights, the same batches):
    checked by their ``resample_keys`` fingerprints. Replicate ``b`` of the difference is
    replicate ``b`` of the variant minus replicate ``b`` of the baseline, both computed
    with the same weights, so the interval is for the paired difference (expanded
    percentile, or basic for the values the accumulator lists in ``basic_intervals``).
    Returns ``{name: {"delta", "ci_low", "ci_high", "p", "variant", "baseline",
    "replicates", "seed", "level", "method", "interval"}}`` for each name of
    ``variant.replicate_values()``; ``p`` tests ``delta = 0``.

    >>> import torch
    >>> from attnviz.metrics import FeatureStats
    >>> a, b = FeatureStats(replicates=100), FeatureStats(replicates=100)
    >>> x = torch.rand(8, 3, 4, 4)
    >>> a.update(x + 1, index=torch.arange(8)); b.update(x, index=torch.arange(8))
    >>> d = bootstrap_difference(a, b)["mean"]
    >>> round(d["delta"], 6), round(d["ci_low"], 6), round(d["ci_high"], 6)
    (1.0, 1.0, 1.0)
    """
    owner = "bootstrap_difference"
    if type(variant) is not type(baseline):
        raise StatisticsError(
            f"{owner}: got a {type(variant).__name__} and a {type(baseline).__name__}; "
            "compare two accumulators of the same kind"
        )
    if getattr(variant, "resampling", None) is None:
        raise StatisticsError(
            f"{owner}: {type(variant).__name__} keeps no bootstrap replicates "
            "(build it with replicates=...)"
        )
    if variant.settings() != baseline.settings():
        raise StatisticsError(
            f"{owner}: settings differ ({variant.settings()} vs {baseline.settings()}); use "
            "the same replicates and seed for the variant and the baseline"
        )
    point_v, point_b = variant.compute(), baseline.compute()  # refuse accumulators never updated
    keys_v = variant.states.get(KEYS_STATE)
    keys_b = baseline.states.get(KEYS_STATE)
    if keys_v is None or keys_b is None or int(keys_v) != int(keys_b):
        raise StatisticsError(
            f"{owner}: the two {type(variant).__name__} accumulators saw different images "
            "(or batches); pair only accumulators fed the same data with the same indices"
        )
    reps_v = variant.replicate_values()  # type: ignore[attr-defined]
    reps_b = baseline.replicate_values()  # type: ignore[attr-defined]
    res: Resampling = variant.resampling  # type: ignore[attr-defined]
    n = variant.resampled_units()  # type: ignore[attr-defined]
    basic: dict[str, str] = getattr(variant, "basic_intervals", {})
    out: dict[str, dict[str, Any]] = {}
    for name, rv in reps_v.items():
        delta = float(point_v[name]) - float(point_b[name])
        reps = rv - reps_b[name]
        plug_in = None
        if name in basic:
            plug_in = float(point_v[basic[name]]) - float(point_b[basic[name]])
        lo, hi = res.interval(reps, n, delta, plug_in)
        finite = math.isfinite(delta)
        out[name] = {
            "delta": delta,
            "ci_low": lo if finite else math.nan,
            "ci_high": hi if finite else math.nan,
            "p": res.pvalue(reps, n, delta, plug_in),
            "variant": float(point_v[name]),
            "baseline": float(point_b[name]),
            **res.meta(),
            "interval": "percentile" if plug_in is None else "basic",
        }
    return out
