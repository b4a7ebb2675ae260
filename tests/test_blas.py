"""feynmlp.blas: SciPy's dgemm/sgemm as a function pointer, loaded without scipy.linalg.

Checked against NumPy's matrix product and against Numba's own lookup of the same function.
"""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest

from feynmlp import blas


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-14), (np.float32, 1e-5)])
def test_gemm_is_the_matrix_product(dtype, rtol):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)).astype(dtype), rng.normal(size=(7, 3)).astype(dtype)
    c = np.full((5, 3), np.nan, dtype=dtype)
    # Row-major C = A B is column-major C^T = B^T A^T: m = 3, n = 5, k = 7, no transposes.
    ints = np.array([ord("N"), ord("N"), 3, 5, 7], dtype=np.int32)
    scalars = np.array([1.0, 0.0], dtype=dtype)
    at = ints.ctypes.data
    blas.gemm(dtype)(at, at + 4, at + 8, at + 12, at + 16, scalars.ctypes.data, b.ctypes.data, at + 8,
                     a.ctypes.data, at + 16, scalars.ctypes.data + scalars.itemsize, c.ctypes.data, at + 8)
    np.testing.assert_allclose(c, a @ b, rtol=rtol)


def test_loaded_without_scipy_linalg_and_same_as_numbas_lookup():
    code = ("import sys; from feynmlp import blas; a = blas.address('dgemm'); "
            "print('scipy.linalg' in sys.modules); "
            "from numba.extending import get_cython_function_address as lookup; "
            "print(a == lookup('scipy.linalg.cython_blas', 'dgemm'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


@pytest.mark.parametrize("transposed_a, transposed_b", [(False, False), (True, False), (False, True), (True, True)])
def test_product_from_compiled_code_is_the_matrix_product(transposed_a, transposed_b):
    # blas.product as the kernels call it: from compiled code, addresses (blas.at) and leading
    # dimensions of sub-blocks of larger arrays, alpha = 1 and beta = 0, the result into the middle of C.
    from numba import njit

    @njit
    def call(gemm, transa, transb, m, n, k, a, a_at, lda, b, b_at, ldb, c, c_at, ldc):
        ints, scalars = np.zeros(8, dtype=np.int32), np.zeros(2)
        blas.product(gemm, ints, scalars, transa, transb, m, n, k, blas.at(a, a_at), lda, blas.at(b, b_at), ldb,
                     blas.at(c, c_at), ldc)

    rng = np.random.default_rng(1)
    m, n, k = 4, 6, 5
    # Column-major op(A) is m x k: stored as a row-major (k, m) array when plain, (m, k) when
    # transposed; both inside wider arrays, so that the leading dimension is not the width.
    a_big = rng.normal(size=(9, 11))
    b_big = rng.normal(size=(9, 13))
    c_big = np.full((10, 12), np.nan)
    a_rows, a_cols = (m, k) if transposed_a else (k, m)
    b_rows, b_cols = (k, n) if transposed_b else (n, k)
    a_cm = a_big[1:1 + a_rows, 2:2 + a_cols]  # row-major view: column-major matrix of a_cols x a_rows
    b_cm = b_big[3:3 + b_rows, 1:1 + b_cols]
    op_a = a_cm if transposed_a else a_cm.T   # column-major op(A) = m x k
    op_b = b_cm if transposed_b else b_cm.T   # k x n
    expected = op_a @ op_b                    # column-major C, m x n: row-major (n, m) is its transpose
    call(blas.gemm(np.float64), blas.TRANSPOSED if transposed_a else blas.PLAIN,
         blas.TRANSPOSED if transposed_b else blas.PLAIN, m, n, k,
         a_big, 1 * 11 + 2, 11, b_big, 3 * 13 + 1, 13, c_big, 2 * 12 + 1, 12)
    np.testing.assert_allclose(c_big[2:2 + n, 1:1 + m], expected.T, rtol=1e-14)
    untouched = np.ones(c_big.shape, dtype=bool)
    untouched[2:2 + n, 1:1 + m] = False
    assert np.isnan(c_big[untouched]).all()


def _mkl_installed() -> bool:
    try:
        importlib.metadata.distribution("mkl")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_mkl = pytest.mark.skipif(not _mkl_installed(),
                               reason="the mkl package is not installed (pip install 'feynmlp[mkl]', x86-64 only)")

# A child process per BLAS choice: library() is read once per process. It prints the
# Laplacian (fused kernels), and the order-2 and order-3 derivative tensors of feynmlp.taylor
# (its Hessian and top-vertex kernels), all of which call blas.gemm; and whether any of it
# imported scipy.linalg.
_CHILD = '''
import json, sys
import numpy as np
import feynmlp
from feynmlp import blas
sys.path.insert(0, {tests!r})
from helpers.networks import random_mlp
rng = np.random.default_rng(4)
mlp = random_mlp(rng, (5, 24, 16, 2), "tanh")
points = rng.normal(size=(40, 5))
expansion = feynmlp.taylor(mlp, points[:3], 3, scheme={scheme!r})
print(json.dumps({{"library": blas.library(), "laplacian": feynmlp.laplacian(mlp, points).tolist(),
                  "second": expansion.derivative_tensor(2).tolist(), "third": expansion.derivative_tensor(3).tolist(),
                  "scipy.linalg": "scipy.linalg" in sys.modules}}))
'''


@pytest.mark.parametrize("choice", ["scipy", pytest.param("mkl", marks=needs_mkl)])
@pytest.mark.parametrize("scheme", ["auto", "top-vertex"])
def test_each_blas_gives_the_derivatives(choice, scheme):
    import os
    from pathlib import Path

    from helpers.networks import random_mlp
    from helpers.torch_reference import assert_relative_close, torch_derivative_tensors, torch_network

    tests = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", _CHILD.format(tests=tests, scheme=scheme)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "FEYNMLP_BLAS": choice})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["library"] == choice
    assert not got["scipy.linalg"], "scipy.linalg's __init__ ran (0.08 s of a first call)"
    rng = np.random.default_rng(4)
    mlp = random_mlp(rng, (5, 24, 16, 2), "tanh")
    points = rng.normal(size=(40, 5))
    f = torch_network(mlp)
    for p in (0, 17, 39):  # the first block of each thread's share, a middle one, the last (short) one
        hessian = torch_derivative_tensors(f, points[p], 2)[2]
        assert_relative_close(np.array(got["laplacian"][p]), np.einsum("oii->o", hessian), 1e-10, f"laplacian {p}")
    for p in range(3):
        tensors = torch_derivative_tensors(f, points[p], 3)
        assert_relative_close(np.array(got["second"][p]), tensors[2], 1e-10, f"second derivatives {p}")
        assert_relative_close(np.array(got["third"][p]), tensors[3], 1e-10, f"third derivatives {p}")


def test_an_unknown_or_missing_blas_is_named(monkeypatch):
    from feynmlp.errors import FeynmlpError

    try:
        monkeypatch.setenv("FEYNMLP_BLAS", "openblas64")
        blas.library.cache_clear()
        with pytest.raises(FeynmlpError, match="FEYNMLP_BLAS='openblas64'.*auto, mkl, scipy"):
            blas.library()
        monkeypatch.setenv("FEYNMLP_BLAS", "mkl")
        monkeypatch.setattr(blas, "mkl", lambda: None)
        blas.library.cache_clear()
        with pytest.raises(FeynmlpError, match="pip install 'feynmlp\\[mkl\\]'"):
            blas.library()
    finally:
        monkeypatch.undo()
        blas.library.cache_clear()
