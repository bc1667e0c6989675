"""Rewriting owners: a call of each block added after its site, in the owner's own forward.

The owner (the smallest module whose forward produces a site) is traced alone
(its submodules as opaque calls), a ``call_module`` node for the block is added
after the site and the site's users rewired to it, and the owner's class is
swapped for a same-named subclass whose ``forward`` is the generated code. An
owner that is an ``nn.Sequential`` keeps its length, iteration and indexing over
its original layers. A site whose owner cannot be traced is pushed down into
the module that produced it (``conv1.output_attn``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch.fx as fx
from torch import nn

from .._capture import CapturePlan, Value
from .._tracing import (
    OUT_OF_PLACE,
    TRACE_INTO_ATTR,
    TraceFailure,
    compile_graph,
    trace,
    trace_both_modes,
)
from ..errors import SurgeryError
from .sites import attr_name, is_sequential
from .spec import ATTN_ATTR, BASE_CLASS_ATTR, Site, base_class

__all__ = ["apply_sites", "restore_owner"]


def _seq_items(self: nn.Sequential) -> list[tuple[str, nn.Module]]:
    skip = getattr(type(self), ATTN_ATTR)
    return [(k, m) for k, m in self._modules.items() if k not in skip]


def _seq_len(self: nn.Sequential) -> int:
    return len(_seq_items(self))


def _seq_iter(self: nn.Sequential):
    return iter(m for _, m in _seq_items(self))


def _seq_getitem(self: nn.Sequential, idx):
    items = _seq_items(self)
    if isinstance(idx, slice):
        return nn.Sequential(OrderedDict(items[idx]))
    return items[idx][1]


#: A Sequential that owns attention blocks keeps its length, iteration and
#: indexing over its original layers (``model.features[-1]`` is still the
#: last layer); the blocks are reachable by name and in ``named_modules()``.
_SEQUENTIAL_VIEW = {"__len__": _seq_len, "__iter__": _seq_iter, "__getitem__": _seq_getitem}


def _insert_nodes(
    graph: fx.Graph,
    names: dict[str, fx.Node],
    sites: list[Site],
    safe: dict[str, bool],
    placement: str,
) -> None:
    """Add a ``call_module`` after each site and rewire the site's users to it.

    ``after``: the block reads the site's value. ``parallel``: the site is a
    module call and the branch reads its input and its output. An in-place
    consumer (``out += identity``) stays in place when the block's output
    allows it, and becomes out-of-place otherwise.
    """
    output = next(n for n in graph.nodes if n.op == "output")
    for s in sites:
        node = names.get(s.local) if s.local else output.args[0]
        if not isinstance(node, fx.Node):
            raise SurgeryError(
                f"site {s.site!r} is not a value of {s.owner or 'the model'}'s forward"
            )
        args: tuple[fx.Node, ...] = (node,)
        if placement == "parallel":
            if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
                raise SurgeryError(
                    f"site {s.site!r}: a parallel block needs a module called with one input in "
                    f"{s.owner or 'the model'}'s forward, and {s.local!r} is not one"
                )
            args = (node.args[0], node)
        with graph.inserting_after(node):
            new = graph.call_module(s.attr, args)
        node.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
        if not safe.get(s.attr, False):
            for user in list(new.users):
                if (
                    user.op == "call_function"
                    and user.target in OUT_OF_PLACE
                    and user.args[0] is new
                ):
                    user.target = OUT_OF_PLACE[user.target]
    graph.lint()


def _rewrite_owner(
    model: nn.Module,
    owner: str,
    sites: list[Site],
    blocks: dict[str, nn.Module],
    safe: dict[str, bool],
    placement: str = "after",
) -> None:
    module = model.get_submodule(owner) if owner else model
    traces = trace_both_modes(module, lambda m: trace(m, shallow=True))
    fns: dict[bool, Any] = {}
    for mode in (True, False):
        if mode is False and traces[False] is traces[True]:
            fns[False] = fns[True]
            break
        t = traces[mode]
        _insert_nodes(t.graph, t.names, sites, safe, placement)
        fns[mode] = compile_graph(t.graph, label=f"surgery:{owner or type(module).__name__}")
    for s in sites:
        module.add_module(s.attr, blocks[s.attr])
    base = base_class(module)
    train_fn, eval_fn = fns[True], fns[False]
    if train_fn is eval_fn:
        forward = train_fn
    else:

        def forward(self, *args, **kwargs):
            return (train_fn if self.training else eval_fn)(self, *args, **kwargs)

    attrs = (*getattr(type(module), ATTN_ATTR, ()), *(s.attr for s in sites))
    namespace = {
        "forward": forward,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        BASE_CLASS_ATTR: base,
        ATTN_ATTR: attrs,
        TRACE_INTO_ATTR: True,
    }
    if issubclass(base, nn.Sequential):
        namespace.update(_SEQUENTIAL_VIEW)
    module.__class__ = type(base.__name__, (base,), namespace)


def _push_down(model: nn.Module, site: Site, value: Value | None) -> Site | None:
    """Re-home a site at the output of the module that produced it (owner untraceable).

    The block then lives inside that module (``conv1.output_attn``) and the
    module's output includes it; a Sequential hands the site to its last layer.
    """
    if value is None or value.module is None or value.name != value.module:
        return None
    path = value.module
    module = model.get_submodule(path)
    while is_sequential(module):
        children = list(module.named_children())
        if not children:
            return None
        path, module = f"{path}.{children[-1][0]}", children[-1][1]
    attr = attr_name(module, "output_attn", set())
    return Site(site.site, path, "", attr, site.channels, site.shape)


def apply_sites(
    model: nn.Module,
    sites: list[Site],
    blocks: dict[int, nn.Module],
    safe: dict[int, bool],
    plan: CapturePlan | None,
    placement: str = "after",
) -> list[Site]:
    """Rewrite every owner (``after`` and ``parallel``); returns the sites as finally placed.

    An ``after`` site whose owner cannot be traced moves into the module that
    produced it; a ``parallel`` one cannot (the branch needs the call's input).
    """
    placed: list[Site] = []
    by_owner: dict[str, list[int]] = {}
    for i, s in enumerate(sites):
        by_owner.setdefault(s.owner, []).append(i)
    for owner, idx in by_owner.items():
        group = [sites[i] for i in idx]
        try:
            _rewrite_owner(
                model,
                owner,
                group,
                {sites[i].attr: blocks[i] for i in idx},
                {sites[i].attr: safe[i] for i in idx},
                placement,
            )
            placed.extend(group)
            continue
        except TraceFailure as failure:
            moved = [
                _push_down(model, sites[i], plan.values.get(sites[i].site) if plan else None)
                if placement == "after"
                else None
                for i in idx
            ]
            if plan is None or any(m is None for m in moved):
                bad = [sites[i].site for i, m in zip(idx, moved) if m is None]
                raise SurgeryError(
                    f"cannot insert attention {'after' if placement == 'after' else 'beside'} "
                    f"{bad}: their owner "
                    f"{owner or 'the top-level forward'} ({type(model.get_submodule(owner) if owner else model).__name__}) "
                    f"cannot be traced: {failure}"
                ) from failure
        for i, m in zip(idx, moved):
            _rewrite_owner(model, m.owner, [m], {m.attr: blocks[i]}, {m.attr: safe[i]})
            placed.append(m)
    order = {s.site: i for i, s in enumerate(sites)}
    return sorted(placed, key=lambda s: order[s.site])


def restore_owner(module: nn.Module, attrs: list[str]) -> None:
    """Undo :func:`apply_sites` on one owner: drop its blocks, give back its original class."""
    for attr in attrs:
        delattr(module, attr)
    module.__class__ = base_class(module)
