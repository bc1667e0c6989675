"""``attnviz surgery MODEL [--attention se --where residual]``: sites and parameter counts."""

from __future__ import annotations

import argparse

from ._common import MODEL_HELP, add_trust_code, example_input, load_cli_model

HELP = "show attention sites and parameter counts of a model"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--attention", help="insert this block (a registered name) before reporting")
    p.add_argument(
        "--where",
        nargs="+",
        default=["residual"],
        help="residual, stages, module-name globs, or nn.Conv2d-style types",
    )
    p.add_argument("--init", default="default", choices=["default", "identity"])
    p.add_argument(
        "--placement",
        default="after",
        choices=["after", "parallel", "replace"],
        help="after the site; parallel: beside a module, added through a scale at 0; "
        "replace: the module swapped for the block",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        metavar=("C", "H", "W"),
        help="example input size (default: from the model)",
    )
    add_trust_code(p)


def run(args: argparse.Namespace) -> int:
    from ..recipes import parse_where
    from ..surgery import insert_attention
    from ..surgery.summary import summary

    model = load_cli_model(args)
    x = example_input(args, model)
    if args.attention:
        where = parse_where(args.where[0] if len(args.where) == 1 else args.where)
        model = insert_attention(
            model, args.attention, where, example_input=x, init=args.init, placement=args.placement
        )
    print(summary(model, x))
    return 0
