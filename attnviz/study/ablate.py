"""Run an ablation grid: every cell trains (or fine-tunes), is evaluated, and is written once.

A cell is finished when ``cells/<id>/result.json`` exists (written atomically,
last): a restarted run skips finished cells and re-runs the others, whose
training resumes from its own checkpoints. Where cells run is the launcher's
business (:mod:`attnviz.study.launchers`: this machine, Ray, Slurm), and a
cell's training can run as a ``torchrun`` job. The results become one CSV, one
markdown table and plots.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .._atomic import atomic_write_json
from ..analysis.columns import SUMMARY_COLUMNS
from ..data.specs import is_synthetic
from ..errors import AttnvizError, FileFormatError
from ..fileformats import read_json
from .grid import Cell, Grid, load_grid
from .launchers import CellTask, Launcher, resolve_launcher
from .launchers.worker import out_folder_id

__all__ = ["AblationResult", "run_grid"]

#: Per-cell columns of results.csv (besides the cell's settings): the comparison's summary
#: columns that one model has on its own (not those relative to a baseline), and training time.
METRICS = (
    *(c.key for c in SUMMARY_COLUMNS if c.key not in ("mean_cka", "cam_pearson")),
    "train_time_s",
)


@dataclass
class AblationResult:
    out: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    failed: dict[str, str]
    paths: dict[str, Path]
    pending: list[str] = field(default_factory=list)  # cells still queued or running elsewhere


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
        "attnviz",
        "train",
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
    from ..inputs import input_contract

    contract = input_contract(model)
    ev = grid.eval
    images = int(ev.get("images", 512))
    synthetic = is_synthetic(grid.data)
    spec = grid.data if not synthetic else f"synthetic:{images}"
    options: dict[str, Any] = {}
    if synthetic:  # as many classes as the model has (training drew its images the same way)
        options["num_classes"] = _num_classes(model, contract)
    else:
        options.update(mean=contract.mean, std=contract.std, resize=contract.resize)
    # the same images for every cell
    data = build_dataset(spec, split="val", size=contract.size[0], **options)
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


def _num_classes(model, contract) -> int:
    if contract.class_names:
        return len(contract.class_names)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return last[-1].out_features if last else 10


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
    from ..training import read_metrics, train

    recipe = _cell_recipe(grid, cell)
    if torchrun:
        run_dir = _train_torchrun(grid, cell, recipe, out, torchrun, device)
        # the grid's recipe builds the model; the run folder only gives its weights
        model = load_weights(build_model(recipe_from_dict(recipe)), run_dir / "model.safetensors")
        train_metrics = read_metrics(run_dir, missing_ok=True)
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


#: Metrics compared with the baseline setting across seeds (paired by seed), Holm-adjusted.
SEED_TESTED = ("accuracy", "energy_pointing_game", "cam_iou", "deletion_auc", "insertion_auc")
#: Their headers in the markdown summary.
SEED_TESTED_HEADERS = ("Δ acc", "Δ energy PG", "Δ IoU@0.5", "Δ deletion↓", "Δ insertion↑")


def _baseline_setting(setting: str, settings: Collection[str] = ()) -> str:
    """The setting ``setting`` is tested against: its recipe's ``none``, or the grid's only one.

    A grid without an attention axis (``ablation-families.yaml``: each recipe its own
    surgery) has one ``none`` setting, the baseline recipe; every other setting runs the
    same network family on the same data and seeds, so it pairs with that one by seed.
    """
    own = f"{setting.split('/', 1)[0]}/none"
    if own in settings or not settings:
        return own
    nones = [s for s in settings if s.endswith("/none")]
    return nones[0] if len(nones) == 1 else own


def _summarize(rows: list[dict[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """Per setting: mean, std, n and the t interval over seeds of every metric (none below 3
    seeds); against the baseline setting (:func:`_baseline_setting`), a paired t-test over the seeds both ran
    (same seed, same data order), Holm-adjusted over every (setting, metric) test."""
    from ..stats import holm, paired_seed_test, seed_summary

    settings: dict[str, list[dict]] = {}
    for r in rows:
        settings.setdefault(r["setting"], []).append(r)
    out = []
    tests: dict[tuple[str, str], float] = {}
    for setting, group in settings.items():
        row: dict[str, Any] = {"setting": setting, "seeds": len(group)}
        for m in METRICS:
            values = {g["seed"]: g[m] for g in group if g.get(m) is not None}
            summary = seed_summary(values, level) if values else None
            row[m] = summary["mean"] if summary else None
            row[f"{m}_std"] = summary["std"] if summary else None
            row[f"{m}_ci_low"] = summary["ci_low"] if summary else None
            row[f"{m}_ci_high"] = summary["ci_high"] if summary else None
        row["interval_note"] = seed_summary([0.0] * len(group), level)["note"]
        baseline = _baseline_setting(setting, settings)
        base = settings.get(baseline)
        if base is not None and setting != baseline:
            for m in SEED_TESTED:
                v = {g["seed"]: g[m] for g in group if g.get(m) is not None}
                b = {g["seed"]: g[m] for g in base if g.get(m) is not None}
                if not v or not b:
                    continue
                t = paired_seed_test(v, b, level)
                row[f"{m}_delta"], row[f"{m}_delta_n"] = t.get("delta"), t.get("n")
                row[f"{m}_delta_ci_low"], row[f"{m}_delta_ci_high"] = (
                    t.get("ci_low"),
                    t.get("ci_high"),
                )
                row[f"{m}_p"] = t.get("p")
                if t.get("p") is not None:
                    tests[setting, m] = t["p"]
        out.append(row)
    adjusted = holm(tests) if tests else {}
    for row in out:
        for m in SEED_TESTED:
            p = adjusted.get((row["setting"], m))
            row[f"{m}_p_adj"] = p
            row[f"{m}_significant"] = None if p is None else bool(p <= 1 - level)
    return out


def _cell_text(r: dict[str, Any], key: str, fmt: str) -> str:
    v = r.get(key)
    if v is None:
        return "–"
    lo, hi = r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")
    if lo is not None and hi is not None:
        return f"{fmt.format(v)} [{fmt.format(lo)}, {fmt.format(hi)}]"
    return fmt.format(v)


def _markdown(summary: list[dict[str, Any]], title: str, level: float = 0.95) -> str:
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
    pct = round(100 * level)
    head = "| setting | seeds | " + " | ".join(h for _, h, _ in cols) + " |"
    lines = [f"# {title}", "", f"Mean over seeds [{pct}% t interval].", "", head]
    lines.append("|" + "---|" * (len(cols) + 2))
    for r in summary:
        cells = [_cell_text(r, key, fmt) for key, _, fmt in cols]
        seeds = f"{r['seeds']}" + (f" ({r['interval_note']})" if r.get("interval_note") else "")
        lines.append(f"| {r['setting']} | {seeds} | " + " | ".join(cells) + " |")
    diffs = [r for r in summary if any(r.get(f"{m}_delta") is not None for m in SEED_TESTED)]
    if diffs:
        lines += [
            "",
            f"## Against the baseline setting, paired by seed (Δ [{pct}% CI], Holm-adjusted p)",
            "",
        ]
        lines.append("| setting | " + " | ".join(SEED_TESTED_HEADERS) + " |")
        lines.append("|" + "---|" * (len(SEED_TESTED) + 1))
        for r in diffs:
            cells = []
            for m in SEED_TESTED:
                d = r.get(f"{m}_delta")
                if d is None:
                    cells.append("–")
                    continue
                lo, hi = r.get(f"{m}_delta_ci_low"), r.get(f"{m}_delta_ci_high")
                text = f"{d:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else "")
                p = r.get(f"{m}_p_adj")
                text += (
                    f", p {p:.2g}"
                    if p is not None
                    else f" (n = {r.get(f'{m}_delta_n')} < 3: no test)"
                )
                cells.append(text + (" *" if r.get(f"{m}_significant") else ""))
            lines.append(f"| {r['setting']} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Δ = setting − baseline setting, per seed (same seed, same data order); paired t-test "
            "over seeds (scipy.stats.ttest_rel); `*`: significant after Holm's adjustment over "
            "every (setting, metric) test.",
        ]
    return "\n".join(lines) + "\n"


def _plots(summary: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    from .. import plots

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    have = [r for r in summary if r.get("accuracy") is not None]
    if not have:
        return paths
    acc = {r["setting"]: 100 * r["accuracy"] for r in have}
    ci = {
        r["setting"]: (100 * r["accuracy_ci_low"], 100 * r["accuracy_ci_high"])
        for r in have
        if r.get("accuracy_ci_low") is not None
    }
    paths["accuracy_bars"] = plots.save_figure(
        plots.bar_chart(
            acc,
            ylabel="accuracy % (mean over seeds, 95% t interval)",
            zoom=False,
            intervals=ci,
        ),
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
        paths["localization_vs_accuracy"] = plots.save_figure(
            plots.scatter_tradeoff(loc, "accuracy %", "pointing game"),
            folder / "localization_vs_accuracy.png",
        )
        bars = {
            r["setting"]: r["pointing_game"] for r in have if r.get("pointing_game") is not None
        }
        ci = {
            r["setting"]: (r["pointing_game_ci_low"], r["pointing_game_ci_high"])
            for r in have
            if r.get("pointing_game_ci_low") is not None
        }
        paths["pointing_bars"] = plots.save_figure(
            plots.bar_chart(
                bars, ylabel="pointing game (mean, 95% t interval)", zoom=False, intervals=ci
            ),
            folder / "pointing_bars.png",
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
    summary = _summarize(rows)
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
            writer = csv.DictWriter(
                f, fieldnames=list(dict.fromkeys(k for r in summary for k in r))
            )
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
    launcher: str | Launcher = "local",
) -> AblationResult:
    """Run every unfinished cell of ``grid`` into ``out`` and write the tables and plots.

    ``launcher`` says where cells run: ``"local"`` (``workers`` cells at once in
    separate processes, threads split between them), ``"ray"``, ``"slurm"``, or a
    launcher object (:mod:`attnviz.study.launchers`) with its options;
    ``torchrun=N`` trains each cell as an N-process torchrun job. A cell that
    fails is recorded in ``cells/<id>/error.txt`` and re-run next time.
    """
    grid = load_grid(grid) if not isinstance(grid, Grid) else grid
    if workers < 1:
        raise AttnvizError(f"workers must be >= 1, got {workers}")
    if torchrun is not None and torchrun < 1:
        raise AttnvizError(f"torchrun must be >= 1 processes, got {torchrun}")
    launcher = resolve_launcher(launcher, workers=workers)
    launcher.check(torchrun=torchrun, device=device)
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
        f"ablation {grid.name}: {len(cells)} cells, {done} already finished, {len(todo)} to run ({launcher.describe()})"
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=len(cells), initial=done, desc="cells", unit="cell", disable=not progress)

    def finished(task: CellTask, error: str | None) -> None:
        if error is None and not (task.cell_dir / "result.json").is_file():
            error = f"the cell reported success but the runner sees no {task.cell_dir / 'result.json'}: the --out folder must be on storage the runner and all workers see"
        if error is not None:
            atomic_write_json(
                task.cell_dir / "error.json",
                {"cell": task.cell.to_dict(), "error": error.strip().splitlines()[-1]},
            )
            (task.cell_dir / "error.txt").write_text(error)
            log(
                f"cell {task.cell.setting} seed {task.cell.seed} FAILED: {error.strip().splitlines()[-1]}"
            )
        bar.update()

    for cell in todo:
        (out / "cells" / cell.id / "error.txt").unlink(missing_ok=True)
        (out / "cells" / cell.id / "error.json").unlink(missing_ok=True)
    root = str(out.resolve())
    out_id = out_folder_id(out) if todo else ""
    tasks = [CellTask(grid, c, root, out_id, run_cell, device, torchrun, progress) for c in todo]
    pending = launcher.launch(tasks, finished)
    bar.close()
    result = collect(grid, out)
    result.pending = [t.cell.id for t in pending]
    if result.failed:
        log(f"{len(result.failed)} cell(s) failed (re-run to retry): {sorted(result.failed)}")
    if result.pending:
        log(
            f"{len(result.pending)} cell(s) still queued or running (job ids in cells/<id>/job.json): run the same command again to collect them"
        )
    return result
