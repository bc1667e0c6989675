"""Model surgery: insert attention blocks into a CNN, keeping its class, methods and weights.

>>> import torch, torchvision
>>> from attnviz import insert_attention, remove_attention
>>> base = torchvision.models.resnet18().eval()
>>> se = insert_attention(base, "se", where="residual", init="identity").eval()
>>> x = torch.randn(1, 3, 64, 64)
>>> bool(torch.equal(se(x), base(x))), type(se).__name__, hasattr(se.layer1[0], "attn")
(True, 'ResNet', True)
>>> bool(torch.equal(remove_attention(se)(x), base(x)))
True

How it works. The model is deep-copied, then traced once (torch.fx) to find
the sites and, by running an example input, their channel counts
(:mod:`.sites`). Each site is a value inside the forward of one *owner*
module: the smallest module whose own forward produces it (``layer1.0`` for
``layer1.0.bn3``; the model itself for the output of ``layer1``). Only owners
are rewritten (:mod:`.rewrite`): the owner is traced alone, a call of the
block is added after the site, and the owner's class is swapped for a
subclass of itself whose ``forward`` is the generated code. Every other
module, every original ``state_dict`` key, and the model's class and methods
stay as they were; blocks are new children of their owner
(``layer1.0.attn``). The surgery is recorded as plain data (:mod:`.spec`),
which :func:`apply_surgery` replays on a fresh base model and
:func:`remove_attention` undoes.

The package: ``spec`` (the recorded surgery and its accessors) ← ``sites``
(``where=`` to sites) ← ``rewrite`` (owner rewriting) and ``build`` (blocks
from kwargs, through the trust boundary) ← this module (the public API).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .. import zoo
from .._capture import default_example_input, plan_capture
from .._select import unknown_name_error
from .._utils import model_device, unwrap_model
from ..blocks import INITS, attention_info
from ..errors import AttnvizError, SurgeryError
from ..intermediates import ExampleInput, value_shapes
from .build import build_blocks, check_registered, decode, encode, encode_where
from .rewrite import apply_sites, restore_owner
from .sites import WHERE_KEYWORDS, Where, plan_sites, stage_sites
from .spec import (
    Insertion,
    Site,
    SurgerySpec,
    attention_keys,
    attention_modules,
    base_class,
    set_spec,
    spec_of,
)

__all__ = [
    "WHERE_KEYWORDS",
    "Site",
    "SurgeryError",
    "SurgerySpec",
    "apply_surgery",
    "attention_keys",
    "attention_modules",
    "base_reference",
    "insert_attention",
    "remove_attention",
    "stage_sites",
    "surgery_spec",
]

#: No sane feature map holds more values than this per image (C x H x W); a spec that says
#: otherwise would make the block probe allocate it.
MAX_SITE_ELEMENTS = 1 << 28


def base_reference(model: nn.Module, *, cheap: bool = False) -> dict[str, Any] | None:
    """``{"ref": ..., "kwargs": ...}`` that rebuilds ``model``'s base architecture, or None.

    Models from :func:`attnviz.create_model` carry it; timm models are
    recognised from their config; torchvision models by finding the builder of
    their module whose parameters match in name and shape; other classes if
    calling them with no arguments gives the same parameters. Attention blocks
    of a modified model are ignored. ``cheap=True`` only reads a recorded reference.
    """
    return zoo.recognize_base(
        model, cheap=cheap, ignore_keys=attention_keys(model), cls=base_class(model)
    )


def surgery_spec(model: nn.Module) -> dict[str, Any]:
    """The model's surgery as plain JSON: base model reference, blocks, sites and kwargs.

    A model without surgery gives a spec with no insertions.
    """
    spec = spec_of(model)
    if spec is None:
        spec = SurgerySpec(base=base_reference(model))
    elif spec.base is None:
        spec = spec.copy()
        spec.base = base_reference(model)
    return spec.to_json()


def insert_attention(
    model: nn.Module,
    attention: str,
    where: Where = "residual",
    *,
    example_input: ExampleInput | None = None,
    init: str = "default",
    **block_kwargs: Any,
) -> nn.Module:
    """Return a copy of ``model`` with ``attention`` blocks inserted; ``model`` is untouched.

    ``where``: ``"residual"`` (on each residual branch, just before the add:
    the SE-ResNet / CBAM placement), ``"stages"`` (after the last feature map
    of each spatial resolution, or timm's ``feature_info``), or selectors: a
    module-name glob (dot-aware: ``"features.*"``, ``"layer*.?.bn3"``), a
    value name (``"layer1.0.add"``), a module class (``nn.Conv2d``), or a
    list of those; a module called several times gets a block after each
    call. ``init="identity"`` makes the new model compute exactly what
    ``model`` did until trained. Channel counts come from running
    ``example_input`` (default: sized from the model's config) once: a tensor,
    a tuple of positional arguments or a dict of keyword arguments for models
    with several inputs. A ``torch.compile`` / ``DataParallel`` / DDP wrapper is
    unwrapped (with a warning): wrap the result again.

    >>> import torchvision
    >>> m = insert_attention(torchvision.models.resnet50(), "se", where="residual")
    >>> sum(p.numel() for p in m.parameters())
    28088024
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = unwrap_model(model, "insert_attention")
    info = attention_info(attention)
    if init not in INITS:
        raise unknown_name_error("init", init, list(INITS))
    new = copy.deepcopy(model)
    old = spec_of(model)
    spec = old.copy() if old is not None else SurgerySpec(base=base_reference(model, cheap=True))
    plan = plan_capture(new)
    x = example_input if example_input is not None else default_example_input(new)
    shapes = value_shapes(plan, x)
    sites = plan_sites(new, plan, shapes, where)
    device, dtype = model_device(new)
    blocks, safe = build_blocks(info.name, sites, init, block_kwargs, device, dtype)
    for block in blocks.values():
        block.train(new.training)
    placed = apply_sites(new, sites, blocks, safe, plan)
    spec.insertions.append(
        Insertion(
            attention=info.name,
            init=init,
            kwargs=encode(block_kwargs),
            where=encode_where(where),
            example_input_shape=list(x.shape) if isinstance(x, torch.Tensor) else None,
            sites=placed,
        )
    )
    set_spec(new, spec)
    return new


def _check_sites(model: nn.Module, insertion: Insertion, source: str) -> None:
    """Every name of a recorded site must fit the rebuilt model before any code is generated."""
    for s in insertion.sites:
        try:
            owner = model.get_submodule(s.owner) if s.owner else model
        except AttributeError:
            raise SurgeryError(
                f"{source}: site {s.site!r}: the model has no module {s.owner!r} to own the block"
            ) from None
        if hasattr(owner, s.attr):
            raise SurgeryError(
                f"{source}: site {s.site!r}: {s.owner or 'the model'} already has an attribute "
                f"{s.attr!r}; a block cannot replace it"
            )
        if s.shape and (len(s.shape) != 4 or s.shape[1] != s.channels):
            raise SurgeryError(
                f"{source}: site {s.site!r}: shape {list(s.shape)} does not fit {s.channels} channels"
            )
        if s.shape and s.shape[1] * s.shape[2] * s.shape[3] > MAX_SITE_ELEMENTS:
            raise SurgeryError(
                f"{source}: site {s.site!r}: a feature map of {list(s.shape)} is absurd"
            )


def apply_surgery(
    model: nn.Module,
    spec: dict[str, Any] | SurgerySpec,
    *,
    source: str = "<spec>",
    trust_code: bool = False,
) -> nn.Module:
    """Replay a recorded surgery on a fresh base model (a copy; ``model`` is untouched).

    No example input is needed: sites and channel counts come from the spec. A
    spec given as JSON (read from ``source``) is validated first; its block
    kwargs may name only allowlisted classes unless ``trust_code=True`` (see
    :mod:`attnviz.trust`).
    """
    if not isinstance(spec, SurgerySpec):
        spec = SurgerySpec.from_json(spec, source=source)
    new = copy.deepcopy(model)
    device, dtype = model_device(new)
    old = spec_of(new)
    recorded = old.copy() if old is not None else SurgerySpec(base=base_reference(new, cheap=True))
    for ins in spec.insertions:
        check_registered(ins.attention, source)
        _check_sites(new, ins, source)
        kwargs = decode(ins.kwargs, source=source, trust_code=trust_code)
        sites = [copy.copy(s) for s in ins.sites]
        try:
            blocks, safe = build_blocks(ins.attention, sites, ins.init, kwargs, device, dtype)
        except AttnvizError:
            raise
        except Exception as exc:  # the block's own constructor refused the recorded kwargs
            raise SurgeryError(
                f"{source}: cannot build {ins.attention!r} blocks with the recorded kwargs "
                f"{ins.kwargs} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None
        for block in blocks.values():
            block.train(new.training)
        apply_sites(new, sites, blocks, safe, None)
        recorded.insertions.append(copy.deepcopy(ins))
    if spec.base is not None:
        recorded.base = copy.deepcopy(spec.base)
    recorded.extra = copy.deepcopy(spec.extra)
    set_spec(new, recorded)
    return new


def remove_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without its attention blocks: the original function and keys.

    The base weights are the model's current ones (trained or not).
    """
    spec = spec_of(model)
    if spec is None or not spec.insertions:
        raise SurgeryError(f"{type(model).__name__} has no attention surgery to remove")
    new = copy.deepcopy(model)
    by_owner: dict[str, list[str]] = {}
    for ins in reversed(spec.insertions):
        for s in ins.sites:
            by_owner.setdefault(s.owner, []).append(s.attr)
    for path, attrs in by_owner.items():
        restore_owner(new.get_submodule(path) if path else new, attrs)
    set_spec(new, None)
    return new
