"""SRM: style-based recalibration (Lee et al., ICCV 2019).

Style pooling takes each channel's mean and standard deviation over the
map (its "style"); style integration weighs the two per channel (a
channel-wise fully connected layer, ``cfc`` ``[C, 2]``), normalises with
BatchNorm and gates. 3 parameters per channel plus BN, no bottleneck.
"""

from __future__ import annotations

import torch
from torch import nn

from .gate import Gate

__all__ = ["SRM"]


class SRM(nn.Module):
    """``x * gate(BN(cfc[:, 0] * mean + cfc[:, 1] * std))`` per channel.

    ``std = sqrt(var + eps)`` with the unbiased variance (n = HW - 1, at
    least 1, so a 1x1 map gives ``sqrt(eps)``, not NaN). ``cfc`` starts at 0 as
    in the paper's code, so the default gate starts at ``sigmoid(BN(0))``.
    """

    def __init__(self, channels: int, eps: float = 1e-5, gate_layer: str = "sigmoid"):
        super().__init__()
        self.eps = eps
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        self.bn = nn.BatchNorm2d(channels)
        self.gate = Gate(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        flat = x.reshape(b, c, -1)
        mean = flat.mean(dim=2)
        n = torch.sym_max(flat.shape[2] - 1, 1)
        var = (flat - mean.unsqueeze(2)).pow(2).sum(dim=2) / n
        std = (var + self.eps).sqrt()
        z = mean * self.cfc[:, 0] + std * self.cfc[:, 1]
        return x * self.gate(self.bn(z.view(b, c, 1, 1)))

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
