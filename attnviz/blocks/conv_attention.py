"""Attention-like convolutions on timm's weights: selective kernel (Li 2019), split attention (Zhang 2020).

Both replace a convolution (``out_channels``, ``stride``) and weigh their
parallel branches with a softmax across branches: a channel gate per
branch, here a :class:`Gate` so it is one capturable value. They compute
exactly what timm's classes compute with the same weights. They are no
function of the identity, so they have no identity init.
"""

from __future__ import annotations

import torch
from timm.layers import selective_kernel, split_attn
from torch import nn

from ..errors import AttnvizError
from .gate import Gate

__all__ = ["SelectiveKernel", "SelectiveKernelAttn", "SplitAttn"]


class SelectiveKernelAttn(selective_kernel.SelectiveKernelAttn):
    """timm's branch selection with its softmax as ``gate``: ``[B, paths, C, 1, 1]``, summing to 1."""

    def __init__(self, channels: int, num_paths: int = 2, attn_channels: int = 32, **kwargs):
        super().__init__(channels, num_paths, attn_channels, **kwargs)
        self.gate = Gate(nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc_select(self.act(self.bn(self.fc_reduce(x.sum(1).mean((2, 3), keepdim=True)))))
        b, c, h, w = z.shape
        return self.gate(z.view(b, self.num_paths, c // self.num_paths, h, w))


class SelectiveKernel(selective_kernel.SelectiveKernel):
    """Selective kernel convolution: 3x3 branches of growing dilation, mixed by ``attn.gate``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        kernel_size: int | list[int] | None = None,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        keep_3x3: bool = True,
        split_input: bool = True,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ):
        paths = len(kernel_size) if isinstance(kernel_size, (list, tuple)) else 2
        if split_input and in_channels % paths:
            raise AttnvizError(
                f"attention 'sk' splits its {in_channels} input channels across {paths} "
                "branches, which must divide them; pass split_input=False"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=list(kernel_size) if isinstance(kernel_size, tuple) else kernel_size,
            stride=stride,
            dilation=dilation,
            groups=groups,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            keep_3x3=keep_3x3,
            split_input=split_input,
            act_layer=act_layer,
            norm_layer=norm_layer,
        )
        attn_channels = self.attn.fc_reduce.out_channels
        self.attn = SelectiveKernelAttn(self.out_channels, self.num_paths, attn_channels)


class SplitAttn(split_attn.SplitAttn):
    """Split attention (ResNeSt): ``radix`` conv groups mixed by a radix softmax, ``rsoftmax``.

    ``rsoftmax`` is a :class:`Gate` around timm's ``RadixSoftmax``:
    ``[B, radix * C]`` (radix-major), a sigmoid when ``radix=1``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        radix: int = 2,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] | None = None,
        drop_layer: type[nn.Module] | None = None,
    ):
        out = out_channels or in_channels
        if in_channels % (groups * radix) or out % groups:
            raise AttnvizError(
                f"attention 'splat': groups*radix={groups * radix} must divide in_channels "
                f"({in_channels}) and groups={groups} must divide out_channels ({out})"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            radix=radix,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            act_layer=act_layer,
            norm_layer=norm_layer,
            drop_layer=drop_layer,
        )
        self.rsoftmax = Gate(self.rsoftmax)
