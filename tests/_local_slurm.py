"""submitit's local executor, with the one thing ``sacct`` gives a restarted runner on Slurm.

``LocalExecutor`` knows a job's state only through the ``Popen`` of the runner
that submitted it; a job reattached by id (what the ``slurm`` launcher does on
restart) reads as ended. Here a reattached job whose controller process is
alive reads as ``RUNNING``, as a queued or running Slurm job does.
"""

from __future__ import annotations

from pathlib import Path

from submitit.local.local import LocalExecutor, LocalJob


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class ReattachableLocalJob(LocalJob):
    def get_info(self, mode: str = "force") -> dict[str, str]:
        reattached = self._process is None and not self.paths.result_pickle.exists()
        if reattached and self.job_id.isdigit() and _alive(int(self.job_id)):
            return {"jobState": "RUNNING"}
        return super().get_info(mode)


class ReattachableLocalExecutor(LocalExecutor):
    job_class = ReattachableLocalJob
