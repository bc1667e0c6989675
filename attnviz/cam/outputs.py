"""Which part of a model's output the CAM targets score: ``compute_cam(output=...)``.

Many models return more than logits: torchvision's segmentation models a dict
``{"out": [B, K, H, W], "aux": ...}``, Inception a tuple in training mode, Hugging
Face models an output object. ``output`` chooses what the targets receive:

* ``None`` (default): a tensor as it is; a mapping with an ``"out"`` key (torchvision's
  ``fcn_*``, ``deeplabv3_*``, ``lraspp_*``) gives ``output["out"]``; anything else goes
  to a callable target unchanged (class targets then ask for ``output=``);
* a ``str``: that key of a mapping (or attribute of an object);
* an ``int``: that element of a tuple or list;
* a callable ``output -> value``.

The same choice applies to every forward of a call (the main one, Score-CAM's masked
images, Ablation-CAM's ablated channels, SmoothGrad-CAM++'s noisy copies).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from .._select import unknown_name_error
from ..errors import CamError

__all__ = [
    "OutputChoice",
    "check_output_choice",
    "describe_output",
    "output_hint",
    "select_output",
]

OutputChoice = str | int | Callable[[Any], Any] | None

_DEFAULT_KEY = "out"  # torchvision segmentation models


def check_output_choice(choice: OutputChoice) -> None:
    """Reject an ``output=`` that is none of the accepted kinds (before any forward)."""
    if choice is None or callable(choice) or isinstance(choice, str):
        return
    if isinstance(choice, int) and not isinstance(choice, bool):
        return
    raise CamError(
        f"output must be None, a key (str), an index (int) or a callable output -> tensor, "
        f"got {choice!r}"
    )


def select_output(output: Any, choice: OutputChoice) -> Any:
    """The part of ``output`` that the targets score (see the module docstring)."""
    if choice is None:
        if isinstance(output, Mapping) and _DEFAULT_KEY in output:
            return output[_DEFAULT_KEY]
        return output
    if callable(choice):
        return choice(output)
    if isinstance(choice, str):
        if isinstance(output, Mapping):
            if choice not in output:
                raise unknown_name_error(
                    "model output key",
                    choice,
                    [str(k) for k in output],
                    hint=f"the model returned {describe_output(output)}",
                )
            return output[choice]
        if hasattr(output, choice):
            return getattr(output, choice)
        raise CamError(
            f"output={choice!r} names a key, but the model returned {describe_output(output)}"
        )
    if isinstance(output, tuple | list):
        if not -len(output) <= choice < len(output):
            raise CamError(
                f"output={choice} is out of range: the model returned {describe_output(output)}"
            )
        return output[choice]
    raise CamError(
        f"output={choice} is an index, but the model returned {describe_output(output)}; "
        "pass a key (str) or a callable"
    )


def describe_output(output: Any) -> str:
    """A short description of a model output for error messages ("a dict with keys [...]")."""
    if isinstance(output, Tensor):
        return f"a tensor of shape {list(output.shape)}"
    if isinstance(output, Mapping):
        keys = list(output)
        return f"a {type(output).__name__} with keys {keys[:8]}{' ...' if len(keys) > 8 else ''}"
    if isinstance(output, tuple | list):
        parts = [
            str(list(v.shape)) if isinstance(v, Tensor) else type(v).__name__ for v in output[:4]
        ]
        more = ", ..." if len(output) > 4 else ""
        return f"a {type(output).__name__} of {len(output)} ({', '.join(parts)}{more})"
    return f"a {type(output).__name__}"


def output_hint(output: Any) -> str:
    """What to pass to ``compute_cam`` to score ``output``: a concrete ``output=`` suggestion."""
    if isinstance(output, Mapping) and output:
        return f"pass output={next(iter(output))!r} (a key), or a callable output -> tensor"
    if isinstance(output, tuple | list) and output:
        return "pass output=0 (an index), or a callable output -> tensor"
    return "pass output=callable(output) -> tensor"
