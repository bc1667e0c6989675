"""Which parameters train: everything, only the attention blocks, or those and the classifier.

Fine-tuning only the inserted blocks asks "what can attention alone add to a
trained network?"; with the classifier too, the head can adapt to the gated
features. In both modes the base model is frozen completely: its parameters get
``requires_grad=False`` and its BatchNorm layers stay in eval mode, so their
running statistics do not move either (:func:`set_train_mode`).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..settings import FINETUNE_MODES, TrainError
from ..surgery import attention_modules

__all__ = ["FINETUNE_MODES", "apply_finetune", "classifier_path", "set_train_mode"]


def classifier_path(model: nn.Module) -> str:
    """Module path of the classifier: ``get_classifier()``, else ``fc``, else ``classifier``."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        for name, module in model.named_modules():
            if module is head and name:
                return name
    for name in ("fc", "classifier", "head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise TrainError(
        f"finetune 'attention+head': cannot find the classifier of {type(model).__name__} "
        "(no get_classifier(), fc, classifier or head attribute); use finetune 'attention' or 'all'"
    )


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def trainable_prefixes(model: nn.Module, mode: str) -> list[str] | None:
    """Module paths whose parameters train in ``mode`` (None: all of them)."""
    if mode not in FINETUNE_MODES:
        raise TrainError(f"unknown finetune mode {mode!r}; choose one of {list(FINETUNE_MODES)}")
    if mode == "all":
        return None
    blocks = list(attention_modules(model))
    if not blocks:
        raise TrainError(
            f"finetune {mode!r} trains the attention blocks, but the model has none "
            "(attention: none in the recipe?); use finetune 'all'"
        )
    if mode == "attention+head":
        blocks.append(classifier_path(model))
    return blocks


def apply_finetune(model: nn.Module, mode: str) -> list[str] | None:
    """Set ``requires_grad`` for ``mode``; return the trainable module paths (None: all)."""
    prefixes = trainable_prefixes(model, mode)
    for name, p in model.named_parameters():
        p.requires_grad_(prefixes is None or _under(name, prefixes))
    return prefixes


def set_train_mode(model: nn.Module, prefixes: list[str] | None) -> nn.Module:
    """``model.train()``, then BatchNorm layers outside ``prefixes`` back to eval (frozen stats)."""
    model.train()
    if prefixes is not None:
        for name, module in model.named_modules():
            if isinstance(module, _BatchNorm) and not _under(name, prefixes):
                module.eval()
    return model
