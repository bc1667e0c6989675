"""Bottleneck (BoTNet) and halo (HaloNet) self-attention on timm's weights, attention capturable.

Both replace a 3x3 convolution: they take ``dim_out`` and ``stride``.
timm's forwards inline their softmax; these route it through
:class:`AttentionMap` (``<block>.attention``) and otherwise compute
exactly what timm computes with the same weights. Map sizes that do not
suit a block (a position embedding of another size, a window that does
not divide the map) are refused with both sizes, when built for a
``feat_size`` and in the forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import bottleneck_attn, halo_attn

from ..errors import AttnvizError
from .attention_map import AttentionMap
from .query_maps import global_query_maps, halo_query_maps
from .sizes import check_divides, check_heads, check_stride, require_divisible, require_size

__all__ = ["BottleneckAttn", "HaloAttn"]

torch.fx.wrap("require_divisible")
torch.fx.wrap("require_size")


class BottleneckAttn(bottleneck_attn.BottleneckAttn):
    """Global multi-head self-attention with 2-D relative position logits, for one map size.

    ``feat_size=(H, W)`` is required (the position embedding is sized to
    it). ``attention``: ``[B, heads, HW, HW]``. ``stride=2`` average-pools the
    output; queries stay on the input grid.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        feat_size: tuple[int, int] | None = None,
        stride: int = 1,
        num_heads: int = 4,
        dim_head: int | None = None,
        qk_ratio: float = 1.0,
        qkv_bias: bool = False,
        scale_pos_embed: bool = False,
    ):
        if feat_size is None:
            raise AttnvizError(
                "attention 'bottleneck' needs feat_size=(H, W): its relative position "
                "embedding is sized to the map it attends over"
            )
        feat_size = (int(feat_size[0]), int(feat_size[1]))
        check_heads("bottleneck", dim_out or dim, num_heads)
        check_stride("bottleneck", stride, feat_size)
        super().__init__(
            dim,
            dim_out,
            feat_size=feat_size,
            stride=stride,
            num_heads=num_heads,
            dim_head=dim_head,
            qk_ratio=qk_ratio,
            qkv_bias=qkv_bias,
            scale_pos_embed=scale_pos_embed,
        )
        self.feat_size = feat_size
        self.attention = AttentionMap(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = require_size(x, "bottleneck", self.feat_size)
        b, _, h, w = x.shape
        heads, n = self.num_heads, h * w
        q, k, v = torch.split(self.qkv(x), [self.dim_out_qk, self.dim_out_qk, self.dim_out_v], 1)
        q = q.reshape(b * heads, self.dim_head_qk, -1).transpose(-1, -2)
        k = k.reshape(b * heads, self.dim_head_qk, -1)
        v = v.reshape(b * heads, self.dim_head_v, -1).transpose(-1, -2)
        if self.scale_pos_embed:
            logits = (q @ k + self.pos_embed(q)) * self.scale
        else:
            logits = (q @ k) * self.scale + self.pos_embed(q)
        attn = self.attention(logits.view(b, heads, n, n)).view(b * heads, n, n)
        out = (attn @ v).transpose(-1, -2).reshape(b, self.dim_out_v, h, w)
        return self.pool(out)

    def query_maps(
        self,
        attention: torch.Tensor,
        queries: Sequence[Sequence[int]],
        feat_size: Sequence[int] | None = None,
        head: int | None = None,
    ) -> torch.Tensor:
        """``[B, Q, H, W]``: each ``(y, x)`` query's weights over the map, heads averaged."""
        return global_query_maps(attention, queries, feat_size or self.feat_size, head=head)


class HaloAttn(halo_attn.HaloAttn):
    """Blocked local self-attention: each ``block_size`` block attends to a window ``halo_size`` wider.

    ``block_size`` must divide the map. ``attention``:
    ``[B, heads, blocks, q*q, win*win]`` with ``q = block_size // stride`` and
    ``win = block_size + 2 * halo_size`` (see :mod:`attnviz.blocks.query_maps`).
    ``feat_size`` is only checked, never needed.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        feat_size: tuple[int, int] | None = None,
        stride: int = 1,
        num_heads: int = 8,
        dim_head: int | None = None,
        block_size: int = 8,
        halo_size: int = 3,
        qk_ratio: float = 1.0,
        qkv_bias: bool = False,
        avg_down: bool = False,
        scale_pos_embed: bool = False,
    ):
        check_heads("halo", dim_out or dim, num_heads)
        check_stride("halo", stride, feat_size)
        if feat_size is not None:
            check_divides("halo", "block_size", block_size, *feat_size)
        super().__init__(
            dim,
            dim_out,
            stride=stride,
            num_heads=num_heads,
            dim_head=dim_head,
            block_size=block_size,
            halo_size=halo_size,
            qk_ratio=qk_ratio,
            qkv_bias=qkv_bias,
            avg_down=avg_down,
            scale_pos_embed=scale_pos_embed,
        )
        self.attention = AttentionMap(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = require_divisible(x, "halo", "block_size", self.block_size)
        b, _, h, w = x.shape
        bs, bq, halo, heads = self.block_size, self.block_size_ds, self.halo_size, self.num_heads
        gh, gw = h // bs, w // bs
        blocks = gh * gw
        q = self.q(x).reshape(-1, self.dim_head_qk, gh, bq, gw, bq).permute(0, 1, 3, 5, 2, 4)
        q = q.reshape(b * heads, self.dim_head_qk, -1, blocks).transpose(1, 3)
        kv = torch.nn.functional.pad(self.kv(x), [halo, halo, halo, halo])
        kv = kv.unfold(2, self.win_size, bs).unfold(3, self.win_size, bs)
        kv = kv.reshape(b * heads, self.dim_head_qk + self.dim_head_v, blocks, -1).permute(
            0, 2, 3, 1
        )
        k, v = torch.split(kv, [self.dim_head_qk, self.dim_head_v], dim=-1)
        if self.scale_pos_embed:
            logits = (q @ k.transpose(-1, -2) + self.pos_embed(q)) * self.scale
        else:
            logits = (q @ k.transpose(-1, -2)) * self.scale + self.pos_embed(q)
        shape = logits.shape
        attn = self.attention(logits.view(b, heads, blocks, shape[-2], shape[-1])).view(shape)
        out = (attn @ v).transpose(1, 3).reshape(-1, bq, bq, gh, gw)
        out = out.permute(0, 3, 1, 4, 2).contiguous()
        out = out.view(b, self.dim_out_v, h // self.block_stride, w // self.block_stride)
        return self.pool(out)

    def query_maps(
        self,
        attention: torch.Tensor,
        queries: Sequence[Sequence[int]],
        feat_size: Sequence[int],
        head: int | None = None,
    ) -> torch.Tensor:
        """``[B, Q, H, W]``: each ``(y, x)`` query's window weights placed on the map."""
        return halo_query_maps(
            attention,
            queries,
            feat_size,
            block_size=self.block_size,
            halo_size=self.halo_size,
            query_stride=self.block_stride,
            head=head,
        )
