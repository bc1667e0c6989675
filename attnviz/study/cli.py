"""``attnviz demo`` and ``attnviz ablate``."""

from __future__ import annotations

import argparse

from ..cli import register
from .launchers.options import add_launcher_arguments


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument(
        "--fresh", action="store_true", help="discard earlier checkpoints and train again"
    )
    p.add_argument(
        "--quick", action="store_true", help="a tiny version: one short epoch on a few images"
    )
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, fresh=args.fresh, quick=args.quick, device=args.device, seed=args.seed)
    return 0


def _ablate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", help="grid YAML (e.g. models/ablation-small.yaml)")
    p.add_argument("--out", required=True, help="output folder (re-use it to resume)")
    p.add_argument("--workers", type=int, default=1, help="cells run at once in separate processes")
    p.add_argument(
        "--torchrun", type=int, metavar="N", help="train each cell as an N-process torchrun job"
    )
    p.add_argument("--device", help="cpu, cuda, ...")
    add_launcher_arguments(p)


def _ablate(args: argparse.Namespace) -> int:
    from .ablate import run_grid
    from .launchers.options import launcher_from_args

    result = run_grid(
        args.grid,
        args.out,
        torchrun=args.torchrun,
        device=args.device,
        launcher=launcher_from_args(args),
    )
    if "markdown" in result.paths:
        print(result.paths["markdown"].read_text())
        print(f"tables and plots in {result.out.resolve()}")
    return 1 if result.failed else 0


register(
    "demo",
    "the before/after attention study on the built-in dataset (no downloads)",
    _demo_args,
    _demo,
)
register(
    "ablate",
    "run an ablation grid (recipes x attention x placement x kwargs x seeds)",
    _ablate_args,
    _ablate,
)
