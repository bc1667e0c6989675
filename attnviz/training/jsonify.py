"""Python values as the JSON a run folder stores, so that what is compared is what is read back.

A run's identity and recipe go to disk as JSON and are compared, on resume,
with the ones computed again from the call's arguments. Both sides therefore
go through :func:`as_json` first: tuples become lists, and a class (a recipe's
``where: torch.nn.BatchNorm2d``) becomes its qualified name, exactly as
``json.load`` will give them back. :func:`json_subset` keeps what a scheduler's
state holds that JSON can carry, and :func:`mismatch` checks that a state read back
from a file has the shape and types of the live one before it is loaded (a file is
data: a ``null`` learning rate must not reach the optimizer).

>>> import torch
>>> as_json({"widths": (8, 16), "where": torch.nn.BatchNorm2d})
{'widths': [8, 16], 'where': 'torch.nn.modules.batchnorm:BatchNorm2d'}
>>> json_subset({"base_lrs": [0.1], "fn": print})
{'base_lrs': [0.1]}
"""

from __future__ import annotations

import json
import math
from typing import Any

from .._utils import class_path

__all__ = ["as_json", "json_subset", "mismatch", "type_name"]


def type_name(value: Any) -> str:
    """``json.dumps``'s ``default``: a class as ``module:qualname``, anything else as its repr."""
    if isinstance(value, type):
        return class_path(value)
    return repr(value)


def as_json(obj: Any, *, sort_keys: bool = False) -> Any:
    """``obj`` as JSON reads it back (values JSON cannot hold named by :func:`type_name`)."""
    return json.loads(json.dumps(obj, sort_keys=sort_keys, default=type_name))


def json_subset(obj: Any) -> Any:
    """``obj`` if JSON can hold it; a dict without the values it cannot hold; else None."""
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError):
        if isinstance(obj, dict):
            return {k: json_subset(v) for k, v in obj.items() if _is_jsonable(v)}
        return None


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def mismatch(current: Any, saved: Any, where: str = "") -> str | None:
    """Where ``saved`` (read from a file) differs in shape or type from ``current``, or None.

    Numbers match numbers (ints and floats alike, finite, never booleans), booleans
    booleans, strings strings; lists match lists of the same length element-wise, dicts
    dicts with no other keys (a key the file lacks keeps its live value, as torch's
    ``load_state_dict`` fills a missing optimizer default). A ``None`` in ``current`` (a value not set yet) accepts
    ``None`` or a finite number.

    >>> mismatch({"lr": 0.1, "milestones": [30, 60]}, {"lr": None, "milestones": [30, 60]})
    "'lr': expected a number, got null"
    >>> mismatch([0.1, 0.01], [0.2, 0.02]) is None
    True
    """

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    label = where or "the value"
    if current is None:
        return None if saved is None or number(saved) else f"{label}: expected null or a number"
    if isinstance(current, bool):
        return None if isinstance(saved, bool) else f"{label}: expected true or false"
    if isinstance(current, (int, float)):
        if number(saved):
            return None
        return f"{label}: expected a number, got {json.dumps(saved)[:40]}"
    if isinstance(current, str):
        return None if isinstance(saved, str) else f"{label}: expected text"
    if isinstance(current, (list, tuple)):
        if not isinstance(saved, list) or len(saved) != len(current):
            return f"{label}: expected a list of {len(current)}"
        for k, (c, v) in enumerate(zip(current, saved, strict=True)):
            problem = mismatch(c, v, f"{where}[{k}]")
            if problem:
                return problem
        return None
    if isinstance(current, dict):
        if not isinstance(saved, dict) or not set(saved) <= set(current):
            return f"{label}: expected keys among {sorted(map(str, current))[:8]}"
        for key, v in saved.items():
            problem = mismatch(current[key], v, f"{where}.{key}" if where else repr(key))
            if problem:
                return problem
        return None
    return None  # a value JSON cannot hold was not saved (json_subset)
