"""Lazy package attributes: a package's public names load their module on first use.

``import attnviz`` (and so every ``attnviz`` command, ``--help`` included) must not pay
for importing torch before it is needed. A package's ``__init__`` lists where each
public name lives; :func:`lazy_exports` returns the module-level ``__getattr__`` and
``__dir__`` (PEP 562) that import it when it is first read, then keep it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the
    submodule (relative, e.g. ``".surgery"``) that defines it; a name mapped to ``""`` is
    a submodule itself."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        where = names[name]
        if where == "":
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(where, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
