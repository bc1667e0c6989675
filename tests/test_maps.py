"""One map kernel (attnviz._maps): the flat-map rule is explicit and each user keeps its values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz._maps import minmax, resize_maps


def _old_metrics_minmax(maps):  # attnviz 0.1 metrics: exactly constant maps -> ones
    flat = maps.reshape(maps.shape[0], -1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = hi - lo
    const = span <= 0
    out = (flat - lo) / torch.where(const, torch.ones_like(span), span)
    return torch.where(const, torch.ones_like(out), out).reshape(maps.shape)


def _old_cam_minmax(maps):  # attnviz 0.1 CAMs: flat within 16 ulps -> zeros
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = hi - lo
    tol = 16 * torch.finfo(maps.dtype).eps * torch.maximum(lo.abs(), hi.abs())
    varies = span > tol
    out = (flat - lo) / torch.where(varies, span, torch.ones_like(span))
    return torch.where(varies, out, torch.zeros_like(out)).view_as(maps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_users_values_are_unchanged(dtype):
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 7, 5, generator=g, dtype=dtype)
    maps[1] = 0.3  # constant
    maps[2] = 1.0 + torch.rand(7, 5, generator=g, dtype=dtype) * 1e-7  # rounding noise only
    maps[3] = 0.0
    assert torch.equal(minmax(maps, flat="one", tol_ulps=0), _old_metrics_minmax(maps))
    assert torch.equal(minmax(maps, flat="zero"), _old_cam_minmax(maps))


def test_the_flat_rule_is_required_and_checked():
    with pytest.raises(TypeError):
        minmax(torch.rand(2, 3, 3))  # no default: every call site says which rule it needs
    with pytest.raises(ValueError, match="flat must be"):
        minmax(torch.rand(2, 3, 3), flat="nan")


def test_resize_takes_tensors_and_arrays_alike():
    t = torch.rand(2, 4, 6, dtype=torch.float64)
    out = resize_maps(t, (8, 12))
    arr = resize_maps(t.numpy(), (8, 12))
    assert isinstance(arr, np.ndarray) and np.array_equal(arr, out.numpy())
    assert resize_maps(t, (4, 6)) is t
