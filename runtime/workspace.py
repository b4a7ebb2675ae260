"""Work arrays reused from call to call, so that an expansion does not touch fresh memory.

In: a name, a shape and a dtype. Out: an uninitialised array of that shape, carved from a
buffer this thread keeps under that name between calls (grown when too small).

Why: the first touch of freshly allocated memory costs a page fault per 4 KiB page, which
on the machines this was measured on is 1.3 ms per 4 MB, a fifth of a whole order-2
expansion of a 32 -> 64^3 -> 1 network at 256 points. Intermediates (the per-layer series,
the contraction's output before it is copied into the result) come from here; nothing handed
back to the user does. An array from array(name, ...) is valid until the same thread asks for
the same name again, so a name is used for one live array at a time.

A buffer above _KEEP_BYTES, or one that would take this thread's kept buffers above
_KEEP_TOTAL, is not kept: such arrays belong to expansions that run for seconds, next to
which their page faults are small, and a process should not hold hundreds of megabytes
after one large expansion. release() frees everything this thread keeps.
"""
from __future__ import annotations

import math
import threading

import numpy as np

# A buffer larger than this is allocated for the call and not kept; nor is one that would take
# the thread's kept buffers above _KEEP_TOTAL.
_KEEP_BYTES = 32 * 2**20
_KEEP_TOTAL = 96 * 2**20

_local = threading.local()


def array(name, shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of `shape`, reused under `name` on this thread."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buffers = _buffers()
    buffer = buffers.get(name)
    if buffer is None or buffer.size < nbytes:
        buffers.pop(name, None)
        buffer = np.empty(max(nbytes, 1), dtype=np.uint8)
        if nbytes <= _KEEP_BYTES and kept_bytes() + buffer.size <= _KEEP_TOTAL:
            buffers[name] = buffer
    return buffer[:nbytes].view(dtype).reshape(shape)


def arrays(name, shapes, dtype) -> list[np.ndarray]:
    """Uninitialised C-contiguous arrays of `shapes`, carved one after the other (each start
    aligned to 64 bytes) from the one array reused under `name` on this thread: one lookup for
    a kernel's whole set of work arrays."""
    dtype = np.dtype(dtype)
    step = max(1, 64 // dtype.itemsize)
    sizes = [math.prod(shape) for shape in shapes]
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += -(-size // step) * step
    flat = array(name, (total + step,), dtype)
    shift = (-flat.__array_interface__["data"][0] % 64) // dtype.itemsize
    return [flat[shift + start:shift + start + size].reshape(shape) for start, size, shape in zip(starts, sizes, shapes)]


def kept_bytes() -> int:
    """Bytes this thread keeps between calls."""
    return sum(buffer.size for buffer in _buffers().values())


def release() -> None:
    """Free every buffer this thread keeps."""
    _buffers().clear()


def _buffers() -> dict:
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    return buffers
