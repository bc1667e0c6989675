"""The README's ten-line Python example, end to end, against its 30-second budget on 2 cores.

The example is read from README.md and run line by line in a fresh process (imports
included, in an empty temporary folder), as a new user runs it; each line's share of the
total is printed, and the total as a ratio to the budget (target <= 1.0: the example
finishes in under 30 s on 2 CPU cores). Wall time: a user waits for wall time, and the
example uses every core torch gives it. Median of ``--rounds`` runs.

Run: ``python benchmarks/readme.py [--rounds 3]`` (``--quick``: one round).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import table

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 30.0

#: Runs the example line by line in this process, printing one JSON line of timings.
RUNNER = """
import json, sys, time
lines = json.loads(sys.argv[1])
namespace, times = {}, []
for line in lines:
    t0 = time.perf_counter()
    exec(compile(line, "README.md", "exec"), namespace)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def example_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    (code,) = [
        b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "insert_attention" in b
    ]
    return [line for line in code.splitlines() if line.strip()]


def run_once(lines: list[str]) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, json.dumps(lines)],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one round")
    args = p.parse_args()
    lines = example_lines()
    runs = [run_once(lines) for _ in range(1 if args.quick else args.rounds)]
    totals = [sum(r) for r in runs]
    median = statistics.median(totals)
    run = runs[totals.index(sorted(totals)[len(totals) // 2])]
    print(f"README example, {len(lines)} lines, wall time, median of {len(runs)} fresh processes")
    rows = [
        (line.split("#")[0].strip()[:60], f"{t / sum(run):.1%}", "of the example's time")
        for line, t in zip(lines, run, strict=True)
        if t / sum(run) >= 0.01
    ]
    print(table(rows))
    print(
        table(
            [
                (
                    "example / 30 s budget",
                    f"{median / BUDGET_S:.2f}x",
                    f"target <= 1.00 (the README promises under {BUDGET_S:.0f} s on 2 cores)",
                )
            ]
        )
    )


if __name__ == "__main__":
    main()
