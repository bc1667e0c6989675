"""Datasets: the built-in procedural :class:`SyntheticShapes` and image folders.

:func:`build_dataset` turns a short spec (``"synthetic"``, ``"synthetic:2000"`` or
a folder path) into a Dataset, so recipes and the CLI can name data in one string.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .folder import IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS, ImageFolderWithMasks
from .synthetic import DEMO_TRAINING, SHAPE_NAMES, SPLITS, SyntheticShapes
from .transforms import RandomFlip, denormalize, normalize

__all__ = [
    "DEMO_TRAINING",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "SHAPE_NAMES",
    "ImageFolderWithMasks",
    "RandomFlip",
    "SyntheticShapes",
    "build_dataset",
    "denormalize",
    "normalize",
]


def build_dataset(
    spec: str | os.PathLike[str],
    split: str = "train",
    size: int = 64,
    *,
    masks_root: str | os.PathLike[str] | None = None,
    transform: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> Dataset:
    """Build a dataset from a spec string.

    - ``"synthetic"``: :class:`SyntheticShapes` with ``DEMO_TRAINING``'s
      ``train_images`` / ``val_images`` for ``split`` ``"train"`` / anything else;
      ``"synthetic:N"``: N images whatever the split. ``kwargs`` go to
      :class:`SyntheticShapes` (``num_classes``, ``seed``, ...).
    - a folder path: :class:`ImageFolderWithMasks` over ``path/<split>`` when
      ``path`` has ``train/`` or ``val/`` subfolders, else over ``path`` itself
      (then every split is the same images). Labels of a non-train split follow
      ``path/train``'s classes when it exists. ``masks_root`` is resolved the
      same way. ``kwargs`` go to :class:`ImageFolderWithMasks`.

    >>> len(build_dataset("synthetic:10", split="val"))
    10
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    text = os.fspath(spec)
    if text == "synthetic" or text.startswith("synthetic:"):
        if masks_root is not None:
            raise ValueError("masks_root is for folder datasets; synthetic images carry masks")
        if text == "synthetic":
            n = DEMO_TRAINING["train_images" if split == "train" else "val_images"]
        else:
            count = text.partition(":")[2]
            if not count.isdigit() or int(count) < 1:
                raise ValueError(
                    f"dataset spec {text!r}: expected 'synthetic' or 'synthetic:N' with N >= 1"
                )
            n = int(count)
        return SyntheticShapes(n, size=size, split=split, transform=transform, **kwargs)

    root = Path(text)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset spec {text!r} is neither 'synthetic[:N]' nor an existing folder"
        )
    split_dirs = [d for d in SPLITS if (root / d).is_dir()]
    classes = kwargs.pop("classes", None)
    if split_dirs:
        if split not in split_dirs:
            raise FileNotFoundError(
                f"{text!r} has split folders {split_dirs} but no {split!r} folder"
            )
        if classes is None and split != "train" and "train" in split_dirs:
            classes = sorted(
                e.name
                for e in os.scandir(root / "train")
                if e.is_dir() and not e.name.startswith(".")
            )
        root = root / split
        if masks_root is not None and (Path(masks_root) / split).is_dir():
            masks_root = Path(masks_root) / split
    return ImageFolderWithMasks(
        root, masks_root=masks_root, size=size, transform=transform, classes=classes, **kwargs
    )
