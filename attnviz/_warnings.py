"""Warnings as one line for people reading a terminal: ``PREFIX: warning: message``.

Python's default display adds the file, line and source of the ``warn`` call, which means
nothing to someone running ``attnviz surgery`` or watching an ablation's workers. The
command line (``attnviz COMMAND``) and the ablation workers (``cell ID``) both show their
warnings through :func:`one_line_warnings`. A leaf module: it imports no torch.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

__all__ = ["one_line_warnings"]


@contextlib.contextmanager
def one_line_warnings(prefix: str) -> Iterator[None]:
    """Show warnings as ``{prefix}: warning: message`` (whitespace folded) on stderr, then restore."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split()) or category.__name__
        print(f"{prefix}: warning: {text}", file=sys.stderr, flush=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
