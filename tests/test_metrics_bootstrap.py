"""Before/after accumulators with intervals: calibration, pairing, streaming, DDP, memory cap."""

from __future__ import annotations

import doctest
import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import attnviz.metrics as M
from attnviz.errors import StatisticsError
from attnviz.metrics import (
    BootstrapMean,
    PairedAccuracy,
    PairedDifference,
    _resampling,
    bootstrap_difference,
)
from attnviz.metrics import bootstrap as bootstrap_module
from attnviz.stats import holm, percentile_interval

# -- per-image values out of the per-image accumulators ---------------------------------------


def _model(x: torch.Tensor) -> torch.Tensor:
    z = 4 * x[:, :, 2:6, 2:6].mean(dim=(1, 2, 3)) - 2
    return torch.stack([torch.zeros_like(z), z], dim=1)


def test_update_returns_the_per_image_values_behind_each_mean() -> None:
    g = torch.Generator().manual_seed(0)
    n = 10
    logits, labels = torch.randn(n, 4, generator=g), torch.randint(0, 4, (n,), generator=g)
    cls = M.ClassificationStats()
    v = cls.update(logits, labels)
    assert v["correct"].dtype == torch.bool and v["correct"].shape == (n,)
    assert float(v["correct"].double().mean()) == pytest.approx(cls.compute()["accuracy"])
    assert float(v["true_confidence"].mean()) == pytest.approx(
        cls.compute()["mean_true_confidence"]
    )

    cams, masks = torch.rand(n, 12, 12, generator=g), torch.rand(n, 12, 12, generator=g) > 0.7
    masks[3] = False  # nothing to point at: NaN for this image
    loc = M.CamLocalization()
    v = loc.update(cams, masks)
    out = loc.compute()
    for key in ("pointing_game", "energy_pointing_game", "iou"):
        assert v[key].shape == (n,) and math.isnan(float(v[key][3]))
        assert float(v[key].nanmean()) == pytest.approx(out[key])

    ref = torch.rand(n, 12, 12, generator=g)
    cams[5] = 1.0  # a constant map: no correlation
    agree = M.CamAgreement()
    v = agree.update(cams, ref)
    out = agree.compute()
    assert math.isnan(float(v["pearson"][5])) and math.isnan(float(v["spearman"][5]))
    for key in ("pearson", "spearman", "top_iou"):
        assert float(v[key].nanmean()) == pytest.approx(out[key])

    images = torch.rand(n, 1, 8, 8, generator=g)
    faith = M.FaithfulnessStats(steps=4)
    v = faith.update(_model, images, cams[:, :4, :4])
    for key in ("deletion_auc", "insertion_auc"):
        assert v[key].shape == (n,)
        assert float(v[key].mean()) == pytest.approx(faith.compute()[key])
    conf = M.ConfidenceStats()
    v = conf.update(_model, images, cams)
    assert 100 * float(v["drop"].mean()) == pytest.approx(conf.compute()["average_drop_pct"])
    assert 100 * float(v["increase"].mean()) == pytest.approx(
        conf.compute()["increase_in_confidence_pct"]
    )


class _Linear(torch.nn.Module):
    """Logits = W · flatten(x); its CAM: the input weighted by the true class's weights."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(4, 3, 8, 8, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.flatten(1).T

    def cam(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (x * self.weight[labels]).mean(1)


def _per_image(
    model: _Linear,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    accs: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """One model's per-image values for a batch, as compare would collect them."""
    with torch.no_grad():
        logits, cams = model(images), model.cam(images, labels)
    out = dict(accs["classification"].update(logits, labels))
    out.update(accs["localization"].update(cams, masks, labels))
    out["drop"] = accs["confidence"].update(model, images, cams, labels)["drop"]
    return out


def test_per_image_values_feed_the_paired_accumulators_end_to_end() -> None:
    g = torch.Generator().manual_seed(7)
    base = _Linear(0)
    metrics = ("true_confidence", "pointing_game", "energy_pointing_game", "iou", "drop")
    for variant, identical in ((base, True), (_Linear(1), False)):
        accs = {
            name: {
                "classification": M.ClassificationStats(top_k=2),
                "localization": M.CamLocalization(num_classes=4, tolerance=2),
                "confidence": M.ConfidenceStats(),
            }
            for name in ("base", "variant")
        }
        paired = {k: PairedDifference(replicates=500) for k in metrics}
        accuracy = PairedAccuracy(replicates=500)
        for s in range(0, 48, 16):
            images = torch.randn(16, 3, 8, 8, generator=g)
            labels = torch.randint(0, 4, (16,), generator=g)
            masks = torch.rand(16, 8, 8, generator=g) > 0.8
            masks[0] = False  # an image without a mask: NaN in both models
            index = torch.arange(s, s + 16)
            vb = _per_image(base, images, labels, masks, accs["base"])
            vv = _per_image(variant, images, labels, masks, accs["variant"])
            accuracy.update(vv["correct"], vb["correct"], index)
            for k in metrics:
                paired[k].update(vv[k], vb[k], index)
        # the paired means are the accumulators' own means, and so are their differences
        point = {
            name: {
                **{k: a["localization"].compute()[k] for k in metrics[1:4]},
                "true_confidence": a["classification"].compute()["mean_true_confidence"],
                "drop": a["confidence"].compute()["average_drop_pct"] / 100,
                "accuracy": a["classification"].compute()["accuracy"],
            }
            for name, a in accs.items()
        }
        results = {k: paired[k].compute() for k in metrics} | {"accuracy": accuracy.compute()}
        assert results["pointing_game"]["n"] == 45 and results["pointing_game"]["n_missing"] == 3
        for k, out in results.items():
            assert out["variant"] == pytest.approx(point["variant"][k], abs=1e-12), k
            assert out["delta"] == pytest.approx(
                point["variant"][k] - point["base"][k], abs=1e-12
            ), k
            if identical:
                assert (out["ci_low"], out["ci_high"], out["p"]) == (0.0, 0.0, 1.0), k
        if not identical:
            assert results["true_confidence"]["delta"] != 0.0


# -- identical models ----------------------------------------------------------------------------


def test_two_identical_models_give_intervals_covering_zero_and_nothing_significant() -> None:
    g = torch.Generator().manual_seed(1)
    n = 96
    acc = PairedAccuracy()
    diffs = {name: PairedDifference() for name in ("confidence", "pointing", "iou", "deletion")}
    feats_v, feats_b = M.FeatureStats(replicates=1000), M.FeatureStats(replicates=1000)
    cka = M.LinearCKA(replicates=1000)
    for s in range(0, n, 32):
        idx = torch.arange(s, s + 32)
        correct = torch.rand(32, generator=g) > 0.3
        acc.update(correct, correct, idx)
        for d in diffs.values():
            x = torch.rand(32, generator=g)
            x[::7] = math.nan  # some images without a value
            d.update(x, x.clone(), idx)
        f = torch.relu(torch.randn(32, 8, 4, 4, generator=g))
        feats_v.update(f, index=idx)
        feats_b.update(f.clone(), index=idx)
        cka.update(f, f.clone(), batch_key=s)
    results = [acc.compute(), *(d.compute() for d in diffs.values())]
    results += list(bootstrap_difference(feats_v, feats_b).values())
    for r in results:
        assert r["delta"] == 0.0 and r["ci_low"] == r["ci_high"] == 0.0
        assert r["p"] == 1.0
    assert all(p > 0.05 for p in holm([r["p"] for r in results]))
    c = cka.compute()
    assert c["cka"] == pytest.approx(1.0) and c["cka_ci_low"] == pytest.approx(1.0)
    assert acc.compute()["n_variant_only"] == acc.compute()["n_baseline_only"] == 0


# -- calibration by simulation --------------------------------------------------------------------


def _simulate(
    n_sims: int, n_images: int, delta: float, seed: int, discrete: bool = False
) -> tuple[float, float]:
    """Rate of p < 0.05 and coverage of the true ``delta`` over simulated paired comparisons.

    Per image: baseline values from a skewed distribution, variant = baseline + delta +
    skewed zero-mean noise (or, with ``discrete``, paired pointing-game hits), fed through
    a PairedDifference in uneven batches.
    """
    g = torch.Generator().manual_seed(seed)
    rejected = covered = 0
    for sim in range(n_sims):
        if discrete:
            base = (torch.rand(n_images, generator=g) < 0.6).double()
            flip = torch.rand(n_images, generator=g) < 0.3
            var = torch.where(flip, (torch.rand(n_images, generator=g) < 0.6).double(), base)
            true = 0.0
        else:
            base = -torch.log(torch.rand(n_images, generator=g, dtype=torch.float64))
            noise = -torch.log(torch.rand(n_images, generator=g, dtype=torch.float64)) - 1.0
            var = base + delta + 0.5 * noise
            true = delta
        acc = PairedDifference(replicates=1000, seed=sim)
        for s in range(0, n_images, 24):
            acc.update(var[s : s + 24], base[s : s + 24], torch.arange(s, min(s + 24, n_images)))
        out = acc.compute()
        rejected += out["p"] < 0.05
        covered += out["ci_low"] <= true <= out["ci_high"]
    return rejected / n_sims, covered / n_sims


def test_null_comparisons_are_significant_at_about_five_percent() -> None:
    rate, coverage = _simulate(400, 64, 0.0, seed=10)
    assert 0.02 <= rate <= 0.08
    assert 0.92 <= coverage <= 0.98


def test_intervals_cover_a_known_difference_about_95_percent_of_the_time() -> None:
    rate, coverage = _simulate(400, 64, 0.3, seed=11)
    assert 0.92 <= coverage <= 0.98
    assert rate > 0.5  # and the difference is usually found


@pytest.mark.slow
def test_calibration_holds_on_large_runs_and_discrete_metrics() -> None:
    for seed, kwargs in (
        (12, {"delta": 0.0}),
        (14, {"delta": 0.3}),
        (15, {"delta": 0.0, "discrete": True}),
    ):
        rate, coverage = _simulate(3000, 100, seed=seed, **kwargs)  # type: ignore[arg-type]
        assert 0.935 <= coverage <= 0.965, kwargs
        if kwargs["delta"] == 0.0:
            assert 0.035 <= rate <= 0.065, kwargs
    # McNemar's exact test keeps its level (it is conservative) on the accuracy difference
    g = torch.Generator().manual_seed(13)
    rejected = 0
    for sim in range(1000):
        truth = torch.rand(100, generator=g) < 0.7
        flip_v = torch.rand(100, generator=g) < 0.15
        flip_b = torch.rand(100, generator=g) < 0.15
        acc = PairedAccuracy(replicates=200, seed=sim)
        acc.update(truth ^ flip_v, truth ^ flip_b, torch.arange(100))
        rejected += acc.compute()["p"] < 0.05
    assert rejected / 1000 <= 0.065


# -- paired accuracy -----------------------------------------------------------------------------


def test_paired_accuracy_reports_mcnemar_on_the_discordant_images() -> None:
    from scipy import stats as sps  # not at the top: the DDP workers import this module

    v = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0], dtype=torch.bool)
    b = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    acc = PairedAccuracy(replicates=500)
    acc.update(v[:5], b[:5], torch.arange(5))
    acc.update(v[5:], b[5:], torch.arange(5, 12))
    out = acc.compute()
    assert (out["n_variant_only"], out["n_baseline_only"]) == (5, 1)
    assert out["p"] == pytest.approx(sps.binomtest(5, 6, 0.5).pvalue)
    assert out["p"] == pytest.approx(2 * 7 / 64)  # by hand: P(X ≤ 1) + P(X ≥ 5), X ~ Bin(6, ½)
    assert out["delta"] == pytest.approx(4 / 12)
    assert out["variant"] == pytest.approx(8 / 12) and out["baseline"] == pytest.approx(4 / 12)
    assert out["ci_low"] <= out["delta"] <= out["ci_high"]
    assert out["test"] == "mcnemar exact" and 0 <= out["p_bootstrap"] <= 1
    with pytest.raises(ValueError, match="bool or 0/1"):
        acc.update(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0]))


def test_results_record_the_bootstrap_settings() -> None:
    acc = BootstrapMean(replicates=300, seed=9, level=0.9, null=1.0)
    acc.update(torch.linspace(0.5, 0.9, 40), torch.arange(40))
    out = acc.compute()
    assert (out["replicates"], out["seed"], out["level"]) == (300, 9, 0.9)
    assert out["method"] == "poisson bootstrap, expanded percentile interval"
    assert out["mean"] == pytest.approx(0.7) and out["null"] == 1.0
    assert 1 / 300 <= out["p"] < 0.01  # every replicate below the null: p only below 1/B
    assert out["ci_low"] < 0.7 < out["ci_high"]
    assert acc.settings()["seed"] == 9 and json.dumps(acc.settings())
    no_null = BootstrapMean()
    no_null.update(torch.rand(4), torch.arange(4))
    assert math.isnan(no_null.compute()["p"]) and no_null.compute()["null"] is None


def test_missing_values_are_left_out_of_both_models() -> None:
    acc = PairedDifference(replicates=200)
    acc.update(
        torch.tensor([1.0, math.nan, 3.0, 4.0]),
        torch.tensor([0.0, 5.0, math.inf, 2.0]),
        [0, 1, 2, 3],
    )
    out = acc.compute()
    assert out["n"] == 2 and out["n_missing"] == 2
    assert out["delta"] == pytest.approx(1.5) and out["baseline"] == pytest.approx(1.0)
    empty = PairedDifference(replicates=200)
    empty.update(torch.tensor([math.nan]), torch.tensor([1.0]), [0])
    assert all(math.isnan(empty.compute()[k]) for k in ("delta", "ci_low", "ci_high", "p"))


def test_bad_input_names_the_argument() -> None:
    acc = PairedDifference(replicates=10)
    with pytest.raises(StatisticsError, match="`index` has shape"):
        acc.update(torch.rand(3), torch.rand(3), torch.arange(4))
    with pytest.raises(ValueError, match="`baseline` has"):
        acc.update(torch.rand(3), torch.rand(4), torch.arange(3))
    with pytest.raises(StatisticsError, match="`index` \\[B\\] is required"):
        M.FeatureStats(replicates=10).update(torch.rand(2, 3, 4, 4))
    with pytest.raises(StatisticsError, match="batch_key"):
        M.LinearCKA(replicates=10).update(torch.rand(4, 3), torch.rand(4, 3))
    with pytest.raises(StatisticsError, match="replicates"):
        PairedDifference(replicates=1)
    with pytest.raises(StatisticsError, match="level"):
        PairedDifference(level=1.5)
    assert not acc.updated  # a refused batch leaves no state behind


# -- layer metrics with intervals ------------------------------------------------------------------


def _unit_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every weight 1: each replicate must then equal the point estimate."""

    def ones(
        self: _resampling.Resampling, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.ones(index.shape[0], self.replicates, dtype=torch.float64, device=index.device)
        return w, index.sum()

    monkeypatch.setattr(_resampling.Resampling, "weights", ones)


@pytest.mark.parametrize("cap", [None, 500])
def test_layer_replicates_use_the_same_formulas_as_the_point_values(
    monkeypatch: pytest.MonkeyPatch, cap: int | None
) -> None:
    _unit_weights(monkeypatch)
    g = torch.Generator().manual_seed(3)
    kw = {} if cap is None else {"max_state_bytes": cap}
    gates = M.GateStats(num_classes=3, replicates=4, **kw)
    feats = M.FeatureStats(replicates=4)
    cka = M.LinearCKA(replicates=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(3):
            idx = torch.arange(8) + 8 * i
            gates.update(
                torch.rand(8, 5, 1, 1, generator=g), torch.randint(0, 3, (8,), generator=g), idx
            )
            x = torch.relu(torch.randn(8, 4, 3, 3, generator=g))
            x[0] = 0
            feats.update(x, index=idx)
            cka.update(x, torch.rand(8, 6, generator=g), batch_key=i)
    for acc in (gates, feats, cka):
        out = acc.compute()
        for name, reps in acc.replicate_values().items():
            torch.testing.assert_close(
                reps, torch.full_like(reps, out[name]), rtol=1e-9, atol=1e-12
            )
            # percentile bounds: the point; basic bounds: θ̂ + θ(F̂) − θ* = the plug-in value
            plug_in = getattr(acc, "basic_intervals", {}).get(name, name)
            assert out[f"{name}_ci_low"] == pytest.approx(out[plug_in], rel=1e-9)
    names = set(gates.replicate_values())
    assert ("class_specificity" in names) == (cap is None)
    assert ("class_specificity_channel_mean" in names) == (cap is not None)


def _eta_coverage(sims: int, n: int, effect: float) -> dict[str, float]:
    """Coverage of the population η² by GateStats' intervals; gates = class mean + N(0, 1)."""
    k, c = 10, 8
    mu = torch.randn(k, c, generator=torch.Generator().manual_seed(0)) * effect
    between = mu.var(0, unbiased=False)
    truth = float((between / (between + 1)).mean())  # equal class probabilities
    g = torch.Generator().manual_seed(1)
    hits = {"class_specificity": 0, "class_specificity_adjusted": 0, "percentile": 0}
    for sim in range(sims):
        acc = M.GateStats(num_classes=k, replicates=300, seed=sim, value_range=(-5, 5))
        for s in range(0, n, 100):
            labels = torch.randint(0, k, (100,), generator=g)
            gates = (mu[labels] + torch.randn(100, c, generator=g))[:, :, None, None]
            acc.update(gates, labels, torch.arange(s, s + 100))
        out = acc.compute()
        for name in ("class_specificity", "class_specificity_adjusted"):
            hits[name] += out[f"{name}_ci_low"] <= truth <= out[f"{name}_ci_high"]
        lo, hi = percentile_interval(acc.replicate_values()["class_specificity"], 0.95, n)
        hits["percentile"] += lo <= truth <= hi
    return {name: h / sims for name, h in hits.items()}


def test_class_specificity_intervals_cover_the_population_value() -> None:
    coverage = _eta_coverage(100, 500, 0.3)
    assert coverage["class_specificity"] >= 0.88
    assert coverage["class_specificity_adjusted"] >= 0.88
    assert coverage["percentile"] < 0.5  # why η² needs the basic interval


def test_gate_intervals_fall_back_to_the_channel_mean_above_the_memory_cap() -> None:
    gates = M.GateStats(num_classes=1000, replicates=1000)  # η² over 2048 channels: 16 GB
    with pytest.warns(UserWarning, match="channel-mean gate"):
        gates.update(torch.rand(6, 2048, 1, 1), torch.arange(6), index=torch.arange(6))
    gates.update(torch.rand(6, 2048, 1, 1), torch.arange(6, 12), index=torch.arange(6, 12))
    size = sum(t.numel() * t.element_size() for t in gates.states.values())
    assert size <= 64 * 2**20 + 2 * 1000 * 2048 * 8  # replicated part under the cap
    rep_bytes = sum(
        t.numel() * t.element_size() for k, t in gates.states.items() if k.startswith("rep_")
    )
    assert rep_bytes <= 64 * 2**20
    out = gates.compute()
    assert "class_specificity_ci_low" not in out and "fallback" in out["class_specificity_interval"]
    assert "class_specificity_channel_mean_ci_low" in out
    with pytest.raises(StatisticsError, match="max_state_bytes"):
        M.GateStats(num_classes=10_000, replicates=1000)


def test_feature_difference_interval_covers_a_known_shift() -> None:
    g = torch.Generator().manual_seed(4)
    v, b = M.FeatureStats(replicates=1000, seed=3), M.FeatureStats(replicates=1000, seed=3)
    for s in range(0, 128, 32):
        x = torch.relu(torch.randn(32, 6, 4, 4, generator=g))
        idx = torch.arange(s, s + 32)
        b.update(x, index=idx)
        v.update(x * 1.5 + 0.05 * torch.rand(32, 6, 4, 4, generator=g), index=idx)
    d = bootstrap_difference(v, b)
    assert set(d) == {"mean", "std", "sparsity", "channel_gini", "spatial_entropy"}
    m = d["mean"]
    assert m["delta"] == pytest.approx(v.compute()["mean"] - b.compute()["mean"])
    assert 0 < m["ci_low"] < m["delta"] < m["ci_high"] and m["p"] < 0.01
    assert m["replicates"] == 1000 and m["seed"] == 3
    # the paired interval is narrower than the two single intervals side by side
    single = v.compute()["mean_ci_high"] - v.compute()["mean_ci_low"]
    assert m["ci_high"] - m["ci_low"] < single


def test_bootstrap_difference_refuses_unpaired_accumulators() -> None:
    a, b, c = (M.FeatureStats(replicates=50, seed=s) for s in (0, 0, 1))
    x = torch.rand(4, 2, 3, 3)
    a.update(x, index=torch.arange(4))
    b.update(x, index=torch.arange(4, 8))
    c.update(x, index=torch.arange(4))
    with pytest.raises(StatisticsError, match="different images"):
        bootstrap_difference(a, b)
    with pytest.raises(StatisticsError, match="settings differ"):
        bootstrap_difference(a, c)
    with pytest.raises(StatisticsError, match="no bootstrap replicates"):
        bootstrap_difference(M.CamAgreement(), M.CamAgreement())
    with pytest.raises(StatisticsError, match="no bootstrap replicates"):
        bootstrap_difference(M.FeatureStats(), M.FeatureStats())
    with pytest.raises(RuntimeError, match="before any update"):
        bootstrap_difference(M.FeatureStats(replicates=50), M.FeatureStats(replicates=50))


# -- streaming: bounded state, batch split --------------------------------------------------------


def _stream(batch: int, n: int = 64, seed: int = 5) -> dict[str, M.Accumulator]:
    """Every bootstrapped accumulator fed the same n images in batches of ``batch``."""
    g = torch.Generator().manual_seed(seed)
    data = {
        "v": torch.rand(n, generator=g),
        "b": torch.rand(n, generator=g),
        "cv": torch.rand(n, generator=g) > 0.4,
        "cb": torch.rand(n, generator=g) > 0.5,
        "feats": torch.relu(torch.randn(n, 4, 3, 3, generator=g)),
        "gates": torch.rand(n, 6, 1, 1, generator=g),
        "labels": torch.randint(0, 3, (n,), generator=g),
    }
    accs: dict[str, M.Accumulator] = {
        "diff": PairedDifference(),
        "acc": PairedAccuracy(),
        "mean": BootstrapMean(null=0.5),
        "features": M.FeatureStats(replicates=1000),
        "gates": M.GateStats(num_classes=3, replicates=1000),
    }
    for s in range(0, n, batch):
        idx = torch.arange(s, min(s + batch, n))
        sl = slice(s, s + batch)
        accs["diff"].update(data["v"][sl], data["b"][sl], idx)
        accs["acc"].update(data["cv"][sl], data["cb"][sl], idx)
        accs["mean"].update(data["v"][sl], idx)
        accs["features"].update(data["feats"][sl], index=idx)
        accs["gates"].update(data["gates"][sl], data["labels"][sl], idx)
    return accs


def _close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.allclose(a, b, rtol=rel, atol=1e-12, equal_nan=True)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    return a == b


def test_results_are_the_same_for_batches_of_8_and_32() -> None:
    small, large = _stream(8), _stream(32)
    for name in small:
        assert _close(small[name].compute(), large[name].compute()), name


def test_bootstrap_state_does_not_grow_with_the_number_of_images() -> None:
    sizes = [
        {k: sum(t.numel() for t in a.states.values()) for k, a in _stream(32, n).items()}
        for n in (128, 1024)
    ]
    assert sizes[0] == sizes[1]
    assert sizes[0]["diff"] == 2 * 1000 + 7  # B weighted sums + B weight sums + 7 exact sums


# -- two gloo processes ---------------------------------------------------------------------------


def _layer_and_paired(rank: int, world: int) -> dict[str, M.Accumulator]:
    """Batches i = rank, rank + world, ... of 6 batches of 8 images."""
    accs: dict[str, M.Accumulator] = {
        "diff": PairedDifference(),
        "acc": PairedAccuracy(),
        "mean": BootstrapMean(),
        "features": M.FeatureStats(replicates=1000),
        "gates": M.GateStats(num_classes=3, replicates=1000),
        "cka": M.LinearCKA(replicates=1000),
    }
    for i in range(rank, 6, world):
        g = torch.Generator().manual_seed(200 + i)
        idx = torch.arange(8 * i, 8 * i + 8)
        v, b = torch.rand(8, generator=g), torch.rand(8, generator=g)
        accs["diff"].update(v, b, idx)
        accs["acc"].update(v > 0.4, b > 0.5, idx)
        accs["mean"].update(v, idx)
        f = torch.relu(torch.randn(8, 4, 3, 3, generator=g))
        accs["features"].update(f, index=idx)
        accs["gates"].update(
            torch.rand(8, 5, 1, 1, generator=g), torch.randint(0, 3, (8,), generator=g), idx
        )
        accs["cka"].update(f, f[:, :2] + torch.rand(8, 2, 3, 3, generator=g), batch_key=8 * i)
    return accs


def _jsonable(out: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in out.items()}


def _results(accs: dict[str, M.Accumulator]) -> dict[str, Any]:
    return {name: _jsonable(acc.compute()) for name, acc in accs.items()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        accs = _layer_and_paired(rank, 2)
        for acc in accs.values():
            acc.sync()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(_results(accs)))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_results_of_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = json.loads(json.dumps(_results(_layer_and_paired(0, 1))))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name in expected:
            assert _close(got[name], expected[name]), (rank, name)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(bootstrap_module).failed == 0
