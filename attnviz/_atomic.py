"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

A crash or a kill during a write leaves the previous file (or none), never a
partial one. The file gets the permissions a plain ``open(path, "w")`` would
(``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``, so reports and
checkpoints stay readable by whoever could read the folder.

:func:`check_writable_folder` is the check every command runs on its output
folders before any work starts, so that a bad ``--out`` is one line at once,
not a traceback after the work is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OutputError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable_folder",
]


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


def check_writable_folder(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Check that ``path`` can be a folder this process writes files in; leave the disk as it was.

    Creates the folders that are missing, writes and removes a probe file in
    ``path``, then removes the folders it created (also when the check fails).
    Raises :class:`~attnviz.errors.OutputError`, one line starting with ``what``
    and the path and saying why (a file where a folder must be, no permission,
    a read-only file system, ...). Returns ``path``.

    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> check_writable_folder(root / "runs" / "se", "out") == root / "runs" / "se"
    True
    >>> (root / "runs").exists()
    False
    >>> (root / "notes.txt").write_text("x")
    1
    >>> check_writable_folder(root / "notes.txt" / "run", "out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    attnviz.errors.OutputError: out '.../notes.txt/run': '.../notes.txt' is a file, not a folder
    """
    path = Path(path)
    head = f"{what} {str(path)!r}"
    missing: list[Path] = []
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        desc = "a file, not a folder" if existing.is_file() else "not a folder"
        where = "exists and is" if existing == path else f"{str(existing)!r} is"
        raise OutputError(f"{head}: {where} {desc}")
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except OSError as exc:
                raise OutputError(f"{head}: cannot create {str(folder)!r} ({_why(exc)})") from None
            created.append(folder)
        try:
            fd, probe = tempfile.mkstemp(prefix=".attnviz-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f"{head}: cannot write files in it ({_why(exc)})") from None
    finally:
        for folder in reversed(created):
            # OSError: something else wrote into it meanwhile; it is not ours to remove then
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
