"""Training modified models: recipes in, checkpointed and resumable runs out.

:func:`train` trains a recipe (``models/*.yaml``) on the built-in synthetic
shapes, a named dataset or an image folder, in one process or under ``torchrun``
(DDP), with atomic per-epoch checkpoints, bit-exact resume on CPU, tqdm progress
and TensorBoard. ``python train.py`` and ``attnviz train`` are its command line.

- :func:`train` -> :class:`TrainResult` (``out_dir``, ``checkpoint``,
  ``best_checkpoint``, ``metrics``, ``model``, ``resumed_from_epoch``, ``finished``);
  a Ctrl-C is :class:`TrainingInterrupted` (the epoch reached, where a rerun resumes)
- :func:`read_metrics` / :func:`read_run_record`: a run folder's ``metrics.json`` and
  ``run.json``, validated (:mod:`.runfolder` names every file of a run folder)
- :func:`evaluate`: loss and accuracy of a model over a loader
- :func:`build_loaders`: the train/val loaders of a data spec (the val split is
  a function of the data spec and the settings only)
- :class:`TrainSettings` / :func:`settings_from_dict`: the recipe's ``train:`` keys
- ``FINETUNE_MODES``: ``all``, ``attention``, ``attention+head``

Names load their module on first use (the command line's ``--help`` imports no torch).
"""

from .._lazy import lazy_exports

_NAMES = {
    "FINETUNE_MODES": "..settings",
    "TrainError": "..settings",
    "TrainSettings": "..settings",
    "parse_set": "..settings",
    "settings_from_dict": "..settings",
    "build_loaders": ".loaders",
    "evaluate": ".loop",
    "TrainResult": ".runner",
    "TrainingInterrupted": ".runner",
    "train": ".runner",
    "read_metrics": ".runfolder",
    "read_run_record": ".runfolder",
}

__all__ = sorted(_NAMES)

__getattr__, __dir__ = lazy_exports(__name__, _NAMES, globals())
