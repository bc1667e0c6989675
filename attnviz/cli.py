"""The ``attnviz`` command line: one subcommand per job, each with ``--help``.

    attnviz surgery MODEL [--attention se --where residual]   sites and parameter counts
    attnviz layers MODEL [--filter GLOB]                      capturable intermediates
    attnviz train --recipe R.yaml --data synthetic --out DIR  train a recipe
    attnviz cam --model M --image PATH --out FILE.png         Grad-CAM and friends
    attnviz compare BASE OTHER... --data synthetic --out DIR  the before/after study
    attnviz ablate GRID.yaml --out DIR                        a grid of recipes x seeds
    attnviz demo                                              the whole study on built-in data

MODEL is a recipe (``.yaml``), a checkpoint (``.safetensors`` or a run
folder), or a model reference such as ``torchvision:resnet18``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

_COMMANDS: dict[
    str,
    tuple[
        Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None], str
    ],
] = {}


def register(
    name: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
) -> None:
    """Add a subcommand: ``configure(parser)`` adds its arguments, ``run(args)`` does the work."""
    _COMMANDS[name] = (configure, run, help)


def _example(args: argparse.Namespace, model):
    import torch

    from ._capture import default_example_input

    if getattr(args, "input_size", None):
        return torch.randn(1, *args.input_size)
    return default_example_input(model)


def _load(ref: str, trust_code: bool = False):
    from .recipes import load_model

    return load_model(ref, trust_code=trust_code)


# -- surgery ---------------------------------------------------------------------------
def _surgery_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="recipe (.yaml), checkpoint (.safetensors / run folder) or reference (torchvision:resnet18)",
    )
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
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="let checkpoint files name code outside torchvision:, timm:, attnviz: and the class "
        "allowlist (only for files from someone you trust)",
    )


def _run_surgery(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .recipes import parse_where
    from .surgery import attention_modules, insert_attention, surgery_spec

    model = _load(args.model, args.trust_code)
    x = _example(args, model)
    if args.attention:
        where = parse_where(args.where[0] if len(args.where) == 1 else args.where)
        model = insert_attention(
            model, args.attention, where, example_input=x, init=args.init, placement=args.placement
        )
    spec = surgery_spec(model)
    blocks = attention_modules(model)
    attn_params = sum(p.numel() for b in blocks.values() for p in b.parameters())
    total = sum(p.numel() for p in model.parameters())
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    base = spec.get("base") or {}
    print(
        f"model: {type(model).__name__} ({base.get('ref', 'unrecognised base')})  example input {list(x.shape)}"
    )
    if not spec["insertions"]:
        print("no attention blocks")
    for ins in spec["insertions"]:
        print(
            f"\n{ins['attention']} (init={ins['init']}, where={ins['where']}, "
            f"placement={ins.get('placement', 'after')}, kwargs={ins['kwargs']}): {len(ins['sites'])} blocks"
        )
        print(f"  {'site':<28} {'block':<30} {'channels':>8} {'params':>9}")
        for s in ins["sites"]:
            path = f"{s['owner']}.{s['attr']}".strip(".")
            n = sum(p.numel() for p in blocks[path].parameters())
            print(f"  {s['site']:<28} {path:<30} {s['channels']:>8} {n:>9,}")
    base_params = total - attn_params
    pct = 100 * attn_params / max(base_params, 1)
    print(
        f"\nparameters: base {base_params:,} + attention {attn_params:,} (+{pct:.2f}%) = {total:,}"
    )
    print(
        f"FLOPs per image (torch.utils.flop_counter, conv/matmul): {counter.get_total_flops() / x.shape[0] / 1e9:.3f} G"
    )
    return 0


register(
    "surgery", "show attention sites and parameter counts of a model", _surgery_args, _run_surgery
)


# -- layers --------------------------------------------------------------------------------
def _layers_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="recipe, checkpoint or reference")
    p.add_argument(
        "--filter", help="only names matching this dot-aware glob (e.g. 'layer*.?.attn.gate')"
    )
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"))
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="let checkpoint files name code outside torchvision:, timm:, attnviz: and the class "
        "allowlist (only for files from someone you trust)",
    )


def _run_layers(args: argparse.Namespace) -> int:
    from ._select import glob_to_regex
    from .intermediates import list_intermediates

    model = _load(args.model, args.trust_code)
    infos = list_intermediates(model, _example(args, model))
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


register("layers", "list the capturable intermediate values of a model", _layers_args, _run_layers)


def _register_commands() -> None:
    """Import the modules whose commands register themselves (train, cam, compare, demo, ablate)."""
    import importlib

    for name in ("training", "cam", "analysis", "study"):  # their order on the help screen
        importlib.import_module(f"attnviz.{name}.cli")


def build_parser() -> argparse.ArgumentParser:
    _register_commands()
    parser = argparse.ArgumentParser(
        prog="attnviz",
        description="What does channel attention change inside a CNN? Surgery, intermediates, CAMs and before/after studies.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (configure, _, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _, run, _ = _COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"attnviz {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
