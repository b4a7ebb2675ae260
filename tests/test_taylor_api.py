"""The public expansion API: feynmlp.taylor, directional, diagram_contributions, TaylorExpansion.

Every number is checked against a reference computed another way: PyTorch's nested forward-
mode autodiff (torch.func.jacfwd, torch.func.jvp) in float64, the dense derivative tensors
contracted by hand, the network's own forward pass (the Taylor remainder must shrink like
|h|^(K+1)), SymPy's evaluation of the exported polynomial, or the full expansion for a `wrt`
subset. Also: batch shapes, float32, a custom SymPy activation, orders 6..8, model files
round-tripping through from_torch/save/load, and one clear FeynmlpError for every user error
(refused before any large allocation where the result would not fit in memory).
"""
from __future__ import annotations

import math
import re
import tracemalloc

import numpy as np
import pytest
import sympy
import torch
from torch import nn

import feynmlp
from feynmlp import MLP, FeynmlpError, ModelFileError, ResourceLimitError, UnsupportedActivationError
from feynmlp import multi_index
from helpers.networks import random_mlp
from helpers.torch_reference import (
    BUILTIN,
    assert_relative_close,
    check_against_torch,
    torch_derivative_tensors,
    torch_directional_series,
    torch_network,
)


def contract(tensor: np.ndarray, v: np.ndarray) -> np.ndarray:
    """T[..., v, ..., v]: contract every trailing input axis of T with v."""
    while tensor.ndim > 1:
        tensor = tensor @ v
    return tensor


@pytest.fixture(scope="module")
def network():
    rng = np.random.default_rng(2024)
    mlp = random_mlp(rng, (3, 7, 6, 2), ["tanh", "gelu"], output_activation="sigmoid")
    return mlp, rng.normal(size=3)


# ----------------------------------------------------------------------------- directional

@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_directional_is_the_contraction_of_the_derivative_tensors(network, order):
    mlp, x = network
    if order == 5:
        # Order 5 is generated on demand: one activation, so one kernel module to build.
        mlp = random_mlp(np.random.default_rng(55), (3, 7, 6, 2), ["tanh", "tanh"], output_activation="tanh")
    v = np.random.default_rng(order).normal(size=3)
    series = feynmlp.directional(mlp, x, v, order)
    assert series.shape == (2, order + 1)
    expansion = feynmlp.taylor(mlp, x, order)
    for k in range(order + 1):
        want = contract(expansion.derivative_tensor(k), v) / math.factorial(k)
        assert_relative_close(series[:, k], want, what=f"t^{k} coefficient along v")
    # And against torch, independently of the multivariate kernels.
    assert_relative_close(series, torch_directional_series(torch_network(mlp), x, v, order),
                          what="directional series against nested torch.func.jvp")


def test_directional_broadcasts_points_against_directions(network):
    mlp, _ = network
    rng = np.random.default_rng(7)
    xs, vs = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    f = torch_network(mlp)
    both = feynmlp.directional(mlp, xs, vs, 3)
    assert both.shape == (4, 2, 4)
    one_v = feynmlp.directional(mlp, xs, vs[0], 3)
    one_x = feynmlp.directional(mlp, xs[0], vs, 3)
    assert one_v.shape == one_x.shape == (4, 2, 4)
    for p in range(4):
        assert_relative_close(both[p], torch_directional_series(f, xs[p], vs[p], 3), what=f"pair {p}")
        assert_relative_close(one_v[p], torch_directional_series(f, xs[p], vs[0], 3), what=f"point {p}")
        assert_relative_close(one_x[p], torch_directional_series(f, xs[0], vs[p], 3), what=f"direction {p}")
    assert feynmlp.directional(mlp, xs[:1], vs[0], 3).shape == (1, 2, 4)
    with pytest.raises(FeynmlpError, match=r"\b4\b.*\b3\b"):
        feynmlp.directional(mlp, xs, vs[:3], 3)


@pytest.mark.parametrize("activation", BUILTIN)
def test_directional_with_one_shared_point(activation):
    """One point and many directions takes the shared-point path (the point pushed once, the
    activation evaluated once per neuron): the same numbers as the point repeated for every
    direction (the per-row path) and as torch."""
    rng = np.random.default_rng(21)
    mlp = random_mlp(rng, (3, 6, 5, 2), [activation, "tanh"], output_activation="sigmoid")
    x, vs = rng.normal(size=3), rng.normal(size=(5, 3))
    shared = feynmlp.directional(mlp, x, vs, 4)
    repeated = feynmlp.directional(mlp, np.repeat(x[None], 5, axis=0), vs, 4)
    assert_relative_close(shared, repeated, rtol=1e-13, what="shared point against repeated point")
    f = torch_network(mlp)
    for p in (0, 4):
        assert_relative_close(shared[p], torch_directional_series(f, x, vs[p], 4), what=f"direction {p}")


def test_directional_zeroth_coefficient_is_the_forward_pass(network):
    mlp, x = network
    series = feynmlp.directional(mlp, x, np.ones(3), 2)
    assert_relative_close(series[:, 0], mlp(x), rtol=1e-13, what="f(x)")


# ----------------------------------------------------------------------------- wrt

@pytest.mark.parametrize("wrt", [[1], [2, 0], [0, 1, 2], [2, 1, 0]])
def test_wrt_is_the_slice_of_the_full_expansion(network, wrt):
    mlp, x = network
    order = 4
    full = feynmlp.taylor(mlp, x, order)
    part = feynmlp.taylor(mlp, x, order, wrt=wrt)
    assert part.wrt == tuple(wrt)
    assert part.coefficients.shape == (2, math.comb(len(wrt) + order, order))
    held = [i for i in range(3) if i not in wrt]
    assert not part.multi_indices[:, held].any()
    assert len({tuple(a) for a in part.multi_indices}) == part.multi_indices.shape[0]
    for column, alpha in enumerate(part.multi_indices):
        assert_relative_close(part.coefficient(alpha), full.coefficient(alpha), rtol=1e-13, what=f"alpha {alpha}")
        assert_relative_close(part.coefficients[:, column], full.coefficient(alpha), rtol=1e-13,
                              what=f"column {column}")
    for k in range(order + 1):
        sliced = full.derivative_tensor(k)[(slice(None),) + np.ix_(*[wrt] * k)] if k else full.derivative_tensor(0)
        assert_relative_close(part.derivative_tensor(k), sliced, rtol=1e-13, what=f"order-{k} tensor")
    if held:
        alpha = np.zeros(3, dtype=int)
        alpha[held[0]] = 1
        with pytest.raises(FeynmlpError, match=re.escape(str([held[0]]))):
            part.coefficient(alpha)


def test_wrt_against_torch_with_a_batch():
    rng = np.random.default_rng(31)
    mlp = random_mlp(rng, (5, 6, 4, 2), ["silu", "sin"], output_activation="softplus")
    check_against_torch(mlp, rng.normal(size=(3, 5)), 3, wrt=[4, 1])


# ----------------------------------------------------------------------------- diagrams

def _coefficient_cases():
    # (layer sizes, hidden activations, output activation, alphas of orders 1..4)
    alphas = [(1, 0, 0), (0, 0, 1), (2, 0, 0), (1, 1, 0), (0, 1, 1), (3, 0, 0), (1, 1, 1), (2, 0, 1),
              (4, 0, 0), (1, 2, 1), (2, 2, 0), (0, 1, 3)]
    return [
        ((3, 5, 2), ["tanh"], None, alphas),
        ((3, 5, 4, 2), ["gelu", "softplus"], "sigmoid", alphas),
        ((3, 4, 3, 4, 1), ["sin", "silu", "exp"], "tanh", alphas),
        ((3, 2), [], "cos", alphas),
    ]


@pytest.mark.parametrize("sizes,activations,output,alphas", _coefficient_cases())
def test_diagram_contributions_sum_to_the_coefficient(sizes, activations, output, alphas):
    rng = np.random.default_rng(len(sizes))
    mlp = random_mlp(rng, sizes, activations, output_activation=output)
    x = rng.normal(size=3)
    expansion = feynmlp.taylor(mlp, x, 4)
    torch_tensors = torch_derivative_tensors(torch_network(mlp), x, 4)
    # Vertex layers of the diagram rules: the hidden layers, plus the output activation's.
    depth = len(activations) + (output is not None)
    for alpha in alphas:
        k = sum(alpha)
        contributions = feynmlp.diagram_contributions(mlp, x, alpha)
        total = np.sum([c.value for c in contributions], axis=0)
        assert_relative_close(total, expansion.coefficient(alpha), rtol=1e-12, what=f"sum of diagrams of {alpha}")
        indices = tuple(np.repeat(np.arange(3), alpha))
        want = torch_tensors[k][(slice(None),) + indices] / math.prod(math.factorial(a) for a in alpha)
        assert_relative_close(total, want, what=f"sum of diagrams of {alpha} against torch")
        expected_count = {1: 1, 2: depth, 3: depth + 3 * depth * (depth - 1) // 2}.get(k)
        if expected_count is not None:
            assert len(contributions) == expected_count, (alpha, len(contributions))
        for c in contributions:
            assert c.indices == indices
            assert c.value.shape == (mlp.n_outputs,)
            assert all(1 <= layer <= depth for layer in c.layers)
            assert all(valence >= 2 for valence in c.vertex_valences)
            assert len(c.layers) == len(c.vertex_valences)


def test_first_order_diagram_is_the_jacobian_column(network):
    mlp, x = network
    (only,) = feynmlp.diagram_contributions(mlp, x, [0, 1, 0])
    jacobian = torch_derivative_tensors(torch_network(mlp), x, 1)[1]
    assert_relative_close(only.value, jacobian[:, 1], what="P(L,0)[:, 1]")
    assert only.vertex_valences == () and only.layers == ()


# ----------------------------------------------------------------------------- shapes

def test_single_point_and_batch_shapes(network):
    mlp, x = network
    order, n, m = 3, 3, math.comb(3 + 3, 3)
    single = feynmlp.taylor(mlp, x, order)
    assert single.coefficients.shape == (2, m)
    assert single.point.shape == (3,)
    assert single.multi_indices.shape == (m, n)
    assert single.gradient.shape == (2, n) and single.hessian.shape == (2, n, n)
    for k in range(order + 1):
        assert single.derivative_tensor(k).shape == (2,) + (n,) * k
    assert single(np.zeros(n)).shape == (2,)
    assert single(np.zeros((5, n))).shape == (5, 2)

    points = np.stack([x, x + 0.5, x - 1.0])
    batch = feynmlp.taylor(mlp, points, order)
    assert batch.coefficients.shape == (3, 2, m)
    assert batch.point.shape == (3, 3)
    assert batch.gradient.shape == (3, 2, n) and batch.hessian.shape == (3, 2, n, n)
    for k in range(order + 1):
        assert batch.derivative_tensor(k).shape == (3, 2) + (n,) * k
    assert batch(np.zeros((3, n))).shape == (3, 2)
    for p in range(3):
        alone = feynmlp.taylor(mlp, points[p], order)
        assert_relative_close(batch.coefficients[p], alone.coefficients, rtol=1e-13, what=f"point {p}")
    with pytest.raises(FeynmlpError, match=r"\(3, 3\)"):
        batch(np.zeros((2, n)))
    with pytest.raises(FeynmlpError, match=r"\(4,\)"):
        single(np.zeros(4))

    # A batch of one stays a batch; a list is a point.
    assert feynmlp.taylor(mlp, x[None, :], order).coefficients.shape == (1, 2, m)
    assert feynmlp.taylor(mlp, list(x), order).coefficients.shape == (2, m)
    assert feynmlp.directional(mlp, x, x, order).shape == (2, order + 1)
    assert feynmlp.directional(mlp, points, x, order).shape == (3, 2, order + 1)


def test_multi_indices_are_graded_and_coefficient_reads_them(network):
    mlp, x = network
    expansion = feynmlp.taylor(mlp, x, 3)
    degrees = expansion.multi_indices.sum(axis=1)
    assert np.all(np.diff(degrees) >= 0)
    assert [tuple(a) for a in expansion.multi_indices[:4]] == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    for column, alpha in enumerate(expansion.multi_indices):
        np.testing.assert_array_equal(expansion.coefficient(alpha), expansion.coefficients[:, column])
    # coefficient = derivative / alpha!, read from torch.
    tensors = torch_derivative_tensors(torch_network(mlp), x, 3)
    assert_relative_close(expansion.coefficient([2, 0, 1]), tensors[3][:, 0, 0, 2] / 2, what="c_(2,0,1)")


def test_large_batches_are_computed_in_blocks():
    # 12 inputs, order 4, width 40: each point's layer series take 0.6 MB, so a batch of 600
    # points runs in several blocks of points (forward scheme; the top-vertex scheme pushes
    # order 3 only and runs 1000 points in two blocks). Block edges must not show.
    rng = np.random.default_rng(600)
    mlp = random_mlp(rng, (12, 40, 2), ["softplus"])
    points = rng.normal(size=(1000, 12))
    for scheme, batch in (("forward", 600), ("top-vertex", 1000)):
        expansion = feynmlp.taylor(mlp, points[:batch], 4, scheme=scheme)
        assert expansion.coefficients.shape == (batch, 2, math.comb(16, 4))
        for p in [*range(0, batch, 53), batch - 1]:  # a sample of every block, wherever its edges
            alone = feynmlp.taylor(mlp, points[p], 4, scheme="forward")
            assert_relative_close(expansion.coefficients[p], alone.coefficients, rtol=1e-12,
                                  what=f"{scheme}, point {p} of {batch}")


@pytest.mark.parametrize("scheme", ["forward", "top-vertex", "auto"])
def test_schemes_agree(network, scheme):
    mlp, x = network
    linear = MLP(mlp.weights, mlp.biases, activation=mlp.hidden_activations)  # no output activation
    points = np.stack([x, -x, 2 * x])
    reference = feynmlp.taylor(linear, points, 4, scheme="forward")
    for order in (1, 2, 3, 4):
        got = feynmlp.taylor(linear, points, order, scheme=scheme)
        want = reference.coefficients[:, :, :got.coefficients.shape[-1]]
        assert_relative_close(got.coefficients, want, rtol=1e-12, what=f"{scheme}, order {order}")
    if scheme != "top-vertex":
        check_against_torch(mlp, x, 3, scheme=scheme)  # with the output activation


def test_bad_schemes(network):
    mlp, x = network
    with pytest.raises(FeynmlpError, match="'backward'"):
        feynmlp.taylor(mlp, x, 2, scheme="backward")
    with pytest.raises(FeynmlpError, match="top-vertex.*'sigmoid'"):
        feynmlp.taylor(mlp, x, 2, scheme="top-vertex")


# ----------------------------------------------------------------------------- evaluation

@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_taylor_polynomial_remainder_shrinks_like_h_to_the_order_plus_one(network, order):
    mlp, x = network
    expansion = feynmlp.taylor(mlp, x, order)
    direction = np.array([0.3, -0.2, 0.25])
    steps = [direction / 2**j for j in range(6)]
    errors = [np.max(np.abs(mlp(x + h) - expansion(h))) for h in steps]
    ratios = [errors[j] / errors[j + 1] for j in range(len(errors) - 1)]
    expected = 2.0 ** (order + 1)
    assert all(np.diff(errors) < 0), errors
    assert 0.8 * expected <= ratios[-1] <= 1.25 * expected, (ratios, expected)
    # The same for a batch of points, each with its own displacement.
    points = np.stack([x, x + 0.3])
    batch = feynmlp.taylor(mlp, points, order)
    batch_errors = np.array([np.max(np.abs(mlp(points + hs) - batch(hs)), axis=1)
                             for hs in (np.stack([direction, -direction]) / 2**j for j in range(6))])
    batch_ratios = batch_errors[-2] / batch_errors[-1]
    assert np.all((0.8 * expected <= batch_ratios) & (batch_ratios <= 1.25 * expected)), (batch_ratios, expected)


def test_to_sympy_is_the_same_polynomial(network):
    mlp, x = network
    expansion = feynmlp.taylor(mlp, x, 4)
    polynomials = expansion.to_sympy()
    assert len(polynomials) == 2
    symbols = sympy.symbols("h0 h1 h2")
    assert set().union(*(p.free_symbols for p in polynomials)) == set(symbols)
    for h in (np.array([0.1, -0.2, 0.05]), np.array([0.7, 0.3, -0.4])):
        values = np.array([float(p.subs(dict(zip(symbols, h)))) for p in polynomials])
        assert_relative_close(values, expansion(h), rtol=1e-12, what=f"to_sympy at {h}")
        # Degree and constant term come from the expansion itself.
    for p in polynomials:
        assert sympy.Poly(p, *symbols).total_degree() == 4
    assert_relative_close(np.array([float(p.subs(dict.fromkeys(symbols, 0))) for p in polynomials]),
                          mlp(x), rtol=1e-13, what="constant term")

    # With wrt, the symbols are named after the input indices; a batch gives one list per point.
    part = feynmlp.taylor(mlp, np.stack([x, -x]), 3, wrt=[2, 0])
    batch_polynomials = part.to_sympy()
    assert len(batch_polynomials) == 2 and all(len(row) == 2 for row in batch_polynomials)
    h2, h0 = sympy.symbols("h2 h0")
    hs = np.array([[0.2, -0.1], [0.05, 0.3]])  # columns in wrt order: h2, h0
    values = np.array([[float(p.subs({h2: hs[b, 0], h0: hs[b, 1]})) for p in row]
                       for b, row in enumerate(batch_polynomials)])
    assert_relative_close(values, part(hs), rtol=1e-12, what="to_sympy with wrt and a batch")


# ----------------------------------------------------------------------------- float32

def test_float32_agrees_with_float64(network):
    mlp, x = network
    # The activations of `network` (each dtype compiles its own kernels), in a wider network.
    wide = random_mlp(np.random.default_rng(5), (6, 20, 20, 3), ["gelu", "tanh"], output_activation="sigmoid")
    for net, point in ((mlp, x), (wide, np.linspace(-1, 1, 6))):
        e64 = feynmlp.taylor(net, point, 4)
        e32 = feynmlp.taylor(net, point, 4, dtype=np.float32)
        assert e32.dtype == np.float32 and e32.coefficients.dtype == np.float32
        assert e32.derivative_tensor(2).dtype == np.float32
        for k in range(5):
            assert_relative_close(e32.derivative_tensor(k).astype(np.float64), e64.derivative_tensor(k),
                                  rtol=1e-5, what=f"float32 order-{k} tensor")
        v = np.ones(net.n_inputs)
        d32 = feynmlp.directional(net, point, v, 4, dtype=np.float32)
        assert d32.dtype == np.float32
        d64 = feynmlp.directional(net, point, v, 4)
        for k in range(5):
            assert_relative_close(d32[:, k].astype(np.float64), d64[:, k], rtol=1e-5, what=f"float32 t^{k}")


# ----------------------------------------------------------------------------- custom activation

def test_custom_sympy_activation_matches_torch(tmp_path):
    z = sympy.Symbol("z")
    custom = z * sympy.tanh(z)
    rng = np.random.default_rng(17)
    sizes = (3, 6, 5, 2)
    weights = [rng.normal(size=(sizes[i + 1], sizes[i])) / np.sqrt(sizes[i]) for i in range(3)]
    biases = [rng.normal(scale=0.5, size=sizes[i + 1]) for i in range(3)]
    mlp = MLP(weights, biases, activation=[custom, "sin"], output_activation="tanh")
    torch_custom = {str(custom): lambda t: t * torch.tanh(t)}
    x = rng.normal(size=3)
    expansion = check_against_torch(mlp, x, 4, custom=torch_custom)
    v = rng.normal(size=3)
    assert_relative_close(feynmlp.directional(mlp, x, v, 4),
                          torch_directional_series(torch_network(mlp, torch_custom), x, v, 4),
                          what="custom activation along v")
    # The model file stores the expression; the reloaded network has the same coefficients.
    path = tmp_path / "custom.safetensors"
    feynmlp.save(mlp, path)
    loaded = feynmlp.load(path)
    np.testing.assert_array_equal(feynmlp.taylor(loaded, x, 4).coefficients, expansion.coefficients)
    # Diagram view of a custom activation.
    total = np.sum([c.value for c in feynmlp.diagram_contributions(mlp, x, [1, 0, 2])], axis=0)
    assert_relative_close(total, expansion.coefficient([1, 0, 2]), rtol=1e-12, what="diagrams, custom")


# ----------------------------------------------------------------------------- high orders

def test_directional_order_8():
    rng = np.random.default_rng(88)
    # One activation throughout: each order above 4 generates and compiles one kernel module.
    mlp = random_mlp(rng, (3, 5, 4, 2), ["tanh", "tanh"], output_activation="tanh")
    x, v = rng.normal(size=3), rng.normal(size=3)
    series = feynmlp.directional(mlp, x, v, 8)
    assert series.shape == (2, 9)
    want = torch_directional_series(torch_network(mlp), x, v, 8)
    for k in range(9):
        assert_relative_close(series[:, k], want[:, k], what=f"t^{k} of the order-8 series")


def test_multivariate_order_6_two_inputs():
    rng = np.random.default_rng(66)
    mlp = random_mlp(rng, (2, 5, 4, 2), ["tanh", "tanh"], output_activation="tanh")
    x = rng.normal(size=2)
    expansion = check_against_torch(mlp, x, 6)
    assert expansion.coefficients.shape == (2, math.comb(2 + 6, 6))
    # The directional kernel of order 6 is the contraction of the order-6 expansion.
    v = np.array([0.6, -1.1])
    series = feynmlp.directional(mlp, x, v, 6)
    for k in range(7):
        assert_relative_close(series[:, k], contract(expansion.derivative_tensor(k), v) / math.factorial(k),
                              what=f"order-6 directional t^{k}")


def test_directional_order_7_batch():
    rng = np.random.default_rng(77)
    mlp = random_mlp(rng, (2, 4, 3, 1), ["tanh", "tanh"])
    xs, vs = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
    series = feynmlp.directional(mlp, xs, vs, 7)
    f = torch_network(mlp)
    for p in range(2):
        want = torch_directional_series(f, xs[p], vs[p], 7)
        for k in range(8):
            assert_relative_close(series[p, :, k], want[:, k], what=f"point {p}, t^{k}")


# ----------------------------------------------------------------------------- model files

def _torch_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 6), nn.Tanh(),
        nn.Linear(6, 5), nn.GELU(), nn.Dropout(0.1),
        nn.Linear(5, 5), nn.Softplus(),
        nn.Linear(5, 4),  # two Linear layers in a row: an identity hidden layer
        nn.Linear(4, 2), nn.Sigmoid(),
    ).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_torch_model_round_trips_through_files(tmp_path, suffix):
    model = _torch_model()
    mlp = MLP.from_torch(model)
    assert mlp.hidden_activations == ["tanh", "gelu", "softplus", "identity"]
    assert mlp.output_activation == "sigmoid"
    x = np.array([0.3, -0.7, 1.1])
    order = 4
    expansion = feynmlp.taylor(mlp, x, order)
    # Against the torch module itself (float64 copy), not a re-implementation of it.
    reference_model = _torch_model().double()
    want = torch_derivative_tensors(lambda t: reference_model(t[None, :])[0], x, order)
    for k in range(order + 1):
        assert_relative_close(expansion.derivative_tensor(k), want[k], what=f"from_torch order {k}")

    path = tmp_path / f"model{suffix}"
    feynmlp.save(mlp, path, record={"source": "test"})
    loaded = feynmlp.load(path)
    assert loaded.layer_sizes == mlp.layer_sizes
    assert loaded.hidden_activations == mlp.hidden_activations
    assert loaded.output_activation == mlp.output_activation
    assert loaded.record == {"source": "test"}
    for a, b in zip(loaded.weights + loaded.biases, mlp.weights + mlp.biases):
        np.testing.assert_array_equal(a, b)
    again = feynmlp.taylor(loaded, x, order)
    np.testing.assert_array_equal(again.coefficients, expansion.coefficients)
    np.testing.assert_array_equal(feynmlp.directional(loaded, x, x, order), feynmlp.directional(mlp, x, x, order))


# ----------------------------------------------------------------------------- user errors

@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    return random_mlp(rng, (3, 4, 2), ["tanh"])


def test_mismatched_layer_shapes():
    with pytest.raises(FeynmlpError, match=r"\(2, 5\).*\b4\b"):
        MLP([np.ones((4, 3)), np.ones((2, 5))], None)
    with pytest.raises(FeynmlpError, match=r"\(3,\).*\(4, 3\)"):
        MLP([np.ones((4, 3))], [np.ones(3)])
    with pytest.raises(FeynmlpError, match=r"2 weight matrices but 1 bias"):
        MLP([np.ones((4, 3)), np.ones((1, 4))], [np.ones(4)])


@pytest.mark.parametrize("x,shape", [(np.zeros(4), r"\(4,\)"), (np.zeros((2, 2)), r"\(2, 2\)"),
                                     (np.zeros((1, 2, 3)), r"\(1, 2, 3\)"), (0.5, r"\(\)")])
def test_wrong_input_width(small, x, shape):
    with pytest.raises(FeynmlpError, match=shape):
        feynmlp.taylor(small, x, 2)
    with pytest.raises(FeynmlpError, match=shape):
        feynmlp.directional(small, x, np.ones(3), 2)
    with pytest.raises(FeynmlpError, match=r"\bv\b.*" + shape):
        feynmlp.directional(small, np.zeros(3), x, 2)
    with pytest.raises(FeynmlpError, match=shape):
        feynmlp.diagram_contributions(small, x, [1, 1, 0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_and_points(small, bad):
    w = np.ones((4, 3))
    w[2, 1] = bad
    with pytest.raises(FeynmlpError, match=r"layer 0 weight.*non-finite"):
        MLP([w, np.ones((2, 4))], None)
    with pytest.raises(FeynmlpError, match=r"layer 1 bias.*non-finite"):
        MLP([np.ones((4, 3)), np.ones((2, 4))], [None, np.array([0.0, bad])])
    x = np.array([0.0, bad, 1.0])
    with pytest.raises(FeynmlpError, match=r"x contains 1 NaN or infinite.*\(1,\)"):
        feynmlp.taylor(small, x, 2)
    with pytest.raises(FeynmlpError, match=r"x contains 1 NaN or infinite.*\(1, 1\)"):
        feynmlp.taylor(small, np.stack([np.zeros(3), x]), 2)
    with pytest.raises(FeynmlpError, match=r"v contains 1 NaN or infinite"):
        feynmlp.directional(small, np.zeros(3), x, 2)
    with pytest.raises(FeynmlpError, match=r"NaN or infinite"):
        feynmlp.diagram_contributions(small, x, [1, 0, 0])


def test_unsupported_layers_and_activations(small):
    for module, name in [(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)), "LayerNorm"),
                         (nn.Sequential(nn.Conv1d(1, 1, 2)), "Conv1d"),
                         (nn.Sequential(nn.Linear(3, 4), nn.ELU(), nn.Linear(4, 1)), "ELU")]:
        with pytest.raises(FeynmlpError, match=name):
            MLP.from_torch(module)
    with pytest.raises(UnsupportedActivationError, match="'mish'"):
        MLP([np.ones((4, 3)), np.ones((2, 4))], None, activation="mish")
    with pytest.raises(UnsupportedActivationError, match="'softsign'"):
        MLP([np.ones((4, 3)), np.ones((2, 4))], None, output_activation="softsign")
    with pytest.raises(UnsupportedActivationError, match="GELU.*tanh"):
        MLP.from_torch(nn.Sequential(nn.Linear(3, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 1)))
    with pytest.raises(FeynmlpError, match="feynmlp.MLP"):
        feynmlp.taylor([np.ones((2, 3))], np.zeros(3), 2)
    for dtype in (np.float16, np.int64, "nonsense"):
        with pytest.raises(FeynmlpError, match=f"dtype.*{np.dtype(dtype) if dtype != 'nonsense' else dtype}"):
            feynmlp.taylor(small, np.zeros(3), 2, dtype=dtype)


@pytest.mark.parametrize("activation,output", [("relu", None), (["tanh"], "relu"), ("leaky_relu", None),
                                               ("hardtanh", None), ("relu6", None)])
def test_relu_like_networks_refuse_order_two_and_above(activation, output):
    rng = np.random.default_rng(3)
    mlp = MLP([rng.normal(size=(4, 3)), rng.normal(size=(2, 4))], None, activation=activation,
              output_activation=output)
    name = output or activation
    for order in (2, 3, 8):
        with pytest.raises(UnsupportedActivationError, match=f"'{name}'.*order {order}"):
            feynmlp.taylor(mlp, np.zeros(3) + 0.1, order)
        with pytest.raises(UnsupportedActivationError, match=f"'{name}'.*order {order}"):
            feynmlp.directional(mlp, np.zeros(3) + 0.1, np.ones(3), order)
    with pytest.raises(UnsupportedActivationError, match=f"'{name}'.*order 2"):
        feynmlp.diagram_contributions(mlp, np.zeros(3) + 0.1, [1, 1, 0])
    # First order is the Jacobian (away from the kinks), checked against torch.
    rng_x = np.random.default_rng(4).normal(size=3)
    expansion = feynmlp.taylor(mlp, rng_x, 1)
    reference = nn.Sequential(nn.Linear(3, 4), _torch_module(activation), nn.Linear(4, 2), *(
        [_torch_module(output)] if output else [])).double()
    with torch.no_grad():
        reference[0].weight.copy_(torch.as_tensor(mlp.weights[0]))
        reference[0].bias.zero_()
        reference[2].weight.copy_(torch.as_tensor(mlp.weights[1]))
        reference[2].bias.zero_()
    want = torch_derivative_tensors(lambda t: reference(t[None, :])[0], rng_x, 1)
    assert_relative_close(expansion.gradient, want[1], what="ReLU-like Jacobian")


def _torch_module(name):
    name = name[0] if isinstance(name, list) else name
    return {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(), "hardtanh": nn.Hardtanh(),
            "relu6": nn.ReLU6(), "tanh": nn.Tanh()}[name]


@pytest.mark.parametrize("order,fragment", [(0, "at least 1, got 0"), (-2, "at least 1, got -2"),
                                            (2.5, "integer, got 2.5"), (2.0, "integer, got 2.0"),
                                            ("3", "integer, got '3'"), (True, "integer, got True"),
                                            (None, "integer, got None"), (17, "order 17.*16")])
def test_bad_orders(small, order, fragment):
    with pytest.raises(FeynmlpError, match=fragment):
        feynmlp.taylor(small, np.zeros(3), order)
    with pytest.raises(FeynmlpError, match=fragment):
        feynmlp.directional(small, np.zeros(3), np.ones(3), order)


def test_numpy_integer_orders_are_accepted(small):
    expansion = feynmlp.taylor(small, np.zeros(3), np.int64(2))
    assert expansion.order == 2 and isinstance(expansion.order, int)
    assert feynmlp.directional(small, np.zeros(3), np.ones(3), np.int32(3)).shape == (2, 4)


@pytest.mark.parametrize("wrt,fragment", [([3], r"\[3\] outside 0\.\.2"), ([0, -1], r"\[-1\] outside"),
                                          ([1, 1], r"repeated.*\[1, 1\]"), ([], "empty"),
                                          ([0.5], r"0\.5"), (["a"], "'a'"), ([[0, 1]], r"\[\[0, 1\]\]"),
                                          ([True, False, True], r"booleans.*flatnonzero")])
def test_bad_wrt(small, wrt, fragment):
    with pytest.raises(FeynmlpError, match=fragment):
        feynmlp.taylor(small, np.zeros(3), 2, wrt=wrt)


def test_bad_alpha_and_derivative_order(small):
    expansion = feynmlp.taylor(small, np.zeros(3), 2, wrt=[0, 2])
    for alpha, fragment in [([1, 0], r"3 exponents.*\(2,\)"), ([0, 1, 0], r"\[1\].*wrt=\(0, 2\)"),
                            ([2, 0, 1], r"\[2, 0, 1\].*order 2"), ([-1, 0, 0], r"\[-1, 0, 0\]"),
                            ([0.5, 0, 0], r"0\.5"), (np.array([1.0, 0.0, 1.0]), r"integer.*1\., 0\., 1\."),
                            ([True, False, False], "True")]:
        with pytest.raises(FeynmlpError, match=fragment):
            expansion.coefficient(alpha)
    np.testing.assert_array_equal(expansion.coefficient(np.array([1, 0, 1], dtype=np.uint8)),
                                  expansion.coefficients[:, -2])
    for k in (-1, 3, 1.0, True):
        with pytest.raises(FeynmlpError, match=re.escape(repr(k))):
            expansion.derivative_tensor(k)
    for alpha, fragment in [([0, 0, 0], r"\[0, 0, 0\]"), ([1, 0], r"\[1, 0\]"), ([1, -1, 1], r"\[1, -1, 1\]"),
                            ([0.5, 0.5, 0], r"0\.5"), ([1.0, 0, 0], r"1\.0"), (["a", 0, 0], "'a'"),
                            ([[1], [0, 1], 0], r"\[\[1\], \[0, 1\], 0\]"), ([2**70, 0, 0], str(2**70))]:
        with pytest.raises(FeynmlpError, match=fragment):
            feynmlp.diagram_contributions(small, np.zeros(3), alpha)
    with pytest.raises(FeynmlpError, match=r"one point.*\(2, 3\)"):
        feynmlp.diagram_contributions(small, np.zeros((2, 3)), [1, 0, 0])
    with pytest.raises(FeynmlpError, match="order 8"):
        feynmlp.diagram_contributions(small, np.zeros(3), [8, 0, 0])


def _traced_peak(call):
    """(exception raised or None, peak bytes traced by tracemalloc while `call` ran)."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except FeynmlpError as exc:
        raised = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak


def test_too_large_expansion_is_refused_before_allocation():
    rng = np.random.default_rng(40)
    mlp = random_mlp(rng, (40, 16, 1), ["tanh"])
    points = rng.normal(size=(1000, 40))
    raised, peak = _traced_peak(lambda: feynmlp.taylor(mlp, points, 8))
    assert isinstance(raised, ResourceLimitError) and isinstance(raised, MemoryError), raised
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB allocated before the refusal"
    message = str(raised)
    # The estimate is at least the result itself: 1000 points x 1 output x C(48, 8) float64s.
    estimate = float(re.search(r"([\d.]+) GiB", message).group(1))
    assert estimate >= 1000 * math.comb(48, 8) * 8 / 2**30
    assert "wrt=" in message and "directional" in message and "order 8" in message
    # What the message suggests works: the series along directions, for all 1000 points.
    series = feynmlp.directional(mlp, points, np.ones(40), 8)
    assert series.shape == (1000, 1, 9) and np.all(np.isfinite(series))
    assert_relative_close(series[:, :, 0], mlp(points), rtol=1e-13, what="f at 1000 points")


def test_dense_tensor_too_large_is_refused_before_allocation(monkeypatch):
    rng = np.random.default_rng(41)
    mlp = random_mlp(rng, (12, 5, 2), ["tanh"])
    expansion = feynmlp.taylor(mlp, rng.normal(size=(3, 12)), 4)
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", str(3 * 2 * 12**4 * 8 / 2 / 2**30))
    raised, peak = _traced_peak(lambda: expansion.derivative_tensor(4))
    assert isinstance(raised, ResourceLimitError), raised
    assert peak < 2**20
    assert "GiB" in str(raised) and "wrt=" in str(raised) and "12^4" in str(raised)
    expansion.derivative_tensor(3)  # the lower orders still fit


def test_vertex_tables_count_against_the_memory_budget(monkeypatch):
    # For few neurons the vertex index tables dominate: 12 inputs at order 6 need 59 MB of
    # tables against under 1 MB of layer series (40 inputs: 53 GiB against 0.35 GiB).
    rng = np.random.default_rng(42)
    mlp = random_mlp(rng, (12, 2, 1), ["tanh"])
    feynmlp.taylor(random_mlp(rng, (2, 2, 1), ["tanh"]), np.zeros(2), 6)  # compile the kernel first
    budget_gb = 0.02  # 20 MiB; the layer series of this expansion need under 1 MiB
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", str(budget_gb))
    multi_index.vertex_tables.cache_clear()
    raised, peak = _traced_peak(lambda: feynmlp.taylor(mlp, np.zeros(12), 6))
    multi_index.vertex_tables.cache_clear()
    if isinstance(raised, ResourceLimitError):
        return
    assert raised is None, raised
    assert peak <= budget_gb * 2**30, (f"taylor allocated {peak / 2**20:.0f} MiB under a budget of "
                                       f"{budget_gb * 2**10:.0f} MiB without a ResourceLimitError")


# ----------------------------------------------------------------------------- damaged files

def _flip_byte(data: bytes, needle: bytes) -> bytes:
    where = data.find(needle)
    assert where >= 0
    position = where + len(needle) // 2
    return data[:position] + bytes([data[position] ^ 0x10]) + data[position + 1:]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_damaged_model_files_are_refused(tmp_path, small, suffix):
    path = tmp_path / f"model{suffix}"
    feynmlp.save(small, path)
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "truncated-tail": data[:-7],
        "empty": b"",
        "garbage": b"\x00\x01not a model" * 10,
        "flipped": _flip_byte(data, small.weights[0].astype("<f8").tobytes()),
    }
    for name, content in cases.items():
        damaged = tmp_path / f"{name}{suffix}"
        damaged.write_bytes(content)
        with pytest.raises(ModelFileError, match=re.escape(str(damaged))) as info:
            feynmlp.load(damaged)
        assert isinstance(info.value, FeynmlpError)
        if name == "flipped":
            # The damaged tensor is named: by feynmlp's SHA-256 (safetensors has no checksum of
            # its own) or by the zip member's CRC-32 (npz).
            assert "layers.0.weight" in str(info.value)
            assert ("checksum" if suffix == ".safetensors" else "CRC") in str(info.value)
    with pytest.raises(ModelFileError, match="no such file"):
        feynmlp.load(tmp_path / f"missing{suffix}")
    with pytest.raises(ModelFileError, match=r"\.safetensors.*\.npz"):
        feynmlp.load(tmp_path / "model.pt")
