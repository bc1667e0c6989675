"""Streaming statistics of one layer's feature maps."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._chunks import rows_per_chunk
from .._maps import normalized_entropy
from ..errors import AttnvizError
from ._base import Accumulator, ratio
from ._checks import check_float, check_tensor
from ._resampling import KEYS_STATE, Resampling, check_index

__all__ = ["FeatureStats", "channel_gini", "spatial_entropy"]


def channel_gini(x: Tensor) -> Tensor:
    """Gini coefficient of the per-channel L2 energy of each image of ``[B, C, H, W]`` → ``[B]``.

    ``e_c = Σ_{h,w} x²``; with ``e`` sorted ascending, ``G = Σ_i (2i − C − 1) e_(i) / (C Σ_c e_c)``
    (``i = 1..C``). 0 when all channels carry equal energy, ``(C − 1)/C`` when one does.
    An all-zero image gives NaN.
    """
    energy = x.square().sum(dim=(2, 3))
    return _gini(energy)


def _gini(energy: Tensor) -> Tensor:
    c = energy.shape[1]
    e = torch.sort(energy.to(torch.float64), dim=1).values
    weights = 2 * torch.arange(1, c + 1, device=e.device, dtype=e.dtype) - c - 1
    total = e.sum(dim=1)
    return (e * weights).sum(dim=1) / (c * total)


def _image_sums(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per image of ``[B, C, H, W]``: channel sums and energies ``[B, C]``, the energy at
    each position ``[B, H·W]`` and the non-zero count ``[B]``, in one pass per chunk.

    Partial sums are in the input dtype (H·W or C terms each); the same values whether
    computed whole or in chunks (see :mod:`attnviz._chunks`).
    """
    b, c = x.shape[:2]
    v = x.reshape(b, c, -1)
    step = rows_per_chunk(b, v[0].numel(), x.device)
    parts = []
    for i in range(0, b, step):
        xi = v[i : i + step]
        sq = xi.square()
        parts.append((xi.sum(2), sq.sum(2), sq.sum(1), (xi != 0).flatten(1).sum(1)))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]


def spatial_entropy(x: Tensor) -> Tensor:
    """Normalised entropy of where the energy of each image of ``[B, C, H, W]`` lies → ``[B]``.

    ``p_hw = Σ_c x²_chw / Σ_{c,h,w} x²``; ``H = −Σ p log p / log(HW)`` in [0, 1]
    (1: energy spread evenly over positions, 0: all in one position). All-zero images give NaN.
    """
    energy = x.square().sum(dim=1).flatten(1)
    return normalized_entropy(energy)


#: Per-image sums kept in ``B`` weighted copies when ``replicates`` is set (row order).
_REPLICATED_SUMS = (
    "n_values",
    "sum",
    "sum_sq",
    "n_zeros",
    "n_alive_images",
    "sum_gini",
    "sum_entropy",
)


class FeatureStats(Accumulator):
    """Activation statistics of one layer, streamed over batches of ``[B, C, H, W]`` maps.

    * ``mean``, ``std``: over every activation value (population std, from running float64
      sum and sum of squares).
    * ``sparsity``: share of activations exactly equal to 0. Meaningful after a ReLU
      (dead units); before one it is ~0.
    * ``channel_gini``: Gini coefficient of the per-channel energy ``e_c = Σ_{h,w} x²``,
      computed per image and averaged over images; in ``[0, (C−1)/C]``, higher = energy
      concentrated in fewer channels.
    * ``spatial_entropy``: per image, ``p_hw ∝ Σ_c x²`` (energy, the same quantity as the
      Gini uses) normalised over the ``H×W`` positions, ``−Σ p log p / log(HW)`` in [0, 1];
      averaged over images; lower = energy concentrated in fewer positions.

    Images whose activations are all zero have no energy distribution: they are left out
    of ``channel_gini`` and ``spatial_entropy`` and counted in ``n_zero_images``.
    States: sums and counts only (summed across ranks by :meth:`sync`).

    **Intervals.** With ``replicates=B`` (and ``seed``, ``level``), ``update(features,
    index)`` also takes the images' dataset indices ``[B]`` and keeps ``B`` Poisson(1)
    weighted copies of the seven sums above, with **per-image weights** (every value is a
    ratio of sums of per-image quantities, so weighting an image's sums is exactly
    resampling it). ``compute()`` then adds ``{name}_ci_low`` / ``{name}_ci_high`` for
    ``mean``, ``std``, ``sparsity``, ``channel_gini``, ``spatial_entropy`` (expanded
    percentile interval over ``n_images`` units) and ``replicates``, ``seed``, ``level``,
    ``method``; :func:`~attnviz.metrics.bootstrap_difference` gives variant − baseline intervals for
    two such accumulators fed the same images. Extra state: ``7 × B`` numbers.
    """

    definition = (
        "Per layer: mean and std of all activations; sparsity = share of exact zeros; "
        "channel_gini = Gini of per-channel energy e_c = Σ_hw x², G = Σ_i (2i−C−1) e_(i) / (C Σ e), "
        "per image then averaged; spatial_entropy = −Σ p log p / log(HW) with "
        "p_hw = Σ_c x² / Σ x², per image then averaged (all-zero images excluded)."
    )

    def __init__(
        self, *, replicates: int | None = None, seed: int = 0, level: float = 0.95
    ) -> None:
        super().__init__()
        for name in (
            "n_values",
            "sum",
            "sum_sq",
            "n_zeros",
            "n_images",
            "n_alive_images",
            "sum_gini",
            "sum_entropy",
        ):
            self.add_state(name)
        self.resampling = None
        if replicates is not None:
            self.resampling = Resampling("FeatureStats", replicates, seed, level)
            self.add_state("rep_sums", (len(_REPLICATED_SUMS), replicates))
            self.add_state(KEYS_STATE, dtype=torch.int64)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "std": "population (divide by N)",
            "energy": "x² (channel Gini and spatial entropy)",
            "all_zero_images": "excluded from channel_gini and spatial_entropy",
        }
        if self.resampling is not None:
            out["bootstrap"] = self.resampling.settings("image")
        return out

    def update(self, features: Tensor, index: Tensor | None = None) -> None:
        """Add a batch of feature maps ``[B, C, H, W]`` (float, any device).

        ``index`` ``[B]``: the images' dataset indices, required with ``replicates``
        (ignored without).
        """
        owner = "FeatureStats.update"
        x = check_tensor(owner, "features", features, (4,), "[B, C, H, W]")
        x = check_float(owner, "features", x.detach())
        if x.shape[2] * x.shape[3] < 2:
            raise AttnvizError(
                f"{owner}: `features` has shape {tuple(x.shape)}; spatial entropy needs "
                "H × W ≥ 2 (pass the map before global pooling)"
            )
        channel_sums, channel_energy, spatial_energy, nonzero = _image_sums(x)
        gini = _gini(channel_energy)
        ent = normalized_entropy(spatial_energy)
        alive = torch.isfinite(gini) & torch.isfinite(ent)
        idx = None
        if self.resampling is not None:
            idx = check_index(owner, index, x.shape[0], x.device)
        st = self._running(x.device)
        st["n_values"].add_(x.numel())
        st["sum"].add_(channel_sums.sum(dtype=torch.float64))
        st["sum_sq"].add_(channel_energy.sum(dtype=torch.float64))
        st["n_zeros"].add_(x.numel() - nonzero.sum())
        st["n_images"].add_(x.shape[0])
        st["n_alive_images"].add_(alive.sum())
        st["sum_gini"].add_(torch.where(alive, gini, 0.0).sum())
        st["sum_entropy"].add_(torch.where(alive, ent, 0.0).sum())
        if self.resampling is not None and idx is not None:
            b = x.shape[0]
            per_image = torch.stack(
                [
                    torch.full((b,), x[0].numel(), dtype=torch.float64, device=x.device),
                    channel_sums.sum(dim=1, dtype=torch.float64),
                    channel_energy.sum(dim=1, dtype=torch.float64),
                    (x[0].numel() - nonzero).to(torch.float64),
                    alive.to(torch.float64),
                    torch.where(alive, gini, 0.0),
                    torch.where(alive, ent, 0.0),
                ],
                dim=0,
            )  # [7, B], in the order of _REPLICATED_SUMS
            w, keys = self.resampling.weights(idx)
            st["rep_sums"].add_(per_image @ w)
            st[KEYS_STATE].add_(keys)

    def replicate_values(self) -> dict[str, Tensor]:
        """Bootstrap replicates ``[B]`` of each headline value (needs ``replicates``)."""
        if self.resampling is None:
            raise RuntimeError("FeatureStats was built without `replicates`: no replicates")
        n, total, total_sq, zeros, alive, gini, ent = self._states["rep_sums"]
        mean = total / n
        return {
            "mean": mean,
            "std": (total_sq / n - mean.square()).clamp(min=0).sqrt(),
            "sparsity": zeros / n,
            "channel_gini": gini / alive,
            "spatial_entropy": ent / alive,
        }

    def resampled_units(self) -> int:
        """How many images the replicates resample."""
        return int(self._states["n_images"])

    def compute(self) -> dict[str, Any]:
        s = self._states
        n = float(s["n_values"])
        mean = float(s["sum"]) / n
        var = max(float(s["sum_sq"]) / n - mean * mean, 0.0)
        out: dict[str, Any] = {
            "mean": mean,
            "std": math.sqrt(var),
            "sparsity": float(s["n_zeros"]) / n,
            "channel_gini": ratio(s["sum_gini"], s["n_alive_images"]),
            "spatial_entropy": ratio(s["sum_entropy"], s["n_alive_images"]),
            "n_images": int(s["n_images"]),
            "n_zero_images": int(s["n_images"] - s["n_alive_images"]),
        }
        if self.resampling is not None:
            for name, reps in self.replicate_values().items():
                lo, hi = self.resampling.interval(reps, self.resampled_units())
                finite = math.isfinite(out[name])
                out[f"{name}_ci_low"] = lo if finite else math.nan
                out[f"{name}_ci_high"] = hi if finite else math.nan
            out.update(self.resampling.meta())
        return out
