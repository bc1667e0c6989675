"""The process group of a ``torchrun`` launch, or a single process that looks the same.

``torchrun --nproc_per_node=N train.py ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in each process; :func:`setup` reads them and joins the group
(gloo on CPU, NCCL on CUDA). Without them it returns a one-process context whose
reductions are no-ops, so the training loop is written once for both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..errors import AttnvizError

__all__ = ["DistContext", "setup"]


@dataclass
class DistContext:
    """Rank, world size and device of this process; ``owns_group``: :func:`setup` created it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: list[float] | torch.Tensor) -> torch.Tensor:
        """Sum a vector of float64 counters over all processes (identity for one process)."""
        t = torch.as_tensor(values, dtype=torch.float64)
        if self.distributed:
            # NCCL reduces only CUDA tensors; gloo takes CPU ones.
            on = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
            t = t.to(on)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t = t.cpu()
        return t

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. the decision where to resume from)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def all_ok(self, ok: bool) -> bool:
        """Whether every process reports ``ok`` (one failing rank stops them all together)."""
        if not self.distributed:
            return ok
        return bool(self.all_reduce_sum([0.0 if ok else 1.0])[0] == 0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if :func:`setup` joined it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def _object_device(self) -> torch.device | None:
        return self.device if dist.get_backend() == "nccl" else None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise AttnvizError(f"environment variable {name}={value!r} is not an integer") from None


def _pick_device(device: str | torch.device | None, local_rank: int, world_size: int):
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AttnvizError(f"device {str(device)!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif world_size > 1:
            raise AttnvizError(
                f"device {str(device)!r} names one GPU, but {world_size} processes were launched; "
                "pass --device cuda and each process takes cuda:LOCAL_RANK"
            )
    return dev


def setup(device: str | torch.device | None = None) -> DistContext:
    """Join the ``torchrun`` process group when launched by it; pick this process's device.

    ``device``: ``None`` (CUDA ``cuda:LOCAL_RANK`` when available, else CPU),
    ``"cpu"``, ``"cuda"`` or ``"cuda:K"`` (one process only). An existing
    process group (initialised by the caller) is used as is and left open.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = _env_int("LOCAL_RANK", rank)
        return DistContext(rank, world, local, _pick_device(device, local, world), False)
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    dev = _pick_device(device, local, world)
    if world <= 1:
        return DistContext(0, 1, 0, dev, False)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dist.init_process_group("gloo")
    return DistContext(rank, world, local, dev, True)
