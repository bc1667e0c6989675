"""Forwards rewritten to return named intermediate values, without hooks.

The plan for a model is a tree of *parts*:

* a **graph** part is a module traced through all its submodules (see
  :func:`attnviz._tracing.trace_deep`); its forward is regenerated from the
  graph with the requested values added to its outputs;
* an **eager** part is a module whose own forward cannot be traced (a
  data-dependent ``if``, say). It keeps running its own code, while each of
  its children gets a part of its own.

When the top-level model is a graph part (the usual case) the captured values
are plain outputs of one generated function: no state, no side channel, fine
under autograd, ``torch.compile`` and DDP. Values inside eager parts travel
through a :class:`contextvars.ContextVar` that lives for one forward call,
which keeps that path thread-safe and stateless too.

Captured values are exact at the point they were produced: a value whose
consumer works in place (``ReLU(inplace=True)`` after ``bn1``) is handed to
that consumer as a clone, so the capture keeps the value at that point and
gradients still flow through it. In eager mode every capture also checks the
tensor's version counter at the end of the forward and raises rather than
return a value that something else modified in place.
"""

from __future__ import annotations

import contextvars
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from ._tracing import (
    NamedTracer,
    Trace,
    TraceFailure,
    compile_graph,
    may_mutate,
    restore_mode,
    set_mode,
    trace_both_modes,
    trace_deep,
)
from .errors import AttnvizError

__all__ = ["CapturePlan", "Value", "build_capture", "default_example_input", "plan_capture"]

_SINK: contextvars.ContextVar[dict | None] = contextvars.ContextVar("attnviz_sink", default=None)


# -- runtime helpers called from generated code --------------------------------
def _tensor_version(value):
    if torch.compiler.is_compiling() or not isinstance(value, torch.Tensor):
        return 0
    return value._version


def _check_versions(records):
    if torch.compiler.is_compiling():
        return None
    changed = [
        name
        for name, value, version in records
        if isinstance(value, torch.Tensor) and value._version != version
    ]
    if changed:
        raise RuntimeError(
            f"attnviz: captured value(s) {changed} were modified in place after they were "
            "captured (by an op attnviz could not see, e.g. inside a leaf module); capture a "
            "later value or make that op out-of-place"
        )
    return None


def _emit(values):
    sink = _SINK.get()
    if sink is not None:
        for name, value in values.items():
            sink[_unique_in(sink, name)] = value
    return None


def _unique_in(sink: dict, name: str) -> str:
    if name not in sink:
        return name
    k = 1
    while f"{name}_{k}" in sink:
        k += 1
    return f"{name}_{k}"


# -- plan ------------------------------------------------------------------------
@dataclass
class Value:
    """One capturable value: its name and where it comes from.

    ``scope`` is the module whose forward produced it (for a module's output:
    the module that called it); ``module`` the module path when the value is a
    module's output; ``local`` its name inside the graph of ``part``.
    """

    name: str
    scope: str
    module: str | None
    leaf: bool
    part: str
    local: str
    op: str
    shape: tuple[int, ...] | None = None


@dataclass
class Part:
    path: str
    kind: str  # "graph" | "eager" | "leaf"
    traces: dict[bool, Trace] | None = None
    children: list[Part] = field(default_factory=list)
    failure: TraceFailure | None = None


@dataclass
class CapturePlan:
    """Everything needed to capture values from one model."""

    model: nn.Module
    root: Part
    values: dict[str, Value]
    failures: dict[str, TraceFailure]

    def names(self) -> list[str]:
        return list(self.values)


def _prefix(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


def _is_leaf_type(module: nn.Module) -> bool:
    return NamedTracer().is_leaf_module(module, "")


def _plan_part(module: nn.Module, path: str, failures: dict[str, TraceFailure]) -> Part:
    if path and _is_leaf_type(module):
        return Part(path, "leaf")
    try:
        traces = trace_both_modes(module, trace_deep)
    except TraceFailure as failure:
        failures[path] = failure
        part = Part(path, "eager", failure=failure)
        part.children = [
            _plan_part(child, _prefix(path, name), failures)
            for name, child in module.named_children()
        ]
        return part
    part = Part(path, "graph", traces)
    for mode_trace in {id(t): t for t in traces.values()}.values():
        for leaf_path, failure in mode_trace.failures.items():
            failures.setdefault(_prefix(path, leaf_path), failure)
    leaf_paths = sorted(set().union(*(t.leaves for t in traces.values())))
    for leaf_path in leaf_paths:
        part.children.append(
            _plan_part(module.get_submodule(leaf_path), _prefix(path, leaf_path), failures)
        )
    return part


def _graph_values(part: Part, values: dict[str, Value]) -> None:
    """Name every value of a graph part, module outputs right after their last op."""
    t = part.traces[False]
    aliases: dict[fx.Node, list] = {}
    leaf_calls: dict[str, object] = {}
    for call in t.calls:
        if call.leaf:
            leaf_calls[call.name] = call
        elif call.output is not None:
            aliases.setdefault(call.output, []).append(call)
    p = part.path
    for node in t.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        local = node.meta["attnviz_name"]
        call = leaf_calls.get(local) if node.op == "call_module" else None
        if call is not None:
            entry = Value(
                _prefix(p, local),
                _prefix(p, call.caller),
                _prefix(p, call.path),
                True,
                p,
                local,
                "module",
            )
        else:
            entry = Value(
                _prefix(p, local),
                _prefix(p, node.meta["attnviz_scope"]),
                None,
                False,
                p,
                local,
                node.op,
            )
        values.setdefault(entry.name, entry)
        for c in aliases.get(node, []):
            alias = Value(
                _prefix(p, c.name),
                _prefix(p, c.caller),
                _prefix(p, c.path),
                False,
                p,
                c.name,
                "module",
            )
            values.setdefault(alias.name, alias)


def _collect(part: Part, values: dict[str, Value]) -> None:
    if part.kind == "graph":
        _graph_values(part, values)
    for child in part.children:
        _collect(child, values)
    if part.path:
        # the output of a part below an eager module (or of a forced leaf)
        caller = part.path.rsplit(".", 1)[0] if "." in part.path else ""
        kind_leaf = part.kind == "leaf"
        values.setdefault(
            part.path, Value(part.path, caller, part.path, kind_leaf, part.path, "", "module")
        )


def plan_capture(model: nn.Module) -> CapturePlan:
    """Trace ``model`` (falling back to eager parts where needed) and list its values."""
    failures: dict[str, TraceFailure] = {}
    root = _plan_part(model, "", failures)
    values: dict[str, Value] = {}
    _collect(root, values)
    return CapturePlan(model, root, values, failures)


# -- building the capturing forward ---------------------------------------------
def _grad_off():
    """Switch autograd off until :func:`_grad_leaf`; returns the mode to come back to."""
    previous = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    return previous


def _grad_leaf(value, previous):
    """Switch autograd back on and start the graph at ``value`` (a fresh leaf)."""
    torch._C._set_grad_enabled(previous)
    if previous and isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().requires_grad_(True)
    return value


def _capture_graph(
    t: Trace,
    module: nn.Module,
    wanted: dict[str, str],
    *,
    emit: bool,
    strict: bool = True,
    grad_from: str | None = None,
) -> fx.Graph:
    """Copy ``t.graph`` and make it return (or emit) the nodes named in ``wanted``.

    ``wanted`` maps names local to this graph (``""``: the graph's output) to
    the names the user sees. With ``emit=False`` the graph returns
    ``(output, {name: value})``; with ``emit=True`` it returns its usual output
    and hands the values to the per-call sink. ``grad_from`` (a local name)
    runs everything before that value without autograd and makes the value a
    leaf that requires grad, so a backward stops there and the forward before
    it saves nothing for one.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out_value = graph.graph_copy(t.graph, env)
    by_local = {local: env[node] for local, node in t.names.items() if node in env}
    if isinstance(out_value, fx.Node):
        by_local[""] = out_value
    if grad_from is not None:
        start = by_local[grad_from]
        first = next(n for n in graph.nodes if n.op != "placeholder")
        with graph.inserting_before(first):
            previous = graph.call_function(_grad_off, ())
        with graph.inserting_after(start):
            leaf = graph.call_function(_grad_leaf, (start, previous))
        start.replace_all_uses_with(leaf, delete_user_cb=lambda user: user is not leaf)
        if out_value is start:
            out_value = leaf
        by_local = {k: (leaf if v is start else v) for k, v in by_local.items()}
    records = []
    captured: dict[str, fx.Node] = {}
    for local, full in wanted.items():
        node = by_local[local]
        users = [u for u in node.users if u.op != "output"]
        if strict and any(may_mutate(u, module) for u in users):
            with graph.inserting_after(node):
                clone = graph.call_method("clone", (node,))
            for u in users:
                u.replace_input_with(node, clone)
        if strict:
            with graph.inserting_after(node):
                version = graph.call_function(_tensor_version, (node,))
            records.append((full, node, version))
        captured[full] = node
    if records:
        graph.call_function(_check_versions, (tuple(records),))
    if emit:
        graph.call_function(_emit, (captured,))
        graph.output(out_value)
    else:
        graph.output((out_value, captured))
    graph.lint()
    return graph


def _forward_for(
    part: Part,
    module: nn.Module,
    wanted: dict[str, str],
    *,
    emit: bool,
    root: str,
    flag: str,
    strict: bool,
    grad_from: str | None = None,
):
    """One function, or a dispatch on ``flag`` (e.g. ``self.training``) when train and eval graphs differ."""
    fns: dict[bool, object] = {}
    for mode in (True, False):
        if mode is False and part.traces[False] is part.traces[True]:
            return fns[True]
        graph = _capture_graph(
            part.traces[mode], module, wanted, emit=emit, strict=strict, grad_from=grad_from
        )
        fns[mode] = compile_graph(
            graph, root=root, label=f"capture:{part.path or type(module).__name__}"
        )
    train, evaluate = fns[True], fns[False]
    owner = flag.rsplit(".", 1)[0]

    def forward(self, *args, **kwargs):
        training = self.model.training if owner == "self.model" else self.training
        return (train if training else evaluate)(self, *args, **kwargs)

    return forward


def _emitting_forward(base_forward, name: str):
    def forward(self, *args, **kwargs):
        out = base_forward(self, *args, **kwargs)
        _emit({name: out})
        return out

    return forward


class _Tree:
    """Shallow copies of the modules on the paths to rewritten forwards.

    Copies share every parameter, buffer and untouched submodule with the
    original model; only ``_modules`` dicts along the rewritten paths are new.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.root = model
        self._copied: set[int] = set()

    def _own(self, module: nn.Module) -> nn.Module:
        if id(module) in self._copied:
            return module
        clone = copy.copy(module)
        clone._modules = dict(module._modules)
        self._copied.add(id(clone))
        return clone

    def replace_forward(self, path: str, forward) -> None:
        parent = self.root = self._own(self.root)
        names = path.split(".") if path else []
        for name in names:
            child = self._own(parent._modules[name])
            parent._modules[name] = child
            parent = child
        base = type(parent)
        parent.__class__ = type(
            base.__name__, (base,), {"forward": forward, "__module__": base.__module__}
        )


def build_capture(
    plan: CapturePlan, names: Sequence[str], *, strict: bool = True, grad_from: str | None = None
) -> tuple[nn.Module, object]:
    """Return ``(model_tree, forward)``: ``forward(wrapper, *args)`` gives ``(out, values)``.

    ``wrapper.model`` must be ``model_tree``: ``plan.model`` itself when every
    name lives in the top graph, else a tree of shallow copies sharing every
    parameter and buffer with it. ``grad_from`` (a name in the top graph)
    records autograd only from that value on (see :func:`_capture_graph`).
    """
    wanted = list(dict.fromkeys(names))
    grad_local = None
    if grad_from is not None:
        value = plan.values[grad_from]
        if plan.root.kind != "graph" or value.part != "":
            raise AttnvizError(
                f"grad_from={grad_from!r} needs the value in the model's top-level graph; "
                "this model (or this value) is only reachable through its eager fallback"
            )
        grad_local = value.local
    by_part: dict[str, dict[str, str]] = {}
    for name in wanted:
        value = plan.values[name]
        by_part.setdefault(value.part, {})[value.local] = name

    model = plan.model
    tree = _Tree(model)

    def visit(part: Part) -> None:
        here = by_part.get(part.path, {})
        if part.path and here:
            module = model.get_submodule(part.path)
            if part.kind == "graph":
                fwd = _forward_for(
                    part, module, here, emit=True, root="self", flag="self.training", strict=strict
                )
            else:
                fwd = _emitting_forward(type(module).forward, part.path)
            tree.replace_forward(part.path, fwd)
        for child in part.children:
            visit(child)

    visit(plan.root)
    uses_sink = any(p for p in by_part)
    graph_forward = None
    if plan.root.kind == "graph":
        graph_forward = _forward_for(
            plan.root,
            model,
            by_part.get("", {}),
            emit=False,
            root="self.model",
            flag="self.model.training",
            strict=strict,
            grad_from=grad_local,
        )
        if not uses_sink:
            return tree.root, graph_forward

    def forward(self, *args, **kwargs):
        token = _SINK.set({})
        try:
            if graph_forward is not None:
                out, values = graph_forward(self, *args, **kwargs)
                values = dict(values)
            else:
                out, values = self.model(*args, **kwargs), {}
            values.update(_SINK.get())
        finally:
            _SINK.reset(token)
        return out, {n: values[n] for n in wanted if n in values}

    return tree.root, forward


# -- example inputs ----------------------------------------------------------------
def default_example_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    """A random input of the size the model expects.

    timm models: their ``pretrained_cfg['input_size']``; attnviz nets: their
    ``default_input_size``; otherwise the first conv's input channels at 224x224.
    """
    size = None
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict) and cfg.get("input_size"):
            size = tuple(cfg["input_size"])
            break
    if size is None and getattr(model, "default_input_size", None):
        size = tuple(model.default_input_size)
    if size is None:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        size = (conv.in_channels if conv is not None else 3, 224, 224)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, *size, generator=gen).to(device=device, dtype=dtype)


def run_eval(module: nn.Module, fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` with ``module`` in eval mode and no grad, restoring the flags."""
    saved = set_mode(module, False)
    try:
        with torch.no_grad():
            return fn(*args, **kwargs)
    finally:
        restore_mode(saved)


__all__ += ["run_eval"]
