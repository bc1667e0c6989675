"""torch.fx tracing with stable value names, shared by surgery and intermediates.

Every value a traced forward produces gets a *qualified name*:

* a call of a leaf module is named by the module path (``layer1.0.bn2``);
* a value made by a function or method inside module ``M`` is named
  ``M.<op>`` (``layer1.0.add``, ``layer3.1.attn.mean``);
* the output of a non-leaf module is also reachable by its path (``layer4``);
* the k-th repeated use of a name gets ``_k`` (torchvision's Bottleneck calls
  ``relu`` three times: ``layer1.0.relu``, ``layer1.0.relu_1``, ``layer1.0.relu_2``).

Names depend only on the module tree and the code of each forward, and the
same rules hold whether a module is traced on its own (surgery rewrites one
block) or inside the whole model (intermediates), so ``bn3`` inside the graph
of ``layer1.0`` is ``layer1.0.bn3`` in the graph of the whole model.

Leaves (modules traced as one opaque call): modules without children,
``torch.nn`` built-ins, timm's registered no-trace modules, attnviz gates, and
modules that failed to trace (see :func:`trace_deep`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import linecache
import operator
import re
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .errors import TraceError

__all__ = [
    "CONTAINERS",
    "OUT_OF_PLACE",
    "TRACE_INTO_ATTR",
    "ModuleCall",
    "NamedTracer",
    "Trace",
    "TraceFailure",
    "compile_graph",
    "may_mutate",
    "trace",
    "trace_deep",
]

#: Modules whose forward only chains their children (with their own forward
#: unchanged): always traced through in deep traces.
CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential,)

_EXTRA_LEAF_TYPES: list[type[nn.Module]] = []

#: A class attribute that makes deep traces enter a module whatever its type (surgery sets
#: it on the classes it generates, so that their blocks are reachable by name).
TRACE_INTO_ATTR = "_attnviz_trace_into"


def register_leaf(cls: type[nn.Module]) -> type[nn.Module]:
    """Mark a module class as a leaf: traced as one named call, never entered."""
    if cls not in _EXTRA_LEAF_TYPES:
        _EXTRA_LEAF_TYPES.append(cls)
    return cls


def _timm_notrace() -> tuple[tuple[type, ...], tuple[Callable, ...]]:
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
    except Exception:  # timm missing or broken: tracing still works without its lists
        return (), ()
    return tuple(get_notrace_modules()), tuple(get_notrace_functions())


def _callable_name(target: Any) -> str:
    if target in OUT_OF_PLACE:  # `out += x` is named like `out + x`: "add"
        return OUT_OF_PLACE[target].__name__.strip("_")
    name = getattr(target, "__name__", None) or type(target).__name__
    return name.strip("_") or "op"


#: The augmented-assignment operators and their out-of-place forms: the one table of
#: in-place operators. Tracing records ``+=``, ``-=``, ``*=``, ``/=`` as themselves (eager
#: code runs ``out += x`` in place; a plain FX trace records an out-of-place ``add``),
#: named like their out-of-place forms; surgery turns one out of place when the block
#: before it must keep its output.
OUT_OF_PLACE = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    operator.ifloordiv: operator.floordiv,
    operator.imod: operator.mod,
    operator.ipow: operator.pow,
    operator.iand: operator.and_,
    operator.ior: operator.or_,
    operator.ixor: operator.xor,
    operator.ilshift: operator.lshift,
    operator.irshift: operator.rshift,
}


class _AugmentedProxy(fx.Proxy):
    """A proxy that records ``+=``, ``-=``, ``*=``, ``/=`` as in-place operators."""

    def __iadd__(self, other):
        return self.tracer.create_proxy("call_function", operator.iadd, (self, other), {})

    def __isub__(self, other):
        return self.tracer.create_proxy("call_function", operator.isub, (self, other), {})

    def __imul__(self, other):
        return self.tracer.create_proxy("call_function", operator.imul, (self, other), {})

    def __itruediv__(self, other):
        return self.tracer.create_proxy("call_function", operator.itruediv, (self, other), {})


def _join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


@dataclass(frozen=True)
class ModuleCall:
    """One call of a module during tracing.

    ``name`` is the call's qualified name (``path`` or ``path_k`` for the k-th
    repeated call), ``caller`` the path of the module whose forward made the
    call, ``output`` the graph node of its return value (None if it returned
    something other than one tensor).
    """

    name: str
    path: str
    caller: str
    leaf: bool
    output: fx.Node | None
    inputs: tuple[fx.Node, ...] = ()


class TraceFailure(TraceError):
    """A module's forward could not be traced; says which module and which op."""

    def __init__(self, path: str, module: nn.Module, cause: BaseException):
        self.path = path
        self.module_type = type(module).__name__
        self.cause = cause
        self.op = _failing_op(cause)
        where = f"'{path}'" if path else "the model's top level"
        super().__init__(
            f"cannot trace {where} ({self.module_type}): {self.op}: "
            f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
        )


def _failing_op(exc: BaseException) -> str:
    """The user's source line where tracing stopped (skips torch's own frames)."""
    frames = traceback.extract_tb(exc.__traceback__)
    torch_dir = torch.__file__.rsplit("/", 1)[0]
    user = [
        f
        for f in frames
        if not f.filename.startswith(torch_dir) and "attnviz/_tracing" not in f.filename
    ]
    if not user:
        return "unknown op"
    f = user[-1]
    return f"`{(f.line or '').strip()}` at {f.filename}:{f.lineno}"


class NamedTracer(fx.Tracer):
    """An FX tracer that names every node (``node.meta['attnviz_name']``).

    ``shallow=True`` treats every submodule as a leaf: the graph is the
    module's own forward and nothing else. ``leaves`` forces extra module
    paths to be leaves.
    """

    def __init__(self, *, shallow: bool = False, leaves: Iterable[str] = ()):
        leaf_types, functions = _timm_notrace()
        super().__init__(autowrap_functions=functions)
        self.shallow = shallow
        self.forced_leaves = set(leaves)
        self._leaf_types = (*leaf_types, *_EXTRA_LEAF_TYPES)
        self._qual_scope = ""
        self.counts: Counter[str] = Counter()
        self.calls: list[ModuleCall] = []
        self._pending: str | None = None

    # -- leaves ------------------------------------------------------------
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.forced_leaves or self.shallow:
            return True
        if isinstance(m, CONTAINERS) and type(m).forward is nn.Sequential.forward:
            return False
        if getattr(type(m), TRACE_INTO_ATTR, False):
            return False  # rewritten by surgery: trace into it to reach its blocks
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        if next(iter(m.children()), None) is None:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _AugmentedProxy(node, self)

    # -- naming ------------------------------------------------------------
    def unique(self, name: str) -> str:
        k = self.counts[name]
        self.counts[name] += 1
        return name if k == 0 else f"{name}_{k}"

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        leaf = self.is_leaf_module(m, path)
        name = self.unique(path)
        caller = self._qual_scope
        inputs = tuple(
            a.node for a in itertools.chain(args, kwargs.values()) if isinstance(a, fx.Proxy)
        )
        if leaf:
            self._pending = name
        else:
            self._qual_scope = name
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception as exc:
            if not leaf and not hasattr(exc, "_attnviz_failed_path"):
                exc._attnviz_failed_path = path  # type: ignore[attr-defined]
            raise
        finally:
            self._qual_scope = caller
            self._pending = None
        node = out.node if isinstance(out, fx.Proxy) else None
        self.calls.append(ModuleCall(name, path, caller, leaf, node, inputs))
        return out

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind == "call_module" and self._pending is not None:
            qual, self._pending = self._pending, None
        elif kind == "call_function":
            qual = self.unique(_join(self._qual_scope, _callable_name(target)))
        elif kind == "call_method":
            qual = self.unique(_join(self._qual_scope, str(target).strip("_")))
        elif kind == "get_attr":
            qual = self.unique(str(target))
        elif kind == "output":
            qual = "output"
        else:
            qual = self.unique(_join(self._qual_scope, str(target)))
        node.meta["attnviz_name"] = qual
        node.meta["attnviz_scope"] = self._qual_scope
        return node


@dataclass
class Trace:
    """A traced graph with its names.

    ``names`` maps every qualified name (values and module outputs) to its node;
    ``calls`` lists module calls in order; ``leaves`` holds module paths that
    were traced as opaque calls because their own forward could not be traced.
    """

    graph: fx.Graph
    calls: list[ModuleCall]
    names: dict[str, fx.Node] = field(default_factory=dict)
    leaves: frozenset[str] = frozenset()
    failures: dict[str, TraceFailure] = field(default_factory=dict)

    def name_of(self, node: fx.Node) -> str:
        return node.meta["attnviz_name"]


def _make_trace(graph: fx.Graph, tracer: NamedTracer) -> Trace:
    names: dict[str, fx.Node] = {}
    for node in graph.nodes:
        if node.op not in ("placeholder", "output", "get_attr"):
            names[node.meta["attnviz_name"]] = node
    for call in tracer.calls:
        if call.output is not None:
            names.setdefault(call.name, call.output)
    return Trace(graph, list(tracer.calls), names, frozenset(tracer.forced_leaves))


def trace(module: nn.Module, *, shallow: bool = False, leaves: Iterable[str] = ()) -> Trace:
    """Trace ``module`` once in its current train/eval mode.

    Raises :class:`TraceFailure` naming the module and the op that stopped it.
    """
    tracer = NamedTracer(shallow=shallow, leaves=leaves)
    try:
        with _hooks_suspended(module) as hooked:
            graph = tracer.trace(module)
    except Exception as exc:
        failed_path = getattr(exc, "_attnviz_failed_path", "")
        failed = module.get_submodule(failed_path) if failed_path else module
        raise TraceFailure(failed_path, failed, exc) from exc
    result = _make_trace(graph, tracer)
    lost = sorted(
        {c.path for c in result.calls if not c.leaf and c.path in hooked} | ({""} & hooked)
    )
    if lost:
        warnings.warn(
            f"forward hooks on {[p or type(module).__name__ for p in lost]} will not run in the rewritten "
            "forward (attnviz traces through these modules); hooks on leaf modules (convolutions, "
            "norms, activations...) still run",
            stacklevel=3,
        )
    return result


@contextlib.contextmanager
def _hooks_suspended(module: nn.Module):
    """Detach forward hooks while tracing, so users' hooks never see proxies.

    Yields the paths of modules that had hooks (restored afterwards).
    """
    saved = {}
    for path, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            saved[path] = (m, m._forward_hooks, m._forward_pre_hooks)
            m._forward_hooks, m._forward_pre_hooks = (
                type(m._forward_hooks)(),
                type(m._forward_pre_hooks)(),
            )
    try:
        yield set(saved)
    finally:
        for m, hooks, pre_hooks in saved.values():
            m._forward_hooks, m._forward_pre_hooks = hooks, pre_hooks


def trace_deep(module: nn.Module, *, max_retries: int = 256) -> Trace:
    """Trace through every submodule, making any module that cannot be traced a leaf.

    When the forward of a submodule stops the trace (data-dependent control
    flow, say), that submodule becomes an opaque leaf and tracing starts
    again: its output stays capturable, its insides are reached by the eager
    fallback in :mod:`attnviz._capture`. Raises :class:`TraceFailure` when the
    top-level forward itself cannot be traced.
    """
    leaves: set[str] = set()
    failures: dict[str, TraceFailure] = {}
    for _ in range(max_retries):
        try:
            result = trace(module, leaves=leaves)
        except TraceFailure as failure:
            if not failure.path or failure.path in leaves:
                failure.failures = failures  # type: ignore[attr-defined]
                raise
            leaves.add(failure.path)
            failures[failure.path] = failure
            continue
        result.failures = failures
        return result
    raise RuntimeError(f"gave up tracing {type(module).__name__} after {max_retries} retries")


# -- in-place detection ------------------------------------------------------
_INPLACE_OPERATORS = {*OUT_OF_PLACE, operator.setitem}


def may_mutate(user: fx.Node, root: nn.Module) -> bool:
    """Whether ``user`` may modify one of its tensor inputs in place."""
    if user.op == "call_module":
        try:
            mod = root.get_submodule(str(user.target))
        except AttributeError:
            return True
        return bool(getattr(mod, "inplace", False))
    if user.op == "call_function":
        if user.target in _INPLACE_OPERATORS or user.kwargs.get("inplace") is True:
            return True
        name = getattr(user.target, "__name__", "")
        return name.endswith("_") and not name.startswith("_")
    if user.op == "call_method":
        name = str(user.target)
        if name.startswith("__i") and name.endswith("__"):
            return True
        return name.endswith("_") and not name.startswith("_")
    return False


# -- code generation ---------------------------------------------------------
def compile_graph(graph: fx.Graph, *, root: str = "self", label: str = "forward") -> Callable:
    """Turn a graph into a plain Python function ``forward(self, ...)``.

    The source is registered with :mod:`linecache`, so tracebacks,
    ``inspect.getsource`` and ``torch.compile`` see real code. The key is the
    source's hash: the same graph traced again reuses its entry, so the cache
    grows with the number of distinct graphs, not with the number of traces.
    """
    _check_targets(graph, label)
    code = graph.python_code(root_module=root)
    digest = hashlib.sha1(code.src.encode()).hexdigest()[:16]
    key = f"<attnviz:{label}:{digest}>"
    linecache.cache[key] = (len(code.src), None, code.src.splitlines(True), key)
    namespace = dict(code.globals)
    exec(compile(code.src, key, "exec"), namespace)
    fn = namespace["forward"]
    fn.__attnviz_source__ = code.src
    return fn


_SAFE_TARGET = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def _check_targets(graph: fx.Graph, label: str) -> None:
    """Refuse module/attribute/method names that could break out of the generated source.

    FX writes a ``call_module`` / ``get_attr`` target into the code (as
    ``getattr(self, "...")`` when it is not an identifier): a name holding a
    quote or a newline would become code. Names that reach here were already
    checked where they came from (a spec file is validated on reading); this is
    the second line of defence, in the code generator itself.
    """
    for node in graph.nodes:
        target = node.target
        bad = False
        if node.op in ("call_module", "get_attr"):
            bad = not isinstance(target, str) or not _SAFE_TARGET.match(target)
        elif node.op == "call_method":
            bad = not isinstance(target, str) or not target.isidentifier()
        if bad:
            raise TraceError(
                f"refusing to generate the forward of {label}: {node.op} target {target!r} is not "
                "a module path or method name (letters, digits, _, - and dots)"
            )


def graph_signature(graph: fx.Graph) -> str:
    """A string that is equal for graphs that compute the same thing."""
    return graph.python_code(root_module="self").src


def set_mode(module: nn.Module, mode: bool) -> dict[nn.Module, bool]:
    """Put ``module`` in train (True) or eval mode; return the flags to restore."""
    saved = {m: m.training for m in module.modules()}
    module.train(mode)
    return saved


def restore_mode(saved: dict[nn.Module, bool]) -> None:
    for m, flag in saved.items():
        m.training = flag


def trace_both_modes(
    module: nn.Module, tracer_fn: Callable[[nn.Module], Trace]
) -> dict[bool, Trace]:
    """Trace in train and in eval mode; one shared entry when the graphs agree.

    Returns ``{True: train_trace, False: eval_trace}`` (the same object twice
    when both modes give the same code), leaving every flag as it was.
    """
    traces: dict[bool, Trace] = {}
    for mode in (True, False):
        saved = set_mode(module, mode)
        try:
            traces[mode] = tracer_fn(module)
        finally:
            restore_mode(saved)
    if graph_signature(traces[True].graph) == graph_signature(traces[False].graph):
        traces[False] = traces[True]
    return traces
