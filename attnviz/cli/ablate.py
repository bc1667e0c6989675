"""``attnviz ablate GRID --out DIR``: an ablation grid (recipes x attention x placement x kwargs x seeds)."""

from __future__ import annotations

import argparse

from ._launchers import add_launcher_arguments

HELP = "run an ablation grid (recipes x attention x placement x kwargs x seeds)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("grid", help="grid YAML (e.g. models/ablation-small.yaml)")
    p.add_argument("--out", required=True, help="output folder (re-use it to resume)")
    p.add_argument("--workers", type=int, default=1, help="cells run at once in separate processes")
    p.add_argument(
        "--torchrun", type=int, metavar="N", help="train each cell as an N-process torchrun job"
    )
    p.add_argument("--device", help="cpu, cuda, ...")
    add_launcher_arguments(p)


def run(args: argparse.Namespace) -> int:
    from .._atomic import check_writable_folder
    from ..study.ablate import run_grid
    from ._launchers import launcher_from_args

    check_writable_folder(args.out, "--out")

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
