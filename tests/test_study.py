"""The main job (demo --quick) and ablation grids: end to end, restart, bad grids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from attnviz.study import GridError, load_grid, run_grid
from attnviz.study.grid import grid_from_dict

ROOT = Path(__file__).resolve().parents[1]

TINY_RECIPE = {
    "name": "tiny",
    "base": "attnviz:small_resnet",
    "base_kwargs": {"num_classes": 10, "widths": [8, 16, 32], "stem_stride": 2},
    "attention": "none",
    "input_size": [3, 32, 32],
    "train": {
        "epochs": 1,
        "batch_size": 32,
        "train_images": 64,
        "val_images": 32,
        "image_size": 32,
    },
}


def _grid(tmp_path: Path, **changes) -> Path:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_RECIPE))
    grid = {
        "name": "tiny-grid",
        "data": "synthetic",
        "recipes": ["tiny.yaml"],
        "attention": ["none", "se", "eca"],
        "where": ["residual"],
        "seeds": [0],
        "eval": {"images": 32, "faithfulness_images": 8, "batch_size": 32},
        **changes,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_grid_cells_and_validation(tmp_path):
    grid = load_grid(
        _grid(tmp_path, block_kwargs={"se": [{"rd_ratio": 0.25}, {"rd_ratio": 0.5}]}, seeds=[0, 1])
    )
    cells = grid.cells()
    assert len(cells) == 2 * (1 + 2 + 1)  # none once per seed; se twice (kwargs); eca once
    assert len({c.id for c in cells}) == len(cells)
    assert {c.setting for c in cells} == {
        "tiny/none",
        "tiny/se@residual[rd_ratio=0.25]",
        "tiny/se@residual[rd_ratio=0.5]",
        "tiny/eca@residual",
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attention": ["none", "sse"]}, "unknown attention 'sse'; closest valid: ['se'"),
        ({"seeds": []}, "the axis 'seeds' is empty"),
        ({"attention": []}, "the axis 'attention' is empty"),
        ({"recipes": ["missing.yaml"]}, "recipe file not found"),
        ({"block_kwargs": {"se": [{"rd_ratoi": 0.5}]}}, "rd_ratio"),
        ({"block_kwargs": {"cbam": [{}]}}, "not on the attention axis"),
        ({"finetune": "everything"}, "unknown finetune mode"),
        ({"epochs": 3}, "unknown key 'epochs'"),
        ({"placement": ["after", "beside"]}, "unknown placement 'beside'"),
        ({"attention": None}, "missing the axis 'attention'"),
    ],
)
def test_bad_grid_fails_before_anything_runs(tmp_path, changes, message):
    path = _grid(tmp_path, **changes)
    with pytest.raises(GridError) as err:
        run_grid(path, tmp_path / "out", progress=False)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_grid_runs_and_writes_tables(tmp_path):
    result = run_grid(_grid(tmp_path), tmp_path / "out", progress=False)
    assert not result.failed and len(result.rows) == 3
    for key in ("results", "summary", "markdown", "accuracy_bars", "accuracy_vs_params_m"):
        assert result.paths[key].is_file(), key
    md = result.paths["markdown"].read_text()
    assert "tiny/se@residual" in md and "| setting |" in md
    row = next(r for r in result.rows if r["attention"] == "se")
    assert (
        row["attention_params"] > 0
        and 0 <= row["accuracy"] <= 1
        and row["pointing_game"] is not None
    )


def test_a_cell_trains_as_a_two_process_torchrun_job(tmp_path):
    result = run_grid(
        _grid(tmp_path, attention=["se"]), tmp_path / "out", torchrun=2, progress=False
    )
    assert not result.failed and len(result.rows) == 1
    (cell,) = (tmp_path / "out" / "cells").iterdir()
    run = json.loads((cell / "train" / "run.json").read_text())
    assert run["world_size"] == 2 and run["finished"]
    assert 0 <= result.rows[0]["accuracy"] <= 1


def test_ablation_restart_skips_finished_cells(tmp_path):
    grid = _grid(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "scripts" / "ablate.py"), str(grid), "--out", str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT
    )
    deadline = time.time() + 240
    first = None
    while time.time() < deadline and first is None:
        done = sorted(out.glob("cells/*/result.json"))
        first = done[0] if done else None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first is not None, "no cell finished in time"
    finished = sorted(out.glob("cells/*/result.json"))
    assert len(finished) < 3  # killed before the end
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(finished)} already finished" in rerun.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not re-run
    assert len(list(out.glob("cells/*/result.json"))) == 3
    assert json.loads((out / "grid.json").read_text())["cells"][0]["setting"] == "tiny/none"


def test_shipped_ablation_grid_is_valid():
    grid = load_grid(ROOT / "models" / "ablation-small.yaml")
    assert len(grid.cells()) == 15


def test_a_placement_axis_adds_cells_and_keeps_the_ids_of_after_cells(tmp_path):
    plain = load_grid(_grid(tmp_path, attention=["none", "se"], where=["layer2.*.conv2"]))
    grid = load_grid(
        _grid(
            tmp_path,
            attention=["none", "se"],
            where=["layer2.*.conv2"],
            placement=["after", "parallel"],
        )
    )
    assert [c.setting for c in grid.cells()] == [
        "tiny/none",
        "tiny/se@layer2.*.conv2",
        "tiny/se:parallel@layer2.*.conv2",
    ]
    assert [c.id for c in plain.cells()] == [c.id for c in grid.cells()][:2]


def test_a_grid_without_an_attention_axis_runs_each_recipes_own_surgery():
    grid = load_grid(ROOT / "models" / "ablation-families.yaml")
    cells = grid.cells()
    assert len(cells) == 7 and len({c.id for c in cells}) == 7
    how = {Path(c.recipe).stem: (c.attention, c.placement) for c in cells}
    assert how["small-resnet-bot"] == ("bottleneck", "replace")
    assert how["small-resnet-aa"] == ("bottleneck", "parallel")
    assert how["small-resnet-se"] == ("se", "after") and how["small-resnet"][0] == "none"


def test_a_grid_without_an_attention_axis_refuses_surgery_keys(tmp_path):
    path = _grid(tmp_path, where=["stages"])
    data = yaml.safe_load(path.read_text())
    del data["attention"]
    with pytest.raises(GridError, match="no attention axis"):
        grid_from_dict(data, root=tmp_path)


def test_grid_from_dict_resolves_relative_recipes(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_RECIPE))
    grid = grid_from_dict({"recipes": ["tiny.yaml"], "attention": ["se"]}, root=tmp_path)
    assert (
        grid.recipes == [str(tmp_path / "tiny.yaml")]
        and grid.seeds == [0]
        and grid.where == ["residual"]
    )


def test_demo_quick_end_to_end(tmp_path):
    from attnviz.study.demo import run_demo

    result = run_demo(tmp_path / "demo", quick=True, progress=False)
    for name in (
        "report.html",
        "summary.csv",
        "table.csv",
        "comparison.json",
        "figures/cam_panels.png",
    ):
        assert (tmp_path / "demo" / name).is_file(), name
    assert set(result.train_metrics) == {
        "small-resnet",
        "small-resnet-se",
        "small-resnet-eca",
        "small-resnet-cbam",
    }
    assert "small-resnet-cbam" in result.summary
    weights = sorted((tmp_path / "demo").glob("*/model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in weights]
    again = run_demo(tmp_path / "demo", quick=True, progress=False)
    # the finished checkpoints are reused, not trained again (the same files, the same table)
    assert [p.stat().st_mtime_ns for p in weights] == stamps and len(weights) == 4
    assert again.train_metrics == result.train_metrics


def test_seed_summaries_give_t_intervals_from_three_seeds_and_paired_tests():
    from scipy import stats as sps

    from attnviz.study.ablate import _markdown, _summarize

    def row(setting, seed, acc):
        return {"setting": setting, "seed": seed, "accuracy": acc, "energy_pointing_game": 0.3}

    rows = [row("r/none", s, a) for s, a in zip(range(3), (0.80, 0.82, 0.81))]
    rows += [row("r/se@residual", s, a) for s, a in zip(range(3), (0.84, 0.85, 0.86))]
    rows += [row("r/eca@residual", s, a) for s, a in zip(range(2), (0.79, 0.83))]
    summary = {r["setting"]: r for r in _summarize(rows)}
    se, eca, base = summary["r/se@residual"], summary["r/eca@residual"], summary["r/none"]
    lo, hi = sps.t.interval(0.95, 2, loc=0.85, scale=sps.sem([0.84, 0.85, 0.86]))
    assert (se["accuracy_ci_low"], se["accuracy_ci_high"]) == pytest.approx((lo, hi))
    t = sps.ttest_rel([0.84, 0.85, 0.86], [0.80, 0.82, 0.81])
    assert se["accuracy_delta"] == pytest.approx(0.04) and se["accuracy_p"] == pytest.approx(
        t.pvalue
    )
    assert eca["accuracy_ci_low"] is None and eca["interval_note"] == "n < 3: no interval"
    assert eca["accuracy_p"] is None and "accuracy_delta" not in base
    text = _markdown(list(summary.values()), "t")
    assert "2 (n < 3: no interval)" in text and "n = 2 < 3: no test" in text
    assert "0.850 [" in text and "Holm" in text


def test_a_grid_of_recipes_pairs_every_setting_with_its_one_baseline():
    """Without an attention axis (ablation-families) the one ``none`` setting is the baseline of
    every recipe's setting: same network family, data and seeds, so seeds pair."""
    from attnviz.study.ablate import _baseline_setting, _summarize

    settings = ["small-resnet/none", "small-resnet-nl/nl@layer2", "small-resnet-sk/sk:replace@x"]
    assert _baseline_setting("small-resnet-nl/nl@layer2", settings) == "small-resnet/none"
    grid = ["r/none", "r/se@residual", "q/none", "q/eca@residual"]  # a recipe axis: its own none
    assert _baseline_setting("q/eca@residual", grid) == "q/none"
    rows = [
        {"setting": s, "seed": k, "accuracy": acc + 0.01 * k}
        for s, acc in (("small-resnet/none", 0.80), ("small-resnet-nl/nl@layer2", 0.90))
        for k in range(3)
    ]
    (base, nl) = _summarize(rows)
    assert base.get("accuracy_delta") is None
    assert nl["accuracy_delta"] == pytest.approx(0.10) and nl["accuracy_p_adj"] is not None
