"""Cost of capturing intermediates without hooks, as ratios measured in one run.

On resnet50 (batch 8): forward time of ``with_intermediates`` capturing
layer1..layer4 / the plain forward (target <= 1.02), against the same
capture done with forward hooks, torchvision's ``create_feature_extractor``
and timm's ``forward_intermediates`` (on timm's resnet50); and the extra peak
memory of capturing 4 layers relative to a plain forward (no-grad and grad).

Run: ``python benchmarks/intermediates.py [--batch 8] [--size 224] [--rounds 7] [--device cpu|cuda]``
(``--quick`` for a small smoke run).
"""

from __future__ import annotations

import timm
import torch
import torchvision
from _common import describe, interleaved, parse_args, peak_memory, table
from torchvision.models.feature_extraction import create_feature_extractor

from attnviz import with_intermediates

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def main() -> None:
    args = parse_args(
        __doc__, batch=8, size=224, rounds=7, quick={"batch": 2, "size": 96, "rounds": 3}
    )
    dev = args.device
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(dev)
    tmodel = timm.create_model("resnet50").eval().to(dev)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)

    ours = with_intermediates(model, LAYERS)
    tv = create_feature_extractor(model, return_nodes={**{n: n for n in LAYERS}, "fc": "out"})
    store: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o))
        for n in LAYERS
    ]
    hooked = model  # hooks stay registered only while timing "hooks"
    for h in handles:
        h.remove()

    def plain():
        with torch.no_grad():
            model(x)

    def run_ours():
        with torch.no_grad():
            ours(x)

    def run_hooks():
        hs = [
            model.get_submodule(n).register_forward_hook(
                lambda m, i, o, n=n: store.__setitem__(n, o)
            )
            for n in LAYERS
        ]
        with torch.no_grad():
            hooked(x)
        for h in hs:
            h.remove()

    def run_tv():
        with torch.no_grad():
            tv(x)

    def run_timm_plain():
        with torch.no_grad():
            tmodel(x)

    def run_timm():
        with torch.no_grad():
            tmodel.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)

    # results agree
    with torch.no_grad():
        out, feats = ours(x)
        ref = tv(x)
        assert all(torch.equal(feats[n], ref[n]) for n in LAYERS) and torch.equal(out, ref["out"])
    med = interleaved(
        {
            "plain": plain,
            "ours": run_ours,
            "hooks": run_hooks,
            "torchvision": run_tv,
            "timm_plain": run_timm_plain,
            "timm_fi": run_timm,
        },
        rounds=args.rounds,
        device=dev,
    )
    setup = f"""
import torch, torchvision
from attnviz import with_intermediates
torch.manual_seed(0)
model = torchvision.models.resnet50().eval().to({dev!r})
ours = with_intermediates(model, {LAYERS!r})
x = torch.randn({args.batch}, 3, {args.size}, {args.size}, device={dev!r})
"""
    mem = {}
    for grad in (False, True):
        ctx = "torch.enable_grad()" if grad else "torch.no_grad()"
        plain_mem = peak_memory(f"with {ctx}:\n    y = model(x)", setup=setup, device=dev)
        ours_mem = peak_memory(f"with {ctx}:\n    y, f = ours(x)", setup=setup, device=dev)
        mem[grad] = ours_mem / max(plain_mem, 1)

    print(
        f"intermediates benchmark: resnet50, capture {LAYERS}, batch {args.batch}, {args.size}px, "
        f"{describe(args)}"
    )
    print(
        table(
            [
                (
                    "with_intermediates / plain forward",
                    f"{med['ours'] / med['plain']:.3f}",
                    "target <= 1.02",
                ),
                ("forward hooks / plain forward", f"{med['hooks'] / med['plain']:.3f}", ""),
                (
                    "create_feature_extractor / plain forward",
                    f"{med['torchvision'] / med['plain']:.3f}",
                    "torchvision",
                ),
                (
                    "with_intermediates / create_feature_extractor",
                    f"{med['ours'] / med['torchvision']:.3f}",
                    "",
                ),
                (
                    "timm forward_intermediates / timm forward",
                    f"{med['timm_fi'] / med['timm_plain']:.3f}",
                    "timm resnet50 (stage outputs only)",
                ),
                (
                    "peak memory, capture 4 layers / plain (no grad)",
                    f"{mem[False]:.2f}",
                    "extra peak RSS of one forward",
                ),
                (
                    "peak memory, capture 4 layers / plain (grad)",
                    f"{mem[True]:.2f}",
                    "autograd keeps them anyway",
                ),
            ]
        )
    )


if __name__ == "__main__":
    main()
