"""An activation's array form as C callbacks, for compiled kernels that need its derivatives
at the points of one neuron at a time.

In: an activation's kernel module (feynmlp.kernels.kernel_module) whose array form is split
into vector_prepare / NumPy ufuncs / vector_finish (VECTOR_UFUNCS). Out: `callbacks(module)`,
an ArrayForm of C function pointers: the module's vector_prepare_c and vector_finish_c
compiled as Numba C callbacks, and the inner loops of its float64 NumPy ufuncs;
`derivative_rows`, the compiled call that runs them over one row of values.

Why: the element loop calls exp or tanh one value at a time (PyPI's llvmlite has no vector
math library), and NumPy's SIMD ufuncs, called from Python, cost a release and a take of the
GIL each: two threads each pushing a block of points spent a third of their time waiting for
each other. Calling the ufuncs' own inner loops from the compiled kernel gets the SIMD speed
with the GIL released throughout, on the small rows of one neuron that stay in the L1 cache.

The inner loops come from the ufunc's loop table, fields of NumPy's documented C struct
PyUFuncObject (functions, data, ntypes, name, types), read with ctypes. The struct is checked
(its name and the d->d type codes where expected) before a loop is used; where anything
differs, callbacks() returns None and the caller keeps its NumPy path.
"""
from __future__ import annotations

import ctypes
from typing import NamedTuple

import numpy as np
from numba import njit

from .once import once

# A ufunc inner loop: void loop(char **args, npy_intp const *dimensions, npy_intp const *steps,
# void *data), taken as four pointer-sized integers (as blas.gemm takes its arguments).
LOOP = ctypes.CFUNCTYPE(None, *([ctypes.c_ssize_t] * 4))
PREPARE = ctypes.CFUNCTYPE(None, *([ctypes.c_ssize_t] * 3))
FINISH = ctypes.CFUNCTYPE(None, *([ctypes.c_ssize_t] * 4))


class ArrayForm(NamedTuple):
    """The C callbacks of one activation's array form. plan (count, 3) int64: per ufunc call,
    the address of its loop data, its source row (-1: the values themselves) and its target
    row; loop0 and loop1 are the loops of the first two calls (loop1 repeats loop0 when there
    is only one)."""
    prepare: object
    finish: object
    loop0: object
    loop1: object
    plan: np.ndarray


# PyUFuncObject after PyObject_HEAD (two pointers): int nin, nout, nargs, identity; then
# PyUFuncGenericFunction *functions; void *const *data; int ntypes, reserved1;
# const char *name; const char *types.
_HEAD = 2 * ctypes.sizeof(ctypes.c_void_p)
_POINTER = ctypes.sizeof(ctypes.c_void_p)
_FUNCTIONS = _HEAD + 4 * ctypes.sizeof(ctypes.c_int)
_DATA = _FUNCTIONS + _POINTER
_NTYPES = _DATA + _POINTER
_NAME = _NTYPES + 2 * ctypes.sizeof(ctypes.c_int)
_TYPES = _NAME + _POINTER


def ufunc_loop(ufunc: np.ufunc):
    """(LOOP function, data address) of `ufunc`'s float64 -> float64 inner loop, or None where
    the struct does not read as expected."""
    if not isinstance(ufunc, np.ufunc) or ufunc.nin != 1 or ufunc.nout != 1 or "d->d" not in ufunc.types:
        return None
    base = id(ufunc)
    ntypes = ctypes.c_int.from_address(base + _NTYPES).value
    name = ctypes.c_char_p.from_address(base + _NAME).value
    if name != ufunc.__name__.encode() or ntypes != len(ufunc.types):
        return None
    index = ufunc.types.index("d->d")
    codes = ctypes.string_at(ctypes.c_void_p.from_address(base + _TYPES).value, 2 * ntypes)
    double = np.dtype(np.float64).num
    if codes[2 * index] != double or codes[2 * index + 1] != double:
        return None
    functions = ctypes.c_void_p.from_address(base + _FUNCTIONS).value
    data = ctypes.c_void_p.from_address(base + _DATA).value
    loop = ctypes.c_void_p.from_address(functions + _POINTER * index).value
    loop_data = ctypes.c_void_p.from_address(data + _POINTER * index).value if data else None
    return LOOP(loop), loop_data or 0


@once
def callbacks(module) -> ArrayForm | None:
    """The ArrayForm of a kernel module, compiled once per process (Numba caches the callbacks
    on disk); None when the module has no array form or a ufunc loop cannot be read."""
    calls = getattr(module, "VECTOR_UFUNCS", ())
    if not calls or len(calls) > 2:
        return None
    loops, plan = [], []
    for name, source, target in calls:
        found = ufunc_loop(getattr(np, name, None))
        if found is None:
            return None
        loops.append(found[0])
        plan.append((found[1], source, target))
    from numba import cfunc, types

    pointer = types.CPointer(types.float64)
    prepare = cfunc(types.void(pointer, pointer, types.int64), cache=True)(module.vector_prepare_c)
    finish = cfunc(types.void(pointer, pointer, pointer, types.int64), cache=True)(module.vector_finish_c)
    # Kept on the ArrayForm: the ctypes functions must outlive every call through them.
    return ArrayForm(PREPARE(prepare.address), FINISH(finish.address), loops[0], loops[-1],
                     np.array(plan, dtype=np.int64))


@njit(nogil=True, inline="always")
def _call_loop(loop, data, source, target, n, scratch):  # pragma: no cover - compiled
    # scratch (int64, 5): the loop's args[2], dimensions[1] and steps[2], passed by address.
    scratch[0] = source
    scratch[1] = target
    scratch[2] = n
    scratch[3] = 8
    scratch[4] = 8
    address = scratch.ctypes.data
    loop(address, address + 16, address + 24, data)


@njit(nogil=True, inline="always")
def derivative_rows(values, rows, work, scratch, form):  # pragma: no cover - compiled
    """rows[m, k] = s^(m)(values[k]) / m! for one contiguous float64 row of values, by the
    array form `form`; work (at least VECTOR_ARRAYS rows of exactly len(values)) and rows
    (ORDER + 1, len(values)) are C-contiguous float64, scratch int64 (5,)."""
    n = values.shape[0]
    z = values.ctypes.data
    base = work.ctypes.data
    step = work.strides[0]
    form.prepare(z, base, n)
    for j in range(form.plan.shape[0]):
        source = z if form.plan[j, 1] < 0 else base + form.plan[j, 1] * step
        target = base + form.plan[j, 2] * step
        if j == 0:
            _call_loop(form.loop0, form.plan[j, 0], source, target, n, scratch)
        else:
            _call_loop(form.loop1, form.plan[j, 0], source, target, n, scratch)
    form.finish(z, base, rows.ctypes.data, n)
