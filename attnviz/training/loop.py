"""One epoch of training and one pass of evaluation; nothing about files or resuming.

The step is the plain one (forward, loss, backward, optimizer step, schedule
step), with the options a recipe can turn on: autocast (bf16, or fp16 with a
``GradScaler``), channels-last inputs, gradient clipping, and per-batch random
flips drawn reproducibly from ``(seed, epoch, step)``. Loss and accuracy are
accumulated on the device (no synchronisation per step) and summed over
processes at the end of the epoch.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._utils import model_device
from ..errors import AttnvizError
from ..settings import TrainSettings
from .distributed import DistContext
from .finetune import set_train_mode
from .loaders import flip_batch, set_epoch

__all__ = ["Trainer", "autocast_dtype", "evaluate"]


def autocast_dtype(amp: str) -> torch.dtype | None:
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _eval_sums(
    model: nn.Module,
    batches: Iterable[Any],
    device: torch.device,
    *,
    amp: str = "none",
    channels_last: bool = False,
) -> list[float]:
    """``[sum of losses, correct, count]`` of ``model`` (in eval mode) over ``batches``."""
    crit = nn.CrossEntropyLoss(reduction="sum")
    dtype = autocast_dtype(amp)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0].to(device, non_blocking=True)
                y = torch.as_tensor(batch[1]).to(device, non_blocking=True)
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(device, dtype):
                    out = model(x)
                out = out.float()
                loss += crit(out, y).double()
                correct += (out.argmax(1) == y).sum()
                n += y.numel()
    finally:
        model.train(was_training)
    return [float(loss), float(correct), float(n)]


def evaluate(
    model: nn.Module,
    data_loader: Iterable[Any],
    device: str | torch.device | None = None,
    *,
    amp: str = "none",
) -> dict[str, float]:
    """Mean cross-entropy loss and top-1 accuracy of ``model`` over ``data_loader``.

    Batches are ``(images, labels, ...)`` (masks and other fields are ignored).
    ``device``: where to run (default: the model's device); the model is run in
    eval mode and its mode restored after. Returns ``{"loss", "accuracy", "n"}``.

    >>> import torch
    >>> from attnviz.nets import small_resnet
    >>> batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))]
    >>> r = evaluate(small_resnet(4, widths=(8, 16)), batches)
    >>> r["n"], 0.0 <= r["accuracy"] <= 1.0
    (4, True)
    """
    dev = torch.device(device) if device is not None else model_device(model)[0]
    model.to(dev)
    loss, correct, n = _eval_sums(model, data_loader, dev, amp=amp)
    if n == 0:
        raise AttnvizError("evaluate: the data loader yielded no images")
    return {"loss": loss / n, "accuracy": correct / n, "n": int(n)}


@dataclass
class EpochStats:
    train_loss: float
    train_acc: float
    lr: float
    epoch_time_s: float
    images: int

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.epoch_time_s, 1e-9)


class Trainer:
    """Runs epochs of ``wrapped`` (the model, or its DDP wrapper) over ``train_loader``.

    ``model`` is the unwrapped module (evaluated directly, saved by the caller);
    ``trainable``: module paths that train (None: all; see :mod:`.finetune`).
    ``scheduler`` is a timm scheduler (or None), stepped per update or per epoch.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        wrapped: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        train_loader: Any,
        val_loader: Any,
        settings: TrainSettings,
        seed: int,
        ctx: DistContext,
        trainable: list[str] | None = None,
        progress: bool = False,
    ) -> None:
        self.model, self.wrapped = model, wrapped
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.val_loader = train_loader, val_loader
        self.s, self.seed, self.ctx = settings, seed, ctx
        self.trainable = trainable
        self.device = ctx.device
        self.dtype = autocast_dtype(settings.amp)
        use_scaler = settings.amp == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self.steps_per_epoch = len(train_loader)
        self.progress = progress and ctx.is_main and sys.stderr.isatty()
        self.params = [p for p in model.parameters() if p.requires_grad]

    # -- schedule -------------------------------------------------------------------
    def _schedule(self, epoch: int, global_step: int) -> None:
        if self.scheduler is None:
            return
        if self.s.sched_on_updates:
            self.scheduler.step_update(num_updates=global_step)
        else:
            self.scheduler.step(epoch)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- one epoch ------------------------------------------------------------------
    def train_epoch(self, epoch: int, *, total_epochs: int | None = None) -> EpochStats:
        """Train epoch ``epoch`` (0-based); its data order and flips depend on ``(seed, epoch)`` only."""
        s, ctx = self.s, self.ctx
        set_epoch(self.train_loader, self.seed, epoch)
        self.wrapped.train()
        set_train_mode(self.model, self.trainable)
        step = epoch * self.steps_per_epoch
        self._schedule(epoch, step)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        bar = self._bar(epoch, total_epochs)
        lr = self.lr()
        t0 = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            x = batch[0].to(self.device, non_blocking=True)
            y = batch[1].to(self.device, non_blocking=True)
            flip_batch(
                x,
                s.flip,
                seed=self.seed,
                epoch=epoch,
                step=i,
                global_batch=s.batch_size,
                rank=ctx.rank,
                world_size=ctx.world_size,
            )
            if s.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(self.device, self.dtype):
                out = self.wrapped(x)
                loss = self.criterion(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            lr = self.lr()
            self._backward_step(loss)
            step += 1
            if self.scheduler is not None and s.sched_on_updates:
                self.scheduler.step_update(num_updates=step)
            n = y.shape[0]
            loss_sum += loss.detach().double() * n
            correct += (out.detach().argmax(1) == y).sum()
            seen += n
            if bar is not None:
                bar.update(1)
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", lr=f"{lr:.3g}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        total_loss, total_correct, total_n = ctx.all_reduce_sum(
            [float(loss_sum), float(correct), float(seen)]
        ).tolist()
        return EpochStats(
            train_loss=total_loss / max(total_n, 1),
            train_acc=total_correct / max(total_n, 1),
            lr=lr,
            epoch_time_s=elapsed,
            images=int(total_n),
        )

    def _backward_step(self, loss: torch.Tensor) -> None:
        clip = self.s.grad_clip
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            if clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.optimizer.step()

    def _bar(self, epoch: int, total: int | None):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        desc = f"epoch {epoch + 1}" + (f"/{total}" if total else "")
        return tqdm(total=self.steps_per_epoch, desc=desc, leave=False, dynamic_ncols=True)

    # -- validation -----------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Loss and accuracy on the whole val split (each process its shard, summed)."""
        sums = _eval_sums(
            self.model,
            self.val_loader,
            self.device,
            amp=self.s.amp,
            channels_last=self.s.channels_last,
        )
        loss, correct, n = self.ctx.all_reduce_sum(sums).tolist()
        return {"val_loss": loss / max(n, 1), "val_acc": correct / max(n, 1), "val_n": int(n)}
