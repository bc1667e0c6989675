"""Where an ablation's cells run: ``local`` (this machine), ``ray`` (Ray tasks), ``slurm`` (submitit).

The cell stays the unit whatever the launcher: the same ``cells/<id>/result.json``
written atomically, last; finished cells skipped on restart; the same tables and
plots. Only where a cell runs changes, so the out folder must be on storage that
the runner and every worker see (each worker checks before it trains).

    from attnviz.study import run_grid
    from attnviz.study.launchers import make_launcher

    run_grid("grid.yaml", "/shared/runs/ablation", launcher=make_launcher("ray", address="auto"))

``ray`` and ``slurm`` import their library only when built (``attnviz[ray]``,
``attnviz[slurm]``).
"""

from __future__ import annotations

import inspect
from typing import Any

from ..._select import unknown_name_error
from ...errors import LaunchError
from .base import CellTask, Launcher, Report, error_text
from .local import LocalLauncher
from .ray import RayLauncher
from .slurm import SlurmLauncher
from .worker import read_attempts, run_task

__all__ = [
    "LAUNCHERS",
    "CellTask",
    "Launcher",
    "LocalLauncher",
    "RayLauncher",
    "Report",
    "SlurmLauncher",
    "error_text",
    "make_launcher",
    "read_attempts",
    "resolve_launcher",
    "run_task",
]

LAUNCHERS: dict[str, type[Launcher]] = {
    "local": LocalLauncher,
    "ray": RayLauncher,
    "slurm": SlurmLauncher,
}


def make_launcher(name: str, **options: Any) -> Launcher:
    """The launcher called ``name``, built with ``options`` (``None`` values keep the defaults)."""
    if name not in LAUNCHERS:
        raise unknown_name_error("launcher", name, list(LAUNCHERS))
    cls = LAUNCHERS[name]
    options = {k: v for k, v in options.items() if v is not None}
    valid = [p for p in inspect.signature(cls).parameters if p != "self"]
    for key in options:
        if key not in valid:
            raise unknown_name_error(f"option of launcher {name!r}:", key, valid)
    return cls(**options)


def resolve_launcher(launcher: str | Launcher, *, workers: int = 1) -> Launcher:
    """``run_grid``'s ``launcher=``: a name or a launcher; ``workers`` is the local pool's size."""
    if isinstance(launcher, str):
        if launcher != "local" and workers != 1:
            raise LaunchError(
                f"workers={workers} sizes the local launcher's pool; --launcher {launcher} runs as "
                "many cells at once as the cluster has room for (set --cell-cpus/--cell-gpus)"
            )
        return make_launcher(launcher, **({"workers": workers} if launcher == "local" else {}))
    if workers != 1:
        raise LaunchError(f"workers={workers} with a launcher object: give the launcher its size")
    return launcher
