"""ImageFolderWithMasks: a class-per-subfolder image tree, with optional masks.

Layout (as torchvision's ``ImageFolder``)::

    root/cat/001.jpg            masks_root/cat/001.png
    root/dog/sub/002.png        masks_root/dog/sub/002.png

Classes are the sorted names of ``root``'s subfolders; images are found
recursively below each (extensions ``.png .jpg .jpeg .bmp .webp``, any case).
A mask is the PNG at the same relative path under ``masks_root``, binarised
(``> 0`` in any colour channel; alpha ignored), so CAMs can be scored against it.

>>> ds = ImageFolderWithMasks("data/train", masks_root="data/masks/train", size=64)  # doctest: +SKIP
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
from .photo import IMAGENET_MEAN, IMAGENET_STD, PhotoDataset

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMG_EXTENSIONS", "ImageFolderWithMasks"]

IMG_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask PNG as a bool array: > 0 in any colour channel (alpha ignored)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
                img = img.convert("RGB" if img.mode in ("RGBA", "RGBa") else "L")
            arr = np.asarray(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot read mask {os.fspath(path)!r}: {e}") from e
    return arr.any(axis=-1) if arr.ndim == 3 else arr > 0


class ImageFolderWithMasks(PhotoDataset):
    """Images in ``root/<class>/...``; yields ``(image, label)`` or ``(image, label, mask)``.

    ``image`` is float32 ``[3, H, W]`` normalised with ``mean``/``std`` (ImageNet's
    by default, for pretrained models; ``ds.denormalize`` undoes it). With
    ``masks_root`` a bool ``[H, W]`` mask comes third. ``size`` (int or
    ``(h, w)``) resizes images (bilinear, antialiased) and masks (nearest) by
    ``resize``: ``"stretch"`` (default: the whole image, aspect ratio ignored, as
    attnviz always did) or ``"crop"`` (a pretrained model's eval transform: the
    shorter side to ``size / 0.875``, then the centre ``size``); with ``size=None``
    images keep their own size. Images are turned upright from their EXIF
    orientation first.

    Errors name the offending path: a missing ``root``, no class folders, a class
    folder without images (unless ``classes`` is given), an unreadable or
    truncated image, a missing mask, a mask of another size than its image (one
    of the same aspect ratio is resized with ``resize_masks=True``, which warns
    once). With ``skip_bad=True`` every image (and mask) is decoded once at
    construction and bad ones are skipped with a warning naming each file, so
    ``len()`` counts only good samples.

    Args:
        root: folder with one subfolder per class.
        masks_root: folder mirroring ``root`` with one ``.png`` mask per image.
        size: output size, or None to keep each image's size.
        resize: ``"stretch"`` or ``"crop"`` (see above).
        transform: ``transform(image)`` or ``transform(image, mask)`` on the
            [0, 1] image (and a ``tv_tensors.Mask``) before normalisation, returning
            the same structure (torchvision v2 transforms work as is).
        skip_bad: skip unreadable images / missing or bad masks instead of raising.
        classes: class folder names to use, in label order (default: all
            subfolders, sorted). Pass the train set's ``classes`` to a val set so
            labels agree; listed classes without a folder or without images then
            simply have no samples (other subfolders are ignored).
        mean, std: normalisation statistics.
        resize_masks: resize masks of another size but their image's aspect ratio.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        masks_root: str | os.PathLike[str] | None = None,
        size: int | Sequence[int] | None = None,
        resize: str = "stretch",
        transform: Callable[..., Any] | None = None,
        skip_bad: bool = False,
        classes: Sequence[str] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize_masks: bool = False,
    ) -> None:
        super().__init__(
            size=size,
            resize=resize,
            transform=transform,
            mean=mean,
            std=std,
            resize_masks=resize_masks,
        )
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"dataset root {str(self.root)!r} does not exist or is not a folder"
            )
        self.masks_root = None if masks_root is None else Path(masks_root)
        if self.masks_root is not None and not self.masks_root.is_dir():
            raise DataNotFoundError(
                f"masks_root {str(self.masks_root)!r} does not exist or is not a folder"
            )
        self._explicit_classes = classes is not None
        self.classes: list[str] = self._find_classes(classes)
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = self._find_samples()
        if skip_bad:
            self.samples = [self.samples[i] for i in self._readable()]
            if not self.samples:
                raise DataError(f"no readable images left under {str(self.root)!r}")
        elif self.masks_root is not None:
            missing = [(p, self._mask_path(p)) for p, _ in self.samples]
            missing = [(p, m) for p, m in missing if not os.path.isfile(m)]
            if missing:
                img, mask = missing[0]
                raise DataNotFoundError(
                    f"mask missing for image {img!r}: expected {mask!r}"
                    + (f" ({len(missing) - 1} more images lack masks)" if len(missing) > 1 else "")
                )
        self.targets: list[int] = [label for _, label in self.samples]

    # ------------------------------------------------------------------ discovery
    def _find_classes(self, classes: Sequence[str] | None) -> list[str]:
        found = sorted(
            e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith(".")
        )
        if classes is None:
            if not found:
                raise DataNotFoundError(
                    f"no class folders in {str(self.root)!r}: expected one subfolder per class "
                    f"holding images ({', '.join(IMG_EXTENSIONS)})"
                )
            return found
        classes = list(classes)
        if len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
            raise DataError(f"classes must be distinct folder names, got {classes!r}")
        if not set(classes) & set(found):
            raise DataNotFoundError(
                f"none of the class folders {classes} exist in {str(self.root)!r} (found: {found})"
            )
        return classes

    def _find_samples(self) -> list[tuple[str, int]]:
        samples: list[tuple[str, int]] = []
        empty: list[str] = []
        for label, name in enumerate(self.classes):
            files: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self.root / name, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files += [
                    os.path.join(dirpath, f)
                    for f in sorted(filenames)
                    if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith(".")
                ]
            if not files:
                empty.append(name)
            samples += [(f, label) for f in files]
        if not samples:
            raise DataNotFoundError(
                f"no images found in {str(self.root)!r} (looked for {', '.join(IMG_EXTENSIONS)}, "
                "any case, in one subfolder per class)"
            )
        if empty and not self._explicit_classes:
            raise DataNotFoundError(
                f"class folders without images in {str(self.root)!r}: {empty} "
                f"(looked for {', '.join(IMG_EXTENSIONS)}); remove them or pass classes=[...]"
            )
        return samples

    def _mask_path(self, image_path: str) -> str:
        assert self.masks_root is not None
        rel = Path(image_path).relative_to(self.root)
        return str((self.masks_root / rel).with_suffix(".png"))

    # ---------------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.samples)

    def _image_path(self, index: int) -> str:
        return self.samples[index][0]

    def _target(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        path, label = self.samples[index]
        if self.masks_root is None:
            return label, None, None
        mask_path = self._mask_path(path)
        if not os.path.isfile(mask_path):
            raise DataNotFoundError(f"mask missing for image {path!r}: expected {mask_path!r}")
        return label, _read_mask(mask_path), mask_path

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, classes={len(self.classes)}, "
            f"images={len(self)}, masks={self.masks_root is not None}, size={self.size}, "
            f"resize={self.resize!r})"
        )
