"""The BLAS matrix product as a function the compiled kernels call through a pointer.

In: a dtype (float64 or float32). Out: dgemm or sgemm as a ctypes function of 13
pointer-sized integers (the Fortran convention: every argument by reference); product(), the
one compiled call the kernels make of it, and at(), the address of an array's element that
product takes for each operand.

Which BLAS (FEYNMLP_BLAS): SciPy's (scipy.linalg.cython_blas, OpenBLAS in SciPy's wheels), or
Intel's MKL where the `mkl` package is installed (the extra feynmlp[mkl]); "auto", the default,
takes MKL when it is there. Why MKL: the kernels' products have a short inner dimension (the
layer width, 64 to 128), where OpenBLAS runs well below its peak; on an Intel Xeon with
AVX-512, MKL's dgemm of a 64 x 64 matrix by a 64 x 4352 block ran at 86 GFLOP/s on one core,
OpenBLAS's at 60. MKL runs in its sequential threading layer: feynmlp's own threads share the
cores.

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
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
from numba import njit

from .errors import FeynmlpError
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
    """dgemm or sgemm of library() as a ctypes function of 13 pointer-sized integers."""
    name = {np.dtype(np.float64): "dgemm", np.dtype(np.float32): "sgemm"}[np.dtype(dtype)]
    if library() == "mkl":
        pointer = ctypes.cast(getattr(mkl(), name), ctypes.c_void_p).value
    else:
        pointer = address(name)
    return ctypes.CFUNCTYPE(None, *([ctypes.c_ssize_t] * 13))(pointer)


CHOICES = ("auto", "mkl", "scipy")


@once
def library() -> str:
    """"mkl" or "scipy": the BLAS whose gemm the kernels call, by FEYNMLP_BLAS (module
    docstring), read once per process. Loads it."""
    choice = os.environ.get("FEYNMLP_BLAS", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise FeynmlpError(f"FEYNMLP_BLAS={os.environ['FEYNMLP_BLAS']!r} is not a BLAS feynmlp knows: use one of "
                           f"{', '.join(CHOICES)} (auto, the default, takes MKL where the mkl package is installed)")
    # SciPy's BLAS module is loaded whichever is chosen: Numba's own BLAS check imports it
    # when it loads its array functions, and without this light loading that import runs
    # scipy.linalg's __init__ (84 ms of a first call).
    cython_blas()
    if choice != "scipy" and mkl() is not None:
        return "mkl"
    if choice == "mkl":
        raise FeynmlpError("FEYNMLP_BLAS=mkl, but MKL's runtime library (the mkl package) is not installed, or "
                           "refused 32-bit integers: install it with pip install 'feynmlp[mkl]', or unset "
                           "FEYNMLP_BLAS")
    return "scipy"


@once
def mkl():
    """MKL's runtime library (libmkl_rt of the installed `mkl` package), in its sequential
    threading layer with 32-bit integers, or None where it is not installed or will not take
    32-bit integers (the kernels pass int32 sizes)."""
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        # libmkl_rt.so.N on Linux, mkl_rt.N.dll on Windows (beside an import library, .lib).
        if file.name.startswith(("libmkl_rt.", "mkl_rt.")) and not file.name.endswith(".lib"):
            path = Path(file.locate())
            if path.is_file():
                runtime = ctypes.CDLL(str(path))
                # Both settings hold only when made before MKL's first computation in the
                # process; where another library got there first, the interface layer may
                # already be 64-bit (refused here) and the thread count is left to
                # threads.single_blas_thread().
                if runtime.MKL_Set_Interface_Layer(_MKL_INTERFACE_LP64) != _MKL_INTERFACE_LP64:
                    return None
                runtime.sequential = runtime.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL) == \
                    _MKL_THREADING_SEQUENTIAL
                return runtime
    return None


def starts_threads() -> bool:
    """Whether library()'s gemm may start threads of its own (then callers hold it to one
    thread with threads.single_blas_thread()); not MKL in its sequential layer."""
    return not (library() == "mkl" and mkl().sequential)


# mkl_service.h: MKL_INTERFACE_LP64, MKL_THREADING_SEQUENTIAL.
_MKL_INTERFACE_LP64 = 0
_MKL_THREADING_SEQUENTIAL = 1


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
