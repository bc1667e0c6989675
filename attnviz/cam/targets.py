"""Which score a CAM explains: target classes or scoring functions, one per image.

``targets`` may be

* ``None``: each image's predicted class (argmax of the output);
* an ``int``: that class for every image (the only value that is broadcast);
* a sequence, numpy array or 1-D integer tensor: one class per image, its length
  must equal the batch size (a mismatch raises; pytorch-grad-cam silently
  truncates and returns all-zero maps for the images without a target);
* a list with one entry per image where entries may be callables: pytorch-grad-cam's
  target objects as they are (``ClassifierOutputTarget(3)``,
  ``ClassifierOutputSoftmaxTarget(3)``, ``SemanticSegmentationTarget(c, mask)``, or
  :class:`SoftmaxTarget` / :class:`SegmentationTarget` here), each called on *its*
  image's output (``output[b]``: ``[classes]`` or ``[classes, H, W]``) and returning a
  scalar, as pytorch-grad-cam calls them; ints and callables may be mixed;
* a callable ``output -> Tensor[B]``: the score of each image, for models with
  several outputs, segmentation (sum of a class's logits over a mask), logit
  differences, ... It must score each row of the output on its own (Score-CAM and
  Ablation-CAM call it on the outputs of masked or ablated copies of the images).

The targets score the part of the model output chosen by ``compute_cam(output=...)``
(see :mod:`attnviz.cam.outputs`). The score of a class target is the pre-softmax
logit ``output[b, c]``, as in Grad-CAM and every reference implementation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CamError
from .outputs import describe_output, output_hint

__all__ = ["SegmentationTarget", "SoftmaxTarget", "TargetSpec", "Targets", "resolve_targets"]

Targets = int | Sequence[int | Callable[[Any], Tensor]] | Tensor | Callable[[Any], Tensor] | None


class SoftmaxTarget:
    """The softmax probability of class ``category`` (pytorch-grad-cam's ``ClassifierOutputSoftmaxTarget``).

    Works on one image's output ``[classes]`` (in a per-image list) and on a batch
    ``[B, classes]`` (as ``targets=SoftmaxTarget(c)`` for every image).

    >>> import torch
    >>> SoftmaxTarget(1)(torch.tensor([[0.0, 0.0], [0.0, 1e9]])).tolist()
    [0.5, 1.0]
    """

    def __init__(self, category: int):
        self.category = _category(category, "SoftmaxTarget")

    def __call__(self, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim not in (1, 2):
            raise CamError(
                f"SoftmaxTarget needs classifier logits [classes] or [batch, classes], got "
                f"{describe_output(output)}"
            )
        _check_class(self.category, output.shape[-1])
        return torch.softmax(output, dim=-1)[..., self.category]

    def __repr__(self) -> str:
        return f"SoftmaxTarget({self.category})"


class SegmentationTarget:
    """Class ``category``'s scores summed over ``mask`` (pytorch-grad-cam's ``SemanticSegmentationTarget``).

    For segmentation outputs ``[classes, H, W]`` (one image) or ``[B, classes, H, W]``
    (a batch, one mask for all): ``Σ_ij output[category, i, j] · mask[i, j]``. ``mask``
    is ``[H, W]`` (bool or float weights; a tensor or numpy array) at the output's size.

    >>> import torch
    >>> t = SegmentationTarget(1, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    >>> t(torch.arange(8.0).view(2, 2, 2)).item()
    4.0
    """

    def __init__(self, category: int, mask: Tensor | np.ndarray):
        self.category = _category(category, "SegmentationTarget")
        mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        if mask.ndim != 2:
            raise CamError(f"SegmentationTarget's mask must be [H, W], got {list(mask.shape)}")
        self.mask = mask.detach()

    def __call__(self, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim not in (3, 4):
            raise CamError(
                "SegmentationTarget needs a segmentation output [classes, H, W] or "
                f"[batch, classes, H, W], got {describe_output(output)}"
            )
        if tuple(output.shape[-2:]) != tuple(self.mask.shape):
            raise CamError(
                f"SegmentationTarget's mask is {list(self.mask.shape)} but the output maps are "
                f"{list(output.shape[-2:])}: give the mask at the output's size"
            )
        _check_class(self.category, output.shape[-3])
        mask = self.mask.to(device=output.device, dtype=output.dtype)
        return (output[..., self.category, :, :] * mask).sum(dim=(-2, -1))

    def __repr__(self) -> str:
        return f"SegmentationTarget({self.category}, mask={list(self.mask.shape)})"


@dataclass(frozen=True)
class TargetSpec:
    """Validated targets: ``kind`` is ``"argmax"``, ``"index"``, ``"callable"`` or ``"per_sample"``."""

    kind: str
    index: Tensor | None = None  # [B] int64 (on the CPU until scored)
    fn: Callable[[Any], Tensor] | None = None
    items: tuple[Any, ...] | None = None  # per_sample: an int or a callable per image
    batch: int = 0

    def chunk(self, start: int, stop: int) -> TargetSpec:
        """The targets of images ``start:stop``."""
        n = stop - start
        if self.kind == "index":
            return TargetSpec("index", self.index[start:stop], batch=n)
        if self.kind == "per_sample":
            return TargetSpec("per_sample", items=self.items[start:stop], batch=n)
        return TargetSpec(self.kind, fn=self.fn, batch=n)

    def repeat(self, times: int) -> TargetSpec:
        """The same targets for ``times`` copies of the batch, one after the other."""
        n = self.batch * times
        if self.kind == "index":
            return TargetSpec("index", self.index.repeat(times), batch=n)
        if self.kind == "per_sample":
            return TargetSpec("per_sample", items=self.items * times, batch=n)
        return TargetSpec(self.kind, fn=self.fn, batch=n)

    def scores(self, output: Any) -> tuple[Tensor | None, Tensor]:
        """``(class indices [B] or None, target scores [B])`` for a model output.

        Class indices come only from class targets (``None``, ints): they are what
        CAM's classifier weights and the derived forwards of Score-CAM and
        Ablation-CAM explain.
        """
        if self.kind == "callable":
            return None, _call(self.fn, output, self.batch)
        if self.kind == "per_sample":
            return None, _per_sample(self.items, output)
        logits = classifier_output(output, self.kind)
        if self.kind == "argmax":
            index = logits.argmax(dim=1)
        else:
            index = self.index.to(logits.device)
            _check_range(index, logits.shape[1])
        return index, logits.gather(1, index[:, None])[:, 0]

    def row_scores(
        self, output: Any, who: Tensor, index: Tensor | None, *, probability: bool = False
    ) -> Tensor:
        """Scores of a derived batch (masked, ablated, noisy copies) whose row ``r`` is image ``who[r]``.

        ``index``: the class of each image (from :meth:`scores`). With
        ``probability=True`` class targets give the softmax probability instead of
        the logit; callables always give their own value.
        """
        if self.kind == "callable":
            return _call(self.fn, output, who.shape[0])
        if self.kind == "per_sample":
            items = [self.items[i] for i in who.tolist()]
            return _per_sample(items, output, probability=probability)
        logits = classifier_output(output, self.kind)
        cls = index.to(logits.device)[who.to(logits.device)]
        if probability:
            return torch.softmax(logits.float(), dim=1).gather(1, cls[:, None])[:, 0]
        return logits.gather(1, cls[:, None])[:, 0]

    def classes(self, index: Tensor | None) -> Tensor | None:
        """The class each image explains, for reporting: class targets, or per-image objects
        with an integer ``category`` (pytorch-grad-cam's targets, :class:`SoftmaxTarget`);
        ``None`` when some image has no class."""
        if index is not None or self.kind != "per_sample":
            return index
        found = [_category_of(t) for t in self.items]
        if any(c is None for c in found):
            return None
        return torch.tensor(found, dtype=torch.long)

    def labels(self) -> tuple[str, ...] | None:
        """A description of each image's target when it is not a class index (for display)."""
        if self.kind == "callable":
            return (describe_target(self.fn),) * self.batch
        if self.kind == "per_sample":
            return tuple(str(t) if isinstance(t, int) else describe_target(t) for t in self.items)
        return None


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
    if isinstance(targets, list | tuple) and any(callable(t) for t in targets):
        return _per_sample_spec(targets, batch)
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
        raise CamError(_length_message(tuple(index.shape), batch))
    return TargetSpec("index", index.long().cpu(), batch=batch)


def describe_target(target: Any) -> str:
    """A function's name, the ``repr`` of objects that define one, else ``ClassName(category)``."""
    if inspect.isroutine(target):
        return getattr(target, "__qualname__", type(target).__name__)
    if type(target).__repr__ is not object.__repr__:
        return repr(target)
    category = _category_of(target)
    name = type(target).__name__
    return f"{name}({category})" if category is not None else name


def classifier_output(output: Any, kind: str) -> Tensor:
    """``output`` if it is classifier logits ``[batch, classes]``; else an error saying what to pass."""
    if not isinstance(output, Tensor) or output.ndim != 2:
        how = "targets=None (predicted class)" if kind == "argmax" else "class-index targets"
        raise CamError(
            f"{how} need a classifier output [batch, classes], but the model returned "
            f"{describe_output(output)}; {output_hint(output)}, or targets=callable(output) -> "
            "score per image [batch]"
        )
    return output


# -- helpers ------------------------------------------------------------------------
def _length_message(shape: tuple[int, ...], batch: int) -> str:
    return (
        f"targets has shape {shape} but the batch has {batch} images: give one target per "
        "image, or a single int for all of them (nothing is broadcast silently)"
    )


def _per_sample_spec(targets: Sequence[Any], batch: int) -> TargetSpec:
    if len(targets) != batch:
        raise CamError(_length_message((len(targets),), batch))
    items = []
    for i, t in enumerate(targets):
        if isinstance(t, bool) or not (callable(t) or isinstance(t, int | np.integer)):
            raise TypeError(
                f"targets[{i}] is {type(t).__name__}; a per-image list holds class indices (int) "
                "or callables scoring one image's output"
            )
        items.append(t if callable(t) else int(t))
    return TargetSpec("per_sample", items=tuple(items), batch=batch)


def _category(category: Any, who: str) -> int:
    if isinstance(category, bool) or not isinstance(category, int | np.integer):
        raise TypeError(f"{who}'s category must be a class index (int), got {category!r}")
    return int(category)


def _category_of(target: Any) -> int | None:
    if isinstance(target, int):
        return target
    category = getattr(target, "category", None)
    if isinstance(category, int | np.integer) and not isinstance(category, bool):
        return int(category)
    return None


def _check_class(category: int, classes: int) -> None:
    if not 0 <= category < classes:
        raise CamError(
            f"target class {category} out of range: the model has {classes} classes "
            f"(valid 0..{classes - 1})"
        )


def _check_range(index: Tensor, classes: int) -> None:
    bad = (index < 0) | (index >= classes)
    if bool(bad.any()):
        raise CamError(
            f"targets {index[bad].tolist()} out of range: the model has {classes} classes "
            f"(valid 0..{classes - 1})"
        )


def _rows(output: Any, n: int) -> Sequence[Any]:
    """One image's output per row: the rows of a tensor, or the items of a per-image list."""
    if isinstance(output, Tensor) and output.ndim >= 1:
        rows = output.unbind(0)
    elif isinstance(output, list | tuple):
        rows = output
    else:
        raise CamError(
            f"per-image targets are called on each image's output, but the model returned "
            f"{describe_output(output)}; {output_hint(output)}"
        )
    if len(rows) != n:
        raise CamError(
            f"per-image targets: {n} targets but the model output has {len(rows)} rows "
            f"({describe_output(output)}); {output_hint(output)}"
        )
    return rows


def _per_sample(items: Sequence[Any], output: Any, *, probability: bool = False) -> Tensor:
    values = []
    for target, row in zip(items, _rows(output, len(items))):
        if isinstance(target, int):
            if not isinstance(row, Tensor) or row.ndim != 1:
                raise CamError(
                    f"class target {target} needs classifier logits per image [classes], got "
                    f"{describe_output(row)}; use a callable target (e.g. SegmentationTarget)"
                )
            _check_class(target, row.shape[0])
            value = torch.softmax(row.float(), dim=0)[target] if probability else row[target]
        else:
            value = target(row)
        if not isinstance(value, Tensor) or value.numel() != 1:
            what = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CamError(
                f"the target {describe_target(target)} must return one score (a scalar tensor) "
                f"for one image's output, got {what}"
            )
        values.append(value.reshape(()))
    return torch.stack(values)


def _call(fn: Callable[[Any], Tensor], output: Any, batch: int) -> Tensor:
    scores = fn(output)
    if not isinstance(scores, Tensor):
        raise TypeError(
            f"the targets callable must return a tensor of {batch} scores, got "
            f"{type(scores).__name__}"
        )
    if scores.shape != (batch,):
        raise CamError(
            f"the targets callable must return one score per image, shape ({batch},), got "
            f"{tuple(scores.shape)}"
        )
    return scores
