"""Surgery cost and the speed of the model it makes, as ratios measured in one run.

* time of ``insert_attention(resnet50, "se", "residual")`` / one batch-1 forward;
* forward time of the surgical SE-ResNet-50 / timm's native ``seresnet50``
  (same blocks, built in by hand: target <= 1.03) and / the plain resnet50.

Run: ``python benchmarks/surgery.py [--batch 8] [--size 224] [--rounds 7] [--device cpu|cuda]``
(``--quick`` for a small smoke run).
"""

from __future__ import annotations

import statistics
import time

import timm
import torch
import torchvision
from _common import describe, interleaved, parse_args, table

from attnviz import insert_attention


def main() -> None:
    args = parse_args(
        __doc__, batch=8, size=224, rounds=7, quick={"batch": 2, "size": 96, "rounds": 3}
    )
    dev = args.device
    torch.manual_seed(0)

    base = torchvision.models.resnet50().eval().to(dev)
    one = torch.randn(1, 3, args.size, args.size, device=dev)
    # surgery cost relative to one batch-1 forward (both warmed up once)
    with torch.no_grad():
        base(one)
    insert_attention(base, "se", "residual", example_input=one)
    t_insert, t_fwd1 = [], []
    for _ in range(max(3, args.rounds // 2)):
        t0 = time.perf_counter()
        se = insert_attention(base, "se", "residual", example_input=one)
        t_insert.append(time.perf_counter() - t0)
        with torch.no_grad():
            t0 = time.perf_counter()
            base(one)
            t_fwd1.append(time.perf_counter() - t0)
    insert_ratio = statistics.median(t_insert) / statistics.median(t_fwd1)

    se = se.eval().to(dev)
    native = timm.create_model("seresnet50").eval().to(dev)
    # the same surgery on timm's own resnet50: the like-for-like comparison with seresnet50
    se_timm = (
        insert_attention(timm.create_model("resnet50"), "se", "residual", example_input=one.cpu())
        .eval()
        .to(dev)
    )
    assert sum(p.numel() for p in se.parameters()) == sum(p.numel() for p in native.parameters())
    assert sum(p.numel() for p in se_timm.parameters()) == sum(
        p.numel() for p in native.parameters()
    )
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)

    def run(model):
        def f():
            with torch.no_grad():
                model(x)

        return f

    med = interleaved(
        {
            "surgical": run(se),
            "surgical_timm": run(se_timm),
            "timm_seresnet50": run(native),
            "resnet50": run(base),
        },
        rounds=args.rounds,
        device=dev,
    )
    print(
        f"surgery benchmark: resnet50 + SE on the residual branch, batch {args.batch}, {args.size}px, {describe(args)}"
    )
    print(
        table(
            [
                (
                    "insert_attention / batch-1 forward",
                    f"{insert_ratio:.2f}x",
                    "(one-off cost of the surgery)",
                ),
                (
                    "surgical SE-ResNet-50 / timm seresnet50",
                    f"{med['surgical'] / med['timm_seresnet50']:.3f}",
                    "target <= 1.03 (torchvision resnet50 + SE)",
                ),
                (
                    "surgical SE on timm resnet50 / timm seresnet50",
                    f"{med['surgical_timm'] / med['timm_seresnet50']:.3f}",
                    "target <= 1.03 (same base code)",
                ),
                (
                    "surgical SE-ResNet-50 / resnet50",
                    f"{med['surgical'] / med['resnet50']:.3f}",
                    "(the price of SE itself)",
                ),
                (
                    "timm seresnet50 / resnet50",
                    f"{med['timm_seresnet50'] / med['resnet50']:.3f}",
                    "(for reference)",
                ),
            ]
        )
    )


if __name__ == "__main__":
    main()
