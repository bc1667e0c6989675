"""``train.py`` and ``attnviz train``: the command line of :func:`attnviz.training.train`.

    python train.py --recipe models/small-resnet-se.yaml --data synthetic --epochs 10 --out runs/se
    torchrun --nproc_per_node=2 train.py --recipe models/small-resnet-se.yaml --out runs/se-ddp
    attnviz train --recipe models/resnet18-se.yaml --data path/to/images --finetune attention \\
        --set lr=0.01 --set batch_size=128 --out runs/r18-se

Bad input (a missing recipe, an unknown base or ``--set`` key, a data folder
without images, ``--epochs`` outside 1..10000, an ``--out`` that cannot be
written, an ``--out`` another training is using) prints one error line on
stderr and exits with status 2, having written nothing. Ctrl-C prints one line
(the epoch reached; rerunning the same command resumes) and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..settings import FINETUNE_MODES, MAX_EPOCHS, TrainError, TrainSettings, parse_set
from ._common import Parser

__all__ = ["add_arguments", "main", "run"]

HELP = "train a recipe (single process or torchrun DDP)"


def _epochs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= value <= MAX_EPOCHS:
        raise argparse.ArgumentTypeError(f"must be in [1, {MAX_EPOCHS}], got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _num_classes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments shared by ``train.py`` and ``attnviz train``."""
    p.add_argument("--recipe", required=True, help="recipe file (models/*.yaml)")
    p.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic' (built-in shapes), 'synthetic:N' (N training images), a named "
        "dataset (oxford-pets:PATH, voc-seg:PATH, cifar10:PATH, imagenette:PATH), or an image "
        "folder with train/ and val/ class subfolders (default: synthetic)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch a named dataset into its PATH with torchvision when it is missing",
    )
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics, TensorBoard")
    p.add_argument("--epochs", type=_epochs, help=f"override the recipe's epochs (1..{MAX_EPOCHS})")
    p.add_argument("--seed", type=_seed, default=0, help="weights, data order, flips (default 0)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="continue from the last good checkpoint in --out (default)",
    )
    group.add_argument(
        "--fresh", dest="resume", action="store_false", help="start over, replacing --out's run"
    )
    p.add_argument(
        "--finetune",
        choices=FINETUNE_MODES,
        default="all",
        help="which parameters train (default: all)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:K (default: CUDA when available)")
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a train: setting of the recipe (repeatable, YAML values), e.g. "
        "--set lr=0.05, or an entry of its base_kwargs / block_kwargs / opt_kwargs with a dotted "
        f"key, e.g. --set block_kwargs.rd_ratio=0.25; train: keys: {', '.join(TrainSettings.keys())}",
    )
    p.add_argument(
        "--num-classes",
        type=_num_classes,
        help="classes of the model's classifier (same as --set base_kwargs.num_classes=N)",
    )
    p.add_argument(
        "--stop-after",
        type=_epochs,
        help="return after this many epochs (a later call resumes)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no bars or lines")
    p.add_argument(
        "--no-tensorboard", dest="tensorboard", action="store_false", help="no TensorBoard logs"
    )


def _is_main() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def run(args: argparse.Namespace) -> int:
    """Train from parsed arguments; 0 on success, 2 on bad input, 130 on Ctrl-C (one line each)."""
    from ..training import TrainingInterrupted, train

    try:
        overrides = parse_set(args.settings)
        if args.num_classes is not None:
            key, given = "base_kwargs.num_classes", overrides.get("base_kwargs.num_classes")
            if given is not None and given != args.num_classes:
                raise TrainError(
                    f"--num-classes {args.num_classes} and --set {key}={given} disagree; pass one"
                )
            overrides[key] = args.num_classes
        result = train(
            args.recipe,
            data=args.data,
            out=args.out,
            epochs=args.epochs,
            seed=args.seed,
            resume=args.resume,
            device=args.device,
            finetune=args.finetune,
            progress=args.progress,
            tensorboard=args.tensorboard,
            overrides=overrides,
            stop_after=args.stop_after,
            download=args.download,
        )
    except TrainError as exc:
        if _is_main():
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: one line, not a traceback
        if _is_main():
            started = isinstance(exc, TrainingInterrupted)
            line = str(exc) if started else "interrupted before training started (nothing written)"
            print(line, file=sys.stderr)
        return 130
    if _is_main() and args.progress:
        m = result.metrics
        state = "finished" if result.finished else "stopped (resume to continue)"
        if m.get("epochs"):
            print(
                f"{state}: val acc {m['val_acc']:.4f} (best {m['best_val_acc']:.4f} at epoch "
                f"{m['best_epoch']}), {m['train_time_s']:.0f} s training, "
                f"{m['images_per_s']:.0f} images/s; weights: {result.checkpoint}",
                file=sys.stderr,
            )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python train.py ...``: parse ``argv`` (default ``sys.argv[1:]``) and train."""
    parser = Parser(
        prog="train.py",
        description="Train a recipe (models/*.yaml) on a dataset; checkpoints are resumable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


configure = add_arguments

if __name__ == "__main__":  # python -m attnviz.cli.train == python train.py
    raise SystemExit(main())
