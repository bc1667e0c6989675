"""How many rows to process at once so CPU temporaries stay small.

torch's CPU allocator does not cache: a temporary the size of a stem feature map
(``[32, 64, 112, 112]``, 100 MB) is a fresh memory mapping whose page faults cost several
times the arithmetic done on it (measured 6x for the feature statistics). Metrics that
make elementwise temporaries therefore work on chunks of about ``CPU_CHUNK_ELEMENTS``
elements on CPU, and whole on accelerators (whose caching allocators reuse memory and
prefer few large kernels). Every caller gets the same values either way.
"""

from __future__ import annotations

import torch

__all__ = ["CPU_CHUNK_ELEMENTS", "rows_per_chunk"]

CPU_CHUNK_ELEMENTS = 1 << 20


def rows_per_chunk(rows: int, row_elements: int, device: torch.device) -> int:
    """Rows per chunk: all of them off-CPU, else about ``CPU_CHUNK_ELEMENTS`` elements' worth."""
    if device.type != "cpu":
        return max(rows, 1)
    return max(1, CPU_CHUNK_ELEMENTS // max(row_elements, 1))
