"""``attnviz cam --model M --image PATH... --out FILE|DIR``: CAM overlays of one or many images.

One image and an output file: one panel (the image and one overlay per method). Several
images (files, folders, globs) or an output folder: one panel per image in the folder,
a contact sheet of every image's overlay (``contact_sheet.png``) and an ``index.html``
listing them, computed in batches with a progress bar. Photos are brought to the
model's input size the way its own transforms do it (:mod:`attnviz.inputs`), upright
from their EXIF orientation; ``skimage:NAME`` takes scikit-image's sample photos
(``skimage:chelsea``, a cat).
"""

from __future__ import annotations

import argparse

from ..errors import AttnvizError
from ._common import MODEL_HELP, add_model_source, add_trust_code, load_cli_model, warn

HELP = "CAM overlays (Grad-CAM and friends) of images, one or a folder of them"

#: The methods compute_cam takes (a test keeps this equal to attnviz.cam.METHODS).
METHOD_NAMES = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "cam",
    "scorecam",
    "eigencam",
    "ablationcam",
    "smoothgradcam++",
)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    add_model_source(p)
    p.add_argument(
        "--image",
        required=True,
        nargs="+",
        help="image files, folders (searched recursively), globs, or skimage:NAME sample photos",
    )
    p.add_argument("--layer", help="capturable layer name (default: the model's last stage output)")
    p.add_argument(
        "--method",
        nargs="+",
        default=["gradcam"],
        help=f"one or more of {', '.join(METHOD_NAMES)} (one panel each)",
    )
    p.add_argument(
        "--target",
        help="class index or class name (default: each image's predicted class)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output image (.png, .jpg, .pdf, .svg) for one image, or a folder for several",
    )
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size (default: the model's own, from its input contract)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per forward")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (0-1)")
    p.add_argument(
        "--aug-smooth", action="store_true", help="test-time augmentation (flips x scales)"
    )
    p.add_argument("--eigen-smooth", action="store_true", help="first principal component of w*A")
    p.add_argument("--output", help="for dict/tuple model outputs: the key or index to explain")
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


def _images(specs: list[str]) -> list[str]:
    """Every image the ``--image`` arguments name, in order, each once."""
    import glob
    from pathlib import Path

    found: list[str] = []
    for spec in specs:
        if spec.startswith("skimage:"):
            found.append(spec)
            continue
        path = Path(spec)
        if path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(str(path))
        elif any(c in spec for c in "*?["):
            hits = sorted(h for h in glob.glob(spec, recursive=True) if Path(h).is_file())
            if not hits:
                raise FileNotFoundError(f"--image {spec!r}: the pattern matches no file")
            found += hits
        else:
            raise FileNotFoundError(f"--image {spec!r}: no such file or folder")
    found = list(dict.fromkeys(found))
    if not found:
        raise FileNotFoundError(
            f"--image {' '.join(specs)}: no images there ({', '.join(_IMAGE_SUFFIXES)})"
        )
    return found


def _sample_photo(spec: str, folder):
    """Write scikit-image's sample photo ``skimage:NAME`` as a PNG (its pixels, no resampling)."""
    from PIL import Image

    name = spec.partition(":")[2]
    try:
        import skimage.data as samples
    except ImportError:
        raise AttnvizError(
            f"--image {spec}: scikit-image's sample photos need `pip install scikit-image`"
        ) from None
    photos = ("astronaut", "chelsea", "coffee", "rocket", "cat")
    if name not in photos:
        from .._select import unknown_name_error

        raise unknown_name_error("scikit-image photo", name, list(photos))
    array = getattr(samples, "chelsea" if name == "cat" else name)()
    path = folder / f"{name}.png"
    Image.fromarray(array).save(path)
    return path


def _check_out(out: str, many: bool):
    """The output file (its format known) or folder, checked before any work."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .._atomic import check_writable_folder

    path = Path(out)
    if many or path.is_dir() or not path.suffix:
        check_writable_folder(path, "--out")
        return path, True
    formats = FigureCanvasAgg.get_supported_filetypes()
    fmt = path.suffix[1:].lower()
    if fmt not in formats:
        raise AttnvizError(
            f"--out {out!r}: cannot write a .{fmt} image; use one of "
            f"{', '.join('.' + f for f in ('png', 'jpg', 'pdf', 'svg'))} (or a folder)"
        )
    check_writable_folder(path.parent if str(path.parent) else Path("."), "--out's folder")
    return path, False


def _target(args: argparse.Namespace, contract, classes: int) -> int | None:
    if args.target is None:
        return None
    text = str(args.target)
    index = int(text) if text.lstrip("-").isdigit() else contract.class_index(text)
    if not 0 <= index < classes:
        raise AttnvizError(f"--target {index} is out of range: the model has {classes} classes")
    return index


def _logits(out, output):
    """The classifier output ``[B, K]`` of a model output (None for other outputs)."""
    import torch

    if isinstance(out, dict):
        out = out.get(output if output is not None else "out")
    elif isinstance(out, tuple | list):
        out = out[output if isinstance(output, int) else 0]
    return out if isinstance(out, torch.Tensor) and out.ndim == 2 else None


def _panel(args, result, i, number, path, shown, probs, layer, contract, out, many) -> dict:
    """One image's panel (image + one overlay per method) written to a file; its row for the sheet."""
    from pathlib import Path

    from .. import plots

    target = int(result.targets[i]) if result.targets is not None else None
    name = contract.class_name(target) if target is not None else "the output's score"
    label = f"{name} (class {target})" if contract.class_names and target is not None else name
    p = f", P={float(probs[target]):.3f}" if probs is not None and target is not None else ""
    cams = {m: result[m, layer][i] for m in result.by_method}
    stem = Path(path).stem
    file = out / f"{number:04d}_{stem}_cam.png" if many else out
    plots.cam_panel(shown, cams, alpha=args.alpha, title=f"{label}{p}; layer {layer}", path=file)
    top = ""
    if probs is not None:
        k = probs.topk(min(3, probs.numel()))
        top = ", ".join(
            f"{contract.class_name(int(c))} {float(v):.3f}" for v, c in zip(k.values, k.indices)
        )
    return {"image": path, "file": file, "label": label + p, "top": top, "shown": shown,
            "cam": cams[args.method[0]]}  # fmt: skip


def _contact_sheet(rows: list[dict], out, method: str, layer: str, contract) -> None:
    """Every image's overlay in one PNG, and an index.html linking each image's panel."""
    import html

    import numpy as np
    import torch

    from .. import plots

    images = torch.from_numpy(np.stack([r["shown"] for r in rows])).permute(0, 3, 1, 2)
    cams = torch.stack([r["cam"].detach().cpu() for r in rows])
    for start in range(0, len(rows), 64):  # one sheet per 64 images keeps the picture legible
        sl = slice(start, start + 64)
        name = "contact_sheet.png" if start == 0 else f"contact_sheet_{start // 64 + 1}.png"
        plots.cam_grid(
            images[sl],
            {method: cams[sl]},
            row_labels=[r["label"] for r in rows[sl]],
            max_images=64,
            title=f"{method} at {layer}",
            path=out / name,
        )
    items = "".join(
        f'<figure><img src="{html.escape(r["file"].name)}" width="360"><figcaption>'
        f"{html.escape(str(r['image']))}: {html.escape(r['label'])}</figcaption></figure>"
        for r in rows
    )
    (out / "index.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>attnviz cam</title></head>"
        f"<body><h1>{html.escape(method)} at {html.escape(layer)}</h1>"
        f"<p><img src='contact_sheet.png' style='max-width:100%'></p>{items}</body></html>"
    )


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import torch
    from tqdm.auto import tqdm

    from ..cam import compute_cam
    from ..inputs import input_contract, load_image

    if not 0 < args.alpha <= 1:
        raise AttnvizError(f"--alpha must be in (0, 1], got {args.alpha}")
    if args.batch_size < 1:
        raise AttnvizError(f"--batch-size must be >= 1, got {args.batch_size}")
    bad = [m for m in args.method if m not in METHOD_NAMES]
    if bad:
        from .._select import unknown_name_error

        raise unknown_name_error("CAM method", bad[0], list(METHOD_NAMES))
    files = _images(args.image)
    out, many = _check_out(args.out, len(files) > 1)
    model = load_cli_model(args).eval()
    contract = input_contract(model)
    if contract.random_weights:
        warn(
            f"{args.model} has random weights: these maps explain an untrained model "
            "(pass --pretrained, or --weights FILE, or a trained checkpoint)"
        )
    if args.size:
        contract.size = tuple(args.size)
    scratch = Path(tempfile.mkdtemp(prefix="attnviz-cam-"))
    files = [str(_sample_photo(f, scratch)) if f.startswith("skimage:") else f for f in files]
    first, _ = load_image(files[0], contract)
    layer = args.layer or _default_layer(model, first)
    output = int(args.output) if args.output and args.output.lstrip("-").isdigit() else args.output
    options = {"aug_smooth": args.aug_smooth, "eigen_smooth": args.eigen_smooth, "output": output}
    with torch.no_grad():
        classes = _logits(model(first), output)
    target = _target(args, contract, classes.shape[1]) if classes is not None else None
    rows = []
    bar = tqdm(total=len(files), desc="cam", unit="img", disable=len(files) == 1)
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        loaded = [load_image(f, contract) for f in chunk]
        x = torch.cat([t for t, _ in loaded])
        result = compute_cam(
            model,
            x,
            layer,
            args.method,
            targets=target,
            class_names=contract.class_names,
            **options,
        )
        with torch.no_grad():
            logits = _logits(model(x), output)
        for i, (path, (_, shown)) in enumerate(zip(chunk, loaded)):
            probs = logits[i].softmax(0) if logits is not None else None
            rows.append(
                _panel(args, result, i, start + i, path, shown, probs, layer, contract, out, many)
            )
        bar.update(len(chunk))
    bar.close()
    if many:
        _contact_sheet(rows, out, args.method[0], layer, contract)
        print(f"wrote {len(rows)} panels, {out / 'contact_sheet.png'} and {out / 'index.html'}")
    else:
        r = rows[0]
        print(f"wrote {out}: {', '.join(args.method)} at {layer} for {r['label']}")
        print("top classes: " + r["top"])
    return 0
