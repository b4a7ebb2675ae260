"""SciPy's BLAS matrix product as a function the compiled kernels call through a pointer.

In: a dtype (float64 or float32). Out: dgemm or sgemm from scipy.linalg.cython_blas as a
ctypes function of 13 pointer-sized integers (the Fortran convention: every argument by
reference); product(), the one compiled call the kernels make of it, and at(), the address of
an array's element that product takes for each operand.

Why not Numba's own np.dot: it costs seconds of compile time on a cold cache. Why a function
passed as an argument: the kernel stays cacheable (the address is not baked into its code).

scipy.linalg.cython_blas is loaded from its file, without running scipy.linalg's __init__:
that imports most of SciPy's linear algebra (0.12 s of a first call) for a module that only
hands out function pointers. Where the file is not found (another SciPy
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


@once
def gemm(dtype) -> object:
    """dgemm or sgemm as a ctypes function of 13 pointer-sized integers."""
    name = {np.dtype(np.float64): "dgemm", np.dtype(np.float32): "sgemm"}[np.dtype(dtype)]
    return ctypes.CFUNCTYPE(None, *([ctypes.c_ssize_t] * 13))(address(name))


# The Fortran characters 'T' (a transposed operand) and 'N'. NumPy scalars, not Python ints:
# Numba types an int constant as a literal and would compile product once per combination.
TRANSPOSED = np.int32(ord("T"))
PLAIN = np.int32(ord("N"))


def scratch(dtype) -> tuple[np.ndarray, np.ndarray]:
    """The two small arrays product() passes its arguments through by reference: 8 int32
    (the transposition flags, sizes and leading dimensions) and 2 numbers of `dtype` (alpha
    and beta). One pair per thread: product overwrites them on every call."""
    return np.zeros(8, dtype=np.int32), np.zeros(2, dtype=dtype)


@njit(inline="always")
def at(array, offset):  # pragma: no cover - compiled
    """The address of element `offset` of a C-contiguous array, counted in its flat order."""
    return array.ctypes.data + offset * array.itemsize


@njit(nogil=True, inline="always")
def product(gemm, ints, scalars, transa, transb, m, n, k, a, lda, b, ldb, c, ldc):  # pragma: no cover - compiled
    """C = op(A) op(B) by `gemm` (from gemm()), column-major as BLAS has it: A, B and C are
    addresses (at(array, offset)); transa, transb are TRANSPOSED or PLAIN; ints and scalars
    are a scratch() pair, overwritten.

    The one place that spells out the Fortran calling convention, for every matrix product of
    the compiled kernels. Inlined into each kernel by Numba: a separately compiled callee
    would add its own compile to a cold first call."""
    ints[0] = transa
    ints[1] = transb
    ints[2] = m
    ints[3] = n
    ints[4] = k
    ints[5] = lda
    ints[6] = ldb
    ints[7] = ldc
    scalars[0] = 1.0
    scalars[1] = 0.0
    flags = ints.ctypes.data
    one = scalars.ctypes.data
    gemm(flags, flags + 4, flags + 8, flags + 12, flags + 16, one, a, flags + 20, b, flags + 24, one + scalars.itemsize,
         c, flags + 28)
