"""Oxford-IIIT Pet: 37 cat and dog breeds, each photo with a trimap of its pet.

The real-photo localisation benchmark: CAMs are scored against the trimaps.
Layout, as torchvision's ``OxfordIIITPet`` writes it (``root`` is the folder
holding ``oxford-iiit-pet/``, or that folder itself)::

    root/oxford-iiit-pet/images/Abyssinian_1.jpg
    root/oxford-iiit-pet/annotations/trimaps/Abyssinian_1.png   1 pet, 2 background, 3 border
    root/oxford-iiit-pet/annotations/trainval.txt, test.txt     "Abyssinian_1 1 1 1" per line:
                                                                image, class 1-37, species, breed

Splits: attnviz ``train`` is the dataset's ``trainval`` (3,680 images); ``val``
and ``test`` are its ``test`` (3,669). Labels are the class ids minus one;
class names are the breeds as torchvision spells them (``"American Bulldog"``),
read from both split files so that train and val agree.

Mask: the trimap's pet pixels. The border band (3, "not classified": a strip
along the pet's outline) counts as pet by default (``border="object"``): it is
drawn on the outline, and a CAM peak on a pet's edge is a hit for the pointing
game. ``border="background"`` keeps only the sure pet pixels.

>>> ds = OxfordPets("data", "val", size=224)  # doctest: +SKIP
>>> image, label, mask = ds[0]  # doctest: +SKIP
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

__all__ = ["PET_SPLITS", "TRIMAP_BORDERS", "OxfordPets"]

#: attnviz split -> the dataset's split file.
PET_SPLITS: dict[str, str] = {"train": "trainval", "val": "test", "test": "test"}
TRIMAP_BORDERS: tuple[str, ...] = ("object", "background")
PET, BACKGROUND, BORDER = 1, 2, 3


def _base(root: Path) -> Path:
    """The ``oxford-iiit-pet`` folder: below ``root`` (torchvision), or ``root`` itself."""
    nested = root / "oxford-iiit-pet"
    if not nested.is_dir() and (root / "images").is_dir() and (root / "annotations").is_dir():
        return root
    return nested


def _read_list(path: Path) -> list[tuple[str, int]]:
    """``(image id, class id >= 1)`` per line of a split file; '#' lines are comments."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read Oxford-IIIT Pet split file {str(path)!r}: {e}") from e
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) < 1:
            raise DataError(
                f"{str(path)!r} line {n}: expected 'IMAGE_ID CLASS_ID SPECIES BREED_ID' with "
                f"CLASS_ID >= 1, got {line.strip()!r}"
            )
        rows.append((fields[0], int(fields[1])))
    return rows


def _breed(image_id: str) -> str:
    """``"american_pit_bull_terrier_12"`` -> ``"American Pit Bull Terrier"``."""
    return " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))


def _trimap_mask(path: str, border: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot read trimap {path!r}: {e}") from e
    if arr.ndim != 2 or arr.size == 0 or arr.min() < PET or arr.max() > BORDER:
        found = np.unique(arr).tolist()[:8] if arr.ndim == 2 else f"{arr.ndim}-d pixels"
        raise DataError(
            f"trimap {path!r} is not an Oxford-IIIT Pet trimap: expected one channel of "
            f"1 (pet), 2 (background), 3 (border), found {found}"
        )
    if border == "object":
        return arr != BACKGROUND
    return arr == PET


class OxfordPets(PhotoDataset):
    """Oxford-IIIT Pet photos with their trimaps: yields ``(image, label, mask)``.

    Args:
        root: the folder holding ``oxford-iiit-pet/`` (torchvision's ``root``) or that folder.
        split: ``"train"`` (trainval), ``"val"`` or ``"test"`` (both: test).
        size: output size (int or ``(h, w)``), or None to keep each photo's.
        resize: ``"crop"`` (default: a pretrained model's eval transform) or ``"stretch"``.
        border: whether the trimap's border band is ``"object"`` (default) or ``"background"``.
        transform, mean, std, resize_masks: as :class:`~attnviz.data.PhotoDataset`.
        skip_bad: skip unreadable photos or trimaps with a warning instead of raising.
        download: fetch the dataset with torchvision (about 800 MB) when it is missing.

    Errors: missing data (naming where it looked, and ``download=True``), a
    malformed split file (file and line), a listed photo or trimap that is missing
    or unreadable (naming the file).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        size: int | Sequence[int] | None = None,
        resize: str = "crop",
        border: str = "object",
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
        if split not in PET_SPLITS:
            raise DataError(f"oxford-pets split must be one of {list(PET_SPLITS)}, got {split!r}")
        if border not in TRIMAP_BORDERS:
            raise DataError(f"border must be one of {list(TRIMAP_BORDERS)}, got {border!r}")
        self.root, self.split, self.border = Path(root), split, border
        if download:
            fetch(self.root, "Oxford-IIIT Pet", self._present, self._download)
        self.base = _base(self.root)
        images, anns = self.base / "images", self.base / "annotations"
        list_file = anns / f"{PET_SPLITS[split]}.txt"
        if not self._present():
            raise DataNotFoundError(
                f"oxford-pets: no Oxford-IIIT Pet data in {str(self.root)!r}: looked for "
                f"{str(images)!r} and {str(list_file)!r}; pass download=True (--download) to "
                "fetch it (torchvision OxfordIIITPet, about 800 MB)"
            )
        rows = _read_list(list_file)
        if not rows:
            raise DataNotFoundError(f"oxford-pets: {str(list_file)!r} lists no images")
        self.classes: list[str] = self._class_names(anns, rows)
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = [
            (str(images / f"{image_id}.jpg"), k - 1) for image_id, k in rows
        ]
        self.trimaps: list[str] = [
            str(anns / "trimaps" / f"{image_id}.png") for image_id, _ in rows
        ]
        if skip_bad:
            keep = self._readable()
            self.samples = [self.samples[i] for i in keep]
            self.trimaps = [self.trimaps[i] for i in keep]
            if not keep:
                raise DataError(f"oxford-pets: no readable photos left in {str(images)!r}")
        else:
            self._check_files()
        self.targets: list[int] = [label for _, label in self.samples]

    # -------------------------------------------------------------------- finding
    def _present(self) -> bool:
        base = _base(self.root)
        return (base / "images").is_dir() and (
            base / "annotations" / f"{PET_SPLITS[self.split]}.txt"
        ).is_file()

    def _download(self) -> None:
        from torchvision import datasets

        datasets.OxfordIIITPet(self.root, split="trainval", download=True)

    @staticmethod
    def _class_names(anns: Path, rows: list[tuple[str, int]]) -> list[str]:
        every = list(rows)
        for name in set(PET_SPLITS.values()):
            other = anns / f"{name}.txt"
            if other.is_file():
                every += _read_list(other)
        names: dict[int, str] = {}
        for image_id, k in every:
            names.setdefault(k, _breed(image_id))
        return [names.get(k, f"class {k}") for k in range(1, max(names) + 1)]

    def _check_files(self) -> None:
        for kind, paths in (("photo", [p for p, _ in self.samples]), ("trimap", self.trimaps)):
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                more = (
                    f" ({len(missing) - 1} more listed {kind}s are missing)"
                    if len(missing) > 1
                    else ""
                )
                raise DataNotFoundError(
                    f"oxford-pets: {kind} {missing[0]!r} listed in the {PET_SPLITS[self.split]} "
                    f"split is missing{more}"
                )

    # ---------------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.samples)

    def _image_path(self, index: int) -> str:
        return self.samples[index][0]

    def _target(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        path = self.trimaps[index]
        return self.samples[index][1], _trimap_mask(path, self.border), path

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"images={len(self)}, classes={len(self.classes)}, size={self.size}, "
            f"resize={self.resize!r}, border={self.border!r})"
        )
