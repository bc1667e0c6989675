"""A modified model at a glance: where its blocks are, what they cost, as text or as a table.

``attnviz.summary(model)`` returns a :class:`SurgerySummary`; it prints as an aligned text
table (what ``attnviz surgery`` shows) and displays itself as an HTML table in Jupyter.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .spec import spec_of

__all__ = ["SurgerySummary", "summary"]


@dataclass
class SurgerySummary:
    """Sites, blocks and parameter counts of a model's surgery (one row per block)."""

    model: str
    base: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    base_params: int = 0
    attention_params: int = 0
    flops: float | None = None
    example_input: list[int] | None = None
    insertions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return self.base_params + self.attention_params

    def __str__(self) -> str:
        lines = [f"model: {self.model} ({self.base})"]
        if not self.rows:
            lines.append("no attention blocks")
        header = f"  {'site':<28} {'block':<30} {'attention':<12} {'channels':>8} {'params':>9}"
        for k, ins in enumerate(self.insertions):
            lines.append(
                f"\n{ins['attention']} (init={ins['init']}, where={ins['where']}, "
                f"placement={ins['placement']}, kwargs={ins['kwargs']}): {ins['blocks']} blocks"
            )
            lines.append(header)
            for r in (r for r in self.rows if r["insertion"] == k):
                lines.append(
                    f"  {r['site']:<28} {r['block']:<30} {r['attention']:<12} {r['channels']:>8} "
                    f"{r['params']:>9,}"
                )
        pct = 100 * self.attention_params / max(self.base_params, 1)
        lines.append(
            f"\nparameters: base {self.base_params:,} + attention {self.attention_params:,} "
            f"(+{pct:.2f}%) = {self.total_params:,}"
        )
        if self.flops is not None:
            lines.append(
                f"FLOPs per image at {self.example_input} (torch.utils.flop_counter, conv/matmul): "
                f"{self.flops / 1e9:.3f} G"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(
            f"<th>{h}</th>" for h in ("site", "block", "attention", "init", "channels", "params")
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(r[k]))}</td>"
                for k in ("site", "block", "attention", "init", "channels")
            )
            + f"<td>{r['params']:,}</td></tr>"
            for r in self.rows
        )
        pct = 100 * self.attention_params / max(self.base_params, 1)
        flops = (
            f"; {self.flops / 1e9:.3f} GFLOPs per image at {self.example_input}"
            if self.flops is not None
            else ""
        )
        return (
            f"<div><b>{html.escape(self.model)}</b> ({html.escape(self.base)}): "
            f"{len(self.rows)} attention blocks, {self.attention_params:,} parameters "
            f"(+{pct:.2f}% over {self.base_params:,}){flops}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )


def summary(model: nn.Module, example_input: Any = None) -> SurgerySummary:
    """Where a model's attention blocks are and what they cost.

    With ``example_input`` (a tensor) the forward FLOPs per image are counted too.

    >>> import torchvision, attnviz
    >>> s = attnviz.summary(attnviz.insert_attention(torchvision.models.resnet18(), "se"))
    >>> len(s.rows), s.attention_params
    (8, 90112)
    """
    from . import attention_modules, surgery_spec

    spec = spec_of(model)
    blocks = attention_modules(model)
    rows, insertions = [], []
    for k, ins in enumerate(spec.insertions if spec else []):
        insertions.append(
            {
                "attention": ins.attention,
                "init": ins.init,
                "where": ins.where,
                "placement": getattr(ins, "placement", "after"),
                "kwargs": ins.kwargs,
                "blocks": len(ins.sites),
            }
        )
        for s in ins.sites:
            block = blocks[s.path]
            rows.append(
                {
                    "insertion": k,
                    "site": s.site,
                    "block": s.path,
                    "attention": ins.attention,
                    "init": ins.init,
                    "channels": s.channels,
                    "params": sum(p.numel() for p in block.parameters()),
                }
            )
    attention = sum(p.numel() for b in blocks.values() for p in b.parameters())
    total = sum(p.numel() for p in model.parameters())
    base = (surgery_spec(model).get("base") or {}).get("ref", "unrecognised base")
    out = SurgerySummary(
        type(model).__name__, base, rows, total - attention, attention, insertions=insertions
    )
    if example_input is not None:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from .._utils import eval_mode

        with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
        out.flops = counter.get_total_flops() / example_input.shape[0]
        out.example_input = list(example_input.shape)
    return out
