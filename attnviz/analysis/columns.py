"""The headline numbers of a comparison: their keys, headers, formats and paired tests.

One table of names shared by the comparison's summary, its text and HTML tables, the
ablation tables (:mod:`attnviz.study.ablate` reports the same keys per cell) and the
paired before/after tests. A leaf module: it imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FEATURE_METRICS",
    "LEGEND",
    "SUMMARY_COLUMNS",
    "TESTED",
    "Column",
    "Tested",
    "column",
]


@dataclass(frozen=True)
class Column:
    """A summary column: ``key`` in the summary rows, ``header`` shown, ``fmt`` for its value."""

    key: str
    header: str
    fmt: str


#: Summary columns in the order they are shown.
SUMMARY_COLUMNS: tuple[Column, ...] = (
    Column("accuracy", "acc", "{:.3f}"),
    Column("mean_true_confidence", "conf", "{:.3f}"),
    Column("params_m", "params(M)", "{:.3f}"),
    Column("attention_params", "attn params", "{:,.0f}"),
    Column("gflops", "GFLOPs", "{:.4f}"),
    Column("latency_ms", "ms/img", "{:.2f}"),
    Column("mean_cka", "CKA vs base", "{:.3f}"),
    Column("cam_pearson", "CAM r vs base", "{:.3f}"),
    Column("pointing_game", "pointing", "{:.3f}"),
    Column("energy_pointing_game", "energy PG", "{:.3f}"),
    Column("cam_iou", "IoU@0.5", "{:.3f}"),
    Column("deletion_auc", "deletion↓", "{:.3f}"),
    Column("insertion_auc", "insertion↑", "{:.3f}"),
    Column("average_drop_pct", "avg drop%↓", "{:.1f}"),
    Column("gate_specificity", "gate η² (last stage)", "{:.3f}"),
)

FEATURE_METRICS = ("mean", "std", "sparsity", "channel_gini", "spatial_entropy")


def column(key: str) -> Column:
    """The summary column of ``key``."""
    return next(c for c in SUMMARY_COLUMNS if c.key == key)


@dataclass(frozen=True)
class Tested:
    """A per-image metric compared pairwise, variant − baseline.

    ``per_image`` is the name of the per-image value the metric accumulators return,
    ``summary`` the summary column it belongs to, ``scale`` turns the per-image mean into
    the summary's unit (100 for percentages), ``better`` says which sign is an improvement.
    """

    per_image: str
    summary: str
    label: str
    scale: float = 1.0
    better: str = "higher"


#: The paired tests of a comparison (variant − baseline on the same images, Holm-adjusted
#: together). Accuracy is tested by McNemar's exact test; the others by the bootstrap.
TESTED: tuple[Tested, ...] = (
    Tested("correct", "accuracy", "accuracy"),
    Tested("true_confidence", "mean_true_confidence", "confidence on the true class"),
    Tested("pointing_game", "pointing_game", "pointing game"),
    Tested("energy_pointing_game", "energy_pointing_game", "energy pointing game"),
    Tested("iou", "cam_iou", "CAM IoU@0.5 with the mask"),
    Tested("deletion_auc", "deletion_auc", "deletion AUC", better="lower"),
    Tested("insertion_auc", "insertion_auc", "insertion AUC"),
    Tested("drop", "average_drop_pct", "average drop %", scale=100.0, better="lower"),
)

#: What the statistics mean, for tables' legends and the report.
LEGEND = (
    "Δ = variant − baseline on the same images, [95% CI] from a streaming Poisson bootstrap "
    "(B weights per image); accuracy tested by McNemar's exact test, the other per-image metrics "
    "by the bootstrap (a bootstrap p is at least 1/B); p_holm = Holm-adjusted over every (variant, metric) test of this "
    "comparison; * = significant after adjustment. Layer statistics get intervals only."
)
