"""Blocks of points in threads: the compiled kernels release the GIL, so plain threads share
the cores without Numba's parallel compiler (which costs seconds on a cold compile).

In: a kernel that works on points lo .. hi-1 of its arrays and the number of points. Out:
the kernel run once per block of points, one block per thread (run_blocks), or one kernel
run on several threads at once that share its blocks themselves (run_shared);
single_blas_thread() holds every BLAS library to one thread meanwhile, since the threads are
feynmlp's.
"""
from __future__ import annotations

import contextlib
import os
import threading

from .once import once


def count() -> int:
    """Worker threads: Numba's thread count (NUMBA_NUM_THREADS, by default every core), at most
    the cores this process may run on (taskset, container limits), and at most the limit that
    limited() sets for the calling thread."""
    import numba

    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        allowed = os.cpu_count() or 1
    limit = getattr(_limit, "threads", None) or allowed
    return max(1, min(numba.config.NUMBA_NUM_THREADS, allowed, limit))


@contextlib.contextmanager
def limited(threads: int):
    """Context: feynmlp calls made by this thread use at most `threads` worker threads.

    For callers that bring their own parallelism (a Dask worker runs one task per thread): each
    task then expands its block of points on its own thread instead of starting a thread team
    per task, which would put threads x tasks kernel threads on the cores.
    """
    previous = getattr(_limit, "threads", None)
    _limit.threads = max(1, int(threads))
    try:
        yield
    finally:
        _limit.threads = previous


# The per-thread ceiling of limited(); unset means no ceiling beyond the cores.
_limit = threading.local()


def blocks(points: int, start: int = 0) -> list[tuple[int, int]]:
    """The blocks [lo, hi) run_blocks splits range(start, points) into: one per worker thread,
    of sizes that differ by at most one."""
    workers = max(1, min(count(), points - start))
    bounds = [start + (points - start) * i // workers for i in range(workers + 1)]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def run_blocks(kernel, args: tuple, points: int, start: int = 0) -> None:
    """kernel(*args, lo, hi) for consecutive blocks [lo, hi) covering range(start, points).

    Call it inside single_blas_thread() when the kernel calls BLAS."""
    calls = blocks(points, start)
    if len(calls) <= 1:
        for lo, hi in calls:
            kernel(*args, lo, hi)
        return
    # The calling thread takes the first block itself: one hand-off fewer (with both blocks in
    # the pool, the second began about 0.2 ms after the first, in a 6 ms order-2 expansion).
    futures = [_pool(len(calls) - 1).submit(kernel, *args, lo, hi) for lo, hi in calls[1:]]
    try:
        kernel(*args, *calls[0])
    finally:
        for future in futures:  # every block has finished (or failed) before anything is raised
            future.exception()
    for future in futures:
        future.result()


def run_shared(kernel, calls: list[tuple]) -> None:
    """kernel(*calls[0]) on the calling thread and kernel(*calls[i]) on pool threads at once,
    for kernels that share their work through atomic counters (feynmlp.atomic) and return
    True once all of it is finished, by whichever thread.

    When the calling thread's kernel says all is finished, the others are leaving theirs and
    nothing waits for them: waiting would cost a wake-up of this thread (about 0.1 ms), and a
    thread that starts late only finds no work left. A pool thread that failed before taking
    any work left that work to the others, so its failure changes no result. Otherwise
    (the kernel failed, or stopped waiting) every thread is waited for, and the first failure
    raised.
    """
    if len(calls) <= 1:
        for arguments in calls:
            kernel(*arguments)
        return
    futures = [_pool(len(calls) - 1).submit(kernel, *arguments) for arguments in calls[1:]]
    try:
        if kernel(*calls[0]):
            return
    except BaseException:
        for future in futures:
            future.exception()
        raise
    for future in futures:
        future.exception()
    for future in futures:
        future.result()


@contextlib.contextmanager
def single_blas_thread():
    """Context: every BLAS library on one thread, while feynmlp's own threads use the cores.

    Why: on small per-point matrices a BLAS thread team costs more than it gains (a one-point
    Born-network expansion took 8 ms with two OpenBLAS threads and 0.75 ms with one); and
    after any threaded call OpenBLAS's workers spin, waiting for more work, for tens of
    milliseconds, which on a machine with as many cores as feynmlp has threads took a core
    from the work that followed (a contraction took 64 ms alone, 103 ms right after one
    two-thread matrix product).

    The BLAS thread count is a setting of the whole process, so calls that overlap (from
    several user threads) share one limit: the first to enter sets it, the last to leave
    restores what was there before the first entered. Meanwhile every BLAS call of the
    process runs on one thread, the user's own NumPy products included.
    """
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            libraries = _blas_controller().select(user_api="blas").lib_controllers
            _blas_saved = [(library, library.get_num_threads()) for library in libraries]
            _set_blas_threads([(library, 1) for library in libraries])
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                saved, _blas_saved = _blas_saved, []
                _set_blas_threads(saved)


# How many calls are inside single_blas_thread(), and the thread counts found when the first
# of them entered.
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved: list = []


def _set_blas_threads(settings) -> None:
    """Set each BLAS library's (process-wide) thread count, from whichever thread calls.

    threadpoolctl lets one thread at a time change OpenBLAS's count (the first to change it,
    until it lets go) and silently ignores the others; here the first call to enter and the
    last to leave may run in different threads, so each change takes control and lets go.
    """
    import threadpoolctl

    release = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if release is not None:
        release(force=True)
    try:
        for library, count in settings:
            if count is not None:
                library.set_num_threads(count)
    finally:
        if release is not None:
            release(force=True)


@once
def _blas_controller():
    """The BLAS libraries' thread controls, NumPy's and the kernels' (SciPy's or MKL, loaded
    first, so it is seen)."""
    from threadpoolctl import ThreadpoolController

    from . import blas

    blas.library()

    return ThreadpoolController()


@once
def _pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feynmlp")


def _after_fork_in_child() -> None:
    # A forked child has none of the parent's threads: it must start its own pool, not wait on
    # work that no thread will ever take (multiprocessing with fork, data-loader workers); and
    # no parent thread is inside single_blas_thread() there.
    global _blas_lock, _blas_users, _blas_saved
    _pool.cache_clear()
    _blas_lock, _blas_users, _blas_saved = threading.Lock(), 0, []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
