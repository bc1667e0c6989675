"""compare(): the before/after comparison, its outputs, streaming and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from attnviz import insert_attention
from attnviz.analysis import compare
from attnviz.data import SyntheticShapes
from attnviz.nets import small_resnet


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    base = small_resnet(10, widths=(8, 16, 32)).eval()
    return {
        "base": base,
        "se": insert_attention(base, "se", example_input=torch.randn(1, 3, 32, 32)),
        "cbam": insert_attention(base, "cbam", example_input=torch.randn(1, 3, 32, 32)),
    }


@pytest.fixture(scope="module")
def data():
    return SyntheticShapes(24, size=32, split="val")


@pytest.fixture(scope="module")
def result(models, data):
    return compare(
        models,
        data,
        batch_size=8,
        faithfulness=True,
        faithfulness_steps=4,
        panels=4,
        progress=False,
    )


def test_summary_and_table(result, models):
    rows = result.summary()
    assert [r["model"] for r in rows] == list(models)
    base, se, cbam = rows
    assert cbam["attention_params"] > 0
    assert base["mean_cka"] is None and base["cam_pearson"] is None
    assert 0 < se["mean_cka"] <= 1.0001 and -1 <= se["cam_pearson"] <= 1
    assert se["attention_params"] > 0 and base["attention_params"] == 0
    assert se["params_m"] > base["params_m"]
    for r in rows:
        assert (
            0 <= r["accuracy"] <= 1
            and 0 <= r["pointing_game"] <= 1
            and 0 <= r["energy_pointing_game"] <= 1
        )
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
    assert se["gate_specificity"] is not None and 0 <= se["gate_specificity"] <= 1
    table = result.table()
    metrics = {row["metric"] for row in table}
    assert {
        "features.mean",
        "features.sparsity",
        "features.channel_gini",
        "features.spatial_entropy",
        "cka",
    } <= metrics
    assert {
        "gate.mean",
        "gate.class_specificity",
        "cam.gradcam.pearson",
        "localization.gradcam.pointing_game",
    } <= metrics
    assert {
        "faithfulness.deletion_auc",
        "faithfulness.average_drop_pct",
        "cost.flops",
        "cost.latency_ms",
    } <= metrics
    layers = {row["layer"] for row in table if row["metric"] == "cka"}
    assert layers == set(result.layers) and result.layers == ["layer1", "layer2", "layer3"]
    text = result.summary_text()
    assert "CKA vs base" in text and text.count("\n") == len(models) + 1


def test_gates_are_found_per_stage(result):
    assert result.gate_stages["base"] == {}
    se_gates = result.gate_stages["se"]
    assert set(se_gates) == {"layer1.0.attn.gate", "layer2.0.attn.gate", "layer3.0.attn.gate"}
    assert se_gates["layer2.0.attn.gate"] == "layer2"
    cbam = result.results["cbam"]["gates"]
    assert "layer1.0.attn.channel.gate" in cbam and "layer1.0.attn.spatial.gate" in cbam
    prof = result.results["se"]["gates"]["layer3.0.attn.gate"]["class_profiles"]
    assert prof.shape == (10, 32)


def test_files_written(result, tmp_path):
    result.to_csv(tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.table()) and set(rows[0]) == {
        "model",
        "layer",
        "metric",
        "value",
        "value_ci_low",
        "value_ci_high",
        "delta",
        "ci_low",
        "ci_high",
        "p_adj",
        "significant",
    }
    data = result.to_json(tmp_path / "c.json")
    loaded = json.loads((tmp_path / "c.json").read_text())
    assert loaded["summary"] == json.loads(json.dumps(data["summary"]))
    assert (
        "definition" in loaded["definitions"]["cka"]
        and "settings" in loaded["definitions"]["faithfulness"]
    )


def test_figures_and_report(result, tmp_path):
    from PIL import Image

    paths = result.save_figures(tmp_path / "figs")
    assert {
        "cam_panels",
        "cka",
        "gate_histograms",
        "feature_maps",
        "faithfulness",
        "accuracy",
    } <= set(paths)
    assert any(k.startswith("gate_profile_se_") for k in paths)
    for p in paths.values():
        im = np.asarray(Image.open(p).convert("L"), dtype=float)
        assert im.shape[1] > 200 and im.std() > 5
    report = result.report(tmp_path / "report.html")
    html = report.read_text()
    assert (
        html.index("<h2>Summary</h2>")
        < html.index("<h2>Figures</h2>")
        < html.index("Metric definitions")
    )
    assert html.count("data:image/png;base64,") == len(result.figures())
    assert "minibatch" in html.lower() and "pointing" in html.lower() and "<script" not in html


def test_panels_are_the_most_disagreeing(result):
    assert len(result.panels) == 4
    assert set(result.panels[0].cams) == {"base", "se", "cbam"}


def test_panels_take_each_class_most_disagreeing_image_first():
    from attnviz.analysis.panels import TopDisagreement

    keeper = TopDisagreement(3)
    rng = torch.Generator().manual_seed(0)
    for batch in range(4):  # class 0 disagrees most on every image; classes 1 and 2 less
        labels = torch.tensor([0, 0, 0, 1, 2, 1])
        scores = torch.tensor([0.9, 0.95, 0.8, 0.3, 0.2, 0.1]) + 0.01 * batch
        images = torch.rand(6, 3, 8, 8, generator=rng)
        keeper.offer(scores, images, labels, None, {"m": images[:, 0]}, {"m": scores})
    panels = keeper.panels()
    assert [p.label for p in panels] == [0, 1, 2]
    assert [round(p.score, 2) for p in panels] == [0.98, 0.33, 0.23]  # each class's best
    keeper = TopDisagreement(4)  # more panels than classes: the rest by disagreement
    keeper.offer(
        torch.tensor([0.9, 0.95, 0.8, 0.3]),
        torch.rand(4, 3, 8, 8),
        torch.tensor([0, 0, 0, 1]),
        None,
        {"m": torch.rand(4, 8, 8)},
        {"m": torch.rand(4)},
    )
    assert [round(p.score, 2) for p in keeper.panels()] == [0.95, 0.3, 0.9, 0.8]


def test_streaming_state_does_not_grow(models):
    small = compare(
        models,
        SyntheticShapes(16, size=32, split="val"),
        batch_size=8,
        faithfulness=False,
        panels=2,
        progress=False,
    )
    large = compare(
        models,
        SyntheticShapes(64, size=32, split="val"),
        batch_size=8,
        faithfulness=False,
        panels=2,
        progress=False,
    )
    assert small.n_images == 16 and large.n_images == 64
    assert small.state_elements == large.state_elements
    assert len(large.panels) == 2


def test_dataloader_masks_max_images_and_methods(models, data):
    loader = DataLoader(data, batch_size=5)
    res = compare(
        models,
        loader,
        cam_methods=("gradcam++", "layercam", "eigencam"),
        max_images=12,
        faithfulness=False,
        masks=False,
        progress=False,
    )
    assert res.n_images == 12
    assert set(res.results["se"]["cam"]) == {"gradcam++", "layercam", "eigencam"}
    assert "localization" not in res.results["se"]["cam"]["layercam"]
    assert res.summary()[0]["pointing_game"] is None


def test_models_must_correspond(models, data):
    other = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    )
    with pytest.raises(
        ValueError, match=r"do not correspond.*'other' lacks \['layer1', 'layer2', 'layer3'\]"
    ):
        compare({"base": models["base"], "other": other}, data, faithfulness=False, progress=False)


def test_bad_data(models):
    imgs = torch.randn(6, 3, 32, 32)
    labels = torch.randint(0, 10, (6,))
    with pytest.raises(ValueError, match=r"masks must be \[B, H, W\].*\(6, 16, 16\)"):
        compare(
            models,
            TensorDataset(imgs, labels, torch.ones(6, 16, 16)),
            faithfulness=False,
            progress=False,
        )
    with pytest.raises(ValueError, match="data is empty"):
        compare(models, TensorDataset(imgs[:0], labels[:0]), faithfulness=False, progress=False)
    with pytest.raises(ValueError, match=r"images must be a float tensor \[B, C, H, W\]"):
        compare(
            models, TensorDataset(torch.randn(6, 20), labels), faithfulness=False, progress=False
        )

    class Tuple4(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return imgs[i], labels[i], imgs[i], labels[i]

    with pytest.raises(ValueError, match=r"\(images, labels\) or \(images, labels, masks\)"):
        compare(models, Tuple4(), faithfulness=False, progress=False)
    with pytest.raises(KeyError, match="scorecam"):
        compare(models, TensorDataset(imgs, labels), cam_methods=("scorecam",), progress=False)
    with pytest.raises(ValueError, match="non-empty dict"):
        compare({}, TensorDataset(imgs, labels), progress=False)


def test_models_left_as_they_were(models, data):
    base = models["base"].train()
    flags = [m.training for m in base.modules()]
    before = {k: v.clone() for k, v in base.state_dict().items()}
    compare(
        {"base": base, "se": models["se"]}, data, max_images=8, faithfulness=False, progress=False
    )
    assert [m.training for m in base.modules()] == flags
    assert all(
        torch.equal(before[k], v) for k, v in base.state_dict().items()
    )  # BN stats untouched
    assert all(p.grad is None for p in base.parameters())
    base.eval()
