"""One registry of attention blocks: ``attention_block(name, channels, **kw)``.

Every block takes the channel count as its first argument (timm's
convention) and maps ``[B, C, H, W]`` to the same shape. Built-in blocks
reuse ``timm.layers`` where timm has them and expose their attention weights
as :class:`~attnviz.blocks.gate.Gate` submodules, so ``<block>.gate`` is a
capturable value.

``init="identity"`` makes a block compute exactly its input until trained:
each gate becomes ``1 + blend * (g - 1)`` with ``blend`` a learnable scalar
at 0, additive blocks zero their last layer, and a user's block with
neither is wrapped as ``x + blend * (block(x) - x)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._select import unknown_name_error
from .gate import Gate

__all__ = [
    "INITS",
    "AttentionInfo",
    "IdentityBlend",
    "attention_block",
    "attention_info",
    "list_attention",
    "register_attention",
]

INITS = ("default", "identity")


@dataclass(frozen=True)
class AttentionInfo:
    """A registered block: its factory, a one-line description and its paper."""

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    reference: str = ""
    builtin: bool = False


_REGISTRY: dict[str, AttentionInfo] = {}


def register_attention(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    description: str = "",
    reference: str = "",
    overwrite: bool = False,
) -> Callable[..., nn.Module]:
    """Register ``factory(channels, **kw) -> nn.Module`` under ``name``.

    The block must map ``[B, C, H, W]`` to the same shape. For exact
    identity init, give it :class:`Gate` submodules or an ``init_identity()``
    method; otherwise ``init="identity"`` wraps it in :class:`IdentityBlend`.

    >>> import torch.nn as nn
    >>> class Scale(nn.Module):
    ...     def __init__(self, channels): super().__init__(); self.w = nn.Parameter(torch.ones(channels, 1, 1))
    ...     def forward(self, x): return x * self.w
    >>> _ = register_attention("scale_doc", Scale)
    >>> attention_block("scale_doc", 8).w.shape
    torch.Size([8, 1, 1])
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"attention name must be a Python identifier, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"attention {name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[name] = AttentionInfo(name, factory, description, reference, builtin=False)
    return factory


def _builtin(
    name: str, factory: Callable[..., nn.Module], description: str, reference: str
) -> None:
    _REGISTRY[name] = AttentionInfo(name, factory, description, reference, builtin=True)


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
    ]
    valid = [n for n in valid if n not in ("device", "dtype")]
    for key in kwargs:
        if key not in valid:
            raise unknown_name_error(f"argument for attention {info.name!r}:", key, valid)


def attention_block(name: str, channels: int, *, init: str = "default", **kwargs) -> nn.Module:
    """Build the block ``name`` for ``channels`` channels.

    ``init="default"``: the block as its paper defines it. ``init="identity"``:
    the block computes exactly its input until trained (see module docs).

    >>> blk = attention_block("se", 64, init="identity")
    >>> x = torch.randn(2, 64, 8, 8)
    >>> bool(torch.equal(blk(x), x))
    True
    """
    info = attention_info(name)
    if init not in INITS:
        raise unknown_name_error("init", init, list(INITS))
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    _check_kwargs(info, kwargs)
    block = info.factory(channels, **kwargs)
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


# -- built-in blocks ------------------------------------------------------------
def _register_builtins() -> None:
    from timm.layers import CecaModule, EcaModule, EffectiveSEModule, GlobalContext, SEModule
    from timm.layers.cbam import CbamModule, ChannelAttn, SpatialAttn
    from timm.layers.coord_attn import CoordAttn

    from .gather_excite import GatherExcite
    from .global_context import GlobalContextBlock
    from .simam import SimAM

    def spatial(channels: int, kernel_size: int = 7, gate_layer: str = "sigmoid") -> nn.Module:
        return SpatialAttn(kernel_size=kernel_size, gate_layer=gate_layer)

    def gc_scale(channels: int, rd_ratio: float = 1.0 / 8, **kw) -> nn.Module:
        return GlobalContext(channels, fuse_add=False, fuse_scale=True, rd_ratio=rd_ratio, **kw)

    _builtin(
        "se",
        SEModule,
        "Squeeze-and-Excitation: GAP -> 1x1 bottleneck MLP -> sigmoid gate per channel",
        "Hu et al., CVPR 2018, arXiv:1709.01507",
    )
    _builtin(
        "ese",
        EffectiveSEModule,
        "Effective SE: GAP -> one 1x1 conv C->C -> hard-sigmoid gate",
        "Lee & Park, CenterMask, CVPR 2020",
    )
    _builtin(
        "eca",
        EcaModule,
        "Efficient Channel Attention: GAP -> 1-D conv across channels (adaptive k) -> sigmoid",
        "Wang et al., CVPR 2020, arXiv:1910.03151",
    )
    _builtin("ceca", CecaModule, "ECA with circular padding across channels", "timm variant of ECA")
    _builtin(
        "cbam",
        CbamModule,
        "CBAM: channel gate (avg+max pooled shared MLP) then spatial gate (7x7 conv on channel avg/max)",
        "Woo et al., ECCV 2018, arXiv:1807.06521",
    )
    _builtin(
        "cbam_channel",
        ChannelAttn,
        "CBAM's channel attention alone: avg- and max-pooled shared MLP, summed, sigmoid",
        "Woo et al., ECCV 2018",
    )
    _builtin(
        "cbam_spatial",
        spatial,
        "CBAM's spatial attention alone: 7x7 conv over [mean, max] across channels",
        "Woo et al., ECCV 2018",
    )
    _builtin(
        "gc",
        GlobalContextBlock,
        "Global context: softmax attention pooling -> bottleneck transform with LayerNorm -> added to every position",
        "Cao et al., GCNet, ICCVW 2019, arXiv:1904.11492",
    )
    _builtin(
        "gc_scale",
        gc_scale,
        "Global context with multiplicative (sigmoid) fusion, timm's 'gc'",
        "Cao et al., GCNet; timm",
    )
    _builtin(
        "coord",
        CoordAttn,
        "Coordinate attention: pooling along H and W -> shared 1x1 -> two directional gates",
        "Hou et al., CVPR 2021, arXiv:2103.02907",
    )
    _builtin(
        "simam",
        SimAM,
        "SimAM: parameter-free 3-D attention from a per-neuron energy function",
        "Yang et al., ICML 2021",
    )
    _builtin(
        "ge",
        GatherExcite,
        "Gather-Excite: gather over an extent, excite with a bottleneck MLP (fixed timm 'ge')",
        "Hu et al., NeurIPS 2018, arXiv:1810.12348",
    )


_register_builtins()
