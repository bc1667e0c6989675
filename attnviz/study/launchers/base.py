"""The launcher protocol: *where* an ablation's cells run, and nothing else.

``run_grid`` decides which cells are finished (``cells/<id>/result.json``),
writes ``error.txt`` for the failed ones and makes the tables. A launcher
receives the unfinished cells as :class:`CellTask` s, runs each one somewhere
(this process, a process pool, Ray tasks, Slurm jobs) through
:func:`~attnviz.study.launchers.worker.run_task`, and reports each cell as it
finishes or fails. :meth:`Launcher.launch` holds that contract for every
launcher: a cell reported twice is a bug, and a cell neither reported nor left
running elsewhere is reported failed.
"""

from __future__ import annotations

import importlib
import re
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from ...errors import LaunchError
from ..grid import Cell, Grid

__all__ = ["CellTask", "Launcher", "Report", "error_text", "import_extra"]


@dataclass(frozen=True)
class CellTask:
    """One cell to run and everything its worker needs: plain data that pickles to any machine.

    ``run_cell`` is :func:`attnviz.study.ablate.run_cell` (pickled by reference);
    ``progress``: the runner shows progress bars (honoured where a cell runs in its process);
    ``out_id`` is the id in ``out/.attnviz-out.json``, which a worker compares
    with the file it sees to know it writes the runner's folder.
    """

    grid: Grid
    cell: Cell
    out: str
    out_id: str
    run_cell: Callable[..., dict[str, Any]]
    device: str | None = None
    torchrun: int | None = None
    progress: bool = False

    @property
    def cell_dir(self) -> Path:
        return Path(self.out) / "cells" / self.cell.id


#: ``report(task, None)`` when a cell finished, ``report(task, error_text)`` when it failed.
Report = Callable[[CellTask, "str | None"], None]


class Launcher(ABC):
    """Runs cells somewhere; subclasses implement :meth:`_launch` (and :meth:`check`)."""

    name: ClassVar[str]

    def describe(self) -> str:
        """A few words for the run's first log line (where cells run, with what)."""
        return self.name

    def check(self, *, torchrun: int | None, device: str | None) -> None:
        """Raise :class:`LaunchError` for settings this launcher cannot honour (before any cell)."""
        return None  # every setting works on this machine

    def launch(self, tasks: Sequence[CellTask], report: Report) -> list[CellTask]:
        """Run ``tasks``, calling ``report`` once per cell as it finishes or fails.

        Returns the tasks still queued or running elsewhere when it returns
        (a Slurm run that does not wait); every other task was reported once.
        """
        by_id = {t.cell.id: t for t in tasks}
        seen: set[str] = set()

        def once(task: CellTask, error: str | None) -> None:
            if task.cell.id not in by_id:
                raise RuntimeError(f"the {self.name} launcher reported a cell it was not given")
            if task.cell.id in seen:
                raise RuntimeError(f"the {self.name} launcher reported cell {task.cell.id} twice")
            seen.add(task.cell.id)
            report(task, error)

        pending = {t.cell.id for t in self._launch(list(tasks), once)} - seen
        for task in tasks:
            if task.cell.id not in seen and task.cell.id not in pending:
                once(task, f"the {self.name} launcher returned without running this cell")
        return [by_id[i] for i in by_id if i in pending]

    @abstractmethod
    def _launch(self, tasks: list[CellTask], report: Report) -> Sequence[CellTask]:
        """Run the tasks, report each, return those left running elsewhere."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_text(exc: BaseException) -> str:
    """A failed cell's error as plain text: the traceback, colour codes removed, error last."""
    text = "".join(traceback.format_exception(exc))
    return _ANSI.sub("", text).strip()


def import_extra(module: str, extra: str, launcher: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LaunchError(
            f"--launcher {launcher} needs the {module!r} package, which is not installed: "
            f"pip install 'attnviz[{extra}]'"
        ) from exc
