"""Streaming statistics of attention gates: distribution, per-class profiles, class specificity."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ._base import Accumulator
from ._checks import check_float, check_tensor, class_index

__all__ = ["GateStats", "gate_profile"]


def gate_profile(gates: Tensor, channel_dim: int | None = None) -> Tensor:
    """Per-image channel profile ``[B, C]``: the gate averaged over every non-channel dim.

    Shapes understood without ``channel_dim``: ``[B, C]``; ``[B, 1, C]`` (timm ECA's
    conv1d layout, channel dim 2); ``[B, C, 1, 1]`` (SE), ``[B, C, H, W]`` (element-wise
    gates such as SimAM) and ``[B, 1, H, W]`` (spatial gates, a profile over one
    "channel"), channel dim 1. Other layouts need ``channel_dim``.
    """
    owner = "gate_profile"
    g = check_tensor(owner, "gates", gates, (2, 3, 4, 5), "[B, C], [B, 1, C] or [B, C, H, W]")
    if channel_dim is None:
        if g.ndim == 3:
            if g.shape[1] != 1:
                raise ValueError(
                    f"{owner}: `gates` has shape {tuple(g.shape)}; a 3-D gate is read as "
                    "[B, 1, C] (timm ECA); pass `channel_dim` for other layouts"
                )
            channel_dim = 2
        else:
            channel_dim = 1
    if not 1 <= channel_dim < g.ndim:
        raise ValueError(
            f"{owner}: `channel_dim`={channel_dim} is not a non-batch dim of shape {tuple(g.shape)}"
        )
    g = check_float(owner, "gates", g)
    g = g.movedim(channel_dim, 1)
    return g.flatten(2).mean(dim=2) if g.ndim > 2 else g


class GateStats(Accumulator):
    """Distribution and class dependence of one layer's attention gates.

    ``update(gates, labels=None)``; ``gates`` in any layout :func:`gate_profile` reads.

    * ``histogram``: counts of all gate values (every element) in ``bins`` equal bins over
      ``value_range`` (default [0, 1]); values outside are clamped into the end bins and
      also counted in ``frac_below`` / ``frac_above`` (e.g. ``2σ`` identity-init gates live
      in [0, 2]: widen ``value_range``).
    * ``mean``, ``std``: over all gate values (population std).
    * ``mean_profile`` ``[C]``: mean per-image channel profile (gate averaged over
      non-channel dims per image, see :func:`gate_profile`).
    * with ``num_classes``: ``class_profiles`` ``[K, C]`` (mean profile per label, NaN for
      unseen classes), ``class_counts`` ``[K]``, and ``class_specificity`` = η² averaged over
      channels: for channel c, with profiles ``g_ic`` of the N images, class means ``ḡ_kc``
      (``n_k`` images) and the grand mean ``ḡ_c``,
      ``η²_c = Σ_k n_k (ḡ_kc − ḡ_c)² / Σ_i (g_ic − ḡ_c)²`` (between-class over total sum
      of squares); channels with zero total variance are skipped. 0 when gates do not
      depend on the class, 1 when they depend only on it. Under no class dependence η² is
      biased upwards by about ``(K−1)/(N−1)``; ``class_specificity_adjusted`` is ε²
      (``(SS_b − (K−1)·SS_w/(N−K)) / SS_t``, averaged over channels), ≈ 0 in that case.

    States: histogram counts, sums, per-class count / sum / sum of squares of profiles
    (summed across ranks by :meth:`sync`).
    """

    definition = (
        "Gate values: fixed-bin histogram over value_range, mean, std. Per-image channel "
        "profile g_ic = gate averaged over non-channel dims; class_profiles = per-label mean "
        "of g; class_specificity = mean over channels of η²_c = Σ_k n_k (ḡ_kc − ḡ_c)² / "
        "Σ_i (g_ic − ḡ_c)² (between-class / total variance)."
    )

    def __init__(
        self,
        num_classes: int | None = None,
        bins: int = 50,
        value_range: tuple[float, float] = (0.0, 1.0),
        channel_dim: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"GateStats: `num_classes` must be ≥ 1, got {num_classes}")
        if bins < 1:
            raise ValueError(f"GateStats: `bins` must be ≥ 1, got {bins}")
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(
                f"GateStats: `value_range` must be (low, high) with high > low, got {value_range}"
            )
        self.num_classes = num_classes
        self.bins = bins
        self.value_range = (lo, hi)
        self.channel_dim = channel_dim
        k = num_classes or 1
        self.add_state("histogram", (bins,))
        for name in ("n_values", "n_below", "n_above", "sum", "sum_sq"):
            self.add_state(name)
        self.add_state("class_n", (k,))
        self.add_state("class_sum", (k, "channels"))
        self.add_state("class_sum_sq", (k, "channels"))

    def settings(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "bins": self.bins,
            "value_range": list(self.value_range),
            "channel_dim": self.channel_dim,
        }

    def update(self, gates: Tensor, labels: Tensor | None = None) -> None:
        """Add a batch of gates (see :func:`gate_profile`) and, with ``num_classes``, labels ``[B]``."""
        owner = "GateStats.update"
        g = gates.detach() if isinstance(gates, Tensor) else gates
        profile = gate_profile(g, self.channel_dim).to(torch.float64)
        g = check_float(owner, "gates", g)
        b, c = profile.shape
        dev = g.device
        idx = class_index(owner, labels, b, self.num_classes, dev)

        lo, hi = self.value_range
        vals = g.flatten()
        # bin i holds [lo + i·w, lo + (i+1)·w), the last bin also hi; bincount (not histc)
        # so that it also runs under torch.use_deterministic_algorithms on CUDA.
        bin_idx = ((vals - lo) * (self.bins / (hi - lo))).floor().clamp(0, self.bins - 1).long()
        st = self._running(dev, channels=c)
        st["histogram"].add_(torch.bincount(bin_idx, minlength=self.bins).to(torch.float64))
        st["n_values"].add_(vals.numel())
        st["n_below"].add_((vals < lo).sum())
        st["n_above"].add_((vals > hi).sum())
        st["sum"].add_(vals.sum(dtype=torch.float64))
        st["sum_sq"].add_(vals.square().sum(dtype=torch.float64))
        ones = torch.ones(b, dtype=torch.float64, device=dev)
        st["class_n"].index_add_(0, idx, ones)
        st["class_sum"].index_add_(0, idx, profile)
        st["class_sum_sq"].index_add_(0, idx, profile.square())

    def compute(self) -> dict[str, Any]:
        s = self._states
        n_vals = float(s["n_values"])
        mean = float(s["sum"]) / n_vals
        lo, hi = self.value_range
        out: dict[str, Any] = {
            "mean": mean,
            "std": math.sqrt(max(float(s["sum_sq"]) / n_vals - mean * mean, 0.0)),
            "histogram": s["histogram"].cpu(),
            "bin_edges": torch.linspace(lo, hi, self.bins + 1, dtype=torch.float64),
            "frac_below": float(s["n_below"]) / n_vals,
            "frac_above": float(s["n_above"]) / n_vals,
            "n_values": int(n_vals),
        }
        n_k = s["class_n"]
        sums = s["class_sum"]
        n = n_k.sum()
        out["n_images"] = int(n)
        out["mean_profile"] = (sums.sum(0) / n).cpu()
        if self.num_classes is None:
            return out
        out["class_counts"] = n_k.cpu()
        out["class_profiles"] = (sums / n_k[:, None]).cpu()  # NaN rows for unseen classes
        total_sum = sums.sum(0)
        correction = total_sum.square() / n
        ss_total = s["class_sum_sq"].sum(0) - correction
        seen = n_k > 0
        ss_between = (sums[seen].square() / n_k[seen, None]).sum(0) - correction
        k_seen = int(seen.sum())
        # Clamp rounding noise; channels with (numerically) no variance are skipped.
        scale = s["class_sum_sq"].sum(0).abs().clamp_min(1e-300)
        valid = ss_total > 1e-12 * scale
        ss_between = ss_between.clamp(min=0)
        ss_between = torch.minimum(ss_between, ss_total.clamp(min=0))
        eta = ss_between[valid] / ss_total[valid]
        out["class_specificity"] = float(eta.mean()) if eta.numel() else float("nan")
        df_within = float(n) - k_seen
        if eta.numel() and df_within > 0:
            ss_within = ss_total[valid] - ss_between[valid]
            eps = (ss_between[valid] - (k_seen - 1) * ss_within / df_within) / ss_total[valid]
            out["class_specificity_adjusted"] = float(eps.mean())
        else:
            out["class_specificity_adjusted"] = float("nan")
        out["n_classes_seen"] = k_seen
        return out
