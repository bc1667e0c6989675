"""Dataset specs: one string names the data for recipes, training and the command line.

=========================  =============================================  ==========================
spec                       dataset                                        masks
=========================  =============================================  ==========================
``synthetic[:N]``          :class:`SyntheticShapes`                       the drawn shape
``oxford-pets:PATH``       :class:`OxfordPets` (37 breeds)                the trimap's pet
``voc-seg:PATH``           :class:`VOCObjects` (20 classes)               the label's pixels
``cifar10:PATH``           :class:`Cifar10`                               none
``imagenette:PATH``        :class:`Imagenette` (10 classes)               none
a folder                   :class:`ImageFolderWithMasks`                  with ``masks_root``
=========================  =============================================  ==========================

A named dataset is read in its own on-disk layout at ``PATH``, the ``root``
torchvision's class of the same dataset takes (and writes with
``download=True``). attnviz's splits map onto each dataset's own: ``train`` /
``val`` are pets trainval / test, VOC train / val, CIFAR train / test,
Imagenette train / val (``test`` exists where the dataset has one: pets, CIFAR).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .._select import closest
from ..errors import DataError, DataNotFoundError
from .cifar import Cifar10
from .folder import ImageFolderWithMasks
from .imagenette import Imagenette
from .pets import OxfordPets
from .synthetic import DEMO_TRAINING, SPLITS, SyntheticShapes
from .voc import VOCObjects

__all__ = [
    "NAMED_DATASETS",
    "build_dataset",
    "canonical_spec",
    "is_synthetic",
    "named_spec",
    "synthetic_count",
]

#: ``NAME`` of a ``NAME:PATH`` spec -> the dataset class reading that layout.
NAMED_DATASETS: dict[str, type[Dataset]] = {
    "oxford-pets": OxfordPets,
    "voc-seg": VOCObjects,
    "cifar10": Cifar10,
    "imagenette": Imagenette,
}
_NAME = re.compile(r"[A-Za-z][\w.-]+")  # two characters at least: "C:" is a drive


def named_spec(spec: str | os.PathLike[str]) -> tuple[str, Path] | None:
    """``(name, root)`` for a ``NAME:PATH`` spec of a named dataset, else None.

    >>> named_spec("oxford-pets:/data/pets")
    ('oxford-pets', PosixPath('/data/pets'))
    >>> named_spec("synthetic:100") is None
    True
    """
    text = os.fspath(spec)
    name, sep, path = text.partition(":")
    if not sep or name not in NAMED_DATASETS:
        return None
    if not path:
        raise DataError(f"dataset spec {text!r}: expected {name}:PATH, the folder holding the data")
    return name, Path(path).expanduser()


def is_synthetic(spec: str | os.PathLike[str]) -> bool:
    """Whether ``spec`` names the built-in data (``synthetic`` or ``synthetic:N``)."""
    text = os.fspath(spec)
    return text == "synthetic" or text.startswith("synthetic:")


def synthetic_count(spec: str | os.PathLike[str]) -> int | None:
    """N of ``synthetic:N`` (None for plain ``synthetic``); a bad N is a :class:`DataError`."""
    text = os.fspath(spec)
    if text == "synthetic":
        return None
    count = text.partition(":")[2]
    if not count.isdigit() or int(count) < 1:
        raise DataError(f"dataset spec {text!r}: expected 'synthetic' or 'synthetic:N' with N >= 1")
    return int(count)


def canonical_spec(spec: str | os.PathLike[str]) -> str:
    """The spec with its path made absolute: the same data compares equal from any folder."""
    text = os.fspath(spec)
    if is_synthetic(text):
        return text
    named = named_spec(text)
    if named is not None:
        return f"{named[0]}:{named[1].resolve()}"
    return str(Path(text).resolve())


def _options(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY]


def _named(
    text: str,
    name: str,
    root: Path,
    split: str,
    size: int,
    *,
    masks_root: Any,
    transform: Any,
    download: bool,
    kwargs: dict[str, Any],
) -> Dataset:
    cls = NAMED_DATASETS[name]
    if masks_root is not None:
        raise DataError(
            f"dataset spec {text!r}: masks_root (--masks) is for image folders; {name} "
            "brings its own masks or has none"
        )
    options = _options(cls)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise DataError(
            f"dataset spec {text!r}: {name} has no option {unknown[0]!r}; its options: {options}"
        )
    return cls(root, split, size=size, transform=transform, download=download, **kwargs)


def build_dataset(
    spec: str | os.PathLike[str],
    split: str = "train",
    size: int = 64,
    *,
    masks_root: str | os.PathLike[str] | None = None,
    transform: Callable[..., Any] | None = None,
    download: bool = False,
    **kwargs: Any,
) -> Dataset:
    """Build a dataset from a spec string (see the table in the module docs).

    - ``"synthetic"``: :class:`SyntheticShapes` with ``DEMO_TRAINING``'s
      ``train_images`` / ``val_images`` for ``split`` ``"train"`` / anything else;
      ``"synthetic:N"``: N images whatever the split. ``kwargs`` go to
      :class:`SyntheticShapes` (``num_classes``, ``seed``, ...).
    - ``"NAME:PATH"``: the named dataset at ``PATH`` (``oxford-pets``, ``voc-seg``,
      ``cifar10``, ``imagenette``), ``split`` mapped onto the dataset's own;
      ``download=True`` fetches it with torchvision when it is missing. ``kwargs``
      go to its class (``resize="crop"|"stretch"``, ``mean``, ``std``, ``skip_bad``,
      ``border`` for pets, ``year`` for VOC, ``version`` for Imagenette, ...).
    - a folder path: :class:`ImageFolderWithMasks` over ``path/<split>`` when
      ``path`` has ``train/`` or ``val/`` subfolders, else over ``path`` itself
      (then every split is the same images). Labels of a non-train split follow
      ``path/train``'s classes when it exists. ``masks_root`` is resolved the
      same way. ``kwargs`` go to :class:`ImageFolderWithMasks`.

    Errors are :class:`~attnviz.errors.DataError` naming the spec (missing data:
    :class:`~attnviz.errors.DataNotFoundError`, saying where it looked).

    >>> len(build_dataset("synthetic:10", split="val"))
    10
    >>> pets = build_dataset("oxford-pets:data", "val", 224)  # doctest: +SKIP
    >>> image, label, mask = pets[0]  # doctest: +SKIP
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    text = os.fspath(spec)
    if is_synthetic(text):
        if masks_root is not None:
            raise DataError("masks_root is for folder datasets; synthetic images carry masks")
        if download:
            raise DataError(f"dataset spec {text!r}: synthetic images are drawn, not downloaded")
        n = synthetic_count(text)
        if n is None:
            n = DEMO_TRAINING["train_images" if split == "train" else "val_images"]
        return SyntheticShapes(n, size=size, split=split, transform=transform, **kwargs)

    named = named_spec(text)
    if named is not None:
        return _named(
            text,
            *named,
            split,
            size,
            masks_root=masks_root,
            transform=transform,
            download=download,
            kwargs=kwargs,
        )
    root = Path(text)
    if not root.is_dir():
        name = text.partition(":")[0]
        if ":" in text and _NAME.fullmatch(name) and not root.exists():
            valid = [*NAMED_DATASETS, "synthetic"]
            raise DataError(
                f"dataset spec {text!r}: unknown dataset {name!r}; closest valid: "
                f"{closest(name, valid)} (and no folder of that name exists)"
            )
        raise DataNotFoundError(
            f"dataset spec {text!r} is neither 'synthetic[:N]' nor an existing folder (no such "
            f"folder) nor NAME:PATH with NAME one of {sorted(NAMED_DATASETS)}"
        )
    if download:
        raise DataError(
            f"dataset spec {text!r} is a folder: nothing to download (download is for "
            f"{sorted(NAMED_DATASETS)})"
        )
    split_dirs = [d for d in SPLITS if (root / d).is_dir()]
    classes = kwargs.pop("classes", None)
    if split_dirs:
        if split not in split_dirs:
            raise DataNotFoundError(
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
