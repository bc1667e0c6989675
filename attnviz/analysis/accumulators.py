"""One bundle of streaming accumulators per compared model, built and computed in one place.

:class:`ModelStats` holds everything :func:`attnviz.compare` measures for one model
(classification, per-layer features and CKA to the baseline, gates, CAM concentration,
agreement and localization, faithfulness) and, for a variant, the paired before/after
tests against the baseline (:mod:`attnviz.metrics.bootstrap`: the same images, the same
bootstrap weights). It knows how to feed itself from one batch's captured values and how
to compute its plain-data results; :func:`attnviz.compare` only runs the models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..metrics import (
    BootstrapMean,
    CamAgreement,
    CamConcentration,
    CamLocalization,
    ClassificationStats,
    ConfidenceStats,
    FaithfulnessStats,
    FeatureStats,
    GateStats,
    LinearCKA,
    PairedAccuracy,
    PairedDifference,
    bootstrap_difference,
)
from .columns import TESTED

__all__ = ["Bootstrap", "ModelStats", "state_elements"]

#: Per-image CAM agreement values whose mean gets an interval (already paired: no test).
AGREEMENT = ("pearson", "spearman", "top_iou")


@dataclass(frozen=True)
class Bootstrap:
    """The streaming bootstrap of a comparison: ``replicates`` (B), ``seed``, ``level``."""

    replicates: int = 1000
    seed: int = 0
    level: float = 0.95

    def kwargs(self) -> dict[str, Any]:
        return {"replicates": self.replicates, "seed": self.seed, "level": self.level}


@dataclass
class ModelStats:
    """Every accumulator of one model (see the module docs); ``baseline`` has no paired ones."""

    name: str
    baseline: bool
    classification: ClassificationStats
    features: dict[str, FeatureStats]
    cka: dict[str, LinearCKA]
    gates: dict[str, GateStats]
    concentration: dict[str, CamConcentration]
    agreement: dict[str, CamAgreement]
    localization: dict[str, CamLocalization]
    faithfulness: FaithfulnessStats
    confidence: ConfidenceStats
    paired: dict[str, PairedAccuracy | PairedDifference] = field(default_factory=dict)
    agreement_ci: dict[str, BootstrapMean] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        baseline: bool,
        layers: Sequence[str],
        gates: Sequence[str],
        methods: Sequence[str],
        num_classes: int | None,
        boot: Bootstrap,
        faithfulness_steps: int,
        deletion_substrate: str,
        insertion_substrate: str,
        batch_size: int,
    ) -> ModelStats:
        b = boot.kwargs()
        forward_batch = max(batch_size, 32)
        return cls(
            name=name,
            baseline=baseline,
            classification=ClassificationStats(top_k=min(5, num_classes or 5)),
            features={layer: FeatureStats(**b) for layer in layers},
            cka={}
            if baseline
            else {layer: LinearCKA(skip_small_batches=True, **b) for layer in layers},
            gates={g: GateStats(num_classes=num_classes, **b) for g in gates},
            concentration={m: CamConcentration() for m in methods},
            agreement={} if baseline else {m: CamAgreement() for m in methods},
            localization={m: CamLocalization(num_classes=num_classes) for m in methods},
            faithfulness=FaithfulnessStats(
                steps=faithfulness_steps,
                deletion_substrate=deletion_substrate,
                insertion_substrate=insertion_substrate,
                batch_size=forward_batch,
            ),
            confidence=ConfidenceStats(batch_size=forward_batch),
            paired={}
            if baseline
            else {
                t.per_image: (PairedAccuracy if t.per_image == "correct" else PairedDifference)(**b)
                for t in TESTED
            },
            agreement_ci={} if baseline else {k: BootstrapMean(**b) for k in AGREEMENT},
        )

    def all(self) -> list[Any]:
        """Every accumulator of the bundle (for ``sync`` and state counting)."""
        out: list[Any] = [self.classification, self.faithfulness, self.confidence]
        for group in (
            self.features,
            self.cka,
            self.gates,
            self.concentration,
            self.agreement,
            self.localization,
            self.paired,
            self.agreement_ci,
        ):
            out.extend(group.values())
        return out

    def sync(self) -> None:
        """Sum every state over the DDP ranks (one ``all_reduce`` per state; no-op without DDP).

        Accumulators that saw nothing on every rank stay empty.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        for acc in self.all():
            seen = torch.tensor([1 if acc.updated else 0])
            dist.all_reduce(seen, op=dist.ReduceOp.MAX)
            if int(seen):
                if not acc.updated:
                    raise RuntimeError(
                        f"{type(acc).__name__} of {self.name!r} saw data on another rank but not "
                        "on this one; shard whole batches so that every rank sees every kind"
                    )
                acc.sync()

    # -- computing ------------------------------------------------------------------------
    def results(self, methods: Sequence[str], *, has_masks: bool, faithfulness: bool) -> dict:
        """This model's plain-data results (tensors for curves and profiles, floats elsewhere)."""
        r: dict[str, Any] = {
            "classification": self.classification.compute(),
            "features": {layer: a.compute() for layer, a in self.features.items()},
            # minibatch CKA needs batches of 4 images or more: none (a tiny dataset), no CKA
            "cka": {
                layer: a.compute()
                for layer, a in self.cka.items()
                if a.updated and int(a.states["n_batches"]) > 0
            },
            "gates": {g: a.compute() for g, a in self.gates.items() if a.updated},
            "cam": {},
        }
        for m in methods:
            entry = {"concentration": self.concentration[m].compute()}
            if m in self.agreement and self.agreement[m].updated:
                entry["agreement"] = self.agreement[m].compute()
            if has_masks and self.localization[m].updated:
                entry["localization"] = self.localization[m].compute()
            r["cam"][m] = entry
        if faithfulness and self.faithfulness.updated:
            r["faithfulness"] = {**self.faithfulness.compute(), **self.confidence.compute()}
        if self.agreement_ci:
            r["agreement_ci"] = {k: a.compute() for k, a in self.agreement_ci.items() if a.updated}
        return r

    def tests(self, baseline: ModelStats) -> dict[str, dict[str, Any]]:
        """Paired tests against ``baseline`` (per-image metrics) and layer differences (CIs).

        Keys: a :data:`~attnviz.analysis.columns.TESTED` summary key for the tested metrics;
        ``"features.<layer>.<stat>"`` for the per-layer feature statistics (intervals only,
        not part of the Holm family).
        """
        out: dict[str, dict[str, Any]] = {}
        for t in TESTED:
            acc = self.paired.get(t.per_image)
            if acc is not None and acc.updated:
                row = acc.compute()
                if t.scale != 1.0:
                    row = _scaled(row, t.scale)
                out[t.summary] = {**row, "label": t.label, "better": t.better, "family": "holm"}
        for layer, acc in self.features.items():
            base = baseline.features.get(layer)
            if base is None or not acc.updated or not base.updated:
                continue
            for stat, row in bootstrap_difference(acc, base).items():
                out[f"features.{layer}.{stat}"] = {
                    **row,
                    "label": f"{stat} at {layer}",
                    "family": "ci",
                }
        return out


def _scaled(row: Mapping[str, Any], scale: float) -> dict[str, Any]:
    keys = ("delta", "ci_low", "ci_high", "variant", "baseline", "std")
    return {
        k: (v * scale if k in keys and isinstance(v, float) and math.isfinite(v) else v)
        for k, v in row.items()
    }


def state_elements(stats: Mapping[str, ModelStats]) -> int:
    """How many numbers every accumulator holds (fixed, whatever the image count)."""
    total = 0
    for s in stats.values():
        for acc in s.all():
            total += sum(t.numel() for t in acc.states.values())
    return total


def per_image_values(
    values: Mapping[str, Tensor], *, limit: int | None = None
) -> dict[str, Tensor]:
    """The per-image values of one model in one batch, as float64 ``[B]`` (or the first ``limit``)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, Tensor) and v.ndim == 1:
            out[k] = (v[:limit] if limit is not None else v).detach().to(torch.float64)
    return out
