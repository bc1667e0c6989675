"""The optimizer and learning-rate schedule of a run, from its settings, through timm's factories.

:func:`make_optimizer` and :func:`make_scheduler` are the only places that turn
the ``train:`` keys (``opt``, ``lr``, ``sched``, ``warmup_epochs``, ...) into
objects; a bad combination that timm refuses is a
:class:`~attnviz.errors.TrainError` naming the key, so :func:`~attnviz.training.train`
can build both once while checking its input, before anything is written.

>>> from attnviz.nets import small_resnet
>>> from attnviz.settings import settings_from_dict
>>> s = settings_from_dict({"opt": "adamw", "lr": 1e-3, "epochs": 2})
>>> opt = make_optimizer(small_resnet(4, widths=(8, 16)), s)
>>> type(opt).__name__, type(make_scheduler(opt, s, steps_per_epoch=10)).__name__
('AdamW', 'CosineLRScheduler')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..settings import TrainError, TrainSettings

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """``timm.optim.create_optimizer_v2`` over the trainable parameters of ``model``.

    With ``filter_bias_and_bn`` timm groups the parameters itself (no weight
    decay on biases and norm weights; frozen parameters are skipped there too).
    """
    from timm.optim import create_optimizer_v2

    s = settings
    target: Any = (
        model if s.filter_bias_and_bn else [p for p in model.parameters() if p.requires_grad]
    )
    try:
        return create_optimizer_v2(
            target,
            opt=s.opt,
            lr=s.lr,
            weight_decay=s.weight_decay,
            momentum=s.momentum,
            filter_bias_and_bn=s.filter_bias_and_bn,
            **s.opt_kwargs,
        )
    except (AssertionError, ValueError, TypeError, KeyError) as exc:
        raise TrainError(f"optimizer {s.opt!r}: {exc}") from exc


def make_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainSettings, steps_per_epoch: int
) -> Any:
    """``timm.scheduler.create_scheduler_v2`` for ``settings`` (None for ``sched: none``).

    ``steps_per_epoch``: optimizer steps per epoch, for a schedule stepped every
    update (``sched_on_updates``).
    """
    from timm.scheduler import create_scheduler_v2

    s = settings
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=s.sched,
            num_epochs=s.epochs,
            decay_epochs=s.decay_epochs,
            decay_milestones=s.decay_milestones,
            cooldown_epochs=s.cooldown_epochs,
            decay_rate=s.decay_rate,
            min_lr=s.min_lr,
            warmup_lr=s.lr / 25 if s.warmup_lr is None else s.warmup_lr,
            warmup_epochs=s.warmup_epochs,
            step_on_epochs=not s.sched_on_updates,
            updates_per_epoch=steps_per_epoch,
        )
    except (AssertionError, ValueError) as exc:
        raise TrainError(f"sched {s.sched!r}: {exc}") from exc
    return scheduler
