"""Run an ablation grid: every cell trains (or fine-tunes), is evaluated, and is written once.

A cell is finished when ``cells/<id>/result.json`` exists (written atomically,
last): a restarted run skips finished cells and re-runs the others, whose
training resumes from its own checkpoints. Cells run in worker processes
(``workers``), and a cell's training can run as a ``torchrun`` job. The
results become one CSV, one markdown table and plots.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import traceback
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .._atomic import atomic_write_json
from ..errors import FileFormatError
from ..fileformats import read_json
from .grid import Cell, Grid, load_grid

__all__ = ["AblationResult", "run_grid"]

#: Per-cell columns of results.csv (besides the cell's settings).
METRICS = (
    "accuracy",
    "mean_true_confidence",
    "params_m",
    "attention_params",
    "gflops",
    "latency_ms",
    "pointing_game",
    "energy_pointing_game",
    "cam_iou",
    "deletion_auc",
    "insertion_auc",
    "average_drop_pct",
    "train_time_s",
)


@dataclass
class AblationResult:
    out: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    failed: dict[str, str]
    paths: dict[str, Path]


def _cell_recipe(grid: Grid, cell: Cell) -> dict[str, Any]:
    from ..recipes import load_recipe

    recipe = load_recipe(cell.recipe).to_dict()
    recipe["name"] = cell.setting.replace("/", "-")
    recipe["attention"] = cell.attention
    if cell.attention != "none":
        recipe["where"] = cell.where
        recipe["placement"] = cell.placement
        recipe["block_kwargs"] = {**recipe.get("block_kwargs", {}), **cell.block_kwargs}
    if grid.finetune_from:
        recipe["weights"] = grid.finetune_from
        recipe["pretrained"] = False
        if cell.placement == "after":  # parallel starts there anyway; replace cannot
            recipe["init"] = "identity"  # fine-tuning starts from the pretrained function
    return recipe


def _train_torchrun(
    grid: Grid, cell: Cell, recipe: dict, out: Path, nproc: int, device: str | None
) -> Path:
    """Train the cell as ``torchrun --nproc_per_node=N train.py ...``; returns its run folder."""
    out.mkdir(parents=True, exist_ok=True)
    recipe_path = out / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    cmd = [  # the installed module, not the checkout's train.py: works from a wheel too
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "attnviz.training.cli",
        "--no-progress",
        "--recipe",
        str(recipe_path),
        "--data",
        grid.data,
        "--out",
        str(out / "train"),
        "--seed",
        str(cell.seed),
        "--finetune",
        grid.finetune,
    ]
    for key, value in grid.train.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    if device:
        cmd += ["--device", device]
    subprocess.run(cmd, check=True)
    return out / "train"


def _evaluate(grid: Grid, cell: Cell, model, device: str | None) -> dict[str, Any]:
    from ..analysis import compare
    from ..data import build_dataset
    from ..inputs import input_info

    info = input_info(model)
    ev = grid.eval
    images = int(ev.get("images", 512))
    spec = grid.data if not grid.data.startswith("synthetic") else f"synthetic:{images}"
    data = build_dataset(spec, split="val", size=info.size[0])  # the same images for every cell
    result = compare(
        {cell.setting: model},
        data,
        cam_methods=(ev.get("cam_method", "gradcam"),),
        max_images=images,
        batch_size=int(ev.get("batch_size", 64)),
        faithfulness=int(ev.get("faithfulness_images", 128)) > 0,
        faithfulness_images=int(ev.get("faithfulness_images", 128)),
        panels=0,
        device=device,
        progress=False,
    )
    row = result.summary()[0]
    return {k: row.get(k) for k in METRICS if k in row}


def run_cell(
    grid: Grid,
    cell: Cell,
    out: Path,
    *,
    device: str | None = None,
    torchrun: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train and evaluate one cell; writes ``out/result.json`` last and returns it."""
    from ..recipes import build_model, recipe_from_dict
    from ..serialization import load_weights
    from ..training import train

    recipe = _cell_recipe(grid, cell)
    if torchrun:
        run_dir = _train_torchrun(grid, cell, recipe, out, torchrun, device)
        # the grid's recipe builds the model; the run folder only gives its weights
        model = load_weights(build_model(recipe_from_dict(recipe)), run_dir / "model.safetensors")
        metrics_file = run_dir / "metrics.json"
        train_metrics = read_json(metrics_file, "run metrics") if metrics_file.exists() else {}
    else:
        result = train(
            recipe,
            data=grid.data,
            out=out / "train",
            seed=cell.seed,
            device=device,
            finetune=grid.finetune,
            progress=progress,
            tensorboard=False,
            overrides=grid.train,
        )
        model = result.model
        train_metrics = result.metrics
    metrics = _evaluate(grid, cell, model, device)
    metrics["train_time_s"] = train_metrics.get("train_time_s")
    metrics["val_acc_training"] = train_metrics.get("val_acc")
    record = {**cell.to_dict(), "metrics": metrics}
    atomic_write_json(out / "result.json", record, default=str)
    return record


def _job(
    grid: Grid, cell: Cell, out: str, device: str | None, torchrun: int | None, threads: int
) -> dict[str, Any]:
    """Worker-process entry: one cell with a fixed number of threads."""
    import torch

    torch.set_num_threads(threads)
    return run_cell(grid, cell, Path(out), device=device, torchrun=torchrun)


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    settings: dict[str, list[dict]] = {}
    for r in rows:
        settings.setdefault(r["setting"], []).append(r)
    out = []
    for setting, group in settings.items():
        row: dict[str, Any] = {"setting": setting, "seeds": len(group)}
        for m in METRICS:
            mean, std = _mean_std([g.get(m) for g in group])
            row[m] = mean
            if m in ("accuracy", "pointing_game", "deletion_auc"):
                row[f"{m}_std"] = std
        out.append(row)
    return out


def _markdown(summary: list[dict[str, Any]], title: str) -> str:
    cols = [
        ("accuracy", "acc", "{:.3f}"),
        ("params_m", "params (M)", "{:.4f}"),
        ("gflops", "GFLOPs", "{:.4f}"),
        ("latency_ms", "ms/img", "{:.2f}"),
        ("pointing_game", "pointing", "{:.3f}"),
        ("energy_pointing_game", "energy PG", "{:.3f}"),
        ("deletion_auc", "deletion↓", "{:.3f}"),
        ("insertion_auc", "insertion↑", "{:.3f}"),
        ("train_time_s", "train s", "{:.0f}"),
    ]
    head = "| setting | seeds | " + " | ".join(h for _, h, _ in cols) + " |"
    lines = [f"# {title}", "", head, "|" + "---|" * (len(cols) + 2)]
    for r in summary:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            text = "–" if v is None else fmt.format(v)
            if (
                f"{key}_std" in r
                and r[f"{key}_std"] is not None
                and v is not None
                and r["seeds"] > 1
            ):
                text += f" ± {fmt.format(r[f'{key}_std'])}"
            cells.append(text)
        lines.append(f"| {r['setting']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plots(summary: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    from .. import plots

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    have = [r for r in summary if r.get("accuracy") is not None]
    if not have:
        return paths
    acc = {r["setting"]: (100 * r["accuracy"], 100 * (r.get("accuracy_std") or 0.0)) for r in have}
    paths["accuracy_bars"] = plots.save_figure(
        plots.bar_chart(acc, ylabel="accuracy % (mean ± std over seeds)"),
        folder / "accuracy_bars.png",
    )
    for key, label in (("params_m", "params (M)"), ("gflops", "GFLOPs per image")):
        pts = {r["setting"]: (r[key], 100 * r["accuracy"]) for r in have if r.get(key) is not None}
        if pts:
            paths[f"accuracy_vs_{key}"] = plots.save_figure(
                plots.scatter_tradeoff(pts, label, "accuracy %"), folder / f"accuracy_vs_{key}.png"
            )
    loc = {
        r["setting"]: (100 * r["accuracy"], r["pointing_game"])
        for r in have
        if r.get("pointing_game") is not None
    }
    if loc:
        paths["localisation_vs_accuracy"] = plots.save_figure(
            plots.scatter_tradeoff(loc, "accuracy %", "pointing game"),
            folder / "localisation_vs_accuracy.png",
        )
        bars = {
            r["setting"]: (r["pointing_game"], r.get("pointing_game_std") or 0.0)
            for r in have
            if r.get("pointing_game") is not None
        }
        paths["pointing_bars"] = plots.save_figure(
            plots.bar_chart(bars, ylabel="pointing game (mean ± std)"), folder / "pointing_bars.png"
        )
    return paths


def _finished(cell_dir: Path, cell: Cell) -> bool:
    """Whether the cell's result.json exists and is a valid result of this very cell.

    An invalid one (damaged, or another cell's) is moved aside to ``result.invalid.json``
    with a warning, and the cell runs again.
    """
    path = cell_dir / "result.json"
    if not path.is_file():
        return False
    try:
        record = read_json(path, "ablation cell result")
        if record["id"] != cell.id:
            raise FileFormatError(
                f"{path}: is the result of cell {record['id']!r}, not {cell.id!r}"
            )
    except (ValueError, OSError) as exc:
        warnings.warn(
            f"{exc}; the cell runs again (the file is kept as result.invalid.json)", stacklevel=3
        )
        path.replace(cell_dir / "result.invalid.json")
        return False
    return True


def collect(grid: Grid, out: Path) -> AblationResult:
    """Tables and plots from the finished cells of ``grid`` under ``out``."""
    rows, failed = [], {}
    for cell in grid.cells():
        cell_dir = out / "cells" / cell.id
        if (cell_dir / "result.json").is_file():
            record = read_json(cell_dir / "result.json", "ablation cell result")
            rows.append(
                {**{k: v for k, v in record.items() if k != "metrics"}, **record["metrics"]}
            )
        elif (cell_dir / "error.txt").is_file():
            failed[cell.id] = (cell_dir / "error.txt").read_text().strip().splitlines()[-1]
    summary = _summarise(rows)
    paths = {}
    if rows:
        fields = ["id", "setting", "recipe", "attention", "where", "block_kwargs", "seed", *METRICS]
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(
                {
                    **r,
                    "where": json.dumps(r["where"]),
                    "block_kwargs": json.dumps(r["block_kwargs"]),
                }
                for r in rows
            )
        with (out / "summary.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(summary[0]))
            writer.writeheader()
            writer.writerows(summary)
        (out / "summary.md").write_text(
            _markdown(summary, f"ablation: {grid.name} ({len(rows)} cells)")
        )
        paths = {
            "results": out / "results.csv",
            "summary": out / "summary.csv",
            "markdown": out / "summary.md",
        }
        paths.update(_plots(summary, out / "plots"))
    return AblationResult(out, rows, summary, failed, paths)


def run_grid(
    grid: Grid | str | Path,
    out: str | Path,
    *,
    workers: int = 1,
    torchrun: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> AblationResult:
    """Run every unfinished cell of ``grid`` into ``out`` and write the tables and plots.

    ``workers`` cells run at once in separate processes (threads are split
    between them); ``torchrun=N`` trains each cell as an N-process torchrun job.
    A cell that fails is recorded in ``cells/<id>/error.txt`` and re-run next time.
    """
    grid = load_grid(grid) if not isinstance(grid, Grid) else grid
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if torchrun is not None and torchrun < 1:
        raise ValueError(f"torchrun must be >= 1 processes, got {torchrun}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = grid.cells()
    atomic_write_json(
        out / "grid.json",
        {"grid": {k: v for k, v in vars(grid).items()}, "cells": [c.to_dict() for c in cells]},
        default=str,
    )
    todo = [c for c in cells if not _finished(out / "cells" / c.id, c)]
    done = len(cells) - len(todo)
    log = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
    log(
        f"ablation {grid.name}: {len(cells)} cells, {done} already finished, {len(todo)} to run ({workers} worker(s))"
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=len(cells), initial=done, desc="cells", unit="cell", disable=not progress)
    threads = max(1, (os.cpu_count() or 1) // workers)

    def failed(cell: Cell, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else "".join(traceback.format_exception(exc))
        atomic_write_json(
            out / "cells" / cell.id / "error.json",
            {"cell": cell.to_dict(), "error": str(text).strip().splitlines()[-1]},
        )
        (out / "cells" / cell.id / "error.txt").write_text(str(text))
        log(f"cell {cell.setting} seed {cell.seed} FAILED: {str(text).strip().splitlines()[-1]}")

    for cell in todo:
        (out / "cells" / cell.id / "error.txt").unlink(missing_ok=True)
        (out / "cells" / cell.id / "error.json").unlink(missing_ok=True)
    if workers == 1:
        for cell in todo:
            bar.set_postfix_str(f"{cell.setting} s{cell.seed}")
            try:
                run_cell(
                    grid,
                    cell,
                    out / "cells" / cell.id,
                    device=device,
                    torchrun=torchrun,
                    progress=progress,
                )
            except Exception as exc:  # recorded; the other cells go on
                failed(cell, exc)
            bar.update()
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {
                pool.submit(_job, grid, c, str(out / "cells" / c.id), device, torchrun, threads): c
                for c in todo
            }
            for fut in as_completed(futures):
                cell = futures[fut]
                try:
                    fut.result()
                except Exception as exc:
                    failed(cell, exc)
                bar.update()
    bar.close()
    result = collect(grid, out)
    if result.failed:
        log(f"{len(result.failed)} cell(s) failed (re-run to retry): {sorted(result.failed)}")
    return result
