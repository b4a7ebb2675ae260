"""feynmlp.blas: SciPy's dgemm/sgemm as a function pointer, loaded without scipy.linalg.

Checked against NumPy's matrix product and against Numba's own lookup of the same function.
"""
from __future__ import annotations

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
