"""BAM: bottleneck attention module (Park et al., BMVC 2018).

A channel branch (GAP -> bottleneck MLP with BN) and a spatial branch
(1x1 reduction -> two dilated 3x3 convs -> 1x1 to one map) are summed and
gated: ``F' = F + F * sigmoid(M_c(F) + M_s(F))``. The paper sums the two
branches; its public code multiplies them (this block follows the paper).
Written as ``F * gate(z)`` with the gate ``1 + sigmoid(z)``, the
multiplier of ``F``, so that the identity init (gate exactly 1) gives
exactly ``F``.
"""

from __future__ import annotations

import torch
from timm.layers import ConvMlp, ConvNormAct, make_divisible
from torch import nn

from .gate import Gate

__all__ = ["BAM", "ResidualSigmoid"]


class ResidualSigmoid(nn.Module):
    """``1 + sigmoid(z)``: BAM's residual gate, in (1, 2)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 1 + torch.sigmoid(z)


class BAM(nn.Module):
    """``x * gate(M_c(x) + M_s(x))``, ``gate = 1 + sigmoid``; ``[B, C, H, W]`` gate values.

    ``rd_ratio`` (1/16) sets the bottleneck of both branches, ``dilation``
    (4) and ``num_dilated`` (2) the spatial branch's context.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        dilation: int = 4,
        num_dilated: int = 2,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ):
        super().__init__()
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.channel = ConvMlp(channels, rd_channels, act_layer=act_layer, norm_layer=norm_layer)
        layers: list[nn.Module] = [
            ConvNormAct(channels, rd_channels, 1, act_layer=act_layer, norm_layer=norm_layer)
        ]
        layers += [
            ConvNormAct(
                rd_channels,
                rd_channels,
                3,
                dilation=dilation,
                act_layer=act_layer,
                norm_layer=norm_layer,
            )
            for _ in range(num_dilated)
        ]
        layers.append(nn.Conv2d(rd_channels, 1, 1))
        self.spatial = nn.Sequential(*layers)
        self.gate = Gate(ResidualSigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m_c = self.channel(x.mean(dim=(2, 3), keepdim=True))
        return x * self.gate(m_c + self.spatial(x))
