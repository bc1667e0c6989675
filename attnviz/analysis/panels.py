"""Keep the N images where models disagree most, in bounded memory."""

from __future__ import annotations

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
    """A min-heap of the ``n`` most disagreeing images seen so far (CPU copies, n images at most)."""

    def __init__(self, n: int):
        self.n = n
        self._heap: list[Panel] = []
        self._count = itertools.count()

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
        k = min(self.n, scores.numel())
        top = torch.topk(scores.detach().float().cpu(), k).indices.tolist()
        for i in top:
            s = float(scores[i])
            if len(self._heap) == self.n and s <= self._heap[0].score:
                continue
            # clones: a slice is a view that would keep the whole batch alive
            panel = Panel(
                s,
                next(self._count),
                images[i].detach().to("cpu", copy=True),
                int(labels[i]),
                masks[i].detach().to("cpu", copy=True) if masks is not None else None,
                {m: c[i].detach().to("cpu", copy=True) for m, c in cams.items()},
                {m: float(p[i]) for m, p in probs.items()},
            )
            if len(self._heap) < self.n:
                heapq.heappush(self._heap, panel)
            else:
                heapq.heapreplace(self._heap, panel)

    def panels(self) -> list[Panel]:
        """Most disagreeing first."""
        return sorted(self._heap, reverse=True)
