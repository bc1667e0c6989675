"""CamAgreement and CamConcentration, and the tie-aware ranking they use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from attnviz.metrics import CamAgreement, CamConcentration, average_ranks, top_iou


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), min_size=6, max_size=6), min_size=1, max_size=4))
def test_average_ranks_match_scipy_with_ties(rows: list[list[int]]) -> None:
    x = torch.tensor(rows, dtype=torch.float32)
    ref = np.stack([stats.rankdata(r, method="average") for r in rows])
    np.testing.assert_array_equal(average_ranks(x).numpy(), ref)


@pytest.mark.filterwarnings("ignore:Metric `SpearmanCorrcoef` will save")
def test_correlations_match_scipy_and_torchmetrics_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 7, 6, generator=g)
    b = a + 0.5 * torch.rand(5, 7, 6, generator=g)
    a[1, :3] = 0.0  # ties, as in a ReLU'd CAM
    b[2] = torch.round(b[2] * 3)  # heavy ties
    acc = CamAgreement()
    acc.update(a, b)
    out = acc.compute()
    pear, spear, tm_pear, tm_spear = [], [], [], []
    for ai, bi in zip(a.flatten(1).double(), b.flatten(1).double()):
        pear.append(stats.pearsonr(ai.numpy(), bi.numpy())[0])
        spear.append(stats.spearmanr(ai.numpy(), bi.numpy())[0])
        tm_pear.append(float(PearsonCorrCoef()(ai, bi)))
        tm_spear.append(float(SpearmanCorrCoef()(ai, bi)))
    assert out["pearson"] == pytest.approx(np.mean(pear), rel=1e-9)
    assert out["spearman"] == pytest.approx(np.mean(spear), rel=1e-9)
    assert out["pearson"] == pytest.approx(np.mean(tm_pear), rel=1e-6)
    assert out["spearman"] == pytest.approx(np.mean(tm_spear), rel=1e-6)


def test_top_iou_by_hand() -> None:
    a = torch.tensor([[9.0, 8.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 8.0, 9.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    # top 20% of 10 pixels = 2: {0, 1} vs {2, 1} → IoU = 1 / 3
    assert float(top_iou(a, b, 0.2)) == pytest.approx(1 / 3)
    # ties at the cut are broken by pixel index: top 30% of a = {0, 1, 2}
    assert float(top_iou(a, b, 0.3)) == pytest.approx(2 / 4)  # {0,1,2} vs {2,1,3}


def test_identical_maps_agree_fully_and_constant_maps_are_left_out() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 8, 8, generator=g)
    b = a.clone()
    b[2] = 0.5
    acc = CamAgreement(top_fraction=0.25)
    acc.update(a.unsqueeze(1), b)  # [B, 1, H, W] is accepted
    out = acc.compute()
    assert out["pearson"] == pytest.approx(1.0)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["n_constant"] == 1 and out["n_images"] == 3
    assert 0 <= out["top_iou"] < 1  # the constant map's top set is arbitrary (pixel order)


def test_agreement_shape_errors() -> None:
    acc = CamAgreement()
    with pytest.raises(
        ValueError, match=r"`cams` has shape \(2, 7, 7\) but `reference` has shape \(2, 8, 8\)"
    ):
        acc.update(torch.rand(2, 7, 7), torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match=r"`cams` has shape \(2, 3, 8, 8\)"):
        acc.update(torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="top_fraction"):
        CamAgreement(top_fraction=0.0)


def test_concentration_extremes_and_hand_value() -> None:
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 1, 2] = 3.0
    uniform = torch.full((1, 4, 4), 0.7)
    half = torch.zeros(1, 4, 4)
    half[0, :2] = 1.0  # 8 of 16 pixels equal → entropy log 8 / log 16 = 3/4
    negative = -torch.ones(1, 4, 4)  # clamped to 0: no mass, left out
    acc = CamConcentration()
    for m in (one_hot, uniform, half, negative):
        acc.update(m)
    out = acc.compute()
    assert out["entropy"] == pytest.approx((0 + 1 + 0.75) / 3)
    assert out["n_zero_maps"] == 1 and out["n_images"] == 4
    assert math.isfinite(out["entropy"])
