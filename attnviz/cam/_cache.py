"""The capturing wrapper (and Ablation-CAM's tail) of each model, built once and reused while it lives.

Tracing a model (``with_intermediates``) costs about as much as a forward of a
ResNet-50 at batch 2 on a CPU (0.2 s), and far more than a GPU forward, so
:func:`compute_cam` in a loop over batches must not re-trace on every call.

The cache is keyed weakly by the model object: an entry disappears with its
model, and holds no tensors. The wrapper is built on a shallow copy of the
model (same submodules, parameters and buffers, another root object), so the
entry does not keep its own key alive. Each entry remembers the model's module
tree (names, objects, classes); a model whose tree changed since (a block
replaced, a module added) is traced again.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from .._tail import LayerTail, layer_tail
from ..intermediates import IntermediateModel, with_intermediates

__all__ = ["capturing", "clear_cache", "tail_of"]

_MAX_PER_MODEL = 8

_Entry = tuple[tuple, Any]
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, ...], _Entry]] = (
    weakref.WeakKeyDictionary()
)


def _tree(model: nn.Module) -> tuple:
    return tuple((name, id(m), type(m)) for name, m in model.named_modules(remove_duplicate=False))


def _cached(model: nn.Module, key: tuple[str, ...], build: Callable[[], Any]) -> Any:
    """``build()``, kept for ``model`` under ``key`` while its module tree is unchanged."""
    tree = _tree(model)
    try:
        entries = _CACHE.setdefault(model, {})
    except TypeError:  # a model class that is not hashable: no cache
        return build()
    hit = entries.get(key)
    if hit is not None and hit[0] == tree:
        return hit[1]
    value = build()
    entries.pop(key, None)
    entries[key] = (tree, value)
    while len(entries) > _MAX_PER_MODEL:
        entries.pop(next(iter(entries)))
    return value


def capturing(
    model: nn.Module, layers: list[str], example_input: Tensor | None = None
) -> IntermediateModel:
    """``with_intermediates(model, layers)``, reused across calls while ``model`` is unchanged.

    ``example_input`` is only run when ``layers`` holds globs (to resolve them).
    """
    return _cached(
        model,
        tuple(layers),
        lambda: with_intermediates(copy.copy(model), layers, example_input=example_input),
    )


def tail_of(model: nn.Module, layer: str) -> LayerTail:
    """:func:`attnviz._tail.layer_tail` of ``model`` at ``layer``, reused like the wrappers."""
    return _cached(model, ("tail:", layer), lambda: layer_tail(model, layer))


def clear_cache() -> None:
    """Forget every cached wrapper (they are also dropped with their models)."""
    _CACHE.clear()
