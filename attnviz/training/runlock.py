"""One training per run folder at a time: an exclusive OS lock on a file in the folder.

Two trainings writing into the same folder would interleave their checkpoints
and both report success. :class:`FolderLock` takes ``fcntl.flock`` on a lock
file (non-blocking): a second process, or a second call in the same process,
fails at once with a :class:`~attnviz.errors.TrainError` naming the holder's pid
and host, which the holder writes into the file.

The lock belongs to the open file, so it dies with its process: a training
killed with SIGKILL leaves the file behind but no lock, and the next run takes
it. On release the file is removed (before unlocking), and a process that
locked a file already removed that way (it opened it just before) notices that
the path no longer names its file and tries again, so two holders never
coexist. Where ``fcntl`` does not exist (Windows) there is no lock; where the
file system refuses locks, a warning says so and training goes on unlocked.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> with FolderLock(folder):  # doctest: +ELLIPSIS
...     FolderLock(folder).acquire()
Traceback (most recent call last):
...
attnviz.errors.TrainError: /... is in use by another training (pid ... on ...); wait for it ...
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from types import TracebackType

from ..errors import TrainError
from .runfolder import LOCK_FILE

__all__ = ["FolderLock"]


class FolderLock:
    """An exclusive lock on ``folder`` (created when missing) through ``folder / name``.

    Use as a context manager, or :meth:`acquire` then :meth:`release`.
    """

    def __init__(self, folder: str | os.PathLike[str], *, name: str = LOCK_FILE) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`TrainError` naming the holder; returns ``self``."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this FolderLock")
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise TrainError(
                    f"{self.folder} is in use by another training ({holder}); wait for it to "
                    "finish, or choose another out folder"
                ) from None
            except OSError as exc:  # e.g. ENOLCK: a file system without locks
                os.close(fd)
                warnings.warn(
                    f"{self.path}: cannot lock ({exc.strerror or exc}); a second training into "
                    "this folder would not be noticed",
                    stacklevel=2,
                )
                return self
            if _names(self.path, fd):
                break
            os.close(fd)  # its previous holder removed it while this one waited: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and unlock (in that order; see the module docs)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing the last descriptor of the open file drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _holder(fd: int) -> str:
    """What the holder wrote in the lock file ("pid N on HOST"), or a phrase when nothing yet."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text if text.startswith("pid ") else "pid unknown: it has not written it yet"
