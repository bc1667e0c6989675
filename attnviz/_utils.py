"""Small utilities that several layers need, written once.

* :func:`model_device` — where a model's floating-point parameters live, and their dtype;
* :func:`eval_mode` — put models in eval mode (and on a device) for a block of code, then
  give every module back its ``training`` flag and the models their devices;
* :func:`class_path` — ``"module:qualname"`` of a class or function, as files record it;
* :func:`unwrap_model` — the module inside ``torch.compile``, ``DataParallel`` and DDP wrappers.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["class_path", "eval_mode", "model_device", "unwrap_model"]


def model_device(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """``(device, dtype)`` of the model's first floating-point parameter or buffer.

    A model without any floating-point tensor is on the CPU in float32.
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    first = next((t for t in tensors if t.is_floating_point()), None)
    return (
        (first.device, first.dtype) if first is not None else (torch.device("cpu"), torch.float32)
    )


@contextlib.contextmanager
def eval_mode(
    models: nn.Module | Iterable[nn.Module], device: str | torch.device | None = None
) -> Iterator[None]:
    """Eval mode (and ``device``, if given) inside the block; flags and devices restored after."""
    models = [models] if isinstance(models, nn.Module) else list(models)
    flags = [{m: m.training for m in model.modules()} for model in models]
    devices = [model_device(model)[0] for model in models]
    try:
        for model in models:
            model.eval()
            if device is not None:
                model.to(device)
        yield
    finally:
        for model, saved, dev in zip(models, flags, devices):
            if device is not None:
                model.to(dev)
            for m, flag in saved.items():
                m.training = flag


def unwrap_model(model: nn.Module, what: str) -> nn.Module:
    """The module a ``torch.compile`` / ``DataParallel`` / ``DistributedDataParallel`` wrapper holds.

    attnviz rewrites a model's own forward; a wrapper's forward is not the model's. The
    wrapped module is used instead, with a warning saying to wrap the result again.
    """
    import warnings

    seen = []
    while True:
        if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            seen.append("torch.compile")
            model = model._orig_mod
        elif isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            seen.append(type(model).__name__)
            model = model.module
        else:
            break
    if seen:
        warnings.warn(
            f"{what}: using the module inside {' and '.join(seen)}; wrap the result again "
            "(torch.compile / DDP) after attnviz has rewritten it",
            stacklevel=3,
        )
    return model


def class_path(obj: Any) -> str:
    """``"module:qualname"`` of a class or function (how specs and run records name it)."""
    return f"{obj.__module__}:{obj.__qualname__}"
