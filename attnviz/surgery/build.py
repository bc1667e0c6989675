"""Building an insertion's blocks: kwargs to and from JSON, one block per site, probed once.

Every block gets its site's map size (``feat_size``); ``parallel`` and
``replace`` blocks also the site's output channels and stride
(:meth:`~attnviz.surgery.spec.Site.block_args`).

Block keyword arguments are recorded in the spec as JSON; a class or function
among them becomes ``{"__callable__": "module:qualname"}``. Decoding goes
through the trust boundary (:func:`attnviz.trust.resolve_callable`): from a file
only allowlisted classes come back unless the caller opted in with
``trust_code=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._utils import class_path
from ..blocks import attention_block, list_attention
from ..errors import AttnvizError, SurgeryError, UnknownNameError
from ..trust import resolve_callable
from .placements import ParallelBranch
from .sites import Where
from .spec import Site

__all__ = ["build_blocks", "decode", "encode", "encode_where", "site_block"]

_CALLABLE = "__callable__"
_SAFE_LAST_OPS = {"MulBackward0", "AddBackward0", "SubBackward0"}


def encode(value: Any) -> Any:
    """A JSON form of block kwargs: classes and functions as ``{"__callable__": "mod:qual"}``."""
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return {_CALLABLE: class_path(value)}
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    raise SurgeryError(
        f"cannot record {value!r} ({type(value).__name__}) in the surgery spec; use a JSON value or a class"
    )


def encode_where(where: Where) -> Any:
    """The JSON form of ``where=`` (strings as they are, classes as ``__callable__``)."""
    if isinstance(where, str):
        return where
    if isinstance(where, type):
        return encode(where)
    return [encode_where(w) for w in where]


def decode(value: Any, *, source: str, trust_code: bool) -> Any:
    """Inverse of :func:`encode`, through the trust boundary (see the module docs)."""
    if isinstance(value, dict) and set(value) == {_CALLABLE}:
        return resolve_callable(
            value[_CALLABLE],
            source=source,
            what="a class in the block kwargs",
            trust_code=trust_code,
        )
    if isinstance(value, list):
        return [decode(v, source=source, trust_code=trust_code) for v in value]
    if isinstance(value, dict):
        return {k: decode(v, source=source, trust_code=trust_code) for k, v in value.items()}
    return value


def check_registered(attention: str, source: str) -> None:
    """A block named in a spec must be registered in this process (``register_attention``)."""
    if attention not in list_attention():
        raise UnknownNameError(
            f"{source}: attention {attention!r} is not registered in this process; the file was "
            f"written with a block registered by attnviz.register_attention({attention!r}, factory): "
            "make that call before loading"
        )


def _probe_block(
    block: nn.Module, site: Site, placement: str, attention: str, device, dtype
) -> bool:
    """Check the block fits the site; return whether its output may be modified in place.

    ``after``: the block keeps the feature shape. ``parallel`` and ``replace``:
    it maps the site's input shape to its output shape. A consumer such as
    ``out += identity`` works in place on the block's output; that is only safe
    when autograd did not save that output (the block ends in a multiplication
    or an addition, like every built-in block and every parallel branch).
    """
    in_shape = site.in_shape if placement != "after" else site.shape
    probe = torch.zeros((1, *in_shape[1:]), device=device, dtype=dtype, requires_grad=True)
    expected = (1, *site.shape[1:])
    args = (probe,)
    if placement == "parallel":
        args = (probe, torch.zeros(expected, device=device, dtype=dtype))
    training = block.training
    block.eval()
    try:
        with torch.enable_grad():
            out = block(*args)
    except AttnvizError as exc:
        raise type(exc)(f"{_where(site, placement)}: {exc}") from None
    finally:
        block.train(training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if placement == "after":
            raise SurgeryError(
                f"attention {attention!r} must keep the feature shape {list(expected)}, it gave {got}"
            )
        raise SurgeryError(
            f"{_where(site, placement)}: attention {attention!r} must map the site's input "
            f"{[1, *in_shape[1:]]} to its output {list(expected)}, it gave {got}"
        )
    return out is not probe and type(out.grad_fn).__name__ in _SAFE_LAST_OPS


def _where(site: Site, placement: str) -> str:
    if placement == "after" or not site.in_shape:
        return f"site {site.site!r} ({list(site.shape[1:])})"
    return f"site {site.site!r} ({list(site.in_shape[1:])} -> {list(site.shape[1:])})"


def site_block(
    attention: str, site: Site, placement: str, init: str, kwargs: dict[str, Any]
) -> nn.Module:
    """The block for one site: the site's channels, ``out_channels``, stride and map size.

    ``feat_size`` (and, for ``parallel`` / ``replace``, ``out_channels`` and
    ``stride``) come from the site; a value the caller gave in ``kwargs`` wins.
    A ``parallel`` block comes wrapped in its :class:`.placements.ParallelBranch`.
    """
    args = site.block_args()
    if placement == "after":
        args = {k: v for k, v in args.items() if k == "feat_size"}
    try:
        block = attention_block(attention, site.channels, init=init, **{**args, **kwargs})
    except AttnvizError as exc:
        raise type(exc)(f"{_where(site, placement)}: {exc}") from None
    return ParallelBranch(block) if placement == "parallel" else block


def build_blocks(
    attention: str,
    sites: list[Site],
    init: str,
    kwargs: dict,
    device,
    dtype,
    placement: str = "after",
) -> tuple[dict[int, nn.Module], dict[int, bool]]:
    """One block per site (by index), and whether each block's output may be changed in place.

    Each distinct pair of input and output shapes is probed once.
    """
    blocks, safe, probed = {}, {}, {}
    for i, s in enumerate(sites):
        block = site_block(attention, s, placement, init, kwargs).to(device=device, dtype=dtype)
        key = (tuple(s.in_shape[1:]), tuple(s.shape[1:])) if s.shape else None
        if key not in probed:
            probed[key] = (
                _probe_block(block, s, placement, attention, device, dtype) if key else False
            )
        blocks[i], safe[i] = block, probed[key]
    return blocks, safe
