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

Placements (:mod:`.placements`): ``after`` (above), ``parallel`` (a branch
beside a module call, added through a scale at 0) and ``replace`` (the module
swapped for the block); one ``placement=`` argument, not three functions.

The package: ``spec`` (the recorded surgery and its accessors) ← ``sites``
(``where=`` to sites) and ``placements`` (the parallel branch, replacing and
restoring modules) ← ``rewrite`` (owner rewriting) and ``build`` (blocks from
kwargs, through the trust boundary) ← this module (the public API).
"""

from __future__ import annotations

import copy
import warnings
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
from .placements import (
    PLACEMENTS,
    ReplacedWeightsWarning,
    replace_modules,
    restore_replaced,
)
from .rewrite import apply_sites, restore_owner
from .sites import WHERE_KEYWORDS, Where, plan_module_sites, plan_sites, stage_sites
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
    "PLACEMENTS",
    "WHERE_KEYWORDS",
    "ReplacedWeightsWarning",
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
    spec = spec_of(model)
    removed = [k for s in spec.replaced_sites() for k in s.replaced] if spec is not None else []
    return zoo.recognize_base(
        model,
        cheap=cheap,
        ignore_keys=attention_keys(model),
        cls=base_class(model),
        removed_keys=removed,
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
    placement: str = "after",
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

    ``placement`` (:mod:`attnviz.surgery.placements`): ``"after"`` the site
    (the default); ``"parallel"``: ``where`` selects modules ``y = m(x)`` and
    each becomes ``y + scale * block(x)`` with ``scale`` at exactly 0 (the
    model is unchanged until trained, every key kept); ``"replace"``: each
    selected module is swapped for a block of the same input/output shape and
    stride (``bottleneck``, ``halo``, ``lambda``, ``sk``, ``splat``), its
    weights leave the model with a :class:`ReplacedWeightsWarning` listing
    them, and :func:`remove_attention` puts it back. Every block gets its
    site's map size as ``feat_size``; parallel and replacing blocks also the
    module's output channels and stride.

    >>> import torchvision
    >>> m = insert_attention(torchvision.models.resnet50(), "se", where="residual")
    >>> sum(p.numel() for p in m.parameters())
    28088024
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     bot = insert_attention(torchvision.models.resnet50(), "bottleneck",
    ...                            where="layer4.*.conv2", placement="replace")
    >>> type(bot.layer4[0].conv2).__name__, caught[0].category.__name__
    ('BottleneckAttn', 'ReplacedWeightsWarning')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = unwrap_model(model, "insert_attention")
    info = attention_info(attention)
    if init not in INITS:
        raise unknown_name_error("init", init, list(INITS))
    if placement not in PLACEMENTS:
        raise unknown_name_error("placement", placement, list(PLACEMENTS))
    new = copy.deepcopy(model)
    old = spec_of(model)
    spec = old.copy() if old is not None else SurgerySpec(base=base_reference(model, cheap=True))
    plan = plan_capture(new)
    x = example_input if example_input is not None else default_example_input(new)
    shapes = value_shapes(plan, x)
    if placement == "after":
        sites = plan_sites(new, plan, shapes, where)
    else:
        taken = list(attention_modules(new))
        sites = plan_module_sites(new, plan, shapes, where, placement, x, taken)
    device, dtype = model_device(new)
    blocks, safe = build_blocks(info.name, sites, init, block_kwargs, device, dtype, placement)
    for block in blocks.values():
        block.train(new.training)
    if placement == "replace":
        replace_modules(new, sites, blocks)
        placed = sites
    else:
        placed = apply_sites(new, sites, blocks, safe, plan, placement)
    spec.insertions.append(
        Insertion(
            attention=info.name,
            init=init,
            kwargs=encode(block_kwargs),
            where=encode_where(where),
            example_input_shape=list(x.shape) if isinstance(x, torch.Tensor) else None,
            sites=placed,
            placement=placement,
        )
    )
    set_spec(new, spec)
    return new


def _check_shape(source: str, s: Site, what: str, shape: tuple[int, ...]) -> None:
    if len(shape) != 4:
        raise SurgeryError(f"{source}: site {s.site!r}: {what} {list(shape)} is not [B, C, H, W]")
    if shape[1] * shape[2] * shape[3] > MAX_SITE_ELEMENTS:
        raise SurgeryError(f"{source}: site {s.site!r}: a feature map of {list(shape)} is absurd")


def _check_sites(model: nn.Module, insertion: Insertion, source: str) -> None:
    """Every name and shape of a recorded site must fit the rebuilt model before any code is generated."""
    placement = insertion.placement
    taken = set(attention_modules(model)) if placement == "replace" else set()
    for s in insertion.sites:
        try:
            owner = model.get_submodule(s.owner) if s.owner else model
        except AttributeError:
            raise SurgeryError(
                f"{source}: site {s.site!r}: the model has no module {s.owner!r} to own the block"
            ) from None
        if placement == "replace":
            if not isinstance(owner._modules.get(s.attr), nn.Module) or s.path in taken:
                raise SurgeryError(
                    f"{source}: site {s.site!r}: {s.owner or 'the model'} has no module "
                    f"{s.attr!r} of the base model to replace"
                )
            if any(not k.startswith(f"{s.path}.") for k in s.replaced):
                raise SurgeryError(
                    f"{source}: site {s.site!r}: the replaced keys must lie under {s.path!r}"
                )
        elif hasattr(owner, s.attr):
            raise SurgeryError(
                f"{source}: site {s.site!r}: {s.owner or 'the model'} already has an attribute "
                f"{s.attr!r}; a block cannot replace it"
            )
        if placement == "after":
            if s.in_shape or s.replaced:
                raise SurgeryError(
                    f"{source}: site {s.site!r}: an 'after' site has no input shape or replaced keys"
                )
            if s.shape and (len(s.shape) != 4 or s.shape[1] != s.channels):
                raise SurgeryError(
                    f"{source}: site {s.site!r}: shape {list(s.shape)} does not fit {s.channels} channels"
                )
            if s.shape:
                _check_shape(source, s, "shape", s.shape)
            continue
        _check_shape(source, s, "input shape", s.in_shape)
        _check_shape(source, s, "shape", s.shape)
        (ci, hi, wi), (ho, wo) = s.in_shape[1:], s.shape[2:]
        if ci != s.channels or not (ho and wo and hi % ho == 0 and wi % wo == 0):
            raise SurgeryError(
                f"{source}: site {s.site!r}: input {list(s.in_shape)} and output {list(s.shape)} "
                f"do not fit {s.channels} channels and an integer stride"
            )
        if hi // ho != wi // wo:
            raise SurgeryError(
                f"{source}: site {s.site!r}: the map shrinks by {hi // ho} and {wi // wo}: not one stride"
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
    :mod:`attnviz.trust`). A ``replace`` insertion takes its modules (and their
    weights) out of ``model``'s copy, with a :class:`ReplacedWeightsWarning`.
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
            blocks, safe = build_blocks(
                ins.attention, sites, ins.init, kwargs, device, dtype, ins.placement
            )
        except AttnvizError:
            raise
        except Exception as exc:  # the block's own constructor refused the recorded kwargs
            raise SurgeryError(
                f"{source}: cannot build {ins.attention!r} blocks with the recorded kwargs "
                f"{ins.kwargs} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None
        for block in blocks.values():
            block.train(new.training)
        if ins.placement == "replace":
            replace_modules(new, sites, blocks)
        else:
            apply_sites(new, sites, blocks, safe, None, ins.placement)
        recorded.insertions.append(copy.deepcopy(ins))
    if spec.base is not None:
        recorded.base = copy.deepcopy(spec.base)
    recorded.extra = copy.deepcopy(spec.extra)
    set_spec(new, recorded)
    return new


def remove_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without its attention blocks: the original function and keys.

    The base weights are the model's current ones (trained or not); a module
    that a ``replace`` took out comes back with the weights it had then. After
    :func:`attnviz.load` those are its builder's initialisation (the file holds
    the model's own weights only): a :class:`ReplacedWeightsWarning` says so,
    unless :func:`attnviz.load_base_weights` filled them from the base file.
    """
    spec = spec_of(model)
    if spec is None or not spec.insertions:
        raise SurgeryError(f"{type(model).__name__} has no attention surgery to remove")
    new = copy.deepcopy(model)
    initialised = []
    for ins in reversed(spec.insertions):  # later insertions may sit inside earlier blocks
        if ins.placement == "replace":
            for s in ins.sites:
                if restore_replaced(new, s) == "initialised":
                    initialised.append(s.path)
            continue
        by_owner: dict[str, list[str]] = {}
        for s in ins.sites:
            by_owner.setdefault(s.owner, []).append(s.attr)
        for path, attrs in by_owner.items():
            restore_owner(new.get_submodule(path) if path else new, attrs)
    set_spec(new, None)
    if initialised:
        warnings.warn(
            f"the replaced module(s) {initialised[:6]}{' ...' if len(initialised) > 6 else ''} "
            "come back as the base model's builder initialises them: the model was loaded from "
            "a file, which holds the model's own weights only; load_base_weights(model, base_file) "
            "before remove_attention gives them their base weights",
            ReplacedWeightsWarning,
            stacklevel=2,
        )
    return new
