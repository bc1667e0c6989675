"""``attnviz surgery MODEL [--attention se --where residual]``: sites and parameter counts."""

from __future__ import annotations

import argparse

from ._common import MODEL_HELP, add_trust_code, example_input, load_cli_model

HELP = "show attention sites and parameter counts of a model"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--attention", help="insert this block (a registered name) before reporting")
    p.add_argument(
        "--where",
        nargs="+",
        default=["residual"],
        help="residual, stages, module-name globs, or nn.Conv2d-style types",
    )
    p.add_argument("--init", default="default", choices=["default", "identity"])
    p.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        metavar=("C", "H", "W"),
        help="example input size (default: from the model)",
    )
    add_trust_code(p)


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..recipes import parse_where
    from ..surgery import attention_modules, insert_attention, surgery_spec

    model = load_cli_model(args)
    x = example_input(args, model)
    if args.attention:
        where = parse_where(args.where[0] if len(args.where) == 1 else args.where)
        model = insert_attention(model, args.attention, where, example_input=x, init=args.init)
    spec = surgery_spec(model)
    blocks = attention_modules(model)
    attn_params = sum(p.numel() for b in blocks.values() for p in b.parameters())
    total = sum(p.numel() for p in model.parameters())
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    base = spec.get("base") or {}
    print(
        f"model: {type(model).__name__} ({base.get('ref', 'unrecognised base')})  "
        f"example input {list(x.shape)}"
    )
    if not spec["insertions"]:
        print("no attention blocks")
    for ins in spec["insertions"]:
        print(
            f"\n{ins['attention']} (init={ins['init']}, where={ins['where']}, "
            f"kwargs={ins['kwargs']}): {len(ins['sites'])} blocks"
        )
        print(f"  {'site':<28} {'block':<30} {'channels':>8} {'params':>9}")
        for s in ins["sites"]:
            path = f"{s['owner']}.{s['attr']}".strip(".")
            n = sum(p.numel() for p in blocks[path].parameters())
            print(f"  {s['site']:<28} {path:<30} {s['channels']:>8} {n:>9,}")
    base_params = total - attn_params
    pct = 100 * attn_params / max(base_params, 1)
    print(
        f"\nparameters: base {base_params:,} + attention {attn_params:,} (+{pct:.2f}%) = {total:,}"
    )
    flops = counter.get_total_flops() / x.shape[0] / 1e9
    print(f"FLOPs per image (torch.utils.flop_counter, conv/matmul): {flops:.3f} G")
    return 0
