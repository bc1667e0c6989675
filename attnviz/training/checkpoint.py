"""Per-epoch checkpoints that a kill at any moment cannot corrupt, and resuming from them.

Layout of ``out/checkpoints/`` after epoch 7::

    epoch-0007.safetensors      model weights, attnviz.save (attnviz.load reads them)
    epoch-0007.json             its surgery spec, readable copy (written by attnviz.save)
    epoch-0007.optim.safetensors  optimizer state tensors, flattened (state.<i>.<name>)
    epoch-0007.state.json       the rest: epoch, global step, scheduler and grad-scaler
                                state, optimizer param groups, RNG states (python,
                                numpy, torch CPU and CUDA), metrics so far, settings,
                                recipe, surgery spec, and the sha256 of both tensor files
    latest.json                 {"epoch": 7, "state": "epoch-0007.state.json"}

Each file is written to a temporary name and moved into place with
``os.replace`` (atomic on POSIX), in the order weights, optimizer, state,
pointer: a state file exists only once its tensor files are complete, and
``latest.json`` moves only once the whole checkpoint is. Older checkpoints are
pruned after the pointer moves (``keep`` newest are kept).

:func:`find_checkpoint` starts at the pointer (or, when the pointer is missing or
unreadable, at the newest state file) and walks back until a checkpoint passes
every check: the JSON parses, both tensor files exist, their checksums match and
they parse as safetensors. Each rejected file is named in a warning.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_write, atomic_write_bytes, atomic_write_json
from ..errors import AttnvizError, FileFormatError
from ..fileformats import contained, read_json
from .jsonify import mismatch

__all__ = [
    "Checkpoint",
    "atomic_write_bytes",
    "atomic_write_json",
    "capture_rng",
    "find_checkpoint",
    "flatten_optimizer",
    "load_optimizer",
    "restore_rng",
    "save_checkpoint",
]

FORMAT = 1
POINTER = "latest.json"
_STATE_RX = re.compile(r"^epoch-(\d+)\.state\.json$")


def _stem(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- optimizer state as tensors + JSON --------------------------------------------------------
def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)``: state tensors as ``state.<index>.<name>``; the rest as JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of :func:`flatten_optimizer`; state tensors take their parameter's memory format."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    current = opt.state_dict()["param_groups"]
    problem = mismatch(current, meta["param_groups"], "param_groups")
    if problem:
        raise ValueError(f"optimizer state: {problem}")
    for index, values in meta.get("scalars", {}).items():
        if not isinstance(values, dict) or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()
        ):
            raise ValueError(f"optimizer state: the scalars of parameter {index} must be numbers")
        state.setdefault(int(index), {}).update(values)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in params:
        st = opt.state.get(p, {})
        for name, value in st.items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape and value.dim() == 4:
                st[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


# -- RNG states ------------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def capture_rng() -> dict[str, Any]:
    """The global RNG states of python, numpy, torch CPU and every CUDA device, as JSON."""
    py = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": _b64(torch.get_rng_state()),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(_unb64(state["torch"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])


# -- save ------------------------------------------------------------------------------------
def save_checkpoint(
    directory: str | os.PathLike[str],
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    *,
    keep: int = 3,
) -> Path:
    """Write epoch ``epoch``'s checkpoint (see the module docs); return the state file.

    ``state``: JSON-able training state (global step, scheduler, metrics, ...);
    the optimizer's param groups, the RNG states and the files' checksums are
    added here.
    """
    from safetensors.torch import save_file

    from ..serialization import save

    directory = Path(directory)
    stem = _stem(epoch)
    weights = save(model, directory / f"{stem}.safetensors", extra={"epoch": epoch})
    tensors, meta = flatten_optimizer(optimizer)
    optim = atomic_write(
        directory / f"{stem}.optim.safetensors",
        lambda tmp: save_file(tensors, tmp, metadata={"format": str(FORMAT)}),
    )
    full = {
        **state,
        "format": FORMAT,
        "epoch": epoch,
        "optimizer": meta,
        "rng": capture_rng(),
        "files": {
            "weights": {"name": weights.name, "sha256": sha256(weights)},
            "optimizer": {"name": optim.name, "sha256": sha256(optim)},
        },
    }
    state_path = atomic_write_json(directory / f"{stem}.state.json", full)
    atomic_write_json(directory / POINTER, {"epoch": epoch, "state": state_path.name})
    _prune(directory, keep)
    return state_path


def _epochs(directory: Path) -> list[int]:
    found = []
    for p in directory.glob("epoch-*.state.json"):
        m = _STATE_RX.match(p.name)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


def _prune(directory: Path, keep: int) -> None:
    for epoch in _epochs(directory)[:-keep]:
        stem = _stem(epoch)
        for suffix in (".state.json", ".optim.safetensors", ".safetensors", ".json"):
            (directory / f"{stem}{suffix}").unlink(missing_ok=True)


def remove_checkpoints(directory: str | os.PathLike[str]) -> None:
    """Delete every checkpoint file this module writes in ``directory`` (a fresh start)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for p in directory.iterdir():
        if p.name == POINTER or re.match(r"^\.?epoch-\d+\.", p.name):
            p.unlink(missing_ok=True)


# -- find and load ----------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A verified checkpoint: its epoch, files and JSON state."""

    epoch: int
    weights: Path
    optimizer: Path
    state: dict[str, Any]

    def load_weights(self, model: nn.Module) -> None:
        """Load the weights into ``model`` (strict; same architecture as when saved)."""
        from safetensors.torch import load_file

        sd = load_file(str(self.weights))
        current = model.state_dict()
        missing = sorted(set(current) - set(sd))
        unexpected = sorted(set(sd) - set(current))
        if missing or unexpected:
            raise AttnvizError(
                f"{self.weights} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        with torch.no_grad():
            for k, v in current.items():
                v.copy_(sd[k])

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        from safetensors.torch import load_file

        load_optimizer(optimizer, load_file(str(self.optimizer)), self.state["optimizer"])


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
            f.get_slice(key)


def _verify(directory: Path, epoch: int) -> Checkpoint:
    """The checkpoint of ``epoch`` if every file passes its checks, else ``ValueError`` naming the file."""
    state_path = directory / f"{_stem(epoch)}.state.json"
    state = read_json(state_path, "checkpoint state")
    if state["epoch"] != epoch:
        raise FileFormatError(f"{state_path}: holds epoch {state['epoch']}, not {epoch}")
    paths = {}
    for role in ("weights", "optimizer"):
        entry = state["files"][role]
        path = contained(directory, entry["name"], source=state_path)
        if not path.is_file():
            raise AttnvizError(f"{path}: missing")
        if sha256(path) != entry["sha256"]:
            raise AttnvizError(f"{path}: checksum mismatch (truncated or modified)")
        try:
            _check_safetensors(path)
        except Exception as exc:
            raise AttnvizError(f"{path}: not a valid safetensors file ({exc})") from exc
        paths[role] = path
    return Checkpoint(epoch, paths["weights"], paths["optimizer"], state)


def find_checkpoint(
    directory: str | os.PathLike[str], *, warn: bool = True
) -> tuple[Checkpoint | None, list[str]]:
    """The newest good checkpoint in ``directory`` (or None) and the problems met on the way.

    Problems (a corrupted pointer, a truncated or unparsable file) are also
    issued as warnings naming the file when ``warn``.
    """
    directory = Path(directory)
    problems: list[str] = []
    if not directory.is_dir():
        return None, problems
    epochs = _epochs(directory)
    pointer = directory / POINTER
    if pointer.exists():
        try:
            target = read_json(pointer, "checkpoint pointer")
            top = target["epoch"]
            if "state" in target:  # the pointer names a file: it must be this epoch's, in here
                contained(directory, target["state"], source=pointer)
            epochs = [e for e in epochs if e <= top]
        except (ValueError, OSError) as exc:
            problems.append(f"{pointer}: unusable pointer ({exc}); scanning the state files")
    elif epochs:
        problems.append(f"{pointer}: missing; scanning the state files")
    found = None
    for epoch in reversed(epochs):
        try:
            found = _verify(directory, epoch)
            break
        except (ValueError, OSError) as exc:
            problems.append(f"skipping the checkpoint of epoch {epoch}: {exc}")
    if warn:
        for msg in problems:
            tail = "" if found is None else f" (resuming from epoch {found.epoch})"
            warnings.warn(f"checkpoint: {msg}{tail}", stacklevel=2)
    return found, problems
