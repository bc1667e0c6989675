"""Fetching a named dataset through torchvision: once, only when it is missing.

Each named dataset downloads with torchvision's own dataset class (its URLs,
checksums and extraction); this module makes that safe to ask for from several
processes at once (``torchrun`` ranks: a file lock in the root, and a second
look for the data once the lock is held) and turns a failure (no network, a bad
checksum) into one :class:`~attnviz.errors.DataError` line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import DataError

__all__ = ["fetch"]

LOCK_NAME = ".attnviz-download.lock"


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; torchvision still checks what it finds
        yield
        return
    with open(root / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch(
    root: str | os.PathLike[str],
    what: str,
    present: Callable[[], bool],
    download: Callable[[], object],
) -> None:
    """Run ``download()`` into ``root`` unless ``present()``; one process at a time.

    ``what`` names the dataset in the error raised when the download fails.
    """
    root = Path(root)
    if present():
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {str(root)!r} to download {what} into: {e}") from e
    with _locked(root):
        if present():  # another process fetched it while this one waited
            return
        try:
            download()
        except (OSError, RuntimeError, ValueError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DataError(f"downloading {what} into {str(root)!r} failed: {why}") from e
