"""Timing and memory helpers shared by the benchmarks.

Timings are interleaved (round r runs every candidate once, in turn) and
summarised by the median, so a machine that gets busier during the run
slows every candidate alike; results are reported as ratios measured in one
run, never as lone absolute times.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int = 7,
    warmup: int = 1,
    device: str = "cpu",
) -> dict[str, float]:
    """Median seconds per call of each candidate over interleaved rounds."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_memory(snippet: str, *, setup: str, device: str = "cpu") -> int:
    """Extra peak memory (bytes) of running ``snippet`` once after ``setup``, in a fresh process.

    CPU: growth of the process's peak resident set size (``ru_maxrss``), with
    glibc told to map every large block separately and to give freed memory
    back first, so the growth tracks the tensors alive at the peak;
    CUDA: ``torch.cuda.max_memory_allocated`` growth.
    """
    code = f"""
import ctypes, json, resource, torch
torch.set_num_threads({torch.get_num_threads()})
{setup}
device = {device!r}
try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except OSError:
    pass
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.max_memory_allocated()
else:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
{snippet}
if device.startswith("cuda"):
    torch.cuda.synchronize(); after = torch.cuda.max_memory_allocated()
else:
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(after - before))
"""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def table(rows: list[tuple[str, str, str]]) -> str:
    """A small aligned text table (name, value, note)."""
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {a:<{width}}  {b:>9}  {c}" for a, b, c in rows)
