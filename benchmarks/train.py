"""Training-loop overhead of attnviz.training, and the cost of each attention block, in one run.

1. Loop overhead: one epoch of ``attnviz.training``'s loop (``Trainer.train_epoch``:
   reproducible per-batch flips, channels-last, on-device loss/accuracy sums,
   timm optimizer and per-step timm schedule; no progress bar, no TensorBoard)
   against a minimal hand-written loop (``torch.optim.SGD`` + ``OneCycleLR``,
   ``torch.rand`` flips) on the same model, the same in-memory batches and the
   same batch size. Target: overhead <= 10%. Also the per-epoch extras of
   ``train()`` relative to one training epoch: validation, the checkpoint
   (weights + optimizer + state, atomic), TensorBoard pictures.
2. Attention blocks on the demo network (``small_resnet(**DEMO_NET)``, SE/ECA/...
   on every residual branch): parameters, forward FLOPs per image
   (``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls only,
   the gates' elementwise work is not counted), and time per training step
   (batch 64 at 64x64, channels-last), each as a ratio to the block-free baseline.

Run: ``python benchmarks/train.py [--images 2048] [--rounds 5] [--threads 1] [--device cpu|cuda]``
(``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import add_common_args, clock, describe, interleaved, setup_threads, table
from torch.utils.flop_counter import FlopCounterMode

from attnviz.nets import DEMO_NET
from attnviz.recipes import build_model, recipe_from_dict
from attnviz.settings import settings_from_dict
from attnviz.training.checkpoint import save_checkpoint
from attnviz.training.distributed import DistContext
from attnviz.training.loaders import build_loaders
from attnviz.training.loop import Trainer
from attnviz.training.optim import make_optimizer, make_scheduler

#: Blocks placed "after" on every residual branch, with their kwargs where the defaults do not
#: fit the demo maps (32, 16, 8). Blocks that replace a convolution (sk, splat, lambda,
#: bottleneck, halo) are left out: "after" is not their placement.
AFTER = (
    "se ese eca ecam ceca cbam lcbam cbam_channel cbam_spatial gc gca gc_scale ge "
    "coord scoord ela strip simam triplet fca srm bam nl bat"
)
BLOCKS: dict[str, dict] = {"none": {}, **{n: {} for n in AFTER.split()}, "bat": {"block_size": 4}}


def recipe(attention: str) -> dict:
    return {
        "base": "attnviz:small_resnet",
        "base_kwargs": {
            "num_classes": 10,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in DEMO_NET.items()},
        },
        "attention": attention,
        "block_kwargs": BLOCKS.get(attention, {}),
        "where": "residual",
        "input_size": [3, 64, 64],
    }


def demo_model(attention: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(recipe_from_dict(recipe(attention))).to(device)
    return model.to(memory_format=torch.channels_last)


def hand_loop(model, images, labels, batch, epochs, device):
    """The minimal loop a user would write: SGD + OneCycle per step, random flips, channels-last."""
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    steps = math.ceil(len(images) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=max(steps * (epochs + 1), 100), pct_start=0.05
    )
    fmt = torch.channels_last

    def epoch():
        model.train()
        perm = torch.randperm(len(images))
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            xb, yb = images[idx].to(device), labels[idx].to(device)
            for dim in (-1, -2):
                flip = (torch.rand(len(xb)) < 0.5).to(device)
                xb[flip] = xb[flip].flip(dim)
            loss = F.cross_entropy(model(xb.contiguous(memory_format=fmt)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    return epoch


def loop_overhead(args) -> list[tuple[str, str, str]]:
    dev = torch.device(args.device)
    settings = settings_from_dict(
        {
            "train_images": args.images,
            "val_images": 1000,
            "batch_size": args.batch,
            "epochs": args.rounds + 2,
            "flip": "both",
            "channels_last": True,
        }
    )
    train_loader, val_loader = build_loaders("synthetic", settings, seed=0)
    images, labels = train_loader.tensors[0], train_loader.tensors[1]

    ours_model = demo_model("se", args.device)
    optimizer = make_optimizer(ours_model, settings)
    scheduler = make_scheduler(optimizer, settings, len(train_loader))
    trainer = Trainer(
        model=ours_model,
        wrapped=ours_model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        settings=settings,
        seed=0,
        ctx=DistContext(device=dev),
    )
    counter = iter(range(10_000))
    hand = hand_loop(
        demo_model("se", args.device), images, labels, args.batch, args.rounds + 2, dev
    )
    med = interleaved(
        {"ours": lambda: trainer.train_epoch(next(counter)), "hand": hand},
        rounds=args.rounds,
        device=args.device,
    )
    overhead = med["ours"] / med["hand"] - 1

    now = clock(args.device)
    t0 = now()
    trainer.validate()
    t_val = now() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = now()
        for e in range(3):
            save_checkpoint(tmp, e + 1, ours_model, optimizer, {"metrics": {}}, keep=2)
        t_ckpt = (now() - t0) / 3
        from attnviz.training.board import Board

        board = Board(f"{tmp}/tb")
        fixed = torch.stack([val_loader.dataset[i][0] for i in range(8)]).to(dev)
        ds = val_loader.dataset
        denorm = (ds.mean, ds.std)
        board.pictures(0, ours_model, fixed, denorm)  # warm-up: traces the capture wrapper
        t0 = now()
        board.pictures(1, ours_model, fixed, denorm)
        t_pics = now() - t0
        board.close()
    ips = args.images / med["ours"]
    return [
        (
            "attnviz.training epoch / hand-written loop",
            f"{med['ours'] / med['hand']:.3f}",
            f"overhead {100 * overhead:+.1f}% (target <= +10%); {ips:.0f} images/s (ours)",
        ),
        (
            "validation (1000 images) / training epoch",
            f"{t_val / med['ours']:.3f}",
            "once per epoch",
        ),
        ("checkpoint write / training epoch", f"{t_ckpt / med['ours']:.4f}", "once per epoch"),
        (
            "TensorBoard pictures (8 images) / training epoch",
            f"{t_pics / med['ours']:.4f}",
            "every visualize_every epochs",
        ),
    ]


def block_costs(args) -> list[tuple[str, str, str]]:
    dev = args.device
    x = torch.randn(args.batch, 3, 64, 64, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    models, params, flops = {}, {}, {}
    for name in BLOCKS:
        model = demo_model(name, dev)
        models[name] = model
        params[name] = sum(p.numel() for p in model.parameters())
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x[:1])
        flops[name] = fc.get_total_flops()

    def step(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def run():
            model.train()
            for _ in range(args.steps):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return run

    med = interleaved({n: step(m) for n, m in models.items()}, rounds=args.rounds, device=dev)
    rows = []
    for name in BLOCKS:
        rows.append(
            (
                name,
                f"{med[name] / med['none']:.3f}",
                f"step time vs none; params {params[name]:,} ({params[name] / params['none']:.3f}x), "
                f"forward {flops[name] / 1e6:.2f} MFLOP/image ({flops[name] / flops['none']:.3f}x)",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=8, help="training steps per timed call (blocks)"
    )
    add_common_args(parser)
    parser.set_defaults(rounds=5)
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds, args.steps = 256, 2, 2
    setup_threads(args.threads)
    t0 = time.perf_counter()
    print(
        f"training benchmark: demo network (SmallResNet, DEMO_NET), batch {args.batch}, 64x64, {describe(args)}"
    )
    print(f"\n1. loop overhead (SE on every residual branch, {args.images} images per epoch)")
    print(table(loop_overhead(args)))
    print(
        f"\n2. attention blocks on the demo network (every residual branch), ratios to 'none'; {args.steps} steps per call"
    )
    print(table(block_costs(args)))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
