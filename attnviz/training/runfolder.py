"""The run folder that :func:`~attnviz.training.train` writes: its files, and reading them back.

Files in a run folder ``out``::

    run.json            what the run is (recipe, settings, seed, data, finetune) and whether it finished
    metrics.json        per-epoch and final metrics (also in TrainResult.metrics)
    model.safetensors   final weights (attnviz.load reads them), written when the run finishes
    best.safetensors    weights of the epoch with the best val accuracy so far
    checkpoints/        per-epoch checkpoints and the latest.json pointer (see .checkpoint)
    tensorboard/        scalars every epoch, feature maps and CAMs every few epochs
    .attnviz-train.lock held while a training writes here (see .runlock)

Every JSON file is written atomically and read back through
:func:`attnviz.fileformats.read_json` (validated against its schema). Other
code that reads a run (``attnviz ablate``, reports) goes through
:func:`read_run_record` and :func:`read_metrics` rather than naming the files.

>>> import tempfile
>>> from pathlib import Path
>>> out = Path(tempfile.mkdtemp())
>>> _ = write_metrics(out, summarize([{"epoch": 1, "val_acc": 0.5, "val_loss": 1.0,
...                                    "epoch_time_s": 2.0, "images": 64}]))
>>> read_metrics(out)["best_epoch"], read_metrics(out / "missing", missing_ok=True)
(1, {})
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_write_json
from ..fileformats import read_json
from ..serialization import save as save_model
from .checkpoint import remove_checkpoints, save_checkpoint

__all__ = [
    "BEST",
    "CHECKPOINTS",
    "FINAL",
    "LOCK_FILE",
    "METRICS_FILE",
    "RUN_FILE",
    "TENSORBOARD",
    "clear",
    "data_info",
    "final_metrics",
    "read_metrics",
    "read_run_record",
    "summarize",
    "write_epoch",
    "write_final",
    "write_metrics",
    "write_run_record",
]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
FINAL = "model.safetensors"
BEST = "best.safetensors"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
LOCK_FILE = ".attnviz-train.lock"

PathLike = str | os.PathLike[str]


# -- reading -------------------------------------------------------------------------------------
def read_run_record(run_dir: PathLike) -> dict[str, Any]:
    """``run.json``: the run's identity, ``finished``, epochs, settings, world size, device.

    A missing file is ``FileNotFoundError``; a malformed one
    :class:`~attnviz.errors.FileFormatError` naming the field.
    """
    return read_json(Path(run_dir) / RUN_FILE, "run record")


def read_metrics(run_dir: PathLike, *, missing_ok: bool = False) -> dict[str, Any]:
    """``metrics.json``: ``epochs`` (one row per epoch) and the final values (see ``TrainResult``).

    ``missing_ok``: ``{}`` when the run has not written it (instead of ``FileNotFoundError``).
    """
    path = Path(run_dir) / METRICS_FILE
    if missing_ok and not path.is_file():
        return {}
    return read_json(path, "run metrics")


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``metrics.json`` holds for the epoch rows ``history``: the rows and the final values."""
    if not history:
        return {"epochs": []}
    best = max(history, key=lambda r: (r["val_acc"], -r["epoch"]))
    train_time = sum(r["epoch_time_s"] for r in history)
    images = sum(r["images"] for r in history)
    return {
        "epochs": history,
        "val_acc": history[-1]["val_acc"],
        "val_loss": history[-1]["val_loss"],
        "best_val_acc": best["val_acc"],
        "best_epoch": best["epoch"],
        "train_time_s": train_time,
        "images_per_s": images / max(train_time, 1e-9),
    }


def final_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The final values of :func:`summarize`'s metrics, without the per-epoch rows."""
    return {k: v for k, v in metrics.items() if k != "epochs"}


def data_info(source: str, image_size: int | None, dataset: Any) -> dict[str, Any]:
    """What the model expects as input, for ``attnviz.inputs`` (``attnviz cam`` on a checkpoint)."""
    names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    return {
        "source": source,
        "size": image_size,
        "mean": [float(v) for v in mean] if mean is not None else None,
        "std": [float(v) for v in std] if std is not None else None,
        "class_names": [str(c) for c in names] if names else None,
    }


def trained_contract(model: Any, source: str, image_size: int | None, dataset: Any) -> Any:
    """The input contract of a model trained on ``dataset``: what its weights now expect.

    Attached to the model (so every file :func:`attnviz.save` writes records it, and
    ``attnviz.load`` restores it): the training size, the data's normalisation, resize
    policy and class names, and where the weights came from.
    """
    from dataclasses import replace

    from ..inputs import input_contract

    info = data_info(source, image_size, dataset)
    before = input_contract(model)
    contract = replace(
        before,
        size=(image_size, image_size) if image_size else before.size,
        mean=tuple(info["mean"]) if info["mean"] else before.mean,
        std=tuple(info["std"]) if info["std"] else before.std,
        resize=getattr(dataset, "resize", None) or "stretch",
        class_names=info["class_names"] or before.class_names,
        weights=f"trained on {source}"
        + ("" if before.random_weights else f", starting from {before.weights}"),
        data=source,
        source="recorded by training",
    )
    return contract


# -- writing -------------------------------------------------------------------------------------
def clear(run_dir: PathLike) -> None:
    """Remove what an earlier run wrote in ``run_dir`` (only the files this module names)."""
    out = Path(run_dir)
    remove_checkpoints(out / CHECKPOINTS)
    for name in (RUN_FILE, METRICS_FILE, FINAL, BEST):
        (out / name).unlink(missing_ok=True)
    for name in (FINAL, BEST):  # the spec sidecars attnviz.save writes beside the weights
        (out / name).with_suffix(".json").unlink(missing_ok=True)
    if (out / TENSORBOARD).is_dir():
        shutil.rmtree(out / TENSORBOARD)


def write_run_record(run_dir: PathLike, record: dict[str, Any]) -> Path:
    """Write ``run.json`` (atomically; creates ``run_dir``)."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(out / RUN_FILE, record)


def write_metrics(run_dir: PathLike, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` (atomically)."""
    return atomic_write_json(Path(run_dir) / METRICS_FILE, metrics)


def write_epoch(
    run_dir: PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    history: list[dict[str, Any]],
    keep: int,
    data: dict[str, Any],
) -> None:
    """The end of an epoch on disk: best weights, then the checkpoint (pointer last), then metrics.

    ``history``: the epoch rows so far, this epoch's last; ``state``: the JSON
    state its checkpoint holds (see :func:`.resume.checkpoint_state`); ``data``:
    :func:`data_info` of the run.
    """
    out = Path(run_dir)
    row = history[-1]
    if all(row["val_acc"] > r["val_acc"] for r in history[:-1]):  # ties keep the earlier epoch
        save_model(
            model,
            out / BEST,
            extra={"epoch": row["epoch"], "val_acc": row["val_acc"], "data": data},
        )
    save_checkpoint(out / CHECKPOINTS, row["epoch"], model, optimizer, state, keep=keep)
    write_metrics(out, summarize(history))


def write_final(
    run_dir: PathLike,
    model: nn.Module,
    *,
    recipe: dict[str, Any],
    metrics: dict[str, Any],
    data: dict[str, Any],
) -> Path:
    """Write ``model.safetensors``: the final weights, with the recipe, final metrics and data."""
    return save_model(
        model,
        Path(run_dir) / FINAL,
        extra={"recipe": recipe, "metrics": final_metrics(metrics), "data": data},
    )
