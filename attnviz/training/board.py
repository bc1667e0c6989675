"""TensorBoard while training: scalars every epoch, feature maps and CAMs every few epochs.

Scalars (``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``lr``,
``time/epoch_s``) are logged at step = epoch. Every ``visualize_every`` epochs (and
after the last) a fixed set of 8 validation images, spread evenly over the val
split, goes through the model once: the feature maps of each stage output (and
attention-gate histograms) via :func:`attnviz.with_intermediates`, and Grad-CAM
overlays at the last stage via :func:`attnviz.compute_cam`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["Board"]


class Board:
    """A :class:`~torch.utils.tensorboard.SummaryWriter` in ``log_dir`` plus the picture logging.

    ``start_epoch``: epochs logged by an earlier (interrupted) run after it are
    discarded (``purge_step``), so a resumed run does not draw two curves.
    """

    def __init__(self, log_dir: str | Path, *, start_epoch: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(log_dir), purge_step=start_epoch + 1 if start_epoch else None
        )
        self._probe: Any = None
        self._layers: list[str] | None = None
        self._cam_layer: str | None = None
        self._failed = False

    def scalars(self, epoch: int, row: dict[str, float]) -> None:
        w = self.writer
        w.add_scalar("train/loss", row["train_loss"], epoch)
        w.add_scalar("train/acc", row["train_acc"], epoch)
        w.add_scalar("val/loss", row["val_loss"], epoch)
        w.add_scalar("val/acc", row["val_acc"], epoch)
        w.add_scalar("lr", row["lr"], epoch)
        w.add_scalar("time/epoch_s", row["epoch_time_s"], epoch)
        w.flush()

    def _resolve(self, model: nn.Module, images: torch.Tensor) -> None:
        from ..analysis.layers import resolve_layers

        spec = resolve_layers({"model": model}, "stages", None, images[:1])["model"]
        self._layers = list(dict.fromkeys([*spec.layers.values(), *spec.gates]))
        self._cam_layer = spec.cam_layer

    def pictures(
        self,
        epoch: int,
        model: nn.Module,
        images: torch.Tensor,
        denormalize: tuple[Any, Any] | None,
    ) -> None:
        """Feature-map grids, gate histograms and CAM overlays of ``images`` (a fixed val batch).

        Visualisation never stops training: a model whose layers cannot be
        resolved gets one warning and no pictures.
        """
        if self._failed:
            return
        from .. import compute_cam, with_intermediates
        from ..tensorboard import log_cam_overlays, log_feature_maps

        was_training = model.training
        try:
            if self._layers is None:
                self._resolve(model, images)
                self._probe = with_intermediates(model, self._layers)
            model.eval()
            with torch.no_grad():
                _, feats = self._probe(images)
            log_feature_maps(self.writer, feats, epoch, max_channels=16)
            cams = compute_cam(model, images, self._cam_layer, "gradcam")
            log_cam_overlays(
                self.writer, images, cams.maps, epoch, prefix="cam", denormalize=denormalize
            )
            self.writer.flush()
        except Exception as exc:  # pictures are a convenience; a failure must not kill training
            self._failed = True
            warnings.warn(
                f"TensorBoard pictures disabled: {type(exc).__name__}: {exc}", stacklevel=2
            )
        finally:
            model.train(was_training)

    def close(self) -> None:
        self.writer.close()
