"""The mechanism of the block registry: ``attention_block(name, channels, **kw)``.

Every block takes the channel count as its first argument (timm's
convention). Blocks placed after or beside a layer map ``[B, C, H, W]`` to
the same shape; blocks that can *replace* a convolution (``replaces=True``)
also take ``out_channels`` and ``stride``. ``attention_block`` takes
``out_channels``, ``stride`` and ``feat_size`` for every block, translates them
to each factory's own argument names (``dim_out``...) in one place
(:attr:`AttentionInfo.site_args`), ignores ``feat_size`` where a block does not
use it, and refuses a channel or stride change a block cannot make.

``init="identity"`` makes a block compute exactly its input until trained:
each gate becomes ``1 + blend * (g - 1)`` with ``blend`` a learnable scalar
at 0, residual blocks zero their last layer (``init_identity()``), and a
user's block with neither is wrapped as ``x + blend * (block(x) - x)``.
Blocks that replace a convolution have no identity form and refuse it.

The built-in blocks are registered by :mod:`attnviz.blocks.catalog`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._select import unknown_name_error
from ..errors import AttnvizError
from .gate import Gate

__all__ = [
    "INITS",
    "KINDS",
    "SITE_ARGS",
    "AttentionInfo",
    "IdentityBlend",
    "attention_block",
    "attention_info",
    "list_attention",
    "register_attention",
]

INITS = ("default", "identity")
#: What a block attends over: ``conv`` marks attention-like convolutions (SK, split attention).
KINDS = ("channel", "spatial", "channel+spatial", "self-attention", "conv")
#: The arguments ``attention_block`` takes for every block, whatever the factory calls them.
SITE_ARGS = ("out_channels", "stride", "feat_size")


@dataclass(frozen=True)
class AttentionInfo:
    """A registered block: its factory and what it is.

    ``kind``: one of :data:`KINDS`. ``identity_exact``: ``init="identity"``
    computes exactly the input (False: the block refuses it). ``replaces``:
    it takes ``out_channels`` and ``stride``, so it can stand in for a
    convolution. ``values``: its attention values, as names relative to the
    block (``"gate"``, ``"channel.gate"``, ``"attention"``) that
    :func:`attnviz.list_intermediates` lists. ``site_args``: the factory's own
    names for :data:`SITE_ARGS` it accepts (``{"out_channels": "dim_out"}``).
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    reference: str = ""
    builtin: bool = False
    kind: str = "channel"
    identity_exact: bool = True
    replaces: bool = False
    values: tuple[str, ...] = ()
    site_args: Mapping[str, str] = field(default_factory=dict)


_REGISTRY: dict[str, AttentionInfo] = {}


def _signature_site_args(factory: Callable[..., nn.Module]) -> dict[str, str]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {a: a for a in SITE_ARGS if a in params}


def register_attention(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    description: str = "",
    reference: str = "",
    kind: str = "channel",
    values: Sequence[str] = (),
    overwrite: bool = False,
) -> Callable[..., nn.Module]:
    """Register ``factory(channels, **kw) -> nn.Module`` under ``name``.

    The block must map ``[B, C, H, W]`` to the same shape. For exact
    identity init, give it :class:`Gate` submodules or an ``init_identity()``
    method; otherwise ``init="identity"`` wraps it in :class:`IdentityBlend`.
    A factory with ``out_channels``, ``stride`` or ``feat_size`` parameters
    receives them from :func:`attention_block`; one with ``out_channels`` and
    ``stride`` is marked ``replaces``.

    >>> import torch.nn as nn
    >>> class Scale(nn.Module):
    ...     def __init__(self, channels): super().__init__(); self.w = nn.Parameter(torch.ones(channels, 1, 1))
    ...     def forward(self, x): return x * self.w
    >>> _ = register_attention("scale_doc", Scale)
    >>> attention_block("scale_doc", 8).w.shape
    torch.Size([8, 1, 1])
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise AttnvizError(f"attention name must be a Python identifier, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not overwrite:
        raise AttnvizError(
            f"attention {name!r} is already registered; pass overwrite=True to replace it"
        )
    if kind not in KINDS:
        raise unknown_name_error("attention kind", kind, list(KINDS))
    site = _signature_site_args(factory)
    replaces = "out_channels" in site and "stride" in site
    _REGISTRY[name] = AttentionInfo(
        name, factory, description, reference, False, kind, True, replaces, tuple(values), site
    )
    return factory


def add_builtin(info: AttentionInfo) -> None:
    """Register a built-in block (used by :mod:`attnviz.blocks.catalog`)."""
    if info.kind not in KINDS:
        raise AttnvizError(f"built-in {info.name!r}: kind {info.kind!r} is not one of {KINDS}")
    _REGISTRY[info.name] = info


def list_attention() -> list[str]:
    """Names of every registered block, built-in first."""
    return sorted(_REGISTRY, key=lambda n: (not _REGISTRY[n].builtin, n))


def attention_info(name: str) -> AttentionInfo:
    if name not in _REGISTRY:
        raise unknown_name_error("attention", name, list_attention())
    return _REGISTRY[name]


class IdentityBlend(nn.Module):
    """``x + blend * (block(x) - x)`` with ``blend`` at 0: exactly ``x`` until trained."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.blend = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.blend * (self.block(x) - x)


def _wrap_gates(block: nn.Module) -> list[Gate]:
    """Make every ``gate`` submodule a :class:`Gate` (timm blocks use a bare activation)."""
    gates = []
    for path, module in list(block.named_modules()):
        if isinstance(module, Gate):
            gates.append(module)
            continue
        if path.rsplit(".", 1)[-1] != "gate" or next(iter(module.children()), None) is not None:
            continue
        parent = block.get_submodule(path.rsplit(".", 1)[0]) if "." in path else block
        gate = Gate(module)
        parent.gate = gate
        gates.append(gate)
    return gates


def _check_kwargs(info: AttentionInfo, kwargs: dict) -> None:
    reserved = {own: uniform for uniform, own in info.site_args.items()}
    for key in kwargs:
        if key in reserved and key != reserved[key]:
            raise AttnvizError(
                f"attention {info.name!r}: pass {reserved[key]}= (attention_block's own argument), not {key}="
            )
    try:
        sig = inspect.signature(info.factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [
        n
        for n, p in list(params.items())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in ("device", "dtype")
        and n not in reserved
    ]
    for key in kwargs:
        if key not in valid:
            raise unknown_name_error(f"argument for attention {info.name!r}:", key, valid)


def _positive_int(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AttnvizError(f"{what} must be a positive int, got {value!r}")
    return value


def _feat_size(value: object) -> tuple[int, int] | None:
    """``None``, ``n`` or ``(H, W)`` (a list from JSON too) as ``(H, W)``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, (tuple, list, torch.Size))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise AttnvizError(f"feat_size must be (H, W), two positive ints, got {value!r}")


def _site_kwargs(
    info: AttentionInfo, channels: int, out_channels: int, stride: int, feat: tuple | None
) -> dict:
    """``out_channels``/``stride``/``feat_size`` under the factory's own names."""
    asked = {
        "out_channels": out_channels if out_channels != channels else None,
        "stride": stride if stride != 1 else None,
        "feat_size": feat,
    }
    site = {}
    for key, value in asked.items():
        if value is None:
            continue
        own = info.site_args.get(key)
        if own is not None:
            site[own] = value
            continue
        if key == "feat_size":
            continue  # a block that does not depend on the map size ignores it
        can = [n for n in list_attention() if key in attention_info(n).site_args]
        change = (
            f"map {channels} channels to out_channels={out_channels}"
            if key == "out_channels"
            else f"take stride={stride}"
        )
        raise AttnvizError(
            f"attention {info.name!r} keeps its input's shape: it cannot {change}; "
            f"blocks that can: {can}"
        )
    return site


def attention_block(
    name: str,
    channels: int,
    *,
    init: str = "default",
    out_channels: int | None = None,
    stride: int = 1,
    feat_size: int | Sequence[int] | None = None,
    **kwargs,
) -> nn.Module:
    """Build the block ``name`` for ``channels`` input channels.

    ``init="default"``: the block as its paper defines it. ``init="identity"``:
    the block computes exactly its input until trained (see module docs).
    ``out_channels`` and ``stride`` (blocks that replace a convolution) and
    ``feat_size=(H, W)`` (the map the block will see: position embeddings,
    windows) are accepted for every block; ``kwargs`` are the block's own.

    >>> blk = attention_block("se", 64, init="identity")
    >>> x = torch.randn(2, 64, 8, 8)
    >>> bool(torch.equal(blk(x), x))
    True
    >>> attention_block("sk", 64, out_channels=128, stride=2)(x).shape
    torch.Size([2, 128, 4, 4])
    """
    info = attention_info(name)
    if init not in INITS:
        raise unknown_name_error("init", init, list(INITS))
    channels = _positive_int("channels", channels)
    out = channels if out_channels is None else _positive_int("out_channels", out_channels)
    stride = _positive_int("stride", stride)
    feat = _feat_size(feat_size)
    if init == "identity" and not info.identity_exact:
        exact = [n for n in list_attention() if attention_info(n).identity_exact]
        raise AttnvizError(
            f"attention {name!r} replaces a convolution and has no identity form; use "
            f"init='default' (blocks with an exact identity init: {exact})"
        )
    _check_kwargs(info, kwargs)
    site = _site_kwargs(info, channels, out, stride, feat)
    try:
        block = info.factory(channels, **site, **kwargs)
    except AssertionError as exc:  # timm validates its arguments with asserts
        given = ", ".join(f"{k}={v!r}" for k, v in {**site, **kwargs}.items())
        raise AttnvizError(
            f"attention {name!r} cannot be built with channels={channels}"
            f"{', ' + given if given else ''}: {str(exc) or 'the block refused these settings'}"
        ) from exc
    if not isinstance(block, nn.Module):
        raise TypeError(
            f"factory of attention {name!r} returned {type(block).__name__}, not an nn.Module"
        )
    gates = _wrap_gates(block)
    if init == "identity":
        has_init = callable(getattr(block, "init_identity", None))
        if has_init:
            block.init_identity()
        for gate in gates:
            gate.make_identity()
        if not gates and not has_init:
            block = IdentityBlend(block)
    return block
