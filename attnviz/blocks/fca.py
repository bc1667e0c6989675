"""FcaNet's multi-spectral channel attention (Qin et al., ICCV 2021).

Global average pooling is the lowest frequency of a 2-D DCT. FcaNet
splits the channels into ``n`` groups and pools each group with another
DCT basis function, so the squeeze keeps more than the mean; the
excitation is SE's (bottleneck MLP, sigmoid gate). Frequencies are chosen
on a 7x7 grid and scaled to the DCT size (``(u, v)`` on 7x7 is
``(2u, 2v)`` on 14x14); a map of another size is average-pooled to the DCT
size first, as FcaNet does for detection. The selections are the paper's
(``top``: best single frequencies on ImageNet first, ``low``: lowest first).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from timm.layers import ConvMlp, make_divisible
from torch import nn

from .._select import unknown_name_error
from ..errors import AttnvizError
from .gate import Gate

__all__ = ["FREQUENCIES", "FcaModule", "dct_filters"]

_TOP = (
    "0,0 0,1 6,0 0,5 0,2 1,0 1,2 4,0 5,0 1,6 3,0 0,4 0,6 0,3 3,5 2,2 "
    "4,6 6,3 3,3 5,3 5,5 2,1 6,1 5,2 5,4 3,2 3,1 4,1 2,3 2,0 6,5 1,3"
)
_LOW = (
    "0,0 0,1 1,0 1,1 0,2 2,0 2,1 1,2 2,2 0,3 3,0 4,0 0,4 1,3 3,1 0,5 "
    "1,4 2,3 3,2 4,1 5,0 0,6 1,5 2,4 3,3 4,2 5,1 6,0 1,6 2,5 3,4 4,3"
)


def _pairs(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(v) for v in p.split(",")) for p in text.split())  # type: ignore[misc]


#: ``"top16"`` -> 16 (u, v) frequencies on the 7x7 grid (u along H, v along W).
FREQUENCIES = {
    f"{kind}{n}": _pairs(text)[:n]
    for kind, text in (("top", _TOP), ("low", _LOW))
    for n in (1, 2, 4, 8, 16, 32)
}


def dct_filters(channels: int, freqs: tuple[tuple[int, int], ...], size: int) -> torch.Tensor:
    """``[C, size, size]``: orthonormal 2-D DCT-II basis of ``freqs[i]`` for channel group ``i``."""
    basis = scipy.fft.dct(np.eye(size), type=2, norm="ortho", axis=0)  # basis[k, n]
    per = channels // len(freqs)
    filters = np.concatenate(
        [np.broadcast_to(np.outer(basis[u], basis[v]), (per, size, size)) for u, v in freqs]
    )
    return torch.from_numpy(filters.astype(np.float32))


class FcaModule(nn.Module):
    """Multi-spectral channel attention: DCT pooling per channel group -> MLP -> ``gate``.

    ``freq_sel``: a key of :data:`FREQUENCIES` (its count must divide
    ``channels``); ``dct_size``: a multiple of 7 (the paper uses the stage's
    map size: 56, 28, 14, 7). The DCT filters are a fixed, non-persistent
    buffer rebuilt from these settings.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        freq_sel: str = "top16",
        dct_size: int = 7,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        if freq_sel not in FREQUENCIES:
            raise unknown_name_error("fca frequency selection", freq_sel, list(FREQUENCIES))
        freqs = FREQUENCIES[freq_sel]
        if channels % len(freqs):
            raise AttnvizError(
                f"attention 'fca': {freq_sel} gives {len(freqs)} channel groups, which must "
                f"divide the {channels} channels"
            )
        if dct_size < 7 or dct_size % 7:
            raise AttnvizError(f"attention 'fca': dct_size must be a multiple of 7, got {dct_size}")
        scale = dct_size // 7
        self.freq_sel, self.dct_size = freq_sel, dct_size
        self.register_buffer(
            "dct",
            dct_filters(channels, tuple((u * scale, v * scale) for u, v in freqs), dct_size),
            persistent=False,
        )
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.mlp = ConvMlp(channels, rd_channels, act_layer=act_layer, bias=False)
        self.gate = Gate(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, self.dct_size)  # exact when the map is dct_size already
        y = (pooled * self.dct).sum(dim=(2, 3), keepdim=True)
        return x * self.gate(self.mlp(y))

    def extra_repr(self) -> str:
        return f"freq_sel={self.freq_sel!r}, dct_size={self.dct_size}"
