"""Where the attention looks: compare draws spatial gates and self-attention query maps."""

from __future__ import annotations

import warnings

import pytest
import torch

import attnviz
from attnviz.analysis.attention_maps import attention_pictures
from attnviz.data import build_dataset


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return attnviz.create_model(
        "attnviz:small_resnet", num_classes=10, widths=[8, 16, 32], depths=[1, 1, 1], stem_stride=2
    )


def _variant(base, attention, where, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return attnviz.insert_attention(
            base, attention, where, example_input=torch.randn(1, 3, 64, 64), **kw
        )


def test_spatial_gates_and_query_maps_in_figures(base):
    models = {
        "base": base,
        "cbam": _variant(base, "cbam", "residual"),
        "nl": _variant(base, "nl", "stages"),
    }
    data = build_dataset("synthetic:8", split="val", size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = attnviz.compare(
            models, data, progress=False, faithfulness_images=2, replicates=20, panels=2
        )
    spatial = r.attention_maps["spatial"]
    queries = r.attention_maps["queries"]
    assert set(spatial) == {"cbam"}
    gate, maps = spatial["cbam"]
    assert gate.startswith("layer") and maps.shape[0] == 2 and maps.ndim == 3
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0  # a sigmoid gate
    assert set(queries) == {"nl"}
    block, qmaps, points = queries["nl"]
    assert block.startswith("layer") and len(points) == 2 and qmaps.shape[:2] == (2, len(points[0]))
    # each query map is a distribution over key positions
    sums = qmaps.flatten(2).sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
    figs = r.figures()
    assert "spatial_gates" in figs and "query_maps_nl" in figs
    assert "query_maps_cbam" not in figs and "query_maps_base" not in figs


def test_models_without_spatial_attention_add_nothing(base):
    se = _variant(base, "se", "residual")
    out = attention_pictures(
        {"base": base, "se": se}, torch.rand(2, 3, 64, 64), None, torch.device("cpu")
    )
    assert out == {"spatial": {}, "queries": {}}


def test_no_images_no_pictures(base):
    out = attention_pictures({"base": base}, torch.zeros(0, 3, 64, 64), None, torch.device("cpu"))
    assert out == {"spatial": {}, "queries": {}}
