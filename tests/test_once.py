"""feynmlp.once (memoised first use under threads) and the checks that must not touch a
module another thread is importing."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import types

import pytest

from feynmlp import kernels
from feynmlp.once import once


def _at_once(count: int, target) -> list:
    results, errors = [None] * count, []
    barrier = threading.Barrier(count)

    def work(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    return results


def test_concurrent_first_calls_run_the_function_once():
    calls = []

    @once
    def slow(key):
        calls.append(key)
        time.sleep(0.05)
        return object()

    results = _at_once(8, lambda i: slow("k"))
    assert calls == ["k"]
    assert all(result is results[0] for result in results)


def test_different_arguments_run_side_by_side():
    inside, both = [], threading.Event()

    @once
    def meet(key):
        inside.append(key)
        if len(inside) == 2:
            both.set()
        return both.wait(5)  # True only if the other argument's call ran at the same time

    assert _at_once(2, lambda i: meet(i)) == [True, True]


def test_an_exception_is_not_kept():
    attempts = []

    @once
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("first attempt fails")
        return "second"

    with pytest.raises(OSError):
        flaky()
    assert flaky() == "second" and flaky() == "second"
    assert len(attempts) == 2
    flaky.cache_clear()
    assert flaky() == "second" and len(attempts) == 3


def test_sympy_check_never_reads_a_half_imported_sympy(monkeypatch):
    """While another thread imports SymPy, sys.modules holds a module without Basic yet."""
    import sympy

    monkeypatch.setitem(sys.modules, "sympy", types.ModuleType("sympy"))
    assert kernels.is_sympy_expression("tanh") is False
    assert kernels.is_sympy_expression(None) is False
    assert kernels.is_sympy_expression(sympy.Symbol("x") * 2) is True


def test_sympy_check_without_sympy_imported_imports_nothing():
    code = ("import sys, feynmlp.kernels as k; assert not k.is_sympy_expression('tanh'); "
            "assert 'sympy' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

@pytest.mark.parametrize("repeat", range(4))
def test_scipy_blas_loads_once_under_concurrent_first_use(repeat):
    """Eight threads of a fresh process ask for SciPy's BLAS at the same moment (switching
    threads every microsecond, so that a window between two bytecodes is met)."""

    code = """
import sys, threading
sys.setswitchinterval(1e-6)
from feynmlp import blas, threads
errors, barrier = [], threading.Barrier(8)
def first_use(i):
    try:
        barrier.wait()
        (blas.cython_blas if i % 2 else threads._blas_controller)()
    except BaseException as exc:
        errors.append(repr(exc))
workers = [threading.Thread(target=first_use, args=(i,)) for i in range(8)]
[w.start() for w in workers]
[w.join() for w in workers]
assert not errors, errors
assert blas.address("dgemm") != 0
"""
    subprocess.run([sys.executable, "-c", code], check=True)
