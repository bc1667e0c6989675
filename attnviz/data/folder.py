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
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .transforms import denormalize as _denormalize
from .transforms import finish_sample
from .transforms import normalize as _normalize

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMG_EXTENSIONS", "ImageFolderWithMasks"]

IMG_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _open_rgb(path: str) -> Image.Image:
    """Open and fully decode an image (truncation shows up here), as RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot read image {path!r}: {e}") from e


def _open_mask(path: str) -> np.ndarray:
    """Read a mask PNG as a bool array: > 0 in any colour channel (alpha ignored)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
                img = img.convert("RGB" if img.mode in ("RGBA", "RGBa") else "L")
            arr = np.asarray(img)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot read mask {path!r}: {e}") from e
    return arr.any(axis=-1) if arr.ndim == 3 else arr > 0


def _as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        hw = (size, size)
    else:
        try:
            hw = tuple(int(s) for s in size)  # type: ignore[union-attr]
        except TypeError:
            raise ValueError(
                f"size must be None, an int or (height, width), got {size!r}"
            ) from None
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"size must be None, an int >= 1 or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


class ImageFolderWithMasks(Dataset):
    """Images in ``root/<class>/...``; yields ``(image, label)`` or ``(image, label, mask)``.

    ``image`` is float32 ``[3, H, W]`` normalised with ``mean``/``std`` (ImageNet's
    by default, for pretrained models; ``ds.denormalize`` undoes it). With
    ``masks_root`` a bool ``[H, W]`` mask comes third. ``size`` (int or
    ``(h, w)``) resizes images (bilinear, antialiased) and masks (nearest); with
    ``size=None`` images keep their own size.

    Errors name the offending path: a missing ``root``, no class folders, a class
    folder without images (unless ``classes`` is given), an unreadable or truncated image, a missing mask, a
    mask whose aspect ratio differs from its image's (a mask of another size but
    the same aspect ratio is fine: it is resized). With ``skip_bad=True`` every
    image (and mask) is decoded once at construction and bad ones are skipped
    with a warning naming each file, so ``len()`` counts only good samples.

    Args:
        root: folder with one subfolder per class.
        masks_root: folder mirroring ``root`` with one ``.png`` mask per image.
        size: output size, or None to keep each image's size.
        transform: ``transform(image)`` or ``transform(image, mask)`` on the
            [0, 1] image (and a ``tv_tensors.Mask``) before normalisation, returning
            the same structure (torchvision v2 transforms work as is).
        skip_bad: skip unreadable images / missing or bad masks instead of raising.
        classes: class folder names to use, in label order (default: all
            subfolders, sorted). Pass the train set's ``classes`` to a val set so
            labels agree; listed classes without a folder or without images then
            simply have no samples (other subfolders are ignored).
        mean, std: normalisation statistics.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        masks_root: str | os.PathLike[str] | None = None,
        size: int | Sequence[int] | None = None,
        transform: Callable[..., Any] | None = None,
        skip_bad: bool = False,
        classes: Sequence[str] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root {str(self.root)!r} does not exist or is not a folder"
            )
        self.masks_root = None if masks_root is None else Path(masks_root)
        if self.masks_root is not None and not self.masks_root.is_dir():
            raise FileNotFoundError(
                f"masks_root {str(self.masks_root)!r} does not exist or is not a folder"
            )
        self.size = _as_size(size)
        self.transform = transform
        self.mean, self.std = tuple(mean), tuple(std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got {mean!r}, {std!r}")
        self._explicit_classes = classes is not None
        self.classes: list[str] = self._find_classes(classes)
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        samples = self._find_samples()
        if skip_bad:
            samples = self._drop_bad(samples)
            if not samples:
                raise RuntimeError(f"no readable images left under {str(self.root)!r}")
        elif self.masks_root is not None:
            missing = [(p, self._mask_path(p)) for p, _ in samples]
            missing = [(p, m) for p, m in missing if not os.path.isfile(m)]
            if missing:
                img, mask = missing[0]
                raise FileNotFoundError(
                    f"mask missing for image {img!r}: expected {mask!r}"
                    + (f" ({len(missing) - 1} more images lack masks)" if len(missing) > 1 else "")
                )
        self.samples: list[tuple[str, int]] = samples
        self.targets: list[int] = [label for _, label in samples]

    # ------------------------------------------------------------------ discovery
    def _find_classes(self, classes: Sequence[str] | None) -> list[str]:
        found = sorted(
            e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith(".")
        )
        if classes is None:
            if not found:
                raise FileNotFoundError(
                    f"no class folders in {str(self.root)!r}: expected one subfolder per class "
                    f"holding images ({', '.join(IMG_EXTENSIONS)})"
                )
            return found
        classes = list(classes)
        if len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes must be distinct folder names, got {classes!r}")
        if not set(classes) & set(found):
            raise FileNotFoundError(
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
            raise FileNotFoundError(
                f"no images found in {str(self.root)!r} (looked for {', '.join(IMG_EXTENSIONS)}, "
                "any case, in one subfolder per class)"
            )
        if empty and not self._explicit_classes:
            raise FileNotFoundError(
                f"class folders without images in {str(self.root)!r}: {empty} "
                f"(looked for {', '.join(IMG_EXTENSIONS)}); remove them or pass classes=[...]"
            )
        return samples

    def _mask_path(self, image_path: str) -> str:
        assert self.masks_root is not None
        rel = Path(image_path).relative_to(self.root)
        return str((self.masks_root / rel).with_suffix(".png"))

    def _drop_bad(self, samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
        good = []
        for path, label in samples:
            try:
                self._load(path)
            except (OSError, ValueError) as e:
                warnings.warn(f"skipping {path!r}: {e}", stacklevel=3)
            else:
                good.append((path, label))
        return good

    # ---------------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: str) -> tuple[Image.Image, np.ndarray | None]:
        img = _open_rgb(path)
        if self.masks_root is None:
            return img, None
        mask_path = self._mask_path(path)
        if not os.path.isfile(mask_path):
            raise FileNotFoundError(f"mask missing for image {path!r}: expected {mask_path!r}")
        mask = _open_mask(mask_path)
        (w, h), (mh, mw) = img.size, mask.shape
        # Same aspect ratio up to the rounding of a resize of either one.
        if abs(mw * h - mh * w) > 0.5 * max(w + h, mw + mh):
            raise ValueError(
                f"mask {mask_path!r} is {mw}x{mh} but image {path!r} is {w}x{h}: "
                "aspect ratios differ"
            )
        return img, mask

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        img, mask = self._load(path)
        if self.size is not None and img.size != self.size[::-1]:
            img = img.resize(self.size[::-1], Image.Resampling.BILINEAR)
        image = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255.0)
        if mask is None:
            if self.transform is not None:
                image = self.transform(image)
            return _normalize(image, self.mean, self.std), label
        hw = image.shape[-2:]
        if mask.shape != tuple(hw):
            m = Image.fromarray(mask.astype(np.uint8) * 255)
            mask = np.asarray(m.resize((hw[1], hw[0]), Image.Resampling.NEAREST)) > 0
        mask_t = torch.from_numpy(np.ascontiguousarray(mask))
        image, mask_t = finish_sample(image, mask_t, self.transform, self.mean, self.std)
        return image, label, mask_t

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Map a normalised image (``[3,H,W]`` or ``[N,3,H,W]``) back to [0, 1]."""
        return _denormalize(image, self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, classes={len(self.classes)}, "
            f"images={len(self)}, masks={self.masks_root is not None}, size={self.size})"
        )
