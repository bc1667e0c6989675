"""Minibatch linear CKA with the unbiased HSIC estimator."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from attnviz.metrics import CKAMatrix, LinearCKA, hsic_unbiased


def hsic_u_statistic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """HSIC from its U-statistic definition (Song et al. 2012): the mean over ordered
    4-tuples of distinct indices of k_ij l_ij + k_ij l_qr − 2 k_ij l_iq."""
    n = k.shape[0]
    total = 0.0
    count = 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def cka_reference(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T  # noqa: E741
    return hsic_u_statistic(k, l) / math.sqrt(hsic_u_statistic(k, k) * hsic_u_statistic(l, l))


def cka_biased_full(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019) linear CKA on all data: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F), centred."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _cka(x: torch.Tensor, y: torch.Tensor, batch: int | None = None, **kw: object) -> float:
    acc = LinearCKA(**kw)  # type: ignore[arg-type]
    b = batch or x.shape[0]
    for s in range(0, x.shape[0], b):
        acc.update(x[s : s + b], y[s : s + b])
    return acc.compute()["cka"]


def test_hsic_matches_the_u_statistic_definition() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    y = torch.randn(7, 4, generator=g, dtype=torch.float64) + x[:, :1]
    k, l = x @ x.T, y @ y.T  # noqa: E741
    got = float(hsic_unbiased(k, l))
    assert got == pytest.approx(hsic_u_statistic(k.numpy(), l.numpy()), rel=1e-10, abs=1e-12)


def test_one_batch_equals_the_full_batch_unbiased_reference() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 2, 3, 3, generator=g, dtype=torch.float64)
    y = torch.relu(x.flatten(1)[:, :5] + 0.5 * torch.randn(8, 5, generator=g, dtype=torch.float64))
    ref = cka_reference(x.flatten(1).numpy(), y.numpy())
    assert _cka(x, y, dtype=torch.float64) == pytest.approx(ref, rel=1e-9)
    assert _cka(x, y) == pytest.approx(ref, rel=1e-5)  # float32 Grams


def test_minibatch_cka_is_close_to_the_biased_full_data_cka_for_large_data() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4096, 8, generator=g, dtype=torch.float64)
    y = x @ torch.randn(8, 6, generator=g, dtype=torch.float64) + 2 * torch.randn(
        4096, 6, generator=g, dtype=torch.float64
    )
    full = cka_biased_full(x.numpy(), y.numpy())
    assert _cka(x, y, batch=256) == pytest.approx(full, abs=0.03)


def test_identity_orthogonal_scaling_and_independence() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 4, 4, 4, generator=g)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    xq = x.flatten(1) @ q
    assert _cka(x, x, batch=16) == pytest.approx(1.0, abs=1e-6)
    assert _cka(x, xq, batch=16) == pytest.approx(1.0, abs=1e-4)
    assert _cka(x, 7.5 * x, batch=16) == pytest.approx(1.0, abs=1e-6)
    a = torch.randn(1024, 256, generator=g)
    b = torch.randn(1024, 256, generator=g)
    assert abs(_cka(a, b, batch=64)) < 0.05


def test_centring_makes_float32_grams_accurate_for_post_relu_features() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.relu(torch.randn(32, 16, 8, 8, generator=g)) + 50.0  # large common offset
    y = x[:, :8] * 2 + torch.rand(32, 8, 8, 8, generator=g)
    assert _cka(x, y, batch=16) == pytest.approx(
        _cka(x, y, batch=16, dtype=torch.float64), abs=1e-5
    )


def test_avg_pooling_option_equals_cka_on_pooled_features() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 4, 5, 5, generator=g)
    y = torch.randn(12, 3, 2, 2, generator=g) + x[:, :3, :2, :2]
    pooled = _cka(x.mean((2, 3)), y.mean((2, 3)))
    assert _cka(x, y, pool="avg") == pytest.approx(pooled, rel=1e-6)
    assert _cka(x, y, pool="avg") != pytest.approx(_cka(x, y), rel=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(4, 12),
    d=st.integers(1, 9),
    e=st.integers(1, 9),
    c1=st.floats(0.01, 100),
    c2=st.floats(0.01, 100),
    seed=st.integers(0, 2**16),
)
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(
    n: int, d: int, e: int, c1: float, c2: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, e, generator=g, dtype=torch.float64) + x.sum(1, keepdim=True)
    qx, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    qy, _ = torch.linalg.qr(torch.randn(e, e, generator=g, dtype=torch.float64))
    acc = LinearCKA(dtype=torch.float64)
    acc.update(x, y)
    assume(acc.states["hsic_xx"] > 1e-6 and acc.states["hsic_yy"] > 1e-6)
    base = acc.compute()["cka"]
    assert _cka(c1 * x @ qx, c2 * y @ qy, dtype=torch.float64) == pytest.approx(base, abs=1e-8)


def test_errors_name_the_argument_and_shape() -> None:
    acc = LinearCKA()
    with pytest.raises(ValueError, match=r"`x` has batch size 3 .*at least 4"):
        acc.update(torch.randn(3, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"\(5, 2\).*\(6, 2\).*same batch size"):
        acc.update(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="pool"):
        LinearCKA(pool="max")  # type: ignore[arg-type]


def test_cka_matrix_matches_pairwise_linear_cka() -> None:
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(24, 3, 4, 4, generator=g), torch.randn(24, 10, generator=g)]
    ys = [
        xs[0] * 2 + 0.1 * torch.randn(24, 3, 4, 4, generator=g),
        torch.randn(24, 2, 2, 2, generator=g),
    ]
    mat = CKAMatrix()
    pairs = {(i, j): LinearCKA() for i in range(2) for j in range(2)}
    for s in range(0, 24, 8):
        mat.update([x[s : s + 8] for x in xs], [y[s : s + 8] for y in ys])
        for (i, j), acc in pairs.items():
            acc.update(xs[i][s : s + 8], ys[j][s : s + 8])
    got = mat.compute()["cka"]
    assert got.shape == (2, 2)
    for (i, j), acc in pairs.items():
        assert float(got[i, j]) == pytest.approx(acc.compute()["cka"], rel=1e-9)
    self_sim = CKAMatrix()
    self_sim.update(xs)
    m = self_sim.compute()["cka"]
    torch.testing.assert_close(m, m.T)
    torch.testing.assert_close(m.diagonal(), torch.ones(2, dtype=torch.float64))


def test_small_batches_can_be_skipped_and_counted() -> None:
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    full = LinearCKA()
    full.update(x[:8], y[:8])
    skip = LinearCKA(skip_small_batches=True)
    skip.update(x[:8], y[:8])
    skip.update(x[8:], y[8:])
    out = skip.compute()
    assert out["cka"] == full.compute()["cka"]
    assert out["n_images"] == 8 and out["n_skipped_images"] == 2
    mat = CKAMatrix(skip_small_batches=True)
    mat.update([x[8:]], [y[8:]])
    with pytest.raises(RuntimeError, match="fewer than 4 images"):
        mat.compute()
    mat.update([x[:8]], [y[:8]])
    assert float(mat.compute()["cka"][0, 0]) == pytest.approx(out["cka"], rel=1e-9)
    assert mat.compute()["n_skipped_images"] == 2
