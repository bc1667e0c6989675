"""Before/after differences with honest uncertainty, inside compare itself (issue 13)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import attnviz
from attnviz.analysis.columns import TESTED


class Quadrants(nn.Module):
    """Scores each of 4 classes by its channel's mean: an (almost) perfect classifier of
    :func:`_data`; ``hide`` zeroes that share of the image first (a model built to be worse)."""

    def __init__(self, hide: float = 0.0):
        super().__init__()
        self.hide = hide
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(4)[:, :, None, None])
            self.fc.weight.copy_(40 * torch.eye(4))

    def forward(self, x):
        if self.hide:
            keep = torch.ones_like(x)
            keep[..., : int(self.hide * x.shape[-1])] = 0
            x = x * keep / (1 - self.hide)
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def _data(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.rand(n, 4, 16, 16, generator=g) * 3
    images[torch.arange(n), labels] += 0.12  # a faint signal under strong pixel noise
    return TensorDataset(images, labels)


def _compare(models, data, **kw):
    opts = dict(layers=["relu"], cam_layer="relu", progress=False, panels=0, replicates=500)
    return attnviz.compare(models, data, **{**opts, **kw})


def test_one_model_twice_has_no_difference_and_nothing_significant():
    model = Quadrants()
    result = _compare({"a": model, "b": model}, _data(64), faithfulness_images=16)
    rows = result.tests()
    assert {r["metric"] for r in rows} >= {"accuracy", "mean_true_confidence", "deletion_auc"}
    for r in rows:
        assert r["delta"] == 0.0 and r["ci_low"] <= 0.0 <= r["ci_high"], r
        assert not r["significant"]


def test_a_model_built_to_be_worse_is_found_significantly_worse():
    result = _compare(
        {"full": Quadrants(), "half": Quadrants(hide=0.5)}, _data(300), faithfulness=False
    )
    tests = {r["metric"]: r for r in result.tests()}
    for key in ("accuracy", "mean_true_confidence"):
        assert tests[key]["delta"] < 0 and tests[key]["ci_high"] < 0, tests[key]
        assert tests[key]["significant"] and tests[key]["p_adj"] < 0.05
    assert tests["accuracy"]["test"] == "mcnemar exact"
    text = result.differences_text()
    assert "accuracy" in text and "*" in text and "Holm" in text


def test_per_image_results_do_not_depend_on_the_batch_size():
    models = {"full": Quadrants(), "third": Quadrants(hide=0.3)}
    data = _data(48)
    a = _compare(models, data, batch_size=8, faithfulness_images=24)
    b = _compare(models, data, batch_size=32, faithfulness_images=24)
    for x, y in zip(a.tests(), b.tests()):
        assert x["metric"] == y["metric"]
        for key in ("delta", "ci_low", "ci_high", "p"):
            assert x[key] == pytest.approx(y[key], rel=1e-9, abs=1e-12), (x["metric"], key)


def test_the_bootstrap_state_does_not_grow_with_images():
    models = {"full": Quadrants(), "third": Quadrants(hide=0.3)}
    small = _compare(models, _data(32), faithfulness_images=8)
    large = _compare(models, _data(256), faithfulness_images=8)
    assert small.state_elements == large.state_elements > 0
    assert large.bootstrap["replicates"] == 500 and large.bootstrap["seed"] == 0


def test_every_tested_metric_gets_its_columns_in_the_summary_and_table(tmp_path):
    result = _compare({"full": Quadrants(), "third": Quadrants(hide=0.3)}, _data(32))
    row = result.summary()[1]
    for t in TESTED:
        for suffix in ("delta", "ci_low", "ci_high", "p_adj", "significant"):
            assert f"{t.summary}_{suffix}" in row
    acc = next(
        r
        for r in result.table()
        if r["model"] == "third" and r["metric"] == "classification.accuracy"
    )
    assert acc["delta"] is not None and acc["p_adj"] is not None
    result.tests_to_csv(tmp_path / "tests.csv")
    assert "p_adj" in (tmp_path / "tests.csv").read_text().splitlines()[0]


def test_too_few_replicates_for_the_holm_family_are_said_once(recwarn):
    """A bootstrap p is at least 1/B and Holm multiplies the smallest by the number of tests:
    with B = 40 and several tests nothing bootstrap-tested can be significant, and compare says
    so (with the B that would do); with B = 500 it does not."""
    models = {"a": Quadrants(), "b": Quadrants(hide=0.5)}
    with pytest.warns(
        UserWarning, match=r"tests share the Holm adjustment and B = 40 .* use replicates >= \d+"
    ):
        _compare(models, _data(48), faithfulness=False, replicates=40)
    recwarn.clear()
    _compare(models, _data(48), faithfulness=False, replicates=500)
    assert not [w for w in recwarn if "Holm adjustment" in str(w.message)]
