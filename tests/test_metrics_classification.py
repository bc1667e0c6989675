"""ClassificationStats against hand values and torchmetrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from attnviz.metrics import ClassificationStats


def test_hand_values() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(4.0)]])
    labels = torch.tensor([0, 1, 1])  # probs [.5,.5], [.75,.25], [.2,.8]
    acc = ClassificationStats(top_k=1)
    acc.update(logits, labels)
    out = acc.compute()
    assert out["accuracy"] == pytest.approx(2 / 3)  # argmax of a tie is the first class
    assert out["mean_true_confidence"] == pytest.approx((0.5 + 0.25 + 0.8) / 3)
    assert out["mean_max_confidence"] == pytest.approx((0.5 + 0.75 + 0.8) / 3)
    assert out["nll"] == pytest.approx(-(math.log(0.5) + math.log(0.25) + math.log(0.8)) / 3)


def test_matches_torchmetrics_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    acc = ClassificationStats(top_k=3, ece_bins=10)
    top1 = MulticlassAccuracy(num_classes=7, average="micro")
    top3 = MulticlassAccuracy(num_classes=7, average="micro", top_k=3)
    ece = MulticlassCalibrationError(num_classes=7, n_bins=10, norm="l1")
    all_logits, all_labels = [], []
    for _ in range(4):
        labels = torch.randint(0, 7, (50,), generator=g)
        logits = 2 * torch.randn(50, 7, generator=g) + 2 * F.one_hot(labels, 7)
        acc.update(logits, labels)
        top1.update(logits, labels)
        top3.update(logits, labels)
        ece.update(logits.softmax(1), labels)
        all_logits.append(logits)
        all_labels.append(labels)
    out = acc.compute()
    assert out["accuracy"] == pytest.approx(float(top1.compute()), abs=1e-6)
    assert out["top_k_accuracy"] == pytest.approx(float(top3.compute()), abs=1e-6)
    assert out["ece"] == pytest.approx(float(ece.compute()), abs=1e-5)
    ce = F.cross_entropy(torch.cat(all_logits).double(), torch.cat(all_labels))
    assert out["nll"] == pytest.approx(float(ce), rel=1e-9)
    assert out["n_images"] == 200


def test_errors() -> None:
    acc = ClassificationStats()
    with pytest.raises(ValueError, match=r"`logits` has shape \(4,\)"):
        acc.update(torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        acc.update(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        acc.update(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
