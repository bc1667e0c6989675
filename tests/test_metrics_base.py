"""The accumulator protocol, checked on every accumulator: bounded state, batch-split
invariance, merge / reduce, reset, states round trip, definitions and settings."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnviz.metrics as M
from attnviz.metrics import Accumulator


def _patch_model(x: torch.Tensor) -> torch.Tensor:
    """Two-class model: logit 1 = 4·mean(x[..., 2:6, 2:6]) − 2, logit 0 = 0."""
    z = 4 * x[:, :, 2:6, 2:6].mean(dim=(1, 2, 3)) - 2
    return torch.stack([torch.zeros_like(z), z], dim=1)


def _data(name: str, n: int, gen: torch.Generator) -> tuple[Accumulator, list[Any]]:
    """An accumulator and the arguments of one `update` covering `n` images."""

    def r(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)

    def lab(k: int) -> torch.Tensor:
        return torch.randint(0, k, (n,), generator=gen)

    if name == "FeatureStats":
        x = torch.relu(torch.randn(n, 6, 5, 4, generator=gen))
        x[0] = 0  # one dead image
        return M.FeatureStats(), [x]
    if name == "LinearCKA":
        return M.LinearCKA(), [r(n, 3, 4, 4), r(n, 5)]
    if name == "CKAMatrix":
        return M.CKAMatrix(pool="avg"), [[r(n, 3, 4, 4), r(n, 5)], [r(n, 7)]]
    if name == "GateStats":
        return M.GateStats(num_classes=3, bins=10), [r(n, 4, 1, 1) * 1.2 - 0.1, lab(3)]
    if name == "CamAgreement":
        a = r(n, 6, 6)
        a[0] = 1.0  # a constant map
        return M.CamAgreement(), [a, r(n, 6, 6)]
    if name == "CamConcentration":
        return M.CamConcentration(), [r(n, 6, 6) - 0.2]
    if name == "CamLocalization":
        return M.CamLocalization(num_classes=3), [r(n, 12, 12), r(n, 12, 12) > 0.7, lab(3)]
    if name == "ClassificationStats":
        return M.ClassificationStats(top_k=2), [torch.randn(n, 5, generator=gen) * 2, lab(5)]
    if name == "FaithfulnessStats":
        return M.FaithfulnessStats(steps=4, batch_size=16), [
            _patch_model,
            r(n, 1, 8, 8),
            r(n, 4, 4),
        ]
    if name == "ConfidenceStats":
        return M.ConfidenceStats(batch_size=16), [_patch_model, r(n, 1, 8, 8), r(n, 4, 4)]
    index = torch.arange(n)
    if name == "PairedDifference":
        v = r(n)
        v[0] = math.nan  # an image without a value
        return M.PairedDifference(replicates=50), [v, r(n), index]
    if name == "PairedAccuracy":
        return M.PairedAccuracy(replicates=50), [r(n) > 0.3, r(n) > 0.5, index]
    if name == "BootstrapMean":
        return M.BootstrapMean(replicates=50, null=0.5), [r(n), index]
    raise AssertionError(name)


ALL = [
    "FeatureStats",
    "LinearCKA",
    "CKAMatrix",
    "GateStats",
    "CamAgreement",
    "CamConcentration",
    "CamLocalization",
    "ClassificationStats",
    "FaithfulnessStats",
    "ConfidenceStats",
    "PairedDifference",
    "PairedAccuracy",
    "BootstrapMean",
]
# Per-image averages: the result must not depend on how images are split into batches.
# (Minibatch CKA legitimately depends on the batching.)
PER_IMAGE = [n for n in ALL if n not in ("LinearCKA", "CKAMatrix")]


def _slice(args: list[Any], s: int, e: int) -> list[Any]:
    out: list[Any] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a[s:e])
        elif isinstance(a, list):
            out.append([t[s:e] for t in a])
        else:
            out.append(a)
    return out


def assert_results_close(a: dict[str, Any], b: dict[str, Any], rtol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, rtol=rtol, atol=1e-9, equal_nan=True, msg=k)
        elif isinstance(x, float):
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(
                x, y, rel_tol=rtol, abs_tol=1e-9
            ), (
                k,
                x,
                y,
            )
        else:
            assert x == y, (k, x, y)


def _numel(acc: Accumulator) -> int:
    return sum(t.numel() for t in acc.states.values())


@pytest.mark.parametrize("name", ALL)
def test_state_does_not_grow_with_the_number_of_images(name: str) -> None:
    sizes = []
    for n_batches in (10, 100):
        gen = torch.Generator().manual_seed(0)
        acc, _ = _data(name, 4, gen)
        for _ in range(n_batches):
            _, args = _data(name, 4, gen)
            acc.update(*args)
        sizes.append(_numel(acc))
        acc.compute()
    assert sizes[0] == sizes[1] > 0


@pytest.mark.parametrize("name", PER_IMAGE)
@settings(max_examples=6, deadline=None)
@given(cuts=st.lists(st.integers(1, 11), max_size=4, unique=True), seed=st.integers(0, 2**16))
def test_result_does_not_depend_on_batch_split(name: str, cuts: list[int], seed: int) -> None:
    n = 12
    whole, args = _data(name, n, torch.Generator().manual_seed(seed))
    whole.update(*args)
    split, _ = _data(name, n, torch.Generator().manual_seed(seed))
    bounds = [0, *sorted(cuts), n]
    for s, e in itertools.pairwise(bounds):
        split.update(*_slice(args, s, e))
    assert_results_close(whole.compute(), split.compute())


@pytest.mark.parametrize("name", ALL)
def test_merge_and_reduce_equal_one_pass(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    accs = []
    one, _ = _data(name, 8, torch.Generator())
    for _ in range(3):
        acc, args = _data(name, 8, gen)
        acc.update(*args)
        one.update(*args)
        accs.append(acc)
    reduced = type(accs[0]).reduce(accs)
    assert_results_close(reduced.compute(), one.compute())
    # reduce copies: the inputs are unchanged
    assert_results_close(accs[0].compute(), _single(name, 8, 1))
    merged = accs[0].merge(accs[1], accs[2])
    assert merged is accs[0]
    assert_results_close(merged.compute(), one.compute())


def _single(name: str, n: int, seed: int) -> dict[str, Any]:
    acc, args = _data(name, n, torch.Generator().manual_seed(seed))
    acc.update(*args)
    return acc.compute()


@pytest.mark.parametrize("name", ALL)
def test_definition_settings_reset_and_states_round_trip(name: str) -> None:
    acc, args = _data(name, 8, torch.Generator().manual_seed(2))
    assert isinstance(type(acc).definition, str) and len(type(acc).definition) > 40
    json.dumps(acc.settings())  # printable by the report
    assert acc.describe()["name"] == name
    assert name in repr(acc)
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute()
    acc.update(*args)
    first = acc.compute()
    copy, _ = _data(name, 8, torch.Generator())
    copy.load_states(acc.states)
    assert_results_close(copy.compute(), first)
    acc.reset()
    assert not acc.updated and acc.states == {}
    acc.update(*args)
    assert_results_close(acc.compute(), first)


def test_merge_rejects_other_settings_and_types() -> None:
    a, b = M.GateStats(bins=10), M.GateStats(bins=20)
    a.update(torch.rand(4, 3, 1, 1))
    b.update(torch.rand(4, 3, 1, 1))
    with pytest.raises(ValueError, match="settings differ"):
        a.merge(b)
    with pytest.raises(TypeError, match="cannot merge"):
        a.merge(M.FeatureStats())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no accumulators"):
        M.GateStats.reduce([])


def test_state_shape_must_stay_the_same() -> None:
    acc = M.FeatureStats()
    acc.update(torch.rand(2, 3, 4, 4))
    acc.update(torch.rand(2, 5, 7, 7))  # FeatureStats has only scalar states: fine
    g = M.GateStats()
    g.update(torch.rand(2, 3, 1, 1))
    with pytest.raises(ValueError, match=r"created with shape \(1, 3\).*needs \(1, 5\)"):
        g.update(torch.rand(2, 5, 1, 1))


def test_sync_is_a_no_op_without_distributed() -> None:
    acc, args = _data("GateStats", 8, torch.Generator().manual_seed(3))
    acc.update(*args)
    before = acc.compute()
    assert acc.sync() is acc
    assert_results_close(acc.compute(), before)


def test_every_public_accumulator_is_covered() -> None:
    public = {
        n
        for n in M.__all__
        if isinstance(getattr(M, n), type)
        and issubclass(getattr(M, n), Accumulator)
        and n != "Accumulator"
    }
    assert public == set(ALL)


def test_inputs_must_stay_on_the_device_of_the_states() -> None:
    acc = M.FeatureStats()
    acc.update(torch.rand(2, 3, 4, 4))
    assert all(t.device.type == "cpu" and t.dtype == torch.float64 for t in acc.states.values())
    with pytest.raises(ValueError, match="input on meta but the states live on cpu"):
        acc.update(torch.rand(2, 3, 4, 4, device="meta"))


class _Counter(Accumulator):
    """A minimal accumulator: no checks of its own, the base class supplies them."""

    definition = "count = number of images; total = sum of their values, per channel."

    def __init__(self) -> None:
        super().__init__()
        self.add_state("count")
        self.add_state("total", ("channels",))
        self.calls = 0

    def update(self, x: torch.Tensor) -> None:
        self.calls += 1
        st = self._running(x.device, channels=x.shape[1])
        st["count"].add_(x.shape[0])
        st["total"].add_(x.sum(0))

    def compute(self) -> dict[str, Any]:
        return {"count": int(self._states["count"]), "total": self._states["total"].tolist()}


def test_the_base_class_guards_update_and_compute_of_every_subclass() -> None:
    acc = _Counter()
    with pytest.raises(RuntimeError, match=r"_Counter.compute\(\) called before any update"):
        acc.compute()
    acc.update(torch.ones(2, 3, requires_grad=True))
    assert not acc.states["total"].requires_grad  # update runs without autograd
    assert acc.compute() == {"count": 2, "total": [2.0, 2.0, 2.0]}
    with pytest.raises(ValueError, match=r"'total' was created with shape \(3,\).*needs \(4,\)"):
        acc.update(torch.ones(2, 4))
    acc._synced = True  # as after sync() on a real process group
    calls = acc.calls
    with pytest.raises(RuntimeError, match="update after sync"):
        acc.update(torch.ones(2, 3))
    assert acc.calls == calls  # refused before the subclass did any work
    assert getattr(type(acc).update, "_accumulator_guard", False)


def test_states_are_declared_once_and_created_together() -> None:
    skipping = M.CKAMatrix(skip_small_batches=True)
    skipping.update([torch.rand(2, 3)])  # too small: counted; the matrix sizes are not known yet
    assert set(skipping.states) == {"n_batches", "n_images", "n_skipped_images"}
    with pytest.raises(RuntimeError, match="fewer than 4 images"):
        skipping.compute()
    skipping.update([torch.rand(5, 3), torch.rand(5, 2)])
    assert skipping.states["hsic_xy"].shape == (2, 2)
    assert skipping.compute()["n_skipped_images"] == 2
    with pytest.raises(RuntimeError, match="declared twice"):
        skipping.add_state("n_images")
    with pytest.raises(ValueError, match=r"unknown states \['bogus'\]"):
        M.FeatureStats().load_states({"bogus": torch.zeros(())})
