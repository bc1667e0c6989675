"""``torchrun --nproc_per_node=2 -m attnviz compare`` (gloo, CPU) equals one process.

Each process takes every other *whole batch* (so minibatch CKA sees the very batches one
process sees), every accumulator is summed once at the end, and the bootstrap weights are
keyed by each image's position in the data: sums agree to rounding, counts exactly, and
rank 0 alone writes the report.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attnviz

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    base = attnviz.create_model(
        "attnviz:small_resnet", num_classes=10, widths=[4, 8], depths=[1, 1]
    )
    se = attnviz.insert_attention(base, "se", example_input=torch.randn(1, 3, 32, 32))
    return [
        str(attnviz.save(m, folder / f"{n}.safetensors")) for n, m in (("base", base), ("se", se))
    ]


def _compare(models, out: Path, nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = [
        "compare",
        *models,
        "--names",
        "base",
        "se",
        "--data",
        "synthetic:40",
        "--size",
        "32",
        "32",
    ]
    args += ["--batch-size", "8", "--faithfulness-images", "12", "--faithfulness-steps", "4"]
    args += ["--bootstrap-replicates", "200", "--out", str(out), "--device", "cpu"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "attnviz", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "attnviz", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _numbers(tree, path=""):
    """Every number of a JSON tree by its path (latency is a timing: left out)."""
    if isinstance(tree, dict):
        if tree.get("metric") == "cost.latency_ms":
            return
        for k, v in tree.items():
            if k not in ("latency_ms", "processes"):
                yield from _numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield path, tree


def test_two_processes_give_the_numbers_of_one_and_one_report(models, tmp_path):
    one = _compare(models, tmp_path / "one", 1)
    two = _compare(models, tmp_path / "two", 2)
    a = json.loads((tmp_path / "one" / "comparison.json").read_text())
    b = json.loads((tmp_path / "two" / "comparison.json").read_text())
    assert b["inputs"]["processes"] == 2 and a["n_images"] == b["n_images"] == 40
    na, nb = dict(_numbers(a)), dict(_numbers(b))
    assert set(na) == set(nb)
    for key, x in na.items():
        y = nb[key]
        if isinstance(x, int) and isinstance(y, int):
            assert x == y, key
        elif not (math.isnan(x) and math.isnan(y)):
            assert y == pytest.approx(x, rel=1e-6, abs=1e-9), key
    assert two.stdout.count("report:") == 1 and one.stdout.count("report:") == 1
    assert (tmp_path / "two" / "report.html").is_file()
