"""Timing and memory helpers shared by the benchmarks.

Timings are interleaved (round r runs every candidate once, in turn) and
summarised by the median, so a machine that gets busier during the run
slows every candidate alike; results are reported as ratios measured in one
run, never as lone absolute times.
"""

from __future__ import annotations

import argparse
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


def clock(device: str) -> Callable[[], float]:
    """The clock benchmarks use: CPU time of this process on the CPU, wall time on CUDA.

    On a shared machine wall time swings with other people's jobs; with one
    thread (``setup_threads``), process CPU time counts only our own work.
    """
    if device.startswith("cuda") or torch.get_num_threads() > 1:
        return time.perf_counter
    return time.process_time


def setup_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def interleaved(
    candidates: dict[str, Callable[[], object]],
    *,
    rounds: int = 7,
    warmup: int = 1,
    device: str = "cpu",
) -> dict[str, float]:
    """Median seconds per call of each candidate over interleaved rounds."""
    now = clock(device)
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            sync(device)
            t0 = now()
            fn()
            sync(device)
            times[name].append(now() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def add_common_args(parser) -> None:
    """--rounds, --device, --threads, --quick, shared by every benchmark."""
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: process CPU time is then a stable clock on a shared machine)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")


def parse_args(
    doc: str,
    *,
    batch: int,
    size: int,
    rounds: int,
    quick: dict[str, int],
    images: int | None = None,
) -> argparse.Namespace:
    """The usual benchmark options (--batch, --size, [--images], common ones); threads set up.

    ``quick``: the values ``--quick`` replaces (smaller sizes for a smoke run).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if images is not None:
        parser.add_argument("--images", type=int, default=images)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--size", type=int, default=size)
    add_common_args(parser)
    parser.set_defaults(rounds=rounds)
    args = parser.parse_args()
    setup_threads(args.threads)
    if args.quick:
        for key, value in quick.items():
            setattr(args, key, value)
    return args


def describe(args) -> str:
    """How the numbers were measured, for the header line."""
    wall = args.device.startswith("cuda") or args.threads > 1
    return (
        f"{args.device}, {args.threads} thread(s), {'wall' if wall else 'process CPU'} time, "
        f"median of {args.rounds} interleaved rounds"
    )


def peak_memory(snippet: str, *, setup: str, device: str = "cpu") -> int:
    """Extra peak memory (bytes) of running ``snippet`` once after ``setup``, in a fresh process.

    CPU: the process's peak resident set size is reset just before the snippet
    (Linux ``/proc/self/clear_refs``) and read after it (``VmHWM``), minus the
    resident size before; glibc maps every large block separately and the
    heap is trimmed first, so the growth tracks the tensors alive at the peak.
    CUDA: ``torch.cuda.max_memory_allocated`` growth.
    """
    code = f"""
import ctypes, json, torch
torch.set_num_threads({torch.get_num_threads()})
{setup}
device = {device!r}

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(key)

if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.max_memory_allocated()
else:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
{snippet}
if device.startswith("cuda"):
    torch.cuda.synchronize(); after = torch.cuda.max_memory_allocated()
else:
    after = status("VmHWM")
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
