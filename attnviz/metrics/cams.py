"""CAM-vs-CAM agreement and CAM concentration, streamed over batches."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._chunks import rows_per_chunk
from .._maps import average_ranks, descending_order, normalized_entropy
from ..errors import AttnvizError
from ._base import Accumulator, ratio
from ._checks import as_maps, check_same_shape

__all__ = ["CamAgreement", "CamConcentration", "pearson_per_image", "spearman_per_image", "top_iou"]


def pearson_per_image(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each pair of rows of ``[B, N]`` → ``[B]`` (NaN if a row is constant)."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    den = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    return (a * b).sum(dim=1) / den.where(den > 0, torch.nan)


def spearman_per_image(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation (Pearson of average ranks, ties averaged) of each row pair → ``[B]``."""
    return pearson_per_image(average_ranks(a), average_ranks(b))


def top_iou(a: Tensor, b: Tensor, fraction: float) -> Tensor:
    """IoU of the top ``k = max(1, round(fraction·N))`` entries of each row pair of ``[B, N]``.

    Ties at the cut are broken by index (stable descending sort).
    """
    n = a.shape[1]
    k = max(1, round(fraction * n))
    sel_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, descending_order(a)[:, :k], True)
    sel_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, descending_order(b)[:, :k], True)
    inter = (sel_a & sel_b).sum(dim=1).to(torch.float64)
    return inter / (2 * k - inter)


class CamAgreement(Accumulator):
    """Agreement between the CAMs of a variant and of the baseline on the same images.

    ``update(cams, reference)``, both ``[B, H, W]`` (or ``[B, 1, H, W]``) of equal shape.
    Per image, over the ``H·W`` pixels: ``pearson`` correlation, ``spearman`` correlation
    (Pearson of the pixel ranks, tied values get their average rank, as
    ``scipy.stats.rankdata(method="average")``), and ``top_iou`` = IoU of the sets of the
    top ``round(top_fraction · H·W)`` pixels of each map (ties broken by pixel index).
    Each is averaged over images; correlations are undefined for a constant map, such
    images are left out of the correlation means and counted in ``n_constant``.
    States: sums and counts (summed across ranks by :meth:`sync`).
    """

    definition = (
        "Per image over pixels: Pearson r of the two maps; Spearman ρ = Pearson r of their "
        "average-tie ranks; top-q IoU = |T_a ∩ T_b| / |T_a ∪ T_b| with T the top round(q·HW) "
        "pixels. Each averaged over images (constant maps excluded from r and ρ)."
    )

    def __init__(self, top_fraction: float = 0.2) -> None:
        super().__init__()
        if not 0.0 < top_fraction <= 1.0:
            raise AttnvizError(
                f"CamAgreement: `top_fraction` must be in (0, 1], got {top_fraction}"
            )
        self.top_fraction = float(top_fraction)
        for name in ("n_images", "n_defined", "sum_pearson", "sum_spearman", "sum_top_iou"):
            self.add_state(name)

    def settings(self) -> dict[str, Any]:
        return {
            "top_fraction": self.top_fraction,
            "spearman_ties": "average ranks",
            "top_set_ties": "broken by pixel index",
        }

    def update(self, cams: Tensor, reference: Tensor) -> dict[str, Tensor]:
        """Add maps of a variant (``cams``) and of the baseline (``reference``) for the same images.

        Returns the batch's per-image values, float64 ``[B]`` each: ``{"pearson",
        "spearman"}`` (NaN where a map is constant) and ``"top_iou"``.
        """
        owner = "CamAgreement.update"
        a = as_maps(owner, "cams", cams).detach()
        b = as_maps(owner, "reference", reference).detach()
        check_same_shape(owner, "cams", a, "reference", b)
        a = a.flatten(1)
        b = b.flatten(1).to(a.device)
        step = rows_per_chunk(a.shape[0], 8 * a.shape[1], a.device)  # float64 temporaries
        parts = [
            (
                pearson_per_image(a[i : i + step], b[i : i + step]),
                spearman_per_image(a[i : i + step], b[i : i + step]),
                top_iou(a[i : i + step], b[i : i + step], self.top_fraction),
            )
            for i in range(0, a.shape[0], step)
        ]
        r, rho, iou = (torch.cat(p) for p in zip(*parts))
        ok = torch.isfinite(r)
        st = self._running(a.device)
        st["n_images"].add_(a.shape[0])
        st["n_defined"].add_(ok.sum())
        st["sum_pearson"].add_(torch.where(ok, r, 0.0).sum())
        st["sum_spearman"].add_(torch.where(ok, rho, 0.0).sum())
        st["sum_top_iou"].add_(iou.sum())
        return {"pearson": r, "spearman": torch.where(ok, rho, torch.nan), "top_iou": iou}

    def compute(self) -> dict[str, Any]:
        s = self._states
        return {
            "pearson": ratio(s["sum_pearson"], s["n_defined"]),
            "spearman": ratio(s["sum_spearman"], s["n_defined"]),
            "top_iou": ratio(s["sum_top_iou"], s["n_images"]),
            "n_images": int(s["n_images"]),
            "n_constant": int(s["n_images"] - s["n_defined"]),
        }


class CamConcentration(Accumulator):
    """How concentrated each CAM is: normalised entropy of the map as a distribution.

    Per image, ``S = max(cam, 0)`` (negative values clamped, as a ReLU'd Grad-CAM),
    ``p = S / Σ S`` over the ``H·W`` pixels, ``entropy = −Σ p log p / log(HW)`` in [0, 1]
    (1: uniform map, 0: all mass on one pixel); averaged over images. All-zero maps have
    no distribution; they are left out and counted in ``n_zero_maps``.
    States: sums and counts.
    """

    definition = (
        "Per image: p = relu(S) / Σ relu(S) over pixels, entropy = −Σ p log p / log(HW) "
        "in [0, 1]; averaged over images (all-zero maps excluded)."
    )

    def __init__(self) -> None:
        super().__init__()
        for name in ("n_images", "n_nonzero", "sum_entropy"):
            self.add_state(name)

    def settings(self) -> dict[str, Any]:
        return {"negative_values": "clamped to 0"}

    def update(self, cams: Tensor) -> None:
        """Add a batch of maps ``[B, H, W]``."""
        owner = "CamConcentration.update"
        s = as_maps(owner, "cams", cams).detach().flatten(1)
        if s.shape[1] < 2:
            raise AttnvizError(f"{owner}: `cams` has shape {tuple(cams.shape)}; needs H × W ≥ 2")
        ent = normalized_entropy(s.clamp(min=0))
        ok = torch.isfinite(ent)
        st = self._running(s.device)
        st["n_images"].add_(s.shape[0])
        st["n_nonzero"].add_(ok.sum())
        st["sum_entropy"].add_(torch.where(ok, ent, 0.0).sum())

    def compute(self) -> dict[str, Any]:
        s = self._states
        return {
            "entropy": ratio(s["sum_entropy"], s["n_nonzero"]),
            "n_images": int(s["n_images"]),
            "n_zero_maps": int(s["n_images"] - s["n_nonzero"]),
        }
