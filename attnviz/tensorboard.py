"""Feature maps, attention gates and CAM overlays in TensorBoard, e.g. every few epochs.

Works with :class:`torch.utils.tensorboard.SummaryWriter` (or anything with its
``add_image`` / ``add_histogram`` methods). Images are rendered with the array forms of
:mod:`attnviz.plots` (no matplotlib figure), so logging is cheap.

>>> import tempfile, torch, torchvision
>>> from torch.utils.tensorboard import SummaryWriter
>>> from attnviz import with_intermediates
>>> net = with_intermediates(torchvision.models.resnet18().eval(), ["layer1", "layer3"])
>>> logits, feats = net(torch.randn(2, 3, 64, 64))
>>> with SummaryWriter(tempfile.mkdtemp()) as writer:
...     log_feature_maps(writer, feats, step=0)
['features/layer1', 'features/layer3']
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .errors import AttnvizError
from .plots import ArrayLike, tile, to_numpy, to_uint8
from .plots.cams import Denormalize, overlay_batch
from .plots.features import feature_grid_array

__all__ = ["log_cam_overlays", "log_feature_maps"]

_MIN_CELL_PX = 48  # small maps (7x7) are upscaled to at least this size to stay visible


def log_feature_maps(
    writer: Any,
    intermediates: Mapping[str, ArrayLike],
    step: int,
    *,
    max_channels: int = 16,
    image_index: int = 0,
    prefix: str = "features",
    normalize: str = "per_channel",
    order: str = "index",
    cmap: str = "viridis",
) -> list[str]:
    """Log one channel-grid image per feature map, and gates as histograms.

    ``intermediates`` is ``{layer_name: tensor [B, C, H, W]}`` as returned by a model wrapped
    with :func:`attnviz.with_intermediates`. For each 4-D entry, the first ``max_channels``
    channels (``order="energy"``: the strongest) of image ``image_index`` go to
    ``f"{prefix}/{layer_name}"`` as one image. Entries of shape ``[B, C, 1, 1]`` (attention
    gates) are logged as a histogram of their values over the whole batch under the same
    tag. Entries that are not 4-D tensors or arrays (logits, pooled vectors, tuples) are
    skipped. Returns the tags written.
    """
    tags = []
    for name, value in intermediates.items():
        if not isinstance(value, (torch.Tensor, np.ndarray)) or value.ndim != 4:
            continue
        tag = f"{prefix}/{name}"
        b, _, h, w = value.shape
        if h == 1 and w == 1:
            vals = to_numpy(value, f"intermediates[{name!r}]").reshape(-1)
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                continue
            writer.add_histogram(tag, vals, step)
        else:
            if not -b <= image_index < b:
                raise IndexError(
                    f"image_index={image_index} is out of range for intermediates[{name!r}] "
                    f"with a batch of {b}"
                )
            grid = feature_grid_array(
                value[image_index],
                max_channels,
                normalize,
                order=order,
                cmap=cmap,
                scale=max(1, math.ceil(_MIN_CELL_PX / max(h, w))),
            )
            writer.add_image(tag, grid, step, dataformats="HWC")
        tags.append(tag)
    return tags


def log_cam_overlays(
    writer: Any,
    images: ArrayLike,
    cams: ArrayLike,
    step: int,
    *,
    prefix: str = "cam",
    max_images: int = 8,
    denormalize: Denormalize = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    ncols: int | None = None,
) -> str:
    """Log CAM overlays of the first ``max_images`` images as one grid image.

    ``images`` [B, 3, H, W] (``denormalize=(mean, std)`` or ``"imagenet"`` undoes input
    normalisation), ``cams`` [B, h, w] in [0, 1]. Written under ``f"{prefix}/overlays"``,
    which is returned.
    """
    if max_images < 1:
        raise AttnvizError(f"max_images must be >= 1, got {max_images}")
    overlays = overlay_batch(
        images[:max_images], cams[:max_images], alpha, cmap, denormalize=denormalize
    )
    grid = to_uint8(tile(overlays, ncols, pad=2, pad_value=1.0))
    tag = f"{prefix}/overlays"
    writer.add_image(tag, grid, step, dataformats="HWC")
    return tag
