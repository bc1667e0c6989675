"""Streaming metric accumulators for comparing models before and after attention.

Every accumulator keeps fixed-size running state (sums, counts, fixed-bin histograms,
small Gram-like matrices): memory does not grow with the number of images, and states
from several processes or DDP ranks combine by summing (:meth:`Accumulator.merge`,
:meth:`Accumulator.sync`). Each class documents its exact definition in ``definition``
and its conventions in ``settings()``.

Uncertainty: :mod:`attnviz.metrics.bootstrap` holds the paired before/after accumulators
(:class:`PairedDifference`, :class:`PairedAccuracy`, :class:`BootstrapMean`) fed with the
per-image values that the per-image accumulators' ``update`` returns; the layer metrics
(:class:`FeatureStats`, :class:`LinearCKA`, :class:`GateStats`) take ``replicates=`` for
intervals of their own.
"""

from .._maps import average_ranks
from ._base import Accumulator
from .bootstrap import BootstrapMean, PairedAccuracy, PairedDifference, bootstrap_difference
from .cams import CamAgreement, CamConcentration, pearson_per_image, spearman_per_image, top_iou
from .classification import ClassificationStats
from .faithfulness import (
    ConfidenceStats,
    FaithfulnessStats,
    confidence_drop_increase,
    deletion_insertion,
    gaussian_blur,
    trapezoid_auc,
)
from .features import FeatureStats, channel_gini, spatial_entropy
from .gates import GateStats, gate_profile
from .localization import CamLocalization, energy_share, pointing_hits, threshold_iou
from .similarity import CKAMatrix, LinearCKA, hsic_unbiased, linear_gram

__all__ = [
    "Accumulator",
    "BootstrapMean",
    "CKAMatrix",
    "CamAgreement",
    "CamConcentration",
    "CamLocalization",
    "ClassificationStats",
    "ConfidenceStats",
    "FaithfulnessStats",
    "FeatureStats",
    "GateStats",
    "LinearCKA",
    "PairedAccuracy",
    "PairedDifference",
    "average_ranks",
    "bootstrap_difference",
    "channel_gini",
    "confidence_drop_increase",
    "deletion_insertion",
    "energy_share",
    "gate_profile",
    "gaussian_blur",
    "hsic_unbiased",
    "linear_gram",
    "pearson_per_image",
    "pointing_hits",
    "spatial_entropy",
    "spearman_per_image",
    "threshold_iou",
    "top_iou",
    "trapezoid_auc",
]
