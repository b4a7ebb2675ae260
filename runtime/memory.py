"""The memory budget, and the check every guarded request makes before it allocates.

In: the bytes a request will hold at its peak, by part (result, tables, work arrays). Out: the
number of points per block of work that keeps the series bounded; the estimate, or a ResourceLimitError naming it and the budget (FEYNMLP_MAX_MEMORY_GB, else 80 % of
physical memory) before anything is allocated. tests/test_memory_guards.py compares each
estimate with the peak measured in a fresh process.
"""
from __future__ import annotations

import os

from .errors import ResourceLimitError

# Per-layer series arrays of one block of points stay below this many bytes: the matrix
# products stay long (points x coefficients) while memory stays bounded.
CHUNK_BYTES = 128 * 2**20


def budget() -> int:
    """Bytes one expansion may allocate: FEYNMLP_MAX_MEMORY_GB, else 80 % of physical memory."""
    configured = os.environ.get("FEYNMLP_MAX_MEMORY_GB")
    if configured:
        return int(float(configured) * 2**30)
    try:
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def size_text(nbytes: float) -> str:
    """A byte count for messages: MiB, or GiB from 1 GiB on."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def fixed(result: int, itemsize: int, tables: int) -> int:
    """Bytes of a request that do not depend on its chunk size: the result, the tables, and the
    caller's check of the result for non-finite values (two boolean arrays of its size)."""
    return result + tables + 2 * result // itemsize


def check(result: int, itemsize: int, tables: int, working: int, describe: str, advice: str,
          details: str = "") -> int:
    """The estimated peak bytes of a request; ResourceLimitError, before anything is
    allocated, if they exceed budget().

    result: the array handed back; tables: index tables and plans (they depend on the number
    of variables and the order only); working: the series and work arrays of one chunk of
    points, all threads together. Added to them: the caller's check of the result for
    non-finite values (see fixed).
    """
    needed = fixed(result, itemsize, tables) + working
    allowed = budget()
    if needed > allowed:
        raise ResourceLimitError(
            f"{describe} needs about {size_text(needed)} ({details}the result {size_text(result)}"
            + (f", index tables {size_text(tables)}" if tables >= 2**20 else "") + f"), more than the {size_text(allowed)} "
            f"allowed; {advice} (set FEYNMLP_MAX_MEMORY_GB to change the limit)")
    return needed


def points_per_chunk(batch: int, neurons: int, columns: int, itemsize: int) -> int:
    """Points per block of work whose series of `neurons` neurons and `columns` coefficients
    stay under CHUNK_BYTES (at least one point)."""
    return int(max(1, min(batch, CHUNK_BYTES // (neurons * columns * itemsize))))
