"""The accumulator protocol shared by every streaming metric in :mod:`attnviz.metrics`.

An accumulator keeps only fixed-size running state: sums, sums of squares, counts,
fixed-bin histograms, small Gram-like matrices. Memory never grows with the number of
images, and every state is a *sum over images (or batches)*, so

* two accumulators that saw disjoint data combine by adding their states
  (:meth:`Accumulator.merge`, :meth:`Accumulator.reduce`), and
* data-parallel ranks combine with one ``all_reduce(SUM)`` per state
  (:meth:`Accumulator.sync`).

States are created lazily on the first :meth:`~Accumulator.update`, on the device of its
inputs, with shapes taken from the inputs (number of channels, for instance); later
updates must agree. Sums are kept in float64.

Why not :class:`torchmetrics.Metric` as the base: its states must be declared with fixed
shapes in ``__init__`` (ours depend on the first input), it syncs by ``all_gather`` at
``compute`` time and caches results, and several of its streaming metrics
(``PearsonCorrCoef``) keep states that are not plain sums. The tests check our values
against torchmetrics where it has the same metric.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

__all__ = ["Accumulator", "describe"]

_A = TypeVar("_A", bound="Accumulator")

STATE_DTYPE = torch.float64


class Accumulator:
    """Base class: ``update(...)``, ``compute() -> dict``, ``reset()``, ``states``, ``sync()``.

    Subclasses set :attr:`definition` (one or two sentences with the formula), implement
    ``update`` (calling :meth:`_state` to get-or-create each running sum), ``compute``,
    and list their constructor arguments in :meth:`settings`.
    """

    #: One or two sentences with the exact formula; printed by the report.
    definition: ClassVar[str] = ""

    def __init__(self) -> None:
        self._states: dict[str, Tensor] = {}
        self._synced = False

    # ------------------------------------------------------------------ protocol
    def update(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The constructor settings that define the metric (printed by the report)."""
        return {}

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
                raise ValueError(
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
            raise ValueError(f"{cls.__name__}.reduce: got no accumulators")
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
    def _state(
        self,
        name: str,
        shape: Sequence[int] = (),
        device: torch.device | str | None = None,
        dtype: torch.dtype = STATE_DTYPE,
    ) -> Tensor:
        """Get the running state ``name``, creating zeros of ``shape`` on first use."""
        if self._synced:
            raise RuntimeError(
                f"{type(self).__name__}.update after sync(): the states already hold every "
                "rank's data; call reset() to start over, or sync a copy with synced()"
            )
        t = self._states.get(name)
        if t is None:
            t = torch.zeros(tuple(shape), dtype=dtype, device=device)
            self._states[name] = t
            return t
        if tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"{type(self).__name__}.update: state {name!r} was created with shape "
                f"{tuple(t.shape)} by an earlier update, this input needs {tuple(shape)} "
                "(inputs of one accumulator must keep the same channel count / size)"
            )
        if device is not None and t.device != torch.device(device):
            raise ValueError(
                f"{type(self).__name__}.update: input on {device} but the states live on "
                f"{t.device} (created by the first update); keep inputs on one device"
            )
        return t

    def _require_updated(self) -> None:
        if not self._states:
            raise RuntimeError(
                f"{type(self).__name__}.compute() called before any update() (or after reset())"
            )


def describe(accumulator: Accumulator) -> dict[str, Any]:
    """Name, definition and settings of an accumulator, for reports."""
    return accumulator.describe()


def _check_same_layout(owner: str, a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> None:
    la = {k: tuple(v.shape) for k, v in a.items()}
    lb = {k: tuple(v.shape) for k, v in b.items()}
    if la != lb:
        raise ValueError(f"{owner}.merge: state layouts differ: {la} vs {lb}")


def ratio(num: Tensor | float, den: Tensor | float) -> float:
    """``num / den`` as a Python float, NaN when ``den`` is zero."""
    num_f = float(num)
    den_f = float(den)
    return num_f / den_f if den_f != 0 else float("nan")
