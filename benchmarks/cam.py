"""Grad-CAM speed: attnviz against pytorch-grad-cam, torchcam, captum and a plain forward.

    python benchmarks/cam.py                    # resnet50, batch 16, 224x224, CPU, 5 rounds
    python benchmarks/cam.py --device cuda
    python benchmarks/cam.py --quick            # smoke run: resnet18, batch 2, 64x64, 1 round

Every entry is end to end: the references' extractor objects (hooks) are
built inside each timed call, maps come back at the input size, per-image
min-max scaled (torchcam's maps are not upsampled, as that library returns
them). Rounds are interleaved (each round runs every entry once, in a rotated
order) and the median is reported, so a slow spell of a shared machine hits all
entries alike.

Entries:
  forward            one forward of the plain model with autograd enabled
  attnviz            compute_cam(model, x, "layer4", "gradcam", targets), as called in a loop
                     over batches: the model's trace is cached from the first call
  attnviz cold       the same on a new model object each call (its trace included)
  pytorch-grad-cam   GradCAM(model, [model.layer4])(x, targets)
  torchcam           with GradCAM(model, "layer4") as e: e(targets, model(x))
  captum             LayerGradCam(...).attribute(relu_attributions=True) + bilinear + min-max
  attnviz 5x2        gradcam, gradcam++, xgradcam, layercam, hirescam at layer3 and layer4
                     in one call
and, measured once per --multi-rounds, what the references need for those ten
maps: pytorch-grad-cam one call per method and layer (10 calls); torchcam one
call per method with both layers (4 calls: it has no HiResCAM).

Then the methods pytorch-grad-cam users reach for beyond Grad-CAM, each against
pytorch-grad-cam on the same images and targets (ratio attnviz / pytorch-grad-cam):
  ablationcam        compute_cam(..., "layer4", "ablationcam") against AblationCAM, on the
                     first --ablation-batch images (pytorch-grad-cam runs the whole model
                     for every chunk of 32 ablated channels, attnviz the layers after layer4),
                     --ablation-rounds rounds
  aug_smooth         compute_cam(..., "layer4", "gradcam", aug_smooth=True) against
                     GradCAM(...)(x, targets, aug_smooth=True), --rounds rounds

Before timing, the maps of all libraries are checked to agree within 1e-5.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnviz.cam import compute_cam, minmax

GRADIENT = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"]
LAYERS = ["layer3", "layer4"]
TOL = 1e-5


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet50", help="torchvision model (default resnet50)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--multi-rounds", type=int, default=1, help="rounds of the 10-map references")
    p.add_argument(
        "--ablation-batch", type=int, default=1, help="images for the Ablation-CAM rows (default 1)"
    )
    p.add_argument("--ablation-rounds", type=int, default=1, help="rounds of the Ablation-CAM rows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable timings on a shared machine; 0: torch's default)",
    )
    p.add_argument(
        "--clock",
        choices=["auto", "cpu", "wall"],
        default="auto",
        help="cpu: this process's CPU time (steady on a shared machine; single-threaded CPU "
        "runs); wall: elapsed time (CUDA synchronised). auto: cpu for --device cpu with one "
        "thread, else wall",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: resnet18, batch 2, 64x64")
    args = p.parse_args(argv)
    if args.quick:
        args.arch, args.batch, args.size, args.rounds = "resnet18", 2, 64, 1
        args.ablation_batch = 2
    return args


# -- the entries ----------------------------------------------------------------------
def references(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor):
    """Callables returning Grad-CAM maps from each installed reference library."""
    out: dict[str, Callable[[], torch.Tensor]] = {}
    tg = targets.tolist()
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        m_pgc = copy.deepcopy(model)

        def pgc() -> torch.Tensor:
            with GradCAM(m_pgc, [m_pgc.layer4]) as cam:
                maps = cam(x, [ClassifierOutputTarget(t) for t in tg])
            return torch.from_numpy(maps)

        out["pytorch-grad-cam"] = pgc
    except ImportError:
        print("pytorch-grad-cam not installed: skipped")
    try:
        from torchcam.methods import GradCAM as TcGradCAM

        m_tc = copy.deepcopy(model)

        def torchcam() -> torch.Tensor:
            with TcGradCAM(m_tc, "layer4") as ext:
                return ext(tg, m_tc(x))[0]

        out["torchcam"] = torchcam
    except ImportError:
        print("torchcam not installed: skipped")
    try:
        from captum.attr import LayerAttribution, LayerGradCam

        m_cap = copy.deepcopy(model)

        def captum() -> torch.Tensor:
            attr = LayerGradCam(m_cap, m_cap.layer4).attribute(
                x, target=targets, relu_attributions=True
            )
            attr = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), "bilinear")
            return minmax(attr[:, 0].detach(), flat="zero")

        out["captum"] = captum
    except ImportError:
        print("captum not installed: skipped")
    return out


def multi_references(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor):
    """The ten (method, layer) maps of 'attnviz 5x2' with each reference library."""
    out: dict[str, Callable[[], object]] = {}
    tg = targets.tolist()
    with contextlib.suppress(ImportError):
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        classes = [pgc.GradCAM, pgc.GradCAMPlusPlus, pgc.XGradCAM, pgc.LayerCAM, pgc.HiResCAM]
        m_pgc = copy.deepcopy(model)

        def pgc_all() -> list:
            maps = []
            for cls in classes:
                for layer in LAYERS:
                    with cls(m_pgc, [m_pgc.get_submodule(layer)]) as cam:
                        maps.append(cam(x, [ClassifierOutputTarget(t) for t in tg]))
            return maps

        out["pytorch-grad-cam 10 calls"] = pgc_all
    with contextlib.suppress(ImportError):
        import torchcam.methods as tc

        m_tc = copy.deepcopy(model)

        def tc_all() -> list:
            maps = []
            for cls in (tc.GradCAM, tc.GradCAMpp, tc.XGradCAM, tc.LayerCAM):
                with cls(m_tc, LAYERS) as ext:
                    maps.append(ext(tg, m_tc(x)))
            return maps

        out["torchcam 4 calls (no HiResCAM)"] = tc_all
    return out


def beyond_gradcam(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, args):
    """``{row: {"attnviz": fn, "pytorch-grad-cam": fn}}`` for Ablation-CAM and aug_smooth."""
    try:
        from pytorch_grad_cam import AblationCAM, GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        print("pytorch-grad-cam not installed: Ablation-CAM and aug_smooth rows skipped")
        return {}
    m_pgc = copy.deepcopy(model)
    xa, ta = x[: args.ablation_batch], targets[: args.ablation_batch]

    def pgc_ablation() -> torch.Tensor:
        with AblationCAM(m_pgc, [m_pgc.layer4]) as cam:
            return torch.from_numpy(cam(xa, [ClassifierOutputTarget(int(t)) for t in ta]))

    def pgc_aug() -> torch.Tensor:
        with GradCAM(m_pgc, [m_pgc.layer4]) as cam:
            tg = [ClassifierOutputTarget(int(t)) for t in targets]
            return torch.from_numpy(cam(x, tg, aug_smooth=True))

    return {
        "ablationcam": {
            "attnviz": lambda: compute_cam(model, xa, "layer4", "ablationcam", ta).maps,
            "pytorch-grad-cam": pgc_ablation,
        },
        "aug_smooth": {
            "attnviz": lambda: (
                compute_cam(model, x, "layer4", "gradcam", targets, aug_smooth=True).maps
            ),
            "pytorch-grad-cam": pgc_aug,
        },
    }


def time_beyond_gradcam(rows: dict, args, device) -> tuple[dict[str, dict[str, list]], bool]:
    """Check each row's maps agree, then time it; the first (checked) call is timed too."""
    ok = True
    times: dict[str, dict[str, list[float]]] = {}
    for row, fns in rows.items():
        fns["attnviz"]()  # trace (and Ablation-CAM's cut) cached, as in a loop over batches
        t0 = CLOCK()
        ref = fns["pytorch-grad-cam"]()
        t_ref = CLOCK() - t0
        t0 = CLOCK()
        ours = fns["attnviz"]()
        t_ours = CLOCK() - t0
        diff = float((ours.float().cpu() - ref.float()).abs().max())
        ok &= diff < TOL
        print(f"  {row}: maps attnviz vs pytorch-grad-cam max |diff| = {diff:.2e}  "
              f"{'ok' if diff < TOL else 'FAIL'}")  # fmt: skip
        rounds = args.ablation_rounds if row == "ablationcam" else args.rounds
        entries = {
            f"attnviz {row}": fns["attnviz"],
            f"pytorch-grad-cam {row}": fns["pytorch-grad-cam"],
        }
        got = {f"attnviz {row}": [t_ours], f"pytorch-grad-cam {row}": [t_ref]}
        if rounds > 1:
            for name, ts in interleaved(entries, rounds - 1, device, warm=False).items():
                got[name].extend(ts)
        times[row] = got
        print("    " + ", ".join(f"{n} {statistics.median(t):.3f}s" for n, t in got.items()))
    return times, ok


# -- checks and timing --------------------------------------------------------------------
def check_maps(model, x, targets, refs) -> bool:
    ours = compute_cam(model, x, "layer4", "gradcam", targets)
    ok = True
    for name, fn in refs.items():
        ref = fn().to(x.device).float()
        mine = minmax(ours.raw, flat="zero") if name == "torchcam" else ours.maps
        diff = float((mine - ref).abs().max())
        ok &= diff < TOL
        print(
            f"  maps attnviz vs {name:<18} max |diff| = {diff:.2e}  {'ok' if diff < TOL else 'FAIL'}"
        )
    many = compute_cam(model, x, LAYERS, GRADIENT, targets)
    for layer in LAYERS:
        single = compute_cam(model, x, layer, "gradcam", targets).maps
        diff = float((many["gradcam", layer] - single).abs().max())
        ok &= diff < TOL
        print(f"  maps attnviz 5x2 vs single call at {layer}: max |diff| = {diff:.2e}")
    return ok


CLOCK = time.perf_counter


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = CLOCK()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return CLOCK() - t


def interleaved(
    entries: dict[str, Callable[[], object]], rounds: int, device, *, warm: bool = True
) -> dict:
    names = list(entries)
    times: dict[str, list[float]] = {n: [] for n in names}
    for fn in entries.values() if warm else ():  # warm-up (allocator, lazy inits, caches)
        fn()
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            times[n].append(timed(entries[n], device))
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names))
    return times


def fmt(ts: list[float]) -> str:
    med = statistics.median(ts)
    if len(ts) < 4:
        return f"{med:8.3f} s  (range {min(ts):.3f}-{max(ts):.3f})"
    q = statistics.quantiles(ts, n=4)
    return f"{med:8.3f} s  (IQR {q[0]:.3f}-{q[2]:.3f})"


def ratio_line(label: str, value: float, target: str, ok: bool | None) -> str:
    mark = "" if ok is None else ("  ok" if ok else "  MISSED")
    shown = f"{value:6.2f}" if value >= 0.1 else f"{value:6.1e}"  # 0.0026, not 0.00
    return f"  {label:<58} {shown}   target {target}{mark}"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    warnings.filterwarnings("ignore")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    global CLOCK
    clock = args.clock
    if clock == "auto":
        clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    CLOCK = time.process_time if clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)().eval().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    with torch.no_grad():
        targets = model(x).argmax(1)
    print(
        f"{args.arch}, batch {args.batch}, {args.size}x{args.size}, {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {args.rounds} rounds, "
        f"{clock} clock"
    )

    refs = references(model, x, targets)
    with contextlib.redirect_stderr(io.StringIO()):
        print("correctness (Grad-CAM, layer4):")
        ok = check_maps(model, x, targets, refs)

    def forward() -> object:
        with torch.enable_grad():
            return model(x)

    def cold() -> object:  # a new model object (same modules): traced on this call
        return compute_cam(copy.copy(model), x, "layer4", "gradcam", targets)

    entries: dict[str, Callable[[], object]] = {
        "forward": forward,
        "attnviz": lambda: compute_cam(model, x, "layer4", "gradcam", targets),
        "attnviz cold": cold,
        **refs,
        "attnviz 5x2": lambda: compute_cam(model, x, LAYERS, GRADIENT, targets),
    }
    print("timing:")
    times = interleaved(entries, args.rounds, device)
    multi = multi_references(model, x, targets)
    multi_times = {}
    if multi:
        print("references for the ten maps of 'attnviz 5x2':")
        multi_times = interleaved(multi, args.multi_rounds, device)

    rows = beyond_gradcam(model, x, targets, args)
    beyond: dict[str, dict[str, list[float]]] = {}
    if rows:
        print(
            f"Ablation-CAM ({min(args.ablation_batch, args.batch)} images) and aug_smooth "
            f"({args.batch} images) against pytorch-grad-cam:"
        )
        with contextlib.redirect_stderr(io.StringIO()):
            beyond, ok_beyond = time_beyond_gradcam(rows, args, device)
        ok &= ok_beyond

    med = {n: statistics.median(t) for n, t in {**times, **multi_times}.items()}
    print("\nmedian times:")
    for n, t in {**times, **multi_times}.items():
        print(f"  {n:<32} {fmt(t)}")
    fwd, ours = med["forward"], med["attnviz"]
    print("\nratios:")
    print(ratio_line("attnviz / forward", ours / fwd, "<= 1.05", ours / fwd <= 1.05))
    print(
        ratio_line("attnviz cold (trace included) / forward", med["attnviz cold"] / fwd, "-", None)
    )
    if refs:
        fastest = min(refs, key=med.get)
        r = ours / med[fastest]
        print(ratio_line(f"attnviz / fastest reference ({fastest})", r, "<= 1.0", r <= 1.0))
        for name in refs:
            if name != "pytorch-grad-cam":
                print(ratio_line(f"{name} / attnviz", med[name] / ours, "-", None))
    if "pytorch-grad-cam" in med:
        r = med["pytorch-grad-cam"] / ours
        print(ratio_line("pytorch-grad-cam / attnviz", r, ">= 2.5", r >= 2.5))
    r = med["attnviz 5x2"] / fwd
    print(ratio_line("attnviz 5 methods x 2 layers, one call / forward", r, "<= 1.6", r <= 1.6))
    for name in multi_times:
        print(ratio_line(f"{name} / forward", med[name] / fwd, "-", None))
        print(ratio_line(f"{name} / attnviz 5x2", med[name] / med["attnviz 5x2"], "-", None))
    for row, got in beyond.items():
        ours_t = statistics.median(got[f"attnviz {row}"])
        ref_t = statistics.median(got[f"pytorch-grad-cam {row}"])
        print(f"  {row + ':':<14} attnviz {fmt(got[f'attnviz {row}'])}, "
              f"pytorch-grad-cam {fmt(got[f'pytorch-grad-cam {row}'])}")  # fmt: skip
        print(
            ratio_line(f"attnviz / pytorch-grad-cam, {row}", ours_t / ref_t, "< 1", ours_t < ref_t)
        )
    print(f"\nmaps agree within {TOL:g}: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
