"""feynmlp.workspace: reused work arrays, and that no result handed back lives in one.

The reference for the expansions is torch.func (nested jacfwd), through
tests/helpers/torch_reference.py.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import feynmlp
from feynmlp import workspace
from helpers.networks import random_mlp
from helpers.torch_reference import (assert_relative_close, torch_derivative_tensors, torch_directional_coefficients,
                                     torch_network)


def test_same_name_reuses_memory_and_grows_when_too_small():
    workspace.release()
    first = workspace.array("x", (4, 5), np.float64)
    again = workspace.array("x", (2, 3), np.float64)
    assert np.shares_memory(first, again)
    other = workspace.array("y", (4, 5), np.float64)
    assert not np.shares_memory(first, other)
    grown = workspace.array("x", (100, 100), np.float32)
    assert grown.shape == (100, 100) and grown.dtype == np.float32 and grown.flags.c_contiguous
    assert workspace.kept_bytes() >= grown.nbytes + other.nbytes
    workspace.release()
    assert workspace.kept_bytes() == 0


def test_large_buffers_are_not_kept():
    workspace.release()
    big = workspace.array("big", (workspace._KEEP_BYTES // 8 + 1,), np.float64)
    assert big.size == workspace._KEEP_BYTES // 8 + 1
    assert workspace.kept_bytes() == 0
    # Nor beyond the total a thread keeps: the buffer that would cross it is handed out, not kept.
    count = workspace._KEEP_TOTAL // workspace._KEEP_BYTES
    for i in range(count + 1):
        workspace.array(("part", i), (workspace._KEEP_BYTES // 8,), np.float64)
    assert workspace.kept_bytes() == count * workspace._KEEP_BYTES
    workspace.release()


def test_threads_get_their_own_buffers():
    workspace.release()
    mine = workspace.array("x", (10,), np.float64)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(workspace.array("x", (10,), np.float64)))
    thread.start()
    thread.join()
    assert not np.shares_memory(mine, theirs[0])


def test_a_grown_buffer_replaces_the_smaller_one_and_other_dtypes_share_it():
    workspace.release()
    workspace.array("x", (10,), np.float64)
    assert workspace.kept_bytes() == 80
    grown = workspace.array("x", (30,), np.float64)
    assert workspace.kept_bytes() == 240  # the 80 bytes are let go, not kept beside
    as_float32 = workspace.array("x", (6, 10), np.float32)
    assert np.shares_memory(grown, as_float32) and as_float32.shape == (6, 10)
    assert workspace.kept_bytes() == 240
    empty = workspace.array("empty", (0, 3), np.float64)
    assert empty.shape == (0, 3) and empty.dtype == np.float64
    workspace.release()


def test_release_frees_only_the_calling_threads_buffers():
    workspace.release()
    workspace.array("x", (10,), np.float64)
    seen = {}

    def other():
        workspace.array("x", (20,), np.float64)
        seen["before"] = workspace.kept_bytes()
        done.wait(10)
        seen["after"] = workspace.kept_bytes()

    done = threading.Event()
    thread = threading.Thread(target=other)
    thread.start()
    while "before" not in seen and thread.is_alive():
        thread.join(0.01)
    workspace.release()
    assert workspace.kept_bytes() == 0
    done.set()
    thread.join()
    assert seen == {"before": 160, "after": 160}


@pytest.mark.parametrize("scheme", ["forward", "top-vertex"])
def test_results_survive_later_expansions(scheme):
    """Each call's coefficients stay those of its own points after later calls on the same
    thread (which reuse the work arrays), for both schemes; checked against torch."""
    rng = np.random.default_rng(7)
    mlp = random_mlp(rng, [3, 6, 5, 1], ["tanh", "sigmoid"])
    f = torch_network(mlp)
    points = [rng.normal(size=(2, 3)) for _ in range(3)]
    expansions = [feynmlp.taylor(mlp, x, 3, scheme=scheme) for x in points]
    for x, expansion in zip(points, expansions):
        for k in (1, 2, 3):
            want = np.stack([torch_derivative_tensors(f, point, 3)[k] for point in x])
            assert_relative_close(expansion.derivative_tensor(k), want, what=f"order {k}")


def test_directional_results_survive_later_expansions():
    rng = np.random.default_rng(8)
    mlp = random_mlp(rng, [3, 6, 5, 1], ["tanh", "sin"])
    f = torch_network(mlp)
    x = rng.normal(size=3)
    directions = [rng.normal(size=(2, 3)) for _ in range(3)]
    series = [feynmlp.directional(mlp, x, v, 3) for v in directions]
    for v, got in zip(directions, series):
        want = np.stack([torch_directional_coefficients(f, x, direction, 3) for direction in v])
        assert_relative_close(got, want, what="directional")


def test_arrays_are_disjoint_aligned_and_reused():
    # One lookup carves several work arrays: each of its shape, none overlapping another, each
    # starting on a 64-byte boundary, and the same memory on the next call with the same name.
    shapes = [(3, 5), (7,), (2, 2, 3), (1, 1)]
    first = workspace.arrays("test arrays", shapes, np.float64)
    assert [a.shape for a in first] == shapes
    assert all(a.flags.c_contiguous and a.ctypes.data % 64 == 0 for a in first)
    for i, a in enumerate(first):
        a[...] = i
    for i, a in enumerate(first):
        assert (a == i).all()
    assert not any(np.shares_memory(a, b) for i, a in enumerate(first) for b in first[i + 1:])
    again = workspace.arrays("test arrays", shapes, np.float64)
    assert all(np.shares_memory(a, b) for a, b in zip(first, again))
