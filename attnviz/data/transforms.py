"""Small image/mask transforms shared by the datasets.

The datasets call ``transform(image)`` or, when they carry a mask,
``transform(image, mask)`` on a float image in [0, 1] (``[3, H, W]``) and a
``[H, W]`` mask (a ``torchvision.tv_tensors.Mask``) *before* normalisation, and
expect the same structure back. ``torchvision.transforms.v2`` transforms follow
that convention, so they work unchanged and move the mask with the image; the
transforms here do too, without torchvision's per-call dispatch cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import AttnvizError

__all__ = ["RandomFlip", "denormalize", "normalize"]


def _stats(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    # Broadcast over [C, H, W] and [N, C, H, W].
    return t.view(-1, 1, 1)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Return ``(image - mean) / std`` per channel for ``[C,H,W]`` or ``[N,C,H,W]``."""
    return (image - _stats(mean, image)) / _stats(std, image)


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo :func:`normalize` and clamp to [0, 1], e.g. to display a dataset image.

    >>> x = torch.rand(3, 4, 4)
    >>> y = denormalize(normalize(x, (0.5,) * 3, (0.2,) * 3), (0.5,) * 3, (0.2,) * 3)
    >>> bool(torch.allclose(x, y, atol=1e-6))
    True
    """
    return (image * _stats(std, image) + _stats(mean, image)).clamp_(0.0, 1.0)


class RandomFlip:
    """Flip image (and mask) horizontally and/or vertically, each with probability ``p``.

    Why: the cheapest augmentation that keeps masks exact; the synthetic shape
    classes are closed under mirroring, so flips never change a label there.
    Uses torch's global RNG, so it is seeded by ``torch.manual_seed`` and by the
    DataLoader's per-worker seeding.

    >>> t = RandomFlip(horizontal=True, vertical=False, p=1.0)
    >>> img, mask = t(torch.arange(4.0).view(1, 2, 2), torch.tensor([[1, 0], [0, 0]]))
    >>> mask.tolist()
    [[0, 1], [0, 0]]
    """

    def __init__(self, horizontal: bool = True, vertical: bool = False, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise AttnvizError(f"p must be a probability in [0, 1], got {p!r}")
        self.horizontal = horizontal
        self.vertical = vertical
        self.p = p

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None):
        dims = []
        if self.horizontal and torch.rand(()) < self.p:
            dims.append(-1)
        if self.vertical and torch.rand(()) < self.p:
            dims.append(-2)
        if dims:
            image = image.flip(dims)
            if mask is not None:
                mask = mask.flip(dims)
        return image if mask is None else (image, mask)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(horizontal={self.horizontal}, "
            f"vertical={self.vertical}, p={self.p})"
        )


def finish_sample(
    image: torch.Tensor,
    mask: torch.Tensor,
    transform: Any,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a joint image+mask ``transform`` (torchvision v2), then normalise the image.

    The mask travels as a ``tv_tensors.Mask`` so geometric transforms move it
    with the image (nearest-neighbour) and photometric ones leave it alone.
    """
    if transform is not None:
        from torchvision import tv_tensors

        image, mask = transform(image, tv_tensors.Mask(mask))
        mask = mask.as_subclass(torch.Tensor)
    return normalize(image, mean, std), mask
