"""Tests for attnviz.tensorboard: write with a real SummaryWriter, read the event file back."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from attnviz.tensorboard import log_cam_overlays, log_feature_maps


def _events(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_log_feature_maps_images_and_gate_histograms(tmp_path):
    intermediates = {
        "layer1": torch.rand(2, 8, 12, 12, requires_grad=True),
        "layer1.0.attn.gate": torch.rand(2, 8, 1, 1),
        "layer2": torch.rand(2, 32, 6, 6).double(),
        "pooled": torch.rand(2, 8),  # not 4-D: skipped
        "logits": torch.rand(2, 10),  # not 4-D: skipped
    }
    with SummaryWriter(tmp_path) as writer:
        tags = log_feature_maps(writer, intermediates, step=3, max_channels=4, image_index=1)
        log_feature_maps(writer, intermediates, step=4, max_channels=4, prefix="val")
    assert tags == ["features/layer1", "features/layer1.0.attn.gate", "features/layer2"]

    acc = _events(tmp_path)
    images = acc.Tags()["images"]
    assert set(images) == {"features/layer1", "features/layer2", "val/layer1", "val/layer2"}
    assert set(acc.Tags()["histograms"]) == {
        "features/layer1.0.attn.gate",
        "val/layer1.0.attn.gate",
    }
    (event,) = acc.Images("features/layer1")
    assert event.step == 3
    # 4 channels in a 2x2 grid, 12x12 maps upscaled x4 to 48 px, 1 px padding
    assert (event.width, event.height) == (2 * 48 + 3, 2 * 48 + 3)
    (event,) = acc.Images("features/layer2")
    assert (event.width, event.height) == (2 * 48 + 3, 2 * 48 + 3)  # 6x6 upscaled x8
    (hist,) = acc.Histograms("features/layer1.0.attn.gate")
    assert hist.histogram_value.num == 16  # whole batch: 2 images x 8 channels


def test_log_feature_maps_bad_image_index(tmp_path):
    with (
        SummaryWriter(tmp_path) as writer,
        pytest.raises(IndexError, match=r"image_index=5 is out of range .*'x'.* batch of 2"),
    ):
        log_feature_maps(writer, {"x": torch.rand(2, 3, 4, 4)}, step=0, image_index=5)


def test_log_cam_overlays(tmp_path):
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    images = (torch.rand(3, 3, 16, 20) - 0.5) / 0.25
    cams = torch.rand(3, 4, 5)
    with SummaryWriter(tmp_path) as writer:
        tag = log_cam_overlays(writer, images, cams, step=7, max_images=2, denormalize=(mean, std))
    assert tag == "cam/overlays"
    (event,) = _events(tmp_path).Images(tag)
    assert event.step == 7
    assert (event.width, event.height) == (2 * 20 + 3 * 2, 16 + 2 * 2)  # 2 images side by side
    with SummaryWriter(tmp_path / "bad") as writer, pytest.raises(ValueError, match="denormalize"):
        log_cam_overlays(writer, images, cams, step=0)
