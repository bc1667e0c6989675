"""Map-size rules of blocks with windows, block grids or position embeddings.

Each rule is checked twice: when the block is built for a known
``feat_size`` (``check_*``) and in its forward (``require_*``, which return
their input so that a traced graph keeps the call). Modules that call a
``require_*`` function in a forward mark it with ``torch.fx.wrap`` so FX
records it as one call instead of tracing its ``if``. Messages name the
block and both sizes.
"""

from __future__ import annotations

import torch

from ..errors import AttnvizError

__all__ = [
    "check_divides",
    "check_heads",
    "check_stride",
    "require_divisible",
    "require_size",
]


def check_divides(block: str, what: str, size: int, h: int, w: int) -> None:
    """``size`` (a window or grid) must divide an ``h`` x ``w`` map."""
    if h % size or w % size:
        raise AttnvizError(
            f"attention {block!r}: its {what} {size} must divide the feature map, "
            f"which is {h}x{w}; pass a {what} that divides both"
        )


def check_heads(block: str, channels: int, num_heads: int) -> None:
    if num_heads < 1 or channels % num_heads:
        raise AttnvizError(
            f"attention {block!r}: num_heads={num_heads} must divide its output channels ({channels})"
        )


def check_stride(block: str, stride: int, feat_size: tuple[int, int] | None) -> None:
    """Self-attention blocks downsample by 2 (pooling) or not at all."""
    if stride not in (1, 2):
        raise AttnvizError(f"attention {block!r} takes stride 1 or 2, got {stride}")
    if stride == 2 and feat_size is not None and (feat_size[0] % 2 or feat_size[1] % 2):
        raise AttnvizError(
            f"attention {block!r} with stride 2 halves the map, which must be even; "
            f"it is {feat_size[0]}x{feat_size[1]}"
        )


def require_divisible(x: torch.Tensor, block: str, what: str, size: int) -> torch.Tensor:
    check_divides(block, what, size, x.shape[-2], x.shape[-1])
    return x


def require_size(x: torch.Tensor, block: str, feat_size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2], x.shape[-1]
    if (h, w) != tuple(feat_size):
        raise AttnvizError(
            f"attention {block!r} was built for {feat_size[0]}x{feat_size[1]} maps (feat_size), "
            f"got {h}x{w}; build it with feat_size=({h}, {w})"
        )
    return x
