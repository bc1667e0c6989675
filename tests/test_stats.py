"""attnviz.stats: counter-based Poisson weights, bootstrap intervals, McNemar, Holm, seed-level t."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

import attnviz.stats as S
from attnviz.errors import AttnvizError, StatisticsError
from attnviz.stats import bootstrap as stats_bootstrap
from attnviz.stats import (
    bootstrap_pvalue,
    holm,
    mcnemar,
    paired_seed_test,
    percentile_interval,
    poisson,
    poisson_weights,
    seed_summary,
    seeds,
    significance,
    t_interval,
)

# -- Poisson weights -------------------------------------------------------------------------


def _triple32(x: int) -> int:
    """The mixer in plain Python integers, as a reference for the int64 tensor version."""
    m = 0xFFFFFFFF
    x ^= x >> 17
    x = (x * 0xED5AD4BB) & m
    x ^= x >> 11
    x = (x * 0xAC4C1B51) & m
    x ^= x >> 15
    x = (x * 0x31848BAB) & m
    return x ^ (x >> 14)


def test_the_int64_mixer_is_exact_32_bit_arithmetic() -> None:
    xs = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xDEADBEEF, 123456789]
    got = poisson._mix32(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [_triple32(x) for x in xs]
    # a bijection: 2^16 distinct inputs give 2^16 distinct outputs
    out = poisson._mix32(torch.arange(2**16, dtype=torch.int64) * 65537)
    assert out.unique().numel() == 2**16 and int(out.max()) < 2**32 and int(out.min()) >= 0


def test_weights_depend_only_on_seed_and_image_index() -> None:
    idx = torch.arange(100)
    whole = poisson_weights(7, idx, 300)
    assert whole.shape == (100, 300) and whole.dtype == torch.float64
    parts = torch.cat([poisson_weights(7, idx[s : s + 13], 300) for s in range(0, 100, 13)])
    assert torch.equal(whole, parts)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(poisson_weights(7, idx[perm], 300), whole[perm])
    assert torch.equal(poisson_weights(7, [3, 5], 300), whole[[3, 5]])
    assert torch.equal(poisson_weights(7, idx, 50), whole[:, :50])  # B is a prefix
    assert not torch.equal(poisson_weights(8, idx, 300), whole)
    big = torch.tensor([2**40 + 3, 2**40 + 4, 3])  # both halves of the index are used
    w_big = poisson_weights(7, big, 300)
    assert not torch.equal(w_big[0], whole[3]) and torch.equal(w_big[2], whole[3])
    assert torch.equal(poisson_weights(-1, idx, 10), poisson_weights(2**64 - 1, idx, 10))


def test_weights_are_poisson_one_with_mean_and_variance_one() -> None:
    w = poisson_weights(1, torch.arange(2000), 1000)  # 2e6 draws
    n = w.numel()
    assert abs(float(w.mean()) - 1) < 4 / math.sqrt(n)  # sd of the mean: 1/sqrt(n)
    assert abs(float(w.var()) - 1) < 4 * math.sqrt(3 / n)  # var of s² ≈ (μ4 − 1)/n, μ4 = 4
    counts = torch.bincount(w.long().flatten(), minlength=8)[:8].double()
    counts[7] += n - counts.sum()  # 7 or more
    pmf = sps.poisson(1).pmf(np.arange(7))
    expected = np.append(pmf, 1 - pmf.sum()) * n
    assert sps.chisquare(counts.numpy(), expected).pvalue > 1e-3
    assert int(w.max()) <= 12 and int(w.min()) == 0


def test_weights_are_independent_across_images_and_replicates() -> None:
    w = poisson_weights(2, torch.arange(400), 400)
    for mat in (w, w.T):  # rows: images (over replicates); columns: replicates (over images)
        r = torch.corrcoef(mat)
        off = r[~torch.eye(r.shape[0], dtype=torch.bool)]
        # independent columns: r ≈ N(0, 1/400); mean r² ≈ 1/400, max |r| < 5.5 sd
        assert abs(float(off.mean())) < 0.002
        assert 0.8 / 400 < float(off.square().mean()) < 1.2 / 400
        assert float(off.abs().max()) < 5.5 / math.sqrt(400)
    # neighbours (image i vs i+1, replicate b vs b+1) are not special
    lag_img = torch.corrcoef(torch.stack([w[:-1].flatten(), w[1:].flatten()]))[0, 1]
    lag_rep = torch.corrcoef(torch.stack([w[:, :-1].flatten(), w[:, 1:].flatten()]))[0, 1]
    assert abs(float(lag_img)) < 4 / math.sqrt(w.numel())
    assert abs(float(lag_rep)) < 4 / math.sqrt(w.numel())


def test_weights_reject_bad_input_with_one_line_errors() -> None:
    with pytest.raises(StatisticsError, match="replicates"):
        poisson_weights(0, torch.arange(3), 0)
    with pytest.raises(StatisticsError, match="integers"):
        poisson_weights(0, torch.rand(3), 10)
    with pytest.raises(StatisticsError, match="≥ 0"):
        poisson_weights(0, torch.tensor([-1]), 10)
    with pytest.raises(StatisticsError, match="seed must be an int"):
        poisson_weights(0.5, torch.arange(3), 10)  # type: ignore[arg-type]
    assert issubclass(StatisticsError, AttnvizError)


# -- bootstrap intervals and p-values ---------------------------------------------------------


def test_percentile_interval_matches_numpy_and_drops_empty_replicates() -> None:
    r = torch.randn(999, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lo, hi = percentile_interval(r, 0.9)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(r.numpy(), [5, 95])), abs=1e-12)
    with_nan = torch.cat([r, torch.full((5,), torch.nan)])
    assert percentile_interval(with_nan, 0.9) == (lo, hi)
    assert all(math.isnan(v) for v in percentile_interval(torch.full((3,), torch.nan)))
    with pytest.raises(StatisticsError, match="level"):
        percentile_interval(r, 95)


def test_bootstrap_pvalue_by_hand() -> None:
    assert bootstrap_pvalue(torch.tensor([-1.0, 1.0, 2.0, 3.0])) == 0.5  # L = 1/4
    assert bootstrap_pvalue(torch.tensor([0.0, 1.0, 2.0, 3.0])) == 0.25  # tie counts half
    assert bootstrap_pvalue(torch.zeros(10)) == 1.0  # identical models
    assert bootstrap_pvalue(torch.ones(10)) == 0.1  # no replicate at 0: p is only below 1/B
    assert bootstrap_pvalue(torch.tensor([1.0, 2.0, 3.0]), null=2.0) == 1.0
    assert math.isnan(bootstrap_pvalue(torch.tensor([math.nan])))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    shift=st.floats(-1.0, 1.0),
    alpha=st.sampled_from([0.05, 0.1]),
    n=st.sampled_from([None, 5, 64, 1000]),
)
def test_bootstrap_p_below_alpha_exactly_when_the_interval_excludes_zero(
    seed: int, shift: float, alpha: float, n: int | None
) -> None:
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(2000, generator=g, dtype=torch.float64) * 0.5 + shift
    lo, hi = percentile_interval(r, 1 - alpha, n)
    p = bootstrap_pvalue(r, 0.0, n)
    # equivalent up to the interpolation between two neighbouring order statistics
    if abs(p - alpha) > 0.01:
        assert (p < alpha) == (lo > 0 or hi < 0)
    if n is not None:
        assert p >= bootstrap_pvalue(r) - 1e-12  # the expanded interval is wider


def test_expanded_interval_has_the_width_of_a_t_interval() -> None:
    # Hesterberg: percentile level 2Φ(√(n/(n−1)) t_{0.975, n−1}) − 1
    for n in (2, 10, 64, 1000):
        z = math.sqrt(n / (n - 1)) * sps.t.ppf(0.975, n - 1)
        assert S.expanded_level(0.95, n) == pytest.approx(2 * sps.norm.cdf(z) - 1, rel=1e-12)
    assert 0.95 < S.expanded_level(0.95, 1000) < S.expanded_level(0.95, 64) < 0.96
    assert math.isnan(S.expanded_level(0.95, 1))
    r = torch.randn(4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lo, hi = percentile_interval(r, 0.95, 10)
    ref = np.quantile(
        r.numpy(), [(1 - S.expanded_level(0.95, 10)) / 2, (1 + S.expanded_level(0.95, 10)) / 2]
    )
    assert (lo, hi) == pytest.approx(tuple(ref), abs=1e-12)
    assert all(math.isnan(v) for v in percentile_interval(r, 0.95, 1))
    assert math.isnan(bootstrap_pvalue(r, 0.0, 1))
    # p inverts the expanded interval: p at the interval's own bound is 1 − level
    p0 = bootstrap_pvalue(r + 2.0)  # plain percentile p
    z = sps.norm.ppf(1 - p0 / 2)
    assert bootstrap_pvalue(r + 2.0, 0.0, 10) == pytest.approx(
        2 * (1 - sps.t.cdf(z * math.sqrt(9 / 10), 9)), rel=1e-9
    )


def test_basic_interval_reflects_the_replicates_about_the_plug_in_value() -> None:
    r = torch.randn(4000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = r * 0.1 + 0.5  # replicates centred 0.3 above an estimate of 0.2 (a biased estimator)
    lo, hi = S.basic_interval(r, 0.2)
    q_lo, q_hi = percentile_interval(r)
    assert (lo, hi) == pytest.approx((0.4 - q_hi, 0.4 - q_lo), abs=1e-12)
    # with a plug-in value θ(F̂) (e.g. η² for the adjusted ε²): θ̂ + θ(F̂) − q
    assert S.basic_interval(r, 0.2, plug_in=0.45) == pytest.approx(
        (0.65 - q_hi, 0.65 - q_lo), abs=1e-12
    )
    assert S.basic_interval(r, 0.2, 0.95, 64) == pytest.approx(
        tuple(0.4 - v for v in reversed(percentile_interval(r, 0.95, 64))), abs=1e-12
    )
    assert all(math.isnan(v) for v in S.basic_interval(r, math.nan))
    for null in (0.0, 0.05, -0.1):
        lo, hi = S.basic_interval(r, 0.2, 0.95)
        p = S.basic_pvalue(r, 0.2, null)
        assert (p < 0.05) == (null < lo or null > hi)
    assert S.basic_pvalue(torch.zeros(10), 0.0) == 1.0


# -- McNemar and Holm --------------------------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs() -> None:
    assert mcnemar(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)  # by hand
    assert mcnemar(3, 0) == pytest.approx(0.25)
    assert mcnemar(5, 5) == 1.0
    assert mcnemar(0, 0) == 1.0  # no discordant pair: no evidence
    for a, b in [(17, 5), (40, 61), (1, 9)]:
        assert mcnemar(a, b) == sps.binomtest(a, a + b, 0.5).pvalue
        assert mcnemar(a, b) == mcnemar(b, a)
    with pytest.raises(StatisticsError, match="count"):
        mcnemar(-1, 3)
    with pytest.raises(StatisticsError, match="count"):
        mcnemar(2.5, 3)  # type: ignore[arg-type]


def test_holm_by_hand_with_nan_and_mappings() -> None:
    # sorted: 0.01·4 = 0.04, 0.02·3 = 0.06, 0.03·2 = 0.06 (max), 0.5·1 = 0.5
    got = holm([0.03, 0.5, 0.01, 0.02])
    assert got == pytest.approx([0.06, 0.5, 0.04, 0.06])
    got = holm([0.01, math.nan, 0.04])  # NaN is not a test: m = 2
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    assert holm({("se", "iou"): 0.01, ("eca", "iou"): 0.9}) == {
        ("se", "iou"): pytest.approx(0.02),
        ("eca", "iou"): pytest.approx(0.9),
    }
    assert holm([]) == []
    with pytest.raises(StatisticsError, match=r"\[0, 1\]"):
        holm([1.5])


def test_significance_is_decided_after_holm_adjustment() -> None:
    results = {
        ("se", "iou"): {"p": 0.01, "delta": 0.1},
        ("se", "accuracy"): {"p": 0.03},
        ("eca", "iou"): {"p": 0.04},
        ("eca", "cka"): {"p": None},  # not a test
    }
    out = S.holm_significance(results)
    # m = 3: 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → 0.06
    assert out["se", "iou"]["p_holm"] == pytest.approx(0.03) and out["se", "iou"]["significant"]
    assert not out["se", "accuracy"]["significant"] and not out["eca", "iou"]["significant"]
    assert out["eca", "cka"]["significant"] is False and math.isnan(out["eca", "cka"]["p_holm"])
    assert out["se", "iou"]["delta"] == 0.1 and "p_holm" not in results["se", "iou"]


@settings(max_examples=50, deadline=None)
@given(ps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_holm_matches_its_step_down_definition(ps: list[float]) -> None:
    adjusted = holm(ps)
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    for rank, i in enumerate(order):
        expected = max(min(1.0, (m - j) * ps[order[j]]) for j in range(rank + 1))
        assert adjusted[i] == pytest.approx(expected)
        assert ps[i] <= adjusted[i] + 1e-15 <= 1.0 + 1e-15
    # rejections at α: Holm rejects what Bonferroni does, and is a step-down procedure
    for alpha in (0.01, 0.05):
        bonf = {i for i in range(m) if ps[i] * m <= alpha}
        assert bonf <= {i for i in range(m) if adjusted[i] <= alpha}


# -- seeds ---------------------------------------------------------------------------------------


def test_t_interval_matches_scipy_and_hand_values() -> None:
    lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) from a table, · s / √n with s = 1
    assert (lo, hi) == pytest.approx((2 - half, 2 + half), rel=1e-6)
    xs = [0.71, 0.74, 0.69, 0.73, 0.75]
    ref = sps.t.interval(0.9, len(xs) - 1, loc=np.mean(xs), scale=sps.sem(xs))
    assert t_interval(xs, 0.9) == pytest.approx(ref, rel=1e-12)
    assert t_interval([*xs, math.nan], 0.9) == pytest.approx(ref, rel=1e-12)
    with pytest.raises(StatisticsError, match="at least 2"):
        t_interval([1.0])


def test_seed_summary_gives_no_interval_below_three_seeds() -> None:
    two = seed_summary([0.81, 0.83])
    assert two["n"] == 2 and two["ci_low"] is None and two["ci_high"] is None
    assert two["note"] == "n < 3: no interval" == S.NO_INTERVAL
    assert two["mean"] == pytest.approx(0.82) and two["std"] == pytest.approx(
        np.std([0.81, 0.83], ddof=1)
    )
    one = seed_summary({0: 0.8, 1: math.nan})  # a failed seed is dropped
    assert one["n"] == 1 and one["std"] is None and one["note"] == S.NO_INTERVAL
    three = seed_summary([0.81, 0.83, 0.80])
    assert three["note"] == ""
    assert (three["ci_low"], three["ci_high"]) == pytest.approx(t_interval([0.81, 0.83, 0.80]))
    assert seed_summary([])["n"] == 0


def test_paired_seed_test_matches_ttest_rel_and_pairs_by_seed() -> None:
    a = {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.85}
    b = {0: 0.78, 1: 0.79, 2: 0.80, 4: 0.70}  # seed 3 and 4 have no partner
    r = paired_seed_test(a, b)
    ref = sps.ttest_rel([0.80, 0.82, 0.81], [0.78, 0.79, 0.80])
    assert r["n"] == 3 and r["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert r["delta"] == pytest.approx(0.02)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(t_interval([0.02, 0.03, 0.01]))
    seq = paired_seed_test([0.80, 0.82, 0.81], [0.78, 0.79, 0.80])
    assert seq["p"] == pytest.approx(r["p"])
    few = paired_seed_test([0.8, 0.9], [0.7, 0.7])
    assert few["p"] is None and few["ci_low"] is None and few["note"] == S.NO_INTERVAL
    same = paired_seed_test([0.8, 0.9, 0.7], [0.8, 0.9, 0.7])
    assert same["p"] == 1.0 and same["ci_low"] == same["ci_high"] == 0.0
    with pytest.raises(StatisticsError, match="pair by"):
        paired_seed_test([0.8, 0.9, 0.7], [0.8, 0.9])
    with pytest.raises(StatisticsError, match="both as"):
        paired_seed_test({0: 0.8}, [0.8])


@pytest.mark.parametrize("module", [poisson, stats_bootstrap, significance, seeds])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0


def test_stats_imports_nothing_else_from_attnviz() -> None:
    import ast
    from pathlib import Path

    for path in Path(S.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert node.module == "errors", (path.name, node.module)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not node.module.startswith("attnviz"), (path.name, node.module)
