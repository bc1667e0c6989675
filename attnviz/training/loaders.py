"""Training and validation batches, reproducible from (data spec, settings, seed, epoch).

- The datasets are fixed by ``(data, settings)``: the synthetic images by
  ``settings.data_seed``, a folder's optional subset likewise; the training
  ``seed`` never changes them, so runs with different seeds are scored on the
  very same validation images.
- The order of epoch ``e`` is a function of ``(seed, e)`` only:
  :class:`~torch.utils.data.DistributedSampler` with ``seed`` and ``set_epoch(e)``,
  also for one process. With N processes each takes every N-th image of the same
  permutation, so a global batch holds the same images whatever N is.
- Augmentation (random flips) is drawn per *batch* on the training side, from a
  generator seeded with ``(seed, epoch, step)`` for the global batch, each process
  taking its rows (:func:`flip_batch`); it never touches the global RNG, so a
  resumed epoch sees exactly the flips of an uninterrupted one.
- ``cache``: the decoded images are kept in memory as tensors
  (:class:`InMemoryLoader`): the synthetic images cost as much to render as to
  train on, so they are rendered once (in ``workers`` processes) instead of every
  epoch.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ..data import DEMO_TRAINING, SyntheticShapes, build_dataset
from ..data.specs import is_synthetic, synthetic_count
from ..settings import TrainError, TrainSettings

__all__ = [
    "InMemoryLoader",
    "ShardSampler",
    "build_datasets",
    "build_loaders",
    "derive_seed",
    "flip_batch",
    "num_classes_of",
]

#: A cache larger than this is not built (a warning says so); the data is read per epoch.
CACHE_LIMIT_BYTES = 8 << 30


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple, e.g. ``(seed, "flip", epoch, step)``; stable across runs."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _subset(ds: Dataset, n: int | None, seed: int, split: str) -> Dataset:
    """The first ``n`` images of a fixed permutation (all of them when ``n`` is None)."""
    total = len(ds)  # type: ignore[arg-type]
    if n is None or n >= total:
        return ds
    g = torch.Generator().manual_seed(derive_seed(seed, "subset", split))
    idx = torch.randperm(total, generator=g)[:n].sort().values.tolist()
    sub = Subset(ds, idx)
    for attr in ("classes", "class_names", "mean", "std", "num_classes", "resize"):
        if hasattr(ds, attr):
            setattr(sub, attr, getattr(ds, attr))
    return sub


def build_datasets(
    data: str | os.PathLike[str],
    settings: TrainSettings,
    *,
    num_classes: int | None = None,
    download: bool = False,
) -> tuple[Dataset, Dataset]:
    """The train and val datasets of ``data`` at ``settings`` (see :func:`build_loaders`).

    ``data`` is any :func:`~attnviz.data.build_dataset` spec: ``"synthetic[:N]"``,
    a named dataset (``"oxford-pets:PATH"``, ...; ``download=True`` fetches it
    when missing) or a folder. Errors (missing data, a folder with no images, a
    bad spec) are :class:`TrainError` naming the spec.
    """
    size = settings.image_size or 64
    try:
        if is_synthetic(data):
            text = os.fspath(data)
            if download:
                build_dataset(text, "train", size, download=True)  # the error that says why not
            n_train = settings.train_images or DEMO_TRAINING["train_images"]
            if text != "synthetic":
                n_train = synthetic_count(text)
            n_val = settings.val_images or DEMO_TRAINING["val_images"]
            kw: dict[str, Any] = {"size": size, "seed": settings.data_seed}
            if num_classes is not None:
                kw["num_classes"] = num_classes
            train = SyntheticShapes(n_train, split="train", **kw)
            val = SyntheticShapes(n_val, split="val", **kw)
            return train, val
        skip_bad = settings.skip_bad_images
        train = build_dataset(data, "train", size, skip_bad=skip_bad, download=download)
        val = build_dataset(data, "val", size, skip_bad=skip_bad)
    except (FileNotFoundError, ValueError, TypeError, OSError, RuntimeError) as exc:
        raise TrainError(f"data {os.fspath(data)!r}: {exc}") from exc
    if Path(data).is_dir() and not (Path(data) / "val").is_dir():
        warnings.warn(
            f"data folder {os.fspath(data)!r} has no val/ subfolder: validating on the training images",
            stacklevel=3,
        )
    train = _subset(train, settings.train_images, settings.data_seed, "train")
    val = _subset(val, settings.val_images, settings.data_seed, "val")
    return train, val


def num_classes_of(ds: Dataset) -> int:
    """Number of classes of a dataset (``classes``, ``class_names`` or ``num_classes``)."""
    for attr in ("classes", "class_names"):
        if hasattr(ds, attr):
            return len(getattr(ds, attr))
    if hasattr(ds, "num_classes"):
        return int(ds.num_classes)
    return int(max(ds[i][1] for i in range(len(ds)))) + 1  # type: ignore[arg-type]


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: every image once over all ranks, no padding."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class InMemoryLoader:
    """Batches sliced from tensors held in memory; the same items a DataLoader would collate.

    Quacks like a :class:`~torch.utils.data.DataLoader`: ``dataset`` (the source
    dataset, yielding ``(image, label[, mask])``), ``sampler``, ``batch_size``,
    ``len()`` and iteration over tuples of batched tensors.
    """

    def __init__(
        self,
        dataset: Dataset,
        tensors: Sequence[torch.Tensor],
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
    ) -> None:
        self.dataset = dataset
        self.tensors = list(tensors)
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        where = self.tensors[0].device
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long).to(where)
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


def _materialize(ds: Dataset, workers: int) -> list[torch.Tensor]:
    """Every sample of ``ds`` stacked per field: ``[images, labels(, masks)]``."""
    loader = DataLoader(
        ds, batch_size=256, shuffle=False, num_workers=workers, worker_init_fn=_seed_worker
    )
    parts: list[list[torch.Tensor]] = []
    for batch in loader:
        if not parts:
            parts = [[] for _ in batch]
        for store, value in zip(parts, batch):
            store.append(torch.as_tensor(value))
    return [torch.cat(p) for p in parts]


def _to_cuda(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """On the GPU when they fit in a quarter of its free memory, else in pinned host memory."""
    size = sum(t.numel() * t.element_size() for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if size < free // 4:
        return [t.to(device) for t in tensors]
    return [t.pin_memory() for t in tensors]


def _cache_bytes(ds: Dataset) -> int:
    first = ds[0]
    per = sum(torch.as_tensor(v).numel() * torch.as_tensor(v).element_size() for v in first)
    return per * len(ds)  # type: ignore[arg-type]


def _use_cache(data: str | os.PathLike[str], settings: TrainSettings, ds: Dataset) -> bool:
    want = settings.cache if settings.cache is not None else is_synthetic(data)
    if not want:
        return False
    need = _cache_bytes(ds)
    if need > CACHE_LIMIT_BYTES:
        warnings.warn(
            f"not caching {len(ds)} images ({need / 2**30:.1f} GiB > {CACHE_LIMIT_BYTES / 2**30:.0f} GiB); "  # type: ignore[arg-type]
            "they are decoded every epoch (set workers to decode in parallel)",
            stacklevel=3,
        )
        return False
    return True


def local_batch_size(settings: TrainSettings, world_size: int) -> int:
    """Per-process batch: the global ``batch_size`` split over ``world_size`` processes."""
    if settings.batch_size % world_size:
        raise TrainError(
            f"batch_size {settings.batch_size} is the global batch and must be divisible by the "
            f"number of processes ({world_size})"
        )
    return settings.batch_size // world_size


def build_loaders(
    data: str | os.PathLike[str],
    settings: TrainSettings | dict[str, Any] | None,
    seed: int,
    distributed: bool = False,
    *,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[Any, Any]:
    """``(train_loader, val_loader)`` for ``data`` (``"synthetic[:N]"``, ``"NAME:PATH"``, a folder).

    ``settings``: :class:`TrainSettings` or a ``train:`` mapping. The val loader
    iterates the whole val split in order, un-augmented, in batches of
    ``batch_size`` (``val_loader.dataset`` yields ``(image, label, mask)`` for
    synthetic data); it depends only on ``(data, settings)``. The train loader's
    order follows ``(seed, epoch)``: call ``train_loader.sampler.set_epoch(e)``
    before each epoch. With ``distributed=True`` (inside an initialised process
    group) each process gets its shard and ``batch_size / world_size`` images
    per batch. ``num_classes`` sets the synthetic number of classes (default 10).
    ``device``: where batches will be used; on CUDA a cached dataset is kept on
    the GPU when it takes less than a quarter of the free memory (else in pinned
    host memory), and uncached batches come in pinned memory.
    The last training batch is dropped only when it would hold a single image
    per process (BatchNorm cannot normalise one value).

    >>> from attnviz.settings import settings_from_dict
    >>> s = settings_from_dict({"train_images": 64, "val_images": 32, "image_size": 32, "batch_size": 16})
    >>> train_loader, val_loader = build_loaders("synthetic", s, seed=0)
    >>> len(train_loader), len(val_loader.dataset)
    (4, 32)
    """
    from ..settings import settings_from_dict

    if not isinstance(settings, TrainSettings):
        settings = settings_from_dict(settings or {})
    rank, world = 0, 1
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("build_loaders(distributed=True) needs an initialised process group")
        rank, world = dist.get_rank(), dist.get_world_size()
    bs = local_batch_size(settings, world)
    train_ds, val_ds = build_datasets(data, settings, num_classes=num_classes)
    train_sampler = DistributedSampler(
        train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    val_sampler = ShardSampler(len(val_ds), rank, world)  # type: ignore[arg-type]
    per_rank = len(train_sampler)
    drop_last = per_rank % bs == 1 and per_rank > 1
    val_bs = max(bs, 1)

    cuda = device is not None and torch.device(device).type == "cuda"
    pin_memory = cuda
    if _use_cache(data, settings, train_ds):
        train_t = _materialize(train_ds, settings.workers)
        val_t = _materialize(val_ds, settings.workers)
        if cuda:
            dev = torch.device(device)  # type: ignore[arg-type]
            train_t, val_t = _to_cuda(train_t, dev), _to_cuda(val_t, dev)
        train_loader: Any = InMemoryLoader(train_ds, train_t, train_sampler, bs, drop_last)
        val_loader: Any = InMemoryLoader(val_ds, val_t, val_sampler, val_bs)
        return train_loader, val_loader

    common: dict[str, Any] = {
        "num_workers": settings.workers,
        "worker_init_fn": _seed_worker,
        "pin_memory": pin_memory,
        "persistent_workers": settings.workers > 0,
    }
    train_loader = DataLoader(
        train_ds,
        batch_size=bs,
        sampler=train_sampler,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(derive_seed(seed, "workers")),
        **common,
    )
    val_loader = DataLoader(val_ds, batch_size=val_bs, sampler=val_sampler, **common)
    return train_loader, val_loader


def set_epoch(loader: Any, seed: int, epoch: int) -> None:
    """Fix the loader's order and worker seeds for ``epoch`` (a function of ``(seed, epoch)``)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(derive_seed(seed, "workers", epoch))


def flip_batch(
    images: torch.Tensor,
    mode: str,
    *,
    seed: int,
    epoch: int,
    step: int,
    global_batch: int,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Flip each image with probability 1/2 per allowed axis, reproducibly.

    The decisions for the whole global batch come from a generator seeded with
    ``(seed, epoch, step)``; this process takes rows ``rank, rank + world, ...``
    (the rows :class:`DistributedSampler` gave it), so the flips of an image do not
    depend on the number of processes nor on the global RNG. ``images`` is
    modified in place (the loaders give fresh tensors) and returned.
    """
    if mode == "none":
        return images
    g = torch.Generator().manual_seed(derive_seed(seed, "flip", epoch, step))
    draws = torch.rand(global_batch, 2, generator=g)[rank::world_size][: images.shape[0]] < 0.5
    axes = {"horizontal": ((0, -1),), "vertical": ((1, -2),), "both": ((0, -1), (1, -2))}[mode]
    for col, dim in axes:
        sel = draws[:, col].nonzero().squeeze(1)
        if sel.numel():
            sel = sel.to(images.device, non_blocking=True)
            images[sel] = images[sel].flip(dim)
    return images
