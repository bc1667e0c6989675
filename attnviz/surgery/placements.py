"""Placements: how a block meets its site. ``after`` (the default), ``parallel``, ``replace``.

* ``after``: the block reads the site's value and its output takes the
  value's place (SE-ResNet, CBAM). Owners are rewritten (:mod:`.rewrite`).
* ``parallel``: the site is a module call ``y = m(x)``; it becomes
  ``y + scale * block(x)`` (:class:`ParallelBranch`) with ``scale`` a learnable
  scalar at exactly 0. The model computes exactly what it did until trained,
  whatever the block's own init, and every original key is kept: the
  pretrained-friendly form of attention-augmented convolution (Bello et al.,
  2019), added instead of concatenated. The block maps the site's input to its
  output shape (a block that changes channels or stride must be one that
  ``replaces``). While ``scale`` is 0 only ``scale`` gets a gradient (ReZero).
* ``replace``: the site module is swapped for a block of the same input and
  output shape and stride (BoTNet, SKNet). Its weights leave the model's
  ``state_dict`` (a :class:`ReplacedWeightsWarning` lists the keys); the
  module itself is kept aside on the block, outside the ``state_dict`` and
  outside ``.to()``, for :func:`~attnviz.remove_attention` to put back, with
  the device and dtype of the block.

Why one entry point (``insert_attention(..., placement=...)``) rather than
three functions: the three share site selection, the example-input run, the
block registry, the spec, ``save``/``load`` and ``remove_attention``; only the
last step differs, and a recipe or a grid cell is then one more key, not
another function to dispatch on.

After ``save`` / ``load`` a replaced module comes back as the base model's
builder initialises it (``save`` writes the model's own weights, which no
longer hold it); ``load_base_weights(model, base_file)`` fills it from the base
file, after which ``remove_attention`` restores the base exactly again.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SurgeryError
from .spec import Site

__all__ = [
    "PLACEMENTS",
    "ParallelBranch",
    "ReplacedWeightsWarning",
    "kept_module",
    "mark_initialised",
    "replace_modules",
    "restore_replaced",
]

PLACEMENTS = ("after", "parallel", "replace")

#: The attribute of a replacing block that holds what it replaced (a plain attribute, so the
#: module is in neither the ``state_dict`` nor ``named_modules()``).
_KEPT_ATTR = "_attnviz_replaced"


class ReplacedWeightsWarning(UserWarning):
    """Weights of the base model that a ``replace`` placement took out of the model."""


class ParallelBranch(nn.Module):
    """``y + scale * block(x)`` for a site ``y = m(x)``; ``scale`` starts at exactly 0."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y + self.scale * self.block(x)


@dataclass
class Kept:
    """A replaced module and where its weights come from (``base`` or ``initialised``)."""

    module: nn.Module
    origin: str = "base"


def kept_module(block: nn.Module) -> Kept | None:
    """What ``block`` replaced, or None."""
    kept = block.__dict__.get(_KEPT_ATTR)
    return kept if isinstance(kept, Kept) else None


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def replace_modules(model: nn.Module, sites: list[Site], blocks: dict[int, nn.Module]) -> None:
    """Swap each site's module for its block, keep the module aside, record the keys removed.

    Sets ``site.replaced`` and warns once, listing every removed key.
    """
    before = set(model.state_dict())
    for i, s in enumerate(sites):
        parent = model.get_submodule(s.owner) if s.owner else model
        old = getattr(parent, s.attr)
        block = blocks[i]
        block.__dict__[_KEPT_ATTR] = Kept(old)
        setattr(parent, s.attr, block)
    gone = sorted(before - set(model.state_dict()))
    for s in sites:
        s.replaced = tuple(k for k in gone if k.startswith(f"{s.path}."))
    if gone:
        warnings.warn(
            f"placement='replace' took {len(gone)} tensor(s) of the base model out of the model "
            f"({len(sites)} module(s) replaced): {_describe(gone)}; remove_attention(model) "
            "puts the modules back",
            ReplacedWeightsWarning,
            stacklevel=3,
        )


def restore_replaced(model: nn.Module, site: Site) -> str:
    """Put the module ``site``'s block replaced back in its place; returns its weights' origin."""
    parent = model.get_submodule(site.owner) if site.owner else model
    block = getattr(parent, site.attr)
    kept = kept_module(block)
    if kept is None:
        raise SurgeryError(
            f"{site.path} should be a block that replaced a module, but holds no replaced module "
            f"({type(block).__name__}); was it changed after the surgery?"
        )
    old = kept.module
    tensor = next(iter(block.parameters()), None)
    tensor = tensor if tensor is not None else next(iter(block.buffers()), None)
    if tensor is not None:
        old = old.to(device=tensor.device)
        if tensor.is_floating_point():
            old = old.to(dtype=tensor.dtype)
    old.train(block.training)
    setattr(parent, site.attr, old)
    return kept.origin


def mark_initialised(model: nn.Module, sites: list[Site]) -> None:
    """Record that the kept modules hold their builder's initialisation, not the base's weights."""
    for s in sites:
        kept = kept_module(model.get_submodule(s.path))
        if kept is not None:
            kept.origin = "initialised"
