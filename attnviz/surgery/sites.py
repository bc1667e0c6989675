"""Where blocks go: turning ``where=`` into :class:`~attnviz.surgery.spec.Site` objects.

``"residual"`` finds every residual add (two equal-shaped 4-D maps summed) and
takes the deeper input, the branch; ``"stages"`` takes the last feature map of
each spatial resolution on the model's trunk (:func:`stage_sites`, also used by
the analysis and the CAM command); selectors are module-name globs, value
names, module types or lists of them. Channel counts and shapes come from one
run of an example input through the capture plan.

For ``parallel`` and ``replace`` (:func:`plan_module_sites`) a site is a
module call: its input's shape is read from the traced call's input node, and
the call must map its input to its output by an integer stride.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .._capture import CapturePlan, Value
from .._select import closest, glob_to_regex, is_module_type, type_name, unknown_name_error
from ..errors import SurgeryError
from .spec import Site

__all__ = [
    "WHERE_KEYWORDS",
    "Where",
    "attr_name",
    "is_sequential",
    "plan_module_sites",
    "plan_sites",
    "stage_sites",
]

WHERE_KEYWORDS = ("residual", "stages")

Where = str | type | Sequence[str | type]


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def is_sequential(module: nn.Module) -> bool:
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
        if not is_sequential(model.get_submodule(parent)):
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


def stage_sites(plan: CapturePlan, shapes: dict[str, tuple[int, ...]]) -> list[str]:
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
                and not is_sequential(module)
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
                    "attnviz.list_intermediates(model) (command line: attnviz layers MODEL) lists every name"
                    + _trace_note(plan),
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


def attr_name(module: nn.Module, base: str, taken: set[str]) -> str:
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


def plan_sites(
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
        names = stage_sites(plan, shapes) if stages else _selector_sites(plan, shapes, where)
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
        attr = attr_name(module, base, taken.setdefault(owner, set()))
        sites.append(Site(name, owner, local, attr, int(shapes[name][1]), tuple(shapes[name])))
    return sites


# -- module sites: parallel and replace ----------------------------------------------------
def _call_input_shape(
    plan: CapturePlan, shapes: dict[str, tuple[int, ...]], value: Value, example: Any
) -> tuple[int, ...] | str:
    """The shape of the one tensor a module call reads, or why it cannot be known."""
    part = _graph_parts(plan).get(value.part)
    call = None
    if part is not None:
        call = next((c for c in part.traces[False].calls if c.name == value.local), None)
    if call is None:
        return "its call is inside a module that could not be traced" + _trace_note(plan)
    if len(call.inputs) != 1:
        return f"it is called with {len(call.inputs)} tensor inputs, not one"
    node = call.inputs[0]
    if node.op == "placeholder":
        placeholders = [n for n in part.traces[False].graph.nodes if n.op == "placeholder"]
        if part.path == "" and isinstance(example, torch.Tensor) and len(placeholders) == 1:
            return tuple(example.shape)
        return "its input is the input of a module that could not be traced"
    shape = shapes.get(f"{part.path}.{node.meta['attnviz_name']}".strip("."))
    return shape if shape is not None else "its input is not a tensor"


def _module_hits(plan: CapturePlan, shapes, where: Where, placement: str) -> list[str]:
    """The module calls ``where`` selects; a selector that names only values is an error."""
    if isinstance(where, str) and where in WHERE_KEYWORDS:
        raise SurgeryError(
            f"placement={placement!r} takes module selectors (a glob such as 'layer4.*.conv2' or a "
            f"type such as nn.Conv2d), not {where!r}: its sites are values, and {placement} needs "
            "the module that computes them"
        )
    names = _selector_sites(plan, shapes, where)
    modules = [n for n in names if plan.values[n].module is not None]
    if not modules:
        valid = sorted({v.module for v in plan.values.values() if v.module})
        shown = names[0] if len(names) == 1 else names[:4]
        raise SurgeryError(
            f"placement={placement!r} needs module sites, but {where!r} selects values that are "
            f"not a module's output ({shown}); modules, closest first: "
            f"{closest(names[0], valid)}"
        )
    return modules


def plan_module_sites(
    model: nn.Module,
    plan: CapturePlan,
    shapes: dict[str, tuple[int, ...]],
    where: Where,
    placement: str,
    example: Any,
    attention_paths: Sequence[str] = (),
) -> list[Site]:
    """Sites for ``parallel`` (the block beside a module call) and ``replace`` (the module swapped).

    Each site records the call's input shape (``in_shape``) next to its output
    shape; the output must be the input downsampled by an integer stride. A
    ``replace`` site is a module called once, owned by its parent (the block
    takes its attribute) and holding no attention block of an earlier insertion.
    """
    names = _module_hits(plan, shapes, where, placement)
    if placement == "replace":
        calls: dict[str, int] = {}
        for v in plan.values.values():  # one value per call of a module
            if v.module is not None:
                calls[v.module] = calls.get(v.module, 0) + 1
        paths = list(dict.fromkeys(plan.values[n].module for n in names))
        names = [next(n for n in names if plan.values[n].module == p) for p in paths]
    taken: dict[str, set[str]] = {}
    sites = []
    for name in names:
        value = plan.values[name]
        out_shape = shapes.get(name)
        in_shape = _call_input_shape(plan, shapes, value, example)
        if isinstance(in_shape, str):
            raise SurgeryError(f"site {name!r}: cannot place a block {placement}: {in_shape}")
        if out_shape is None or len(out_shape) != 4 or len(in_shape) != 4:
            got = [list(s) if s else None for s in (in_shape, out_shape)]
            raise SurgeryError(
                f"site {name!r}: {placement} needs a module mapping a 4-D feature map to a 4-D "
                f"feature map [B, C, H, W]; this one maps {got[0]} to {got[1]}"
            )
        (hi, wi), (ho, wo) = in_shape[2:], out_shape[2:]
        if not (ho and wo and hi % ho == 0 and hi // ho == wi // max(wo, 1) and wi % wo == 0):
            raise SurgeryError(
                f"site {name!r}: its module maps {hi}x{wi} to {ho}x{wo}, which is no integer "
                f"stride; {placement} needs a module whose output is its input downsampled by a stride"
            )
        module_path = value.module
        module = model.get_submodule(module_path)
        if placement == "parallel":
            if getattr(module, "inplace", False):
                raise SurgeryError(
                    f"site {name!r}: {type(module).__name__}(inplace=True) overwrites its input, "
                    "which the parallel block reads; choose the module before or after it"
                )
            owner = value.scope
            local = _local(owner, name)
            host = model.get_submodule(owner) if owner else model
            attr = attr_name(
                host, f"{local.replace('.', '_')}_attn", taken.setdefault(owner, set())
            )
        else:
            if calls.get(module_path, 0) > 1:
                raise SurgeryError(
                    f"site {name!r}: module {module_path!r} is called {calls[module_path]} times in "
                    "the forward; replace swaps the module, so it must be called once"
                )
            inside = [
                p
                for p in attention_paths
                if p == module_path
                or p.startswith(module_path + ".")
                or module_path.startswith(p + ".")
            ]
            if inside:
                raise SurgeryError(
                    f"site {name!r}: {module_path!r} holds or is part of the attention block "
                    f"{inside[0]!r} of an earlier insertion; replace a module of the base model"
                )
            owner, _, attr = module_path.rpartition(".")
            local = ""
        sites.append(
            Site(
                name,
                owner,
                local,
                attr,
                int(in_shape[1]),
                tuple(out_shape),
                tuple(int(d) for d in in_shape),
            )
        )
    if placement == "replace":
        paths = [s.path for s in sites]
        nested = [(a, b) for a in paths for b in paths if b.startswith(a + ".")]
        if nested:
            raise SurgeryError(
                f"replace sites {nested[0][0]!r} and {nested[0][1]!r} are nested: one module "
                "cannot be replaced together with a module inside it; narrow the selector"
            )
    return sites
