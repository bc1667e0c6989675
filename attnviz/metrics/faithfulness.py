"""CAM faithfulness: deletion / insertion AUC (RISE) and Average Drop / Increase in Confidence.

Both perturb the input and read the model's softmax probability of a target class, so
they take a ``model_fn`` (images → logits) rather than captured tensors. The caller puts
the model in eval mode; everything here runs under ``torch.no_grad()`` in forwards of at
most ``batch_size`` images, on the device of ``images``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .._maps import descending_order, minmax, resize_maps
from ..errors import AttnvizError
from ._base import Accumulator, ratio
from ._checks import as_maps, check_float, check_tensor

__all__ = [
    "ConfidenceStats",
    "FaithfulnessStats",
    "confidence_drop_increase",
    "deletion_insertion",
    "gaussian_blur",
    "trapezoid_auc",
]

ModelFn = Callable[[Tensor], Tensor]
Substrate = Literal["blur", "zeros", "mean"] | Callable[[Tensor], Tensor]


def gaussian_blur(images: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` per channel, replicate padding at the borders.

    Kernel ``k(t) ∝ exp(−t² / 2σ²)`` for ``t = −r..r``, ``r = kernel_size // 2``, normalised to sum 1
    (RISE's insertion substrate uses ``kernel_size=11, sigma=5``).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise AttnvizError(f"gaussian_blur: `kernel_size` must be odd and ≥ 1, got {kernel_size}")
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=images.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    x = F.pad(images, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), groups=c)


def trapezoid_auc(curve: Tensor, fractions: Tensor) -> Tensor:
    """Area under each row of ``curve`` ``[B, n+1]`` over ``fractions`` ``[n+1]`` (trapezoid rule).

    With evenly spaced fractions this is RISE's ``(Σ_i s_i − s_0/2 − s_n/2) / n``.
    """
    return torch.trapezoid(curve.to(torch.float64), fractions.to(torch.float64), dim=-1)


def _substrate_name(substrate: Substrate) -> str:
    if isinstance(substrate, str):
        return substrate
    return getattr(substrate, "__qualname__", None) or repr(substrate)


def _make_substrate(
    owner: str, arg: str, images: Tensor, substrate: Substrate, kernel_size: int, sigma: float
) -> Tensor:
    if callable(substrate):
        out = substrate(images)
        if not isinstance(out, Tensor) or out.shape != images.shape:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise AttnvizError(
                f"{owner}: the `{arg}` callable returned {shape}, expected a tensor of the "
                f"images' shape {tuple(images.shape)}"
            )
        return out.to(images.dtype)
    if substrate == "zeros":
        return torch.zeros_like(images)
    if substrate == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if substrate == "blur":
        return gaussian_blur(images, kernel_size, sigma)
    raise AttnvizError(
        f"{owner}: `{arg}` must be 'blur', 'zeros', 'mean' or a callable, got {substrate!r}"
    )


def _schedule(hw: int, steps: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel counts ``k_i = round(i·HW/steps)`` for ``i = 0..steps`` and the fractions ``k_i / HW``."""
    i = torch.arange(steps + 1, device=device, dtype=torch.long)
    counts = (2 * i * hw + steps) // (2 * steps)
    return counts, counts.to(torch.float64) / hw


def _scores(model_fn: ModelFn, x: Tensor, apply_softmax: bool, owner: str) -> Tensor:
    out = model_fn(x)
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise AttnvizError(
            f"{owner}: `model_fn` returned {shape}, expected logits [{x.shape[0]}, K]"
        )
    out = out.to(torch.float64)
    return out.softmax(dim=1) if apply_softmax else out


def _target_scores(
    model_fn: ModelFn,
    x: Tensor,
    targets: Tensor | None,
    apply_softmax: bool,
    batch_size: int,
    owner: str,
) -> tuple[Tensor, Tensor]:
    """Target-class scores of ``x`` in chunks; ``targets=None`` takes the top-1 class."""
    scores, tgts = [], []
    for s in range(0, x.shape[0], batch_size):
        p = _scores(model_fn, x[s : s + batch_size], apply_softmax, owner)
        t = p.argmax(dim=1) if targets is None else targets[s : s + batch_size]
        scores.append(p.gather(1, t[:, None])[:, 0])
        tgts.append(t)
    return torch.cat(scores), torch.cat(tgts)


def _check_inputs(
    owner: str, images: Tensor, cams: Tensor, targets: Tensor | int | None, batch_size: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    x = check_tensor(owner, "images", images, (4,), "[B, C, H, W]")
    x = check_float(owner, "images", x.detach())
    s = as_maps(owner, "cams", cams).detach().to(x.device)
    if s.shape[0] != x.shape[0]:
        raise AttnvizError(
            f"{owner}: `cams` has shape {tuple(cams.shape)} but `images` has shape "
            f"{tuple(images.shape)}; one map per image is needed"
        )
    if batch_size < 1:
        raise AttnvizError(f"{owner}: `batch_size` must be ≥ 1, got {batch_size}")
    s = resize_maps(s, (x.shape[2], x.shape[3]))
    if targets is None:
        return x, s, None
    if isinstance(targets, int):
        return x, s, torch.full((x.shape[0],), targets, dtype=torch.long, device=x.device)
    if not isinstance(targets, Tensor) or targets.shape != (x.shape[0],):
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise AttnvizError(
            f"{owner}: `targets` is {shape}, expected an int or a tensor [B] = [{x.shape[0]}]"
        )
    return x, s, targets.to(device=x.device, dtype=torch.long)


def _curves(
    model_fn: ModelFn,
    base: Tensor,
    fill: Tensor,
    pos: Tensor,
    counts: Tensor,
    targets: Tensor,
    apply_softmax: bool,
    batch_size: int,
    owner: str,
) -> Tensor:
    """Scores ``[B, steps+1]``: at step i, pixels of rank < ``counts[i]`` come from ``fill``, the rest from ``base``."""
    b, _, h, w = base.shape
    n_pts = counts.shape[0]
    total = b * n_pts
    out = torch.empty(total, dtype=torch.float64, device=base.device)
    for s in range(0, total, batch_size):
        rows = torch.arange(s, min(s + batch_size, total), device=base.device)
        img, step = rows // n_pts, rows % n_pts
        mask = (pos[img] < counts[step][:, None]).view(-1, 1, h, w)
        x = torch.where(mask, fill[img], base[img])
        p = _scores(model_fn, x, apply_softmax, owner)
        out[s : s + rows.shape[0]] = p.gather(1, targets[img][:, None])[:, 0]
    return out.view(b, n_pts)


@torch.no_grad()
def deletion_insertion(
    model_fn: ModelFn,
    images: Tensor,
    cams: Tensor,
    targets: Tensor | int | None = None,
    *,
    steps: int = 50,
    deletion_substrate: Substrate = "zeros",
    insertion_substrate: Substrate = "blur",
    blur_kernel_size: int = 11,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
    apply_softmax: bool = True,
) -> dict[str, Any]:
    """Deletion and insertion curves and AUCs per image, in the RISE form (Petsiuk et al. 2018).

    Pixels are ranked by the map (``cams`` ``[B, h, w]``, resized bilinearly to the image
    size), descending, ties in pixel order (stable sort). At step ``i = 0..steps`` the top
    ``k_i = round(i·HW/steps)`` pixels (all channels) are

    * **deletion**: replaced in ``images`` by ``deletion_substrate`` (default ``"zeros"``:
      zeros of the normalised tensor, i.e. the dataset-mean colour, as RISE);
    * **insertion**: copied from ``images`` into ``insertion_substrate`` (default
      ``"blur"``: Gaussian blur, ``blur_kernel_size=11``, ``blur_sigma=5``, as RISE);

    ``"mean"`` is each image's own per-channel mean colour; a callable maps images to a
    substrate of the same shape. The score is the softmax probability (``apply_softmax``)
    of ``targets`` (``None``: the top-1 class on the clean image), and the AUC is the
    trapezoid rule over the pixel fraction ``k_i / HW`` in [0, 1]. Deletion: lower is
    better; insertion: higher is better. All ``B·(steps+1)`` perturbed images per curve are
    evaluated in chunks of ``batch_size`` under ``torch.no_grad()``.

    Returns a dict: ``deletion_auc``, ``insertion_auc`` ``[B]``; ``deletion_curve``,
    ``insertion_curve`` ``[B, steps+1]``; ``fractions`` ``[steps+1]``; ``targets`` ``[B]``;
    ``settings`` (the conventions used).
    """
    owner = "deletion_insertion"
    if steps < 1:
        raise AttnvizError(f"{owner}: `steps` must be ≥ 1, got {steps}")
    x, s, tgt = _check_inputs(owner, images, cams, targets, batch_size)
    b, _, h, w = x.shape
    if tgt is None:
        _, tgt = _target_scores(model_fn, x, None, apply_softmax, batch_size, owner)
    order = descending_order(s.flatten(1))
    pos = torch.empty_like(order).scatter_(
        1, order, torch.arange(h * w, device=x.device).expand(b, h * w).contiguous()
    )
    counts, fractions = _schedule(h * w, steps, x.device)
    deleted = _make_substrate(
        owner, "deletion_substrate", x, deletion_substrate, blur_kernel_size, blur_sigma
    )
    start = _make_substrate(
        owner, "insertion_substrate", x, insertion_substrate, blur_kernel_size, blur_sigma
    )
    args = (pos, counts, tgt, apply_softmax, batch_size, owner)
    del_curve = _curves(model_fn, x, deleted, *args)
    ins_curve = _curves(model_fn, start, x, *args)
    return {
        "deletion_auc": trapezoid_auc(del_curve, fractions),
        "insertion_auc": trapezoid_auc(ins_curve, fractions),
        "deletion_curve": del_curve,
        "insertion_curve": ins_curve,
        "fractions": fractions,
        "targets": tgt,
        "settings": _di_settings(
            steps,
            deletion_substrate,
            insertion_substrate,
            blur_kernel_size,
            blur_sigma,
            apply_softmax,
        ),
    }


def _di_settings(
    steps: int,
    deletion_substrate: Substrate,
    insertion_substrate: Substrate,
    blur_kernel_size: int,
    blur_sigma: float,
    apply_softmax: bool,
) -> dict[str, Any]:
    uses_blur = "blur" in (deletion_substrate, insertion_substrate)
    return {
        "steps": steps,
        "pixels_per_step": "round(i*HW/steps)",
        "ranking": "map resized bilinearly to the image, descending, stable (ties in pixel order)",
        "deletion_substrate": _substrate_name(deletion_substrate),
        "insertion_substrate": _substrate_name(insertion_substrate),
        "blur": {"kernel_size": blur_kernel_size, "sigma": blur_sigma, "padding": "replicate"}
        if uses_blur
        else None,
        "score": "softmax probability" if apply_softmax else "model output",
        "auc": "trapezoid over pixel fraction in [0, 1]",
    }


@torch.no_grad()
def confidence_drop_increase(
    model_fn: ModelFn,
    images: Tensor,
    cams: Tensor,
    targets: Tensor | int | None = None,
    *,
    batch_size: int = 64,
    apply_softmax: bool = True,
) -> dict[str, Any]:
    """Per-image confidence drop and increase for the explanation image ``E = S ⊙ x`` (Grad-CAM++).

    ``S`` is the map resized bilinearly (``align_corners=False``) to the image and min-max
    normalised per image to [0, 1] (a constant map becomes all ones), broadcast over
    channels and multiplied into the tensor as given (normalised inputs: 0 = mean colour).
    With ``Y = f_c(x)``, ``O = f_c(E)`` softmax probabilities of ``targets`` (``None``: top-1
    on the clean image): ``drop = max(0, Y − O) / Y`` and ``increase = 1[Y < O]``.
    Average Drop % = 100 · mean(drop); Increase in Confidence % = 100 · mean(increase).

    Returns ``drop``, ``increase``, ``score_original``, ``score_explanation``, ``targets``
    (all ``[B]``) and ``settings``.
    """
    owner = "confidence_drop_increase"
    x, s, tgt = _check_inputs(owner, images, cams, targets, batch_size)
    y, tgt = _target_scores(model_fn, x, tgt, apply_softmax, batch_size, owner)
    e = x * minmax(s, flat="one", tol_ulps=0)[:, None].to(x.dtype)
    o, _ = _target_scores(model_fn, e, tgt, apply_softmax, batch_size, owner)
    return {
        "drop": (y - o).clamp(min=0) / y,
        "increase": (y < o).to(torch.float64),
        "score_original": y,
        "score_explanation": o,
        "targets": tgt,
        "settings": {
            "explanation": "E = minmax(resize(cam)) * x",
            "score": "softmax probability" if apply_softmax else "model output",
        },
    }


class FaithfulnessStats(Accumulator):
    """Mean deletion / insertion AUC and mean curves over a stream of batches.

    ``update(model_fn, images, cams, targets=None)`` runs :func:`deletion_insertion` with
    this accumulator's settings, adds the per-image AUCs and curves to running sums and
    returns the per-image result. ``compute()``: ``deletion_auc``, ``insertion_auc``
    (means over images), their ``_std``, the mean curves ``[steps+1]`` at the nominal
    fractions ``i/steps``, ``n_images``, and ``settings`` (RISE conventions used).
    States: sums, sums of squares, curve sums ``[steps+1]``, count.
    """

    definition = (
        "RISE deletion / insertion: rank pixels by the map (descending, stable); replace the "
        "top k_i = round(i·HW/steps) pixels with the deletion substrate (default zeros), or "
        "copy them into the insertion substrate (default the blurred image); AUC = trapezoid "
        "over the fraction k_i/HW of the target softmax probability; averaged over images."
    )

    def __init__(
        self,
        steps: int = 50,
        deletion_substrate: Substrate = "zeros",
        insertion_substrate: Substrate = "blur",
        blur_kernel_size: int = 11,
        blur_sigma: float = 5.0,
        batch_size: int = 64,
        apply_softmax: bool = True,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise AttnvizError(f"FaithfulnessStats: `steps` must be ≥ 1, got {steps}")
        self.steps = steps
        self.deletion_substrate = deletion_substrate
        self.insertion_substrate = insertion_substrate
        self.blur_kernel_size = blur_kernel_size
        self.blur_sigma = blur_sigma
        self.batch_size = batch_size
        self.apply_softmax = apply_softmax
        for key in ("deletion", "insertion"):
            self.add_state(f"sum_{key}_auc")
            self.add_state(f"sum_sq_{key}_auc")
            self.add_state(f"sum_{key}_curve", (steps + 1,))
        self.add_state("n_images")

    def settings(self) -> dict[str, Any]:
        return _di_settings(
            self.steps,
            self.deletion_substrate,
            self.insertion_substrate,
            self.blur_kernel_size,
            self.blur_sigma,
            self.apply_softmax,
        )

    def update(
        self, model_fn: ModelFn, images: Tensor, cams: Tensor, targets: Tensor | int | None = None
    ) -> dict[str, Any]:
        """Evaluate one batch (see :func:`deletion_insertion`) and add it; returns the per-image result.

        The result of :func:`deletion_insertion`: per-image ``deletion_auc`` and
        ``insertion_auc`` (float64 ``[B]``), ``deletion_curve`` / ``insertion_curve``
        ``[B, steps+1]``, ``targets`` ``[B]``, and the shared ``fractions`` and ``settings``.
        """
        res = deletion_insertion(
            model_fn,
            images,
            cams,
            targets,
            steps=self.steps,
            deletion_substrate=self.deletion_substrate,
            insertion_substrate=self.insertion_substrate,
            blur_kernel_size=self.blur_kernel_size,
            blur_sigma=self.blur_sigma,
            batch_size=self.batch_size,
            apply_softmax=self.apply_softmax,
        )
        st = self._running(res["deletion_auc"].device)
        for key in ("deletion", "insertion"):
            auc = res[f"{key}_auc"]
            st[f"sum_{key}_auc"].add_(auc.sum())
            st[f"sum_sq_{key}_auc"].add_(auc.square().sum())
            st[f"sum_{key}_curve"].add_(res[f"{key}_curve"].sum(0))
        st["n_images"].add_(res["deletion_auc"].shape[0])
        return res

    def compute(self) -> dict[str, Any]:
        s = self._states
        n = float(s["n_images"])
        out: dict[str, Any] = {"n_images": int(n)}
        for key in ("deletion", "insertion"):
            mean = float(s[f"sum_{key}_auc"]) / n
            var = max(float(s[f"sum_sq_{key}_auc"]) / n - mean * mean, 0.0)
            out[f"{key}_auc"] = mean
            out[f"{key}_auc_std"] = math.sqrt(var)
            out[f"{key}_curve"] = (s[f"sum_{key}_curve"] / n).cpu()
        out["fractions"] = torch.linspace(0.0, 1.0, self.steps + 1, dtype=torch.float64)
        out["settings"] = self.settings()
        return out


class ConfidenceStats(Accumulator):
    """Average Drop % and Increase in Confidence % (Grad-CAM++) over a stream of batches.

    ``update(model_fn, images, cams, targets=None)`` runs :func:`confidence_drop_increase`,
    adds the per-image values and returns them. ``compute()``: ``average_drop_pct`` =
    ``100/N Σ max(0, Y−O)/Y`` (lower is better), ``increase_in_confidence_pct`` =
    ``100/N Σ 1[Y < O]`` (higher is better), ``n_images``. States: two sums and a count.
    """

    definition = (
        "E = minmax(cam) ⊙ x; Y, O = target softmax probability on x and E; "
        "Average Drop % = 100/N Σ max(0, Y−O)/Y; Increase in Confidence % = 100/N Σ 1[Y < O]."
    )

    def __init__(self, batch_size: int = 64, apply_softmax: bool = True) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.apply_softmax = apply_softmax
        for name in ("sum_drop", "n_increase", "n_images"):
            self.add_state(name)

    def settings(self) -> dict[str, Any]:
        return {
            "explanation": "E = minmax(resize(cam)) * x",
            "score": "softmax probability" if self.apply_softmax else "model output",
        }

    def update(
        self, model_fn: ModelFn, images: Tensor, cams: Tensor, targets: Tensor | int | None = None
    ) -> dict[str, Any]:
        """Evaluate one batch (see :func:`confidence_drop_increase`) and add it; returns the result.

        Per image, float64 ``[B]``: ``drop`` = ``max(0, Y − O)/Y``, ``increase`` =
        ``1[Y < O]``, ``score_original`` ``Y``, ``score_explanation`` ``O``; also
        ``targets`` and ``settings``.
        """
        res = confidence_drop_increase(
            model_fn,
            images,
            cams,
            targets,
            batch_size=self.batch_size,
            apply_softmax=self.apply_softmax,
        )
        st = self._running(res["drop"].device)
        st["sum_drop"].add_(res["drop"].sum())
        st["n_increase"].add_(res["increase"].sum())
        st["n_images"].add_(res["drop"].shape[0])
        return res

    def compute(self) -> dict[str, Any]:
        s = self._states
        return {
            "average_drop_pct": 100.0 * ratio(s["sum_drop"], s["n_images"]),
            "increase_in_confidence_pct": 100.0 * ratio(s["n_increase"], s["n_images"]),
            "n_images": int(s["n_images"]),
        }
