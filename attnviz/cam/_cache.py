"""The capturing wrapper of each model, built once and reused while the model lives.

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

from torch import Tensor, nn

from ..intermediates import IntermediateModel, with_intermediates

__all__ = ["capturing", "clear_cache"]

_MAX_PER_MODEL = 8

_Entry = tuple[tuple, IntermediateModel]
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, ...], _Entry]] = (
    weakref.WeakKeyDictionary()
)


def _tree(model: nn.Module) -> tuple:
    return tuple((name, id(m), type(m)) for name, m in model.named_modules(remove_duplicate=False))


def capturing(
    model: nn.Module, layers: list[str], example_input: Tensor | None = None
) -> IntermediateModel:
    """``with_intermediates(model, layers)``, reused across calls while ``model`` is unchanged.

    ``example_input`` is only run when ``layers`` holds globs (to resolve them).
    """
    key = tuple(layers)
    tree = _tree(model)
    try:
        entries = _CACHE.setdefault(model, {})
    except TypeError:  # a model class that is not hashable: no cache
        return with_intermediates(model, layers, example_input=example_input)
    hit = entries.get(key)
    if hit is not None and hit[0] == tree:
        return hit[1]
    wrapper = with_intermediates(copy.copy(model), layers, example_input=example_input)
    entries.pop(key, None)
    entries[key] = (tree, wrapper)
    while len(entries) > _MAX_PER_MODEL:
        entries.pop(next(iter(entries)))
    return wrapper


def clear_cache() -> None:
    """Forget every cached wrapper (they are also dropped with their models)."""
    _CACHE.clear()
