"""Small utilities that several layers need, written once.

* :func:`model_device` — where a model's floating-point parameters live, and their dtype;
* :func:`eval_mode` — put models in eval mode (and on a device) for a block of code, then
  give every module back its ``training`` flag and the models their devices;
* :func:`class_path` — ``"module:qualname"`` of a class or function, as files record it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["class_path", "eval_mode", "model_device"]


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


def class_path(obj: Any) -> str:
    """``"module:qualname"`` of a class or function (how specs and run records name it)."""
    return f"{obj.__module__}:{obj.__qualname__}"
