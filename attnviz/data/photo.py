"""Photos and their masks as model inputs: upright, one geometry for both, normalised.

:class:`PhotoDataset` is the base of every dataset read from photos
(:class:`~attnviz.data.ImageFolderWithMasks`, Oxford-IIIT Pet, VOC, Imagenette,
CIFAR-10). A subclass says how many samples it has, where sample ``i``'s image is
and what its label and mask are; the base does the rest the same way for all of
them, so that a mask always lands on the pixels of its image:

- images are turned upright from their EXIF orientation (masks have none);
- a mask must have its image's size. One of another size is refused, naming the
  mask, the image and both sizes, unless ``resize_masks=True``: then a mask with
  the image's aspect ratio is resized (nearest) and a warning says so once per
  dataset. A mask of another aspect ratio is always an error. (Silently resizing
  moved a 50x50 mask on a 96x96 image enough to change the pointing game.)
- ``resize="crop"`` is what a pretrained model's own eval transform does
  (torchvision's ``weights.transforms()``, timm's ``crop_pct``): scale the image
  so that it covers ``size / 0.875`` (for a square ``size``: the shorter side to
  ``int(size / 0.875)``), then take the centre ``size``. ``"stretch"`` scales to
  ``size`` whatever the aspect ratio. Images are resampled bilinearly
  (antialiased), masks with nearest neighbour, by the same torchvision calls, so
  both get the very same geometry.
"""

from __future__ import annotations

import abc
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..errors import DataError
from .transforms import denormalize as _denormalize
from .transforms import finish_sample
from .transforms import normalize as _normalize

__all__ = [
    "CROP_FRACTION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE_MODES",
    "PhotoDataset",
    "fit_photo",
    "open_photo",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESIZE_MODES: tuple[str, ...] = ("crop", "stretch")
#: ``resize="crop"`` keeps the centre ``size`` of an image scaled to ``size / CROP_FRACTION``.
CROP_FRACTION = 0.875

_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def open_photo(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode an image as RGB, upright from its EXIF orientation.

    Errors (a missing, truncated or unreadable file) are ``OSError`` naming the file.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except _READ_ERRORS as e:
        raise OSError(f"cannot read image {os.fspath(path)!r}: {e}") from e


def _as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``None``, an int or ``(height, width)`` as ``(height, width)`` (or None)."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        hw = (size, size)
    else:
        try:
            hw = tuple(int(s) for s in size)  # type: ignore[union-attr]
        except TypeError:
            raise DataError(f"size must be None, an int or (height, width), got {size!r}") from None
    if len(hw) != 2 or min(hw) < 1:
        raise DataError(f"size must be None, an int >= 1 or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


def _resize(img: Image.Image, hw: Sequence[int], nearest: bool) -> Image.Image:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BILINEAR
    return F.resize(img, list(hw), interpolation=mode, antialias=True)


def fit_photo(
    img: Image.Image,
    mask: np.ndarray | None,
    size: tuple[int, int] | None,
    resize: str,
    *,
    crop_fraction: float = CROP_FRACTION,
) -> tuple[Image.Image, np.ndarray | None]:
    """``img`` (and ``mask``, same geometry) at ``size`` by ``resize`` ("crop" or "stretch").

    ``crop_fraction``: the part of the scaled image the centre crop keeps (0.875 for
    torchvision's weights; timm's ``crop_pct``). Also what :func:`attnviz.inputs.load_image`
    does to a single photo, so a photo and a dataset image get the same pixels.
    """
    if size is None:
        return img, mask
    from torchvision.transforms.v2 import functional as F

    m = None if mask is None else Image.fromarray(mask.astype(np.uint8))
    th, tw = size
    if resize == "stretch":
        if img.size != (tw, th):
            img = _resize(img, size, nearest=False)
        if m is not None and m.size != (tw, th):
            m = _resize(m, size, nearest=True)
    else:
        w, h = img.size
        if th == tw:  # torchvision's Resize(int(size / 0.875)) of the shorter side
            img = _resize(img, [int(th / crop_fraction)], nearest=False)
        else:  # cover (th, tw) / 0.875 keeping the aspect ratio
            scale = max(th / h, tw / w) / crop_fraction
            img = _resize(img, [max(th, int(h * scale)), max(tw, int(w * scale))], nearest=False)
        rw, rh = img.size
        img = F.center_crop(img, [th, tw])
        if m is not None:
            m = F.center_crop(_resize(m, [rh, rw], nearest=True), [th, tw])
    return img, None if m is None else np.asarray(m) > 0


class PhotoDataset(Dataset, abc.ABC):
    """Base of the photo datasets: yields ``(image, label)`` or ``(image, label, mask)``.

    ``image`` is float32 ``[3, H, W]`` normalised with ``mean`` / ``std``
    (``ds.denormalize`` undoes it); ``mask`` a bool ``[H, W]`` on the same pixels.
    Subclasses implement ``__len__``, :meth:`_image_path` and :meth:`_target`
    (and :meth:`_image` when images are not files); see the module docs for the
    orientation, mask-size and resize rules every subclass gets.

    Args:
        size: output size (int or ``(height, width)``), or None to keep each image's.
        resize: ``"crop"`` (a model's eval transform) or ``"stretch"``.
        transform: ``transform(image)`` or ``transform(image, mask)`` on the [0, 1]
            image (and a ``tv_tensors.Mask``) after resizing, before
            normalisation; torchvision v2 transforms work as is.
        mean, std: normalisation statistics (ImageNet's by default).
        resize_masks: resize a mask of another size but the same aspect ratio as
            its image (warning once) instead of refusing it.
    """

    def __init__(
        self,
        *,
        size: int | Sequence[int] | None = None,
        resize: str = "stretch",
        transform: Callable[..., Any] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize_masks: bool = False,
    ) -> None:
        if resize not in RESIZE_MODES:
            raise DataError(f"resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
        self.size = _as_size(size)
        self.resize = resize
        self.transform = transform
        self.mean, self.std = tuple(mean), tuple(std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise DataError(f"mean and std need 3 values (std > 0), got {mean!r}, {std!r}")
        self.resize_masks = bool(resize_masks)
        self._warned_resized_mask = False

    # ------------------------------------------------------------ subclass protocol
    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _image_path(self, index: int) -> str:
        """Where sample ``index``'s image is (the file error messages name)."""

    @abc.abstractmethod
    def _target(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        """``(label, mask, mask_path)``: the mask at its file's resolution, or ``(label, None, None)``."""

    def _image(self, index: int) -> Image.Image:
        """Sample ``index``'s image, RGB and upright."""
        return open_photo(self._image_path(index))

    # ------------------------------------------------------------------- loading
    def _load(self, index: int) -> tuple[Image.Image, int, np.ndarray | None]:
        img = self._image(index)
        label, mask, mask_path = self._target(index)
        if mask is not None:
            mask = self._fit_mask(mask, str(mask_path), self._image_path(index), img.size)
        return img, label, mask

    def _fit_mask(
        self, mask: np.ndarray, mask_path: str, image_path: str, wh: tuple[int, int]
    ) -> np.ndarray:
        (w, h), (mh, mw) = wh, mask.shape
        if (mw, mh) == (w, h):
            return mask
        what = f"mask {mask_path!r} is {mw}x{mh} but image {image_path!r} is {w}x{h}"
        # Same aspect ratio up to the rounding of a resize of either one.
        if abs(mw * h - mh * w) > 0.5 * max(w + h, mw + mh):
            raise DataError(f"{what}: aspect ratios differ")
        if not self.resize_masks:
            raise DataError(
                f"{what}; pass resize_masks=True (--resize-masks) to resize masks of the "
                "same aspect ratio to their image's size"
            )
        if not self._warned_resized_mask:
            self._warned_resized_mask = True
            warnings.warn(
                f"resizing masks to their image's size (nearest neighbour), first {what}; "
                "localization scores depend on this resampling",
                stacklevel=4,
            )
        m = Image.fromarray(mask.astype(np.uint8))
        return np.asarray(_resize(m, [h, w], nearest=True)) > 0

    def _readable(self) -> list[int]:
        """Indices whose image and mask load; the others are skipped with a warning each."""
        good = []
        for i in range(len(self)):
            try:
                self._load(i)
            except (OSError, ValueError) as e:
                warnings.warn(f"skipping {self._image_path(i)!r}: {e}", stacklevel=4)
            else:
                good.append(i)
        return good

    def __getitem__(self, index: int):
        img, label, mask = self._load(index)
        img, mask = fit_photo(img, mask, self.size, self.resize)
        image = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div_(255.0)
        if mask is None:
            if self.transform is not None:
                image = self.transform(image)
            return _normalize(image, self.mean, self.std), label
        mask_t = torch.from_numpy(np.ascontiguousarray(mask))
        image, mask_t = finish_sample(image, mask_t, self.transform, self.mean, self.std)
        return image, label, mask_t

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Map a normalised image (``[3,H,W]`` or ``[N,3,H,W]``) back to [0, 1]."""
        return _denormalize(image, self.mean, self.std)
