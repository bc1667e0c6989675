"""The ``attnviz`` command line: one module per command, each with ``--help``.

    attnviz surgery MODEL [--attention se --where residual]   sites and parameter counts
    attnviz layers MODEL [--filter GLOB]                      capturable intermediates
    attnviz train --recipe R.yaml --data synthetic --out DIR  train a recipe
    attnviz cam --model M --image PATH... --out FILE|DIR      Grad-CAM and friends
    attnviz compare BASE OTHER... --data synthetic --out DIR  the before/after study
    attnviz ablate GRID.yaml --out DIR                        a grid of recipes x seeds
    attnviz demo                                              the whole study on built-in data

MODEL is a recipe (``.yaml``), a checkpoint (``.safetensors`` or a run folder), or
a model reference such as ``torchvision:resnet18``.

The library never imports this package. Bad input (any
:class:`~attnviz.errors.AttnvizError`, or a missing file) prints one line and exits
with 2; Ctrl-C prints one line and exits with 130; anything else is a bug and keeps
its traceback. No command module imports torch before its command runs, so ``--help``
is instant.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .._warnings import one_line_warnings
from ._common import Parser

__all__ = ["COMMANDS", "build_parser", "main"]

#: The commands in the order ``--help`` lists them: name -> module in this package.
COMMANDS = {
    "surgery": "surgery",
    "layers": "layers",
    "train": "train",
    "cam": "cam",
    "compare": "compare",
    "demo": "demo",
    "ablate": "ablate",
}


def build_parser() -> Parser:
    parser = Parser(
        prog="attnviz",
        description="What does channel attention change inside a CNN? Surgery, intermediates, "
        "CAMs and before/after studies.",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f".{module}", __name__)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``attnviz`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(f".{COMMANDS[args.command]}", __name__)
    from ..errors import AttnvizError

    try:
        with one_line_warnings(f"attnviz {args.command}"):
            return int(module.run(args) or 0)
    except (AttnvizError, FileNotFoundError) as exc:
        _print_error(args.command, exc)
        return 2
    except KeyboardInterrupt as exc:
        default = getattr(module, "INTERRUPTED", "interrupted")
        print(f"attnviz {args.command}: {str(exc) or default}", file=sys.stderr)
        return 130


def _print_error(command: str, exc: BaseException) -> None:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    print(f"attnviz {command}: error: {first}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
