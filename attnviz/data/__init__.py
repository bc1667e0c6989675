"""Datasets: the built-in procedural :class:`SyntheticShapes`, real datasets by name, image folders.

:func:`build_dataset` turns a short spec (``"synthetic"``, ``"synthetic:2000"``,
``"oxford-pets:PATH"``, ``"voc-seg:PATH"``, ``"cifar10:PATH"``,
``"imagenette:PATH"`` or a folder path) into a Dataset, so recipes and the CLI
can name data in one string. Every dataset yields ``(image, label)`` or
``(image, label, mask)`` and has ``classes``, ``mean`` and ``std``.
"""

from __future__ import annotations

from .cifar import Cifar10
from .folder import IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS, ImageFolderWithMasks
from .imagenette import IMAGENETTE_CLASSES, Imagenette
from .pets import OxfordPets
from .photo import CROP_FRACTION, RESIZE_MODES, PhotoDataset
from .safe_pickle import load_data_pickle
from .specs import NAMED_DATASETS, build_dataset, canonical_spec, named_spec
from .synthetic import DEMO_TRAINING, SHAPE_NAMES, SyntheticShapes
from .transforms import RandomFlip, denormalize, normalize
from .voc import VOC_CLASSES, VOCObjects

__all__ = [
    "CROP_FRACTION",
    "DEMO_TRAINING",
    "IMAGENETTE_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "NAMED_DATASETS",
    "RESIZE_MODES",
    "SHAPE_NAMES",
    "VOC_CLASSES",
    "Cifar10",
    "ImageFolderWithMasks",
    "Imagenette",
    "OxfordPets",
    "PhotoDataset",
    "RandomFlip",
    "SyntheticShapes",
    "VOCObjects",
    "build_dataset",
    "canonical_spec",
    "denormalize",
    "load_data_pickle",
    "named_spec",
    "normalize",
]
