"""timm's gate blocks that need a small change to expose their gates or keep identity init exact.

* ``LightCbam``: timm's light CBAM applies ``F.sigmoid`` inline in its channel
  attention; here it goes through the channel ``gate`` (exactly the same
  output with the default ``sigmoid``, and the gate is capturable).
* The coordinate-attention family (``CoordAttn``, ``SimpleCoordAttn``,
  ``EfficientLocalAttn``, ``StripAttn``) is timm's, with an identity init that
  refuses ``has_skip=True`` (``x * g + x`` is ``2x`` when ``g = 1``), and
  ``StripAttn`` with a signature that rejects unknown arguments.
"""

from __future__ import annotations

import torch
from timm.layers import cbam, coord_attn
from torch import nn

from ..errors import AttnvizError

__all__ = [
    "CoordAttn",
    "EfficientLocalAttn",
    "LightCbam",
    "LightChannelAttn",
    "SimpleCoordAttn",
    "StripAttn",
]


class LightChannelAttn(cbam.LightChannelAttn):
    """avg+max pooled once, shared MLP, ``gate`` (timm hard-codes a sigmoid here)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = 0.5 * x.mean((2, 3), keepdim=True) + 0.5 * x.amax((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(pooled))))


class LightCbam(nn.Module):
    """timm's ``LightCbamModule`` (same parameters): light channel gate, then light spatial gate."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        spatial_kernel_size: int = 7,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: str = "sigmoid",
        mlp_bias: bool = False,
    ):
        super().__init__()
        self.channel = LightChannelAttn(
            channels, rd_ratio, rd_channels, rd_divisor, act_layer, gate_layer, mlp_bias
        )
        self.spatial = cbam.LightSpatialAttn(spatial_kernel_size, gate_layer=gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class _GatedIdentity:
    """Identity init through the gates; impossible with the extra skip (``x * 1 + x``)."""

    has_skip: bool

    def init_identity(self) -> None:
        if self.has_skip:
            raise AttnvizError(
                f"{type(self).__name__} with has_skip=True computes x * g + x, which is 2x when "
                "its gate is 1: init='identity' needs has_skip=False"
            )


class CoordAttn(_GatedIdentity, coord_attn.CoordAttn):
    """Coordinate attention (Hou 2021): gates along H (``gate``) and W (``gate_1``)."""


class SimpleCoordAttn(_GatedIdentity, coord_attn.SimpleCoordAttn):
    """timm's simplified coordinate attention: linear layers, no norm, one gate of summed logits."""


class EfficientLocalAttn(_GatedIdentity, coord_attn.EfficientLocalAttn):
    """Efficient local attention (Xu 2024): 1-D depthwise convs + GroupNorm, gates along H and W."""


class StripAttn(_GatedIdentity, coord_attn.StripAttn):
    """timm's minimal strip attention: H and W strip pools, optional depthwise convs, one gate."""

    def __init__(
        self,
        channels: int,
        use_conv: bool = True,
        kernel_size: int = 3,
        bias: bool = False,
        gate_layer: str = "sigmoid",
        has_skip: bool = False,
    ):
        super().__init__(
            channels,
            use_conv=use_conv,
            kernel_size=kernel_size,
            bias=bias,
            gate_layer=gate_layer,
            has_skip=has_skip,
        )
