"""``train()``: a recipe, a dataset and an output folder in; a trained, checkpointed model out.

The call has two phases. *Prepare* (:mod:`.plan`) checks every input (recipe,
settings, data, device, finetune mode, the model's class count against the
data, that ``out`` can be written) and writes nothing: bad input raises
:class:`~attnviz.errors.TrainError` and leaves the disk as it was.
*Run* then locks the run folder (:mod:`.runlock`), decides what it holds
(:mod:`.resume`), and trains, checkpointing every epoch; it finishes by writing
``out/model.safetensors`` and marking ``out/run.json`` finished
(:mod:`.runfolder` lists the files). A Ctrl-C raises
:class:`TrainingInterrupted`, which says the epoch reached and where the next
call resumes.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..fileformats import read_json
from ..inputs import attach_contract
from ..recipes import Recipe
from ..serialization import load_weights
from ..settings import TrainError, TrainSettings
from .checkpoint import POINTER, _verify
from .distributed import DistContext, _env_int, setup
from .finetune import apply_finetune
from .jsonify import as_json
from .loaders import build_loaders, derive_seed, is_synthetic
from .loop import Trainer
from .optim import make_optimizer, make_scheduler
from .plan import Plan, prepare
from .resume import Decision, checkpoint_state, decide, restore
from .runfolder import (
    BEST,
    CHECKPOINTS,
    FINAL,
    TENSORBOARD,
    clear,
    data_info,
    read_metrics,
    summarize,
    trained_contract,
    write_epoch,
    write_final,
    write_metrics,
    write_run_record,
)
from .runlock import FolderLock

__all__ = ["TrainResult", "TrainingInterrupted", "train"]


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


class TrainingInterrupted(KeyboardInterrupt):
    """A Ctrl-C (``KeyboardInterrupt``) during :func:`train`, with where the run stands.

    ``epoch``: the epoch (1-based) being trained when it came; ``epochs``: the
    run's total; ``checkpoint_epoch``: the newest complete checkpoint, the one
    a rerun of the same call resumes from (None: none yet, a rerun starts over);
    ``out_dir``: the run folder. ``str()`` is the one line the command line prints.
    Still a ``KeyboardInterrupt``: code that catches that keeps working.
    """

    def __init__(
        self, out_dir: Path, epoch: int, epochs: int, checkpoint_epoch: int | None
    ) -> None:
        self.out_dir, self.epoch, self.epochs = out_dir, epoch, epochs
        self.checkpoint_epoch = checkpoint_epoch
        where = (
            f"from the checkpoint of epoch {checkpoint_epoch} in {out_dir}"
            if checkpoint_epoch
            else f"from the start: {out_dir} holds no complete epoch yet"
        )
        super().__init__(
            f"interrupted at epoch {epoch}/{epochs}; rerun the same command to resume ({where})"
        )

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:  # pickled whole, e.g. out of an ablation worker
        return (type(self), (self.out_dir, self.epoch, self.epochs, self.checkpoint_epoch))


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
            ``train/`` and ``val/`` subfolders of class folders (at least 2).
        out: the run folder (created; see :mod:`attnviz.training.runfolder` for
            its files). One training at a time: while a call trains there, a
            second one fails naming the first's pid.
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
        progress: a header (device, data, classes, parameters, what is resumed),
            tqdm bars (on a terminal) and one line per epoch, on stderr.
        tensorboard: write ``out/tensorboard`` (scalars; pictures every
            ``visualize_every`` epochs).
        overrides: ``train:`` settings over the recipe's, e.g. ``{"lr": 0.05}``,
            and dotted keys into the recipe's ``base_kwargs`` / ``block_kwargs``
            (``{"base_kwargs.num_classes": 3}``) or ``opt_kwargs``; all are part of
            what the run is (a resume with other values is refused).
        stop_after: return after this many epochs in this call (unfinished; the
            next call resumes), e.g. to fit a job into a time limit.
        download: fetch a named dataset with torchvision when it is missing
            (under ``torchrun`` the processes share one download).

    Raises:
        TrainError: bad input (unknown setting, missing data, unknown finetune
            mode, a model whose class count differs from the data's, an ``out``
            that cannot be written, ...); nothing has been written then. Also
            when another training holds ``out``.
        TrainingInterrupted: Ctrl-C; the newest complete checkpoint stays, and
            the same call again resumes from it.

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
    plan = prepare(
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
    lock = FolderLock(plan.out)
    if is_main:  # the main process writes the folder: it alone holds the lock
        lock.acquire()
    try:
        decision = decide(plan.out, plan.identity, resume=resume, warn=is_main)
        if decision.action == "done":
            return _finished_result(plan, decision)
        ctx = setup(plan.device)
        try:
            return _run(plan, decision, ctx, progress, tensorboard, stop_after)
        finally:
            ctx.close()
    finally:
        lock.release()


def _finished_result(plan: Plan, decision: Decision) -> TrainResult:
    out = plan.out
    try:
        metrics = read_metrics(out, missing_ok=True)
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fixed_images(val_ds: Any, device: torch.device, k: int = 8) -> torch.Tensor:
    n = len(val_ds)
    idx = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(min(k, n))})
    return torch.stack([val_ds[i][0] for i in idx]).to(device)


def _denormalizer(ds: Any) -> tuple[Any, Any] | None:
    mean, std = getattr(ds, "mean", None), getattr(ds, "std", None)
    return (tuple(mean), tuple(std)) if mean is not None and std is not None else None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run(
    plan: Plan,
    decision: Decision,
    ctx: DistContext,
    progress: bool,
    tensorboard: bool,
    stop_after: int | None,
) -> TrainResult:
    s, out = plan.settings, plan.out
    decision = Decision(*ctx.broadcast((decision.action, decision.epoch, decision.problems)))
    start = (decision.epoch or 0) if decision.action == "resume" else 0
    reached = start + 1  # the epoch being trained, for the message of a Ctrl-C
    try:
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
        optimizer = make_optimizer(model, s)
        scheduler = make_scheduler(optimizer, s, len(train_loader))
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
        if decision.action == "resume":
            ckpt = _verify(out / CHECKPOINTS, start)
            restore(ckpt, model, optimizer, scheduler, trainer, ctx, plan.identity)
            history = list(ckpt.state.get("metrics", {}).get("epochs", []))
        elif ctx.is_main:
            clear(out)
        if ctx.is_main:
            write_run_record(out, _run_record(plan, ctx, finished=False))
            if progress:
                _log(_header(plan, ctx, decision, model, train_loader, val_loader))

        board = None
        fixed = None
        if tensorboard and ctx.is_main:
            from .board import Board

            board = Board(out / TENSORBOARD, start_epoch=start)
            if s.visualize_every:
                fixed = _fixed_images(val_loader.dataset, ctx.device)
        denorm = _denormalizer(val_loader.dataset)
        data = data_info(plan.data, s.image_size, val_loader.dataset)
        attach_contract(model, trained_contract(model, plan.data, s.image_size, val_loader.dataset))

        end = s.epochs if stop_after is None else min(s.epochs, start + stop_after)
        try:
            for epoch in range(start, end):
                reached = epoch + 1
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
                    state = checkpoint_state(
                        epoch=row["epoch"],
                        trainer=trainer,
                        scheduler=scheduler,
                        history=history,
                        settings=s,
                        identity=plan.identity,
                        recipe=plan.recipe,
                        model=model,
                    )
                    write_epoch(
                        out,
                        model=model,
                        optimizer=optimizer,
                        state=state,
                        history=history,
                        keep=s.keep_checkpoints,
                        data=data,
                    )
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
        metrics = summarize(history)
        # Back to the default memory format: the returned model then computes bit for bit
        # what attnviz.load(checkpoint) does (channels-last convolutions round differently).
        model = model.to(memory_format=torch.contiguous_format).eval()
        if ctx.is_main:
            write_metrics(out, metrics)
            if finished:
                write_final(
                    out, model, recipe=as_json(plan.recipe.to_dict()), metrics=metrics, data=data
                )
                write_run_record(out, _run_record(plan, ctx, finished=True))
        ctx.barrier()
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        raise TrainingInterrupted(out, reached, s.epochs, _checkpoint_epoch(out)) from None
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


def _checkpoint_epoch(out: Path) -> int | None:
    """The epoch ``checkpoints/latest.json`` names (what a rerun resumes from), if readable."""
    try:
        return int(read_json(out / CHECKPOINTS / POINTER, "checkpoint pointer")["epoch"])
    except (ValueError, OSError):
        return None


def _run_record(plan: Plan, ctx: DistContext, *, finished: bool) -> dict[str, Any]:
    return {
        "identity": plan.identity,
        "finished": finished,
        "epochs": plan.settings.epochs,
        "recipe_name": plan.recipe.name,
        "settings": plan.settings.to_dict(),
        "world_size": ctx.world_size,
        "device": str(ctx.device),
    }


def _header(
    plan: Plan,
    ctx: DistContext,
    decision: Decision,
    model: nn.Module,
    train_loader: Any,
    val_loader: Any,
) -> str:
    """What is about to train, printed before the first step (main process, ``progress``)."""
    s, rec = plan.settings, plan.recipe
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    names = getattr(train_loader.dataset, "class_names", None) or getattr(
        train_loader.dataset, "classes", None
    )
    shown = ""
    if names:
        shown = ": " + ", ".join(map(str, names[:6])) + (", ..." if len(names) > 6 else "")
    procs = f", {ctx.world_size} processes" if ctx.distributed else ""
    what = f"{rec.base}" + (f" + {rec.attention}" if rec.attention != "none" else "")
    if decision.action == "resume":
        state = f"resuming {plan.out} from epoch {decision.epoch}/{s.epochs}"
    else:
        state = f"starting {plan.out} from scratch ({s.epochs} epoch{'s' if s.epochs != 1 else ''})"
    return "\n".join(
        [
            f"training {rec.name or what} ({what}) on {ctx.device}{procs}",
            f"data {plan.data}: {len(train_loader.dataset)} training / "
            f"{len(val_loader.dataset)} validation images at {s.image_size} px, "
            f"{plan.num_classes} classes{shown}",
            f"parameters: {trainable:,} trainable of {total:,} (finetune {plan.finetune}); "
            f"batch {s.batch_size}, {len(train_loader)} steps per epoch",
            state,
        ]
    )


def _epoch_line(row: dict[str, Any], total: int) -> str:
    return (
        f"epoch {row['epoch']}/{total}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}  lr {row['lr']:.4g}  "
        f"{row['epoch_time_s']:.1f} s ({row['images_per_s']:.0f} img/s)"
    )
