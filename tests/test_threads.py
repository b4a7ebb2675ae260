"""feynmlp.threads: blocks of points in worker threads.

Every point is handed to exactly one block, whatever the number of points and workers; the
blocks are one per worker, of sizes that differ by at most one, and run on different threads;
the worker count is bounded by Numba's thread count and the cores the process may use; a
process forked after the pool has run can still expand (its pool is its own: a child waiting on
the parent's threads would hang forever); and BLAS is held to one thread while any caller is
inside single_blas_thread(), then given back its setting, also when the caller raised.
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


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("points,start", [(0, 0), (1, 0), (2, 1), (7, 0), (10, 3), (64, 0), (65, 1)])
def test_blocks_are_one_per_worker_and_differ_in_size_by_at_most_one(monkeypatch, workers, points, start):
    monkeypatch.setattr(threads, "count", lambda: workers)
    got = threads.blocks(points, start)
    todo = max(0, points - start)
    assert len(got) == min(workers, todo)
    # Consecutive, covering range(start, points), none empty, sizes floor or ceil of the share.
    assert [lo for lo, _ in got[1:]] == [hi for _, hi in got[:-1]]
    if got:
        assert got[0][0] == start and got[-1][1] == points
    sizes = {hi - lo for lo, hi in got}
    assert sizes <= {todo // len(got), -(-todo // len(got))} if got else not sizes
    assert min(sizes, default=1) >= 1


def test_count_is_bounded_by_numba_threads_and_by_the_allowed_cores(monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 8)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert threads.count() == 3
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    assert threads.count() == 2
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(), raising=False)
    assert threads.count() == 1


def test_blocks_run_on_different_threads_the_first_on_the_caller(monkeypatch):
    monkeypatch.setattr(threads, "count", lambda: 3)
    ran, barrier = {}, threading.Barrier(3, timeout=10)

    def kernel(lo, hi):
        ran[(lo, hi)] = threading.get_ident()
        barrier.wait()  # all three blocks are running at once, or this times out

    threads.run_blocks(kernel, (), 9)
    assert sorted(ran) == [(0, 3), (3, 6), (6, 9)]
    assert ran[(0, 3)] == threading.get_ident()
    assert len(set(ran.values())) == 3


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


def _blas_threads() -> dict:
    """The thread count of every BLAS library loaded that can run more than one: MKL in its
    sequential layer (the kernels' MKL, feynmlp.blas) always runs one, whatever is set."""
    from threadpoolctl import threadpool_info

    return {info["filepath"]: info["num_threads"] for info in threadpool_info()
            if info["user_api"] == "blas" and info.get("threading_layer") != "sequential"}


def test_overlapping_calls_keep_blas_on_one_thread_until_the_last_leaves():
    """Calls from two user threads overlap: A enters, B enters, A leaves, B leaves. BLAS stays
    on one thread until B has left, and then has the settings it had before A entered."""
    from threadpoolctl import threadpool_limits

    threads._blas_controller()  # SciPy's BLAS is loaded, so that it is counted below
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        assert before and all(count == 2 for count in before.values()), before
        a_entered, b_entered, a_left = threading.Event(), threading.Event(), threading.Event()
        seen = {}

        def a():
            with threads.single_blas_thread():
                a_entered.set()
                b_entered.wait(5)
                seen["A inside"] = _blas_threads()
            a_left.set()

        def b():
            a_entered.wait(5)
            with threads.single_blas_thread():
                b_entered.set()
                a_left.wait(5)
                seen["B after A left"] = _blas_threads()

        workers = [threading.Thread(target=a), threading.Thread(target=b)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        assert len(seen) == 2 and all(count == 1 for counts in seen.values() for count in counts.values()), seen
        assert _blas_threads() == before


def test_expansions_from_user_threads_restore_the_blas_setting():
    from threadpoolctl import threadpool_limits

    mlp = feynmlp.MLP([np.eye(4), np.ones((1, 4))], None, activation="tanh")
    x = np.random.default_rng(0).normal(size=(64, 4))
    threads._blas_controller()
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        workers = [threading.Thread(target=lambda: [feynmlp.taylor(mlp, x, 3) for _ in range(20)]) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert _blas_threads() == before


def test_blas_setting_is_restored_when_the_caller_raises():
    from threadpoolctl import threadpool_limits

    threads._blas_controller()
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        with pytest.raises(RuntimeError, match="inside"):
            with threads.single_blas_thread():
                assert all(count == 1 for count in _blas_threads().values())
                raise RuntimeError("raised inside")
        assert _blas_threads() == before
        assert threads._blas_users == 0
