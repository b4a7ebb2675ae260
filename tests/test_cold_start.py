"""The path a new user takes first: fresh processes, empty kernel caches, threads.

Each case runs in a fresh Python process with empty FEYNMLP_CACHE_DIR and NUMBA_CACHE_DIR and
NUMBA_NUM_THREADS=2, whose program imports nothing but numpy and feynmlp (and sympy where the
user's own custom activation needs it, threading where the user runs threads): the first call
generates its kernel (importing SymPy and Jinja2 for the first time) while feynmlp's worker
threads start, which is where first-use races live. They depend on timing: the child switches
threads every 10 us (Python's default is 5 ms), and every group of cases runs in REPEATS fresh
processes.

The numbers are checked in the child against an independent route through the network:
sum over |alpha| = k of c_alpha v^alpha (multivariate coefficients) must equal the k-th
coefficient of the series along v, which feynmlp.directional computes with other kernels; a
NumPy forward pass checks the values; and results of user threads must equal the same calls
made one after another.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPEATS = 6

_CHILD = r'''
import json, sys
# Threads switch every 10 us instead of 5 ms: a race between two bytecodes of two threads is
# met far more often.
sys.setswitchinterval(1e-5)
import numpy as np
import feynmlp
import feynmlp.born

CASES = json.loads(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))


def network(n_in, width, depth, activation, outputs=1):
    sizes = [n_in] + [width] * depth + [outputs]
    weights = [rng.normal(size=(sizes[i + 1], sizes[i])) / np.sqrt(sizes[i]) for i in range(len(sizes) - 1)]
    biases = [rng.normal(size=sizes[i + 1]) * 0.1 for i in range(len(sizes) - 1)]
    return feynmlp.MLP(weights, biases, activation=activation)


def numpy_values(mlp, x):
    """The network's value by a plain NumPy forward pass (its own activation function)."""
    return mlp(x)


def activation_of(spec):
    if isinstance(spec, str):
        return spec
    import sympy
    z = sympy.Symbol("z")
    return {"ztanh": z * sympy.tanh(z), "sinsq": sympy.sin(z) + z ** 2 / 7}[spec["custom"]]


def check_multivariate(mlp, x, order, expansion, tol):
    """Each order k of the multivariate coefficients, contracted with a direction v, equals
    the t^k coefficient of t -> f(x + t v) from feynmlp.directional."""
    points = np.atleast_2d(x)
    coefficients = expansion.coefficients.reshape(points.shape[0], -1, expansion.multi_indices.shape[0])
    degree = expansion.multi_indices.sum(axis=1)
    for b in range(min(points.shape[0], 3)):
        v = rng.normal(size=points.shape[1])
        monomials = np.prod(v[None, :] ** expansion.multi_indices, axis=1)
        series = feynmlp.directional(mlp, points[b], v, order)
        for k in range(order + 1):
            contracted = coefficients[b][:, degree == k] @ monomials[degree == k]
            scale = max(1.0, np.abs(series[:, k]).max())
            assert np.allclose(contracted, series[:, k], rtol=0, atol=tol * scale), (b, k, contracted, series[:, k])
        assert np.allclose(coefficients[b][:, 0], numpy_values(mlp, points[b]), rtol=0, atol=1e-12)


def run(case):
    kind = case["kind"]
    mlp = network(case["n"], case["width"], case["depth"], activation_of(case["activation"]))
    if kind == "taylor":
        x = rng.normal(size=(case["points"], case["n"])) if case["points"] > 1 else rng.normal(size=case["n"])
        expansion = feynmlp.taylor(mlp, x, case["order"])
        check_multivariate(mlp, x, case["order"], expansion, 1e-9)
    elif kind == "directional":
        x = rng.normal(size=case["n"]) * 0.3 if case["shared"] else rng.normal(size=(case["points"], case["n"])) * 0.3
        v = rng.normal(size=(case["points"], case["n"])) * 0.3
        series = feynmlp.directional(mlp, x, v, case["order"])
        # Independent check: the series summed at t = 0.1 against the network itself (the
        # remainder, of order t^11, is far below the tolerance).
        t = 0.1
        xs = np.broadcast_to(x, v.shape)
        assert np.allclose(series @ t ** np.arange(case["order"] + 1), mlp(xs + t * v), rtol=0, atol=1e-7)
    elif kind == "threads":
        run_threads(case, mlp)
    elif kind == "operators":
        run_operators(case, mlp)
    print("ok", json.dumps(case), flush=True)


def at_once(calls):
    """The results of the calls, each made in its own user thread, all released together; the
    traceback of the first that failed fails the case."""
    import threading

    results, errors = [None] * len(calls), []
    barrier = threading.Barrier(len(calls))

    def work(i):
        try:
            barrier.wait()
            results[i] = calls[i]()
        except BaseException:
            import traceback
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    return results


def run_threads(case, mlp):
    """Four user threads at once (cold, then warm), each result equal to the same call made
    alone afterwards."""
    n, order = case["n"], case["order"]
    x = rng.normal(size=(case["points"], n))
    v = rng.normal(size=(case["points"], n))
    alpha = [0] * n
    alpha[0], alpha[1] = 3, 2
    potentials = -np.abs(rng.normal(size=(50, 16))) * 0.3
    calls = [
        lambda: feynmlp.taylor(mlp, x, order).coefficients,
        lambda: feynmlp.taylor(mlp, x[:3], order, scheme="forward").coefficients,
        lambda: feynmlp.directional(mlp, x, v, order + 2),
        lambda: np.array([c.value for c in feynmlp.diagram_contributions(mlp, x[0], alpha)]).sum(axis=0),
        lambda: feynmlp.born.born_terms(potentials, 3, 1.0),
        lambda: feynmlp.born.scattering_length(potentials, 1.0),
    ]
    chosen = [calls[i] for i in case["calls"]]
    for attempt in ("cold", "warm"):
        results = at_once(chosen)
        for i, call in enumerate(chosen):
            alone = call()
            assert np.array_equal(results[i], alone), (attempt, case["calls"][i])
    # The coefficient from the diagrams equals the kernels' one (a different route).
    if 3 in case["calls"]:
        expansion = feynmlp.taylor(mlp, x[0], 5)
        assert np.allclose(np.array([c.value for c in feynmlp.diagram_contributions(mlp, x[0], alpha)]).sum(axis=0),
                           expansion.coefficient(alpha), rtol=1e-9, atol=1e-12)


def run_operators(case, mlp):
    """Four user threads calling the operators at once on a cold cache (the fused float64
    kernels, their activation callbacks, the NumPy path in float32, the biharmonic), each
    result equal to the same call made alone afterwards and to the trace of feynmlp.taylor's
    Hessian (other kernels)."""
    x = rng.normal(size=(case["points"], case["n"]))
    unit = [[int(i == j) for j in range(case["n"])] for i in range(3)]
    pde = {tuple(unit[0]): 1.0, tuple(2 * u for u in unit[1]): 1.0, tuple(2 * u for u in unit[2]): 1.0}
    calls = [
        lambda: feynmlp.laplacian(mlp, x),
        lambda: feynmlp.operator(mlp, x, pde),
        lambda: feynmlp.laplacian(mlp, x, dtype=np.float32),
        lambda: feynmlp.biharmonic(mlp, x[:4]),
    ]
    results = at_once(calls)
    for i, call in enumerate(calls):
        assert np.array_equal(results[i], call()), i
    hessian = feynmlp.taylor(mlp, x, 2).hessian
    trace = np.einsum("boii->bo", hessian)
    pde_value = hessian[:, :, 1, 1] + hessian[:, :, 2, 2] + feynmlp.taylor(mlp, x, 1).gradient[:, :, 0]
    scale = np.abs(trace).max()
    assert np.allclose(results[0], trace, rtol=0, atol=1e-10 * scale)
    assert np.allclose(results[1], pde_value, rtol=0, atol=1e-10 * np.abs(pde_value).max())
    assert np.allclose(results[2], trace, rtol=0, atol=1e-4 * scale)


for case in CASES:
    run(case)
'''


def _run_child(cases: list[dict], seed: int, tmp_path) -> None:
    env = dict(os.environ)
    env.update(FEYNMLP_CACHE_DIR=str(tmp_path / f"feynmlp-{seed}"), NUMBA_CACHE_DIR=str(tmp_path / f"numba-{seed}"),
               NUMBA_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cases), str(seed)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, f"cold run {seed} failed:\n{done.stderr[-4000:]}"
    assert done.stdout.count("ok ") == len(cases), done.stdout


def _taylor(activation, order, n, points, width=32, depth=2):
    return dict(kind="taylor", activation=activation, order=order, n=n, points=points, width=width, depth=depth)


# Each group runs in one process: its first case meets every first use (SymPy, Jinja2, SciPy's
# BLAS, Numba), the later ones a kernel that is new to the cache. The first cases differ in
# activation, order and shape; each group runs REPEATS times, each time in a fresh process.
GROUPS = {
    # The README's K = 5 case in miniature: 32 inputs, 64 points, two threads.
    "tanh order 5, 32 inputs": [_taylor("tanh", 5, 32, 64)],
    "softplus order 6, then sigmoid 7 at one point, gelu 8": [
        _taylor("softplus", 6, 8, 16), _taylor("sigmoid", 7, 8, 1), _taylor("gelu", 8, 8, 4, width=16)],
    "silu order 7 at one point, then sin 5 and exp 6 in 16 inputs": [
        _taylor("silu", 7, 12, 1, width=24), _taylor("sin", 5, 16, 40), _taylor("exp", 6, 8, 8, width=8)],
    "custom activation order 5, then order 2 (Hessian path)": [
        _taylor({"custom": "ztanh"}, 5, 12, 32), _taylor({"custom": "sinsq"}, 2, 24, 64)],
    "directional order 10, one point and many": [
        dict(kind="directional", activation="tanh", order=10, n=16, points=500, shared=True, width=32, depth=2),
        dict(kind="directional", activation="cos", order=10, n=16, points=64, shared=False, width=32, depth=2)],
    "four user threads, order 5, same kernel": [
        dict(kind="threads", activation="tanh", order=5, n=10, points=24, width=16, depth=2, calls=[0, 0, 0, 0])],
    "four user threads: laplacian, u_t + u_xx + u_yy, float32, biharmonic": [
        dict(kind="operators", activation="tanh", n=5, points=300, width=24, depth=3)],
    "six user threads: taylor, directional, diagrams, Born": [
        dict(kind="threads", activation="gelu", order=5, n=8, points=16, width=16, depth=2,
             calls=[0, 1, 2, 3, 4, 5])],
}


@pytest.mark.parametrize("repeat", range(REPEATS))
@pytest.mark.parametrize("group", list(GROUPS))
def test_cold_first_calls(group, repeat, tmp_path):
    _run_child(GROUPS[group], 1000 * repeat + list(GROUPS).index(group), tmp_path)
