"""Input validation with errors that name the argument, the shape received and the expected one."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import AttnvizError


def check_tensor(owner: str, arg: str, x: object, ndims: tuple[int, ...], expected: str) -> Tensor:
    """``x`` must be a tensor with one of ``ndims`` dimensions; ``expected`` is e.g. ``"[B, C, H, W]"``."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{owner}: `{arg}` must be a torch.Tensor {expected}, got {type(x).__name__}"
        )
    if x.ndim not in ndims:
        raise AttnvizError(
            f"{owner}: `{arg}` has shape {tuple(x.shape)} ({x.ndim}-D), expected {expected}"
        )
    if x.shape[0] == 0:
        raise AttnvizError(f"{owner}: `{arg}` has shape {tuple(x.shape)}: the batch is empty")
    return x


def check_float(owner: str, arg: str, x: Tensor) -> Tensor:
    """Floating-point view of ``x`` (at least float32 so that half inputs sum safely)."""
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{owner}: `{arg}` must hold numbers, got dtype {x.dtype}")
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def as_maps(owner: str, arg: str, x: object) -> Tensor:
    """Maps ``[B, H, W]`` (``[B, 1, H, W]`` is squeezed) as a floating tensor."""
    x = check_tensor(owner, arg, x, (3, 4), "[B, H, W] (or [B, 1, H, W])")
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise AttnvizError(
                f"{owner}: `{arg}` has shape {tuple(x.shape)}, expected [B, H, W] or [B, 1, H, W]"
            )
        x = x[:, 0]
    return check_float(owner, arg, x)


def check_same_shape(owner: str, arg_a: str, a: Tensor, arg_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise AttnvizError(
            f"{owner}: `{arg_a}` has shape {tuple(a.shape)} but `{arg_b}` has shape "
            f"{tuple(b.shape)}; they must be equal (resize one of them first)"
        )


def check_labels(
    owner: str, labels: object, batch: int, num_classes: int | None, device: torch.device
) -> Tensor:
    """Integer class labels ``[B]`` in ``[0, num_classes)``, moved to ``device``."""
    if not isinstance(labels, Tensor):
        raise TypeError(
            f"{owner}: `labels` must be a torch.Tensor [B], got {type(labels).__name__}"
        )
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise AttnvizError(
            f"{owner}: `labels` has shape {tuple(labels.shape)}, expected [B] = [{batch}]"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{owner}: `labels` must be an integer tensor, got dtype {labels.dtype}")
    labels = labels.to(device=device, dtype=torch.long)
    if num_classes is not None:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise AttnvizError(
                f"{owner}: `labels` must lie in [0, {num_classes}) (num_classes={num_classes}), "
                f"got values in [{lo}, {hi}]"
            )
    return labels


def class_index(
    owner: str, labels: object, batch: int, num_classes: int | None, device: torch.device
) -> Tensor:
    """Row of each image in a per-class table: its label, or 0 for all when classes are not kept.

    Labels are required when ``num_classes`` is set and refused when it is not,
    so a per-class statistic never silently pools or drops the classes.
    """
    if num_classes is None:
        if labels is not None:
            raise AttnvizError(f"{owner}: got `labels` but it was built without `num_classes`")
        return torch.zeros(batch, dtype=torch.long, device=device)
    if labels is None:
        raise AttnvizError(f"{owner}: `labels` [B] are required (num_classes={num_classes})")
    return check_labels(owner, labels, batch, num_classes, device)
