"""Where does a query position look: captured attention weights as maps over the input grid.

A self-attention block's captured weights (``<block>.attention``) hold one
row of weights over the keys per query. These functions pick the rows of
given query positions and lay them out on the block's *input* grid:
``[B, Q, H, W]``, heads averaged (or one head). Queries are ``(y, x)``
positions on that grid; a block whose queries are strided (halo with
stride 2) reads the query cell that covers ``(y, x)``.

Layouts (positions flattened row-major, ``y * W + x``):

* global (non-local, bottleneck): ``[B, heads, N_q, H*W]`` or ``[B, N_q, H*W]``;
* halo: ``[B, heads, blocks, b*b, win*win]``, blocks row-major over the
  block grid, each query block attending to its ``win x win`` window
  (``win = block + 2 * halo``) on the zero-padded keys; weights on the
  padding fall outside the map and are dropped, so a map sums to at most 1;
* bilinear (BAT): ``rows`` and ``cols``, each ``[B, groups, n, n]``: output row
  block ``i`` mixes input row blocks ``j`` with ``rows[i, j]`` (at the same
  offset within the block), and likewise columns with ``cols[j, l]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import AttnvizError

__all__ = ["bilinear_query_maps", "global_query_maps", "halo_query_maps"]


def _queries(queries: Sequence[Sequence[int]], feat_size: Sequence[int]) -> list[tuple[int, int]]:
    h, w = int(feat_size[0]), int(feat_size[1])
    out = []
    for q in queries:
        if len(q) != 2 or not all(isinstance(v, int) for v in q):
            raise AttnvizError(f"a query is a (y, x) pair of ints, got {q!r}")
        y, x = int(q[0]), int(q[1])
        if not (0 <= y < h and 0 <= x < w):
            raise AttnvizError(f"query {(y, x)} is outside the {h}x{w} map")
        out.append((y, x))
    if not out:
        raise AttnvizError("give at least one query position (y, x)")
    return out


def _heads(attention: torch.Tensor, ndim: int, head: int | None) -> torch.Tensor:
    """``[B, heads, ...]`` reduced to one head or their mean (a missing heads dim is one head)."""
    if attention.ndim == ndim - 1:
        attention = attention.unsqueeze(1)
    if attention.ndim != ndim:
        raise AttnvizError(
            f"attention has shape {tuple(attention.shape)}; expected {ndim} dims (with heads) "
            f"or {ndim - 1} (one head)"
        )
    if head is None:
        return attention.mean(dim=1)
    if not 0 <= head < attention.shape[1]:
        raise AttnvizError(
            f"head {head} out of range: the attention has {attention.shape[1]} heads"
        )
    return attention[:, head]


def global_query_maps(
    attention: torch.Tensor,
    queries: Sequence[Sequence[int]],
    feat_size: Sequence[int],
    *,
    query_stride: int = 1,
    head: int | None = None,
) -> torch.Tensor:
    """Rows of ``[B, (heads,) N_q, H*W]`` attention for the queries: ``[B, Q, H, W]``."""
    h, w = int(feat_size[0]), int(feat_size[1])
    attn = _heads(attention, 4, head)
    if attn.shape[-1] != h * w:
        raise AttnvizError(
            f"attention has {attn.shape[-1]} keys, which is not a {h}x{w} map; pass the block's feat_size"
        )
    qw = w // query_stride
    rows = [(y // query_stride) * qw + x // query_stride for y, x in _queries(queries, (h, w))]
    return attn[:, rows].reshape(attn.shape[0], len(rows), h, w)


def halo_query_maps(
    attention: torch.Tensor,
    queries: Sequence[Sequence[int]],
    feat_size: Sequence[int],
    *,
    block_size: int,
    halo_size: int,
    query_stride: int = 1,
    head: int | None = None,
) -> torch.Tensor:
    """Windows of ``[B, (heads,) blocks, b*b, win*win]`` halo attention as ``[B, Q, H, W]``."""
    h, w = int(feat_size[0]), int(feat_size[1])
    attn = _heads(attention, 5, head)
    win = block_size + 2 * halo_size
    bq = block_size // query_stride
    grid_w = w // block_size
    if attn.shape[1] != (h // block_size) * grid_w or attn.shape[-1] != win * win:
        raise AttnvizError(
            f"attention of shape {tuple(attention.shape)} is not halo attention of {block_size}x"
            f"{block_size} blocks (halo {halo_size}) on a {h}x{w} map"
        )
    padded = attn.new_zeros(attn.shape[0], len(queries), h + 2 * halo_size, w + 2 * halo_size)
    for i, (y, x) in enumerate(_queries(queries, (h, w))):
        yq, xq = y // query_stride, x // query_stride
        by, bx = yq // bq, xq // bq
        inner = (yq % bq) * bq + xq % bq
        window = attn[:, by * grid_w + bx, inner].reshape(-1, win, win)
        top, left = by * block_size, bx * block_size  # window origin in padded coordinates
        padded[:, i, top : top + win, left : left + win] = window
    return padded[:, :, halo_size : halo_size + h, halo_size : halo_size + w]


def bilinear_query_maps(
    rows: torch.Tensor,
    cols: torch.Tensor,
    queries: Sequence[Sequence[int]],
    feat_size: Sequence[int],
    *,
    head: int | None = None,
) -> torch.Tensor:
    """BAT's row and column weights as ``[B, Q, H, W]``: ``rows[i, j] * cols[j', l]`` on a lattice."""
    h, w = int(feat_size[0]), int(feat_size[1])
    if rows.shape != cols.shape or rows.ndim != 4 or rows.shape[-1] != rows.shape[-2]:
        raise AttnvizError(
            f"rows {tuple(rows.shape)} and cols {tuple(cols.shape)} must both be [B, groups, n, n]"
        )
    n = rows.shape[-1]
    if h % n or w % n:
        raise AttnvizError(f"bilinear weights over a {n}x{n} grid do not fit a {h}x{w} map")
    th, tw = h // n, w // n
    if head is not None:  # one group, as a group dim of size 1
        _heads(rows, 4, head)
        rows, cols = rows[:, head : head + 1], cols[:, head : head + 1]
    b, g = rows.shape[:2]
    out = []
    for y, x in _queries(queries, (h, w)):
        row_w = rows.new_zeros(b, g, n, th)
        row_w[..., y % th] = rows[:, :, y // th, :]  # input rows j * th + (y % th)
        col_w = cols.new_zeros(b, g, n, tw)
        col_w[..., x % tw] = cols[:, :, :, x // tw]  # input columns j * tw + (x % tw)
        maps = row_w.reshape(b, g, h, 1) * col_w.reshape(b, g, 1, w)
        out.append(maps.mean(dim=1))
    return torch.stack(out, dim=1)
