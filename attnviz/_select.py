"""Name selectors (dot-aware globs, module types) and helpful errors."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from .errors import UnknownNameError

__all__ = ["closest", "glob_to_regex", "is_glob", "unknown_name_error"]


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


@lru_cache(maxsize=512)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a dot-aware glob: ``*`` and ``?`` stay within one name, ``**`` crosses dots.

    ``layer*.?.attn.gate`` matches ``layer3.1.attn.gate``; ``features.*``
    matches the direct children of ``features``; ``**.bn3`` matches every
    ``bn3`` at any depth.
    """
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**.", i):
            out.append(r"(?:.*\.)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def closest(name: str, choices: Iterable[str], n: int = 8) -> list[str]:
    """The valid choices closest to ``name``, best first."""
    choices = list(dict.fromkeys(choices))
    best = difflib.get_close_matches(name, choices, n=n, cutoff=0.0)
    if not is_glob(name):
        return best
    prefix = re.split(r"[*?\[]", name, maxsplit=1)[0]
    starts = [c for c in choices if c.startswith(prefix)] if prefix else []
    return list(dict.fromkeys(starts[:n] + best))[:n]


def unknown_name_error(
    kind: str, name: str, choices: Sequence[str], *, hint: str = ""
) -> UnknownNameError:
    near = closest(name, choices)
    msg = f"unknown {kind} {name!r}; closest valid: {near}"
    if hint:
        msg += f". {hint}"
    return UnknownNameError(msg)


def type_name(t: type) -> str:
    return t.__name__ if isinstance(t, type) else repr(t)


def is_module_type(x: object) -> bool:
    from torch import nn

    return isinstance(x, type) and issubclass(x, nn.Module)
