"""SimAM: a parameter-free attention (Yang et al., ICML 2021)."""

from __future__ import annotations

import torch
from torch import nn

from .gate import Gate

__all__ = ["SimAM"]


class SimAM(nn.Module):
    """Parameter-free 3-D attention from an energy function per neuron.

    ``e_inv = (x - mu)^2 / (4 * (var + e_lambda)) + 0.5`` per channel over
    H x W (var uses n = HW - 1, at least 1: a 1x1 map has d = 0, not 0/0), and ``y = x * sigmoid(e_inv)``. ``channels``
    is accepted and ignored, for the registry's ``block(channels, **kw)`` rule.
    """

    def __init__(
        self, channels: int | None = None, e_lambda: float = 1e-4, gate_layer: str = "sigmoid"
    ):
        super().__init__()
        self.e_lambda = e_lambda
        self.gate = Gate(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = torch.sym_max(x.shape[2] * x.shape[3] - 1, 1)  # traceable max
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        v = d.sum(dim=(2, 3), keepdim=True) / n
        e_inv = d / (4 * (v + self.e_lambda)) + 0.5
        return x * self.gate(e_inv)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
