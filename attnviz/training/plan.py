"""Everything :func:`~attnviz.training.train` checks before it writes anything, as one plan.

:func:`prepare` turns the call's arguments into a :class:`Plan`: the recipe
(with its dotted overrides, e.g. ``base_kwargs.num_classes``, applied), the
validated settings, the device, the fine-tuning mode, the built model (its
class count checked against the data's), the run's identity, and a checked
output folder. Any bad input raises :class:`~attnviz.errors.TrainError`; the
disk is left as it was (the output check removes what it creates).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import check_writable_folder
from ..errors import OutputError
from ..recipes import Recipe, RecipeError, build_model, load_recipe, recipe_from_dict
from ..settings import RECIPE_MAPPINGS, TrainError, TrainSettings, apply_dotted, settings_from_dict
from .distributed import _env_int, _pick_device
from .finetune import FINETUNE_MODES, trainable_prefixes
from .loaders import build_datasets, is_synthetic, local_batch_size, num_classes_of
from .optim import make_optimizer, make_scheduler
from .resume import run_identity

__all__ = ["Plan", "as_recipe", "prepare", "with_recipe_overrides"]

#: The class counts the built-in synthetic data can have.
SYNTHETIC_CLASSES = (2, 12)


@dataclass
class Plan:
    """A checked training call: what :func:`prepare` returns and the run is made of."""

    recipe: Recipe
    settings: TrainSettings
    data: str
    out: Path
    seed: int
    finetune: str
    device: torch.device
    identity: dict[str, Any]
    model: nn.Module
    num_classes: int


def as_recipe(recipe: Recipe | str | os.PathLike[str] | dict[str, Any]) -> Recipe:
    """A :class:`Recipe` from a recipe, a recipe file or a recipe dict (errors: TrainError)."""
    try:
        if isinstance(recipe, Recipe):
            return recipe
        if isinstance(recipe, dict):
            return recipe_from_dict(recipe)
        if isinstance(recipe, (str, os.PathLike)):
            return load_recipe(recipe)
    except (RecipeError, FileNotFoundError) as exc:
        raise TrainError(str(exc)) from exc
    raise TrainError(f"recipe must be a Recipe, a path or a dict, got {type(recipe).__name__}")


def with_recipe_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """``recipe`` with dotted overrides of its mappings applied (a copy; ``recipe`` is unchanged).

    >>> r = recipe_from_dict({"base": "attnviz:small_resnet", "base_kwargs": {"num_classes": 4}})
    >>> with_recipe_overrides(r, {"base_kwargs.num_classes": 3}).base_kwargs, r.base_kwargs
    ({'num_classes': 3}, {'num_classes': 4})
    """
    if not overrides:
        return recipe
    current = {k: getattr(recipe, k) for k in RECIPE_MAPPINGS}
    return dataclasses.replace(recipe, **apply_dotted(current, overrides))


def _recipe_key(key: Any) -> bool:
    """Whether an override names a recipe mapping entry (``base_kwargs.num_classes``)."""
    if not isinstance(key, str) or key.partition(".")[0] not in RECIPE_MAPPINGS or "." not in key:
        return False
    if not all(part.strip() for part in key.split(".")):
        raise TrainError(
            f"overrides: {key!r} has an empty part; write e.g. base_kwargs.num_classes"
        )
    return True


def _output_classes(model: nn.Module, channels: int, size: int) -> int:
    """Number of logits the model gives for one image (a forward in eval mode, no grad)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, channels, size, size))
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise TrainError(
            f"the model must return logits [batch, classes], got {getattr(out, 'shape', type(out))}"
        )
    return int(out.shape[1])


def _class_names(ds: Any) -> str:
    names = getattr(ds, "classes", None) or getattr(ds, "class_names", None) or []
    return ", ".join(map(str, names[:3])) + (", ..." if len(names) > 3 else "")


def _check_classes(data: str, settings: TrainSettings, classes: int, download: bool) -> None:
    """The model's class count against the data's (which must be at least 2)."""
    fix = "set num_classes under base_kwargs in the recipe, or pass --num-classes"
    if is_synthetic(data):
        lo, hi = SYNTHETIC_CLASSES
        if not lo <= classes <= hi:
            raise TrainError(
                f"the model has {classes} outputs but the synthetic data has {lo} to {hi} classes; "
                f"{fix} (e.g. 10)"
            )
        build_datasets(data, settings, num_classes=classes)
        return
    train_ds, _ = build_datasets(data, settings, download=download)
    found = num_classes_of(train_ds)
    if found < 2:
        raise TrainError(
            f"data {data!r} has {found} class{'' if found == 1 else 'es'} "
            f"({_class_names(train_ds) or 'none'}); training a classifier needs at least 2 classes"
        )
    if found != classes:
        raise TrainError(
            f"data {data!r} has {found} classes but the model has {classes} outputs; {fix} {found}"
        )


def prepare(
    recipe: Recipe | str | os.PathLike[str] | dict[str, Any],
    *,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    epochs: int | None,
    seed: int,
    device: str | torch.device | None,
    finetune: str | None,
    overrides: dict[str, Any] | None,
    download: bool = False,
) -> Plan:
    """Check every input of a training call (see :func:`~attnviz.training.train`); write nothing.

    ``overrides``: ``train:`` keys, and dotted keys into the recipe's
    ``base_kwargs`` / ``block_kwargs`` (``{"base_kwargs.num_classes": 3}``);
    both are part of the run's identity.
    """
    rec = as_recipe(recipe)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TrainError(f"seed must be an int >= 0, got {seed!r}")
    extra = dict(overrides or {})
    recipe_extra = {k: extra.pop(k) for k in list(extra) if _recipe_key(k)}
    rec = with_recipe_overrides(rec, recipe_extra)
    if epochs is not None:
        extra["epochs"] = epochs
    settings = settings_from_dict(
        rec.train, overrides=extra, source=f"{rec.source or 'recipe'}: train"
    )
    if settings.image_size is None:
        settings.image_size = rec.input_size[-1] if rec.input_size else 64
    mode = finetune or "all"
    if mode not in FINETUNE_MODES:
        raise TrainError(f"unknown finetune mode {mode!r}; choose one of {list(FINETUNE_MODES)}")
    try:
        dev = _pick_device(device, _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1))
    except (ValueError, RuntimeError) as exc:
        raise TrainError(f"device: {exc}") from exc
    if settings.amp == "fp16" and dev.type != "cuda":
        raise TrainError("amp: fp16 needs a CUDA device (use amp: bf16 on CPU, or none)")
    local_batch_size(settings, _env_int("WORLD_SIZE", 1))
    out_path = Path(out)
    if _env_int("RANK", 0) == 0:  # only the main process writes; one probe, no race between ranks
        try:
            check_writable_folder(out_path, "out")
        except OutputError as exc:
            raise TrainError(str(exc)) from None
    data_text = os.fspath(data)

    torch.manual_seed(seed)  # the initial weights (and surgery's example input) follow the seed
    try:
        model = build_model(rec)
    except (RecipeError, ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        raise TrainError(f"{rec.source or 'recipe'}: cannot build the model: {exc}") from exc
    trainable_prefixes(model, mode)  # raises for a model without attention blocks, or no head
    make_scheduler(make_optimizer(model, settings), settings, 1)  # opt / sched kwargs check
    channels = rec.input_size[0] if rec.input_size else 3
    classes = _output_classes(model, channels, settings.image_size)
    _check_classes(data_text, settings, classes, download)
    identity = run_identity(rec, settings, data_text, seed, mode)
    return Plan(rec, settings, data_text, out_path, seed, mode, dev, identity, model, classes)
