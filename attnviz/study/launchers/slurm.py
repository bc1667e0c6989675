"""The ``slurm`` launcher: one submitit job per cell (a job array per wave of submissions).

Each job runs the cell's training on its node (the same
:func:`~attnviz.study.launchers.worker.run_task` as every launcher) with
``cell_cpus`` CPUs and ``cell_gpus`` GPUs. The job's function is checkpointable
in submitit's sense: when Slurm preempts the job or its time runs out, submitit
calls ``checkpoint`` and requeues the same cell, whose training resumes from
the checkpoints in its folder. A job that ends without a ``result.json`` (an
error, a node fault, a kill) is resubmitted ``resubmits`` times, then reported
failed with its error.

The runner may exit or be killed at any time (``wait=False`` submits and
returns): each job's id is kept in ``cells/<id>/job.json``, and a later
``run_grid`` on the same out folder asks submitit (``sacct``) about those jobs,
waits for the ones still queued or running instead of submitting them twice,
collects the finished ones and submits only the cells whose job is gone.

Needs ``pip install 'attnviz[slurm]'`` and, without ``executor``, Slurm's
``sbatch`` on this machine. ``executor`` takes any submitit executor that
accepts ``SlurmExecutor``'s parameter names (tests pass ``LocalExecutor``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..._atomic import atomic_write_json
from ..._select import unknown_name_error
from ...errors import LaunchError
from .base import CellTask, Launcher, Report, import_extra
from .worker import _SHARED, read_attempts, run_task

__all__ = ["JOB_FILE", "SlurmLauncher"]

JOB_FILE = "job.json"
log = logging.getLogger(__name__)


class _CellJob:
    """A job's function: one cell; submitit requeues it (``checkpoint``) when Slurm preempts it."""

    def __init__(self, task: CellTask, threads: int) -> None:
        self.task = task
        self.threads = threads

    def __call__(self) -> dict[str, Any]:
        import submitit

        job_id = None
        with suppress(Exception):  # outside a submitit job (a direct call) there is none
            job_id = submitit.JobEnvironment().job_id
        return run_task(self.task, launcher="slurm", threads=self.threads, job_id=job_id)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The same cell again: its training resumes from the checkpoints in its folder."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(_CellJob(self.task, self.threads))


class SlurmLauncher(Launcher):
    """Cells as Slurm jobs through submitit.

    Example::

        from attnviz.study import run_grid
        from attnviz.study.launchers import SlurmLauncher

        # on a login node; /shared is mounted on every compute node
        run_grid("models/ablation-small.yaml", "/shared/runs/ablation",
                 launcher=SlurmLauncher(partition="gpu", cell_gpus=1, cell_cpus=8, time_min=240))
    """

    name = "slurm"

    def __init__(
        self,
        *,
        partition: str | None = None,
        time_min: int = 120,
        cell_cpus: int = 1,
        cell_gpus: int = 0,
        mem_gb: float | None = None,
        options: Mapping[str, Any] | None = None,
        max_jobs: int | None = None,
        resubmits: int = 1,
        wait: bool = True,
        poll_s: float = 10.0,
        executor: Any = None,
    ) -> None:
        if time_min < 1 or cell_cpus < 1 or cell_gpus < 0 or resubmits < 0:
            raise LaunchError(
                "slurm: time_min and cell_cpus must be >= 1, cell_gpus and resubmits >= 0; got "
                f"{time_min}, {cell_cpus}, {cell_gpus} and {resubmits}"
            )
        if max_jobs is not None and (max_jobs < 1 or not wait):
            raise LaunchError(
                f"slurm: max_jobs must be >= 1 and needs wait=True (it submits as jobs end), got "
                f"{max_jobs} with wait={wait}"
            )
        self._submitit = import_extra("submitit", "slurm", self.name)
        if executor is None and shutil.which("sbatch") is None:
            raise LaunchError(
                "--launcher slurm submits with Slurm's sbatch, which is not on this machine's "
                "PATH: run attnviz ablate on a login node of the cluster"
            )
        self.executor = executor
        self.parameters: dict[str, Any] = {
            "job_name": "attnviz-cell",
            "time": int(time_min),
            "nodes": 1,
            "ntasks_per_node": 1,
            "cpus_per_task": int(cell_cpus),
            "gpus_per_node": int(cell_gpus),
        }
        if partition:
            self.parameters["partition"] = partition
        if mem_gb:
            self.parameters["mem"] = f"{mem_gb:g}GB"
        self.parameters.update(options or {})
        self.cell_cpus, self.cell_gpus = int(cell_cpus), int(cell_gpus)
        self.max_jobs, self.resubmits, self.wait, self.poll_s = max_jobs, resubmits, wait, poll_s

    def describe(self) -> str:
        p = self.parameters
        where = f"partition {p['partition']}" if "partition" in p else "the default partition"
        return (
            f"slurm: {where}, {p['cpus_per_task']} CPU(s), {p['gpus_per_node']} GPU(s) and "
            f"{p['time']} min per cell, {self.resubmits} resubmission(s) of a failed job"
        )

    def check(self, *, torchrun: int | None, device: str | None) -> None:
        if torchrun and self.cell_gpus and self.cell_gpus < torchrun:
            raise LaunchError(
                f"--torchrun {torchrun} trains with one GPU per process: --cell-gpus must be at "
                f"least {torchrun}, got {self.cell_gpus}"
            )

    def _executor(self, out: Path) -> Any:
        executor = self.executor
        if executor is None:
            try:
                executor = self._submitit.SlurmExecutor(folder=out / "slurm")
            except RuntimeError as exc:  # no srun on this machine
                raise LaunchError(f"--launcher slurm: {exc}") from exc
        try:
            executor.update_parameters(**self.parameters)
        except ValueError as exc:
            valid = sorted(getattr(type(executor), "_valid_parameters", set)())
            bad = [k for k in self.parameters if valid and k not in valid]
            if bad:
                raise unknown_name_error("slurm option", bad[0], valid) from exc
            raise LaunchError(f"slurm: {str(exc).strip().splitlines()[0]}") from exc
        return executor

    def _submit(self, executor: Any, wave: list[tuple[CellTask, int]]) -> list[Any]:
        jobs = executor.submit_array([_CellJob(task, self.cell_cpus) for task, _ in wave])
        for (task, attempt), job in zip(wave, jobs):
            record = {
                "job_id": str(job.job_id),
                "folder": str(executor.folder),
                "job_class": executor.job_class.__name__,  # what reattaches to it
                "attempt": attempt,
                "submitted": time.time(),
            }
            atomic_write_json(task.cell_dir / JOB_FILE, record)
        return jobs

    def _adopt(self, executor: Any, task: CellTask) -> tuple[Any, int] | None:
        """The job a previous runner submitted for ``task``, if it is still queued or running."""
        with suppress(OSError, ValueError):
            record = json.loads((task.cell_dir / JOB_FILE).read_text())
            if record.get("job_class") == executor.job_class.__name__:
                job = executor.job_class(folder=record["folder"], job_id=str(record["job_id"]))
                if not job.done():
                    return job, int(record.get("attempt", 1))
        return None

    def _job_error(self, task: CellTask, job: Any) -> str:
        failed = [
            a
            for a in read_attempts(task.cell_dir)
            if a.get("event") == "failed" and str(a.get("job_id")) == str(job.job_id)
        ]
        if failed:
            return str(failed[-1].get("error"))
        state = "unknown state"
        with suppress(Exception):
            state = str(job.state)
        log_path = Path(job.paths.stderr)
        try:  # the error a job raised before its cell started (a worker that cannot see --out)
            lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        except OSError:
            return (
                f"Slurm job {job.job_id} ended ({state}) without a result, an error or its log "
                f"{log_path}: the node could not write there, and {_SHARED}"
            )
        last = lines[-1] if lines else "(empty log)"
        return f"Slurm job {job.job_id} ended ({state}) without a result; its log {log_path} ends: {last}"

    def _launch(self, tasks: list[CellTask], report: Report) -> list[CellTask]:
        if not tasks:
            return []
        executor = self._executor(Path(tasks[0].out))
        running: dict[str, tuple[CellTask, Any, int]] = {}
        queue: list[tuple[CellTask, int]] = []
        for task in tasks:
            adopted = self._adopt(executor, task)
            if adopted is not None:
                running[task.cell.id] = (task, *adopted)
                log.warning(
                    "cell %s: job %s is still queued or running; waiting for it",
                    task.cell.id,
                    adopted[0].job_id,
                )
            else:
                queue.append((task, 1))
        while queue or running:
            room = len(queue) if self.max_jobs is None else self.max_jobs - len(running)
            if room > 0 and queue:
                wave, queue = queue[:room], queue[room:]
                for (task, attempt), job in zip(wave, self._submit(executor, wave)):
                    running[task.cell.id] = (task, job, attempt)
            if not self.wait:
                break
            time.sleep(self.poll_s)
            for cell_id, (task, job, attempt) in list(running.items()):
                if not job.done():
                    continue
                del running[cell_id]
                if (task.cell_dir / "result.json").is_file():
                    report(task, None)
                    continue
                error = self._job_error(task, job)
                if attempt <= self.resubmits:
                    last = error.strip().splitlines()[-1]
                    log.warning(
                        "cell %s: job %s failed (%s); resubmitting", cell_id, job.job_id, last
                    )
                    queue.append((task, attempt + 1))
                else:
                    report(task, error)
        return [task for task, _, _ in running.values()] + [task for task, _ in queue]
