"""Test-time augmentation for ``compute_cam(aug_smooth=True)``: pytorch-grad-cam's ``aug_smooth``.

pytorch-grad-cam (``BaseCAM.forward_augmentation_smoothing``, with ttach's
``Compose([HorizontalFlip(), Multiply([0.9, 1, 1.1])])``) computes the map of six
versions of each image, horizontally flipped or not times multiplied by 0.9, 1 or
1.1 (the normalised tensor is multiplied, not the pixels), flips each map back and
averages the six maps as they are (per-image min-max scaled, not rescaled after).

Here the six versions go through the model as one batch of ``6·B`` images (in
chunks of ``batch_size``, default ``B``: the same forwards as pytorch-grad-cam's
six calls); each version's maps are resized and normalised as without
augmentation, flipped back, and the six results averaged: ``maps``, ``fused_maps``
and, at the layer's resolution, ``raw`` (flipped at that resolution, which aligns
with the input only up to the layer's stride).

Targets are resolved once on the original images: ``targets=None`` explains the
class predicted for the unaugmented image in all six versions (pytorch-grad-cam
takes each augmented image's own prediction, which can differ). Scores and
probabilities in the result are those of the unaugmented images.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AUGMENTATIONS", "augment", "deaugment"]

#: (horizontal flip, factor) of each version; the first is the original image
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (1.0, 0.9, 1.1)
)


def augment(images: Tensor) -> Tensor:
    """The ``len(AUGMENTATIONS)`` versions of ``images`` ``[B, C, H, W]``, one block of ``B`` after another."""
    versions = []
    for flip, factor in AUGMENTATIONS:
        x = images.flip(-1) if flip else images
        versions.append(x * factor if factor != 1.0 else x)
    return torch.cat(versions)


def deaugment(maps: Tensor, batch: int) -> Tensor:
    """The mean over versions of maps ``[6·B, h, w]``, each flipped back: ``[B, h, w]``."""
    blocks = maps.view(len(AUGMENTATIONS), batch, *maps.shape[1:])
    back = [b.flip(-1) if flip else b for b, (flip, _) in zip(blocks, AUGMENTATIONS)]
    return torch.stack(back).mean(dim=0)
