"""Which score a CAM explains: target classes or a scoring function, one per image.

``targets`` may be

* ``None``: each image's predicted class (argmax of the output);
* an ``int``: that class for every image (the only value that is broadcast);
* a sequence, numpy array or 1-D integer tensor: one class per image, its length
  must equal the batch size (a mismatch raises; pytorch-grad-cam silently
  truncates and returns all-zero maps for the images without a target);
* a callable ``output -> Tensor[B]``: the score of each image, for models with
  several outputs, segmentation (sum of a class's logits over a mask), logit
  differences, ... It must score each row of the output on its own (Score-CAM
  calls it on the outputs of masked images).

The score of a class target is the pre-softmax logit ``output[b, c]``, as in
Grad-CAM and every reference implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["TargetSpec", "Targets", "resolve_targets"]

Targets = int | Sequence[int] | Tensor | Callable[[Any], Tensor] | None


@dataclass(frozen=True)
class TargetSpec:
    """Validated targets: ``kind`` is ``"argmax"``, ``"index"`` or ``"callable"``."""

    kind: str
    index: Tensor | None = None  # [B] int64 (on the CPU until scored)
    fn: Callable[[Any], Tensor] | None = None
    batch: int = 0

    def chunk(self, start: int, stop: int) -> TargetSpec:
        if self.kind != "index":
            return TargetSpec(self.kind, None, self.fn, stop - start)
        return TargetSpec("index", self.index[start:stop], None, stop - start)

    def scores(self, output: Any) -> tuple[Tensor | None, Tensor]:
        """``(class indices [B] or None, target scores [B])`` for a model output."""
        if self.kind == "callable":
            return None, _call(self.fn, output, self.batch)
        logits = _classifier_output(output, self.kind)
        if self.kind == "argmax":
            index = logits.argmax(dim=1)
        else:
            index = self.index.to(logits.device)
            _check_range(index, logits.shape[1])
        return index, logits.gather(1, index[:, None])[:, 0]


def resolve_targets(targets: Targets, batch: int) -> TargetSpec:
    """Validate ``targets`` for a batch of ``batch`` images (see the module docstring)."""
    if targets is None:
        return TargetSpec("argmax", batch=batch)
    if callable(targets) and not isinstance(targets, Tensor):
        return TargetSpec("callable", fn=targets, batch=batch)
    if isinstance(targets, bool):
        raise TypeError(
            "targets must be None, an int, a sequence of ints or a callable; got a bool"
        )
    if isinstance(targets, int):
        return TargetSpec(
            "index", torch.full((batch,), int(targets), dtype=torch.long), batch=batch
        )
    try:
        index = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            "targets must be None, an int, a sequence of ints (one per image), an integer "
            f"tensor or a callable output -> scores; got {type(targets).__name__}"
        ) from exc
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class indices, got dtype {index.dtype}")
    if index.ndim == 0:
        return TargetSpec("index", index.reshape(1).expand(batch).long().cpu(), batch=batch)
    if index.ndim != 1 or index.shape[0] != batch:
        raise ValueError(
            f"targets has shape {tuple(index.shape)} but the batch has {batch} images: give one "
            "target per image, or a single int for all of them (nothing is broadcast silently)"
        )
    return TargetSpec("index", index.long().cpu(), batch=batch)


def _classifier_output(output: Any, kind: str) -> Tensor:
    if not isinstance(output, Tensor) or output.ndim != 2:
        what = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        how = "targets=None (predicted class)" if kind == "argmax" else "class-index targets"
        raise ValueError(
            f"{how} need a classifier output [batch, classes], but the model returned {what}; "
            "pass targets=callable(output) -> score per image [batch]"
        )
    return output


def _check_range(index: Tensor, classes: int) -> None:
    bad = (index < 0) | (index >= classes)
    if bool(bad.any()):
        raise ValueError(
            f"targets {index[bad].tolist()} out of range: the model has {classes} classes "
            f"(valid 0..{classes - 1})"
        )


def _call(fn: Callable[[Any], Tensor], output: Any, batch: int) -> Tensor:
    scores = fn(output)
    if not isinstance(scores, Tensor):
        raise TypeError(
            f"the targets callable must return a tensor of {batch} scores, got "
            f"{type(scores).__name__}"
        )
    if scores.shape != (batch,):
        raise ValueError(
            f"the targets callable must return one score per image, shape ({batch},), got "
            f"{tuple(scores.shape)}"
        )
    return scores
