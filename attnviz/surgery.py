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
the sites and, by running an example input, their channel counts. Each site
is a value inside the forward of one *owner* module: the smallest module
whose own forward produces it (``layer1.0`` for ``layer1.0.bn3``; the model
itself for the output of ``layer1``). Only owners are rewritten: the owner
is traced alone (its submodules as opaque calls), a ``call_module`` node for
the block is added after the site, and the owner's class is swapped for a
subclass of itself whose ``forward`` is the generated code. Every other
module, every original ``state_dict`` key, and the model's class and methods
stay as they were; blocks are new children of their owner
(``layer1.0.attn``). The surgery is recorded as plain JSON
(:func:`surgery_spec`), which :func:`apply_surgery` replays on a fresh base
model and :func:`remove_attention` undoes.
"""

from __future__ import annotations

import copy
import importlib
import json
import operator
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._capture import CapturePlan, Value, default_example_input, plan_capture
from ._select import glob_to_regex, is_module_type, type_name, unknown_name_error
from ._tracing import TraceFailure, compile_graph, trace, trace_both_modes
from ._version import __version__
from .blocks import INITS, attention_block, attention_info
from .errors import SurgeryError

__all__ = [
    "SurgeryError",
    "apply_surgery",
    "attention_keys",
    "attention_modules",
    "insert_attention",
    "remove_attention",
    "surgery_spec",
]

SPEC_ATTR = "_attnviz_surgery"
SPEC_FORMAT = "attnviz.surgery/1"
WHERE_KEYWORDS = ("residual", "stages")

Where = str | type | Sequence[str | type]


@dataclass
class Site:
    """Where one block goes: after value ``site``, inside the forward of ``owner``."""

    site: str
    owner: str
    local: str
    attr: str
    channels: int
    shape: tuple[int, ...] = ()


# -- owners -----------------------------------------------------------------------
def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _is_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential)


def _local(owner: str, name: str) -> str:
    return name[len(owner) + 1 :] if owner else name


# -- site selection -----------------------------------------------------------------
def _node_names(plan: CapturePlan) -> dict[tuple[str, fx.Node], list[Value]]:
    """Values grouped by the graph node they name (aliases together)."""
    out: dict[tuple[str, fx.Node], list[Value]] = {}
    parts = _graph_parts(plan)
    for value in plan.values.values():
        part = parts.get(value.part)
        if part is None or not value.local:
            continue
        node = part.traces[False].names.get(value.local)
        if node is not None:
            out.setdefault((value.part, node), []).append(value)
    return out


def _graph_parts(plan: CapturePlan) -> dict[str, Any]:
    """Graph parts of the plan, in the order the model runs them."""
    parts, queue = {}, [plan.root]
    while queue:
        part = queue.pop(0)
        if part.kind == "graph":
            parts[part.path] = part
        queue.extend(part.children)
    return parts


_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _ADD_FUNCTIONS
    return node.op == "call_method" and node.target in _ADD_METHODS


def _in_scope_depth(node: fx.Node, scope: str) -> int:
    """How many ops of the module ``scope`` lead to ``node`` (itself included)."""

    def inside(n: fx.Node) -> bool:
        s = n.meta.get("attnviz_scope", "")
        return n.op not in ("placeholder", "get_attr") and (
            not scope or s == scope or s.startswith(scope + ".")
        )

    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen or not inside(n):
            continue
        seen.add(n)
        stack.extend(a for a in n.all_input_nodes)
    return len(seen)


def _residual_sites(plan: CapturePlan, shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, str]]:
    """(value, owner) for each residual add: the branch input, i.e. the deeper one."""
    by_node = _node_names(plan)
    sites = []
    for path, part in _graph_parts(plan).items():
        t = part.traces[False]
        for node in t.graph.nodes:
            if not _is_add(node) or len(node.args) < 2:
                continue
            a, b = node.args[0], node.args[1]
            if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
                continue
            if a.op == "get_attr" or b.op == "get_attr":
                continue
            names_a, names_b = by_node.get((path, a), []), by_node.get((path, b), [])
            out_names = by_node.get((path, node))
            out_shape = shapes.get(out_names[0].name) if out_names else None
            if out_shape is None or len(out_shape) != 4:
                continue
            # both inputs have the output's shape (a module input, a placeholder, has no name)
            if any(shapes.get(n[0].name) != out_shape for n in (names_a, names_b) if n):
                continue
            if not names_a and not names_b:
                continue
            scope = node.meta["attnviz_scope"]
            da, db = _in_scope_depth(a, scope), _in_scope_depth(b, scope)
            if da == db:
                continue
            branch = names_a if da > db else names_b
            owner = f"{path}.{scope}".strip(".") if path else scope
            chosen = next((v for v in branch if v.scope == owner), None)
            if chosen is not None:
                sites.append((chosen.name, owner))
    order = {n: i for i, n in enumerate(plan.names())}
    return sorted(sites, key=lambda site: order[site[0]])


def _on_trunk(model: nn.Module, path: str, root: str) -> bool:
    """A module on the trunk below ``root``: every module between them is a Sequential."""
    if root and not path.startswith(root + "."):
        return False
    parent = _parent(path)
    while parent != root and parent:
        if not _is_sequential(model.get_submodule(parent)):
            return False
        parent = _parent(parent)
    return True


def _runs(plan: CapturePlan, shapes: dict[str, tuple[int, ...]], root: str) -> list[list[str]]:
    """Trunk module outputs below ``root``, grouped into runs of equal spatial size."""
    model = plan.model
    runs: list[list[str]] = []
    last = None
    for name in plan.names():
        value = plan.values[name]
        shape = shapes.get(name)
        if value.module is None or shape is None or len(shape) != 4 or shape[2] * shape[3] <= 1:
            continue
        if isinstance(
            model.get_submodule(value.module), nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d
        ):
            continue
        if value.module == root or not _on_trunk(model, value.module, root):
            continue
        if shape[2:] != last:
            runs.append([])
            last = shape[2:]
        runs[-1].append(name)
    return runs


def _stage_sites(plan: CapturePlan, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The last feature map at each spatial resolution (timm: the model's ``feature_info``).

    Candidates are outputs of modules on the trunk (all their ancestors are
    Sequentials), in execution order, grouped into runs of equal H x W; each
    run gives its last candidate among the outermost ones (``layer1``, not
    ``layer1.1``; a stage, not the norm that starts the next downsampling).
    When the model wraps its network in a submodule (``self.backbone``), the
    trunk is looked for inside the submodule that gives the most runs.
    """
    model = plan.model
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and all(isinstance(d, dict) and "module" in d for d in info):
        names = [d["module"] for d in info]
        if all(n in plan.values and n in shapes for n in names):
            return names
    best = _runs(plan, shapes, "")
    if len(best) < 2:
        for root, module in model.named_modules():
            if (
                root
                and not _is_sequential(module)
                and next(iter(module.children()), None) is not None
            ):
                runs = _runs(plan, shapes, root)
                if len(runs) > len(best):
                    best = runs
    stages = []
    for run in best:
        depth = min(plan.values[n].module.count(".") for n in run)
        stages.append([n for n in run if plan.values[n].module.count(".") == depth][-1])
    return stages


def _selector_sites(
    plan: CapturePlan, shapes: dict[str, tuple[int, ...]], where: Where
) -> list[str]:
    selectors = [where] if isinstance(where, str | type) else list(where)
    if not selectors:
        raise SurgeryError(
            f"where is empty: give {WHERE_KEYWORDS[0]!r}, {WHERE_KEYWORDS[1]!r}, a glob or a module type"
        )
    names = plan.names()
    module_paths = {v.module for v in plan.values.values() if v.module}
    chosen: list[str] = []
    for sel in selectors:
        if isinstance(sel, str) and sel in WHERE_KEYWORDS:
            raise SurgeryError(f"{sel!r} cannot be combined with other selectors; pass it alone")
        if isinstance(sel, str):
            rx = glob_to_regex(sel)
            hits = [n for n in names if rx.match(plan.values[n].module or n)]
            if not hits:
                valid = [*WHERE_KEYWORDS, *sorted(module_paths), *names]
                raise unknown_name_error(
                    "site selector",
                    sel,
                    valid,
                    hint="where= takes 'residual', 'stages', module-name globs or module types; "
                    "attnviz.list_intermediates(model) lists every name" + _trace_note(plan),
                )
        elif is_module_type(sel):
            hits = [
                n
                for n in names
                if plan.values[n].module
                and isinstance(plan.model.get_submodule(plan.values[n].module), sel)
            ]
            if not hits:
                present = sorted({type(m).__name__ for m in plan.model.modules()})
                raise unknown_name_error(
                    "module type in where=",
                    type_name(sel),
                    present,
                    hint="no module of that type is called in the forward",
                )
        else:
            raise SurgeryError(f"where= entries must be str or nn.Module subclasses, got {sel!r}")
        chosen.extend(hits)
    return list(dict.fromkeys(chosen))


def _dedupe_same_value(plan: CapturePlan, names: list[str]) -> list[str]:
    """Two names for one tensor (``layer1`` and ``layer1.1``): keep the first."""
    seen, out = set(), []
    by_node = {(k[0], id(k[1])): v for k, v in _node_names(plan).items()}
    node_of = {}
    for (part, _), values in by_node.items():
        for v in values:
            node_of[v.name] = (part, _)
    for n in names:
        key = node_of.get(n, n)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


def _attr_name(module: nn.Module, base: str, taken: set[str]) -> str:
    name, k = base, 0
    while hasattr(module, name) or name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _trace_note(plan: CapturePlan) -> str:
    """Which modules could not be traced (their insides have no sites), and why."""
    if not plan.failures:
        return ""
    parts = [
        f"{f.path or 'the top level'} ({f.module_type}): {f.op}" for f in plan.failures.values()
    ]
    return ". These modules could not be traced, so their insides offer no sites: " + "; ".join(
        parts
    )


def _plan_sites(
    model: nn.Module, plan: CapturePlan, shapes: dict[str, tuple[int, ...]], where: Where
) -> list[Site]:
    if isinstance(where, str) and where == "residual":
        pairs = _residual_sites(plan, shapes)
        if not pairs:
            raise SurgeryError(
                f"{type(model).__name__} has no residual adds (two equal-shaped 4-D feature maps summed); "
                "use where='stages' or a selector such as where=nn.Conv2d" + _trace_note(plan)
            )
        residual = True
    else:
        stages = isinstance(where, str) and where == "stages"
        names = _stage_sites(plan, shapes) if stages else _selector_sites(plan, shapes, where)
        if not names:
            raise SurgeryError(
                f"found no stage outputs (4-D feature maps on the trunk) in {type(model).__name__}; "
                "pass a selector such as where=nn.Conv2d or a module-name glob" + _trace_note(plan)
            )
        names = _dedupe_same_value(plan, names)
        pairs = [(n, plan.values[n].scope) for n in names]
        residual = False
    not_maps = [
        (n, shapes.get(n)) for n, _ in pairs if shapes.get(n) is None or len(shapes[n]) != 4
    ]
    if not_maps:
        detail = ", ".join(f"{n} -> {list(s) if s else 'not a tensor'}" for n, s in not_maps[:6])
        raise SurgeryError(
            f"channel attention needs 4-D feature maps [B, C, H, W], but these sites give other values: {detail}. "
            "Narrow the selector to convolutional feature maps"
        )
    taken: dict[str, set[str]] = {}
    sites = []
    for name, owner in pairs:
        module = model.get_submodule(owner) if owner else model
        local = _local(owner, name)
        base = "attn" if residual else f"{local.replace('.', '_')}_attn"
        attr = _attr_name(module, base, taken.setdefault(owner, set()))
        sites.append(Site(name, owner, local, attr, int(shapes[name][1]), tuple(shapes[name])))
    return sites


# -- rewriting owners ------------------------------------------------------------------
def _base_class(module: nn.Module) -> type:
    return getattr(type(module), "_attnviz_base_class", type(module))


def _seq_items(self: nn.Sequential) -> list[tuple[str, nn.Module]]:
    skip = type(self)._attnviz_attn
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


_OUT_OF_PLACE = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def _insert_nodes(
    graph: fx.Graph, names: dict[str, fx.Node], sites: list[Site], safe: dict[str, bool]
) -> None:
    """Add a ``call_module`` after each site and rewire the site's users to it.

    An in-place consumer (``out += identity``) stays in place when the block's
    output allows it, and becomes out-of-place otherwise.
    """
    output = next(n for n in graph.nodes if n.op == "output")
    for s in sites:
        node = names.get(s.local) if s.local else output.args[0]
        if not isinstance(node, fx.Node):
            raise SurgeryError(
                f"site {s.site!r} is not a value of {s.owner or 'the model'}'s forward"
            )
        with graph.inserting_after(node):
            new = graph.call_module(s.attr, (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
        if not safe.get(s.attr, False):
            for user in list(new.users):
                if (
                    user.op == "call_function"
                    and user.target in _OUT_OF_PLACE
                    and user.args[0] is new
                ):
                    user.target = _OUT_OF_PLACE[user.target]
    graph.lint()


def _rewrite_owner(
    model: nn.Module,
    owner: str,
    sites: list[Site],
    blocks: dict[str, nn.Module],
    safe: dict[str, bool],
) -> None:
    module = model.get_submodule(owner) if owner else model
    traces = trace_both_modes(module, lambda m: trace(m, shallow=True))
    fns: dict[bool, Any] = {}
    for mode in (True, False):
        if mode is False and traces[False] is traces[True]:
            fns[False] = fns[True]
            break
        t = traces[mode]
        _insert_nodes(t.graph, t.names, sites, safe)
        fns[mode] = compile_graph(t.graph, label=f"surgery:{owner or type(module).__name__}")
    for s in sites:
        module.add_module(s.attr, blocks[s.attr])
    base = _base_class(module)
    train_fn, eval_fn = fns[True], fns[False]
    if train_fn is eval_fn:
        forward = train_fn
    else:

        def forward(self, *args, **kwargs):
            return (train_fn if self.training else eval_fn)(self, *args, **kwargs)

    attrs = (*getattr(type(module), "_attnviz_attn", ()), *(s.attr for s in sites))
    namespace = {
        "forward": forward,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "_attnviz_base_class": base,
        "_attnviz_attn": attrs,
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
    while _is_sequential(module):
        children = list(module.named_children())
        if not children:
            return None
        path, module = f"{path}.{children[-1][0]}", children[-1][1]
    attr = _attr_name(module, "output_attn", set())
    return Site(site.site, path, "", attr, site.channels, site.shape)


def _apply_sites(
    model: nn.Module,
    sites: list[Site],
    blocks: dict[int, nn.Module],
    safe: dict[int, bool],
    plan: CapturePlan | None,
) -> list[Site]:
    """Rewrite every owner; returns the sites as finally placed."""
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
            )
            placed.extend(group)
            continue
        except TraceFailure as failure:
            moved = [
                _push_down(model, sites[i], plan.values.get(sites[i].site) if plan else None)
                for i in idx
            ]
            if plan is None or any(m is None for m in moved):
                bad = [sites[i].site for i, m in zip(idx, moved) if m is None]
                raise SurgeryError(
                    f"cannot insert attention after {bad}: their owner "
                    f"{owner or 'the top-level forward'} ({type(model.get_submodule(owner) if owner else model).__name__}) "
                    f"cannot be traced: {failure}"
                ) from failure
        for i, m in zip(idx, moved):
            _rewrite_owner(model, m.owner, [m], {m.attr: blocks[i]}, {m.attr: safe[i]})
            placed.append(m)
    order = {s.site: i for i, s in enumerate(sites)}
    return sorted(placed, key=lambda s: order[s.site])


# -- spec -------------------------------------------------------------------------
def _to_json(value: Any) -> Any:
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return {"__callable__": f"{value.__module__}:{value.__qualname__}"}
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    raise TypeError(
        f"cannot record {value!r} ({type(value).__name__}) in the surgery spec; use a JSON value or a class"
    )


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__callable__"}:
        module, qual = value["__callable__"].split(":", 1)
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
        return obj
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _where_json(where: Where) -> Any:
    if isinstance(where, str):
        return where
    if isinstance(where, type):
        return _to_json(where)
    return [_where_json(w) for w in where]


def surgery_spec(model: nn.Module) -> dict[str, Any]:
    """The model's surgery as plain JSON: base model reference, blocks, sites and kwargs.

    A model without surgery gives a spec with no insertions.
    """
    from .zoo import base_reference

    spec = getattr(model, SPEC_ATTR, None)
    if spec is None:
        spec = _new_spec(model, cheap=False)
    elif spec.get("base") is None:
        spec["base"] = base_reference(model)
    return json.loads(json.dumps(spec))


def _new_spec(model: nn.Module, *, cheap: bool) -> dict[str, Any]:
    from .zoo import base_reference

    return {
        "format": SPEC_FORMAT,
        "attnviz_version": __version__,
        "base": base_reference(model, cheap=cheap),
        "insertions": [],
    }


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The attention blocks of a modified model by path (``layer1.0.attn``)."""
    spec = getattr(model, SPEC_ATTR, None) or {"insertions": []}
    out = {}
    for ins in spec["insertions"]:
        for s in ins["sites"]:
            path = f"{s['owner']}.{s['attr']}".strip(".")
            out[path] = model.get_submodule(path)
    return out


def attention_keys(model: nn.Module) -> list[str]:
    """``state_dict`` keys that belong to attention blocks (everything else is the base's)."""
    prefixes = tuple(f"{p}." for p in attention_modules(model))
    return [k for k in model.state_dict() if k.startswith(prefixes)] if prefixes else []


# -- public API -------------------------------------------------------------------------
_SAFE_LAST_OPS = {"MulBackward0", "AddBackward0", "SubBackward0"}


def _probe_block(block: nn.Module, shape: tuple[int, ...], attention: str, device, dtype) -> bool:
    """Check the block keeps the feature shape; return whether its output may be modified in place.

    A consumer such as ``out += identity`` works in place on the block's
    output; that is only safe when autograd did not save that output (the
    block ends in a multiplication or an addition, like every built-in block).
    """
    probe = torch.zeros((1, *shape[1:]), device=device, dtype=dtype, requires_grad=True)
    training = block.training
    block.eval()
    try:
        with torch.enable_grad():
            out = block(probe)
    finally:
        block.train(training)
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SurgeryError(
            f"attention {attention!r} must keep the feature shape {list(probe.shape)}, it gave {got}"
        )
    return out is not probe and type(out.grad_fn).__name__ in _SAFE_LAST_OPS


def _build_blocks(
    attention: str, sites: list[Site], init: str, kwargs: dict, device, dtype
) -> tuple[dict[int, nn.Module], dict[int, bool]]:
    """One block per site, each probed once per channel count."""
    blocks, safe, probed = {}, {}, {}
    for i, s in enumerate(sites):
        block = attention_block(attention, s.channels, init=init, **kwargs).to(
            device=device, dtype=dtype
        )
        key = tuple(s.shape[1:]) if s.shape else None
        if key not in probed:
            probed[key] = _probe_block(block, s.shape, attention, device, dtype) if key else False
        blocks[i], safe[i] = block, probed[key]
    return blocks, safe


def _param_device(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def insert_attention(
    model: nn.Module,
    attention: str,
    where: Where = "residual",
    *,
    example_input: torch.Tensor | None = None,
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
    ``example_input`` (default: sized from the model's config) once.

    >>> import torchvision
    >>> m = insert_attention(torchvision.models.resnet50(), "se", where="residual")
    >>> sum(p.numel() for p in m.parameters())
    28088024
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    info = attention_info(attention)
    if init not in INITS:
        raise unknown_name_error("init", init, list(INITS))
    from .intermediates import _shapes

    new = copy.deepcopy(model)
    spec = copy.deepcopy(getattr(model, SPEC_ATTR, None)) or _new_spec(model, cheap=True)
    plan = plan_capture(new)
    x = example_input if example_input is not None else default_example_input(new)
    shapes = _shapes(plan, x)
    sites = _plan_sites(new, plan, shapes, where)
    device, dtype = _param_device(new)
    blocks, safe = _build_blocks(info.name, sites, init, block_kwargs, device, dtype)
    for block in blocks.values():
        block.train(new.training)
    placed = _apply_sites(new, sites, blocks, safe, plan)
    spec["insertions"].append(
        {
            "attention": info.name,
            "init": init,
            "kwargs": _to_json(block_kwargs),
            "where": _where_json(where),
            "example_input_shape": list(x.shape),
            "sites": [asdict(s) | {"shape": list(s.shape)} for s in placed],
        }
    )
    setattr(new, SPEC_ATTR, spec)
    return new


def apply_surgery(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Replay a recorded surgery on a fresh base model (a copy; ``model`` is untouched).

    No example input is needed: sites and channel counts come from the spec.
    """
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise SurgeryError(
            f"not an attnviz surgery spec (format {spec.get('format') if isinstance(spec, dict) else None!r}, expected {SPEC_FORMAT!r})"
        )
    new = copy.deepcopy(model)
    device, dtype = _param_device(new)
    recorded = surgery_spec(new)
    for ins in spec["insertions"]:
        sites = [Site(**{**s, "shape": tuple(s.get("shape", ()))}) for s in ins["sites"]]
        kwargs = _from_json(ins.get("kwargs", {}))
        blocks, safe = _build_blocks(ins["attention"], sites, ins["init"], kwargs, device, dtype)
        for block in blocks.values():
            block.train(new.training)
        _apply_sites(new, sites, blocks, safe, None)
        recorded["insertions"].append(copy.deepcopy(ins))
    if spec.get("base") is not None:
        recorded["base"] = copy.deepcopy(spec["base"])
    setattr(new, SPEC_ATTR, recorded)
    return new


def remove_attention(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without its attention blocks: the original function and keys.

    The base weights are the model's current ones (trained or not).
    """
    spec = getattr(model, SPEC_ATTR, None)
    if not spec or not spec["insertions"]:
        raise SurgeryError(f"{type(model).__name__} has no attention surgery to remove")
    new = copy.deepcopy(model)
    owners: set[str] = set()
    for ins in reversed(spec["insertions"]):
        for s in ins["sites"]:
            owner = new.get_submodule(s["owner"]) if s["owner"] else new
            delattr(owner, s["attr"])
            owners.add(s["owner"])
    for path in owners:
        module = new.get_submodule(path) if path else new
        module.__class__ = _base_class(module)
    delattr(new, SPEC_ATTR)
    return new


def _iter_sites(spec: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for ins in spec.get("insertions", []):
        yield from ins["sites"]
