"""What a model expects as input: size, normalisation and class names.

Training records these in its checkpoints (``extra["data"]`` of the spec);
otherwise they follow from the base model: timm's ``pretrained_cfg``,
ImageNet statistics for torchvision, the built-in dataset's for attnviz nets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["InputInfo", "input_info", "load_image"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class InputInfo:
    """``size`` (H, W), ``mean``/``std`` of the normalisation, ``channels``, optional ``class_names``."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    class_names: list[str] | None = field(default=None)

    def class_name(self, k: int) -> str:
        return (
            self.class_names[k]
            if self.class_names and 0 <= k < len(self.class_names)
            else f"class {k}"
        )


def _from_data(info: InputInfo, data: dict) -> InputInfo:
    if data.get("size"):
        size = data["size"]
        info.size = (
            (int(size), int(size)) if isinstance(size, int) else (int(size[-2]), int(size[-1]))
        )
    if data.get("mean") is not None:
        info.mean = tuple(float(v) for v in data["mean"])
    if data.get("std") is not None:
        info.std = tuple(float(v) for v in data["std"])
    if data.get("class_names"):
        info.class_names = [str(c) for c in data["class_names"]]
    info.channels = len(info.mean)
    return info


def input_info(model: nn.Module, ref: str | Path | None = None) -> InputInfo:
    """Input size, normalisation and class names for ``model`` (loaded from ``ref``)."""
    from .surgery import surgery_spec

    info = InputInfo()
    cfg = getattr(model, "pretrained_cfg", None)
    spec = surgery_spec(model)
    base = (spec.get("base") or {}).get("ref", "")
    if isinstance(cfg, dict) and cfg.get("input_size"):
        info.size = tuple(cfg["input_size"][-2:])
        info.mean, info.std = (
            tuple(cfg.get("mean", IMAGENET_MEAN)),
            tuple(cfg.get("std", IMAGENET_STD)),
        )
    elif base.startswith("attnviz:"):
        from .data.synthetic import MEAN, SHAPE_NAMES, STD

        info.size, info.mean, info.std = (64, 64), tuple(MEAN), tuple(STD)
        classes = getattr(model, "num_classes", None)
        info.class_names = (
            list(SHAPE_NAMES[:classes]) if classes and classes <= len(SHAPE_NAMES) else None
        )
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and conv.in_channels != len(info.mean):
        info.mean, info.std = (info.mean[0],) * conv.in_channels, (info.std[0],) * conv.in_channels
    info.channels = len(info.mean)
    ins = spec.get("insertions") or []
    if ins and ins[0].get("example_input_shape"):
        info.size = tuple(ins[0]["example_input_shape"][-2:])
    data = (spec.get("extra") or {}).get("data")
    if ref is not None and str(ref).endswith((".yaml", ".yml")):
        from .recipes import load_recipe

        recipe = load_recipe(ref)
        if recipe.input_size:
            info.size = tuple(recipe.input_size[-2:])
    if isinstance(data, dict):
        info = _from_data(info, data)
    return info


def load_image(path: str | Path, info: InputInfo) -> tuple[torch.Tensor, np.ndarray]:
    """``(normalised tensor [1, C, H, W], display image [H, W, C] in [0, 1])`` for ``path``.

    The image is resized (bilinear) to ``info.size``; unreadable files raise
    naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("L" if info.channels == 1 else "RGB").resize(
                info.size[::-1], Image.BILINEAR
            )
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    arr = np.asarray(im, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = torch.from_numpy(arr).permute(2, 0, 1)
    mean = torch.tensor(info.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(info.std, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std)[None], arr
