"""Intermediate outputs without hooks: a forward rewritten to return them.

>>> import torch, torchvision
>>> from attnviz import with_intermediates
>>> net = torchvision.models.resnet18().eval()
>>> wrapped = with_intermediates(net, ["layer1.0.bn2", "layer4"])
>>> logits, feats = wrapped(torch.randn(2, 3, 64, 64))
>>> sorted(feats), tuple(feats["layer4"].shape)
(['layer1.0.bn2', 'layer4'], (2, 512, 2, 2))

Names are module paths (``layer4``, ``layer3.1.attn``) and values inside
modules (``layer1.0.add``, ``layer1.0.attn.gate``); see
:mod:`attnviz._tracing` for the naming rules and :func:`list_intermediates`
for every name a model offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._capture import CapturePlan, build_capture, default_example_input, plan_capture, run_eval
from ._select import glob_to_regex, is_glob, is_module_type, type_name, unknown_name_error
from ._utils import unwrap_model
from .errors import AttnvizError

#: An example input: a tensor, a tuple of positional arguments or a dict of keyword arguments.
ExampleInput = torch.Tensor | tuple | list | dict

__all__ = [
    "ExampleInput",
    "Intermediate",
    "IntermediateModel",
    "list_intermediates",
    "resolve_names",
    "value_shapes",
    "with_intermediates",
]

Selector = str | type | Sequence[str | type]


@dataclass(frozen=True)
class Intermediate:
    """A capturable value: its name, shape (batch of the example input), and what makes it.

    ``kind`` is ``"module"`` for a module's output (``type`` is then the
    module's class name) or ``"op"`` for a function/method value (``type`` is
    the op).
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    type: str

    def __str__(self) -> str:
        return f"{self.name:<40} {self.kind:<6} {self.type:<24} {list(self.shape)}"


def value_shapes(
    plan: CapturePlan, example_input: ExampleInput | None
) -> dict[str, tuple[int, ...]]:
    """Run the model once on ``example_input`` and record every tensor value's shape.

    ``example_input`` is a tensor, a tuple of positional arguments (a model taking
    ``(image, meta)``) or a dict of keyword arguments. Without one the model's default
    input (:func:`default_example_input`) is tried, then smaller sizes; the result is
    cached on the plan.
    """
    cached = getattr(plan, "_shapes", None)
    if cached is not None and example_input is None:
        return cached
    model = plan.model
    tree, forward = build_capture(plan, plan.names(), strict=False)
    holder = nn.Module()
    holder.model = tree
    if example_input is not None:
        candidates = [example_input]
    else:
        first = default_example_input(model)
        smaller = [
            first.new_empty(*first.shape[:2], s, s).normal_()
            for s in (128, 64, 32)
            if s < first.shape[-1]
        ]
        candidates = [first, *smaller]
    error: Exception | None = None
    for x in candidates:
        try:
            args, kwargs = call_arguments(x)
            _, values = run_eval(model, forward, holder, *args, **kwargs)
            break
        except Exception as exc:
            error = error or exc
    else:
        x = candidates[0]
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        tried = (
            ""
            if len(candidates) == 1
            else f" (and at {[tuple(c.shape[-2:]) for c in candidates[1:]]})"
        )
        raise AttnvizError(
            f"running {type(model).__name__} on an example input of shape {shape} failed{tried} "
            f"({type(error).__name__}: {error}); pass example_input= with an input the model accepts"
        ) from error
    shapes = {n: tuple(v.shape) for n, v in values.items() if isinstance(v, torch.Tensor)}
    plan._shapes = shapes  # type: ignore[attr-defined]
    return shapes


def call_arguments(example: ExampleInput) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for ``model(*args, **kwargs)``: a tensor is one argument, a tuple or
    list are the positional arguments, a dict the keyword arguments."""
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, tuple | list):
        return tuple(example), {}
    return (example,), {}


def _describe(plan: CapturePlan, name: str) -> tuple[str, str]:
    value = plan.values[name]
    if value.module is not None:
        return "module", type(plan.model.get_submodule(value.module)).__name__
    return "op", value.local.rsplit(".", 1)[-1]


def list_intermediates(
    model: nn.Module, example_input: ExampleInput | None = None
) -> list[Intermediate]:
    """Every capturable tensor value of ``model`` with its shape, in execution order.

    Runs the model once (eval mode, no grad, flags restored) on
    ``example_input`` or on a random input sized from the model's config.
    """
    plan = plan_capture(model)
    shapes = value_shapes(plan, example_input)
    out = []
    for name in plan.names():
        if name in shapes:
            kind, typ = _describe(plan, name)
            out.append(Intermediate(name, shapes[name], kind, typ))
    return out


def resolve_names(
    plan: CapturePlan,
    names: Selector,
    *,
    types: type | tuple[type, ...] | None = None,
    example_input: ExampleInput | None = None,
) -> list[str]:
    """Expand globs and module types into concrete names, in execution order.

    A string is an exact name or a dot-aware glob (``*`` stays within one
    name, ``**`` crosses dots); a module class selects the outputs of every
    module of that class; ``types`` restricts every selector to modules of
    those classes. Unknown names raise with the closest valid ones.
    """
    selectors = [names] if isinstance(names, str | type) else list(names)
    if not selectors:
        raise AttnvizError("names is empty: give at least one name, glob or module type")
    if types is not None and not isinstance(types, tuple):
        types = (types,)
    for t in types or ():
        if not is_module_type(t):
            raise TypeError(f"types must be nn.Module subclasses, got {t!r}")

    def module_of(name: str) -> nn.Module | None:
        path = plan.values[name].module
        return plan.model.get_submodule(path) if path is not None else None

    def type_ok(name: str, wanted: tuple[type, ...] | None) -> bool:
        if wanted is None:
            return True
        mod = module_of(name)
        return mod is not None and isinstance(mod, wanted)

    need_shapes = types is not None or any(not isinstance(s, str) or is_glob(s) for s in selectors)
    tensor_names = set(value_shapes(plan, example_input)) if need_shapes else set(plan.values)
    order = {n: i for i, n in enumerate(plan.names())}
    chosen: list[str] = []
    for sel in selectors:
        if isinstance(sel, str) and not is_glob(sel):
            if sel not in plan.values:
                raise unknown_name_error(
                    "intermediate",
                    sel,
                    plan.names(),
                    hint="list_intermediates(model) (command line: attnviz layers MODEL) shows every name"
                    + _inside_untraced(plan, sel),
                )
            if not type_ok(sel, types):
                raise AttnvizError(
                    f"{sel!r} is not the output of a {[type_name(t) for t in types]} module"
                )
            chosen.append(sel)
            continue
        if isinstance(sel, str):
            rx = glob_to_regex(sel)
            hits = [
                n for n in plan.names() if n in tensor_names and rx.match(n) and type_ok(n, types)
            ]
            label = sel if types is None else f"{sel} of type {[type_name(t) for t in types]}"
        elif is_module_type(sel):
            wanted = (
                (sel,)
                if types is None
                else tuple(t for t in types if issubclass(t, sel) or issubclass(sel, t))
            )
            hits = [
                n
                for n in plan.names()
                if n in tensor_names
                and plan.values[n].module is not None
                and type_ok(n, (sel,))
                and type_ok(n, wanted)
            ]
            hits = _outermost_calls(plan, hits)
            label = type_name(sel)
        else:
            raise TypeError(f"a name selector must be a str or an nn.Module subclass, got {sel!r}")
        if not hits:
            raise unknown_name_error(
                "intermediate selector",
                label,
                sorted(tensor_names, key=order.get),
                hint="it matched nothing; list_intermediates(model) (command line: attnviz layers MODEL) shows every name",
            )
        chosen.extend(hits)
    return sorted(dict.fromkeys(chosen), key=order.get)


def _inside_untraced(plan: CapturePlan, name: str) -> str:
    """Explain an unknown name that lies inside a module whose forward could not be traced."""
    for path, failure in plan.failures.items():
        if path and name.startswith(path + "."):
            return (
                f". '{path}' ({failure.module_type}) could not be traced, so only its output "
                f"and its submodules' values exist: {failure.op}"
            )
    return ""


def _outermost_calls(plan: CapturePlan, names: list[str]) -> list[str]:
    """For a type selector keep one name per module call (not its aliases' duplicates)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for n in names:
        v = plan.values[n]
        key = (v.module or n, n)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


class IntermediateModel(nn.Module):
    """``model`` with a forward that returns ``(output, {name: tensor})``.

    Shares every parameter and buffer with the wrapped model; holds no state
    between calls. Switch train/eval on this wrapper.
    """

    def __init__(
        self,
        model: nn.Module,
        tree: nn.Module,
        forward,
        names: list[str],
        grad_from: str | None = None,
    ):
        super().__init__()
        self.model = tree
        self.names = list(names)
        self.grad_from = grad_from
        self._capture_forward = forward

    def forward(self, *args, **kwargs):
        if self.grad_from is None:
            return self._capture_forward(self, *args, **kwargs)
        with torch.set_grad_enabled(torch.is_grad_enabled()):  # restored even if the forward raises
            return self._capture_forward(self, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"names={self.names}"


def with_intermediates(
    model: nn.Module,
    names: Selector,
    *,
    example_input: ExampleInput | None = None,
    types: type | tuple[type, ...] | None = None,
    grad_from: str | None = None,
) -> IntermediateModel:
    """Wrap ``model`` so its forward returns ``(output, {name: tensor})``, without hooks.

    ``names``: exact names, dot-aware globs (``"layer*.?.attn.gate"``), module
    classes (``nn.Conv2d``: every conv output), or a list of those; ``types``
    restricts globs to modules of those classes (``"features.*"`` with
    ``types=nn.Conv2d``). Values are exact at the point they are produced,
    also when a later op works in place; gradients flow to them.
    ``grad_from`` (one of the names) records autograd only from that value
    on: the forward before it saves nothing for a backward and the value is
    returned as a leaf, which is what a gradient to one layer (Grad-CAM) needs.

    >>> import torch, torchvision
    >>> net = torchvision.models.resnet18().eval()
    >>> out, feats = with_intermediates(net, nn.Conv2d)(torch.randn(1, 3, 64, 64))
    >>> len(feats)
    20
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = unwrap_model(model, "with_intermediates")
    plan = plan_capture(model)
    chosen = resolve_names(plan, names, types=types, example_input=example_input)
    if grad_from is not None and grad_from not in chosen:
        raise AttnvizError(f"grad_from={grad_from!r} must be one of the captured names {chosen}")
    tree, forward = build_capture(plan, chosen, grad_from=grad_from)
    return IntermediateModel(model, tree, forward, chosen, grad_from)
