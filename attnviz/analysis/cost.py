"""What a model costs: parameters, FLOPs and latency per image."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..surgery import attention_modules

__all__ = ["model_cost"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def model_cost(model: nn.Module, batch: torch.Tensor, *, repeats: int = 3) -> dict[str, float]:
    """Parameters (total and in attention blocks), FLOPs per image, latency per image.

    FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` (matmul
    and convolution FLOPs, 2 per multiply-add; elementwise gates count 0, so
    the latency is the honest price of a gate). Latency is the median of
    ``repeats`` timed forwards of ``batch`` (eval, no grad) divided by its
    size; keep the batch small, this is the one cost not shared with the metrics.
    """
    params = sum(p.numel() for p in model.parameters())
    attn = sum(p.numel() for b in attention_modules(model).values() for p in b.parameters())
    with FlopCounterMode(display=False) as counter:
        model(batch[:1])  # also the warm-up
    times = []
    for _ in range(repeats):
        _sync(batch.device)
        t0 = time.perf_counter()
        model(batch)
        _sync(batch.device)
        times.append(time.perf_counter() - t0)
    return {
        "params": float(params),
        "attention_params": float(attn),
        "flops": float(counter.get_total_flops()),
        "latency_ms": 1000 * statistics.median(times) / batch.shape[0],
    }
