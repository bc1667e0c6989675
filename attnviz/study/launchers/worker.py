"""What runs on a worker: one cell, once the out folder is known to be the shared one.

Every launcher's worker (this process, a pool process, a Ray task, a Slurm job)
calls :func:`run_task`. Before the cell trains, it checks that this machine sees
the runner's out folder (the id in ``.attnviz-out.json``) and can write to it,
so a node with its own ``/tmp``, a missing mount or no permission fails in one
line instead of training into a folder nobody reads. Each attempt appends a
``started`` line (and a ``failed`` one, with the error) to
``cells/<id>/attempts.jsonl``: where and when it ran, as plain text that a
restarted runner reads without unpickling anything.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..._atomic import atomic_write_json
from ..._warnings import one_line_warnings
from ...errors import LaunchError
from .base import CellTask, error_text

__all__ = ["ATTEMPTS", "OUT_ID_FILE", "out_folder_id", "read_attempts", "run_task"]

OUT_ID_FILE = ".attnviz-out.json"
ATTEMPTS = "attempts.jsonl"
_SHARED = "the --out folder must be on storage all workers see and can write (a shared file system)"


def out_folder_id(out: Path) -> str:
    """The id of the out folder ``out`` (written on first use, kept across runs)."""
    path = out / OUT_ID_FILE
    with suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            return data["id"]
    new = uuid.uuid4().hex
    atomic_write_json(path, {"id": new, "about": "workers check that they see this file"})
    return new


def _record(cell_dir: Path, event: str, **fields: Any) -> None:
    line = {"event": event, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    with open(cell_dir / ATTEMPTS, "a") as f:
        f.write(json.dumps({**line, **fields}, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_attempts(cell_dir: Path) -> list[dict[str, Any]]:
    """The ``started`` / ``failed`` lines of a cell, oldest first (a torn last line is skipped)."""
    path = cell_dir / ATTEMPTS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with suppress(ValueError):
            out.append(json.loads(line))
    return out


def _check_out_folder(task: CellTask, launcher: str, where: dict[str, Any]) -> None:
    host = socket.gethostname()
    try:
        seen = json.loads((Path(task.out) / OUT_ID_FILE).read_text()).get("id")
    except (OSError, ValueError, AttributeError):
        seen = None
    if seen != task.out_id:
        why = f"no {OUT_ID_FILE} there" if seen is None else f"its {OUT_ID_FILE} is another run's"
        raise LaunchError(
            f"worker {host} does not see the runner's out folder {task.out} ({why}): {_SHARED}"
        )
    try:
        task.cell_dir.mkdir(parents=True, exist_ok=True)
        _record(task.cell_dir, "started", launcher=launcher, **where)
    except OSError as exc:
        raise LaunchError(
            f"worker {host} cannot write {task.cell_dir} ({exc.strerror or exc}): {_SHARED}"
        ) from exc


def run_task(
    task: CellTask,
    *,
    launcher: str,
    threads: int | None = None,
    progress: bool = False,
    **where: Any,
) -> dict[str, Any]:
    """Run one cell here: check the out folder, record the attempt, train, evaluate.

    ``threads`` sets torch's CPU threads for the cell; ``progress`` shows its
    training bars (when this process owns the terminal); ``where`` (a Ray node
    id, a Slurm job id) goes into the attempt's line. Returns the cell's
    ``result.json`` record; an error is recorded in ``attempts.jsonl`` and raised.
    """
    _check_out_folder(task, launcher, where)
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        with one_line_warnings(f"cell {task.cell_dir.name}"):
            return task.run_cell(
                task.grid,
                task.cell,
                task.cell_dir,
                device=task.device,
                torchrun=task.torchrun,
                progress=progress,
            )
    except Exception as exc:
        with suppress(OSError):
            _record(task.cell_dir, "failed", launcher=launcher, error=error_text(exc), **where)
        raise
