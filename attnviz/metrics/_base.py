"""The accumulator protocol shared by every streaming metric in :mod:`attnviz.metrics`.

An accumulator keeps only fixed-size running state: sums, sums of squares, counts,
fixed-bin histograms, small Gram-like matrices. Memory never grows with the number of
images, and every state is a *sum over images (or batches)*, so

* two accumulators that saw disjoint data combine by adding their states
  (:meth:`Accumulator.merge`, :meth:`Accumulator.reduce`), and
* data-parallel ranks combine with one ``all_reduce(SUM)`` per state
  (:meth:`Accumulator.sync`).

The base class enforces the protocol, so that subclasses cannot forget it (the lesson
of torchmetrics' ``Metric``, which wraps ``update`` / ``compute`` and declares states
with ``add_state``):

* every state is declared once, in ``__init__``, with :meth:`Accumulator.add_state`:
  name, shape and dtype; a shape entry may name a size that only the inputs know
  (``"channels"``), bound by the first update that passes it to
  :meth:`Accumulator._running`;
* states are created by that first update, on the device of its inputs, all at once
  (every state whose sizes are known); later updates must agree on sizes and device.
  Sums are kept in float64;
* ``update`` and ``compute`` of every subclass are wrapped once, when the class is
  defined (``__init_subclass__``), not per instance: ``update`` refuses to run after
  :meth:`Accumulator.sync` and runs under ``torch.no_grad()``; ``compute`` (and
  ``replicate_values`` where a subclass has it) refuses to run before any update.
  Subclasses write neither check.

Why not :class:`torchmetrics.Metric` as the base: its states are declared with fixed
shapes (ours may have sizes only the first input knows), it wraps ``update`` per
instance (and again on unpickling), syncs by ``all_gather`` at ``compute`` time and
caches results, and several of its streaming metrics
(``PearsonCorrCoef``) keep states that are not plain sums. The tests check our values
against torchmetrics where it has the same metric.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from ..errors import AttnvizError

__all__ = ["Accumulator"]

_A = TypeVar("_A", bound="Accumulator")

STATE_DTYPE = torch.float64


class Accumulator:
    """Base class: ``update(...)``, ``compute() -> dict``, ``reset()``, ``states``, ``sync()``.

    Subclasses set :attr:`definition` (one or two sentences with the formula), declare
    their states in ``__init__`` with :meth:`add_state`, implement ``update`` (which gets
    the live states from :meth:`_running` after validating its inputs) and ``compute``,
    and list their constructor arguments in :meth:`settings`. The base class wraps
    ``update`` and ``compute`` (see the module docstring).
    """

    #: One or two sentences with the exact formula; printed by the report.
    definition: ClassVar[str] = ""

    def __init__(self) -> None:
        self._declared: dict[str, tuple[tuple[int | str, ...], torch.dtype]] = {}
        self._states: dict[str, Tensor] = {}
        self._synced = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "update" in cls.__dict__:
            cls.update = _guard_update(cls.__dict__["update"])  # type: ignore[method-assign]
        for name in ("compute", "replicate_values"):  # everything that reads the states
            if name in cls.__dict__:
                setattr(cls, name, _guard_compute(cls.__dict__[name]))

    # ------------------------------------------------------------------ protocol
    def update(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The constructor settings that define the metric (printed by the report)."""
        return {}

    def add_state(
        self, name: str, shape: Sequence[int | str] = (), dtype: torch.dtype = STATE_DTYPE
    ) -> None:
        """Declare the running state ``name`` (once, in ``__init__``).

        ``shape`` holds sizes, or names of sizes known only from the inputs (e.g.
        ``"channels"``) that an update gives to :meth:`_running`. Every state is a sum
        over images or batches, so :meth:`merge` and :meth:`sync` add them.
        """
        if name in self._declared:
            raise RuntimeError(f"{type(self).__name__}: state {name!r} declared twice")
        self._declared[name] = (tuple(shape), dtype)

    def reset(self) -> None:
        """Forget everything seen so far (states are re-created by the next update)."""
        self._states = {}
        self._synced = False

    @property
    def states(self) -> dict[str, Tensor]:
        """The running state tensors by name (a shallow copy of the dict)."""
        return dict(self._states)

    @property
    def updated(self) -> bool:
        """Whether :meth:`update` has been called since construction or :meth:`reset`."""
        return bool(self._states)

    def load_states(self, states: Mapping[str, Tensor]) -> None:
        """Replace the running states, e.g. to resume from a saved ``states`` dict."""
        unknown = sorted(set(states) - set(self._declared))
        if unknown:
            raise AttnvizError(
                f"{type(self).__name__}.load_states: unknown states {unknown}; this "
                f"accumulator declares {sorted(self._declared)}"
            )
        self._states = {name: t.detach().clone() for name, t in states.items()}
        self._synced = False

    def describe(self) -> dict[str, Any]:
        """``{"name", "definition", "settings"}`` for reports."""
        return {
            "name": type(self).__name__,
            "definition": self.definition,
            "settings": self.settings(),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ combining
    def merge(self: _A, *others: _A) -> _A:
        """Add the states of ``others`` (same class and settings, disjoint data) into self."""
        for other in others:
            if type(other) is not type(self):
                raise TypeError(
                    f"{type(self).__name__}.merge: cannot merge a {type(other).__name__}"
                )
            if other.settings() != self.settings():
                raise AttnvizError(
                    f"{type(self).__name__}.merge: settings differ: "
                    f"{self.settings()} vs {other.settings()}"
                )
            if not other._states:
                continue
            if not self._states:
                self.load_states(other._states)
                continue
            _check_same_layout(type(self).__name__, self._states, other._states)
            for name, t in self._states.items():
                t.add_(other._states[name].to(t.device))
        return self

    @classmethod
    def reduce(cls: type[_A], accumulators: Iterable[_A]) -> _A:
        """A new accumulator holding the sum of the states of ``accumulators``."""
        accs = list(accumulators)
        if not accs:
            raise AttnvizError(f"{cls.__name__}.reduce: got no accumulators")
        out = copy.deepcopy(accs[0])
        return out.merge(*accs[1:])

    def sync(self: _A, process_group: Any = None) -> _A:
        """Sum every state over the ranks of ``process_group`` (in place).

        Does nothing unless ``torch.distributed`` is available and initialised. Every
        rank must have called :meth:`update` with inputs of the same layout (same
        channel count, ...); the layouts are compared first so that a mismatch raises
        the same clear error on every rank instead of hanging. All states are sums or
        counts, so after ``sync`` every rank's :meth:`compute` equals the result of a
        single process that saw the concatenated data.

        Call it once, after the last update: a second ``sync`` or an ``update`` after it
        would count other ranks' data twice, so both raise (``reset()`` starts over). To
        look at global values mid-stream, use :meth:`synced`, which syncs a copy. With
        NCCL, set the rank's CUDA device first (``torch.cuda.set_device``), as usual.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self
        if self._synced:
            raise RuntimeError(
                f"{type(self).__name__}.sync: already synced; syncing again would count the "
                "other ranks' data twice (use synced() for a synced copy)"
            )
        dist = torch.distributed
        layout = sorted((name, tuple(t.shape), str(t.dtype)) for name, t in self._states.items())
        world = dist.get_world_size(process_group)
        layouts: list[Any] = [None] * world
        dist.all_gather_object(layouts, layout, group=process_group)
        if any(lay != layouts[0] for lay in layouts):
            raise RuntimeError(
                f"{type(self).__name__}.sync: state layouts differ across ranks "
                f"(a rank without update() or with other input shapes): {layouts}"
            )
        for name in sorted(self._states):
            dist.all_reduce(self._states[name], op=dist.ReduceOp.SUM, group=process_group)
        self._synced = True
        return self

    def synced(self: _A, process_group: Any = None) -> _A:
        """A copy summed over the ranks (see :meth:`sync`); this accumulator is unchanged."""
        return copy.deepcopy(self).sync(process_group)

    # ------------------------------------------------------------------ helpers
    def _running(self, device: torch.device | str, **sizes: int) -> dict[str, Tensor]:
        """The live running states, created as zeros on ``device`` by the first update.

        ``sizes`` binds the named sizes of the declared shapes (``channels=C``); a size
        is bound once, by the first update that passes it, and later updates must pass
        the same value. States whose sizes are not bound yet are created later.
        """
        owner = type(self).__name__
        known = dict(self._bound_sizes())
        device = torch.device(device)
        for name, (decl, dtype) in self._declared.items():
            t = self._states.get(name)
            want = tuple(sizes.get(d, known.get(d)) if isinstance(d, str) else d for d in decl)
            if t is None:
                if None not in want:
                    self._states[name] = torch.zeros(want, dtype=dtype, device=device)
                continue
            if tuple(t.shape) != want and None not in want:
                raise AttnvizError(
                    f"{owner}.update: state {name!r} was created with shape "
                    f"{tuple(t.shape)} by an earlier update, this input needs {want} "
                    "(inputs of one accumulator must keep the same channel count / size)"
                )
            if t.device != device:
                raise AttnvizError(
                    f"{owner}.update: input on {device} but the states live on "
                    f"{t.device} (created by the first update); keep inputs on one device"
                )
        return self._states

    def _bound_sizes(self) -> Iterable[tuple[str, int]]:
        """The named sizes fixed by the states that exist."""
        for name, (decl, _) in self._declared.items():
            t = self._states.get(name)
            if t is not None and t.ndim == len(decl):
                for d, n in zip(decl, t.shape):
                    if isinstance(d, str):
                        yield d, int(n)


def _guard_update(update: Callable[..., Any]) -> Callable[..., Any]:
    """``update`` refused after :meth:`Accumulator.sync`, run without autograd."""
    if getattr(update, "_accumulator_guard", False):
        return update

    @functools.wraps(update)
    def guarded(self: Accumulator, *args: Any, **kwargs: Any) -> Any:
        if self._synced:
            raise RuntimeError(
                f"{type(self).__name__}.update after sync(): the states already hold every "
                "rank's data; call reset() to start over, or sync a copy with synced()"
            )
        with torch.no_grad():
            return update(self, *args, **kwargs)

    guarded._accumulator_guard = True  # type: ignore[attr-defined]
    return guarded


def _guard_compute(compute: Callable[..., Any]) -> Callable[..., Any]:
    """``compute`` (or ``replicate_values``) refused before any update (or after a reset)."""
    if getattr(compute, "_accumulator_guard", False):
        return compute

    @functools.wraps(compute)
    def guarded(self: Accumulator, *args: Any, **kwargs: Any) -> Any:
        if not self._states:
            raise RuntimeError(
                f"{type(self).__name__}.{compute.__name__}() called before any update() "
                "(or after reset())"
            )
        return compute(self, *args, **kwargs)

    guarded._accumulator_guard = True  # type: ignore[attr-defined]
    return guarded


def _check_same_layout(owner: str, a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> None:
    la = {k: tuple(v.shape) for k, v in a.items()}
    lb = {k: tuple(v.shape) for k, v in b.items()}
    if la != lb:
        raise AttnvizError(f"{owner}.merge: state layouts differ: {la} vs {lb}")


def ratio(num: Tensor | float, den: Tensor | float) -> float:
    """``num / den`` as a Python float, NaN when ``den`` is zero."""
    num_f = float(num)
    den_f = float(den)
    return num_f / den_f if den_f != 0 else float("nan")
