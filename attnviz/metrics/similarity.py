"""Representation similarity: minibatch linear CKA with the unbiased HSIC estimator."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from .._chunks import CPU_CHUNK_ELEMENTS
from ..errors import AttnvizError, StatisticsError
from ._base import Accumulator
from ._checks import check_tensor
from ._resampling import KEYS_STATE, Resampling

__all__ = ["CKAMatrix", "LinearCKA", "hsic_unbiased", "linear_gram"]

Pool = Literal["none", "avg"]


def _too_small(x: object) -> bool:
    return isinstance(x, Tensor) and x.ndim >= 1 and x.shape[0] < 4


def _flatten(owner: str, arg: str, x: object, pool: Pool) -> Tensor:
    x = check_tensor(owner, arg, x, (2, 3, 4, 5), "[B, D] or [B, C, *spatial]")
    x = x.detach()
    if not x.is_floating_point():
        x = x.float()
    if pool == "avg" and x.ndim > 2:
        x = x.flatten(2).mean(dim=2)
    x = x.flatten(1)
    if x.shape[0] < 4:
        raise AttnvizError(
            f"{owner}: `{arg}` has batch size {x.shape[0]} (shape {tuple(x.shape)}); the "
            "unbiased HSIC estimator needs at least 4 images per batch (or build the "
            "accumulator with skip_small_batches=True to skip and count such batches)"
        )
    return x


def linear_gram(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Linear-kernel Gram matrix ``K = X Xᵀ`` of ``[n, D]`` features, returned in float64.

    The features are centred over the batch first. The unbiased HSIC estimator is exactly
    invariant to adding any constant vector to every row (the additive row/column terms
    cancel in its U-statistic), so centring changes nothing mathematically but removes the
    large common offset of post-ReLU features before the product is formed in ``dtype``.
    """
    x = x.to(dtype)
    mean = x.mean(dim=0, keepdim=True)
    n, d = x.shape
    if x.device.type != "cpu":
        x = x - mean
        return (x @ x.T).to(torch.float64)
    # CPU: centre and multiply column blocks, summing the products in float64 (no
    # batch-sized temporary; see attnviz._chunks)
    step = max(1, CPU_CHUNK_ELEMENTS // 4 // max(n, 1))
    k = torch.zeros(n, n, dtype=torch.float64)
    for j in range(0, d, step):
        block = x[:, j : j + step] - mean[:, j : j + step]
        k += (block @ block.T).to(torch.float64)
    return k


def _hsic_terms(k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Zero-diagonal Gram (flattened), its row sums and its total, for ``[..., n, n]``."""
    n = k.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=k.device)
    kz = k.masked_fill(eye, 0.0)
    rows = kz.sum(dim=-1)
    return kz.flatten(-2), rows, rows.sum(dim=-1)


def _hsic_from_terms(
    kz: Tensor, rk: Tensor, sk: Tensor, lz: Tensor, rl: Tensor, sl: Tensor, n: int
) -> Tensor:
    """HSIC₁ for all pairs: ``kz [a, n²]``, ``lz [b, n²]`` → ``[a, b]``."""
    trace = kz @ lz.T
    cross = rk @ rl.T
    return (trace + torch.outer(sk, sl) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (
        n * (n - 3)
    )


def hsic_unbiased(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741
    """Unbiased HSIC estimator of Song et al. (2012) for two ``[n, n]`` Gram matrices, n ≥ 4.

    With ``K̃``, ``L̃`` the Grams with zeroed diagonals:
    ``HSIC₁ = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))``.
    """
    n = k.shape[-1]
    if n < 4:
        raise AttnvizError(f"hsic_unbiased: Gram matrices of shape {tuple(k.shape)}; needs n ≥ 4")
    kz, rk, sk = _hsic_terms(k.to(torch.float64))
    lz, rl, sl = _hsic_terms(l.to(torch.float64))
    return _hsic_from_terms(kz[None], rk[None], sk[None], lz[None], rl[None], sl[None], n)[0, 0]


_CKA_DEF = (
    "Minibatch linear CKA (Nguyen, Raghu & Kornblith 2021): "
    "CKA = mean_b HSIC₁(K_b, L_b) / sqrt(mean_b HSIC₁(K_b, K_b) · mean_b HSIC₁(L_b, L_b)), "
    "K_b = X_b X_bᵀ, L_b = Y_b Y_bᵀ on the per-image flattened features of each minibatch, "
    "HSIC₁ the unbiased estimator of Song et al. (2012)."
)


class _CKABase(Accumulator):
    definition = _CKA_DEF
    #: Shapes of the three HSIC sums (names: sizes bound by the first update).
    _hsic_shapes: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ())

    def __init__(
        self,
        pool: Pool = "none",
        dtype: torch.dtype = torch.float32,
        skip_small_batches: bool = False,
    ) -> None:
        super().__init__()
        if pool not in ("none", "avg"):
            raise AttnvizError(
                f"{type(self).__name__}: `pool` must be 'none' or 'avg', got {pool!r}"
            )
        self.pool: Pool = pool
        self.dtype = dtype
        self.skip_small_batches = skip_small_batches
        for name in ("n_batches", "n_images", "n_skipped_images"):
            self.add_state(name)
        for name, shape in zip(("hsic_xy", "hsic_xx", "hsic_yy"), self._hsic_shapes):
            self.add_state(name, shape)

    def settings(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "dtype": str(self.dtype).replace("torch.", ""),
            "kernel": "linear",
            "hsic": "unbiased (Song et al. 2012), per minibatch",
            "skip_small_batches": self.skip_small_batches,
        }

    def _skipped(self, *feats: object) -> bool:
        """With ``skip_small_batches``, count a batch of < 4 images and report it skipped."""
        small = [f for f in feats if _too_small(f)]
        if not (self.skip_small_batches and small):
            return False
        x = small[0]
        assert isinstance(x, Tensor)
        self._running(x.device)["n_skipped_images"].add_(x.shape[0])
        return True

    def _add_counts(self, st: dict[str, Tensor], n: int) -> None:
        st["n_batches"].add_(1)
        st["n_images"].add_(n)

    def _counts(self) -> dict[str, int]:
        s = self._states
        if int(s["n_batches"]) == 0:
            raise RuntimeError(
                f"{type(self).__name__}.compute(): every batch so far had fewer than 4 images "
                "and was skipped"
            )
        return {
            "n_batches": int(s["n_batches"]),
            "n_images": int(s["n_images"]),
            "n_skipped_images": int(s["n_skipped_images"]),
        }


class LinearCKA(_CKABase):
    """Minibatch linear CKA between two representations of the same images.

    ``update(x, y)`` takes two feature batches of the same ``B ≥ 4`` images (any shapes
    ``[B, ...]``; they need not match each other). Each image's features are flattened
    (``pool="none"``, the default: CKA over all ``C·H·W`` values) or averaged over the
    spatial positions first (``pool="avg"``: CKA of the ``C``-dim pooled descriptors).
    Per minibatch, the linear Grams ``K = XXᵀ`` and ``L = YYᵀ`` enter the unbiased HSIC
    estimator; the three HSIC values are summed over minibatches and

        ``CKA = Σ_b HSIC₁(K_b, L_b) / sqrt(Σ_b HSIC₁(K_b, K_b) · Σ_b HSIC₁(L_b, L_b))``.

    The estimator is unbiased for each minibatch, so the result does not drift with the
    batch size the way the biased full-data CKA does, but it does depend (mildly) on how
    images are grouped into minibatches. It is invariant to orthogonal transforms and
    isotropic scaling of either representation. The Grams are formed in ``dtype`` after
    centring the features (exact for this estimator), the HSIC arithmetic is float64.
    A batch of fewer than 4 images raises, or with ``skip_small_batches=True`` (e.g. the
    last batch of a DataLoader) is skipped and counted in ``n_skipped_images``.
    States: three sums + counts (summed across ranks by :meth:`sync`).

    **Intervals.** With ``replicates=B`` (and ``seed``, ``level``), ``update(x, y,
    batch_key)`` also takes a key for the minibatch (an int ≥ 0 unique to it in the whole
    dataset, e.g. the dataset index of its first image; the same key for the same batch
    in every model and rank), and keeps ``B`` Poisson(1)-weighted copies of the three
    HSIC sums with **batch-level weights**: each HSIC term is a U-statistic over the pairs
    of images of one batch, not a sum of per-image terms, so the resampling unit is the
    batch. ``compute()`` adds ``cka_ci_low`` / ``cka_ci_high`` (expanded percentile interval over
    ``n_batches`` units) and
    ``replicates``, ``seed``, ``level``, ``method``. The interval reflects batch-to-batch
    variation and needs many batches (it is unreliable below about 20); ``n_batches``
    says how many there were. CKA is already relative to the baseline, so no difference
    is needed. Extra state: ``3 × B`` numbers.
    """

    def __init__(
        self,
        pool: Pool = "none",
        dtype: torch.dtype = torch.float32,
        skip_small_batches: bool = False,
        *,
        replicates: int | None = None,
        seed: int = 0,
        level: float = 0.95,
    ) -> None:
        super().__init__(pool, dtype, skip_small_batches)
        self.resampling = None
        if replicates is not None:
            self.resampling = Resampling("LinearCKA", replicates, seed, level)
            self.add_state("rep_hsic", (3, replicates))
            self.add_state(KEYS_STATE, dtype=torch.int64)

    def settings(self) -> dict[str, Any]:
        out = super().settings()
        if self.resampling is not None:
            out["bootstrap"] = self.resampling.settings("batch")
        return out

    def update(self, x: Tensor, y: Tensor, batch_key: int | None = None) -> None:
        """Add one minibatch: ``x`` and ``y`` are features ``[B, ...]`` of the same B images.

        ``batch_key``: the batch's key, required with ``replicates`` (ignored without).
        """
        owner = "LinearCKA.update"
        key = None
        if self.resampling is not None:
            if isinstance(batch_key, bool) or not isinstance(batch_key, int) or batch_key < 0:
                raise StatisticsError(
                    f"{owner}: `batch_key` must be an int ≥ 0 with replicates (a key unique "
                    f"to this minibatch, e.g. the dataset index of its first image), got "
                    f"{batch_key!r}"
                )
            key = torch.tensor([batch_key], dtype=torch.int64)
        if self._skipped(x, y):
            return
        fx = _flatten(owner, "x", x, self.pool)
        fy = _flatten(owner, "y", y, self.pool)
        if fx.shape[0] != fy.shape[0]:
            raise AttnvizError(
                f"{owner}: `x` has shape {tuple(x.shape)} and `y` has shape {tuple(y.shape)}; "
                "they must have the same batch size (the same images)"
            )
        n = fx.shape[0]
        kz, rk, sk = _hsic_terms(linear_gram(fx, self.dtype))
        lz, rl, sl = _hsic_terms(linear_gram(fy.to(fx.device), self.dtype))
        stack_z = torch.stack([kz, lz])
        stack_r = torch.stack([rk, rl])
        stack_s = torch.stack([sk, sl])
        h = _hsic_from_terms(stack_z, stack_r, stack_s, stack_z, stack_r, stack_s, n)
        st = self._running(fx.device)
        st["hsic_xy"].add_(h[0, 1])
        st["hsic_xx"].add_(h[0, 0])
        st["hsic_yy"].add_(h[1, 1])
        self._add_counts(st, n)
        if self.resampling is not None and key is not None:
            w, keys = self.resampling.weights(key.to(fx.device))
            st["rep_hsic"].add_(torch.stack([h[0, 1], h[0, 0], h[1, 1]])[:, None] * w[0])
            st[KEYS_STATE].add_(keys)

    def replicate_values(self) -> dict[str, Tensor]:
        """``{"cka": [B]}``: bootstrap replicates of the CKA (needs ``replicates``)."""
        if self.resampling is None:
            raise RuntimeError("LinearCKA was built without `replicates`: no replicates")
        xy, xx, yy = self._states["rep_hsic"]
        den = xx * yy
        return {"cka": torch.where(den > 0, xy / den.clamp_min(1e-300).sqrt(), torch.nan)}

    def resampled_units(self) -> int:
        """How many batches the replicates resample."""
        return int(self._states["n_batches"])

    def compute(self) -> dict[str, Any]:
        counts = self._counts()
        s = self._states
        den = float(s["hsic_xx"]) * float(s["hsic_yy"])
        cka = float(s["hsic_xy"]) / math.sqrt(den) if den > 0 else float("nan")
        out: dict[str, Any] = {"cka": cka, **counts}
        if self.resampling is not None:
            reps = self.replicate_values()["cka"]
            lo, hi = self.resampling.interval(reps, self.resampled_units())
            out["cka_ci_low"] = lo if math.isfinite(cka) else math.nan
            out["cka_ci_high"] = hi if math.isfinite(cka) else math.nan
            out.update(self.resampling.meta())
        return out


class CKAMatrix(_CKABase):
    """Minibatch linear CKA between every layer of one list and every layer of another.

    ``update(xs, ys)`` takes two sequences of feature batches of the same images (e.g.
    the captured layers of the baseline and of a variant); ``ys=None`` compares ``xs``
    with itself. Each Gram and its self-HSIC is computed once per minibatch and every
    pair's HSIC comes from one matrix product. ``compute()["cka"]`` is the
    ``[len(xs), len(ys)]`` matrix, entry ``(i, j)`` equal to :class:`LinearCKA` on
    ``(xs[i], ys[j])`` with the same settings. States: ``[a, b]``, ``[a]``, ``[b]`` sums.
    """

    _hsic_shapes = (("xs", "ys"), ("xs",), ("ys",))

    def _terms(self, arg: str, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, int]:
        owner = "CKAMatrix.update"
        if isinstance(feats, Tensor) or not isinstance(feats, Sequence) or not feats:
            raise TypeError(f"{owner}: `{arg}` must be a non-empty sequence of tensors [B, ...]")
        flat = [_flatten(owner, f"{arg}[{i}]", f, self.pool) for i, f in enumerate(feats)]
        n = flat[0].shape[0]
        for i, f in enumerate(flat):
            if f.shape[0] != n:
                raise AttnvizError(
                    f"{owner}: `{arg}[{i}]` has batch size {f.shape[0]}, `{arg}[0]` has {n}; "
                    "all features must come from the same images"
                )
        dev = flat[0].device
        grams = torch.stack([linear_gram(f.to(dev), self.dtype) for f in flat])
        kz, rk, sk = _hsic_terms(grams)
        return kz, rk, sk, n

    def update(self, xs: Sequence[Tensor], ys: Sequence[Tensor] | None = None) -> None:
        """Add one minibatch: ``xs[i]`` and ``ys[j]`` are features ``[B, ...]`` of the same images."""
        feats = [xs] if isinstance(xs, Tensor) else [*xs, *(ys or [])]
        if self._skipped(*feats):
            return
        kz, rk, sk, n = self._terms("xs", xs)
        if ys is None:
            lz, rl, sl, m = kz, rk, sk, n
        else:
            lz, rl, sl, m = self._terms("ys", ys)
            lz, rl, sl = lz.to(kz.device), rl.to(kz.device), sl.to(kz.device)
        if m != n:
            raise AttnvizError(
                f"CKAMatrix.update: `xs` have batch size {n}, `ys` have {m}; "
                "they must be the same images"
            )
        hxy = _hsic_from_terms(kz, rk, sk, lz, rl, sl, n)
        hxx = _hsic_self(kz, rk, sk, n)
        hyy = _hsic_self(lz, rl, sl, n)
        st = self._running(kz.device, xs=hxy.shape[0], ys=hxy.shape[1])
        st["hsic_xy"].add_(hxy)
        st["hsic_xx"].add_(hxx)
        st["hsic_yy"].add_(hyy)
        self._add_counts(st, n)

    def compute(self) -> dict[str, Any]:
        counts = self._counts()
        s = self._states
        den = torch.outer(s["hsic_xx"], s["hsic_yy"])
        cka = torch.where(den > 0, s["hsic_xy"] / den.clamp_min(1e-300).sqrt(), float("nan"))
        return {"cka": cka.cpu(), **counts}


def _hsic_self(kz: Tensor, rk: Tensor, sk: Tensor, n: int) -> Tensor:
    """HSIC₁(K, K) for each Gram of a stack (the diagonal of :func:`_hsic_from_terms`)."""
    num = (kz * kz).sum(-1) + sk * sk / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (rk * rk).sum(-1)
    return num / (n * (n - 3))
