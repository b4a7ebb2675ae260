"""feynmlp.threads: blocks of points in worker threads.

Every point is handed to exactly one block, whatever the number of points and workers; and a
process forked after the pool has run can still expand (its pool is its own: a child waiting on
the parent's threads would hang forever).
"""
from __future__ import annotations

import multiprocessing
import sys
import threading
import time

import numpy as np
import pytest

import feynmlp
from feynmlp import threads


@pytest.mark.parametrize("points", [0, 1, 2, 3, 7, 64])
@pytest.mark.parametrize("start", [0, 1])
def test_blocks_cover_every_point_once(points, start):
    seen = []

    def kernel(marker, lo, hi):
        assert marker == "args come first"
        seen.extend(range(lo, hi))

    threads.run_blocks(kernel, ("args come first",), points, start)
    assert sorted(seen) == list(range(min(start, points), points))


def test_kernel_errors_reach_the_caller():
    def kernel(lo, hi):
        raise ValueError(f"block {lo}..{hi}")

    with pytest.raises(ValueError, match="block"):
        threads.run_blocks(kernel, (), 8)


def test_the_calling_thread_takes_a_block_and_waits_for_the_others_on_error(monkeypatch):
    monkeypatch.setattr(threads, "count", lambda: 3)
    caller, finished = threading.get_ident(), []

    def kernel(lo, hi):
        if threading.get_ident() == caller:
            raise ValueError("the caller's block")
        time.sleep(0.05)
        finished.append((lo, hi))

    with pytest.raises(ValueError, match="caller's block"):
        threads.run_blocks(kernel, (), 9)
    # The error came only after both other blocks had finished: none is left writing results.
    assert sorted(finished) == [(3, 6), (6, 9)]


def _child(mlp, points, queue):
    queue.put(feynmlp.taylor(mlp, points, 3).coefficients)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_expands_after_the_parent_used_the_pool():
    rng = np.random.default_rng(0)
    mlp = feynmlp.MLP([rng.normal(size=(6, 3)), rng.normal(size=(6, 6)), rng.normal(size=(1, 6))],
                      [np.zeros(6), np.zeros(6), np.zeros(1)], "tanh")
    points = rng.normal(size=(16, 3))
    expected = feynmlp.taylor(mlp, points, 3).coefficients  # the parent's pool has run
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(mlp, points, queue))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung: it waited on the parent's worker threads")
    assert child.exitcode == 0
    np.testing.assert_allclose(queue.get(timeout=10), expected, rtol=1e-13, atol=0)
