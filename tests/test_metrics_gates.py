"""GateStats: layouts, histogram, per-class profiles and class specificity (η²)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.metrics import GateStats, gate_profile


def test_gate_profile_reads_every_documented_layout() -> None:
    g = torch.Generator().manual_seed(0)
    se = torch.rand(2, 5, 1, 1, generator=g)
    torch.testing.assert_close(gate_profile(se), se[:, :, 0, 0])
    eca = torch.rand(2, 1, 5, generator=g)  # timm ECA conv1d layout
    torch.testing.assert_close(gate_profile(eca), eca[:, 0])
    simam = torch.rand(2, 5, 3, 4, generator=g)
    torch.testing.assert_close(gate_profile(simam), simam.mean((2, 3)))
    spatial = torch.rand(2, 1, 3, 4, generator=g)
    torch.testing.assert_close(gate_profile(spatial), spatial.mean((2, 3)))
    assert gate_profile(spatial).shape == (2, 1)
    flat = torch.rand(2, 5, generator=g)
    torch.testing.assert_close(gate_profile(flat), flat)
    channels_last = torch.rand(2, 3, 4, 5, generator=g)
    torch.testing.assert_close(
        gate_profile(channels_last, channel_dim=3), channels_last.mean((1, 2))
    )
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\[B, 1, C\].*channel_dim"):
        gate_profile(torch.rand(2, 3, 4))


def test_histogram_counts_every_value_and_clamps_outside_values() -> None:
    vals = torch.tensor([-0.5, 0.0, 0.05, 0.5, 0.99, 1.0, 1.5]).view(1, 7, 1, 1)
    acc = GateStats(bins=10)
    acc.update(vals)
    out = acc.compute()
    hist = out["histogram"]
    assert hist.sum() == 7 == out["n_values"]
    assert hist[0] == 3  # -0.5 (clamped), 0.0, 0.05
    assert hist[5] == 1  # 0.5
    assert hist[9] == 3  # 0.99, 1.0, 1.5 (clamped)
    assert out["frac_below"] == pytest.approx(1 / 7)
    assert out["frac_above"] == pytest.approx(1 / 7)
    torch.testing.assert_close(out["bin_edges"], torch.linspace(0, 1, 11, dtype=torch.float64))


def test_histogram_mean_and_std_match_numpy_over_batches() -> None:
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(8, 16, 3, 3, generator=g) * 0.98 + 0.01 for _ in range(4)]
    acc = GateStats(bins=50)
    for b in batches:
        acc.update(b)
    allv = torch.cat([b.flatten() for b in batches]).double().numpy()
    ref, _ = np.histogram(allv, bins=50, range=(0, 1))
    out = acc.compute()
    np.testing.assert_array_equal(out["histogram"].numpy(), ref)
    assert out["mean"] == pytest.approx(allv.mean(), rel=1e-6)
    assert out["std"] == pytest.approx(allv.std(), rel=1e-5)
    mean_profile = torch.cat([b.mean((2, 3)) for b in batches]).double().mean(0)
    torch.testing.assert_close(out["mean_profile"], mean_profile)


def test_wider_value_range_for_two_sigma_identity_gates() -> None:
    acc = GateStats(bins=4, value_range=(0.0, 2.0))
    acc.update(torch.tensor([[0.1, 0.9, 1.1, 1.9]]))
    out = acc.compute()
    assert out["histogram"].tolist() == [1, 1, 1, 1]
    assert out["frac_above"] == 0.0


def test_eta_squared_by_hand() -> None:
    # one channel; class 0 profiles {0, 2}, class 1 profiles {4, 6}; grand mean 3.
    # SS_total = 9+1+1+9 = 20, SS_between = 2·(1−3)² + 2·(5−3)² = 16 → η² = 0.8
    # SS_within = 4, df_within = 2 → ε² = (16 − 1·4/2) / 20 = 0.7
    acc = GateStats(num_classes=3)
    acc.update(torch.tensor([0.0, 2.0, 4.0, 6.0]).view(4, 1, 1, 1), torch.tensor([0, 0, 1, 1]))
    out = acc.compute()
    assert out["class_specificity"] == pytest.approx(0.8)
    assert out["class_specificity_adjusted"] == pytest.approx(0.7)
    assert out["class_counts"].tolist() == [2, 2, 0]
    assert out["class_profiles"][:2, 0].tolist() == [1.0, 5.0]
    assert torch.isnan(out["class_profiles"][2]).all()  # unseen class
    assert out["n_classes_seen"] == 2


def test_gates_determined_by_the_class_give_specificity_near_one() -> None:
    g = torch.Generator().manual_seed(2)
    table = torch.rand(4, 32, generator=g)
    acc = GateStats(num_classes=4)
    for _ in range(5):
        labels = torch.randint(0, 4, (64,), generator=g)
        gates = table[labels] + 1e-3 * torch.randn(64, 32, generator=g)
        acc.update(gates.view(64, 32, 1, 1), labels)
    out = acc.compute()
    assert out["class_specificity"] > 0.99
    torch.testing.assert_close(out["class_profiles"], table.double(), atol=1e-3, rtol=0)


def test_gates_independent_of_the_class_give_specificity_near_zero() -> None:
    g = torch.Generator().manual_seed(3)
    acc = GateStats(num_classes=4)
    for _ in range(8):
        labels = torch.randint(0, 4, (512,), generator=g)
        acc.update(torch.rand(512, 1, 16, generator=g), labels)  # ECA layout
    out = acc.compute()
    assert out["class_specificity"] < 0.01  # η² bias ≈ (K−1)/(N−1) ≈ 0.0007
    assert abs(out["class_specificity_adjusted"]) < 0.003


def test_label_errors() -> None:
    with pytest.raises(ValueError, match="without `num_classes`"):
        GateStats().update(torch.rand(2, 3, 1, 1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"`labels` .* required"):
        GateStats(num_classes=2).update(torch.rand(2, 3, 1, 1))
    with pytest.raises(ValueError, match=r"\[0, 2\).*\[0, 5\]"):
        GateStats(num_classes=2).update(torch.rand(2, 3, 1, 1), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"`labels` has shape \(3,\), expected \[B\] = \[2\]"):
        GateStats(num_classes=2).update(torch.rand(2, 3, 1, 1), torch.tensor([0, 1, 1]))
