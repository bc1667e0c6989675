"""Non-local blocks (Wang 2018) and BAT (Chi 2020) on timm's weights, with capturable attention.

Both are residual: ``x + branch(x)``; ``init="identity"`` zeroes the norm
that ends the branch (the non-local paper's own init), so the block adds
exactly 0 until trained. timm's forwards inline their softmax / sigmoid
normalisation; these route it through :class:`AttentionMap` and otherwise
compute exactly what timm computes with the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.layers import non_local_attn as timm_nl
from torch import nn

from .attention_map import AttentionMap
from .query_maps import bilinear_query_maps, global_query_maps
from .sizes import check_divides, require_divisible

__all__ = ["BatNonLocalAttn", "BilinearTransform", "NonLocalAttn"]

torch.fx.wrap("require_divisible")


class NonLocalAttn(timm_nl.NonLocalAttn):
    """Embedded-Gaussian non-local block: ``x + BN(z(softmax(t^T p / sqrt(C)) g))``.

    ``attention``: ``[B, HW, HW]``, one row per query position (row-major).
    timm zero-initialises the final BatchNorm, so the default block already
    starts as the identity, as in the paper.
    """

    def __init__(
        self,
        channels: int,
        use_scale: bool = True,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
    ):
        super().__init__(
            channels,
            use_scale=use_scale,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
        )
        self.attention = AttentionMap(dim=-1)

    def init_identity(self) -> None:
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, p, g = self.t(x), self.p(x), self.g(x)
        b, c, h, w = t.shape
        t = t.view(b, c, -1).permute(0, 2, 1)
        p = p.view(b, c, -1)
        g = g.view(b, c, -1).permute(0, 2, 1)
        attn = self.attention(torch.bmm(t, p) * self.scale)
        y = torch.bmm(attn, g).permute(0, 2, 1).reshape(b, c, h, w)
        return self.norm(self.z(y)) + x

    def query_maps(
        self,
        attention: torch.Tensor,
        queries: Sequence[Sequence[int]],
        feat_size: Sequence[int],
    ) -> torch.Tensor:
        """``[B, Q, H, W]``: the weights each ``(y, x)`` query puts on every position."""
        return global_query_maps(attention, queries, feat_size)


def _expand(weights: torch.Tensor, per_group: int, repeat: int) -> torch.Tensor:
    """``[B, G, n, n]`` -> ``[B, G * per_group, n * t, n * t]``: groups to channels, blocks to rows."""
    weights = weights.repeat_interleave(per_group, dim=1)
    eye = torch.eye(repeat, dtype=weights.dtype, device=weights.device)
    return torch.kron(weights, eye)


class BilinearTransform(nn.Module):
    """BAT's bilinear attentional transform ``y = P x Q``, parameters laid out as timm's.

    ``rows`` (``[B, groups, n, n]``, rows sum to 1) and ``cols`` (columns sum
    to 1) are the attention values; the ``n x n`` grid is ``block_size``, each
    weight covering a ``H/n x W/n`` stride of the map. timm's own class is
    traced as an opaque leaf; this one is traced through.
    """

    def __init__(
        self,
        in_channels: int,
        block_size: int,
        groups: int,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ):
        super().__init__()
        n = block_size
        self.conv1 = ConvNormAct(in_channels, groups, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.conv_p = nn.Conv2d(groups, n * n * groups, kernel_size=(n, 1))
        self.conv_q = nn.Conv2d(groups, n * n * groups, kernel_size=(1, n))
        self.conv2 = ConvNormAct(
            in_channels, in_channels, 1, act_layer=act_layer, norm_layer=norm_layer
        )
        self.rows = AttentionMap(dim=3, normalize="sigmoid")
        self.cols = AttentionMap(dim=2, normalize="sigmoid")
        self.block_size = block_size
        self.groups = groups
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = require_divisible(x, "bat", "block_size", self.block_size)
        b, c, h, w = x.shape
        n, g = self.block_size, self.groups
        out = self.conv1(x)
        p = self.rows(self.conv_p(F.adaptive_max_pool2d(out, (n, 1))).view(b, g, n, n))
        q = self.cols(self.conv_q(F.adaptive_max_pool2d(out, (1, n))).view(b, g, n, n))
        y = _expand(p, c // g, h // n).matmul(x).matmul(_expand(q, c // g, w // n))
        return self.conv2(y)


class BatNonLocalAttn(timm_nl.BatNonLocalAttn):
    """BAT: ``x + dropout(conv2(P conv1(x) Q))`` with BAT's grouped bilinear transform ``ba``.

    ``block_size`` (default 7) must divide the map. Attention values:
    ``ba.rows`` and ``ba.cols``; :meth:`query_maps` turns them into maps.
    """

    def __init__(
        self,
        channels: int,
        feat_size: tuple[int, int] | None = None,
        block_size: int = 7,
        groups: int = 2,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        drop_rate: float = 0.2,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ):
        if feat_size is not None:
            check_divides("bat", "block_size", block_size, *feat_size)
        super().__init__(
            channels,
            block_size=block_size,
            groups=groups,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            drop_rate=drop_rate,
            act_layer=act_layer,
            norm_layer=norm_layer,
        )
        mid = self.conv1.conv.out_channels
        self.ba = BilinearTransform(mid, block_size, groups, act_layer, norm_layer)

    def init_identity(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)
        nn.init.zeros_(self.conv2.bn.bias)

    def query_maps(
        self,
        attention: tuple[torch.Tensor, torch.Tensor],
        queries: Sequence[Sequence[int]],
        feat_size: Sequence[int],
        head: int | None = None,
    ) -> torch.Tensor:
        """``[B, Q, H, W]`` from the captured ``(ba.rows, ba.cols)``; groups averaged."""
        rows, cols = attention
        return bilinear_query_maps(rows, cols, queries, feat_size, head=head)
