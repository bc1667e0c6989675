"""SyntheticShapes: a procedural localisation dataset that needs no download.

Each image holds exactly one object whose *shape* is the class (disk, square,
triangle, ...), at a random position, scale, orientation and mirror, in a random
colour, on procedural clutter (value noise, stripes, checkers, blotches) with
distractor fragments (segments, arcs, blobs, corners) that carry no class
information. The ground-truth object mask comes with every image, so CAM
localisation can be scored offline.

Samples are rendered lazily and deterministically from ``(seed, split, index)``
with numpy only: the same index gives the same sample in every call and in every
DataLoader worker, and different splits use different random streams.

>>> ds = SyntheticShapes(8, size=64, num_classes=10, seed=0)
>>> image, label, mask = ds[3]
>>> tuple(image.shape), label, tuple(mask.shape), ds.class_names[label]
((3, 64, 64), 3, (64, 64), 'cross')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import AttnvizError
from .transforms import denormalize as _denormalize
from .transforms import finish_sample

__all__ = ["DEMO_TRAINING", "MEAN", "SHAPE_NAMES", "SPLITS", "STD", "SyntheticShapes"]

#: Per-channel mean/std of the images (measured on 4000 train images at 64x64 with
#: the default settings; hues are uniform, so the channels agree). Images come out
#: roughly zero-mean, unit-variance.
MEAN: tuple[float, float, float] = (0.414, 0.414, 0.414)
STD: tuple[float, float, float] = (0.233, 0.233, 0.233)

#: Split names and the seed stream each one draws from.
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

#: Recommended recipe for the demo: ``small_resnet(**attnviz.nets.DEMO_NET)`` on
#: ``SyntheticShapes`` (64x64, 10 classes, default difficulty), plain loop,
#: ``torch.set_num_threads(2)``. Optimiser: SGD(lr, momentum, nesterov,
#: weight_decay); schedule: ``torch.optim.lr_scheduler.OneCycleLR(max_lr=lr,
#: total_steps=epochs * ceil(train_images / batch_size), pct_start=warmup_pct,
#: anneal_strategy="cos")`` stepped per batch; augmentation: random horizontal and
#: vertical flips (``RandomFlip(horizontal=True, vertical=True)``; every class is
#: closed under mirroring); inputs and model in ``torch.channels_last`` (about
#: 1.3x faster on CPU). ``cache``: build the datasets with ``cache=True`` and
#: ``num_workers=0`` (or pre-render them to tensors): rendering costs ~1.5 ms per
#: image, as much as training on it, so render once rather than every epoch.
#: Measured on 2 CPU cores: 98.0% val accuracy after 10 epochs, 6.5 s per epoch
#: on an idle machine (~70-85 s in all); with an SE block in every residual branch
#: 98.1% (x1.3 time per step), with a CBAM-like block 98.3% (x1.4). Val accuracy
#: passes 85% around epoch 6-8 of the 10-epoch schedule.
DEMO_TRAINING: dict[str, Any] = {
    "size": 64,
    "num_classes": 10,
    "train_images": 6000,
    "val_images": 1000,
    "epochs": 10,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "warmup_pct": 0.05,
    "hflip": True,
    "vflip": True,
    "channels_last": True,
    "num_threads": 2,
    "cache": True,
}


# --------------------------------------------------------------------------- shapes
# Every shape is an "inside" test on local coordinates (u, v) in which the object
# fits in the unit disk. Rotation, mirroring and scale are applied by the caller.

Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _star(u: np.ndarray, v: np.ndarray, n: int, r_out: float, r_in: float) -> np.ndarray:
    """n-fold star polygon; with ``r_in = r_out*cos(pi/n)`` a regular n-gon."""
    w = 2.0 * math.pi / n
    r = np.sqrt(u * u + v * v)
    a = np.arctan2(v, u) % w
    a = np.minimum(a, w - a)  # fold into the half wedge [0, w/2]
    px, py = r * np.cos(a), r * np.sin(a)
    dx, dy = r_in * math.cos(w / 2) - r_out, r_in * math.sin(w / 2)
    return dx * py - dy * (px - r_out) >= 0.0


def _polygon(n: int, r: float) -> Inside:
    """Regular convex n-gon with circumradius r, a vertex on the +u axis."""
    apothem = r * math.cos(math.pi / n)
    normals = [
        (math.cos((2 * k + 1) * math.pi / n), math.sin((2 * k + 1) * math.pi / n)) for k in range(n)
    ]

    def inside(u, v):
        out = u * normals[0][0] + v * normals[0][1] <= apothem
        for nu, nv in normals[1:]:
            out &= u * nu + v * nv <= apothem
        return out

    return inside


def _disk(u, v):
    return u * u + v * v <= 0.8**2


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.27) & (av <= 0.9)) | ((av <= 0.27) & (au <= 0.9))


def _ring(u, v):
    rr = u * u + v * v
    return (rr <= 0.9**2) & (rr >= 0.5**2)


def _crescent(u, v):
    return (u * u + v * v <= 0.9**2) & ((u - 0.38) ** 2 + v * v > 0.72**2)


def _heart(u, v):
    x, y = u / 0.78, -v / 0.78 + 0.12
    q = x * x + y * y - 1.0
    return q * q * q - x * x * y * y * y <= 0.0


def _arrow(u, v):
    av = np.abs(v)
    shaft = (u >= -0.9) & (u <= 0.1) & (av <= 0.17)
    head = (u >= 0.1) & (av <= 0.6 * (0.9 - u) / 0.8)
    return shaft | head


def _ellipse(u, v):
    return (u / 0.95) ** 2 + (v / 0.36) ** 2 <= 1.0


def _semicircle(u, v):
    # Half disk, shifted so that its bounding box is centred.
    y = v + 0.45
    return (u * u + y * y <= 0.95**2) & (y >= 0.0)


def _lshape(u, v):
    return ((u >= -0.65) & (u <= 0.65) & (v >= 0.3) & (v <= 0.7)) | (
        (u >= -0.65) & (u <= -0.25) & (v >= -0.75) & (v <= 0.7)
    )


def _tee(u, v):
    return ((np.abs(u) <= 0.8) & (v >= -0.75) & (v <= -0.37)) | (
        (np.abs(u) <= 0.2) & (v >= -0.75) & (v <= 0.8)
    )


_SHAPES: dict[str, Inside] = {
    "disk": _disk,
    "square": _polygon(4, 0.92),
    "triangle": _polygon(3, 1.0),
    "cross": _cross,
    "ring": _ring,
    "star": lambda u, v: _star(u, v, 5, 1.0, 0.42),
    "crescent": _crescent,
    "heart": _heart,
    "arrow": _arrow,
    "bar": _ellipse,
    "semicircle": _semicircle,
    "lshape": _lshape,
    "tee": _tee,
}

#: All shape names, in label order; ``num_classes=K`` uses the first K.
SHAPE_NAMES: tuple[str, ...] = tuple(_SHAPES)


# ------------------------------------------------------------------------ rendering


@lru_cache(maxsize=16)
def _upsample_matrix(size: int, cells: int) -> np.ndarray:
    """Bilinear interpolation matrix [size, cells+1] from a coarse grid to pixels."""
    pos = (np.arange(size) + 0.5) / size * cells
    lo = np.minimum(pos.astype(np.int64), cells - 1)
    frac = pos - lo
    m = np.zeros((size, cells + 1), dtype=np.float32)
    m[np.arange(size), lo] = 1.0 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    a = _upsample_matrix(size, cells)
    return a @ rng.random((cells + 1, cells + 1), dtype=np.float32) @ a.T


def _texture(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A scalar texture field in [0, 1] of one of four random kinds."""
    kind = rng.integers(4)
    theta = rng.uniform(0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    if kind == 0:  # multi-octave value noise
        t = 0.6 * _value_noise(rng, size, int(rng.integers(3, 7)))
        t += 0.4 * _value_noise(rng, size, int(rng.integers(8, 17)))
        rng.random(3)  # keep the number of draws per kind roughly alike
    elif kind == 1:  # stripes, sometimes wavy
        period = rng.uniform(4.0, 14.0)
        warp = rng.uniform(0.0, 3.0) * np.sin(yy * c - xx * s) if rng.random() < 0.5 else 0.0
        t = 0.5 + 0.5 * np.sin((xx * c + yy * s + warp) * (2 * math.pi / period))
    elif kind == 2:  # rotated checker
        period = rng.uniform(6.0, 16.0)
        a = np.floor((xx * c + yy * s) / period) + np.floor((yy * c - xx * s) / period)
        t = (a % 2).astype(np.float32)
        rng.random(1)
    else:  # blotches: thresholded noise
        n = _value_noise(rng, size, int(rng.integers(4, 9)))
        t = 1.0 / (1.0 + np.exp(-(n - rng.uniform(0.35, 0.65)) * 18.0))
        rng.random(2)
    return np.asarray(t, dtype=np.float32)


def _coverage(
    inside: Inside,
    cx: float,
    cy: float,
    radius: float,
    theta: float,
    mirror: float,
    size: int,
    supersample: int,
) -> tuple[np.ndarray, int, int] | None:
    """Anti-aliased coverage of a shape in its clipped bounding box.

    Returns ``(alpha[h, w], y0, x0)`` or None when the box is empty.
    """
    x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, size)
    y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, size)
    if x1 <= x0 or y1 <= y0:
        return None
    ss = supersample
    xs = _subpixels(x1 - x0, ss) + (x0 - cx)
    ys = _subpixels(y1 - y0, ss) + (y0 - cy)
    c, s = math.cos(theta) / radius, math.sin(theta) / radius
    u = (xs * (c * mirror))[None, :] + (ys * (s * mirror))[:, None]
    v = (ys * c)[:, None] - (xs * s)[None, :]
    hits = inside(u, v).view(np.uint8)
    if ss > 1:  # box-filter the sub-samples (strided adds beat a 4-D reduce here)
        rows = sum(hits[i::ss] for i in range(ss))
        hits = sum(rows[:, j::ss] for j in range(ss))
    return hits.astype(np.float32) * (1.0 / (ss * ss)), y0, x0


@lru_cache(maxsize=512)
def _subpixels(n: int, ss: int) -> np.ndarray:
    """Sub-pixel centre offsets of n pixels sampled ss times each."""
    return (np.arange(n * ss, dtype=np.float32) + 0.5) / ss


def _paint(img: np.ndarray, cov: tuple[np.ndarray, int, int] | None, color: np.ndarray) -> None:
    if cov is None:
        return
    alpha, y0, x0 = cov
    h, w = alpha.shape
    region = img[:, y0 : y0 + h, x0 : x0 + w]
    region += alpha * (color[:, None, None] - region)


def _fragment(rng: np.random.Generator, obj_radius: float) -> Inside:
    """A class-agnostic distractor piece: segment, arc, blob or corner."""
    kind = rng.integers(4)
    t = rng.uniform(0.09, 0.18)  # stroke half-width in units of the fragment radius
    p = rng.uniform(0.3, 1.0, size=3)
    if kind == 0:  # line segment

        def inside(u, v):
            return (np.abs(u) <= 1.0) & (np.abs(v) <= t)

    elif kind == 1:  # arc of at most 150 degrees
        span = p[0] * math.radians(150)
        r0 = 0.8

        def inside(u, v):
            ang = np.arctan2(v, u) % (2 * math.pi)
            return (np.abs(np.sqrt(u * u + v * v) - r0) <= t) & (ang <= span)

    elif kind == 2:  # small blob (ellipse)
        ax, ay = 0.25 + 0.2 * p[1], 0.15 + 0.2 * p[2]

        def inside(u, v):
            return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0

    else:  # corner: two strokes meeting at an angle

        def inside(u, v):
            a = (u >= -t) & (u <= 0.9) & (np.abs(v) <= t)
            b = (v >= -t) & (v <= 0.9 * p[0] + 0.1) & (np.abs(u) <= t)
            return a | b

    return inside


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _contrasting(color: np.ndarray, under: np.ndarray, min_contrast: float) -> np.ndarray:
    """Scale ``color`` towards white or black until its luminance differs from that
    of ``under`` by at least ``min_contrast`` (its hue is kept).

    The polarity follows the colour's own luminance (brighter or darker than the
    background), flipped only when the target luminance is out of [0, 1].
    """
    lum, lum_under = float(color @ _LUMA), float(under @ _LUMA)
    brighter = lum >= lum_under
    if brighter and lum_under + min_contrast > 1.0:
        brighter = False
    elif not brighter and lum_under - min_contrast < 0.0:
        brighter = True
    if brighter:
        target = max(lum, min(lum_under + min_contrast, 1.0))
        k = (1.0 - target) / max(1.0 - lum, 1e-6)
        return (1.0 - (1.0 - color) * k).astype(np.float32)
    target = min(lum, max(lum_under - min_contrast, 0.0))
    return (color * (target / max(lum, 1e-6))).astype(np.float32)


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Fixed standard-normal samples; pixel noise is a random slice of it (fast)."""
    return np.random.default_rng(20240611).standard_normal(1 << 20, dtype=np.float32)


def _random_color(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """Random saturated-or-not colours, uniform in hue and spread in value."""
    hue = rng.random(n)
    sat = rng.uniform(0.2, 1.0, n)
    val = rng.uniform(0.15, 1.0, n)
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hue[:, None] * 6.0) % 6.0
    rgb = val[:, None] * (1 - sat[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1))
    return rgb.astype(np.float32)


# -------------------------------------------------------------------------- dataset


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise AttnvizError(f"{name} must be {rng}, got {value}")
    return int(value)


def _check_range(name: str, value: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in value)
    except (TypeError, ValueError):
        raise AttnvizError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not lo <= a <= b <= hi:
        raise AttnvizError(f"{name} must satisfy {lo} <= low <= high <= {hi}, got {value!r}")
    return a, b


class SyntheticShapes(Dataset):
    """One shape per image on textured clutter; yields ``(image, label, mask)``.

    ``image`` is float32 ``[3, size, size]`` normalised with ``MEAN``/``STD``
    (``ds.denormalize(image)`` gives back [0, 1]); ``label`` is an int in
    ``[0, num_classes)`` naming ``class_names[label]``; ``mask`` is a bool
    ``[size, size]`` tensor marking the object's pixels (anti-aliased coverage >= 0.5).

    Labels are balanced (``label = index % num_classes``). Colour, background,
    position, scale, orientation and distractors are drawn independently of the
    label, so only the object's shape tells the class.

    Args:
        num_images: dataset length (>= 1).
        size: image side in pixels (>= 32).
        num_classes: number of shape classes, 2 to ``len(SHAPE_NAMES)``.
        seed: base seed (>= 0); with ``split`` and the index it fixes each sample.
        split: ``"train"``, ``"val"`` or ``"test"`` (independent random streams).
        transform: optional ``transform(image, mask) -> (image, mask)`` applied to
            the [0, 1] image and a ``tv_tensors.Mask`` before normalisation
            (e.g. :class:`attnviz.data.transforms.RandomFlip`, or torchvision v2).

        Difficulty knobs (the defaults are what ``DEMO_TRAINING`` was tuned on):

        object_scale: object radius as a fraction of ``size`` (low, high).
        distractors: number of distractor fragments per image (low, high), inclusive.
        noise_std: std of the per-pixel Gaussian noise added last (in [0, 1] units).
        clutter: contrast of the background textures (0: flat colour, 1: strong).
        max_rotation: objects are rotated uniformly in +-max_rotation degrees
            (180: any orientation) and mirrored with probability 1/2.
        min_contrast: least luminance difference between the object and the mean
            background under it; the object's random colour is lightened or
            darkened (hue kept) to reach it.
        supersample: anti-aliasing factor for shapes (1 disables it).
        cache: keep rendered samples in memory (per process) after first access.

    >>> ds = SyntheticShapes(100, split="val")
    >>> len(ds), ds.num_classes, ds.class_names[:3]
    (100, 10, ('disk', 'square', 'triangle'))
    >>> bool((ds[5][0] == ds[5][0]).all())
    True
    """

    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    def __init__(
        self,
        num_images: int,
        *,
        size: int = 64,
        num_classes: int = 10,
        seed: int = 0,
        split: str = "train",
        transform: Callable[..., Any] | None = None,
        object_scale: Sequence[float] = (0.2, 0.32),
        distractors: Sequence[int] = (2, 5),
        noise_std: float = 0.03,
        clutter: float = 0.6,
        max_rotation: float = 180.0,
        min_contrast: float = 0.4,
        supersample: int = 2,
        cache: bool = False,
    ) -> None:
        self.num_images = _check_int("num_images", num_images, 1)
        self.size = _check_int("size", size, 32)
        self.num_classes = _check_int("num_classes", num_classes, 2, len(SHAPE_NAMES))
        self.seed = _check_int("seed", seed, 0)
        if split not in SPLITS:
            raise AttnvizError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        self.split = split
        self.transform = transform
        self.object_scale = _check_range("object_scale", object_scale, 0.05, 0.45)
        lo, hi = _check_range("distractors", distractors, 0, 64)
        if lo != int(lo) or hi != int(hi):
            raise AttnvizError(f"distractors must be a pair of ints, got {distractors!r}")
        self.distractors = (int(lo), int(hi))
        if not 0.0 <= noise_std <= 0.5:
            raise AttnvizError(f"noise_std must be in [0, 0.5], got {noise_std!r}")
        self.noise_std = float(noise_std)
        if not 0.0 <= clutter <= 2.0:
            raise AttnvizError(f"clutter must be in [0, 2], got {clutter!r}")
        self.clutter = float(clutter)
        if not 0.0 <= max_rotation <= 180.0:
            raise AttnvizError(f"max_rotation must be in [0, 180] degrees, got {max_rotation!r}")
        self.max_rotation = float(max_rotation)
        if not 0.0 <= min_contrast <= 0.5:
            raise AttnvizError(f"min_contrast must be in [0, 0.5], got {min_contrast!r}")
        self.min_contrast = float(min_contrast)
        self.supersample = _check_int("supersample", supersample, 1, 8)
        self.class_names: tuple[str, ...] = SHAPE_NAMES[: self.num_classes]
        self._cache: dict[int, tuple[np.ndarray, int, np.ndarray]] | None = {} if cache else None
        yy, xx = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32)
        self._yy, self._xx = yy, xx

    # ---------------------------------------------------------------- public API
    def __len__(self) -> int:
        return self.num_images

    @property
    def targets(self) -> list[int]:
        """Labels of all samples, in index order (cheap: no rendering)."""
        return [i % self.num_classes for i in range(self.num_images)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        index = self._check_index(index)
        if self._cache is not None and index in self._cache:
            img, label, mask = self._cache[index]
        else:
            img, label, mask = self._render_chw(index, True)
            if self._cache is not None:
                self._cache[index] = (img, label, mask)
        image = torch.from_numpy(img).float().div_(255.0)
        mask_t = torch.from_numpy(mask)
        image, mask_t = finish_sample(image, mask_t, self.transform, self.mean, self.std)
        return image, label, mask_t

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Map a normalised image (``[3,H,W]`` or ``[N,3,H,W]``) back to [0, 1]."""
        return _denormalize(image, self.mean, self.std)

    def render(self, index: int, *, draw_object: bool = True) -> tuple[np.ndarray, int, np.ndarray]:
        """Render sample ``index`` as ``(uint8 image [H,W,3], label, bool mask [H,W])``.

        No transform, no normalisation: what you would save or display. With
        ``draw_object=False`` the very same scene is rendered without the object
        (same background, distractors and noise), to check that nothing but the
        object carries the label; the mask is still the object's.
        """
        img, label, mask = self._render_chw(self._check_index(index), draw_object)
        return np.ascontiguousarray(img.transpose(1, 2, 0)), label, mask

    def _render_chw(self, index: int, draw_object: bool) -> tuple[np.ndarray, int, np.ndarray]:
        label = index % self.num_classes
        rng = np.random.default_rng((self.seed, SPLITS[self.split], index))
        size = self.size
        yy, xx = self._yy, self._xx

        # Background: a texture blending two random colours, a second texture mixed
        # over it, and a soft illumination gradient. All drawn before the label is used.
        r_lo, r_hi = self.object_scale
        n_frag = int(rng.integers(self.distractors[0], self.distractors[1] + 1))
        colors = _random_color(rng, 8 + n_frag)  # 4 background, 4 object, fragments
        c = colors[:4, :, None, None]
        t1 = _texture(rng, size, yy, xx)
        t2 = _texture(rng, size, yy, xx)
        contrast = self.clutter * rng.uniform(0.25, 0.8)
        mix = min(self.clutter * rng.uniform(0.0, 0.5), 1.0)
        img = c[0] + (contrast * t1) * (c[1] - c[0])
        img += (mix * t2) * (c[2] + (c[3] - c[2]) * t2 - img)
        gx, gy = (float(g) for g in rng.uniform(-0.25, 0.25, 2) / size)
        img += (xx - size / 2) * gx + (yy - size / 2) * gy

        # Distractor fragments, drawn below the object.
        for k in range(n_frag):
            fr = size * rng.uniform(0.35, 0.6) * rng.uniform(r_lo, r_hi)
            fx, fy = rng.uniform(0, size, 2)
            inside = _fragment(rng, fr)
            cov = _coverage(
                inside, fx, fy, fr, rng.uniform(0, 2 * math.pi), 1.0, size, self.supersample
            )
            _paint(img, cov, colors[8 + k])

        # The object: geometry and colour drawn with a fixed number of draws, so
        # the scene is identical whatever the class (and with draw_object=False).
        radius = size * rng.uniform(r_lo, r_hi)
        cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
        theta = math.radians(self.max_rotation) * rng.uniform(-1.0, 1.0)
        mirror = 1.0 if rng.random() < 0.5 else -1.0
        candidates = colors[4:8]
        shade = rng.uniform(-0.15, 0.15, 2) / radius
        inside = _SHAPES[SHAPE_NAMES[label]]
        cov = _coverage(inside, cx, cy, radius, theta, mirror, size, self.supersample)
        assert cov is not None  # the object always lies inside the image
        alpha, y0, x0 = cov
        h, w = alpha.shape
        mask = np.zeros((size, size), dtype=bool)
        mask[y0 : y0 + h, x0 : x0 + w] = alpha >= 0.5
        region = img[:, y0 : y0 + h, x0 : x0 + w]
        color = _contrasting(candidates[0], region.reshape(3, -1).mean(axis=1), self.min_contrast)
        if draw_object:
            ramp = (xx[y0 : y0 + h, x0 : x0 + w] - cx) * shade[0]
            ramp += (yy[y0 : y0 + h, x0 : x0 + w] - cy) * shade[1]
            region += alpha * (color[:, None, None] + ramp - region)

        bank = _noise_bank()
        start = int(rng.integers(bank.size - img.size))
        img += self.noise_std * bank[start : start + img.size].reshape(img.shape)
        img *= 255.0
        img += 0.5
        out = np.clip(img, 0, 255, out=img).astype(np.uint8)
        return out, label, mask

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_images={self.num_images}, size={self.size}, "
            f"num_classes={self.num_classes}, seed={self.seed}, split={self.split!r})"
        )

    def _check_index(self, index: int) -> int:
        if isinstance(index, torch.Tensor):
            index = int(index)
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        return index % self.num_images
