"""The ``ray`` launcher: each cell is a Ray task that reserves its CPUs and GPUs.

A task runs the cell's training in the Ray worker, exactly as the ``local``
launcher does (:func:`~attnviz.study.launchers.worker.run_task`). A
``--torchrun N`` cell is one task that reserves the whole job (``cell_gpus``
GPUs on one node, as a one-bundle ``STRICT_PACK`` placement group would) and
runs ``torchrun --standalone`` inside it: the same code path as a local
torchrun cell, no second training loop for Ray Train's ``TorchTrainer``, whose
checkpoints and resume would duplicate ``attnviz.training``'s.

Retries: ``max_retries`` re-runs a cell whose node or worker process died (the
training resumes from its last checkpoint in the shared out folder). Errors a
cell raises are not retried by Ray: training is deterministic, so the same
error would come back; they are recorded and re-run by the next ``run_grid``.

Needs ``pip install 'attnviz[ray]'``. Without ``address`` a local Ray runtime
is started (and stopped at the end); ``address="auto"`` or ``"HOST:PORT"``
joins a running cluster, checked to answer within ``connect_timeout_s`` first.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

from ...errors import LaunchError
from .base import CellTask, Launcher, Report, error_text, import_extra
from .worker import run_task

__all__ = ["RayLauncher"]


def _cell_on_ray(task: CellTask, threads: int) -> dict[str, Any]:
    """The Ray task: one cell, on whichever node Ray chose."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    return run_task(task, launcher="ray", threads=threads, node=node)


class RayLauncher(Launcher):
    """Cells as Ray tasks on a cluster (``address``) or on a local Ray runtime.

    Example::

        from attnviz.study import run_grid
        from attnviz.study.launchers import RayLauncher

        # on a node of the cluster; /shared is seen by every node
        run_grid("models/ablation-small.yaml", "/shared/runs/ablation",
                 launcher=RayLauncher(address="auto", cell_gpus=1, cell_cpus=8))
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        cell_cpus: int = 1,
        cell_gpus: float = 0,
        max_retries: int = 3,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if cell_cpus < 1 or cell_gpus < 0 or max_retries < 0:
            raise LaunchError(
                f"ray: cell_cpus must be >= 1, cell_gpus >= 0 and max_retries >= 0; got "
                f"{cell_cpus}, {cell_gpus} and {max_retries}"
            )
        self._ray = import_extra("ray", "ray", self.name)
        self.address = address
        self.cell_cpus = int(cell_cpus)
        self.cell_gpus = cell_gpus
        self.max_retries = max_retries
        self.connect_timeout_s = connect_timeout_s

    def describe(self) -> str:
        where = "a local Ray runtime" if self.address is None else f"the Ray cluster {self.address}"
        return (
            f"ray: {where}, {self.cell_cpus} CPU(s) and {self.cell_gpus} GPU(s) per cell, "
            f"{self.max_retries} retries on node failure"
        )

    def check(self, *, torchrun: int | None, device: str | None) -> None:
        if device and device.startswith("cuda") and not self.cell_gpus:
            raise LaunchError(
                f"--device {device} with --launcher ray needs --cell-gpus (the GPUs each cell "
                "reserves); a task that reserves none must not use one"
            )
        if torchrun and self.cell_gpus and self.cell_gpus < torchrun:
            raise LaunchError(
                f"--torchrun {torchrun} trains with one GPU per process: --cell-gpus must be at "
                f"least {torchrun}, got {self.cell_gpus}"
            )

    def _connect(self) -> None:
        ray = self._ray
        if self.address is None:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
            return
        target = _reachable(self.address, self.connect_timeout_s)
        try:
            ray.init(address=self.address, log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LaunchError(
                f"--ray-address {self.address}: cannot join {target}: {first}"
            ) from exc

    def _launch(self, tasks: list[CellTask], report: Report) -> list[CellTask]:
        ray = self._ray
        own = not ray.is_initialized()
        if own:
            self._connect()
        try:
            remote = ray.remote(
                num_cpus=self.cell_cpus,
                num_gpus=self.cell_gpus,
                max_retries=self.max_retries,
                retry_exceptions=False,
            )(_cell_on_ray)
            refs = {}
            for task in tasks:
                if task.device is None and not self.cell_gpus:
                    task = dataclasses.replace(task, device="cpu")  # reserved no GPU: use none
                ref = remote.options(name=f"attnviz cell {task.cell.id}").remote(
                    task, self.cell_cpus
                )
                refs[ref] = task
            waiting = list(refs)
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
                for ref in ready:
                    try:
                        ray.get(ref)
                    except Exception as exc:  # the cell's error, or its node died too often
                        report(refs[ref], error_text(exc))
                    else:
                        report(refs[ref], None)
        finally:
            if own:
                ray.shutdown()
        return []


def _reachable(address: str, timeout: float) -> str:
    """The ``host:port`` Ray will dial for ``address``, once something answers there."""
    try:  # Ray's own resolution of "auto" and of localhost, so we probe what ray.init dials
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        canonicalize_bootstrap_address = None
    target = address.split("://", 1)[-1]
    if canonicalize_bootstrap_address is not None:
        try:
            target = canonicalize_bootstrap_address(address) or target
        except (ConnectionError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise LaunchError(
                f"--ray-address {address}: {first} Start one with `ray start --head` or pass the "
                "HOST:PORT that `ray start` printed"
            ) from exc
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise LaunchError(f"--ray-address {address}: expected auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise LaunchError(
            f"--ray-address {address}: no Ray cluster answers at {host}:{port} within "
            f"{timeout:g} s ({why}); start one with `ray start --head` or check the address"
        ) from exc
    return f"{host}:{port}"
