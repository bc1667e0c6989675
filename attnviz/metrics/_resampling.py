"""The streaming Poisson bootstrap as the accumulators use it: settings, weights, intervals.

An accumulator with ``replicates=B`` keeps, beside its exact sums, ``B`` copies of the
sums its estimator needs, each image (or batch) counted ``w_b`` times with
``w_b ~ Poisson(1)`` drawn by :func:`attnviz.stats.poisson_weights` from ``(seed, image
index)``. The ``B`` estimates from those copies are the bootstrap replicates. Every copy
is still a plain sum, so merging and DDP ``sync()`` add them, and the replicates do not
depend on batching or ranks. Accumulators to be compared (variant and baseline) must use
the same ``seed``: image ``i`` then has the same weights in both, and replicate ``b`` of a
difference is the difference of replicates ``b``.

A ``resample_keys`` state (int64: the sum of a 32-bit key per unit seen) fingerprints the
images (or batches) an accumulator saw, so that two accumulators can be checked to have
seen the same ones before their replicates are paired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import StatisticsError
from ..stats import (
    basic_interval,
    basic_pvalue,
    bootstrap_pvalue,
    check_level,
    image_keys,
    percentile_interval,
    poisson_weights_for_keys,
)

__all__ = ["KEYS_STATE", "Resampling", "check_index"]

#: Name of the fingerprint state of every resampling accumulator.
KEYS_STATE = "resample_keys"

#: Weights of the last few batches, by (seed, replicates, device, index values).
_WEIGHTS: dict[tuple, tuple[Tensor, Tensor]] = {}
_CACHED_BATCHES = 4


def check_index(owner: str, index: object, batch: int, device: torch.device) -> Tensor:
    """Image indices ``[B]`` (integers ≥ 0, one per image of the batch) on ``device``."""
    if index is None:
        raise StatisticsError(
            f"{owner}: `index` [B] is required with replicates: the position of each image "
            "in the dataset, which keys its bootstrap weights"
        )
    if not isinstance(index, Tensor):
        if isinstance(index, int) or not isinstance(index, Sequence):
            raise StatisticsError(
                f"{owner}: `index` must be a tensor [B] of image indices, got {type(index).__name__}"
            )
        index = torch.as_tensor(list(index))
    if index.ndim != 1 or index.shape[0] != batch:
        raise StatisticsError(
            f"{owner}: `index` has shape {tuple(index.shape)}, expected [B] = [{batch}]"
        )
    if index.is_floating_point() or index.dtype == torch.bool or index.is_complex():
        raise StatisticsError(f"{owner}: `index` must hold integers, got dtype {index.dtype}")
    index = index.to(device=device, dtype=torch.int64)
    if batch and int(index.min()) < 0:
        raise StatisticsError(f"{owner}: `index` must be ≥ 0, got {int(index.min())}")
    return index


class Resampling:
    """Settings of one accumulator's bootstrap: ``replicates`` (B), ``seed``, ``level``."""

    METHOD = "poisson bootstrap, expanded percentile interval"

    def __init__(self, owner: str, replicates: int, seed: int, level: float) -> None:
        if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 2:
            raise StatisticsError(f"{owner}: `replicates` must be an int ≥ 2, got {replicates!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise StatisticsError(f"{owner}: `seed` must be an int, got {seed!r}")
        self.replicates = replicates
        self.seed = seed
        self.level = check_level(level)

    def settings(self, unit: str = "image") -> dict[str, Any]:
        return {
            "replicates": self.replicates,
            "seed": self.seed,
            "level": self.level,
            "method": self.METHOD,
            "weights": f"Poisson(1) per {unit}, keyed by (seed, {unit} index)",
        }

    def weights(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Weights ``[n, B]`` (float64) of the units ``index`` ``[n]``, and their fingerprint.

        The fingerprint is the int64 sum of the units' keys, to add to ``resample_keys``
        (accumulators are paired only with the same seed, so seed-keyed keys suffice).
        The last few results are kept: every accumulator of a comparison asks for the
        weights of the same batch (tens of them per batch), which are computed once.
        """
        cache_key = (
            self.seed,
            self.replicates,
            str(index.device),
            index.detach().cpu().numpy().tobytes(),
        )
        hit = _WEIGHTS.get(cache_key)
        if hit is not None:
            return hit
        keys = image_keys(self.seed, index)
        result = (poisson_weights_for_keys(self.seed, keys, self.replicates), keys.sum())
        if len(_WEIGHTS) >= _CACHED_BATCHES:
            _WEIGHTS.pop(next(iter(_WEIGHTS)))
        _WEIGHTS[cache_key] = result
        return result

    def interval(
        self,
        replicates: Tensor,
        n: int,
        point: float = math.nan,
        plug_in: float | None = None,
    ) -> tuple[float, float]:
        """Expanded percentile interval of ``replicates`` for ``n`` resampled units.

        With a ``plug_in`` value, the basic interval of ``point`` instead (biased
        estimators, see :func:`attnviz.stats.basic_interval`).
        """
        if plug_in is not None:
            return basic_interval(replicates, point, self.level, n, plug_in)
        return percentile_interval(replicates, self.level, n)

    def pvalue(
        self,
        replicates: Tensor,
        n: int,
        point: float,
        plug_in: float | None = None,
        null: float = 0.0,
    ) -> float:
        """Two-sided p for ``= null`` inverting :meth:`interval` (NaN for a non-finite point)."""
        if not math.isfinite(point):
            return math.nan
        if plug_in is not None:
            return basic_pvalue(replicates, point, null, n, plug_in)
        return bootstrap_pvalue(replicates, null, n)

    def summary(
        self, point: float, replicates: Tensor, null: float | None, n: int
    ) -> dict[str, Any]:
        """``{"ci_low", "ci_high", "p"}``; ``p`` tests ``= null`` (NaN when ``null`` is None)."""
        if not math.isfinite(point):
            return {"ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
        lo, hi = self.interval(replicates, n)
        p = bootstrap_pvalue(replicates, null, n) if null is not None else math.nan
        return {"ci_low": lo, "ci_high": hi, "p": p}

    def meta(self) -> dict[str, Any]:
        """The fields every bootstrap result carries."""
        return {
            "replicates": self.replicates,
            "seed": self.seed,
            "level": self.level,
            "method": self.METHOD,
        }
