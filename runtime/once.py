"""Memoised functions that are safe under concurrent first use.

In: a function of hashable arguments. Out: the same function, run at most once per argument
tuple at a time; its result is kept and returned to every later call (an exception is not kept,
so the next call tries again).

Why not functools.lru_cache: it lets two threads that miss the cache at the same moment both
run the function. For the first-use work of feynmlp (generating a kernel, loading SciPy's BLAS
extension module, finding the BLAS libraries) that is wasted seconds at best, and at worst an
error: a Cython extension module refuses to be initialised twice at once ("Module
'cython_blas' has already been imported"). Here the second thread waits for the first and takes
its result. One lock per argument tuple, so unrelated first uses (two different kernels) still
run side by side.
"""
from __future__ import annotations

import functools
import os
import threading
import weakref

_all: "weakref.WeakSet[_Once]" = weakref.WeakSet()


class _Once:
    def __init__(self, function):
        functools.update_wrapper(self, function)
        self._function = function
        self._results: dict = {}
        self._locks: dict = {}
        self._guard = threading.Lock()
        _all.add(self)

    def __call__(self, *args):
        try:
            return self._results[args]
        except KeyError:
            pass
        with self._guard:
            lock = self._locks.setdefault(args, threading.Lock())
        with lock:
            if args in self._results:
                return self._results[args]
            result = self._function(*args)
            self._results[args] = result
        with self._guard:
            self._locks.pop(args, None)
        return result

    def cache_clear(self) -> None:
        """Forget every kept result (the next call runs the function again)."""
        with self._guard:
            self._results.clear()

    def _after_fork(self) -> None:
        # A lock held by a thread of the parent at the fork stays held in the child, where that
        # thread does not exist: the child starts with fresh locks (the results stay valid).
        self._guard = threading.Lock()
        self._locks = {}


def once(function):
    """Decorator: run `function` once per tuple of (positional, hashable) arguments; thread-safe."""
    return _Once(function)


def _reset_locks_in_child() -> None:
    for memoised in list(_all):
        memoised._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)
