"""The memory guards hold: the measured peak of a call stays within its estimate (+10 %).

Each case runs in a fresh process: a warm-up call loads the kernels, memory malloc keeps is
given back (malloc_trim), the kernel's peak resident size is reset (/proc/self/clear_refs), the call runs, and the growth of the peak
(VmHWM) over the resident size before the call is compared with the estimate the guard
made for that call (read by wrapping feynmlp.memory.check).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")

_CHILD = r'''
import ctypes, json, sys
import numpy as np
import feynmlp
from feynmlp import memory

case = json.loads(sys.argv[1])


def resident():
    values = {}
    for line in open("/proc/self/status"):
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) * 1024
    return values


rng = np.random.default_rng(0)
n, width, outputs = case["n"], case["width"], case["outputs"]
weights = [rng.normal(size=(width, n)) / 6, rng.normal(size=(width, width)) / 8, rng.normal(size=(outputs, width)) / 8]
mlp = feynmlp.MLP(weights, None, activation="tanh")
x = rng.normal(size=(case["batch"], n))
estimates = []
if case["kind"] == "directional":
    call = lambda rows: feynmlp.directional(mlp, np.zeros(n), x[:rows], case["order"])
elif case["kind"] == "taylor":
    call = lambda rows: feynmlp.taylor(mlp, x[:rows], case["order"], scheme=case["scheme"]).coefficients
elif case["kind"] in ("laplacian", "biharmonic"):
    call = lambda rows: getattr(feynmlp, case["kind"])(mlp, x[:rows])
elif case["kind"] == "operator":
    call = lambda rows: feynmlp.operator(mlp, x[:rows], {tuple(term): 1.0 for term in case["terms"]})
else:
    # TaylorExpansion's guards: the estimate is the one its plan method returns for the call.
    expansion = feynmlp.taylor(mlp, np.zeros(n), case["order"])
    if case["kind"] == "evaluate":
        def call(rows):
            estimates.append(expansion._evaluation_plan(rows)[1])
            return expansion(0.01 * x[:rows])
    else:
        def call(rows):
            k = case["k"] if rows else 1  # the warm-up, call(0), builds the gradient only
            estimates.append(expansion._tensor_plan(k)[1])
            return expansion.derivative_tensor(k)
# A warm-up far smaller than the measured call loads the kernels; what it allocates and frees
# stays in the process (malloc keeps it), so it must not be the measured call's own arrays.
# Evaluation compiles nothing and goes without one.
if case.get("warm", 3) is not None:
    call(case.get("warm", 3))
check = memory.check
memory.check = lambda *args, **kwargs: estimates.append(check(*args, **kwargs)) or estimates[-1]
# Freed memory that malloc keeps would be reused unseen by the measured call: give it back.
ctypes.CDLL("libc.so.6").malloc_trim(0)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = resident()["VmRSS"]
result = call(case["batch"])
print(json.dumps({"estimate": estimates[-1], "growth": resident()["VmHWM"] - before, "result": result.nbytes,
                  "budget": memory.budget()}))
'''

CASES = {
    # 400,000 directions against a 0.3 GB budget: the result is 15 MB, the series are not.
    "directional order 4, 400k directions, 0.3 GB": dict(kind="directional", order=4, n=32, width=64, outputs=1,
                                                        batch=400_000, budget="0.3"),
    "directional order 8, 200k directions, 0.3 GB": dict(kind="directional", order=8, n=32, width=64, outputs=1,
                                                        batch=200_000, budget="0.3"),
    "taylor order 2 (Hessian path), 20k points": dict(kind="taylor", order=2, n=32, width=64, outputs=1,
                                                     batch=20_000, scheme="auto"),
    "taylor order 3, top vertex, 2000 points": dict(kind="taylor", order=3, n=32, width=64, outputs=1, batch=2000,
                                                   scheme="auto"),
    "taylor order 3, top vertex, 4 outputs": dict(kind="taylor", order=3, n=32, width=64, outputs=4, batch=300,
                                                 scheme="top-vertex"),
    "taylor order 3, forward, 8 outputs": dict(kind="taylor", order=3, n=32, width=64, outputs=8, batch=1000,
                                              scheme="forward"),
    # e(H) of an order-4 expansion in 60 variables (635,376 monomials per displacement).
    "evaluation e(H), 60 variables, order 4, 40 displacements": dict(kind="evaluate", order=4, n=60, width=64,
                                                                     outputs=1, batch=40, warm=None),
    "derivative_tensor(4), 40 variables": dict(kind="tensor", order=4, k=4, n=40, width=64, outputs=1, batch=1,
                                               warm=0),
    "taylor order 4, top vertex, 60 points": dict(kind="taylor", order=4, n=32, width=64, outputs=1, batch=60,
                                                 scheme="auto"),
    "laplacian, 20k points": dict(kind="laplacian", n=32, width=64, outputs=1, batch=20_000),
    # A warm-up of 32 points (2048 values a layer) loads the derivatives' array form, which the
    # measured call's blocks use; 3 points would load only the element loop.
    "biharmonic, 2000 points, 0.05 GB": dict(kind="biharmonic", n=32, width=64, outputs=2, batch=2000, budget="0.05",
                                             warm=32),
    "operator of order 3 (downward-closed set), 20k points": dict(
        kind="operator", n=8, width=64, outputs=1, batch=20_000, terms=[[3, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]]),
    "second-order operator, 20k points": dict(kind="operator", n=8, width=64, outputs=1, batch=20_000,
                                              terms=[[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 2, 0, 0, 0, 0, 0]]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_peak_memory_stays_within_the_estimate(name):
    case = CASES[name]
    env = dict(os.environ)
    if "budget" in case:
        env["FEYNMLP_MAX_MEMORY_GB"] = case["budget"]
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(case)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["estimate"] <= measured["budget"]
    assert measured["growth"] <= 1.1 * measured["estimate"], measured
