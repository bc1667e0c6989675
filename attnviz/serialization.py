"""Save and load modified models: safetensors weights plus the JSON surgery spec.

``save(model, "m.safetensors")`` writes the weights with the spec in the
file's metadata (and a readable copy beside it, ``m.json``); ``load`` builds
the base model from the spec's reference, replays the surgery, and loads
the weights strictly. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._atomic import atomic_write, atomic_write_json
from .surgery import apply_surgery, surgery_spec

__all__ = ["load", "read_spec", "save"]

_META_KEY = "attnviz_spec"


def save(model: nn.Module, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights (safetensors) and surgery spec; returns the weights path.

    The write is atomic (temporary file, then rename): a crash never leaves
    a half-written file under ``path``. ``extra`` (JSON) is stored beside the spec.

    >>> import torchvision, tempfile, os
    >>> from attnviz import insert_attention, load
    >>> m = insert_attention(torchvision.models.resnet18(num_classes=10), "eca", where="stages")
    >>> p = save(m, os.path.join(tempfile.mkdtemp(), "eca.safetensors"))
    >>> type(load(p)).__name__
    'ResNet'
    """
    from safetensors.torch import save_model

    path = Path(path)
    if path.suffix != ".safetensors":
        path = (
            path.with_suffix(path.suffix + ".safetensors")
            if path.suffix
            else path.with_suffix(".safetensors")
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = surgery_spec(model)
    if extra is not None:
        spec["extra"] = json.loads(json.dumps(extra))
    text = json.dumps(spec)
    atomic_write(path, lambda tmp: save_model(model, tmp, metadata={_META_KEY: text}))
    atomic_write_json(path.with_suffix(".json"), spec, indent=2)
    return path


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The surgery spec stored in a file written by :func:`save`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ValueError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})"
        ) from exc
    if _META_KEY not in meta:
        raise ValueError(
            f"{path} has no attnviz spec in its metadata; was it written by attnviz.save?"
        )
    return json.loads(meta[_META_KEY])


def load(
    path: str | os.PathLike,
    *,
    base: nn.Module | Callable[[], nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a model saved by :func:`save` and load its weights (strictly).

    The base architecture comes from the spec's reference (``torchvision:``,
    ``timm:``, ``attnviz:`` or ``package.module:factory``); for models whose
    reference is unknown pass ``base`` (a module, copied, or a callable).
    """
    from safetensors.torch import load_model

    from .zoo import create_model

    spec = read_spec(path)
    if base is not None:
        model = base() if callable(base) and not isinstance(base, nn.Module) else base
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"base must be an nn.Module or a callable returning one, got {type(model).__name__}"
            )
    elif spec.get("base"):
        ref = spec["base"]
        model = create_model(ref["ref"], **ref.get("kwargs", {}))
    else:
        raise ValueError(
            f"{path}: the spec does not say how to build the base model (it was not made by "
            "attnviz.create_model and not recognised); pass base= (the module or a factory)"
        )
    model = apply_surgery(model, spec) if spec["insertions"] else model
    if base is not None and not spec["insertions"]:
        model = _copy(model)
    missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the rebuilt model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model.to(device)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)
