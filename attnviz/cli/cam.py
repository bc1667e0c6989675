"""``attnviz cam``: CAM overlays of one image for a recipe, a checkpoint or a model reference."""

from __future__ import annotations

import argparse

from ..errors import AttnvizError
from ._common import add_trust_code

HELP = "CAM overlays (Grad-CAM and friends) of images"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="recipe (.yaml), checkpoint (.safetensors / run folder) or reference",
    )
    p.add_argument("--image", required=True, help="an image file (PNG, JPEG, ...)")
    p.add_argument("--layer", help="capturable layer name (default: the model's last stage output)")
    p.add_argument(
        "--method", nargs="+", default=["gradcam"], help="one or more CAM methods (one panel each)"
    )
    p.add_argument("--target", type=int, help="class index (default: the predicted class)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize the image to this (default: the model's)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (0-1)")
    add_trust_code(p)


def _default_layer(model, x) -> str:
    from .._capture import plan_capture
    from ..intermediates import value_shapes
    from ..surgery import stage_sites

    plan = plan_capture(model)
    stages = stage_sites(plan, value_shapes(plan, x))
    if not stages:
        raise AttnvizError(
            "could not find the model's stage outputs; pass --layer (see `attnviz layers MODEL`)"
        )
    return stages[-1]


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import plots
    from ..cam import compute_cam
    from ..inputs import input_contract, load_image
    from ..recipes import load_model

    if not 0 < args.alpha <= 1:
        raise AttnvizError(f"--alpha must be in (0, 1], got {args.alpha}")
    model = load_model(args.model, trust_code=args.trust_code).eval()
    info = input_contract(model)
    if args.size:
        info.size = tuple(args.size)
    x, shown = load_image(args.image, info)
    layer = args.layer or _default_layer(model, x)
    with torch.no_grad():
        logits = model(x)
    probs = logits.softmax(1)[0]
    target = int(probs.argmax()) if args.target is None else args.target
    if not 0 <= target < probs.numel():
        raise AttnvizError(
            f"--target {target} is out of range: the model has {probs.numel()} classes"
        )
    result = compute_cam(model, x, layer, args.method, targets=target)
    cams = {m: result[m, layer][0] for m in result.by_method}
    name = info.class_name(target)
    label = f"{name} (class {target})" if info.class_names else name
    title = f"{label}, P={float(probs[target]):.3f}; layer {layer}"
    plots.cam_panel(shown, cams, alpha=args.alpha, title=title, path=args.out)
    top = probs.topk(min(3, probs.numel()))
    print(f"wrote {args.out}: {', '.join(cams)} at {layer} for {label}")
    print(
        "top classes: "
        + ", ".join(
            f"{info.class_name(int(k))} {float(p):.3f}" for p, k in zip(top.values, top.indices)
        )
    )
    return 0
