"""Streaming statistics of attention gates: distribution, per-class profiles, class specificity."""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import AttnvizError, StatisticsError
from ._base import Accumulator
from ._checks import check_float, check_tensor, class_index
from ._resampling import KEYS_STATE, Resampling, check_index

#: Default cap on the replicated state of one accumulator (bytes).
MAX_STATE_BYTES = 64 * 2**20

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
                raise AttnvizError(
                    f"{owner}: `gates` has shape {tuple(g.shape)}; a 3-D gate is read as "
                    "[B, 1, C] (timm ECA); pass `channel_dim` for other layouts"
                )
            channel_dim = 2
        else:
            channel_dim = 1
    if not 1 <= channel_dim < g.ndim:
        raise AttnvizError(
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

    **Intervals.** With ``replicates=B`` (and ``seed``, ``level``), ``update(gates, labels,
    index)`` also takes the images' dataset indices ``[B]`` and keeps ``B`` Poisson(1)
    weighted copies of the sums behind ``mean``, ``std`` and (with ``num_classes``) η² and
    ε², with **per-image weights**: all are functions of per-image sums (per-class counts,
    per-class profile sums, per-channel sums of squares), so weighting an image's terms
    is resampling it. ``compute()`` adds ``{name}_ci_low`` / ``{name}_ci_high`` for
    ``mean``, ``std`` (expanded percentile interval over ``n_images`` units) and
    ``class_specificity``, ``class_specificity_adjusted`` (expanded *basic* interval,
    :func:`attnviz.stats.basic_interval`, with the η² estimate as the plug-in value for
    both: η² is biased upwards, and more so on resamples that repeat images, so its
    replicates sit above the estimate and a percentile interval would miss the true
    value; the tests check that both intervals cover the population η²), and
    ``replicates``, ``seed``, ``level``, ``method``, ``class_specificity_interval``.

    The η² copies need ``B·K·C`` numbers (1000 replicates × 1000 classes × 2048
    channels would be 16 GB). When they would exceed ``max_state_bytes`` (default
    64 MiB), the interval is computed for a cheaper statistic instead, and said so: the
    η² of the **channel-mean gate** (each image's profile averaged over channels, ``B·K``
    numbers), reported as ``class_specificity_channel_mean`` (and ``_adjusted``) with its
    own ``_ci_low`` / ``_ci_high``; ``class_specificity_interval`` names it, no interval
    is given for ``class_specificity`` itself, and a warning is issued at the first update.
    """

    #: Values whose interval is the basic bootstrap interval, and the value that is their
    #: plug-in estimate: η² and ε² are biased and their replicates (resamples repeat
    #: images) sit above the estimate; both ε²* and η²* estimate the sample's η².
    basic_intervals: ClassVar[dict[str, str]] = {
        "class_specificity": "class_specificity",
        "class_specificity_adjusted": "class_specificity",
        "class_specificity_channel_mean": "class_specificity_channel_mean",
        "class_specificity_channel_mean_adjusted": "class_specificity_channel_mean",
    }

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
        *,
        replicates: int | None = None,
        seed: int = 0,
        level: float = 0.95,
        max_state_bytes: int = MAX_STATE_BYTES,
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise AttnvizError(f"GateStats: `num_classes` must be ≥ 1, got {num_classes}")
        if bins < 1:
            raise AttnvizError(f"GateStats: `bins` must be ≥ 1, got {bins}")
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise AttnvizError(
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
        self.resampling = None
        self.max_state_bytes = int(max_state_bytes)
        if replicates is not None:
            self.resampling = Resampling("GateStats", replicates, seed, level)
            self.add_state("rep_values", (3, replicates))  # count, sum, sum of squares
            self.add_state(KEYS_STATE, dtype=torch.int64)
            if num_classes is not None:
                need = _eta_state_bytes(replicates, num_classes, 1)
                if need > self.max_state_bytes:
                    raise StatisticsError(
                        f"GateStats: replicates={replicates} × num_classes={num_classes} need "
                        f"{need / 2**20:.0f} MiB of bootstrap state even for the channel-mean "
                        f"η², over max_state_bytes={self.max_state_bytes}; use fewer "
                        "replicates or a larger max_state_bytes"
                    )
                self.add_state("rep_class_n", (replicates, num_classes))
                self.add_state("rep_class_sum", (replicates, num_classes, "interval_channels"))
                self.add_state("rep_sum_sq", (replicates, "interval_channels"))
                self.add_state("interval_sum_sq", ("interval_channels",))

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "num_classes": self.num_classes,
            "bins": self.bins,
            "value_range": list(self.value_range),
            "channel_dim": self.channel_dim,
        }
        if self.resampling is not None:
            out["bootstrap"] = {
                **self.resampling.settings("image"),
                "max_state_bytes": self.max_state_bytes,
            }
        return out

    def _interval_channels(self, channels: int) -> int:
        """``channels`` if the full η² copies fit in ``max_state_bytes``, else 1 (channel mean)."""
        assert self.resampling is not None and self.num_classes is not None
        need = _eta_state_bytes(self.resampling.replicates, self.num_classes, channels)
        return channels if need <= self.max_state_bytes else 1

    def update(
        self, gates: Tensor, labels: Tensor | None = None, index: Tensor | None = None
    ) -> None:
        """Add a batch of gates (see :func:`gate_profile`) and, with ``num_classes``, labels ``[B]``.

        ``index`` ``[B]``: the images' dataset indices, required with ``replicates``
        (ignored without).
        """
        owner = "GateStats.update"
        g = gates.detach() if isinstance(gates, Tensor) else gates
        profile = gate_profile(g, self.channel_dim).to(torch.float64)
        g = check_float(owner, "gates", g)
        b, c = profile.shape
        dev = g.device
        idx = class_index(owner, labels, b, self.num_classes, dev)
        images = None
        if self.resampling is not None:
            images = check_index(owner, index, b, dev)

        lo, hi = self.value_range
        vals = g.flatten()
        # bin i holds [lo + i·w, lo + (i+1)·w), the last bin also hi; bincount (not histc)
        # so that it also runs under torch.use_deterministic_algorithms on CUDA.
        bin_idx = ((vals - lo) * (self.bins / (hi - lo))).floor().clamp(0, self.bins - 1).long()
        sizes = {"channels": c}
        if self.resampling is not None and self.num_classes is not None:
            sizes["interval_channels"] = self._interval_channels(c)
            if sizes["interval_channels"] != c and "rep_class_sum" not in self._states:
                need = _eta_state_bytes(self.resampling.replicates, self.num_classes, c)
                warnings.warn(
                    f"GateStats: the bootstrap copies of η² over {c} channels would take "
                    f"{need / 2**20:.1f} MiB > max_state_bytes "
                    f"({self.max_state_bytes / 2**20:.1f} MiB); the interval is given for the "
                    "η² of the channel-mean gate instead (class_specificity_channel_mean)",
                    stacklevel=3,
                )
        st = self._running(dev, **sizes)
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
        if self.resampling is not None and images is not None:
            self._add_replicates(st, g, profile, idx, images)

    def _add_replicates(
        self, st: dict[str, Tensor], g: Tensor, profile: Tensor, idx: Tensor, images: Tensor
    ) -> None:
        assert self.resampling is not None
        w, keys = self.resampling.weights(images)  # [B, R]
        flat = g.flatten(1)
        per_image = torch.stack(
            [
                torch.full((flat.shape[0],), flat.shape[1], dtype=torch.float64, device=w.device),
                flat.sum(dim=1, dtype=torch.float64),
                flat.square().sum(dim=1, dtype=torch.float64),
            ]
        )
        st["rep_values"].add_(per_image @ w)
        st[KEYS_STATE].add_(keys)
        if self.num_classes is None:
            return
        prof = profile
        if st["rep_class_sum"].shape[2] != profile.shape[1]:
            prof = profile.mean(dim=1, keepdim=True)  # the channel-mean fallback
        st["rep_class_n"].index_add_(1, idx, w.T.contiguous())
        for k in idx.unique().tolist():
            rows = idx == k
            st["rep_class_sum"][:, k, :] += w[rows].T @ prof[rows]
        st["rep_sum_sq"].add_(w.T @ prof.square())
        st["interval_sum_sq"].add_(prof.square().sum(0))

    def replicate_values(self) -> dict[str, Tensor]:
        """Bootstrap replicates ``[B]`` of each value with an interval (needs ``replicates``)."""
        if self.resampling is None:
            raise RuntimeError("GateStats was built without `replicates`: no replicates")
        s = self._states
        count, total, total_sq = s["rep_values"]
        mean = total / count
        out = {"mean": mean, "std": (total_sq / count - mean.square()).clamp(min=0).sqrt()}
        if self.num_classes is not None:
            eta, eps = _class_specificity(s["rep_class_n"], s["rep_class_sum"], s["rep_sum_sq"])
            name = self._eta_name()
            out[name], out[f"{name}_adjusted"] = eta, eps
        return out

    def resampled_units(self) -> int:
        """How many images the replicates resample."""
        return int(self._states["class_n"].sum())

    def _eta_name(self) -> str:
        s = self._states
        full = s["rep_class_sum"].shape[2] == s["class_sum"].shape[1]
        return "class_specificity" if full else "class_specificity_channel_mean"

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
            return self._with_intervals(out) if self.resampling is not None else out
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
        return self._with_intervals(out) if self.resampling is not None else out

    def _with_intervals(self, out: dict[str, Any]) -> dict[str, Any]:
        assert self.resampling is not None
        s = self._states
        if self.num_classes is not None:
            name = self._eta_name()
            if name == "class_specificity_channel_mean":
                eta, eps = _class_specificity(
                    s["class_n"][None],
                    s["class_sum"].mean(dim=1, keepdim=True)[None],
                    s["interval_sum_sq"][None],
                )
                out[name], out[f"{name}_adjusted"] = float(eta[0]), float(eps[0])
                out["class_specificity_interval"] = (
                    "fallback: per-image Poisson bootstrap (basic interval) of the η² of the "
                    "channel-mean gate (class_specificity_channel_mean); the η² copies over "
                    f"{s['class_sum'].shape[1]} channels exceed max_state_bytes="
                    f"{self.max_state_bytes}"
                )
            else:
                out["class_specificity_interval"] = (
                    "per-image Poisson bootstrap (basic interval) of the channel-averaged η²"
                )
        for name, reps in self.replicate_values().items():
            plug_in = out[self.basic_intervals[name]] if name in self.basic_intervals else None
            lo, hi = self.resampling.interval(reps, self.resampled_units(), out[name], plug_in)
            finite = math.isfinite(out[name])
            out[f"{name}_ci_low"] = lo if finite else math.nan
            out[f"{name}_ci_high"] = hi if finite else math.nan
        out.update(self.resampling.meta())
        return out


def _eta_state_bytes(replicates: int, classes: int, channels: int) -> int:
    """Bytes of the float64 η² copies: counts ``[B, K]``, sums ``[B, K, C]``, squares ``[B, C]``."""
    return 8 * replicates * (classes + classes * channels + channels)


def _class_specificity(n_k: Tensor, sums: Tensor, sum_sq: Tensor) -> tuple[Tensor, Tensor]:
    """η² and ε² averaged over channels, for a stack of replicates.

    ``n_k`` ``[R, K]`` (weighted) class counts, ``sums`` ``[R, K, C]`` class sums of the
    profiles, ``sum_sq`` ``[R, C]`` sums of their squares; the formulas (and the
    zero-variance rule) of :meth:`GateStats.compute`. Returns two ``[R]`` tensors.
    """
    n = n_k.sum(dim=1)  # [R]
    total = sums.sum(dim=1)  # [R, C]
    correction = total.square() / n[:, None]
    ss_total = sum_sq - correction
    seen = n_k > 0
    # Σ_k sums² / n_k as one batched matmul over the [R, K, C] copies (unseen classes weigh 0):
    # the largest tensors here, so one temporary instead of four.
    inv = torch.where(seen, 1.0 / n_k.clamp_min(1e-300), 0.0)
    ss_between = torch.einsum("rkc,rk->rc", sums.square(), inv) - correction
    valid = ss_total > 1e-12 * sum_sq.abs().clamp_min(1e-300)
    ss_between = torch.minimum(ss_between.clamp(min=0), ss_total.clamp(min=0))
    n_valid = valid.sum(dim=1)
    safe_total = torch.where(valid, ss_total, 1.0)
    eta = torch.where(valid, ss_between / safe_total, 0.0).sum(dim=1) / n_valid
    k_seen = seen.sum(dim=1).to(n.dtype)
    df_within = n - k_seen
    ss_within = ss_total - ss_between
    eps_c = (ss_between - (k_seen - 1)[:, None] * ss_within / df_within[:, None]) / safe_total
    eps = torch.where(valid, eps_c, 0.0).sum(dim=1) / n_valid
    nan = torch.full_like(eta, torch.nan)
    return torch.where(n_valid > 0, eta, nan), torch.where(
        (n_valid > 0) & (df_within > 0), eps, nan
    )
