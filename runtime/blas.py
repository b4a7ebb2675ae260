"""SciPy's BLAS matrix product as a function the compiled kernels call through a pointer.

In: a dtype (float64 or float32). Out: dgemm or sgemm from scipy.linalg.cython_blas as a
ctypes function of 13 pointer-sized integers (the Fortran convention: every argument by
reference), for kernels that compute their operands' addresses themselves; and product(), the
compiled call that kernels make of it.

Why not Numba's own np.dot: it costs seconds of compile time on a cold cache. Why a function
passed as an argument: the kernel stays cacheable (the address is not baked into its code).

scipy.linalg.cython_blas is loaded from its file, without running scipy.linalg's __init__:
that imports most of SciPy's linear algebra, 0.12 s of what was a 0.5 s first call, for a
module that only hands out function pointers. Where the file is not found (another SciPy
layout), the ordinary import is used.
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import numpy as np
from numba import njit

from .once import once

_MODULE = "scipy.linalg.cython_blas"


@once
def cython_blas():
    """The scipy.linalg.cython_blas module (loading it also loads SciPy's BLAS library).

    Loaded once per process, whatever the number of threads asking at once: the extension
    module refuses a second initialisation while the first is under way."""
    module = sys.modules.get(_MODULE)
    if module is not None:
        return module
    scipy = importlib.util.find_spec("scipy")  # finds the package without importing it
    if scipy is not None and scipy.origin:
        folder = Path(scipy.origin).parent / "linalg"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"cython_blas{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader(_MODULE, str(path))
                module = importlib.util.module_from_spec(importlib.util.spec_from_loader(_MODULE, loader))
                loader.exec_module(module)
                return module
    return importlib.import_module(_MODULE)


def address(name: str) -> int:
    """The address of cython_blas's function `name` (read from its __pyx_capi__ capsule)."""
    capsule = cython_blas().__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def operands(*arrays: np.ndarray) -> np.ndarray:
    """The data addresses of `arrays` (int64), for a kernel that passes them to gemm; read
    from __array_interface__, which costs a fraction of building .ctypes objects."""
    return np.array([array.__array_interface__["data"][0] for array in arrays], dtype=np.int64)


@once
def gemm(dtype) -> object:
    """dgemm or sgemm as a ctypes function of 13 pointer-sized integers."""
    name = {np.dtype(np.float64): "dgemm", np.dtype(np.float32): "sgemm"}[np.dtype(dtype)]
    return ctypes.CFUNCTYPE(None, *([ctypes.c_ssize_t] * 13))(address(name))


# The Fortran characters 'T' (a transposed operand) and 'N'. NumPy scalars, not Python ints:
# Numba types an int constant as a literal and would compile product once per combination.
TRANSPOSED = np.int32(84)
PLAIN = np.int32(78)


@njit(nogil=True, cache=True)
def product(gemm, ints, ints_at, alpha_at, beta_at, transa, transb, m, n, k, a, lda, b, ldb, c,
            ldc):  # pragma: no cover - compiled
    """C = alpha op(A) op(B) + beta C by `gemm` (from gemm()), column-major as BLAS has it: A,
    B, C, alpha and beta are addresses; the integers go by reference through ints (8 int32 at
    address ints_at, overwritten).

    The one place that spells out the Fortran calling convention, for every call site of the
    kernels (it compiles once, in 0.12 s on a cold cache)."""
    ints[0] = transa
    ints[1] = transb
    ints[2] = m
    ints[3] = n
    ints[4] = k
    ints[5] = lda
    ints[6] = ldb
    ints[7] = ldc
    gemm(ints_at, ints_at + 4, ints_at + 8, ints_at + 12, ints_at + 16, alpha_at, a, ints_at + 20, b, ints_at + 24,
         beta_at, c, ints_at + 28)
