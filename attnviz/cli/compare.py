"""``attnviz compare BASELINE OTHER... --data synthetic|PATH --out DIR``: the before/after study."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import AttnvizError
from ._common import add_trust_code

HELP = "compare a baseline with its attention variants: metrics, figures, HTML report"
INTERRUPTED = "interrupted; nothing written"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="baseline first, then variants: recipes, checkpoints or references",
    )
    p.add_argument(
        "--data",
        required=True,
        help="'synthetic' (the built-in validation split), 'synthetic:N', an image folder, or a "
        "named dataset's val split: oxford-pets:PATH (trimaps as masks), voc-seg:PATH, "
        "cifar10:PATH, imagenette:PATH",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch a named dataset into its PATH with torchvision when it is missing",
    )
    p.add_argument(
        "--masks", help="folder of masks beside an image folder (same relative paths, PNG)"
    )
    p.add_argument(
        "--resize-masks",
        action="store_true",
        help="resize masks of another size than their image (same aspect ratio) instead of "
        "stopping",
    )
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable image files (and bad masks) with a warning instead of stopping",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder: report.html, summary.csv, table.csv, comparison.json, figures/",
    )
    p.add_argument(
        "--names", nargs="+", help="display names, one per model (default: recipe/run/file names)"
    )
    p.add_argument("--images", type=int, help="use at most this many images")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="run every model at this input size, overriding their own (the report says so)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--layers", nargs="+", default=["stages"], help="'stages' or layer names / globs"
    )
    p.add_argument("--cam-layer", help="layer for CAMs (default: the last compared layer)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["gradcam"],
        help="CAM methods; the first drives agreement and faithfulness",
    )
    p.add_argument(
        "--no-faithfulness",
        action="store_true",
        help="skip deletion/insertion and average drop (they need extra forwards)",
    )
    p.add_argument(
        "--faithfulness-images",
        type=int,
        default=64,
        help="faithfulness costs 2*steps+3 forwards per image: measure it on the first N images "
        "(default 64)",
    )
    p.add_argument("--faithfulness-steps", type=int, default=20, help="deletion/insertion steps")
    p.add_argument(
        "--bootstrap-replicates",
        type=int,
        default=1000,
        metavar="B",
        help="Poisson bootstrap replicates behind every interval (default 1000)",
    )
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap weights")
    p.add_argument(
        "--device",
        help="cpu, cuda, cuda:1 ... (default: cuda when available; under torchrun cuda:LOCAL_RANK)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic validation split")
    add_trust_code(p)


def model_label(ref: str) -> str:
    """A short display name for a model reference: recipe name, run folder or file stem."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        from ..recipes import load_recipe

        return load_recipe(path).name
    if path.is_dir():
        return path.name
    if path.suffix == ".safetensors":
        return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return ref.split(":", 1)[-1]


def _dataset(args: argparse.Namespace, contract, num_classes: int | None):
    from ..data import build_dataset
    from ..data.specs import is_synthetic

    spec, size = args.data, contract.size
    if is_synthetic(spec):
        if args.masks:
            raise AttnvizError(
                "--masks is for image folders; synthetic images carry their own masks"
            )
        extra = {"num_classes": num_classes} if num_classes else {}
        return build_dataset(spec, "val", size[0], seed=args.seed, download=args.download, **extra)
    options = {
        "mean": contract.mean,
        "std": contract.std,
        "skip_bad": args.skip_bad_images,
        "resize": contract.resize,
    }
    if args.resize_masks:
        options["resize_masks"] = True
    return build_dataset(
        spec, "val", size, masks_root=args.masks, download=args.download, **options
    )


def _contract(args: argparse.Namespace, models: dict):
    """The input contract every model shares (or the --size override), and the class count."""
    from ..inputs import common_contract, input_contract

    contracts = {n: input_contract(m) for n, m in models.items()}
    contract = common_contract(contracts, size=tuple(args.size) if args.size else None)
    if args.size:
        contract.source = f"--size {args.size[0]} {args.size[1]} (overriding the models' own)"
    return contract


def run(args: argparse.Namespace) -> int:
    """Compare the models; under ``torchrun`` every process takes a share of the batches and
    rank 0 writes the outputs."""
    from .._atomic import check_writable_folder
    from ..analysis import compare, write_outputs
    from ..recipes import load_model
    from ..training.distributed import setup

    if args.names and len(args.names) != len(args.models):
        raise AttnvizError(f"--names has {len(args.names)} entries for {len(args.models)} models")
    names = args.names or [model_label(m) for m in args.models]
    if len(set(names)) != len(names):
        raise AttnvizError(f"model names must be distinct, got {names}; pass --names")
    models = {n: load_model(ref, trust_code=args.trust_code) for n, ref in zip(names, args.models)}
    check_writable_folder(args.out, "--out")  # before any work, not after it
    contract = _contract(args, models)
    data = _dataset(args, contract, len(contract.class_names) if contract.class_names else None)
    layers = args.layers[0] if args.layers == ["stages"] else args.layers
    ctx = setup(args.device)
    try:
        if ctx.is_main and not args.no_faithfulness:
            scope = (
                "all"
                if args.faithfulness_images is None
                else f"the first {args.faithfulness_images}"
            )
            print(f"faithfulness (deletion/insertion, average drop) on {scope} images, "
                  f"{args.faithfulness_steps} steps", flush=True)  # fmt: skip
        result = compare(
            models,
            data,
            layers=layers,
            cam_layer=args.cam_layer,
            cam_methods=args.methods,
            max_images=args.images,
            device=ctx.device,
            batch_size=args.batch_size,
            faithfulness=not args.no_faithfulness,
            faithfulness_images=args.faithfulness_images,
            faithfulness_steps=args.faithfulness_steps,
            class_names=contract.class_names,
            input_contract=contract,
            data_source=args.data,
            replicates=args.bootstrap_replicates,
            bootstrap_seed=args.bootstrap_seed,
            distributed=ctx.distributed,
            progress=ctx.is_main,
        )
        if ctx.is_main:
            paths = write_outputs(result, args.out)
            print(result.summary_text())
            diff = result.differences_text()
            if diff:
                print("\n" + diff)
            print(f"\nreport: {paths['report']}")
        ctx.barrier()
    finally:
        ctx.close()
    return 0
