"""The attention map: a self-attention block's weights, as one named, capturable value."""

from __future__ import annotations

import torch
from torch import nn

from .._tracing import register_leaf
from ..errors import AttnvizError

__all__ = ["NORMALIZATIONS", "AttentionMap"]

NORMALIZATIONS = ("softmax", "sigmoid")


@register_leaf
class AttentionMap(nn.Module):
    """Turns attention logits into the weights that mix the values.

    ``softmax`` over ``dim`` (the keys), or ``normalize="sigmoid"``: a sigmoid
    divided by its sum over ``dim`` (BAT's bilinear weights). It holds no
    parameters and computes exactly what the inline op did, so a block that
    routes its softmax through it keeps its output bit for bit. Traced as a
    leaf: the weights are one value, ``<block>.attention``, for
    :func:`attnviz.with_intermediates`.
    """

    def __init__(self, dim: int = -1, normalize: str = "softmax"):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise AttnvizError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.dim = dim
        self.normalize = normalize

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.normalize == "softmax":
            return logits.softmax(dim=self.dim)
        weights = logits.sigmoid()
        return weights / weights.sum(dim=self.dim, keepdim=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, normalize={self.normalize!r}"
