"""Accuracy and confidence of a classifier, streamed over batches of logits."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import AttnvizError
from ._base import Accumulator, ratio
from ._checks import check_float, check_labels, check_tensor

__all__ = ["ClassificationStats"]


class ClassificationStats(Accumulator):
    """Top-1 / top-k accuracy, confidence, NLL and calibration from logits ``[B, K]`` and labels ``[B]``.

    With ``p = softmax(logits)`` per image:

    * ``accuracy``: share with ``argmax p`` = label; ``top_k_accuracy``: label among the
      ``top_k`` largest logits (``min(top_k, K)``; ties follow ``torch.topk``).
    * ``mean_true_confidence``: mean of ``p[label]``; ``mean_max_confidence``: mean of ``max p``.
    * ``nll``: mean of ``−log p[label]`` (cross-entropy).
    * ``ece``: expected calibration error with ``ece_bins`` equal-width bins of ``max p``
      (bin ``b`` holds ``[b/n, (b+1)/n)``, the last bin includes 1):
      ``Σ_b (n_b/N) |acc_b − conf_b|``, as ``torchmetrics`` ``MulticlassCalibrationError(norm="l1")``.

    The values equal torchmetrics' ``MulticlassAccuracy(average="micro")`` and
    ``MulticlassCalibrationError`` on the same data (checked in the tests); they are
    kept here as plain running sums (bounded state, ``all_reduce``-summable), since
    torchmetrics' calibration metric stores every prediction.
    """

    definition = (
        "p = softmax(logits). accuracy = mean 1[argmax p = y]; top-k accuracy = mean 1[y ∈ top-k]; "
        "mean_true_confidence = mean p_y; mean_max_confidence = mean max p; nll = mean −log p_y; "
        "ece = Σ_b (n_b/N) |acc_b − conf_b| over equal-width bins of max p."
    )

    def __init__(self, top_k: int = 5, ece_bins: int = 15) -> None:
        super().__init__()
        if top_k < 1:
            raise AttnvizError(f"ClassificationStats: `top_k` must be ≥ 1, got {top_k}")
        if ece_bins < 1:
            raise AttnvizError(f"ClassificationStats: `ece_bins` must be ≥ 1, got {ece_bins}")
        self.top_k = top_k
        self.ece_bins = ece_bins
        for name in (
            "n_images",
            "n_correct",
            "n_correct_top_k",
            "sum_true_conf",
            "sum_max_conf",
            "sum_nll",
        ):
            self.add_state(name)
        for name in ("bin_n", "bin_conf", "bin_correct"):
            self.add_state(name, (ece_bins,))

    def settings(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "ece_bins": self.ece_bins, "probabilities": "softmax"}

    def update(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Add logits ``[B, K]`` and integer labels ``[B]``; returns the batch's per-image values.

        ``{"correct": bool [B], "true_confidence": float64 [B]}``: whether the top-1
        prediction is the label, and ``p[label]`` (the inputs of a paired comparison).
        """
        owner = "ClassificationStats.update"
        z = check_tensor(owner, "logits", logits, (2,), "[B, K]")
        z = check_float(owner, "logits", z.detach()).to(torch.float64)
        b, k = z.shape
        y = check_labels(owner, labels, b, k, z.device)
        logp = z.log_softmax(dim=1)
        p_true = logp.gather(1, y[:, None])[:, 0].exp()
        p_max, pred = logp.max(dim=1)
        p_max = p_max.exp()
        hit = pred == y
        correct = hit.to(torch.float64)
        topk = z.topk(min(self.top_k, k), dim=1).indices
        st = self._running(z.device)
        st["n_images"].add_(b)
        st["n_correct"].add_(correct.sum())
        st["n_correct_top_k"].add_((topk == y[:, None]).any(dim=1).sum())
        st["sum_true_conf"].add_(p_true.sum())
        st["sum_max_conf"].add_(p_max.sum())
        st["sum_nll"].add_(-logp.gather(1, y[:, None]).sum())
        bins = (p_max * self.ece_bins).floor().long().clamp(0, self.ece_bins - 1)
        st["bin_n"].index_add_(0, bins, torch.ones_like(p_max))
        st["bin_conf"].index_add_(0, bins, p_max)
        st["bin_correct"].index_add_(0, bins, correct)
        return {"correct": hit, "true_confidence": p_true}

    def compute(self) -> dict[str, Any]:
        s = self._states
        n = s["n_images"]
        gap = (s["bin_correct"] - s["bin_conf"]).abs().sum()  # Σ_b n_b |acc_b − conf_b|
        return {
            "accuracy": ratio(s["n_correct"], n),
            "top_k_accuracy": ratio(s["n_correct_top_k"], n),
            "mean_true_confidence": ratio(s["sum_true_conf"], n),
            "mean_max_confidence": ratio(s["sum_max_conf"], n),
            "nll": ratio(s["sum_nll"], n),
            "ece": ratio(gap, n),
            "n_images": int(n),
        }
