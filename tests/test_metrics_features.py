"""FeatureStats on hand-computed maps."""

from __future__ import annotations

import math

import pytest
import torch

from attnviz.metrics import FeatureStats, channel_gini, spatial_entropy


def test_hand_values() -> None:
    # channel 0 = [3, 0], channel 1 = [0, 4] over a 1×2 map
    x = torch.tensor([[[[3.0, 0.0]], [[0.0, 4.0]]]])
    acc = FeatureStats()
    acc.update(x)
    out = acc.compute()
    assert out["mean"] == pytest.approx(7 / 4)
    assert out["std"] == pytest.approx(math.sqrt(25 / 4 - 49 / 16))
    assert out["sparsity"] == pytest.approx(0.5)
    # energies 9, 16: G = ((2·1−3)·9 + (2·2−3)·16) / (2·25) = 7/50
    assert out["channel_gini"] == pytest.approx(7 / 50)
    # p = [9/25, 16/25] over 2 positions
    p = torch.tensor([9 / 25, 16 / 25], dtype=torch.float64)
    assert out["spatial_entropy"] == pytest.approx(float(-(p * p.log()).sum() / math.log(2)))


def test_extremes() -> None:
    one_channel = torch.zeros(1, 4, 3, 3)
    one_channel[0, 2] = 1.0
    assert float(channel_gini(one_channel)) == pytest.approx(3 / 4)  # (C − 1) / C
    assert float(channel_gini(torch.ones(1, 4, 3, 3))) == pytest.approx(0.0)
    one_position = torch.zeros(1, 4, 3, 3)
    one_position[:, :, 1, 2] = 2.0
    assert float(spatial_entropy(one_position)) == pytest.approx(0.0)
    assert float(spatial_entropy(torch.ones(1, 4, 3, 3))) == pytest.approx(1.0)


def test_all_zero_images_are_left_out_of_gini_and_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(3, 5, 4, 4, generator=g))
    alone = FeatureStats()
    alone.update(x)
    with_dead = FeatureStats()
    with_dead.update(torch.cat([x, torch.zeros(2, 5, 4, 4)]))
    a, b = alone.compute(), with_dead.compute()
    assert b["n_zero_images"] == 2 and b["n_images"] == 5
    assert b["channel_gini"] == pytest.approx(a["channel_gini"])
    assert b["spatial_entropy"] == pytest.approx(a["spatial_entropy"])


def test_mean_std_sparsity_match_torch_over_batches() -> None:
    g = torch.Generator().manual_seed(1)
    batches = [torch.relu(torch.randn(4, 8, 6, 6, generator=g) + 0.3) for _ in range(5)]
    acc = FeatureStats()
    for b in batches:
        acc.update(b)
    allx = torch.cat(batches).double()
    out = acc.compute()
    assert out["mean"] == pytest.approx(float(allx.mean()), rel=1e-9)
    assert out["std"] == pytest.approx(float(allx.std(unbiased=False)), rel=1e-6)
    assert out["sparsity"] == pytest.approx(float((allx == 0).double().mean()))
    assert out["channel_gini"] == pytest.approx(float(channel_gini(allx).mean()), rel=1e-6)


def test_errors_name_the_shape() -> None:
    with pytest.raises(
        ValueError, match=r"`features` has shape \(2, 8\) \(2-D\), expected \[B, C, H, W\]"
    ):
        FeatureStats().update(torch.rand(2, 8))
    with pytest.raises(ValueError, match=r"H × W ≥ 2"):
        FeatureStats().update(torch.rand(2, 8, 1, 1))
