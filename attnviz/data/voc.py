"""PASCAL VOC segmentation as a classification set: one label per photo, its pixels as the mask.

Layout, as torchvision's ``VOCSegmentation`` writes it (``root`` is the folder
holding ``VOCdevkit/``, or the ``VOCdevkit`` or ``VOC2012`` folder itself)::

    root/VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg
    root/VOCdevkit/VOC2012/SegmentationClass/2007_000032.png   palette PNG of class indices:
                                                               0 background, 1-20 classes, 255 void
    root/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt, val.txt

Splits: attnviz ``train`` / ``val`` are VOC's ``train`` (1,464 photos in 2012) /
``val`` (1,449); VOC has no public test segmentation, so there is no ``test``.

Label: the class covering the most pixels of the photo (ties: the lower class
index), over the whole photo before any resize or crop; labels 0-19 are VOC's
classes 1-20 (:data:`VOC_CLASSES`). Mask: that class's pixels. Background (0)
and void (255, the band VOC draws along every outline) are never object, and
the other classes' objects in the photo are not part of the mask either.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError, DataNotFoundError
from .download import fetch
from .photo import IMAGENET_MEAN, IMAGENET_STD, PhotoDataset

__all__ = ["VOC_CLASSES", "VOC_SPLITS", "VOCObjects"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "potted plant",
    "sheep",
    "sofa",
    "train",
    "tv monitor",
)
#: attnviz split -> VOC's ``ImageSets/Segmentation`` list.
VOC_SPLITS: dict[str, str] = {"train": "train", "val": "val"}
VOID = 255


def _base_dir(year: str) -> str:
    """Where torchvision puts a year's data below its root (``VOCdevkit/VOC2012``)."""
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    if year not in DATASET_YEAR_DICT or year == "2007-test":
        years = sorted(y for y in DATASET_YEAR_DICT if y.isdigit())
        raise DataError(f"voc-seg year must be one of {years}, got {year!r}")
    return DATASET_YEAR_DICT[year]["base_dir"]


def _find(root: Path, year: str) -> Path:
    """The ``VOC<year>`` folder: torchvision's place below ``root``, or ``root`` / ``root/VOC<year>``."""
    for candidate in (root / _base_dir(year), root / f"VOC{year}", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return root / _base_dir(year)


def _read_class_map(path: str) -> np.ndarray:
    """A VOC ``SegmentationClass`` PNG as its ``[H, W]`` uint8 class indices."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot read segmentation {path!r}: {e}") from e
    if mode not in ("P", "L"):
        raise DataError(
            f"segmentation {path!r} is a {mode} image: expected a palette PNG of class "
            "indices (VOC's SegmentationClass), not a colour rendering"
        )
    bad = (arr > len(VOC_CLASSES)) & (arr != VOID)
    if bad.any():
        raise DataError(
            f"segmentation {path!r} has class index {int(arr[bad][0])}: VOC's are 0 "
            f"(background), 1-{len(VOC_CLASSES)} and {VOID} (void)"
        )
    return arr


def _label_and_mask(classes: np.ndarray, path: str) -> tuple[int, np.ndarray]:
    """``(label, mask)`` of a class map: the class with the most pixels, and its pixels."""
    counts = np.bincount(classes.ravel(), minlength=VOID + 1)[1 : len(VOC_CLASSES) + 1]
    if not counts.any():
        raise DataError(f"segmentation {path!r} has no object pixels (only background and void)")
    label = int(counts.argmax())  # the first maximum: ties go to the lower index
    return label, classes == label + 1


class VOCObjects(PhotoDataset):
    """VOC segmentation photos, labelled by their largest object: yields ``(image, label, mask)``.

    Args:
        root: the folder holding ``VOCdevkit/`` (torchvision's ``root``), or the
            ``VOCdevkit`` or ``VOC<year>`` folder.
        split: ``"train"`` or ``"val"``.
        year: ``"2012"`` (default) or an earlier year torchvision knows.
        size, resize, transform, mean, std, resize_masks: as
            :class:`~attnviz.data.PhotoDataset` (``resize="crop"`` by default).
        skip_bad: skip unreadable photos or segmentations with a warning.
        download: fetch the year's trainval archive with torchvision (2 GB for 2012)
            when it is missing.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        year: str = "2012",
        size: int | Sequence[int] | None = None,
        resize: str = "crop",
        transform: Callable[..., Any] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize_masks: bool = False,
        skip_bad: bool = False,
        download: bool = False,
    ) -> None:
        super().__init__(
            size=size,
            resize=resize,
            transform=transform,
            mean=mean,
            std=std,
            resize_masks=resize_masks,
        )
        if split not in VOC_SPLITS:
            raise DataError(
                f"voc-seg split must be one of {list(VOC_SPLITS)} (VOC has no public test "
                f"segmentation), got {split!r}"
            )
        self.root, self.split, self.year = Path(root), split, str(year)
        _base_dir(self.year)
        if download:
            fetch(self.root, f"PASCAL VOC {self.year}", self._present, self._download)
        self.base = _find(self.root, self.year)
        list_file = self.base / "ImageSets" / "Segmentation" / f"{VOC_SPLITS[split]}.txt"
        if not self._present():
            raise DataNotFoundError(
                f"voc-seg: no VOC {self.year} segmentation data in {str(self.root)!r}: looked for "
                f"{str(self.base / 'JPEGImages')!r} and {str(list_file)!r}; pass download=True "
                "(--download) to fetch it (torchvision VOCSegmentation)"
            )
        try:
            ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read VOC split file {str(list_file)!r}: {e}") from e
        if not ids:
            raise DataNotFoundError(f"voc-seg: {str(list_file)!r} lists no images")
        self.classes: list[str] = list(VOC_CLASSES)
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        self.images: list[str] = [str(self.base / "JPEGImages" / f"{i}.jpg") for i in ids]
        self.masks: list[str] = [str(self.base / "SegmentationClass" / f"{i}.png") for i in ids]
        self._labels: dict[int, int] = {}
        if skip_bad:
            keep = self._readable()
            self.images = [self.images[i] for i in keep]
            self.masks = [self.masks[i] for i in keep]
            if not keep:
                raise DataError(f"voc-seg: no readable photos left in {str(self.base)!r}")
        else:
            for kind, paths in (("photo", self.images), ("segmentation", self.masks)):
                missing = [p for p in paths if not os.path.isfile(p)]
                if missing:
                    more = f" ({len(missing) - 1} more are missing)" if len(missing) > 1 else ""
                    raise DataNotFoundError(
                        f"voc-seg: {kind} {missing[0]!r} listed in {str(list_file)!r} is "
                        f"missing{more}"
                    )

    def _present(self) -> bool:
        base = _find(self.root, self.year)
        lists = base / "ImageSets" / "Segmentation" / f"{VOC_SPLITS[self.split]}.txt"
        return (base / "JPEGImages").is_dir() and lists.is_file()

    def _download(self) -> None:
        from torchvision import datasets

        datasets.VOCSegmentation(self.root, year=self.year, image_set="trainval", download=True)

    @property
    def targets(self) -> list[int]:
        """Every photo's label (reads each segmentation once)."""
        return [self._label(i) for i in range(len(self))]

    def _label(self, index: int) -> int:
        index = range(len(self))[index]
        if index not in self._labels:
            self._labels[index] = self._target(index)[0]
        return self._labels[index]

    def __len__(self) -> int:
        return len(self.images)

    def _image_path(self, index: int) -> str:
        return self.images[index]

    def _target(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        path = self.masks[index]
        label, mask = _label_and_mask(_read_class_map(path), path)
        return label, mask, path

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, year={self.year!r}, "
            f"split={self.split!r}, images={len(self)}, size={self.size}, resize={self.resize!r})"
        )
