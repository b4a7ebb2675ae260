"""Hardening of the model side: activation derivatives far out and at every order, MLP objects
that pickle and cross process boundaries, the rules diagram's layout, from_torch refusals of
bounded length, and sympy.Lambda activations.

References: truncated power series evaluated in mpmath at 400 digits (written here, sharing
nothing with the carriers and polynomials of feynmlp.codegen), the direct call of the model,
matplotlib's own text extents, and closed forms.
"""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from feynmlp.activation_names import BUILTIN_ACTIVATIONS
from feynmlp.kernels import kernel_module


# ----------------------------------------------------------------------------------------
# Activation derivatives s^(m)(z)/m!, m = 0..16, far out and everywhere else.
# ----------------------------------------------------------------------------------------

def _series_mul(a, b):
    return [mpmath.fsum(a[j] * b[k - j] for j in range(k + 1)) for k in range(len(a))]


def _series_reciprocal(a):
    c = [1 / a[0]]
    for k in range(1, len(a)):
        c.append(-mpmath.fsum(a[j] * c[k - j] for j in range(1, k + 1)) / a[0])
    return c


def _series_exp(a):
    # b' = a' b, coefficient by coefficient.
    b = [mpmath.exp(a[0])]
    for k in range(1, len(a)):
        b.append(mpmath.fsum(j * a[j] * b[k - j] for j in range(1, k + 1)) / k)
    return b


def _series_integral(value, derivative):
    return [value] + [derivative[k - 1] / k for k in range(1, len(derivative) + 1)]


def reference_coefficients(name: str, z0: float, order: int) -> list[float]:
    """s^(m)(z0)/m! for m = 0..order, from power-series arithmetic at 400 digits.

    400 digits leave every cancellation of these formulas (up to e^(-2|z|) against 1 for
    |z| <= 300 or so) far below double precision; beyond, the terms that would cancel are
    below any float, and mpmath's exponent range holds e^(-z^2/2) at z = 1e308.
    """
    with mpmath.workdps(400):
        n = order + 1
        z = [mpmath.mpf(z0), mpmath.mpf(1)] + [mpmath.mpf(0)] * (n - 2)
        if name == "tanh":  # 1 - 2 / (1 + e^(2z))
            r = _series_reciprocal([v + (k == 0) for k, v in enumerate(_series_exp([2 * v for v in z]))])
            s = [1 - 2 * r[0]] + [-2 * v for v in r[1:]]
        elif name in ("sigmoid", "silu", "softplus"):
            sigma = _series_reciprocal([v + (k == 0) for k, v in enumerate(_series_exp([-v for v in z]))])
            if name == "sigmoid":
                s = sigma
            elif name == "silu":
                s = _series_mul(z, sigma)
            else:  # softplus' = sigmoid
                s = _series_integral(mpmath.log1p(mpmath.exp(z[0])), sigma[:-1])
        elif name == "gelu":  # z Phi(z), Phi' = e^(-z^2/2) / sqrt(2 pi)
            density = [v / mpmath.sqrt(2 * mpmath.pi) for v in _series_exp([-v / 2 for v in _series_mul(z, z)])]
            if abs(z0) < 1e6:
                cdf0 = mpmath.erfc(-z[0] / mpmath.sqrt(2)) / 2
            elif z0 > 0:
                cdf0 = 1 - density[0] / z[0]
            else:  # Mills' ratio (mpmath's erfc overflows a float in its own checks out here)
                cdf0 = density[0] / -z[0] * (1 - 1 / z[0] ** 2 + 3 / z[0] ** 4)
            s = _series_mul(z, _series_integral(cdf0, density[:-1]))
        elif name in ("sin", "cos"):
            shift = 0 if name == "sin" else 1
            s = [mpmath.sin(z[0] + (k + shift) * mpmath.pi / 2) / math.factorial(k) for k in range(n)]
        elif name == "exp":
            s = [mpmath.exp(z[0]) / math.factorial(k) for k in range(n)]
        elif name == "identity":
            s = z
        else:
            raise AssertionError(name)
        return [float(v) for v in s]


def _kernel_values(name, order, points, dtype):
    z = np.asarray(points, dtype=dtype)
    out = np.empty((z.size, order + 1), dtype=dtype)
    kernel_module(name, order).taylor_derivatives(z, out)
    return z, out


def _far_points(dtype):
    big = [1e10, 1e100, 1e160, 1e300, float(np.finfo(np.float64).max)] if dtype == np.float64 else \
        [1e10, 1e20, 1e30, float(np.finfo(np.float32).max)]
    return big + [-v for v in big]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", [4, 16])
@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_derivatives_far_out_are_the_limit_not_nan(name, order, dtype):
    # Far out every derivative of order >= 2 of gelu and silu is 0 (a Gaussian or e^-|z|
    # times a polynomial). The kernels must give that 0, not 0 * inf = NaN from a power of z
    # that overflows. exp's own overflow to inf is its true value rounded, not a defect.
    eps, tiny = np.finfo(dtype).eps, float(np.finfo(dtype).tiny)
    z, out = _kernel_values(name, order, _far_points(dtype), dtype)
    for point, row in zip(z.tolist(), out.tolist()):
        want = [float(dtype(v)) for v in reference_coefficients(name, point, order)]
        for m, (got, expected) in enumerate(zip(row, want)):
            assert not math.isnan(got), (name, order, point, m)
            if math.isinf(expected):
                assert got == expected, (name, point, m, got, expected)
            else:
                assert abs(got - expected) <= 8 * eps * abs(expected) + tiny, (name, point, m, got, expected)


# Near 0, moderate, and around the points where e^(-z^2/2) (gelu, |z| ~ 38.6) and e^-|z|
# (silu, |z| ~ 745) underflow, on both sides.
# Ulps of the bound below, per activation. The carrier polynomials in g = sigma(z), h =
# sigma(-z) of sigmoid, softplus and SiLU cancel near z = 0 at high orders (measured: up to
# 285 ulps of the scale at order 16), and GELU's polynomial factor (a difference of Hermite
# polynomials in monomial form) cancels for |z| < 2 sqrt(m) (measured: 45 ulps at z = 5.5,
# order 16); the others stay within 2.
ULPS = {"sigmoid": 512, "softplus": 512, "silu": 512, "gelu": 128}
EVERYWHERE = [0.0, 1e-300, -1e-300, 1e-8, -1e-3, 0.3, -0.9, 1.7, 2.0, -3.1, 5.5, -8.0, 12.0, -20.0, 30.0,
              -36.0, 37.9, -38.3, 41.0, -45.0, 100.0, -700.0, 720.0, 760.0, -801.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_derivatives_of_every_order_are_exact_to_rounding(name, dtype):
    # Each s^(m)(z)/m!, m = 0..16 (the order-16 kernel computes them all), against the
    # 400-digit series. The bound is mixed: a few ulps of the value plus the change a few ulps
    # of z make (|z s_m'|, which covers the rounding of z^2 in e^(-z^2/2) and of z itself),
    # plus, for |z| <= 8, a few ulps of the order's scale M_m = max |s_m| over those points:
    # near a zero of s_m (e.g. sigmoid's even derivatives at 0) the carriers' own rounding
    # shows as an absolute error of that size. Results below the smallest normal float are
    # only required to be that small.
    order, scale_radius = 16, 8.0
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny)
    points = np.asarray(EVERYWHERE, dtype=dtype)
    if name == "exp":  # exp(z) itself overflows there: its true value rounded, not a defect
        points = points[points < math.log(float(np.finfo(dtype).max))]
    z, out = _kernel_values(name, order, points, dtype)
    want = np.array([reference_coefficients(name, point, order + 1) for point in z.tolist()])
    slope = np.abs(z.astype(np.float64))[:, None] * np.abs(want[:, 1:]) * np.arange(1, order + 2)
    near = np.abs(z.astype(np.float64)) <= scale_radius
    scale = np.abs(want[near, :-1]).max(axis=0)
    bound = ULPS.get(name, 8) * eps * (np.abs(want[:, :-1]) + slope + np.where(near[:, None], scale, 0.0)) + tiny
    error = np.abs(out.astype(np.float64) - want[:, :-1])
    assert not np.isnan(out).any()
    bad = np.argwhere(~(error <= bound))
    assert bad.size == 0, [(float(z[i]), int(m), float(out[i, m]), want[i, m], float(error[i, m] / bound[i, m]))
                           for i, m in bad[:8]]


@pytest.mark.parametrize("dtype, far", [(np.float64, 1e160), (np.float32, 1e30)])
@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_taylor_through_a_far_out_neuron_is_finite(name, dtype, far):
    # f(x) = 2 s(x + b) with |b| huge: its coefficients at x = 0 are 2 s^(m)(b)/m!, i.e.
    # (2b, 2, 0, 0) or (~0, 0, 0, 0); taylor and directional refuse NaN coefficients.
    import feynmlp

    for bias in (far, -far):
        mlp = feynmlp.MLP([np.array([[1.0]]), np.array([[2.0]])], [np.array([bias]), np.array([0.0])],
                          activation=name)
        want = 2 * np.array(reference_coefficients(name, float(dtype(bias)), 3))
        got = feynmlp.taylor(mlp, np.zeros(1), 3, dtype=dtype).coefficients[0]
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=0)
        along = feynmlp.directional(mlp, np.zeros(1), np.ones(1), 3, dtype=dtype)[0]
        np.testing.assert_allclose(along, want, rtol=4 * np.finfo(dtype).eps, atol=0)


# ----------------------------------------------------------------------------------------
# MLP objects pickle (in memory) and cross process boundaries once they have been called.
# ----------------------------------------------------------------------------------------

def _small_mlp(activation, seed=0, sizes=(3, 4, 4, 2)):
    import feynmlp

    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=(sizes[i + 1], sizes[i])) * 0.7 for i in range(len(sizes) - 1)]
    biases = [rng.normal(size=sizes[i + 1]) * 0.3 for i in range(len(sizes) - 1)]
    return feynmlp.MLP(weights, biases, activation=activation)


def _custom_activations():
    import sympy

    y = sympy.Symbol("y")
    return {"builtin": "tanh", "custom": y * sympy.tanh(y) + sympy.sin(y) / 3,
            "mixed": [sympy.erf(y) + y / 4, "silu"]}


@pytest.mark.parametrize("kind", ["builtin", "custom", "mixed"])
def test_called_models_pickle_and_give_the_same_numbers(kind):
    import pickle

    import feynmlp

    mlp = _small_mlp(_custom_activations()[kind])
    x = np.random.default_rng(1).normal(size=(5, 3))
    before = mlp(x)  # builds (and caches) the NumPy functions of custom activations
    series = feynmlp.taylor(mlp, x[0], 3).coefficients
    np.testing.assert_allclose(before, _reference_forward(mlp, x), rtol=1e-13, atol=1e-14)
    copy = pickle.loads(pickle.dumps(mlp))
    np.testing.assert_array_equal(copy(x), before)
    np.testing.assert_array_equal(feynmlp.taylor(copy, x[0], 3).coefficients, series)
    np.testing.assert_array_equal(feynmlp.directional(copy, x[0], x[1], 4),
                                  feynmlp.directional(mlp, x[0], x[1], 4))
    assert copy.layer_sizes == mlp.layer_sizes and repr(copy) == repr(mlp)
    assert all(np.array_equal(a, b) for a, b in zip(copy.weights, mlp.weights))
    # A pickled copy pickles again, after being called itself.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(copy))(x), before)


def _reference_forward(mlp, x):
    """The network point by point: affine maps in Python floats, activations by SymPy evalf."""
    import sympy

    y = sympy.Symbol("y")
    named = {"tanh": sympy.tanh(y), "silu": y / (1 + sympy.exp(-y))}
    rows = []
    for point in x.tolist():
        a = point
        for layer, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
            z = [sum(wij * aj for wij, aj in zip(row, a)) + bi for row, bi in zip(w.tolist(), b.tolist())]
            if layer == mlp.depth:
                rows.append(z)
                break
            activation = mlp.hidden_activations[layer]
            expr = named[activation] if isinstance(activation, str) else activation
            (symbol,) = expr.free_symbols
            a = [float(expr.subs(symbol, sympy.Float(v, 30)).evalf(30)) for v in z]
    return np.array(rows)


def _forward_chunk(args):
    mlp, chunk = args
    return mlp(chunk)


@pytest.mark.parametrize("kind", ["builtin", "custom"])
def test_a_called_model_maps_over_a_spawned_pool(kind):
    import multiprocessing

    mlp = _small_mlp(_custom_activations()[kind], sizes=(3, 4, 2))
    x = np.random.default_rng(2).normal(size=(12, 3))
    direct = mlp(x)
    chunks = np.array_split(x, 4)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_forward_chunk, [(mlp, chunk) for chunk in chunks])
    np.testing.assert_array_equal(np.concatenate(results), direct)


# ----------------------------------------------------------------------------------------
# The rules PNG: the title above the first row of panels at every order.
# ----------------------------------------------------------------------------------------

def _drawn_rules_figure(order, tmp_path, monkeypatch):
    """Run `feynmlp rules --order K --format png` and return the figure it saved."""
    import argparse

    from matplotlib.figure import Figure

    from feynmlp.codegen import rules

    saved = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    out = tmp_path / f"rules{order}.png"
    parser = argparse.ArgumentParser()
    rules.add_arguments(parser)
    args = parser.parse_args(["--order", str(order), "--format", "png", "--out", str(out), "--depth", "2"])
    assert rules.run(args) == 0 and out.stat().st_size > 0
    (figure,) = saved
    return figure


@pytest.mark.parametrize("order", range(1, 8))
def test_rules_png_title_clears_the_first_row(order, tmp_path, monkeypatch):
    figure = _drawn_rules_figure(order, tmp_path, monkeypatch)
    renderer = figure.canvas.get_renderer()
    title = figure._suptitle.get_window_extent(renderer)
    axes = figure.get_axes()
    top_row = max(ax.get_position().y1 for ax in axes)
    first_row = [ax for ax in axes if ax.get_position().y1 == top_row]
    # Everything drawn in a first-row panel (its caption, f_o, the arrows) lies below the title,
    # and the title lies inside the figure.
    highest = max(ax.get_tightbbox(renderer).y1 for ax in first_row)
    captions = [ax.title.get_window_extent(renderer) for ax in first_row]
    assert all(not title.overlaps(box) for box in captions), (order, title, captions)
    assert highest <= title.y0, (order, highest, title.y0)
    assert title.y1 <= figure.bbox.y1 and title.x0 >= 0 and title.x1 <= figure.bbox.x1
    # The legend line at the bottom stays below the last row in the same way.
    (legend,) = [t for t in figure.texts if t.get_text().startswith("blue: input propagator")]
    lowest = min(ax.get_tightbbox(renderer).y0 for ax in axes)
    assert legend.get_window_extent(renderer).y1 <= lowest, order


# ----------------------------------------------------------------------------------------
# from_torch refusals: one line of bounded length, whatever was passed.
# ----------------------------------------------------------------------------------------

MESSAGE_LIMIT = 500  # characters; a refusal names what was given and the fix, nothing more


def _refusal(call):
    from feynmlp.errors import FeynmlpError

    with pytest.raises(FeynmlpError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) <= MESSAGE_LIMIT, (len(message), message[:1000])
    return message


def test_from_torch_of_a_state_dict_says_what_it_got_and_how_to_fix_it():
    import feynmlp
    from torch import nn

    module = nn.Sequential(nn.Linear(30, 50), nn.Tanh(), nn.Linear(50, 2))
    message = _refusal(lambda: feynmlp.MLP.from_torch(module.state_dict()))
    for fragment in ("OrderedDict", "state_dict", "4 tensors", "'0.weight'", "load_state_dict",
                     "feynmlp.MLP(weights, biases"):
        assert fragment in message, (fragment, message)
    assert "tensor(" not in message
    # The fix it names works: the module with its state dict loaded.
    rebuilt = nn.Sequential(nn.Linear(30, 50), nn.Tanh(), nn.Linear(50, 2))
    rebuilt.load_state_dict(module.state_dict())
    x = np.random.default_rng(3).normal(size=(4, 30))
    with_torch = module.double()(__import__("torch").as_tensor(x)).detach().numpy()
    np.testing.assert_allclose(feynmlp.MLP.from_torch(rebuilt)(x), with_torch, rtol=1e-12, atol=1e-14)


def _refused_inputs():
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(40, 40) for _ in range(30)])

        def forward(self, x):
            return x

    big_block = nn.TransformerEncoderLayer(d_model=64, nhead=4)
    return [
        ("custom module", Net(), ["Net", "nn.Sequential"]),
        ("module list", nn.ModuleList([nn.Linear(5, 5) for _ in range(40)]), ["ModuleList", "nn.Sequential"]),
        ("tensor", torch.ones(300, 300), ["Tensor"]),
        ("list of modules", [nn.Linear(5, 5) for _ in range(40)], ["list", "nn.Sequential"]),
        ("dict of arrays", {f"w{i}": np.ones((50, 50)) for i in range(20)}, ["dict", "20 entries"]),
        ("big layer", nn.Sequential(nn.Linear(64, 64), big_block), ["layer 1", "TransformerEncoderLayer"]),
        ("no linear", nn.Sequential(*[nn.Dropout(0.1) for _ in range(100)]), ["no Linear"]),
        ("nested big", nn.Sequential(nn.Linear(4, 4), nn.Sequential(Net())), ["layer 1.0", "Net"]),
    ]


@pytest.mark.parametrize("index", range(8))
def test_from_torch_refusals_are_one_bounded_line(index):
    import feynmlp

    case, given, fragments = _refused_inputs()[index]
    message = _refusal(lambda: feynmlp.MLP.from_torch(given))
    for fragment in fragments:
        assert fragment in message, (case, fragment, message)


def test_activation_refusals_are_one_bounded_line():
    import feynmlp

    weights = [np.ones((3, 2)), np.ones((1, 3))]
    message = _refusal(lambda: feynmlp.MLP(weights, None, activation=np.ones((200, 200))))
    assert "ndarray" in message
    message = _refusal(lambda: feynmlp.MLP(weights, None, activation=["tanh"] * 1000))
    assert "1000 activations" in message and "1 hidden layer" in message
    message = _refusal(lambda: feynmlp.MLP(weights, None, output_activation=np.ones((200, 200))))
    assert "ndarray" in message


# ----------------------------------------------------------------------------------------
# sympy.Lambda activations.
# ----------------------------------------------------------------------------------------

def _lambda_network(activation, seed=5, sizes=(2, 3, 1)):
    import feynmlp
    from helpers.networks import random_layers

    weights, biases = random_layers(np.random.default_rng(seed), sizes, 0.7, 0.3)
    return weights, biases, feynmlp.MLP(weights, biases, activation=activation)


def test_a_one_argument_lambda_is_the_activation_of_its_body():
    import sympy
    from helpers.symbolic_reference import directional_coefficients, symbolic_outputs, taylor_coefficients

    import feynmlp
    from feynmlp import multi_index

    u = sympy.Symbol("u")
    body = u * sympy.erf(u) / 2 + sympy.sin(u) / 3
    weights, biases, mlp = _lambda_network(sympy.Lambda(u, body))
    assert mlp.hidden_activations == [body] and mlp.activation == body
    # Reference: the network written out in SymPy with the body and differentiated by diff.
    xs, (output,) = symbolic_outputs(weights, biases, [body])
    point, direction = np.array([0.3, -0.7]), np.array([1.1, 0.4])
    want = taylor_coefficients(output, xs, point, multi_index.exponents(2, 3))
    np.testing.assert_allclose(feynmlp.taylor(mlp, point, 3).coefficients[0], want, rtol=1e-10, atol=1e-13)
    want = directional_coefficients(output, xs, point, direction, 5)
    np.testing.assert_allclose(feynmlp.directional(mlp, point, direction, 5)[0], want, rtol=1e-10, atol=1e-13)
    value = float(output.subs(dict(zip(xs, point.tolist()))).evalf(30))
    np.testing.assert_allclose(mlp(point), [value], rtol=1e-13)


def test_lambda_activations_mix_with_names_and_match_the_builtin():
    import sympy

    import feynmlp

    u = sympy.Symbol("u")
    _, _, builtin = _lambda_network(["tanh", "silu"], sizes=(3, 4, 4, 2))
    _, _, written = _lambda_network([sympy.Lambda(u, sympy.tanh(u)), "silu"], sizes=(3, 4, 4, 2))
    x = np.array([[0.2, -0.4, 0.9], [1.5, 0.1, -2.0]])
    np.testing.assert_allclose(written(x), builtin(x), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(feynmlp.taylor(written, x, 4).coefficients,
                               feynmlp.taylor(builtin, x, 4).coefficients, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_a_lambda_model_saves_and_loads(tmp_path, suffix):
    import sympy

    import feynmlp

    u = sympy.Symbol("u")
    _, _, mlp = _lambda_network([sympy.Lambda(u, u * sympy.tanh(u))] * 2, sizes=(2, 3, 3, 1))
    path = tmp_path / f"model{suffix}"
    mlp.save(path)
    loaded = feynmlp.load(path)
    x = np.array([[0.3, -0.2], [1.0, 2.0]])
    assert [str(a) for a in loaded.hidden_activations] == ["u*tanh(u)"] * 2
    np.testing.assert_array_equal(loaded(x), mlp(x))
    np.testing.assert_array_equal(feynmlp.taylor(loaded, x, 3).coefficients, feynmlp.taylor(mlp, x, 3).coefficients)


def test_lambdas_that_are_not_one_argument_functions_are_refused():
    import sympy

    import feynmlp
    from feynmlp.errors import UnsupportedActivationError

    u, v, a = sympy.symbols("u v a")
    weights = [np.ones((3, 2)), np.ones((1, 3))]
    cases = [
        (sympy.Lambda((u, v), u * v), ["Lambda of 2 arguments (u, v)", "one argument"]),
        (sympy.Lambda(u, a * sympy.tanh(u)), ["free symbol", "a", "substitute a number"]),
        (sympy.Lambda(u, sympy.tanh(v)), ["does not depend on its argument u", "v"]),
        (sympy.Lambda(u, sympy.Integer(3)), ["does not depend on its argument u"]),
    ]
    for bad, fragments in cases:
        for activation in (bad, [bad]):
            with pytest.raises(UnsupportedActivationError) as info:
                feynmlp.MLP(weights, None, activation=activation)
            message = str(info.value)
            assert "\n" not in message and len(message) <= MESSAGE_LIMIT, message
            for fragment in fragments:
                assert fragment in message, (fragment, message)
