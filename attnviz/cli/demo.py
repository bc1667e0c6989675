"""``attnviz demo``: the before/after study on the built-in dataset, no arguments, no downloads."""

from __future__ import annotations

import argparse

HELP = "the before/after attention study on the built-in dataset (no downloads)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument(
        "--fresh", action="store_true", help="discard earlier checkpoints and train again"
    )
    p.add_argument(
        "--quick", action="store_true", help="a tiny version: one short epoch on a few images"
    )
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from ..study.demo import run_demo

    run_demo(args.out, fresh=args.fresh, quick=args.quick, device=args.device, seed=args.seed)
    return 0
