"""Counter-based Poisson(1) bootstrap weights: the same weight for an image wherever it is seen.

The Poisson bootstrap replaces "resample n images with replacement" by "give image ``i``
an independent count ``w_ib ~ Poisson(1)`` in replicate ``b``". Any statistic built from
sums over images then becomes ``B`` running weighted sums, which stream over batches and
add up across processes. For the result not to depend on how images are batched or
which rank sees them, ``w_ib`` must be a function of ``(seed, image index, b)`` alone,
not of a generator's position in a stream. So it is computed from a hash:

* a 32-bit integer mixer (``triple32``, from C. Wellons' hash-prospector search: a
  bijection of ``[0, 2³²)`` with near-ideal avalanche) is chained over the seed, the two
  32-bit halves of the image index and the replicate number;
* the 32-bit hash ``h`` is turned into a count by the Poisson(1) inverse CDF on integer
  thresholds: ``w = #{k : h ≥ round(2³² F(k))}``, ``F`` the Poisson(1) CDF.

Every step is integer arithmetic on int64 tensors whose values stay below 2⁴⁹ (32-bit
products are split in 16-bit halves), so nothing overflows and the weights are the same
bits on any device, batch split or process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import StatisticsError

__all__ = ["image_keys", "poisson_weights", "poisson_weights_for_keys"]

_M32 = 0xFFFFFFFF
# Domain constants, so that seed, image and replicate keys never share a hash chain.
_IMAGE_DOMAIN = 0x9E3779B9
_REPLICATE_DOMAIN = 0x85EBCA6B


def _mul32(x: Tensor, c: int) -> Tensor:
    """``x · c mod 2³²`` for ``x`` in ``[0, 2³²)`` without int64 overflow (16-bit halves of ``c``)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _mix32(x: Tensor) -> Tensor:
    """``triple32``: a bijective 32-bit integer hash (values in ``[0, 2³²)``, int64 tensors)."""
    x = x ^ (x >> 17)
    x = _mul32(x, 0xED5AD4BB)
    x = x ^ (x >> 11)
    x = _mul32(x, 0xAC4C1B51)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x31848BAB)
    return x ^ (x >> 14)


def _seed_key(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise StatisticsError(f"bootstrap seed must be an int, got {type(seed).__name__}")
    return _seed_key_of(seed % (1 << 64))


@functools.lru_cache(maxsize=256)
def _seed_key_of(s: int) -> int:
    t = torch.tensor([s >> 32], dtype=torch.int64)
    return int(_mix32(_mix32(t) ^ (s & _M32)))


def _as_index(index: Tensor | Sequence[int], device: torch.device | str | None) -> Tensor:
    if not isinstance(index, Tensor):
        index = torch.as_tensor(list(index), dtype=torch.int64)
    if index.ndim != 1:
        raise StatisticsError(f"image index must be 1-D [n], got shape {tuple(index.shape)}")
    if index.is_floating_point() or index.dtype == torch.bool or index.is_complex():
        raise StatisticsError(f"image index must hold integers, got dtype {index.dtype}")
    index = index.to(device=device if device is not None else index.device, dtype=torch.int64)
    if index.numel() and int(index.min()) < 0:
        raise StatisticsError(
            f"image index must be ≥ 0 (the image's position in the dataset), got {int(index.min())}"
        )
    return index


def image_keys(seed: int, index: Tensor | Sequence[int]) -> Tensor:
    """A 32-bit key per image ``[n]`` (int64 in ``[0, 2³²)``), a hash of ``(seed, index)``.

    The per-image half of :func:`poisson_weights`; also used to fingerprint which images
    an accumulator saw (a sum of keys).
    """
    idx = _as_index(index, None)
    base = _seed_key(seed) ^ _IMAGE_DOMAIN
    return _mix32(_mix32(base ^ (idx >> 32)) ^ (idx & _M32))


def _thresholds() -> list[int]:
    """``round(2³² F(k))`` for ``k = 0, 1, ...`` until it reaches ``2³²`` (Poisson(1) CDF ``F``)."""
    out, terms, k = [], [], 0
    while True:
        terms.append(math.exp(-1.0) / math.factorial(k))
        t = round(math.fsum(terms) * 2.0**32)
        if t >= 1 << 32:
            return out
        out.append(t)
        k += 1


_POISSON_THRESHOLDS = _thresholds()


def poisson_weights(
    seed: int,
    index: Tensor | Sequence[int],
    replicates: int,
    *,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Poisson(1) bootstrap weights ``[n, replicates]`` for the images ``index`` ``[n]``.

    Row ``i`` depends only on ``(seed, index[i])``: the same image gets the same weights
    in any batch, order, process or device (the tensor is built on ``index``'s device).
    The counts have mean 1 and variance 1, are independent across images and replicates
    (up to the quality of a 32-bit hash, checked by the tests) and are exact to 2⁻³²
    in probability; the largest count is 12.

    >>> import torch
    >>> w = poisson_weights(0, torch.arange(4), 1000)
    >>> w.shape, torch.equal(w[2:], poisson_weights(0, torch.tensor([2, 3]), 1000))
    (torch.Size([4, 1000]), True)
    """
    return poisson_weights_for_keys(seed, image_keys(seed, index), replicates, dtype=dtype)


def poisson_weights_for_keys(
    seed: int, keys: Tensor, replicates: int, *, dtype: torch.dtype = torch.float64
) -> Tensor:
    """:func:`poisson_weights` from the images' :func:`image_keys` ``[n]`` (computed once, reused)."""
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise StatisticsError(f"bootstrap `replicates` must be an int ≥ 1, got {replicates!r}")
    dev = keys.device
    rep = _replicate_keys(_seed_key(seed), replicates).to(dev)
    h = _mix32(keys[:, None] ^ rep[None, :])
    edges = _edges(dev)
    return torch.searchsorted(edges, h, right=True).to(dtype)


@functools.lru_cache(maxsize=32)
def _replicate_keys(seed_key: int, replicates: int) -> Tensor:
    """The per-replicate keys ``[replicates]`` (CPU; cached, never modified)."""
    b = torch.arange(replicates, dtype=torch.int64)
    return _mix32(_mix32(torch.full_like(b, seed_key ^ _REPLICATE_DOMAIN)) ^ b)


@functools.lru_cache(maxsize=8)
def _edges(device: torch.device) -> Tensor:
    return torch.tensor(_POISSON_THRESHOLDS, dtype=torch.int64, device=device)
