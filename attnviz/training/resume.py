"""What a run is, and whether a run folder holds it: the identity and the resume decision.

A run's **identity** is everything that changes what training computes: the
recipe's model part (base, kwargs, surgery; not its name, description or
``train:``), the settings that change results (not speed or logging), the
data spec, the seed and the fine-tuning mode. ``run.json`` and every
checkpoint store it; :func:`decide` compares it with the identity of the call:

- the same run, finished (``model.safetensors`` readable): ``"done"``;
- the same run, with a good checkpoint: ``"resume"`` from its epoch;
- nothing there, no good checkpoint, or ``resume=False``: ``"fresh"``;
- another run: :class:`~attnviz.errors.TrainError` naming what differs.

:func:`checkpoint_state` is what a checkpoint holds beyond tensors, and
:func:`restore` puts it back (the JSON is data: it only fills known states).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data import canonical_spec
from ..recipes import Recipe
from ..settings import TrainError, TrainSettings
from .checkpoint import Checkpoint, find_checkpoint, restore_rng
from .jsonify import as_json, json_subset, mismatch
from .runfolder import CHECKPOINTS, FINAL, RUN_FILE, read_run_record

if TYPE_CHECKING:
    from .distributed import DistContext
    from .loop import Trainer

__all__ = [
    "Decision",
    "checkpoint_state",
    "decide",
    "differences",
    "restore",
    "run_identity",
    "with_new_defaults",
]


def run_identity(
    recipe: Recipe, settings: TrainSettings, data: str, seed: int, finetune: str
) -> dict[str, Any]:
    """The identity of a run (see the module docs), as JSON reads it back from ``run.json``."""
    spec = {k: v for k, v in recipe.to_dict().items() if k not in ("name", "description", "train")}
    identity = {
        "recipe": spec,
        "settings": settings.result_dict(),
        "data": canonical_spec(data),
        "seed": seed,
        "finetune": finetune,
    }
    # Tuples become lists, classes their qualified names: the identity of a run then
    # compares equal to the one stored in its run.json.
    return as_json(identity, sort_keys=True)


def with_new_defaults(identity: Any) -> Any:
    """A stored identity with settings added since it was written filled in at their defaults.

    A setting that a newer attnviz adds (at a default that changes nothing) must
    not make runs written by an older one look like different runs.
    """
    if not isinstance(identity, dict) or not isinstance(identity.get("settings"), dict):
        return identity
    defaults = TrainSettings().result_dict()
    settings = {**{k: v for k, v in defaults.items() if k not in identity["settings"]}}
    return {**identity, "settings": {**settings, **identity["settings"]}}


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for each key that differs (descending one level into mappings)."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and prefix.count(".") < 1:
            out += differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


@dataclass
class Decision:
    """What to do with a run folder: ``action`` is ``"done"``, ``"resume"`` or ``"fresh"``.

    ``epoch``: the finished run's epochs, or the checkpoint to resume from;
    ``problems``: checkpoints skipped on the way (also issued as warnings).
    """

    action: str
    epoch: int | None = None
    problems: list[str] = field(default_factory=list)


def decide(out: Path, identity: dict[str, Any], *, resume: bool, warn: bool) -> Decision:
    """Whether ``out`` holds the run of ``identity`` finished, resumable, or nothing usable."""
    if not resume or not (out / RUN_FILE).exists():
        return Decision("fresh")
    try:
        run = read_run_record(out)
    except (ValueError, OSError) as exc:
        raise TrainError(f"{exc}; pass resume=False (--fresh) to start over") from None
    old = with_new_defaults(run["identity"])
    if old != identity:
        diff = "; ".join(differences(old, identity)[:6])
        raise TrainError(
            f"{out} holds a run of a different recipe or settings ({diff}); "
            "pass resume=False (--fresh) to replace it, or choose another out folder"
        )
    final = out / FINAL
    if run.get("finished") and final.is_file():
        try:
            from ..serialization import read_spec

            read_spec(final)
            return Decision("done", run.get("epochs"))
        except ValueError as exc:
            if warn:
                warnings.warn(f"{final}: {exc}; finishing from the checkpoints", stacklevel=3)
    ckpt, problems = find_checkpoint(out / CHECKPOINTS, warn=warn)
    if ckpt is None:
        return Decision("fresh", None, problems)
    return Decision("resume", ckpt.epoch, problems)


def checkpoint_state(
    *,
    epoch: int,
    trainer: Trainer,
    scheduler: Any,
    history: list[dict[str, Any]],
    settings: TrainSettings,
    identity: dict[str, Any],
    recipe: Recipe,
    model: nn.Module,
) -> dict[str, Any]:
    """The JSON state of epoch ``epoch``'s checkpoint (the checkpoint adds optimizer and RNG)."""
    from ..surgery import surgery_spec

    return {
        "global_step": epoch * trainer.steps_per_epoch,
        "scheduler": json_subset(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "metrics": {"epochs": history},
        "settings": settings.to_dict(),
        "identity": identity,
        "recipe": as_json(recipe.to_dict()),
        "surgery": surgery_spec(model),
    }


def restore(
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
    if stored is not None and with_new_defaults(stored) != identity:
        diff = "; ".join(differences(with_new_defaults(stored), identity)[:4])
        raise TrainError(
            f"{source}: the checkpoint belongs to another run ({diff}); pass resume=False "
            "(--fresh) to start over"
        )
    try:
        ckpt.load_weights(model)
        ckpt.load_optimizer(optimizer)
        saved = ckpt.state.get("scheduler")
        if scheduler is not None and saved:
            live = scheduler.state_dict()
            current = json_subset(live)  # what a checkpoint can hold of it
            known = {k: v for k, v in saved.items() if k in current}  # never new attributes
            problem = mismatch({k: current[k] for k in known}, known, "scheduler")
            if problem:
                raise ValueError(problem)
            scheduler.load_state_dict({**live, **known})
        if trainer.scaler.is_enabled() and ckpt.state.get("scaler"):
            trainer.scaler.load_state_dict(ckpt.state["scaler"])
        if ctx.is_main:
            restore_rng(ckpt.state["rng"])
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, OverflowError) as exc:
        raise TrainError(
            f"{source}: cannot restore the training state ({type(exc).__name__}: {exc}); pass "
            "resume=False (--fresh) to start over"
        ) from None
