"""CAM localisation against ground-truth masks: pointing game, energy pointing game, IoU."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._maps import minmax
from ..errors import AttnvizError
from ._base import Accumulator, ratio
from ._checks import as_maps, check_same_shape, check_tensor, class_index

__all__ = ["CamLocalization", "energy_share", "pointing_hits", "threshold_iou"]


def pointing_hits(cams: Tensor, masks: Tensor, tolerance: float = 15.0) -> Tensor:
    """Pointing-game hit per image ``[B]``: a mask pixel lies within distance < ``tolerance`` of the argmax.

    ``cams`` ``[B, H, W]``, ``masks`` bool ``[B, H, W]``. The argmax is the first maximum in
    row-major order; the test is TorchRay's ``(mask & ((v − p_y)² + (u − p_x)² < tol²)).any()``.
    """
    _, h, w = cams.shape
    idx = cams.flatten(1).argmax(dim=1)
    py = (idx // w).to(torch.float64)[:, None, None]
    px = (idx % w).to(torch.float64)[:, None, None]
    v = torch.arange(h, device=cams.device, dtype=torch.float64)[None, :, None]
    u = torch.arange(w, device=cams.device, dtype=torch.float64)[None, None, :]
    near = (v - py).square() + (u - px).square() < tolerance**2
    return (masks & near).flatten(1).any(dim=1)


def energy_share(cams: Tensor, masks: Tensor) -> Tensor:
    """Energy pointing game per image ``[B]``: ``Σ_mask S / Σ S`` with ``S`` = per-image min-max of the map.

    A constant map becomes uniform (all ones), giving the mask's area fraction.
    """
    s = minmax(cams.to(torch.float64), flat="one", tol_ulps=0).flatten(1)
    return (s * masks.flatten(1)).sum(dim=1) / s.sum(dim=1)


def threshold_iou(cams: Tensor, masks: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU per image ``[B]`` of ``{S ≥ threshold}`` (``S`` = per-image min-max of the map) with the mask."""
    sel = (minmax(cams.to(torch.float64), flat="one", tol_ulps=0) >= threshold).flatten(1)
    m = masks.flatten(1)
    inter = (sel & m).sum(dim=1).to(torch.float64)
    union = (sel | m).sum(dim=1).to(torch.float64)
    return inter / union


class CamLocalization(Accumulator):
    """How well CAMs point at the object, against ground-truth masks.

    ``update(cams, masks, labels=None)``: maps ``[B, H, W]`` at input resolution and masks
    ``[B, H, W]`` of the same shape (bool; numeric masks are read as ``mask != 0``).

    * ``pointing_game``: share of images where a mask pixel lies within Euclidean distance
      < ``tolerance`` px (default 15, TorchRay) of the map's argmax (first maximum in
      row-major order). With ``num_classes`` and ``labels`` also ``pointing_game_class_mean``,
      the mean over seen classes of the per-class hit rates (the Zhang et al. protocol),
      and ``pointing_game_per_class`` ``[K]``.
    * ``energy_pointing_game``: ``Σ_{mask} S / Σ S`` (Score-CAM) where ``S`` is the map
      min-max normalised per image to [0, 1] (so ``S ≥ 0``; a constant map counts as
      uniform), averaged over images.
    * ``iou``: IoU between ``{S ≥ iou_threshold}`` (same ``S``) and the mask, averaged.

    Images with an empty mask have nothing to point at: they are skipped by every
    metric and counted in ``n_empty_masks``. States: sums and per-class counts.
    """

    definition = (
        "Pointing game: hit if any mask pixel is at Euclidean distance < tolerance px from "
        "argmax S (overall hit rate, and mean of per-class hit rates); energy pointing game "
        "= Σ_mask S / Σ S with S the per-image min-max of the map; IoU of {S ≥ threshold} "
        "with the mask; averaged over images with a non-empty mask."
    )

    def __init__(
        self, num_classes: int | None = None, tolerance: float = 15.0, iou_threshold: float = 0.5
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise AttnvizError(f"CamLocalization: `num_classes` must be ≥ 1, got {num_classes}")
        if tolerance <= 0:
            raise AttnvizError(f"CamLocalization: `tolerance` must be > 0, got {tolerance}")
        self.num_classes = num_classes
        self.tolerance = float(tolerance)
        self.iou_threshold = float(iou_threshold)
        for name in ("n_images", "n_empty_masks", "sum_energy", "sum_iou"):
            self.add_state(name)
        self.add_state("class_hits", (num_classes or 1,))
        self.add_state("class_n", (num_classes or 1,))

    def settings(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "tolerance_px": self.tolerance,
            "iou_threshold": self.iou_threshold,
            "map_normalization": "per-image min-max to [0, 1]",
        }

    def update(
        self, cams: Tensor, masks: Tensor, labels: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Add maps ``[B, H, W]``, masks ``[B, H, W]`` and (with ``num_classes``) labels ``[B]``.

        Returns the batch's per-image values, float64 ``[B]`` each, NaN for an image with
        an empty mask: ``{"pointing_game": hit (1.0 / 0.0), "energy_pointing_game",
        "iou"}``.
        """
        owner = "CamLocalization.update"
        s = as_maps(owner, "cams", cams).detach()
        m = check_tensor(owner, "masks", masks, (3, 4), "[B, H, W] (or [B, 1, H, W])")
        if m.ndim == 4 and m.shape[1] == 1:
            m = m[:, 0]
        check_same_shape(owner, "masks", m, "cams", s)
        m = (m != 0).to(s.device)
        dev = s.device
        b = s.shape[0]
        idx = class_index(owner, labels, b, self.num_classes, dev)

        keep = m.flatten(1).any(dim=1)
        st = self._running(dev)
        st["n_images"].add_(b)
        st["n_empty_masks"].add_((~keep).sum())
        s, m, idx = s[keep], m[keep], idx[keep]
        hits = pointing_hits(s, m, self.tolerance).to(torch.float64)
        energy = energy_share(s, m)
        iou = threshold_iou(s, m, self.iou_threshold)
        st["class_hits"].index_add_(0, idx, hits)
        st["class_n"].index_add_(0, idx, torch.ones_like(hits))
        st["sum_energy"].add_(energy.sum())
        st["sum_iou"].add_(iou.sum())
        out = {}
        for key, v in (("pointing_game", hits), ("energy_pointing_game", energy), ("iou", iou)):
            full = torch.full((b,), torch.nan, dtype=torch.float64, device=dev)
            full[keep] = v.to(torch.float64)
            out[key] = full
        return out

    def compute(self) -> dict[str, Any]:
        s = self._states
        n = s["class_n"].sum()
        out: dict[str, Any] = {
            "pointing_game": ratio(s["class_hits"].sum(), n),
            "energy_pointing_game": ratio(s["sum_energy"], n),
            "iou": ratio(s["sum_iou"], n),
            "n_images": int(n),
            "n_empty_masks": int(s["n_empty_masks"]),
        }
        if self.num_classes is not None:
            per_class = s["class_hits"] / s["class_n"]  # NaN for unseen classes
            seen = s["class_n"] > 0
            out["pointing_game_per_class"] = per_class.cpu()
            out["pointing_game_class_mean"] = (
                float(per_class[seen].mean()) if bool(seen.any()) else float("nan")
            )
        return out
