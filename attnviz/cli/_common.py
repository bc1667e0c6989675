"""What several commands share: the one-line-error parser, model arguments, loading.

Nothing here (nor in any command module) imports torch at import time: ``attnviz
--help`` and ``attnviz X --help`` only build parsers; each command imports the library
inside its ``run``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

__all__ = ["Parser", "add_model_source", "add_trust_code", "example_input", "load_cli_model"]

MODEL_HELP = (
    "a recipe (.yaml), a checkpoint (.safetensors or a run folder) or a reference "
    "(torchvision:resnet18, timm:resnet50, attnviz:small_resnet, package.module:factory)"
)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``--help`` still shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_trust_code(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="let checkpoint files name code outside torchvision:, timm:, attnviz: and the class "
        "allowlist (only for files from someone you trust)",
    )


def add_model_source(p: argparse.ArgumentParser) -> None:
    """``--pretrained`` / ``--weights`` for commands that take a model reference."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--pretrained",
        action="store_true",
        help="with a torchvision:/timm: reference: the library's own pretrained weights (a download)",
    )
    group.add_argument(
        "--weights", metavar="FILE", help="with a reference: a local weights file of that model"
    )


def load_cli_model(args: argparse.Namespace, ref: str | None = None) -> Any:
    """The model a command names: recipe, checkpoint, or reference (+ --pretrained / --weights)."""
    from pathlib import Path

    from ..errors import AttnvizError
    from ..recipes import load_model
    from ..zoo import create_model

    ref = ref if ref is not None else args.model
    pretrained = getattr(args, "pretrained", False)
    weights = getattr(args, "weights", None)
    is_reference = ":" in ref and not Path(ref).exists()
    if (pretrained or weights) and not is_reference:
        raise AttnvizError(
            f"--pretrained and --weights go with a model reference such as torchvision:resnet18; "
            f"{ref!r} is a recipe or checkpoint, which carries its own weights"
        )
    if is_reference and (pretrained or weights):
        return create_model(ref, pretrained=pretrained, weights=weights)
    return load_model(ref, trust_code=getattr(args, "trust_code", False))


def example_input(args: argparse.Namespace, model: Any) -> Any:
    """``--input-size C H W`` as a random tensor, else the model's default example input."""
    import torch

    from ..inputs import attached_contract

    if getattr(args, "input_size", None):
        return torch.randn(1, *args.input_size)
    contract = attached_contract(model)  # what the model was built, trained or saved for
    if contract is not None:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(1, contract.channels, *contract.size, generator=gen)
    from .._capture import default_example_input

    return default_example_input(model)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
