"""Score-CAM channel weights: the model's score of the image masked by each channel.

Score-CAM (Wang et al., CVPRW 2020, arXiv:1910.01279): for each channel ``k``
the activation ``A^k`` is upsampled to the input size (bilinear,
``align_corners=False``) and min-max scaled to a mask ``M^k`` in [0, 1] (a flat
channel gives an all-zero mask); the weight is the model's score for the target
on ``x ⊙ M^k``; the map is ``ReLU(Σ_k w_k A^k)``.

Two weightings (``scorecam_weights``):

* ``"probability"`` (default; the authors' code): ``w_k`` = softmax probability of
  the target class on the masked image.
* ``"softmax"`` (pytorch-grad-cam, torchcam): ``w_k`` = softmax over the channels
  ``k`` of the target logit on the masked images (subtracting a baseline score,
  as torchcam does, cancels in this softmax).

With a callable target its value replaces the probability (``"probability"``)
or the logit (``"softmax"``).

The ``B·C`` masked images go through the model in chunks of ``batch_size``; each
chunk's masks are upsampled when needed, so memory stays at one chunk.
pytorch-grad-cam upsamples with ``align_corners=True`` (``UpsamplingBilinear2d``),
unlike its own final resize and unlike torchcam; ``align_corners=False`` is used
here, like every other resize in attnviz.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._maps import minmax

__all__ = ["SCORECAM_WEIGHTS", "scorecam_weights"]

SCORECAM_WEIGHTS = ("probability", "softmax")


def scorecam_weights(
    forward: Callable[[Tensor], Any],
    images: Tensor,
    acts: Tensor,
    score: Callable[[Any, Tensor], Tensor],
    *,
    batch_size: int,
    weights: str = "probability",
) -> Tensor:
    """Channel weights ``[B, C]`` for ``acts`` ``[B, C, h, w]`` of ``images`` ``[B, ·, H, W]``.

    ``score(output, owner)`` gives the target score of each masked image (row ``r``
    is a copy of image ``owner[r]``): the probability (``"probability"``) or the
    logit (``"softmax"``) for class targets, a callable target's own value.
    """
    b, c = acts.shape[:2]
    size = tuple(images.shape[-2:])
    flat = acts.detach().flatten(0, 1)[:, None]  # [B·C, 1, h, w]
    owner = torch.arange(b, device=acts.device).repeat_interleave(c)
    scores = torch.empty(b * c, dtype=torch.float32, device=acts.device)
    for start in range(0, b * c, batch_size):
        stop = min(start + batch_size, b * c)
        masks = flat[start:stop]
        if tuple(masks.shape[-2:]) != size:
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        masks = minmax(masks, flat="zero")
        who = owner[start:stop]
        output = forward(images[who] * masks.to(images.dtype))
        scores[start:stop] = score(output, who).float()
    scores = scores.view(b, c)
    if weights == "softmax":
        return torch.softmax(scores, dim=1)
    return scores
