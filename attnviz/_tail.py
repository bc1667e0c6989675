"""A model's forward from one captured value on: re-run what comes after a layer, not what precedes it.

Ablation-CAM needs the model's output with one channel of a layer replaced, for
every channel of every image. Running the whole model for each copy repeats the
layers before the target layer, which do not change. :func:`layer_tail` cuts the
model's traced graph (:mod:`attnviz._capture`) at the layer:

* the **tail** is every op that depends on the layer's value, plus the constants
  they use; its inputs are the replaced value and the *frontier*: the values made
  before the cut that the tail reads (a skip connection's input, the input size
  that a segmentation head upsamples to, ...). The frontier has capturable names:
  the caller captures them with the layer in its ordinary forward and hands them
  over, row-indexed like the copies (``value[owner]``);
* the **full** forward is the whole graph with the layer's value replaced, run on
  the repeated images (what pytorch-grad-cam does for every chunk of channels).

:meth:`LayerTail.runner` checks the tail once per batch on unablated copies in a
different batch size (so a frontier value that holds the batch size, or a tensor
whose first dimension is not the batch, is caught) and falls back to the full
forward when the tail does not reproduce the model's scores, or when an in-place
op makes the cut unsafe. Either way the outputs are the model's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from ._capture import plan_capture
from ._tracing import compile_graph, may_mutate
from .errors import TraceError

__all__ = ["LayerTail", "layer_tail"]

# a tail whose scores are this close (relative to the largest score) to the model's is exact
_CHECK_RTOL = 1e-4


@dataclass(frozen=True)
class LayerTail:
    """The forward of ``root`` from the value ``layer`` on (see the module docstring).

    ``frontier``: the capturable names the tail reads besides the layer; ``safe``
    is False when an in-place op across the cut means only the full forward is exact.
    """

    root: nn.Module
    layer: str
    frontier: tuple[str, ...]
    feeds: tuple[
        tuple[str, Any], ...
    ]  # per tail input: ("value", name) | ("input", _) | ("const", v)
    tail_fn: Callable[..., Any]
    full_fn: Callable[..., Any]
    safe: bool

    def tail(self, replaced: Tensor, values: dict[str, Any], images: Tensor, owner: Tensor) -> Any:
        """The output for ``replaced`` (rows ``owner`` of the batch whose ``values`` were captured)."""
        batch = images.shape[0]
        args = []
        for kind, what in self.feeds:
            if kind == "value":
                args.append(_take_rows(values[what], owner, batch))
            elif kind == "input":
                args.append(images[owner])
            else:
                args.append(what)
        return self.tail_fn(self.root, replaced, *args)

    def full(self, replaced: Tensor, images: Tensor, owner: Tensor) -> Any:
        """The output of the whole forward on ``images[owner]`` with the layer's value replaced."""
        return self.full_fn(self.root, replaced, images[owner])

    def runner(
        self,
        acts: Tensor,
        values: dict[str, Any],
        images: Tensor,
        score: Callable[[Any, Tensor], Tensor],
        reference: Tensor,
    ) -> Callable[[Tensor, Tensor], Any]:
        """``run(replaced, owner) -> output``: the tail if it is exact for this batch, else the full forward.

        ``acts`` is the layer's value on ``images``, ``score(output, owner)`` the
        target scores of a derived batch and ``reference`` the scores of ``images``.
        """
        if self.safe and self._tail_reproduces(acts, values, images, score, reference):
            return lambda replaced, owner: self.tail(replaced, values, images, owner)
        return lambda replaced, owner: self.full(replaced, images, owner)

    def _tail_reproduces(self, acts, values, images, score, reference) -> bool:
        b = images.shape[0]
        owner = torch.cat([torch.arange(b - 1, -1, -1), torch.zeros(1, dtype=torch.long)])
        owner = owner.to(acts.device)
        try:
            got = score(self.tail(acts[owner].clone(), values, images, owner), owner)
        except (RuntimeError, ValueError, TypeError, IndexError):
            return False
        want = reference[owner]
        if not isinstance(got, Tensor) or got.shape != want.shape:
            return False
        scale = float(want.abs().amax()) if want.numel() else 0.0
        tol = _CHECK_RTOL * max(scale, 1e-6)
        return bool(((got.float() - want.float()).abs() <= tol).all())


def layer_tail(model: nn.Module, layer: str) -> LayerTail:
    """Cut ``model``'s traced eval-mode graph at the value named ``layer`` (see the module docstring).

    Raises :class:`~attnviz.errors.TraceError` when the model's top-level forward
    cannot be traced or the layer is only reachable inside an untraceable module.
    """
    root = copy.copy(model)  # shares every module; keeps no reference to ``model`` itself
    plan = plan_capture(root)
    if plan.root.kind != "graph":
        failure = plan.failures.get("")
        raise TraceError(
            f"the forward of {type(model).__name__} cannot be traced ({failure}); re-running "
            "it from a layer (Ablation-CAM) needs a traceable top-level forward"
        )
    value = plan.values.get(layer)
    if value is None or value.part != "":
        raise TraceError(
            f"{layer!r} is only reachable inside a module whose forward cannot be traced; "
            "re-running the model from it (Ablation-CAM) needs a layer in the traced graph"
        )
    trace = plan.root.traces[False]
    graph = trace.graph
    cut = trace.names[value.local]
    order = {node: i for i, node in enumerate(graph.nodes)}

    after: set[fx.Node] = set()  # the cut and everything computed from it
    on_input: set[fx.Node] = set()  # values that depend on the model's input
    for node in graph.nodes:
        inputs = node.all_input_nodes
        if node is cut or any(i in after for i in inputs):
            after.add(node)
        if node.op == "placeholder" or any(i in on_input for i in inputs):
            on_input.add(node)
    output = next(n for n in graph.nodes if n.op == "output")
    after.discard(output)

    frontier: list[fx.Node] = []
    constants: set[fx.Node] = set()
    consumers = [n for n in graph.nodes if n in after and n is not cut] + [output]
    for node in consumers:
        for inp in node.all_input_nodes:
            if inp in after:
                continue
            if inp in on_input:
                if inp not in frontier:
                    frontier.append(inp)
            else:
                _add_constant(inp, constants)
    frontier.sort(key=order.get)

    tail_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: tail_graph.placeholder("attnviz_replaced")}
    feeds: list[tuple[str, Any]] = []
    names: list[str] = []
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(frontier):
        env[node] = tail_graph.placeholder(f"attnviz_frontier_{i}")
        if node.op == "placeholder":
            if node is placeholders[0]:
                feeds.append(("input", None))
            elif node.args:
                feeds.append(("const", node.args[0]))  # an optional input: its default
            else:
                raise TraceError(
                    f"the layers after {layer!r} read the model input {node.target!r}, which "
                    "has no default; only the first input is known"
                )
        else:
            name = node.meta["attnviz_name"]
            feeds.append(("value", name))
            names.append(name)
    for node in graph.nodes:
        if (node in after and node is not cut) or node in constants:
            env[node] = tail_graph.node_copy(node, lambda n: env[n])
    tail_graph.output(fx.graph.map_arg(output.args[0], lambda n: env[n]))
    tail_graph.lint()

    full_graph = fx.Graph()
    full_env: dict[fx.Node, fx.Node] = {}
    replaced = full_graph.placeholder("attnviz_replaced")
    for node in graph.nodes:
        if node is cut:
            full_env[node] = replaced
        else:
            full_env[node] = full_graph.node_copy(node, lambda n: full_env[n])
    full_graph.lint()

    label = f"tail:{type(model).__name__}:{layer}"
    return LayerTail(
        root=root,
        layer=layer,
        frontier=tuple(names),
        feeds=tuple(feeds),
        tail_fn=compile_graph(tail_graph, label=label),
        full_fn=compile_graph(full_graph, label=label + ":full"),
        safe=_cut_is_safe(graph, root, after, set(frontier), order),
    )


def _add_constant(node: fx.Node, constants: set[fx.Node]) -> None:
    """``node`` and its ancestors (none depends on the input): copied into the tail as they are."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n not in constants:
            constants.add(n)
            stack.extend(n.all_input_nodes)


def _cut_is_safe(
    graph: fx.Graph, root: nn.Module, after: set[fx.Node], frontier: set[fx.Node], order: dict
) -> bool:
    """False when an in-place op makes the captured frontier differ from what the tail must read.

    Two cases: an op before the cut mutates a frontier value that the tail reads
    after the mutation (the capture keeps the value as it was made), and an op
    after the cut mutates a value from before it that later ops outside the tail
    read (they would have seen the ablated layer).
    """
    for node in graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method") or not may_mutate(
            node, root
        ):
            continue
        target = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if target is None:
            continue
        later = [u for u in target.users if order[u] > order[node]]
        if node not in after and target in frontier and any(u in after for u in later):
            return False
        if node in after and target not in after and any(u not in after for u in later):
            return False
    return True


def _take_rows(value: Any, owner: Tensor, batch: int) -> Any:
    """Rows ``owner`` of a captured batch value; anything without the batch dimension as it is."""
    if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch:
        return value[owner.to(value.device)]
    return value
