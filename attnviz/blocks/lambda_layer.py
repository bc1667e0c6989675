"""Lambda layer (Bello 2021) on timm's weights, its normalised keys capturable.

A lambda layer has no attention map: no query is ever compared with a key.
It summarises the context into a linear map (the *lambda*) and applies it
to every query. The one attention-like value is the keys' softmax over
positions, ``keys`` ``[B, K, H*W]``: each of the K key channels is a
distribution over the map that pools the values into the content lambda
(like GCNet's ``attn_pool``). There is therefore no ``query_maps``.
"""

from __future__ import annotations

import torch
from timm.layers import lambda_layer

from ..errors import AttnvizError
from .attention_map import AttentionMap
from .sizes import check_heads, check_stride, require_size

__all__ = ["LambdaLayer"]

torch.fx.wrap("require_size")


class LambdaLayer(lambda_layer.LambdaLayer):
    """Content lambda from softmax-normalised keys plus a position lambda, applied per query.

    ``r`` (default 9): position lambdas from a local ``r x r`` convolution,
    any map size. ``r=None``: relative position embeddings, which need
    ``feat_size=(H, W)`` and only take that size. Unlike timm's forward
    (which reshapes to the input's channel count), ``dim_out != dim`` works.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        feat_size: tuple[int, int] | None = None,
        stride: int = 1,
        num_heads: int = 4,
        dim_head: int = 16,
        r: int | None = 9,
        qk_ratio: float = 1.0,
        qkv_bias: bool = False,
    ):
        check_heads("lambda", dim_out or dim, num_heads)
        check_stride("lambda", stride, feat_size)
        if r is None and feat_size is None:
            raise AttnvizError(
                "attention 'lambda' with r=None (relative position embedding) needs feat_size=(H, W)"
            )
        if r is not None and (r < 1 or r % 2 == 0):
            raise AttnvizError(f"attention 'lambda': r must be a positive odd int, got {r}")
        super().__init__(
            dim,
            dim_out,
            feat_size=feat_size,
            stride=stride,
            num_heads=num_heads,
            dim_head=dim_head,
            r=r,
            qk_ratio=qk_ratio,
            qkv_bias=qkv_bias,
        )
        self.keys = AttentionMap(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feat_size is not None:
            x = require_size(x, "lambda", self.feat_size)
        b, _, h, w = x.shape
        m = h * w
        q, k, v = torch.split(
            self.qkv(x), [self.num_heads * self.dim_qk, self.dim_qk, self.dim_v], dim=1
        )
        q = self.norm_q(q).reshape(b, self.num_heads, self.dim_qk, m).transpose(-1, -2)
        v = self.norm_v(v).reshape(b, self.dim_v, m).transpose(-1, -2)
        k = self.keys(k.reshape(b, self.dim_qk, m))
        content_out = q @ (k @ v).unsqueeze(1)
        if self.pos_emb is None:
            pos_lam = self.conv_lambda(v.reshape(b, 1, h, w, self.dim_v))
            pos_lam = pos_lam.reshape(b, 1, self.dim_qk, m, self.dim_v).transpose(2, 3)
        else:
            idx = self.rel_pos_indices
            pos_emb = self.pos_emb[idx[0], idx[1]].expand(b, -1, -1, -1)
            pos_lam = (pos_emb.transpose(-1, -2) @ v.unsqueeze(1)).unsqueeze(1)
        pos_out = (q.unsqueeze(-2) @ pos_lam).squeeze(-2)
        out = (content_out + pos_out).transpose(-1, -2).reshape(b, -1, h, w)
        return self.pool(out)
