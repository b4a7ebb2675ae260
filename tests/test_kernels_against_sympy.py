"""Generated kernels, run through the forward propagation, against SymPy's `diff` of a small
symbolic MLP: every Taylor coefficient up to order 4, several activations, 1e-9 relative."""
import numpy as np
import pytest

from feynmlp import multi_index
from feynmlp.directional import directional_series
from feynmlp.multivariate import multivariate_series
from helpers.networks import random_layers
from helpers.symbolic_reference import directional_coefficients, symbolic_outputs, taylor_coefficients

CASES = [
    # (layer sizes, hidden activations, output activation, order): small, because SymPy's
    # diff of a nested closed form grows quickly (the wide random architectures are tested
    # against torch's autodiff instead).
    ((2, 3, 2), ["tanh"], None, 4),
    ((2, 2, 2, 1), ["sigmoid", "sin"], None, 4),
    ((2, 2, 2, 1), ["gelu", "softplus"], None, 3),
    ((2, 2, 1), ["silu"], "tanh", 3),
    ((3, 2, 2, 1), ["cos", "exp"], None, 3),
    ((2, 2, 1), ["identity"], None, 2),
]


def _close(got, want, rtol=1e-9):
    scale = max(abs(want), 1e-8)
    assert abs(got - want) <= rtol * scale, (got, want)


# The top-vertex scheme applies to linear outputs only (with an output activation, "auto"
# picks the forward scheme).
SCHEME_CASES = [case + (scheme,) for case in CASES for scheme in ("forward", "top-vertex")
                if scheme == "forward" or case[2] is None]


@pytest.mark.parametrize("sizes,acts,out_act,order,scheme", SCHEME_CASES)
def test_multivariate_coefficients(sizes, acts, out_act, order, scheme):
    rng = np.random.default_rng(sum(sizes) + order)
    weights, biases = random_layers(rng, sizes, 0.7, 0.3)
    point = rng.normal(size=sizes[0]) * 0.5
    xs, outputs = symbolic_outputs(weights, biases, acts, out_act)
    coefficients = multivariate_series(weights, biases, acts, out_act, point[None], order, scheme=scheme)
    exps = multi_index.exponents(sizes[0], order)
    assert coefficients.shape == (1, sizes[-1], len(exps))
    for o, expr in enumerate(outputs):
        for got, want in zip(coefficients[0, o], taylor_coefficients(expr, xs, point, exps)):
            _close(got, want)


@pytest.mark.parametrize("scheme", ["forward", "top-vertex"])
def test_wrt_subset_and_batch(scheme):
    rng = np.random.default_rng(7)
    sizes = (3, 2, 2, 1)
    weights, biases = random_layers(rng, sizes, 0.7, 0.3)
    points = rng.normal(size=(2, 3)) * 0.5
    xs, (expr,) = symbolic_outputs(weights, biases, ["tanh", "sigmoid"])
    wrt = [2, 0]
    coefficients = multivariate_series(weights, biases, ["tanh", "sigmoid"], None, points, 3, wrt=wrt,
                                               scheme=scheme)
    alphas = np.zeros((multi_index.count(2, 3), 3), dtype=int)
    alphas[:, wrt] = multi_index.exponents(2, 3)
    for b, point in enumerate(points):
        for got, want in zip(coefficients[b, 0], taylor_coefficients(expr, xs, point, alphas)):
            _close(got, want)


@pytest.mark.parametrize("acts,order", [(["tanh", "sin"], 6), (["gelu", "softplus"], 5)])
def test_directional_series(acts, order):
    rng = np.random.default_rng(order)
    weights, biases = random_layers(rng, (3, 2, 2, 2), 0.7, 0.3)
    point, direction = rng.normal(size=3) * 0.5, rng.normal(size=3)
    xs, outputs = symbolic_outputs(weights, biases, acts)
    series = directional_series(weights, biases, acts, None, point[None], direction[None], order)
    for o, expr in enumerate(outputs):
        want = directional_coefficients(expr, xs, point, direction, order)
        for got_k, want_k in zip(series[0, o], want):
            _close(got_k, want_k)


def test_float32_on_request():
    rng = np.random.default_rng(3)
    weights, biases = random_layers(rng, (2, 3, 1), 0.7, 0.3)
    point = rng.normal(size=(1, 2))
    c64 = multivariate_series(weights, biases, ["tanh"], None, point, 3)
    c32 = multivariate_series(weights, biases, ["tanh"], None, point, 3, dtype=np.float32)
    assert c32.dtype == np.float32
    np.testing.assert_allclose(c32, c64, rtol=1e-4, atol=1e-5)


def test_order_beyond_shipped_is_generated_on_demand(tmp_path, monkeypatch):
    monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(11)
    weights, biases = random_layers(rng, (2, 2, 1), 0.7, 0.3)
    point = rng.normal(size=2) * 0.5
    xs, (expr,) = symbolic_outputs(weights, biases, ["tanh"])
    coefficients = multivariate_series(weights, biases, ["tanh"], None, point[None], 5)
    for got, want in zip(coefficients[0, 0], taylor_coefficients(expr, xs, point, multi_index.exponents(2, 5))):
        _close(got, want)
