"""Imagenette: 10 easy ImageNet classes, an ImageFolder of WordNet-id folders.

Layout, as torchvision's ``Imagenette`` writes it (``root`` is the folder
holding one of the versions, or a version's folder itself)::

    root/imagenette2-320/train/n01440764/ILSVRC2012_val_00000293.JPEG
    root/imagenette2-320/val/n01440764/...
    (imagenette2/ full size, imagenette2-320/ shorter side 320 px, imagenette2-160/ 160 px)

The first version found of ``imagenette2-320``, ``imagenette2``,
``imagenette2-160`` is read unless ``version`` names one; ``download=True``
fetches ``version`` (default ``"320px"``: the full-size archive is 1.5 GB and
every model here sees at most a few hundred pixels).

Splits: attnviz ``train`` / ``val`` are Imagenette's ``train`` / ``val``; there is
no ``test``. Labels follow the sorted WordNet ids of ``train/`` (so both splits
agree); ``classes`` are their readable names (``"tench"``, ``"English
springer"``, ...), ``wnids`` the ids. No masks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError, DataNotFoundError
from .download import fetch
from .folder import ImageFolderWithMasks
from .photo import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENETTE_CLASSES", "IMAGENETTE_VERSIONS", "Imagenette"]

#: WordNet id -> readable name, in Imagenette's label order.
IMAGENETTE_CLASSES: dict[str, str] = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
#: torchvision's ``size`` names of the versions -> their folders, in the order they are looked for.
IMAGENETTE_VERSIONS: dict[str, str] = {
    "320px": "imagenette2-320",
    "full": "imagenette2",
    "160px": "imagenette2-160",
}
IMAGENETTE_SPLITS: tuple[str, ...] = ("train", "val")


def _find(root: Path, version: str | None) -> Path | None:
    names = [IMAGENETTE_VERSIONS[version]] if version else list(IMAGENETTE_VERSIONS.values())
    for name in names:
        if (root / name).is_dir():
            return root / name
    if root.name in names and any((root / s).is_dir() for s in IMAGENETTE_SPLITS):
        return root
    if version is None and any((root / s).is_dir() for s in IMAGENETTE_SPLITS):
        return root  # a version's folder under another name
    return None


def _wnids(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


class Imagenette(ImageFolderWithMasks):
    """Imagenette photos: yields ``(image, label)``; ``classes`` are readable names.

    Args:
        root: the folder holding ``imagenette2[-320|-160]/`` (torchvision's ``root``),
            or one of those folders.
        split: ``"train"`` or ``"val"``.
        version: ``"320px"``, ``"full"`` or ``"160px"`` (default: the first found;
            ``"320px"`` to download).
        size, resize, transform, skip_bad, mean, std: as
            :class:`~attnviz.data.ImageFolderWithMasks` (``resize="crop"`` by default).
        download: fetch ``version`` with torchvision when it is missing.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        version: str | None = None,
        size: int | Sequence[int] | None = None,
        resize: str = "crop",
        transform: Callable[..., Any] | None = None,
        skip_bad: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        download: bool = False,
    ) -> None:
        if split not in IMAGENETTE_SPLITS:
            raise DataError(
                f"imagenette split must be one of {list(IMAGENETTE_SPLITS)}, got {split!r}"
            )
        if version is not None and version not in IMAGENETTE_VERSIONS:
            raise DataError(
                f"imagenette version must be one of {list(IMAGENETTE_VERSIONS)}, got {version!r}"
            )
        top = Path(root)
        if download:
            fetch(
                top,
                "Imagenette",
                lambda: _find(top, version) is not None,
                self._download_into(top, version),
            )
        base = _find(top, version)
        if base is None or not (base / split).is_dir():
            versions = [version] if version else list(IMAGENETTE_VERSIONS)
            looked = [str(top / IMAGENETTE_VERSIONS[v] / split) for v in versions]
            raise DataNotFoundError(
                f"imagenette: no Imagenette {split} folder in {str(top)!r}: looked for "
                f"{', '.join(repr(p) for p in looked)}; pass download=True (--download) to fetch "
                f"it (torchvision Imagenette, {version or '320px'})"
            )
        wnids = _wnids(base / "train") if (base / "train").is_dir() else _wnids(base / split)
        super().__init__(
            base / split,
            size=size,
            resize=resize,
            transform=transform,
            skip_bad=skip_bad,
            classes=wnids,
            mean=mean,
            std=std,
        )
        self.version_root, self.split = base, split
        self.wnids: list[str] = list(self.classes)
        self.classes = [IMAGENETTE_CLASSES.get(w, w) for w in self.wnids]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    @staticmethod
    def _download_into(root: Path, version: str | None) -> Callable[[], object]:
        def download() -> object:
            from torchvision import datasets

            return datasets.Imagenette(root, split="train", size=version or "320px", download=True)

        return download
