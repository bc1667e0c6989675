"""The trust boundary: what a *file* may make attnviz import, build or call.

A saved model, a run folder, a spec, a checkpoint or an ablation result is
data, whoever wrote it. From a file attnviz builds only

* base models named ``torchvision:NAME``, ``timm:NAME`` or ``attnviz:NAME``,
  with JSON keyword arguments that do not point at other files or downloads
  (:data:`FILE_KWARGS` are refused: weights come from the file itself);
* attention blocks by their registered names (checked where blocks are built);
* classes for ``where=`` and block keyword arguments from an allowlist:
  ``torch.nn`` modules, ``timm.layers`` activations and norms, ``attnviz``
  modules (``nn.Module`` subclasses), and ``torch.nn.functional`` functions.

Anything else is refused *before anything is imported*, with an
:class:`~attnviz.errors.UntrustedCodeError` naming the file, the reference and
the two ways on: pass ``base=`` (build the model yourself), or opt in with
``trust_code=True`` / ``--trust-code`` (Hugging Face's ``trust_remote_code``
convention). Recipes you write yourself (YAML) are code-like and keep naming
``package.module:factory``; a recipe *copied into* a checkpoint is file data.

This module imports only :mod:`attnviz.errors` (and ``importlib`` for what passes).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import FileFormatError, UntrustedCodeError

__all__ = [
    "FILE_KWARGS",
    "MODEL_SOURCES",
    "check_model_reference",
    "is_allowed_class_path",
    "resolve_callable",
]

#: Model sources a file may name.
MODEL_SOURCES = ("torchvision", "timm", "attnviz")

#: Base-model keyword arguments a file may not set: they load other files or download
#: (a timm ``pretrained_cfg_overlay`` file is read with ``torch.load``), and a saved
#: model's weights come from the saved file itself.
FILE_KWARGS = frozenset(
    {
        "pretrained",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "pretrained_strict",
        "checkpoint_path",
        "cache_dir",
        "weights",
        "weights_backbone",
        "pretrained_backbone",
        "progress",
    }
)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_RX = re.compile(rf"^{_IDENT}(\.{_IDENT})*$")
_MODEL_NAME_RX = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

#: Packages whose nn.Module classes (and, for torch.nn.functional, functions) a file may name.
_CLASS_PACKAGES = (
    "torch.nn",
    "timm.layers.activations",
    "timm.layers.activations_me",
    "timm.layers.norm",
    "timm.layers.norm_act",
    "attnviz",
)
_FUNCTION_PACKAGES = ("torch.nn.functional",)

_WAYS = (
    "pass base= (the model or a factory) to build the base yourself, or, if you trust "
    "whoever wrote the file, opt in with trust_code=True (command line: --trust-code)"
)


def _in_package(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def check_model_reference(
    ref: Any, kwargs: Any, *, source: str | os.PathLike[str], trust_code: bool = False
) -> None:
    """Refuse a base-model reference read from ``source`` unless it is allowlisted.

    Only the *form* is checked here (nothing is imported): the name's existence
    is checked by :func:`attnviz.zoo.resolve_factory`.
    """
    if not isinstance(ref, str) or ":" not in ref:
        raise FileFormatError(
            f"{source}: the base model reference must look like 'torchvision:resnet18', got {ref!r}"
        )
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise FileFormatError(f"{source}: the base model's kwargs must be a JSON object")
    prefix, _, name = ref.partition(":")
    if prefix in MODEL_SOURCES:
        if not _MODEL_NAME_RX.match(name):
            raise FileFormatError(f"{source}: {ref!r} is not a valid {prefix} model name")
        bad = sorted(set(kwargs) & FILE_KWARGS)
        if bad and not trust_code:
            raise UntrustedCodeError(
                f"{source}: the base model's kwargs set {bad}, which would load other files or "
                f"download; a saved model's weights come from the file itself. Nothing was built: "
                f"{_WAYS}"
            )
        return
    if trust_code:
        return
    raise UntrustedCodeError(
        f"{source}: the base model reference {ref!r} names code outside torchvision:, timm: and "
        f"attnviz:, and a file may not make attnviz import it; nothing was imported. {_WAYS}"
    )


def is_allowed_class_path(module: str) -> bool:
    """Whether ``module`` lies in a package whose classes a file may name (no import)."""
    return _in_package(module, _CLASS_PACKAGES) or _in_package(module, _FUNCTION_PACKAGES)


def resolve_callable(
    qualified: Any, *, source: str | os.PathLike[str], what: str, trust_code: bool = False
) -> Any:
    """The class or function ``"module:qualname"`` read from ``source``, if a file may name it.

    Allowed without ``trust_code``: ``nn.Module`` subclasses in ``torch.nn``,
    ``timm.layers`` activations/norms and ``attnviz``; functions in
    ``torch.nn.functional``. The module path is checked as text first, so a
    refused reference imports nothing.
    """
    if not isinstance(qualified, str) or qualified.count(":") != 1:
        raise FileFormatError(f"{source}: {what} must be 'module:qualname', got {qualified!r}")
    module, _, qual = qualified.partition(":")
    if not _MODULE_RX.match(module) or not _MODULE_RX.match(qual):
        raise FileFormatError(f"{source}: {what} {qualified!r} is not a Python name")
    if not trust_code and not is_allowed_class_path(module):
        raise UntrustedCodeError(
            f"{source}: {what} {qualified!r} is outside the allowlist (torch.nn modules, "
            f"timm.layers activations and norms, attnviz modules, torch.nn.functional); nothing "
            f"was imported. Opt in with trust_code=True (--trust-code) if you trust the file"
        )
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise FileFormatError(f"{source}: {what} {qualified!r} does not exist ({exc})") from None
    if trust_code:
        return obj
    from torch import nn

    is_module_class = isinstance(obj, type) and issubclass(obj, nn.Module)
    is_function = _in_package(module, _FUNCTION_PACKAGES) and callable(obj)
    if not (is_module_class or is_function):
        raise UntrustedCodeError(
            f"{source}: {what} {qualified!r} is not an nn.Module class (or a torch.nn.functional "
            "function); a file may name nothing else. Opt in with trust_code=True (--trust-code)"
        )
    return obj
