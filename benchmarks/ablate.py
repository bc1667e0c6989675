"""What a launcher costs beyond the cells' own time: a 4-cell tiny grid, ``local`` vs ``ray``.

Every candidate runs the same 4 cells (baseline and SE, two seeds; a 3-stage
ResNet of widths 8/16/32 at 32x32, one epoch on 64 images, evaluated on 32)
into a fresh out folder, one cell at a time with ``--threads`` CPU threads:

* ``local``: ``run_grid`` in this process (the cells' own time, warm imports);
* ``ray, fresh runtime``: what ``attnviz ablate --launcher ray`` pays: start a
  local Ray runtime, start its worker process (which imports attnviz), run the
  cells as Ray tasks, stop the runtime;
* ``ray, warm runtime``: the same cells on a runtime (and worker) already up,
  as on a running cluster.

The overhead per cell is (candidate - local) / 4 (target: <= 2 s per cell on
CPU for the fresh runtime). With ``--threads 1`` on a machine with more CPUs
the last row runs 2 cells at a time (``cell_cpus=1`` on 2 CPUs), for scale.
Wall time, median of ``--rounds`` interleaved rounds.

Run: ``python benchmarks/ablate.py [--rounds 3] [--threads 1]`` (``--quick``: one round).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from _common import setup_threads, table

from attnviz.study import RayLauncher, run_grid

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

RECIPE = {
    "name": "tiny",
    "base": "attnviz:small_resnet",
    "base_kwargs": {"num_classes": 10, "widths": [8, 16, 32], "stem_stride": 2},
    "attention": "none",
    "input_size": [3, 32, 32],
    "train": {"epochs": 1, "batch_size": 32, "train_images": 64, "val_images": 32},
}
GRID = {
    "name": "bench-4",
    "data": "synthetic",
    "recipes": ["tiny.yaml"],
    "attention": ["none", "se"],
    "seeds": [0, 1],
    "eval": {"images": 32, "faithfulness_images": 8, "batch_size": 32},
}


def grid_file(folder: Path) -> Path:
    (folder / "tiny.yaml").write_text(yaml.safe_dump(RECIPE))
    (folder / "grid.yaml").write_text(yaml.safe_dump(GRID))
    return folder / "grid.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (and CPUs) per cell")
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    setup_threads(args.threads)
    rounds = 1 if args.quick else args.rounds
    import ray

    root = Path(tempfile.mkdtemp(prefix="attnviz-bench-ablate-"))
    grid = grid_file(root)
    runs = iter(range(10**6))

    def cells(launcher="local") -> None:
        result = run_grid(grid, root / f"out{next(runs)}", launcher=launcher, progress=False)
        assert not result.failed and len(result.rows) == 4, result.failed

    phases: dict[str, list[float]] = {"ray.init": [], "cells": [], "ray.shutdown": []}

    def fresh(cpus: int, cell_cpus: int, record: bool = False) -> Callable[[], None]:
        def run() -> None:
            t0 = time.perf_counter()
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            t1 = time.perf_counter()
            try:
                cells(RayLauncher(cell_cpus=cell_cpus))
            finally:
                t2 = time.perf_counter()
                ray.shutdown()
            if record:
                for key, value in zip(phases, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
                    phases[key].append(value)

        return run

    cells()  # warm this process's imports and first-call costs
    candidates: dict[str, Callable[[], None]] = {
        "local": cells,
        "ray, fresh runtime": fresh(args.threads, args.threads, record=True),
    }
    if args.threads == 1 and (os.cpu_count() or 1) >= 2:
        candidates["ray, fresh runtime, 2 at a time"] = fresh(2, 1)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    warm: list[float] = []
    for _ in range(rounds):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        ray.init(address="local", num_cpus=args.threads, include_dashboard=False)
        try:
            cells(RayLauncher(cell_cpus=args.threads))  # starts and warms the worker
            t0 = time.perf_counter()
            cells(RayLauncher(cell_cpus=args.threads))
            warm.append(time.perf_counter() - t0)
        finally:
            ray.shutdown()
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med["ray, warm runtime"] = statistics.median(warm)
    local = med["local"]
    print(
        f"4-cell tiny grid, {args.threads} thread(s) per cell, wall time, median of {rounds} "
        f"round(s), torch {torch.__version__}, ray {ray.__version__}, {os.cpu_count()} CPU(s)"
    )
    rows = [("local (the cells' own time)", f"{local:.2f} s", f"{local / 4:.2f} s per cell")]
    for name in ("ray, fresh runtime", "ray, warm runtime", "ray, fresh runtime, 2 at a time"):
        if name in med:
            over = (med[name] - local) / 4
            rows.append((name, f"{med[name]:.2f} s", f"{over:+.2f} s per cell vs local"))
    print(table(rows))
    split = ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in phases.items())
    print(
        f"  fresh runtime, by phase: {split} (cells: the worker's start and imports, then the cells)"
    )


if __name__ == "__main__":
    main()
