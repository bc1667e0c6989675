"""Keep the N images where models disagree most, in bounded memory, one class per image first.

The panels show, for as many classes as there are panels, each class's most
disagreeing image (so one hard class cannot fill every row), then fill any rows
left with the most disagreeing images overall. At most ``2 n`` images are held.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from dataclasses import dataclass, field

import torch

__all__ = ["Panel", "TopDisagreement"]


@dataclass(order=True)
class Panel:
    """One image with every model's CAM (ReLU'd, at input size, not normalised) and probabilities."""

    score: float
    order: int
    image: torch.Tensor = field(compare=False)
    label: int = field(compare=False)
    mask: torch.Tensor | None = field(compare=False)
    cams: dict[str, torch.Tensor] = field(compare=False)
    probs: dict[str, float] = field(compare=False)


class TopDisagreement:
    """The ``n`` most disagreeing images seen so far, preferring distinct classes (CPU copies)."""

    def __init__(self, n: int):
        self.n = n
        self._heap: list[Panel] = []  # the n most disagreeing images overall (a min-heap)
        self._per_class: dict[int, Panel] = {}  # each class's best, for the n best classes
        self._count = itertools.count()

    def _wanted(self, score: float, label: int) -> tuple[bool, bool]:
        overall = len(self._heap) < self.n or score > self._heap[0].score
        best = self._per_class.get(label)
        if best is not None:
            return overall, score > best.score
        weakest = min(self._per_class.values(), default=None)
        return overall, len(self._per_class) < self.n or (
            weakest is not None and score > weakest.score
        )

    def offer(
        self,
        scores: torch.Tensor,
        images: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor | None,
        cams: dict[str, torch.Tensor],
        probs: dict[str, torch.Tensor],
    ) -> None:
        """Consider a batch; ``scores[i]`` is how much the models disagree on image ``i``."""
        if self.n <= 0:
            return
        order = torch.argsort(scores.detach().float().cpu(), descending=True).tolist()
        for i in order:
            s, label = float(scores[i]), int(labels[i])
            overall, per_class = self._wanted(s, label)
            if not (overall or per_class):
                continue
            # clones: a slice is a view that would keep the whole batch alive
            panel = Panel(
                s,
                next(self._count),
                images[i].detach().to("cpu", copy=True),
                label,
                masks[i].detach().to("cpu", copy=True) if masks is not None else None,
                {m: c[i].detach().to("cpu", copy=True) for m, c in cams.items()},
                {m: float(p[i]) for m, p in probs.items()},
            )
            self._insert(panel, overall, per_class)

    def candidates(self) -> list[Panel]:
        """Every panel kept (for merging the keepers of several processes with :meth:`add`)."""
        kept = {p.order: p for p in (*self._heap, *self._per_class.values())}
        return list(kept.values())

    def add(self, panel: Panel) -> None:
        """Consider one panel kept by another keeper (the same rules as :meth:`offer`)."""
        overall, per_class = self._wanted(panel.score, panel.label)
        if overall or per_class:
            self._insert(dataclasses.replace(panel, order=next(self._count)), overall, per_class)

    def _insert(self, panel: Panel, overall: bool, per_class: bool) -> None:
        if overall:
            if len(self._heap) < self.n:
                heapq.heappush(self._heap, panel)
            else:
                heapq.heapreplace(self._heap, panel)
        if per_class:
            if panel.label not in self._per_class and len(self._per_class) >= self.n:
                del self._per_class[min(self._per_class.values()).label]
            self._per_class[panel.label] = panel

    def panels(self) -> list[Panel]:
        """One image per class (most disagreeing classes first), then the rest by disagreement."""
        chosen = sorted(self._per_class.values(), reverse=True)[: self.n]
        ids = {p.order for p in chosen}
        rest = [p for p in sorted(self._heap, reverse=True) if p.order not in ids]
        return chosen + rest[: self.n - len(chosen)]
