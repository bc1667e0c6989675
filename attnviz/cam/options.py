"""Checks of :func:`~attnviz.cam.compute_cam`'s arguments, all before any forward runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from .._select import unknown_name_error
from ..errors import CamError
from .methods import METHODS
from .normalize import NORMALIZE_CHOICES
from .outputs import check_output_choice
from .scorecam import SCORECAM_WEIGHTS

__all__ = ["Size", "check_images", "check_options", "layer_names", "method_names"]

Size = str | tuple[int, int]

_ALIASES = {
    "gradcampp": "gradcam++",
    "gradcamplusplus": "gradcam++",
    "gradcamplus": "gradcam++",
    "smoothgradcampp": "smoothgradcam++",
    "smoothgradcamplusplus": "smoothgradcam++",
    "ablation": "ablationcam",
}


def _canonical(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch not in "-_ ")
    return _ALIASES.get(key, key)


def method_names(method: str | Sequence[str]) -> list[str]:
    """Canonical method names (``"Grad-CAM++"`` → ``"gradcam++"``), duplicates dropped."""
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise CamError(f"method is empty; choose from {list(METHODS)}")
    out = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"method must be a name or a list of names, got {name!r}")
        canon = _canonical(name)
        if canon not in METHODS:
            raise unknown_name_error("CAM method", name, METHODS)
        out.append(canon)
    return list(dict.fromkeys(out))


def layer_names(layer: str | Sequence[str]) -> list[str]:
    """The layer names asked for, duplicates dropped (globs are resolved by the capture)."""
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names:
        raise CamError("layer is empty: give a layer name (list_intermediates(model) lists them)")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"layer must be a name or a list of names (e.g. 'layer4'), got {name!r}; "
                "pass the module's path, not the module"
            )
    return list(dict.fromkeys(names))


def check_options(
    *,
    normalize: str,
    size: Size,
    batch_size: int | None,
    score_mode: str,
    relu: bool,
    output: Any,
    reshape_transform: Callable[[Tensor], Tensor] | None,
    flags: dict[str, Any],
    noise_samples: int,
    noise_std: float,
    noise_seed: int,
    class_names: Sequence[str] | None,
) -> None:
    """Raise for the first option that is not valid (``flags``: name → must be a bool)."""
    if normalize not in NORMALIZE_CHOICES:
        raise CamError(f"normalize must be one of {list(NORMALIZE_CHOICES)}, got {normalize!r}")
    if isinstance(size, str):
        if size not in ("input", "layer"):
            raise CamError(f"size must be 'input', 'layer' or (height, width), got {size!r}")
    elif not (
        isinstance(size, Sequence) and len(size) == 2 and all(_is_int(s) and s > 0 for s in size)
    ):
        raise CamError(f"size must be 'input', 'layer' or (height, width), got {size!r}")
    if batch_size is not None and not (_is_int(batch_size) and batch_size >= 1):
        raise CamError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if score_mode not in SCORECAM_WEIGHTS:
        raise CamError(
            f"scorecam_weights must be one of {list(SCORECAM_WEIGHTS)}, got {score_mode!r}"
        )
    for name, value in {"relu": relu, **flags}.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    check_output_choice(output)
    if reshape_transform is not None and not callable(reshape_transform):
        raise TypeError(
            "reshape_transform must be a callable tensor -> [B, C, h, w] (e.g. ViT tokens to a "
            f"feature map), got {type(reshape_transform).__name__}"
        )
    if not (_is_int(noise_samples) and noise_samples >= 1):
        raise CamError(f"noise_samples must be a positive int, got {noise_samples!r}")
    if not (isinstance(noise_std, int | float) and not isinstance(noise_std, bool)) or not (
        noise_std > 0
    ):
        raise CamError(f"noise_std must be a positive number, got {noise_std!r}")
    if not _is_int(noise_seed):
        raise CamError(f"noise_seed must be an int, got {noise_seed!r}")
    if class_names is not None and (
        isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names)
    ):
        raise TypeError("class_names must be a sequence of str (one name per class index)")


def check_images(images: Tensor) -> None:
    """``images`` must be a non-empty floating-point batch ``[B, C, H, W]``."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tensor [B, C, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise CamError(f"images must be a non-empty batch [B, C, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point, got {images.dtype}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
