"""Ablation-CAM channel weights: how much the target score drops when a channel is zeroed.

Ablation-CAM (Desai & Ramaswamy, WACV 2020): for each channel ``k`` of the layer,
set ``A^k`` to zero and run the rest of the model; with ``y`` the target score and
``y_k`` the score with channel ``k`` ablated, the weight is ``w_k = (y - y_k) / y``
and the map ``ReLU(Σ_k w_k A^k)``. No gradient is used. An image whose score is
exactly 0 gets all-zero weights (the ratio is undefined there).

The ``B·C`` ablated copies go through the model in chunks of ``batch_size``, and
only through what comes *after* the layer (:func:`attnviz._tail.layer_tail`): the
layer's value is replaced by the ablated copies, the values the rest of the model
reads from before the layer (skip connections, the input size) are taken from the
ordinary forward. Before using that cut on a batch it is checked to reproduce the
model's scores; where it does not (or an in-place op makes it unsafe) every chunk
runs the whole model on repeated images instead, as pytorch-grad-cam does.

Against pytorch-grad-cam's ``AblationCAM``: the same weights for layers whose
activations reach 0 (post-ReLU layers, where it also zeroes the channel). On
layers whose minimum is not 0 it sets the channel to ``min - 1e7`` instead,
lowering the minimum again for each copy of a chunk; that is not the paper's
ablation and is not reproduced here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._tail import LayerTail

__all__ = ["ablation_weights"]


def ablation_weights(
    tail: LayerTail,
    acts: Tensor,
    values: dict[str, Any],
    images: Tensor,
    score: Callable[[Any, Tensor], Tensor],
    reference: Tensor,
    *,
    batch_size: int,
) -> Tensor:
    """Channel weights ``[B, C]`` for the layer's value ``acts`` ``[B, C, h, w]`` on ``images``.

    ``values`` holds the tail's frontier captured in the same forward,
    ``score(output, owner)`` the target scores of a batch whose row ``r`` is a copy of
    image ``owner[r]``, and ``reference`` the scores of the unablated images.
    """
    b, c = acts.shape[:2]
    acts = acts.detach()
    run = tail.runner(acts, values, images, score, reference)
    owner = torch.arange(b, device=acts.device).repeat_interleave(c)
    channel = torch.arange(c, device=acts.device).repeat(b)
    ablated = torch.empty(b * c, dtype=torch.float32, device=acts.device)
    for start in range(0, b * c, batch_size):
        stop = min(start + batch_size, b * c)
        who = owner[start:stop]
        copies = acts[who].clone()
        copies[torch.arange(stop - start, device=acts.device), channel[start:stop]] = 0
        ablated[start:stop] = score(run(copies, who), who).float()
    base = reference.detach().float()[:, None]
    usable = base != 0
    return torch.where(usable, (base - ablated.view(b, c)) / torch.where(usable, base, 1), 0)
