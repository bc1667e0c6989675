"""``train()``: a recipe, a dataset and an output folder in; a trained, checkpointed model out.

The call has two phases. *Prepare* checks every input (recipe, settings,
data, device, finetune mode, the model's class count against the data, what
``out`` already holds) and writes nothing: bad input raises
:class:`~attnviz.errors.TrainError` and leaves the disk as it was.
*Run* then trains, checkpointing every epoch (see :mod:`.checkpoint`), and
finishes by writing ``out/model.safetensors`` and marking ``out/run.json``
finished.

Files in ``out``::

    run.json            what the run is (recipe, settings, seed, data, finetune) and whether it finished
    metrics.json        per-epoch and final metrics (also in TrainResult.metrics)
    model.safetensors   final weights (attnviz.load reads them), written when the run finishes
    best.safetensors    weights of the epoch with the best val accuracy so far
    checkpoints/        per-epoch checkpoints and the latest.json pointer
    tensorboard/        scalars every epoch, feature maps and CAMs every few epochs
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import canonical_spec
from ..fileformats import read_json
from ..recipes import Recipe, RecipeError, build_model, load_recipe, recipe_from_dict
from ..serialization import load_weights
from ..serialization import save as save_model
from ..settings import TrainError, TrainSettings, settings_from_dict
from .checkpoint import (
    Checkpoint,
    _verify,
    atomic_write_json,
    find_checkpoint,
    remove_checkpoints,
    restore_rng,
    save_checkpoint,
)
from .distributed import DistContext, _env_int, _pick_device, setup
from .finetune import FINETUNE_MODES, apply_finetune, trainable_prefixes
from .loaders import (
    build_datasets,
    build_loaders,
    derive_seed,
    is_synthetic,
    local_batch_size,
    num_classes_of,
)
from .loop import Trainer

__all__ = ["TrainResult", "train"]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
FINAL = "model.safetensors"
BEST = "best.safetensors"
_SYNTHETIC_CLASSES = (2, 12)


@dataclass
class TrainResult:
    """What :func:`train` produced.

    ``metrics``: ``epochs`` (a list, one dict per epoch: ``epoch``,
    ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr``,
    ``epoch_time_s`` (the training pass), ``eval_time_s``, ``images_per_s``) and
    the final ``val_acc``, ``val_loss``, ``best_val_acc``, ``best_epoch``,
    ``train_time_s`` (sum of the epochs' training passes) and ``images_per_s``.
    ``resumed_from_epoch``: the checkpoint epoch this call started from (None: from
    scratch; the last epoch when the run had already finished).
    """

    out_dir: Path
    checkpoint: Path
    best_checkpoint: Path
    metrics: dict[str, Any]
    model: nn.Module
    resumed_from_epoch: int | None
    finished: bool
    settings: TrainSettings | None = None
    recipe: Recipe | None = None
    warnings: list[str] = field(default_factory=list)


# -- prepare: validation, no writes --------------------------------------------------------------
@dataclass
class _Plan:
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


def _as_recipe(recipe: Recipe | str | os.PathLike[str] | dict[str, Any]) -> Recipe:
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


def _identity(recipe: Recipe, settings: TrainSettings, data: str, seed: int, finetune: str):
    spec = {k: v for k, v in recipe.to_dict().items() if k not in ("name", "description", "train")}
    identity = {
        "recipe": spec,
        "settings": settings.result_dict(),
        "data": canonical_spec(data),
        "seed": seed,
        "finetune": finetune,
    }
    # As JSON reads it back (tuples become lists, classes their qualified names), so that
    # the identity of a run compares equal to the one stored in its run.json.
    return json.loads(json.dumps(identity, sort_keys=True, default=_json_name))


def _recipe_json(recipe: Recipe) -> dict[str, Any]:
    return json.loads(json.dumps(recipe.to_dict(), default=_json_name))


def _json_name(value: Any) -> str:
    if isinstance(value, type):
        return f"{value.__module__}:{value.__qualname__}"
    return repr(value)


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and prefix.count(".") < 1:
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def _prepare(
    recipe: Any,
    *,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    epochs: int | None,
    seed: int,
    device: str | torch.device | None,
    finetune: str | None,
    overrides: dict[str, Any] | None,
    download: bool = False,
) -> _Plan:
    rec = _as_recipe(recipe)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TrainError(f"seed must be an int >= 0, got {seed!r}")
    extra = dict(overrides or {})
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
    world = _env_int("WORLD_SIZE", 1)
    local_batch_size(settings, world)
    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise TrainError(f"out {str(out_path)!r} exists and is not a folder")
    data_text = os.fspath(data)

    torch.manual_seed(seed)  # the initial weights (and surgery's example input) follow the seed
    try:
        model = build_model(rec)
    except (RecipeError, ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        raise TrainError(f"{rec.source or 'recipe'}: cannot build the model: {exc}") from exc
    trainable_prefixes(model, mode)  # raises for a model without attention blocks, or no head
    _make_scheduler(_make_optimizer(model, settings), settings, 1)  # opt / sched kwargs check
    channels = rec.input_size[0] if rec.input_size else 3
    classes = _output_classes(model, channels, settings.image_size)
    if is_synthetic(data_text):
        lo, hi = _SYNTHETIC_CLASSES
        if not lo <= classes <= hi:
            raise TrainError(
                f"the model has {classes} outputs but the synthetic data has {lo} to {hi} classes; "
                "set base_kwargs: {num_classes: 10} in the recipe"
            )
        build_datasets(data_text, settings, num_classes=classes)
    else:
        train_ds, _ = build_datasets(data_text, settings, download=download)
        found = num_classes_of(train_ds)
        if found != classes:
            raise TrainError(
                f"data {data_text!r} has {found} classes but the model has {classes} outputs; "
                f"set base_kwargs: {{num_classes: {found}}} in the recipe"
            )
    identity = _identity(rec, settings, data_text, seed, mode)
    return _Plan(rec, settings, data_text, out_path, seed, mode, dev, identity, model, classes)


# -- what out already holds ----------------------------------------------------------------------
@dataclass
class _Decision:
    action: str  # "done", "resume", "fresh"
    epoch: int | None = None
    problems: list[str] = field(default_factory=list)


def _decide(plan: _Plan, resume: bool, warn: bool) -> _Decision:
    run_file = plan.out / RUN_FILE
    if not resume or not run_file.exists():
        return _Decision("fresh")
    try:
        run = read_json(run_file, "run record")
    except (ValueError, OSError) as exc:
        raise TrainError(f"{exc}; pass resume=False (--fresh) to start over") from None
    old = run["identity"]
    old = _with_new_defaults(old)
    if old != plan.identity:
        diff = "; ".join(_differences(old, plan.identity)[:6])
        raise TrainError(
            f"{plan.out} holds a run of a different recipe or settings ({diff}); "
            "pass resume=False (--fresh) to replace it, or choose another out folder"
        )
    final = plan.out / FINAL
    if run.get("finished") and final.is_file():
        try:
            from ..serialization import read_spec

            read_spec(final)
            return _Decision("done", run.get("epochs"))
        except ValueError as exc:
            if warn:
                warnings.warn(f"{final}: {exc}; finishing from the checkpoints", stacklevel=3)
    ckpt, problems = find_checkpoint(plan.out / "checkpoints", warn=warn)
    if ckpt is None:
        return _Decision("fresh", None, problems)
    return _Decision("resume", ckpt.epoch, problems)


def _with_new_defaults(identity: Any) -> Any:
    """A stored identity with settings added since it was written filled in at their defaults.

    A setting that a newer attnviz adds (at a default that changes nothing) must
    not make runs written by an older one look like different runs.
    """
    if not isinstance(identity, dict) or not isinstance(identity.get("settings"), dict):
        return identity
    defaults = TrainSettings().result_dict()
    settings = {**{k: v for k, v in defaults.items() if k not in identity["settings"]}}
    return {**identity, "settings": {**settings, **identity["settings"]}}


def _clear(out: Path) -> None:
    """Remove what an earlier run wrote in ``out`` (only the files this module names)."""
    remove_checkpoints(out / "checkpoints")
    for name in (RUN_FILE, METRICS_FILE, FINAL, BEST):
        (out / name).unlink(missing_ok=True)
    for name in (FINAL, BEST):  # the spec sidecars attnviz.save writes beside the weights
        (out / name).with_suffix(".json").unlink(missing_ok=True)
    if (out / "tensorboard").is_dir():
        shutil.rmtree(out / "tensorboard")


# -- run -----------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _summary(history: list[dict[str, Any]]) -> dict[str, Any]:
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


def _fixed_images(val_ds: Any, device: torch.device, k: int = 8) -> torch.Tensor:
    n = len(val_ds)
    idx = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(min(k, n))})
    return torch.stack([val_ds[i][0] for i in idx]).to(device)


def _make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    target: Any = (
        model if s.filter_bias_and_bn else [p for p in model.parameters() if p.requires_grad]
    )
    try:
        return create_optimizer_v2(
            target,
            opt=s.opt,
            lr=s.lr,
            weight_decay=s.weight_decay,
            momentum=s.momentum,
            filter_bias_and_bn=s.filter_bias_and_bn,
            **s.opt_kwargs,
        )
    except (AssertionError, ValueError, TypeError, KeyError) as exc:
        raise TrainError(f"optimizer {s.opt!r}: {exc}") from exc


def _make_scheduler(optimizer: torch.optim.Optimizer, s: TrainSettings, steps: int) -> Any:
    from timm.scheduler import create_scheduler_v2

    try:
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=s.sched,
            num_epochs=s.epochs,
            decay_epochs=s.decay_epochs,
            decay_milestones=s.decay_milestones,
            cooldown_epochs=s.cooldown_epochs,
            decay_rate=s.decay_rate,
            min_lr=s.min_lr,
            warmup_lr=s.lr / 25 if s.warmup_lr is None else s.warmup_lr,
            warmup_epochs=s.warmup_epochs,
            step_on_epochs=not s.sched_on_updates,
            updates_per_epoch=steps,
        )
    except (AssertionError, ValueError) as exc:
        raise TrainError(f"sched {s.sched!r}: {exc}") from exc
    return scheduler


def _jsonable(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError):
        if isinstance(obj, dict):
            return {k: _jsonable(v) for k, v in obj.items() if _is_jsonable(v)}
        return None


def _is_jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(
    recipe: Recipe | str | os.PathLike[str] | dict[str, Any],
    *,
    data: str | os.PathLike[str] = "synthetic",
    out: str | os.PathLike[str],
    epochs: int | None = None,
    seed: int = 0,
    resume: bool = True,
    device: str | torch.device | None = None,
    finetune: str | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    overrides: dict[str, Any] | None = None,
    stop_after: int | None = None,
    download: bool = False,
) -> TrainResult:
    """Train a recipe's model on ``data``; checkpoint every epoch into ``out``; resume when asked.

    Args:
        recipe: a :class:`~attnviz.recipes.Recipe`, a recipe file, or a recipe dict.
        data: ``"synthetic"`` (built-in shapes, sized by ``train_images`` /
            ``val_images``), ``"synthetic:N"`` (N training images), a named
            dataset (``"oxford-pets:PATH"``, ``"voc-seg:PATH"``, ``"cifar10:PATH"``,
            ``"imagenette:PATH"``: its train and val splits, see
            :func:`attnviz.data.build_dataset`), or an image folder with
            ``train/`` and ``val/`` subfolders of class folders.
        out: the run folder (created; see the module docs for its files).
        epochs: overrides the recipe's ``train: epochs``.
        seed: initial weights, data order, flips and dropout all follow it. A CPU
            run is reproducible from it, across kills and resumes, to the bit.
        resume: continue from the last good checkpoint in ``out``, or return the
            run as is if it already finished with the same recipe and settings
            (a different recipe or settings there is an error). ``False``:
            start over, replacing what a previous run wrote there.
        device: ``None`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
            Under ``torchrun`` each process takes ``cuda:LOCAL_RANK`` (or the CPU,
            gloo): the same call trains with DDP; only rank 0 writes and logs.
        finetune: ``"all"`` (default), ``"attention"`` (only the attention blocks
            train; the rest is frozen, its BatchNorm statistics too) or
            ``"attention+head"`` (also the classifier).
        progress: tqdm bars (on a terminal) and one line per epoch on stderr.
        tensorboard: write ``out/tensorboard`` (scalars; pictures every
            ``visualize_every`` epochs).
        overrides: ``train:`` settings over the recipe's, e.g. ``{"lr": 0.05}``.
        stop_after: return after this many epochs in this call (unfinished; the
            next call resumes), e.g. to fit a job into a time limit.
        download: fetch a named dataset with torchvision when it is missing
            (under ``torchrun`` the processes share one download).

    Raises:
        TrainError: bad input (unknown setting, missing data, unknown finetune
            mode, a model whose class count differs from the data's, ...);
            nothing has been written then.

    >>> import tempfile
    >>> recipe = {"base": "attnviz:small_resnet", "attention": "se",
    ...           "base_kwargs": {"num_classes": 4, "widths": [8, 16]}, "input_size": [3, 32, 32]}
    >>> r = train(recipe, out=tempfile.mkdtemp(), epochs=1, progress=False, tensorboard=False,
    ...           overrides={"train_images": 64, "val_images": 32, "batch_size": 16})
    >>> r.finished, r.checkpoint.name, len(r.metrics["epochs"])
    (True, 'model.safetensors', 1)
    """
    if stop_after is not None and (
        isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1
    ):
        raise TrainError(f"stop_after must be an int >= 1 or None, got {stop_after!r}")
    plan = _prepare(
        recipe,
        data=data,
        out=out,
        epochs=epochs,
        seed=seed,
        device=device,
        finetune=finetune,
        overrides=overrides,
        download=download,
    )
    is_main = _env_int("RANK", 0) == 0
    decision = _decide(plan, resume, warn=is_main)
    if decision.action == "done":
        return _finished_result(plan, decision)
    ctx = setup(plan.device)
    try:
        return _run(plan, decision, ctx, progress, tensorboard, stop_after)
    finally:
        ctx.close()


def _finished_result(plan: _Plan, decision: _Decision) -> TrainResult:
    out = plan.out
    try:
        metrics = (
            read_json(out / METRICS_FILE, "run metrics") if (out / METRICS_FILE).is_file() else {}
        )
        # the recipe builds the model; the file only gives its weights (nothing in it is built)
        model = load_weights(plan.model, out / FINAL, device=str(plan.device)).eval()
    except (ValueError, OSError) as exc:
        raise TrainError(f"{exc}; pass resume=False (--fresh) to train again") from None
    return TrainResult(
        out_dir=out,
        checkpoint=out / FINAL,
        best_checkpoint=out / BEST,
        metrics=metrics,
        model=model,
        resumed_from_epoch=decision.epoch,
        finished=True,
        settings=plan.settings,
        recipe=plan.recipe,
    )


def _run(
    plan: _Plan,
    decision: _Decision,
    ctx: DistContext,
    progress: bool,
    tensorboard: bool,
    stop_after: int | None,
) -> TrainResult:
    s, out = plan.settings, plan.out
    decision = _Decision(*ctx.broadcast((decision.action, decision.epoch, decision.problems)))
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    model = plan.model.to(ctx.device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable = apply_finetune(model, plan.finetune)
    train_loader, val_loader = build_loaders(
        plan.data,
        s,
        plan.seed,
        distributed=ctx.distributed,
        num_classes=plan.num_classes if is_synthetic(plan.data) else None,
        device=ctx.device,
    )
    optimizer = _make_optimizer(model, s)
    scheduler = _make_scheduler(optimizer, s, len(train_loader))
    wrapped: nn.Module = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = DDP(model, device_ids=ids)
    trainer = Trainer(
        model=model,
        wrapped=wrapped,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        settings=s,
        seed=plan.seed,
        ctx=ctx,
        trainable=trainable,
        progress=progress,
    )

    history: list[dict[str, Any]] = []
    start = 0
    if decision.action == "resume":
        ckpt = _verify(out / "checkpoints", decision.epoch)
        _restore(ckpt, model, optimizer, scheduler, trainer, ctx, plan.identity)
        history = list(ckpt.state.get("metrics", {}).get("epochs", []))
        start = ckpt.epoch
        if ctx.is_main and progress:
            _log(f"resuming {out} from epoch {start}/{s.epochs}")
    elif ctx.is_main:
        _clear(out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RUN_FILE, _run_record(plan, ctx, finished=False))

    board = None
    fixed = None
    if tensorboard and ctx.is_main:
        from .board import Board

        board = Board(out / "tensorboard", start_epoch=start)
        if s.visualize_every:
            fixed = _fixed_images(val_loader.dataset, ctx.device)
    denorm = _denormalizer(val_loader.dataset)

    end = s.epochs if stop_after is None else min(s.epochs, start + stop_after)
    try:
        for epoch in range(start, end):
            _seed_everything(derive_seed(plan.seed, "epoch", epoch, ctx.rank))
            stats = trainer.train_epoch(epoch, total_epochs=s.epochs)
            t0 = time.perf_counter()
            val = trainer.validate()
            row = {
                "epoch": epoch + 1,
                "train_loss": stats.train_loss,
                "train_acc": stats.train_acc,
                "val_loss": val["val_loss"],
                "val_acc": val["val_acc"],
                "lr": stats.lr,
                "epoch_time_s": stats.epoch_time_s,
                "eval_time_s": time.perf_counter() - t0,
                "images": stats.images,
                "images_per_s": stats.images_per_s,
            }
            history.append(row)
            if ctx.is_main:
                _end_of_epoch(plan, model, optimizer, scheduler, trainer, history, row)
                if board is not None:
                    board.scalars(row["epoch"], row)
                    last = epoch + 1 == s.epochs
                    if fixed is not None and ((epoch + 1) % s.visualize_every == 0 or last):
                        board.pictures(row["epoch"], model, fixed, denorm)
                if progress:
                    _log(_epoch_line(row, s.epochs))
    finally:
        if board is not None:
            board.close()
    finished = end == s.epochs
    metrics = _summary(history)
    # Back to the default memory format: the returned model then computes bit for bit
    # what attnviz.load(checkpoint) does (channels-last convolutions round differently).
    model = model.to(memory_format=torch.contiguous_format).eval()
    if ctx.is_main:
        atomic_write_json(out / METRICS_FILE, metrics)
        if finished:
            save_model(
                model,
                out / FINAL,
                extra={
                    "recipe": _recipe_json(plan.recipe),
                    "metrics": _final(metrics),
                    "data": _data_info(plan, val_loader.dataset),
                },
            )
            atomic_write_json(out / RUN_FILE, _run_record(plan, ctx, finished=True))
    ctx.barrier()
    return TrainResult(
        out_dir=out,
        checkpoint=out / FINAL,
        best_checkpoint=out / BEST,
        metrics=metrics,
        model=model,
        resumed_from_epoch=start if decision.action == "resume" else None,
        finished=finished,
        settings=s,
        recipe=plan.recipe,
        warnings=list(decision.problems),
    )


def _data_info(plan: _Plan, ds: Any) -> dict[str, Any]:
    """What the model expects as input, for ``attnviz.inputs`` (``attnviz cam`` on a checkpoint)."""
    names = getattr(ds, "class_names", None) or getattr(ds, "classes", None)
    mean, std = getattr(ds, "mean", None), getattr(ds, "std", None)
    return {
        "source": plan.data,
        "size": plan.settings.image_size,
        "mean": [float(v) for v in mean] if mean is not None else None,
        "std": [float(v) for v in std] if std is not None else None,
        "class_names": [str(c) for c in names] if names else None,
    }


def _final(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "epochs"}


def _denormalizer(ds: Any) -> tuple[Any, Any] | None:
    mean, std = getattr(ds, "mean", None), getattr(ds, "std", None)
    return (tuple(mean), tuple(std)) if mean is not None and std is not None else None


def _run_record(plan: _Plan, ctx: DistContext, *, finished: bool) -> dict[str, Any]:
    return {
        "identity": plan.identity,
        "finished": finished,
        "epochs": plan.settings.epochs,
        "recipe_name": plan.recipe.name,
        "settings": plan.settings.to_dict(),
        "world_size": ctx.world_size,
        "device": str(ctx.device),
    }


def _epoch_line(row: dict[str, Any], total: int) -> str:
    return (
        f"epoch {row['epoch']}/{total}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}  lr {row['lr']:.4g}  "
        f"{row['epoch_time_s']:.1f} s ({row['images_per_s']:.0f} img/s)"
    )


def _end_of_epoch(
    plan: _Plan,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer: Trainer,
    history: list[dict[str, Any]],
    row: dict[str, Any],
) -> None:
    """Best weights, then the epoch checkpoint (pointer last), then metrics.json."""
    out = plan.out
    if all(row["val_acc"] > r["val_acc"] for r in history[:-1]):  # ties keep the earlier epoch
        save_model(
            model,
            out / BEST,
            extra={
                "epoch": row["epoch"],
                "val_acc": row["val_acc"],
                "data": _data_info(plan, trainer.val_loader.dataset),
            },
        )
    state = {
        "global_step": row["epoch"] * trainer.steps_per_epoch,
        "scheduler": _jsonable(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "metrics": {"epochs": history},
        "settings": plan.settings.to_dict(),
        "identity": plan.identity,
        "recipe": _recipe_json(plan.recipe),
        "surgery": _surgery(model),
    }
    save_checkpoint(
        out / "checkpoints",
        row["epoch"],
        model,
        optimizer,
        state,
        keep=plan.settings.keep_checkpoints,
    )
    atomic_write_json(out / METRICS_FILE, _summary(history))


def _surgery(model: nn.Module) -> dict[str, Any]:
    from ..surgery import surgery_spec

    return surgery_spec(model)


def _restore(
    ckpt: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer: Trainer,
    ctx: DistContext,
    identity: dict[str, Any],
) -> None:
    """Load a verified checkpoint's weights and states; anything in it that does not fit is a
    :class:`TrainError` naming the file (the JSON is data: it only fills known states)."""
    source = ckpt.weights.with_name(ckpt.weights.name.replace(".safetensors", ".state.json"))
    stored = ckpt.state.get("identity")
    if stored is not None and _with_new_defaults(stored) != identity:
        diff = "; ".join(_differences(_with_new_defaults(stored), identity)[:4])
        raise TrainError(
            f"{source}: the checkpoint belongs to another run ({diff}); pass resume=False "
            "(--fresh) to start over"
        )
    try:
        ckpt.load_weights(model)
        ckpt.load_optimizer(optimizer)
        saved = ckpt.state.get("scheduler")
        if scheduler is not None and saved:
            current = scheduler.state_dict()
            known = {k: v for k, v in saved.items() if k in current}  # never new attributes
            scheduler.load_state_dict({**current, **known})
        if trainer.scaler.is_enabled() and ckpt.state.get("scaler"):
            trainer.scaler.load_state_dict(ckpt.state["scaler"])
        if ctx.is_main:
            restore_rng(ckpt.state["rng"])
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, OverflowError) as exc:
        raise TrainError(
            f"{source}: cannot restore the training state ({type(exc).__name__}: {exc}); pass "
            "resume=False (--fresh) to start over"
        ) from None
