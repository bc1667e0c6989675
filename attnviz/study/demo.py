"""The main job: train a small ResNet and its SE, ECA and CBAM variants, then compare them.

Everything runs offline on the built-in localisation dataset. Each model
trains into ``out/<recipe>`` (resumable: a second run reuses finished
checkpoints unless ``fresh``), then :func:`attnviz.compare` writes
``out/report.html``, the CSV/JSON tables and the PNG figures.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["DEMO_RECIPES", "DemoResult", "run_demo"]

DEMO_RECIPES = ("small-resnet", "small-resnet-se", "small-resnet-eca", "small-resnet-cbam")

#: --quick: a tiny version for tests and smoke runs (one short epoch, few images).
QUICK = {"epochs": 1, "train_images": 256, "val_images": 64}


@dataclass
class DemoResult:
    out: Path
    report: Path
    summary: str
    differences: str
    train_metrics: dict[str, dict]
    seconds: float


def recipe_paths() -> list[Path]:
    """The shipped demo recipes (package data: they work from an installed wheel too)."""
    from ..recipes import find_shipped

    return [find_shipped(name) for name in DEMO_RECIPES]


def run_demo(
    out: str | Path = "runs/demo",
    *,
    fresh: bool = False,
    quick: bool = False,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    """Train the four demo models (or reuse them) and write the comparison report.

    ``quick`` trains for one short epoch on a few images (a smoke run);
    ``fresh`` discards earlier checkpoints in ``out``.
    """
    from ..analysis import compare, write_outputs
    from ..data import build_dataset
    from ..data.synthetic import DEMO_TRAINING
    from ..serialization import load
    from ..training import train

    start = time.perf_counter()
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = dict(QUICK) if quick else None
    models, metrics = {}, {}
    for path in recipe_paths():
        name = path.stem
        print(f"\n== {name} ==", flush=True)
        result = train(
            path,
            data="synthetic",
            out=out / name,
            seed=seed,
            device=device,
            progress=progress,
            overrides=overrides,
        )
        models[name] = load(result.checkpoint).eval()
        metrics[name] = result.metrics
        print(f"{name}: val accuracy {result.metrics.get('val_acc', float('nan')):.3f}", flush=True)

    val_images = QUICK["val_images"] if quick else DEMO_TRAINING["val_images"]
    data = build_dataset(f"synthetic:{val_images}", split="val", size=64)
    print(f"\n== comparing {len(models)} models on {val_images} validation images ==", flush=True)
    comparison = compare(
        models,
        data,
        batch_size=64,
        faithfulness_images=16 if quick else 200,
        panels=4 if quick else 8,
        device=device,
        progress=progress,
    )
    paths = write_outputs(comparison, out)
    summary = comparison.summary_text()
    differences = comparison.differences_text()
    seconds = time.perf_counter() - start
    print("\n" + summary)
    print("\n" + differences)
    print(f"\nreport: {paths['report'].resolve()}  ({seconds / 60:.1f} min)")
    return DemoResult(out, paths["report"], summary, differences, metrics, seconds)
