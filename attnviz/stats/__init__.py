"""Statistics for before/after comparisons: bootstrap weights, intervals, exact and seed-level tests.

Pure functions over numbers and tensors (no other part of attnviz is imported but
:mod:`attnviz.errors`), used by the streaming accumulators of
:mod:`attnviz.metrics.bootstrap` and by ablation tables:

* :func:`poisson_weights`: counter-based Poisson(1) weights keyed by (seed, image
  index, replicate), identical under any batching, process or device;
* :func:`percentile_interval` (expanded for small samples), :func:`bootstrap_pvalue`:
  interval and test from bootstrap replicates; :func:`basic_interval` /
  :func:`basic_pvalue` for biased estimators such as η²;
* :func:`mcnemar` (exact, paired accuracy) and :func:`holm` / :func:`holm_significance`
  (multiple comparisons: significant only after adjustment);
* :func:`t_interval`, :func:`seed_summary`, :func:`paired_seed_test`: across seeds,
  with no interval below 3 seeds.
"""

from .bootstrap import (
    basic_interval,
    basic_pvalue,
    bootstrap_pvalue,
    check_level,
    expanded_level,
    percentile_interval,
)
from .poisson import image_keys, poisson_weights, poisson_weights_for_keys
from .seeds import MIN_SEEDS, NO_INTERVAL, paired_seed_test, seed_summary, t_interval
from .significance import holm, holm_significance, mcnemar

__all__ = [
    "MIN_SEEDS",
    "NO_INTERVAL",
    "basic_interval",
    "basic_pvalue",
    "bootstrap_pvalue",
    "check_level",
    "expanded_level",
    "holm",
    "holm_significance",
    "image_keys",
    "mcnemar",
    "paired_seed_test",
    "percentile_interval",
    "poisson_weights",
    "poisson_weights_for_keys",
    "seed_summary",
    "t_interval",
]
