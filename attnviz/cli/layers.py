"""``attnviz layers MODEL [--filter GLOB]``: the capturable intermediate values of a model."""

from __future__ import annotations

import argparse
import sys

from ._common import MODEL_HELP, add_trust_code, example_input, load_cli_model

HELP = "list the capturable intermediate values of a model"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument(
        "--filter", help="only names matching this dot-aware glob (e.g. 'layer*.?.attn.gate')"
    )
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"))
    add_trust_code(p)


def run(args: argparse.Namespace) -> int:
    from .._select import glob_to_regex
    from ..intermediates import list_intermediates

    model = load_cli_model(args)
    infos = list_intermediates(model, example_input(args, model))
    if args.filter:
        rx = glob_to_regex(args.filter)
        infos = [i for i in infos if rx.match(i.name)]
        if not infos:
            print(f"no intermediate matches {args.filter!r}", file=sys.stderr)
            return 1
    print(f"{'name':<40} {'kind':<6} {'type':<24} shape")
    for info in infos:
        print(info)
    return 0
