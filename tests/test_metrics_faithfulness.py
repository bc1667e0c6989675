"""Deletion / insertion (RISE) and Average Drop / Increase in Confidence."""

from __future__ import annotations

import pytest
import torch

from attnviz.metrics import (
    ConfidenceStats,
    FaithfulnessStats,
    confidence_drop_increase,
    deletion_insertion,
    gaussian_blur,
    trapezoid_auc,
)


def mean_prob(x: torch.Tensor) -> torch.Tensor:
    """A 'model' returning probabilities directly: p(class 1) = mean pixel value."""
    m = x.mean(dim=(1, 2, 3))
    return torch.stack([1 - m, m], dim=1)


def patch_model(x: torch.Tensor) -> torch.Tensor:
    """Logit of class 1 = 4·mean(x over the fixed patch rows 8:16, cols 8:16) − 4; class 0: 0."""
    z = 4 * x[:, :, 8:16, 8:16].mean(dim=(1, 2, 3)) - 4
    return torch.stack([torch.zeros_like(z), z], dim=1)


def test_trapezoid_auc_by_hand_and_rise_formula() -> None:
    assert (
        float(trapezoid_auc(torch.tensor([[1.0, 0.5, 0.0]]), torch.tensor([0.0, 0.5, 1.0]))) == 0.5
    )
    s = torch.rand(3, 11)
    rise = (s.sum(1) - s[:, 0] / 2 - s[:, -1] / 2) / 10
    torch.testing.assert_close(trapezoid_auc(s, torch.linspace(0, 1, 11)), rise.double())


def test_deletion_and_insertion_curves_by_hand() -> None:
    img = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]]) / 4  # mean 10/16
    cam = img[:, 0]  # ranks pixels 4, 3, 2, 1
    res = deletion_insertion(
        mean_prob, img, cam, 1, steps=4, insertion_substrate="zeros", apply_softmax=False
    )
    # deletion removes 4, 3, 2, 1 (/4 /4 per-pixel means): 10/16, 6/16, 3/16, 1/16, 0
    torch.testing.assert_close(
        res["deletion_curve"], torch.tensor([[10, 6, 3, 1, 0]], dtype=torch.float64) / 16
    )
    torch.testing.assert_close(
        res["insertion_curve"], torch.tensor([[0, 4, 7, 9, 10]], dtype=torch.float64) / 16
    )
    # AUC = (1/4)(10/32 + 6/16 + 3/16 + 1/16 + 0) and (1/4)(0 + 4/16 + 7/16 + 9/16 + 10/32)
    assert float(res["deletion_auc"]) == pytest.approx(0.234375)
    assert float(res["insertion_auc"]) == pytest.approx(25 / 64)
    torch.testing.assert_close(res["fractions"], torch.linspace(0, 1, 5, dtype=torch.float64))
    assert res["settings"]["steps"] == 4 and res["settings"]["blur"] is None


def _patch_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = 0.1 * torch.rand(n, 3, 24, 24, generator=g)
    images[:, :, 8:16, 8:16] = 2.0
    good = torch.zeros(n, 24, 24)
    good[:, 8:16, 8:16] = 1.0
    random = torch.rand(n, 24, 24, generator=g)
    return images, good, random


def test_map_on_the_pixels_the_model_uses_beats_a_random_map() -> None:
    images, good, random = _patch_data(4, 0)
    kw = {"steps": 24, "batch_size": 32}
    r_good = deletion_insertion(patch_model, images, good, **kw)
    r_rand = deletion_insertion(patch_model, images, random, **kw)
    assert (r_good["targets"] == 1).all()  # top-1 on the clean image
    assert (r_good["deletion_auc"] < r_rand["deletion_auc"] - 0.2).all()
    assert (r_good["insertion_auc"] > r_rand["insertion_auc"] + 0.1).all()
    # the curves start at the clean score (deletion) and end at it (insertion)
    torch.testing.assert_close(r_good["deletion_curve"][:, 0], r_good["insertion_curve"][:, -1])


def test_batched_forwards_chunking_and_no_grad() -> None:
    images, good, _ = _patch_data(3, 1)
    calls: list[tuple[int, bool]] = []

    def model_fn(x: torch.Tensor) -> torch.Tensor:
        calls.append((x.shape[0], torch.is_grad_enabled()))
        return patch_model(x)

    small = deletion_insertion(model_fn, images, good[:, ::4, ::4], steps=6, batch_size=5)
    assert max(b for b, _ in calls) <= 5 and not any(g for _, g in calls)
    rows = 3 * 7
    assert len(calls) == 1 + 2 * -(-rows // 5)  # clean pass for top-1 + two chunked curves
    big = deletion_insertion(patch_model, images, good[:, ::4, ::4], steps=6, batch_size=1000)
    for k in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"):
        torch.testing.assert_close(small[k], big[k])


def test_substrates() -> None:
    images, good, _ = _patch_data(2, 2)
    res = deletion_insertion(
        patch_model,
        images,
        good,
        steps=2,
        deletion_substrate="mean",
        insertion_substrate=lambda x: torch.full_like(x, 0.5),
    )
    assert res["settings"]["deletion_substrate"] == "mean"
    assert "lambda" in res["settings"]["insertion_substrate"]
    with pytest.raises(ValueError, match="callable returned"):
        deletion_insertion(patch_model, images, good, insertion_substrate=lambda x: x[:, :1])
    with pytest.raises(ValueError, match="'blur', 'zeros', 'mean'"):
        deletion_insertion(patch_model, images, good, deletion_substrate="noise")  # type: ignore[arg-type]
    blurred = gaussian_blur(images)
    assert blurred.shape == images.shape
    torch.testing.assert_close(gaussian_blur(torch.ones(1, 2, 5, 5)), torch.ones(1, 2, 5, 5))


def test_input_errors() -> None:
    images, good, _ = _patch_data(2, 3)
    with pytest.raises(
        ValueError, match=r"`cams` has shape \(3, 24, 24\) but `images` has shape \(2, 3, 24, 24\)"
    ):
        deletion_insertion(patch_model, images, torch.rand(3, 24, 24))
    with pytest.raises(ValueError, match=r"`images` has shape \(3, 24, 24\)"):
        deletion_insertion(patch_model, images[0], good)
    with pytest.raises(ValueError, match="`targets`"):
        deletion_insertion(patch_model, images, good, torch.tensor([1, 1, 1]))


def test_faithfulness_stats_average_the_per_image_aucs() -> None:
    images, good, random = _patch_data(4, 4)
    acc = FaithfulnessStats(steps=8)
    r1 = acc.update(patch_model, images[:2], good[:2])
    r2 = acc.update(patch_model, images[2:], random[2:])
    out = acc.compute()
    dels = torch.cat([r1["deletion_auc"], r2["deletion_auc"]])
    assert out["deletion_auc"] == pytest.approx(float(dels.mean()))
    assert out["deletion_auc_std"] == pytest.approx(float(dels.std(unbiased=False)))
    curves = torch.cat([r1["insertion_curve"], r2["insertion_curve"]])
    torch.testing.assert_close(out["insertion_curve"], curves.mean(0))
    assert out["settings"]["deletion_substrate"] == "zeros"
    assert out["settings"]["blur"] == {"kernel_size": 11, "sigma": 5.0, "padding": "replicate"}


def test_average_drop_and_increase_in_confidence_by_hand() -> None:
    ones = torch.ones(1, 1, 2, 2)
    cam = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    res = confidence_drop_increase(mean_prob, ones, cam, 1, apply_softmax=False)
    # E = [[1, 0], [0, 0]]: Y = 1, O = 1/4 → drop 3/4, no increase
    assert float(res["drop"]) == pytest.approx(0.75)
    assert float(res["increase"]) == 0.0

    def inv_prob(x: torch.Tensor) -> torch.Tensor:
        return mean_prob(x).flip(1)  # p(class 1) = 1 − mean

    corner = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    cam2 = torch.tensor([[[0.0, 4.0], [4.0, 4.0]]])  # min-max → [[0, 1], [1, 1]]: E = 0
    res2 = confidence_drop_increase(inv_prob, corner, cam2, 1, apply_softmax=False)
    assert float(res2["score_original"]) == 0.75 and float(res2["score_explanation"]) == 1.0
    assert float(res2["drop"]) == 0.0 and float(res2["increase"]) == 1.0

    acc = ConfidenceStats(apply_softmax=False)
    acc.update(mean_prob, ones, cam, 1)
    acc.update(inv_prob, corner, cam2, 1)
    out = acc.compute()
    assert out["average_drop_pct"] == pytest.approx(37.5)
    assert out["increase_in_confidence_pct"] == pytest.approx(50.0)


def test_confidence_uses_softmax_and_upsamples_the_map() -> None:
    images, good, _ = _patch_data(2, 5)
    res = confidence_drop_increase(patch_model, images, good[:, ::6, ::6])
    probs = torch.softmax(patch_model(images).double(), 1)[:, 1]
    torch.testing.assert_close(res["score_original"], probs)
    assert (res["targets"] == 1).all()
