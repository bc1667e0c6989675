"""Throughput and memory of compare(), as ratios measured in one run.

* images/s of ``compare`` on two resnet18 models (baseline and +SE) with every
  metric but faithfulness (deletion / insertion / average drop need perturbed
  forwards by definition) relative to two plain forwards of the same batches
  (target <= 1.6x). ``compare`` also measures each model's FLOPs and latency
  once (a few extra forwards of 4 images, whatever the number of images): the
  ratio is printed with that one-off cost and without it, and the marginal
  cost of more images (the difference between 64 and 32 images of each, which
  cancels every one-off cost: tracing, FLOPs, computing the results): the
  per-image cost of streaming, what a long run converges to (target <= 1.3);
* the time of ``compare`` with its statistics (the streaming Poisson bootstrap,
  B = 1000, and the paired tests) over the same run at B = 2, the least the
  accumulators allow (target <= 1.05): what the intervals cost;
* peak memory of ``compare`` (statistics on, B = 1000) over 128 vs 1024 images
  of a small model (streaming: target ratio <= 1.1).

Run: ``python benchmarks/compare.py [--images 64] [--batch 16] [--size 224] [--rounds 3] [--device cpu|cuda]``
(``--quick`` for a small smoke run).
"""

from __future__ import annotations

import torch
import torchvision
from _common import describe, interleaved, parse_args, peak_memory, table
from torch.utils.data import DataLoader, TensorDataset

from attnviz import compare, insert_attention
from attnviz.analysis.cost import model_cost


def main() -> None:
    args = parse_args(
        __doc__,
        images=64,
        batch=16,
        size=224,
        rounds=3,
        quick={"images": 16, "batch": 8, "size": 96, "rounds": 1},
    )
    dev = args.device
    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=10).eval().to(dev)
    se = insert_attention(
        base, "se", example_input=torch.randn(1, 3, args.size, args.size, device=dev)
    ).eval()
    n = args.images
    images = torch.randn(n, 3, args.size, args.size)
    labels = torch.randint(0, 10, (n,))
    masks = torch.rand(n, args.size, args.size) > 0.7
    data = DataLoader(TensorDataset(images, labels, masks), batch_size=args.batch)

    half = DataLoader(
        TensorDataset(images[: n // 2], labels[: n // 2], masks[: n // 2]), batch_size=args.batch
    )

    def plain(loader=data):
        with torch.no_grad():
            for x, _, _ in loader:
                x = x.to(dev)
                base(x)
                se(x)

    def ours(replicates=1000, loader=data):
        compare(
            {"base": base, "se": se},
            loader,
            faithfulness=False,
            panels=4,
            progress=False,
            device=dev,
            replicates=replicates,
        )

    def no_stats():
        ours(replicates=2)

    first = next(iter(data))[0][:4].to(dev)

    def one_off():  # what compare spends once per model, independent of the number of images
        model_cost(base, first)
        model_cost(se, first)

    med = interleaved(
        {
            "plain": plain,
            "compare": ours,
            "no_stats": no_stats,
            "cost": one_off,
            "plain_half": lambda: plain(loader=half),
            "compare_half": lambda: ours(loader=half),
        },
        rounds=args.rounds,
        warmup=1,
        device=dev,
    )

    setup = """
import torch
from attnviz import compare, insert_attention
from attnviz.analysis.cost import model_cost
from attnviz.data import SyntheticShapes
from attnviz.nets import small_resnet
torch.manual_seed(0)
base = small_resnet(10).eval()
models = {"base": base, "se": insert_attention(base, "se", example_input=torch.randn(1, 3, 64, 64))}
compare(models, SyntheticShapes(32, split="val"), faithfulness=False, progress=False)  # warm-up
"""
    mem = {}
    for count in (128, 1024) if not args.quick else (32, 128):
        mem[count] = peak_memory(
            f"compare(models, SyntheticShapes({count}, split='val'), batch_size=32, faithfulness=False, progress=False)",
            setup=setup,
        )
    lo, hi = sorted(mem)
    print(
        f"compare benchmark: resnet18 base + SE, {n} images, batch {args.batch}, {args.size}px, {describe(args)}"
    )
    print(
        table(
            [
                (
                    "compare time / two plain forwards",
                    f"{med['compare'] / med['plain']:.2f}x",
                    "target <= 1.6 (all metrics but faithfulness)",
                ),
                (
                    "  without the one-off FLOPs/latency",
                    f"{(med['compare'] - med['cost']) / med['plain']:.2f}x",
                    f"per-image streaming cost (one-off: {med['cost'] / med['plain']:.2f}x of the plain pass)",
                ),
                (
                    "  marginal cost of more images",
                    f"{(med['compare'] - med['compare_half']) / (med['plain'] - med['plain_half']):.2f}x",
                    f"target <= 1.3: (compare({n}) - compare({n // 2})) / (plain({n}) - plain({n // 2})), "
                    "every one-off cost (trace, FLOPs, results) cancelled",
                ),
                (
                    "compare time, statistics on / off",
                    f"{med['compare'] / med['no_stats']:.3f}x",
                    "target <= 1.05 (B = 1000 vs B = 2)",
                ),
                (
                    "compare images/s",
                    f"{n / med['compare']:.1f}",
                    f"(plain forwards of both models: {n / med['plain']:.1f} images/s)",
                ),
                (
                    f"peak memory {hi} / {lo} images",
                    f"{mem[hi] / max(mem[lo], 1):.3f}",
                    f"target <= 1.1 (small_resnet, 64px; {mem[lo] / 2**20:.0f} vs {mem[hi] / 2**20:.0f} MiB)",
                ),
            ]
        )
    )


if __name__ == "__main__":
    main()
