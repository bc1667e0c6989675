"""Triplet attention (Misra et al., WACV 2021): three rotated spatial gates, averaged.

Each branch rotates the tensor so that one of C, H, W becomes the leading
axis, pools it away with Z-pool (max and mean: 2 channels), runs a
``k x k`` conv + BN over the two remaining axes and gates. The three
branches see the (C, W), (C, H) and (H, W) planes: cross-dimension
interaction without any channel reduction. The paper averages the three
gated tensors, ``(x*g_cw + x*g_ch + x*g_hw) / 3``; this block computes the
equal ``x * (g_cw + g_ch + g_hw) / 3`` so that gates of exactly 1 give
exactly ``x`` (identity init).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AttnvizError
from .gate import Gate

__all__ = ["TripletAttention", "ZPoolGate"]

#: Rotations (each its own inverse) that bring the pooled axis to dim 1.
_ROTATIONS = {"cw": (0, 2, 1, 3), "ch": (0, 3, 2, 1), "hw": (0, 1, 2, 3)}


class ZPoolGate(nn.Module):
    """One branch: rotate, Z-pool the leading axis, conv + BN, rotate back, gate.

    Returns the gate in the input's layout, broadcastable against it:
    ``cw``: ``[B, C, 1, W]``, ``ch``: ``[B, C, H, 1]``, ``hw``: ``[B, 1, H, W]``.
    """

    def __init__(self, plane: str, kernel_size: int = 7, gate_layer: str = "sigmoid"):
        super().__init__()
        self.plane = plane
        self.perm = _ROTATIONS[plane]
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)  # the paper's code: Caffe-style 0.99 decay
        self.gate = Gate(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x.permute(self.perm)
        pooled = torch.cat([r.amax(dim=1, keepdim=True), r.mean(dim=1, keepdim=True)], dim=1)
        return self.gate(self.bn(self.conv(pooled)).permute(self.perm))

    def extra_repr(self) -> str:
        return f"plane={self.plane!r}"


class TripletAttention(nn.Module):
    """``x * mean(g_cw, g_ch, g_hw)``; ``no_spatial=True`` drops the (H, W) branch.

    Gates: ``cw.gate``, ``ch.gate`` and ``hw.gate``. ``channels`` is accepted
    for the registry's ``block(channels, **kw)`` rule: the block has 3 x
    (2 k^2 + 2) parameters whatever the width.
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int = 7,
        no_spatial: bool = False,
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise AttnvizError(f"kernel_size must be a positive odd int, got {kernel_size}")
        self.cw = ZPoolGate("cw", kernel_size, gate_layer)
        self.ch = ZPoolGate("ch", kernel_size, gate_layer)
        self.hw = None if no_spatial else ZPoolGate("hw", kernel_size, gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.cw(x) + self.ch(x)
        if self.hw is None:
            return x * (g / 2)
        return x * ((g + self.hw(x)) / 3)
