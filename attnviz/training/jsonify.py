"""Python values as the JSON a run folder stores, so that what is compared is what is read back.

A run's identity and recipe go to disk as JSON and are compared, on resume,
with the ones computed again from the call's arguments. Both sides therefore
go through :func:`as_json` first: tuples become lists, and a class (a recipe's
``where: torch.nn.BatchNorm2d``) becomes its qualified name, exactly as
``json.load`` will give them back. :func:`json_subset` keeps what a scheduler's
state holds that JSON can carry.

>>> import torch
>>> as_json({"widths": (8, 16), "where": torch.nn.BatchNorm2d})
{'widths': [8, 16], 'where': 'torch.nn.modules.batchnorm:BatchNorm2d'}
>>> json_subset({"base_lrs": [0.1], "fn": print})
{'base_lrs': [0.1]}
"""

from __future__ import annotations

import json
from typing import Any

from .._utils import class_path

__all__ = ["as_json", "json_subset", "type_name"]


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
