"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

A crash or a kill during a write leaves the previous file (or none), never a
partial one. The file gets the permissions a plain ``open(path, "w")`` would
(``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``, so reports and
checkpoints stay readable by whoever could read the folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # read once at import: os.umask is process-wide and not thread-safe


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Write ``path`` through ``write(tmp_path)``, then rename; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int = 1, default: Any = None
) -> Path:
    """``obj`` as JSON (sorted keys: files diff cleanly between runs)."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=default)
    return atomic_write_text(path, text)
