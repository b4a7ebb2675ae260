"""Blocks of points in threads: the compiled kernels release the GIL, so plain threads share
the cores without Numba's parallel compiler (which costs seconds on a cold compile).

In: a kernel that works on points lo .. hi-1 of its arrays and the number of points. Out:
the kernel run once per block of points, one block per thread, with every BLAS library held
to one thread meanwhile (the workers already use every core; the top-vertex kernel calls
SciPy's BLAS, NumPy's matmul its own).
"""
from __future__ import annotations

import functools

import numpy as np


def count() -> int:
    """Worker threads: Numba's thread count (NUMBA_NUM_THREADS, by default every core)."""
    import numba

    return max(1, numba.config.NUMBA_NUM_THREADS)


def run_blocks(kernel, args: tuple, points: int, start: int = 0) -> None:
    """kernel(*args, lo, hi) for consecutive blocks [lo, hi) covering range(start, points)."""
    workers = max(1, min(count(), points - start))
    bounds = np.linspace(start, points, workers + 1).astype(int)
    calls = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    if len(calls) <= 1:
        for lo, hi in calls:
            kernel(*args, lo, hi)
        return
    with _blas_controller().limit(limits=1, user_api="blas"):
        futures = [_pool(len(calls)).submit(kernel, *args, lo, hi) for lo, hi in calls]
        for future in futures:
            future.result()


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """The BLAS libraries' thread controls, NumPy's and SciPy's (loaded first, so it is seen)."""
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@functools.lru_cache(maxsize=4)
def _pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feynmlp")
