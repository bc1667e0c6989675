"""Global context block (GCNet, Cao et al. 2019) as the paper defines it."""

from __future__ import annotations

import torch
from timm.layers import GlobalContext
from torch import nn

__all__ = ["GlobalContextBlock"]


class GlobalContextBlock(GlobalContext):
    """timm's GlobalContext with the paper's defaults and named attention values.

    Defaults follow the paper and mmcv: attention pooling, *add* fusion,
    bottleneck ratio 1/16 with LayerNorm, and the last layer (weight and
    bias) zeroed so the block starts as the identity. timm zeroes only the
    weight, and its ``gc`` fuses by scaling at ratio 1/8 (``gc_scale`` here).
    The softmax over positions is the module ``attn_pool`` (a capturable
    value, [B, 1, HW, 1]); with ``fuse_scale`` the channel gate is ``gate``.
    """

    def __init__(
        self,
        channels: int,
        use_attn: bool = True,
        fuse_add: bool = True,
        fuse_scale: bool = False,
        rd_ratio: float = 1.0 / 16,
        **kwargs,
    ):
        super().__init__(
            channels,
            use_attn=use_attn,
            fuse_add=fuse_add,
            fuse_scale=fuse_scale,
            rd_ratio=rd_ratio,
            **kwargs,
        )
        self.attn_pool = nn.Softmax(dim=-1)
        if self.mlp_scale is None:
            self.gate = None  # timm builds it unconditionally; unused params break DDP
        self._zero_last()

    def _zero_last(self) -> None:
        if self.mlp_add is not None:
            nn.init.zeros_(self.mlp_add.fc2.weight)
            if self.mlp_add.fc2.bias is not None:
                nn.init.zeros_(self.mlp_add.fc2.bias)

    def init_identity(self) -> None:
        """Zero the additive branch's last layer: the block adds exactly 0."""
        self._zero_last()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.conv_attn is not None:
            attn = self.attn_pool(self.conv_attn(x).reshape(b, 1, h * w)).unsqueeze(3)
            context = (x.reshape(b, c, h * w).unsqueeze(1) @ attn).view(b, c, 1, 1)
        else:
            context = x.mean(dim=(2, 3), keepdim=True)
        if self.mlp_scale is not None:
            x = x * self.gate(self.mlp_scale(context))
        if self.mlp_add is not None:
            x = x + self.mlp_add(context)
        return x
