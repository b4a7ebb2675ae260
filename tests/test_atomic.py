"""feynmlp.atomic: counters that threads of compiled kernels share.

Four threads take indices from one counter until 200,000 are handed out, each marking the
indices it got: every index must be taken exactly once, and the finished count (one take()
per index done) read by load() must equal the number of indices.
"""
from __future__ import annotations

import threading

import numpy as np
from numba import njit

from feynmlp import atomic


@njit(nogil=True)
def _take_all(counters, marks):  # pragma: no cover - compiled
    mine = 0
    while True:
        index = atomic.take(counters, 0)
        if index >= marks.shape[0]:
            break
        marks[index] += 1
        mine += 1
        atomic.take(counters, 1)
    return mine


@njit
def _finished(counters):  # pragma: no cover - compiled
    return atomic.load(counters, 1)


def test_every_index_is_taken_once_across_threads():
    counters = np.zeros(2, dtype=np.int64)
    marks = np.zeros(200_000, dtype=np.int64)
    _take_all(np.zeros(2, dtype=np.int64), np.zeros(1, dtype=np.int64))  # compile before the threads start
    taken = []
    workers = [threading.Thread(target=lambda: taken.append(_take_all(counters, marks))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sum(taken) == marks.shape[0]
    assert np.all(marks == 1)
    assert _finished(counters) == marks.shape[0]
    assert counters[0] == marks.shape[0] + len(workers)  # each thread's last take() found nothing left
