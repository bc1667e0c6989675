"""The ``local`` launcher: cells on this machine, in this process or a process pool."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed

from ...errors import AttnvizError
from .base import CellTask, Launcher, Report, error_text
from .worker import run_task

__all__ = ["LocalLauncher"]


class LocalLauncher(Launcher):
    """One cell at a time in this process (``workers=1``), or ``workers`` at once in spawned
    processes that split this machine's CPU threads between them."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise AttnvizError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def describe(self) -> str:
        return f"local, {self.workers} worker(s)"

    def _launch(self, tasks: list[CellTask], report: Report) -> list[CellTask]:
        if self.workers == 1:
            for task in tasks:
                try:
                    run_task(task, launcher=self.name, progress=task.progress)
                except Exception as exc:  # recorded; the other cells go on
                    report(task, error_text(exc))
                else:
                    report(task, None)
            return []
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {
                pool.submit(run_task, task, launcher=self.name, threads=threads): task
                for task in tasks
            }
            for fut in as_completed(futures):
                try:
                    fut.result()
                except Exception as exc:
                    report(futures[fut], error_text(exc))
                else:
                    report(futures[fut], None)
        return []
