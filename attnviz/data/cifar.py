"""CIFAR-10: 60,000 32x32 photos of 10 classes, read without running code from the files.

Two layouts of the same data (``root`` is the folder holding one, or the batches
folder itself)::

    root/cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin,
                              batches.meta.txt (class names, one a line)
        records of 1 label byte and 3,072 pixel bytes (32x32 red, then green, then blue)
    root/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
        pickled dicts: "data" uint8 [N, 3072] in the same order, "labels", "label_names"

torchvision's ``CIFAR10`` writes the python version. The binary one is read
directly, and preferred when both are there; the pickles only through
:func:`~attnviz.data.safe_pickle.load_data_pickle`, which builds numpy arrays
and plain values and calls nothing else (``pickle.load`` on a crafted batch file
would run whatever it names).

Splits: attnviz ``train`` is the five data batches (50,000 photos), ``val`` and
``test`` are ``test_batch`` (10,000). No masks. ``resize="stretch"`` by default:
a 32x32 frame is already tight around its object, and the centre crop of a
model's eval transform would cut an eighth of each side.
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
from .safe_pickle import load_data_pickle

__all__ = ["CIFAR_SPLITS", "Cifar10"]

#: attnviz split -> CIFAR-10's batch files.
CIFAR_SPLITS: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{k}" for k in range(1, 6)),
    "val": ("test_batch",),
    "test": ("test_batch",),
}
BIN_FOLDER, PY_FOLDER = "cifar-10-batches-bin", "cifar-10-batches-py"
RECORD = 1 + 3 * 32 * 32


def _layout(root: Path) -> tuple[str, Path] | None:
    """``("bin" | "py", folder)`` of the CIFAR-10 batches at ``root``, binary first."""
    for kind, name, meta in (
        ("bin", BIN_FOLDER, "batches.meta.txt"),
        ("py", PY_FOLDER, "batches.meta"),
    ):
        for folder in (root / name, root):
            if (folder / meta).is_file():
                return kind, folder
    return None


def _read_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 batch {str(path)!r}: {e}") from e
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(
            f"CIFAR-10 batch {str(path)!r} has {raw.size} bytes: not a whole number of "
            f"{RECORD}-byte records (1 label byte, 32x32x3 pixels)"
        )
    records = raw.reshape(-1, RECORD)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int64)


def _field(entry: dict, key: str) -> Any:
    return entry.get(key, entry.get(key.encode()))


def _read_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = load_data_pickle(path)
    data = _field(entry, "data") if isinstance(entry, dict) else None
    labels = _field(entry, "labels") if isinstance(entry, dict) else None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != RECORD - 1
        or labels is None
        or len(labels) != len(data)
    ):
        raise DataError(
            f"CIFAR-10 batch {str(path)!r} is not a dict with 'data' (uint8 [N, 3072]) and "
            "N 'labels'"
        )
    try:
        targets = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"CIFAR-10 batch {str(path)!r}: labels are not integers ({e})") from e
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), targets


def _class_names(kind: str, folder: Path) -> list[str]:
    if kind == "bin":
        path = folder / "batches.meta.txt"
        try:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read CIFAR-10 class names {str(path)!r}: {e}") from e
    else:
        path = folder / "batches.meta"
        meta = load_data_pickle(path)
        names = _field(meta, "label_names") if isinstance(meta, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
            raise DataError(f"CIFAR-10 meta {str(path)!r} has no 'label_names' list")
        names = [n.decode() if isinstance(n, bytes) else n for n in names]
    if not names:
        raise DataError(f"CIFAR-10 class names {str(path)!r} lists no classes")
    return names


class Cifar10(PhotoDataset):
    """CIFAR-10 photos in memory: yields ``(image, label)``.

    Args:
        root: the folder holding ``cifar-10-batches-bin/`` or ``cifar-10-batches-py/``
            (torchvision's ``root``), or one of those folders.
        split: ``"train"`` (data batches 1-5), ``"val"`` or ``"test"`` (both: test batch).
        size: output size (default None: 32x32).
        resize: ``"stretch"`` (default) or ``"crop"``.
        transform, mean, std: as :class:`~attnviz.data.PhotoDataset`.
        skip_bad: accepted for the same signature as the other datasets; fixed-size
            records have nothing to skip (a short or torn file is an error).
        download: fetch the python version with torchvision (170 MB) when no batches are found.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        size: int | Sequence[int] | None = None,
        resize: str = "stretch",
        transform: Callable[..., Any] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        skip_bad: bool = False,
        download: bool = False,
    ) -> None:
        super().__init__(size=size, resize=resize, transform=transform, mean=mean, std=std)
        if split not in CIFAR_SPLITS:
            raise DataError(f"cifar10 split must be one of {list(CIFAR_SPLITS)}, got {split!r}")
        self.root, self.split = Path(root), split
        if download:
            fetch(self.root, "CIFAR-10", lambda: _layout(self.root) is not None, self._download)
        found = _layout(self.root)
        if found is None:
            raise DataNotFoundError(
                f"cifar10: no CIFAR-10 batches in {str(self.root)!r}: looked for "
                f"{str(self.root / BIN_FOLDER / 'batches.meta.txt')!r} and "
                f"{str(self.root / PY_FOLDER / 'batches.meta')!r}; pass download=True "
                "(--download) to fetch it (torchvision CIFAR10)"
            )
        self.format, self.folder = found
        self.classes: list[str] = _class_names(self.format, self.folder)
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        images, labels, self._files = [], [], []
        for name in CIFAR_SPLITS[split]:
            path = self.folder / (f"{name}.bin" if self.format == "bin" else name)
            if not path.is_file():
                raise DataNotFoundError(
                    f"cifar10: batch {str(path)!r} of the {split} split is missing"
                )
            x, y = _read_bin(path) if self.format == "bin" else _read_py(path)
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise DataError(
                    f"CIFAR-10 batch {str(path)!r} has label {int(y.max())} for "
                    f"{len(self.classes)} classes"
                )
            images.append(x)
            labels.append(y)
            self._files.append((str(path), len(x)))
        self.data: np.ndarray = np.concatenate(images)
        self.targets: list[int] = np.concatenate(labels).tolist()

    def _download(self) -> None:
        from torchvision.datasets import CIFAR10, utils

        # torchvision's own archive and checksum; its CIFAR10 class would then unpickle
        # the batches with pickle.load, so the archive is fetched without it.
        utils.download_and_extract_archive(
            CIFAR10.url, str(self.root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
        )

    def __len__(self) -> int:
        return len(self.data)

    def _image_path(self, index: int) -> str:
        index = range(len(self))[index]
        for path, n in self._files:
            if index < n:
                return f"{path} record {index}"
            index -= n
        raise IndexError(index)

    def _image(self, index: int) -> Image.Image:
        return Image.fromarray(self.data[index])

    def _target(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        return self.targets[index], None, None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"format={self.format!r}, images={len(self)}, size={self.size})"
        )
