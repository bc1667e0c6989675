"""The gate: the attention weights of a block, as one named, capturable value."""

from __future__ import annotations

import torch
from torch import nn

from .._tracing import register_leaf
from ..errors import AttnvizError

__all__ = ["Gate", "make_gate"]


def _activation(act: nn.Module | str) -> nn.Module:
    if isinstance(act, nn.Module):
        return act
    from timm.layers import create_act_layer

    module = create_act_layer(act)
    if module is None:
        raise AttnvizError(f"unknown gate activation {act!r}")
    return module


@register_leaf
class Gate(nn.Module):
    """Turns attention logits into the weights that multiply the features.

    ``g = act(z)``; with ``identity=True`` the gate becomes ``1 + blend * (g - 1)``
    with a learnable scalar ``blend`` initialised at exactly 0, so the gate is
    exactly 1 (and the block exactly the identity) until training moves
    ``blend``. Gates are traced as leaves, so a block's gate is one value named
    ``<block>.gate`` for :func:`attnviz.with_intermediates`.
    """

    def __init__(self, act: nn.Module | str = "sigmoid", *, identity: bool = False):
        super().__init__()
        self.act = _activation(act)
        self.blend: nn.Parameter | None
        if identity:
            self.blend = nn.Parameter(torch.zeros(()))
        else:
            self.register_parameter("blend", None)

    @property
    def identity(self) -> bool:
        return self.blend is not None

    def make_identity(self) -> None:
        """Add the zero-initialised blend (no-op when already present)."""
        if self.blend is None:
            ref = next(self.act.parameters(), None)
            self.blend = nn.Parameter(
                torch.zeros((), device=ref.device if ref is not None else None)
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = self.act(z)
        if self.blend is not None:
            g = 1 + self.blend * (g - 1)
        return g

    def extra_repr(self) -> str:
        return "identity=True" if self.blend is not None else ""


def make_gate(act: nn.Module | str = "sigmoid") -> Gate:
    return Gate(act)
