"""Gather-Excite (Hu et al., NeurIPS 2018), working where timm's 'ge' is broken.

timm >= 1.0.21 passes ``*dd`` where ``**dd`` was meant when it builds
``GatherExcite``, so ``create_attn('ge', C)`` raises ``TypeError``. This
version keeps timm's arguments and forward, and builds its layers correctly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import ConvMlp, create_conv2d, get_act_layer, make_divisible
from torch import nn

from ..errors import AttnvizError
from .gate import Gate

__all__ = ["GatherExcite"]


class GatherExcite(nn.Module):
    """Gather (pool over an extent, optionally with depthwise convs) then excite.

    ``extent=0`` gathers globally; ``extent=2**k`` pools over that extent
    (parameter-free unless ``extra_params``) and upsamples the excitation
    back to the feature size; ``use_mlp`` adds the 1x1 bottleneck MLP.
    """

    def __init__(
        self,
        channels: int,
        feat_size: tuple[int, int] | None = None,
        extra_params: bool = False,
        extent: int = 0,
        use_mlp: bool = True,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        add_maxpool: bool = False,
        act_layer: type[nn.Module] | str = nn.ReLU,
        norm_layer: type[nn.Module] | None = nn.BatchNorm2d,
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        if extent < 0 or (extent and extent & (extent - 1)):
            raise AttnvizError(f"extent must be 0 (global) or a power of two, got {extent}")
        act_layer = get_act_layer(act_layer)
        self.add_maxpool = add_maxpool
        self.extent = extent
        self.gather: nn.Sequential | None = None
        self.gk = self.gs = 0
        if extra_params:
            self.gather = nn.Sequential()
            if extent == 0:
                if feat_size is None:
                    raise AttnvizError("extra_params with a global extent needs feat_size=(H, W)")
                self.gather.add_module(
                    "conv1",
                    create_conv2d(
                        channels,
                        channels,
                        kernel_size=feat_size,
                        stride=1,
                        padding=0,
                        depthwise=True,
                    ),
                )
                if norm_layer:
                    self.gather.add_module("norm1", norm_layer(channels))
            else:
                num_conv = int(math.log2(extent))
                for i in range(num_conv):
                    self.gather.add_module(
                        f"conv{i + 1}",
                        create_conv2d(channels, channels, kernel_size=3, stride=2, depthwise=True),
                    )
                    if norm_layer:
                        self.gather.add_module(f"norm{i + 1}", norm_layer(channels))
                    if i != num_conv - 1:
                        self.gather.add_module(f"act{i + 1}", act_layer(inplace=True))
        elif extent:
            self.gk = extent * 2 - 1
            self.gs = extent
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.mlp = ConvMlp(channels, rd_channels, act_layer=act_layer) if use_mlp else nn.Identity()
        self.gate = Gate(gate_layer)
        self._global = extent == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is not None:
            x_ge = self.gather(x)
        elif self._global:
            x_ge = x.mean(dim=(2, 3), keepdim=True)
            if self.add_maxpool:
                x_ge = 0.5 * x_ge + 0.5 * x.amax((2, 3), keepdim=True)
        else:
            x_ge = F.avg_pool2d(
                x,
                kernel_size=self.gk,
                stride=self.gs,
                padding=self.gk // 2,
                count_include_pad=False,
            )
            if self.add_maxpool:
                x_ge = 0.5 * x_ge + 0.5 * F.max_pool2d(
                    x, kernel_size=self.gk, stride=self.gs, padding=self.gk // 2
                )
        x_ge = self.mlp(x_ge)
        if not self._global:
            x_ge = F.interpolate(x_ge, size=x.shape[-2:])
        return x * self.gate(x_ge)
