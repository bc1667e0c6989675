"""Reading pickled data files without running their code: numpy arrays and plain values only.

A pickle is a small program: it names callables (``os.system``, ...) and
``pickle.load`` calls them, so loading a file someone handed you runs whatever
they wrote into it. Data sets distributed as pickles (CIFAR's python version)
need no code at all, only numpy arrays and the builtin containers, strings and
numbers a pickle builds without calling anything. :func:`load_data_pickle`
allows exactly the three globals numpy arrays are rebuilt from and refuses any
other with :class:`~attnviz.errors.UntrustedCodeError` before it is called.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from ..errors import DataError, UntrustedCodeError

__all__ = ["ALLOWED_GLOBALS", "load_data_pickle"]


def _reconstruct() -> Any:
    core = getattr(np, "_core", None)  # numpy >= 2; numpy.core before
    if core is None:
        import numpy.core.multiarray as multiarray
    else:
        multiarray = core.multiarray
    return multiarray._reconstruct


#: ``(module, name)`` a data pickle may name -> the object it gets. Python 2 and
#: numpy 1 pickles write ``numpy.core.multiarray``, numpy 2 ``numpy._core.multiarray``.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _Refused(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise _Refused(module, name)
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not data")


def load_data_pickle(path: str | os.PathLike[str], encoding: str = "latin1") -> Any:
    """The object pickled in ``path``, built from numpy arrays and plain values only.

    ``encoding="latin1"`` reads Python 2 pickles (their byte strings, numpy's raw
    data among them) as numpy does. Errors: :class:`UntrustedCodeError` for a file
    that names any other global (nothing of it is run), :class:`DataError` for one
    that is not a readable pickle; both name the file.

    >>> import io, pickle, tempfile
    >>> f = tempfile.NamedTemporaryFile(suffix=".pkl", delete=False)
    >>> pickle.dump({"labels": [1, 2]}, f); f.close()
    >>> load_data_pickle(f.name)
    {'labels': [1, 2]}
    """
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            return _DataUnpickler(f, encoding=encoding).load()
    except _Refused as e:
        raise UntrustedCodeError(
            f"{where!r} is a pickle that names {e}: refused (only numpy arrays and plain "
            "values are read from data pickles, and nothing in them is called)"
        ) from None
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{where!r} is not a readable data pickle: {e}") from e
    except (OSError, MemoryError) as e:
        raise DataError(f"cannot read {where!r}: {e}") from e
