"""feynmlp.array_form: NumPy's ufunc inner loops and the activations' array forms as C callbacks.

References: NumPy's own ufunc calls (the loops must give the same bits), and each kernel
module's `taylor_derivatives`, whose agreement with SymPy test_activations checks.
"""
import ctypes

import numpy as np
import pytest
from numba import njit

from feynmlp import array_form
from feynmlp.activation_names import BUILTIN_ACTIVATIONS
from feynmlp.kernels import kernel_module

EDGES = [0.0, -0.0, 1e-300, -1e-300, 5e-324, 0.5, -0.5, 20.0, -20.0, 709.8, -745.2, 1e300, -1e300,
         np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("ufunc", [np.tanh, np.exp, np.expm1, np.log1p, np.negative, np.sqrt])
def test_a_ufunc_loop_gives_the_ufuncs_bits(ufunc):
    loop, data = array_form.ufunc_loop(ufunc)
    x = np.concatenate([np.random.default_rng(1).normal(size=1000) * 30, EDGES])
    y = np.full_like(x, 123.0)
    pointers = np.array([x.ctypes.data, y.ctypes.data], dtype=np.int64)
    dimensions = np.array([x.size], dtype=np.int64)
    steps = np.array([8, 8], dtype=np.int64)
    loop(pointers.ctypes.data, dimensions.ctypes.data, steps.ctypes.data, data)
    with np.errstate(all="ignore"):
        want = ufunc(x)
    np.testing.assert_array_equal(y.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("candidate", [np.add, np.isnan, np.logical_not, len, "tanh"])
def test_what_is_not_a_unary_float64_ufunc_has_no_loop(candidate):
    # A binary ufunc, ones whose float64 loop returns bool or that have none, and non-ufuncs.
    assert array_form.ufunc_loop(candidate) is None


@njit
def _rows_of(values, order, form):
    rows = np.empty((order + 1, values.shape[0]))
    work = np.full((3, values.shape[0]), np.nan)
    scratch = np.zeros(5, dtype=np.int64)
    array_form.derivative_rows(values, rows, work, scratch, form)
    return rows


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
@pytest.mark.parametrize("order", [2, 4])
def test_callbacks_give_the_array_form_derivatives(name, order):
    module = kernel_module(name, order)
    form = array_form.callbacks(module)
    if module.VECTOR_ARRAYS == 0:
        assert form is None  # no array form: the callers keep their NumPy path
        return
    assert form is not None
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(size=500) * 5, EDGES[:-3]])
    with np.errstate(all="ignore"):
        got = _rows_of(values, order, form)
        want = np.empty((values.size, order + 1))
        module.taylor_derivatives(values, want)
        finite = np.isfinite(want)
        error = np.where(finite, np.abs(got.T - want), 0.0)
    np.testing.assert_array_equal(np.isfinite(got.T), finite)
    # To rounding, scaled by the largest derivative at the value (as the array form's own test).
    scale = np.max(np.where(finite, np.abs(want), 0.0), axis=1, keepdims=True)
    assert np.all(error <= 4e-16 * np.maximum(scale, np.abs(np.where(finite, want, 0.0))))
    assert array_form.callbacks(module) is form  # compiled once per process


def test_struct_offsets_match_the_ufunc_header():
    # name and ntypes read at the offsets callbacks() relies on (PyUFuncObject's fields).
    base = id(np.tanh)
    assert ctypes.c_char_p.from_address(base + array_form._NAME).value == b"tanh"
    assert ctypes.c_int.from_address(base + array_form._NTYPES).value == len(np.tanh.types)
