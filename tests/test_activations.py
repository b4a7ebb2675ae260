"""Activation derivatives (SymPy-derived through carriers, and as generated kernels) against
SymPy's plain `diff` of each activation's closed form."""
import math

import numpy as np
import pytest
import sympy as sp

from feynmlp.activation_names import BUILTIN_ACTIVATIONS
from feynmlp.codegen.activations import Z, custom_activation, get_activation
from feynmlp.errors import UnsupportedActivationError
from feynmlp.kernels import VECTOR_FORM_ARRAYS, kernel_module
from helpers.symbolic_reference import ACTIVATION_FORMULAS

POINTS = [-2.3, -0.7, 0.0, 0.4, 1.9]
# Each kernel module's element loop and its array form (NumPy ufuncs for exp, log1p, tanh),
# both against the same references.
FORMS = ["taylor_derivatives", "taylor_derivatives_vector"]


def derivatives_by(module, form, z, out):
    if form == "taylor_derivatives_vector":
        module.taylor_derivatives_vector(z, out, np.full((module.VECTOR_ARRAYS, z.size), np.nan))
    else:
        module.taylor_derivatives(z, out)


def reference_derivatives(formula, order, point):
    z = sp.Symbol("z", real=True)
    expr = formula(z)
    return [float(sp.diff(expr, z, m).subs(z, sp.Float(point, 30)).evalf(30)) / math.factorial(m)
            for m in range(order + 1)]


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_symbolic_derivatives_match_diff(name):
    spec = get_activation(name)
    order = 7
    derivs = spec.taylor_derivatives(order)
    for point in POINTS:
        carriers = {c.symbol: c.definition.subs(Z, sp.Float(point, 30)) for c in spec.carriers}
        got = [float(d.subs(carriers).subs(Z, sp.Float(point, 30)).evalf(30)) for d in derivs]
        want = reference_derivatives(ACTIVATION_FORMULAS[name], order, point)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
@pytest.mark.parametrize("order", [1, 4])
def test_generated_derivative_kernels(name, order, form):
    module = kernel_module(name, order)
    z = np.array(POINTS)
    out = np.empty((z.size, order + 1))
    derivatives_by(module, form, z, out)
    for row, point in zip(out, POINTS):
        np.testing.assert_allclose(row, reference_derivatives(ACTIVATION_FORMULAS[name], order, point),
                                   rtol=1e-12, atol=1e-14)


def test_tanh_derivatives_are_polynomials_in_tanh_and_sech2():
    spec = get_activation("tanh")
    t, u = (c.symbol for c in spec.carriers)
    derivs = spec.taylor_derivatives(6)
    assert derivs[1] == u
    assert all(d.free_symbols <= {t, u} for d in derivs)
    # With u = 1 - t^2 they are the classic polynomials in tanh: tanh'' / 2 = -t (1 - t^2).
    assert sp.expand(derivs[2].subs(u, 1 - t**2) - (-t * (1 - t**2))) == 0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "silu"])
def test_saturated_neurons_keep_relative_precision(name, form):
    # Far in saturation the derivatives are tiny; computing them as 1 - t*t or 1 - sigma
    # would cancel to garbage. Reference: SymPy's diff of the closed form at 40 digits.
    order = 4
    module = kernel_module(name, order)
    points = np.array([-25.0, -12.0, 12.0, 25.0])
    out = np.empty((points.size, order + 1))
    derivatives_by(module, form, points, out)
    for row, point in zip(out, points):
        z = sp.Symbol("z", real=True)
        expr = ACTIVATION_FORMULAS[name](z)
        for m in range(1, order + 1):
            want = float(sp.diff(expr, z, m).subs(z, sp.Integer(int(point))).evalf(40)) / math.factorial(m)
            if want != 0.0:
                assert abs(row[m] - want) <= 1e-12 * abs(want), (name, point, m, row[m], want)


@pytest.mark.parametrize("form", FORMS)
def test_tanh_from_one_exponential_is_exact_across_its_branches(form):
    # The tanh kernel takes t and u from e^(-2|z|), through expm1 below |z| = 1 (its array
    # form: t from NumPy's tanh): each of t, u, t'' / 2 within a few ulps (relative) of SymPy
    # at 40 digits on both sides of the switch, near 0 (where 1 - e^(-2|z|) would cancel) and
    # far out; tanh(-0.0) keeps its sign.
    order = 2
    module = kernel_module("tanh", order)
    points = np.array([1e-300, -1e-12, 3e-9, -0.01, 0.3, np.nextafter(1.0, 0.0), 1.0, -1.0,
                       np.nextafter(1.0, 2.0), 1.7, -6.0, 19.0, -300.0])
    out = np.empty((points.size, order + 1))
    derivatives_by(module, form, points, out)
    for row, point in zip(out, points):
        # Closed forms at 40 digits (1 - tanh^2 would cancel to 0 in SymPy too, far out).
        z = sp.Float(float(point), 40)
        for m, want in enumerate([sp.tanh(z), sp.sech(z)**2, -sp.tanh(z) * sp.sech(z)**2]):
            want = float(want.evalf(40))
            assert abs(row[m] - want) <= 4e-16 * abs(want), (point, m, row[m], want)
    derivatives_by(module, form, np.array([-0.0]), out[:1])
    assert out[0, 0] == 0.0 and np.signbit(out[0, 0]) and out[0, 1] == 1.0


def test_custom_activation_derivatives():
    y = sp.Symbol("y")
    spec = custom_activation(y * sp.tanh(y) + sp.sin(y) / 3)
    derivs = spec.taylor_derivatives(5)
    for point in POINTS:
        got = [float(d.subs(Z, point)) for d in derivs]
        want = reference_derivatives(lambda z: z * sp.tanh(z) + sp.sin(z) / 3, 5, point)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("expr", [sp.Symbol("a") * sp.Symbol("b"), sp.Integer(3),
                                  sp.Max(sp.Symbol("x"), 0), sp.Abs(sp.Symbol("x"))])
def test_custom_activation_refused(expr):
    with pytest.raises(UnsupportedActivationError):
        custom_activation(expr)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "hardtanh", "relu6"])
def test_relu_like_refused_beyond_first_order(name):
    with pytest.raises(UnsupportedActivationError, match="piecewise linear"):
        kernel_module(name, 2)
    with pytest.raises(UnsupportedActivationError, match="piecewise linear"):
        get_activation(name).taylor_derivatives(3)
    module = kernel_module(name, 1)
    out = np.empty((2, 2))
    module.taylor_derivatives(np.array([-0.5, 0.5]), out)
    torch_like = {"relu": [[0, 0], [0.5, 1]], "leaky_relu": [[-0.005, 0.01], [0.5, 1]],
                  "hardtanh": [[-0.5, 1], [0.5, 1]], "relu6": [[0, 0], [0.5, 1]]}
    np.testing.assert_allclose(out, torch_like[name])


def test_unknown_activation_names_the_value():
    with pytest.raises(UnsupportedActivationError, match="'swoosh'"):
        get_activation("swoosh")


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_array_form_fits_the_memory_estimate(name, order):
    # The operators' memory check counts VECTOR_FORM_ARRAYS float64 rows per value for the
    # array form: its work rows and the float64 copy of a float32 z.
    assert kernel_module(name, order).VECTOR_ARRAYS + 1 <= VECTOR_FORM_ARRAYS


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_array_form_agrees_with_the_element_loop_on_long_arrays(name):
    # Many values of every magnitude, float32 and non-finite ones included: the array form
    # equals the element loop to rounding (scaled by the largest derivative of the value, since
    # a derivative polynomial near one of its roots cancels in both), and NaN/inf where it does.
    rng = np.random.default_rng(7)
    z = np.concatenate([rng.normal(size=3000) * 4, 10.0 ** rng.uniform(-300, 2.8, 1000) * rng.choice([-1, 1], 1000),
                        [0.0, -0.0, 745.0, -745.0, 1e300, -1e300, np.inf, -np.inf, np.nan]])
    for order in (2, 4):
        module = kernel_module(name, order)
        for dtype in (np.float64, np.float32):
            loop, array = np.empty((z.size, order + 1), dtype), np.empty((z.size, order + 1), dtype)
            with np.errstate(all="ignore"):
                values = z.astype(dtype)
                module.taylor_derivatives(values, loop)
                derivatives_by(module, "taylor_derivatives_vector", values, array)
                finite = np.isfinite(loop)
                error = np.where(finite, np.abs(array - loop), 0.0)
            np.testing.assert_array_equal(np.isnan(loop), np.isnan(array))
            np.testing.assert_array_equal(array[~finite & ~np.isnan(loop)], loop[~finite & ~np.isnan(loop)])
            scale = np.max(np.where(finite, np.abs(loop), 0.0), axis=1, keepdims=True)
            tolerance = 1e-14 if dtype == np.float64 else 1e-6
            assert np.all(error <= tolerance * scale), (name, order, dtype, z[np.argmax(np.max(error / np.where(scale > 0, scale, 1), axis=1))])
