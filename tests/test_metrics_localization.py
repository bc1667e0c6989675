"""CamLocalization on hand-made maps and masks."""

from __future__ import annotations

import pytest
import torch

from attnviz.metrics import CamLocalization, energy_share, pointing_hits, threshold_iou


def _peak_map(size: int, y: int, x: int) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[0, y, x] = 1.0
    return m


def _pixel_mask(size: int, y: int, x: int) -> torch.Tensor:
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[0, y, x] = True
    return m


@pytest.mark.parametrize(
    ("mask_yx", "hit"),
    [
        ((13, 3), True),  # 10 px below the peak
        ((3, 17), True),  # 14 px right
        ((18, 3), False),  # exactly 15 px: the test is strict (< 15)
        ((19, 15), False),  # 16² + 12² = 20²: 20 px away
    ],
)
def test_pointing_game_tolerance_by_hand(mask_yx: tuple[int, int], hit: bool) -> None:
    cam = _peak_map(20, 3, 3)
    mask = _pixel_mask(20, *mask_yx)
    assert bool(pointing_hits(cam, mask, 15.0)[0]) is hit
    acc = CamLocalization()
    acc.update(cam, mask)
    assert acc.compute()["pointing_game"] == float(hit)


def test_energy_and_iou_by_hand() -> None:
    cam = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # min-max → [[0, 1/3], [2/3, 1]], sum 2
    top_right = torch.tensor([[[False, True], [False, False]]])
    bottom = torch.tensor([[[False, False], [True, True]]])
    right = torch.tensor([[[False, True], [False, True]]])
    assert float(energy_share(cam, top_right)) == pytest.approx((1 / 3) / 2)
    assert float(energy_share(cam, bottom)) == pytest.approx((5 / 3) / 2)
    # {S ≥ 0.5} = bottom row; with the right column: ∩ = 1, ∪ = 3
    assert float(threshold_iou(cam, right, 0.5)) == pytest.approx(1 / 3)
    assert float(threshold_iou(cam, bottom, 0.5)) == pytest.approx(1.0)
    acc = CamLocalization()
    acc.update(torch.cat([cam, cam]), torch.cat([top_right, right]))
    out = acc.compute()
    assert out["energy_pointing_game"] == pytest.approx(((1 / 3) / 2 + (4 / 3) / 2) / 2)
    assert out["iou"] == pytest.approx((0.0 + 1 / 3) / 2)
    assert out["pointing_game"] == pytest.approx(1.0)  # argmax (1, 1) is within 15 px of both


def test_constant_map_counts_as_uniform() -> None:
    cam = torch.full((1, 4, 4), 0.3)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :1] = True
    assert float(energy_share(cam, mask)) == pytest.approx(4 / 16)
    assert float(threshold_iou(cam, mask)) == pytest.approx(4 / 16)


def test_per_class_hit_rates_and_empty_masks() -> None:
    cams = torch.cat([_peak_map(40, 3, 3)] * 4)
    near, far = _pixel_mask(40, 5, 5), _pixel_mask(40, 35, 35)
    masks = torch.cat([near, far, near, torch.zeros(1, 40, 40, dtype=torch.bool)])
    labels = torch.tensor([0, 0, 1, 2])
    acc = CamLocalization(num_classes=3)
    acc.update(cams, masks.to(torch.uint8), labels)  # numeric masks: mask != 0
    out = acc.compute()
    assert out["pointing_game"] == pytest.approx(2 / 3)  # class 0: 1/2, class 1: 1/1
    assert out["pointing_game_class_mean"] == pytest.approx(0.75)
    assert out["pointing_game_per_class"][:2].tolist() == [0.5, 1.0]
    assert torch.isnan(out["pointing_game_per_class"][2])  # only an empty mask
    assert out["n_empty_masks"] == 1 and out["n_images"] == 3


def test_mask_of_another_size_is_a_clear_error() -> None:
    acc = CamLocalization()
    with pytest.raises(
        ValueError, match=r"`masks` has shape \(2, 10, 10\) but `cams` has shape \(2, 20, 20\)"
    ):
        acc.update(torch.rand(2, 20, 20), torch.ones(2, 10, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="without `num_classes`"):
        acc.update(torch.rand(2, 4, 4), torch.ones(2, 4, 4), torch.tensor([0, 1]))
