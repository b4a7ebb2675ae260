"""Fuzzing the public API: random networks give right numbers, random junk gives documented errors.

In: hypothesis-drawn architectures (0-2 hidden layers of width 1-4, 1-3 inputs, 1-2 outputs),
per-layer activations, output activations, orders 1-4 (the shipped kernels; on-demand orders
are covered by test_kernels_against_sympy and test_hardening_cache), points, variable subsets
and directions; and malformed versions of every argument (wrong shapes, NaN/inf, wrong types,
absurd orders, broken weight lists, unknown activations), and model files with flipped,
inserted or cut bytes.
Out: every call either returns the right answer, checked against an independent reference
(torch.func.jacfwd nested k times in float64 for the derivative tensors, torch on the line
x + t v for directional series), or raises a FeynmlpError (its subclasses included), the
documented error of every public function. Anything else (another exception, a crash, a
silently wrong number) fails.

Examples per test: FEYNMLP_FUZZ_EXAMPLES (default 25); the draws are derandomised (the same
each run, so the suite is reproducible) unless FEYNMLP_FUZZ_RANDOM=1. Known gaps that the
strategies avoid (complex points, unknown dtype names, overflow inside the network) are
tests of their own, marked xfail, in test_hardening_inputs.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("torch")
from hypothesis import HealthCheck, assume, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import feynmlp  # noqa: E402
from feynmlp.errors import FeynmlpError, ModelFileError  # noqa: E402
from helpers.torch_reference import (  # noqa: E402
    torch_derivative_tensors, torch_directional_coefficients, torch_network)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

FUZZ = settings(max_examples=int(os.environ.get("FEYNMLP_FUZZ_EXAMPLES", "25")), deadline=None,
                derandomize=os.environ.get("FEYNMLP_FUZZ_RANDOM") != "1", database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SMOOTH = ("tanh", "sigmoid", "softplus", "silu", "gelu", "sin", "cos", "exp", "identity")
RELU_LIKE = ("relu", "leaky_relu", "hardtanh", "relu6")
RTOL = 1e-9


# ----------------------------------------------------------------------------- reference

def assert_close(got, want, rtol=RTOL, what=""):
    """max |got - want| <= rtol * max(1, max |want|): relative to the size of the whole tensor."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.all(np.isfinite(got)), what
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    error = float(np.max(np.abs(got - want))) if want.size else 0.0
    assert error <= rtol * scale, f"{what}: max error {error:.3g} for scale {scale:.3g}"


def check_expansion(mlp, points, order, wrt, expansion, rtol=RTOL):
    """`expansion` (of taylor(mlp, points, order, wrt)) against the torch reference."""
    points = np.asarray(points, dtype=np.float64)
    single = points.ndim == 1
    batch = np.atleast_2d(points)
    variables = list(range(mlp.n_inputs)) if wrt is None else [int(i) for i in np.atleast_1d(wrt)]
    for p, point in enumerate(batch):
        tensors = torch_derivative_tensors(torch_network(mlp), point, order)
        assume(all(np.all(np.isfinite(t)) and np.max(np.abs(t)) < 1e12 for t in tensors))
        for k in range(order + 1):
            got = expansion.derivative_tensor(k)
            got = got if single else got[p]
            want = tensors[k][np.ix_(range(mlp.n_outputs), *([variables] * k))] if k else tensors[0]
            assert_close(got, want, rtol, f"order {k} at point {p}")


# ----------------------------------------------------------------------------- strategies

@st.composite
def networks(draw, activations=SMOOTH, outputs=(None, "tanh", "sigmoid", "softplus", "identity")):
    sizes = ([draw(st.integers(1, 3))] + [draw(st.integers(1, 4)) for _ in range(draw(st.integers(0, 2)))]
             + [draw(st.integers(1, 2))])
    hidden = [draw(st.sampled_from(activations)) for _ in range(len(sizes) - 2)]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.3, 1.0]))
    weights = [scale * rng.normal(size=(sizes[i + 1], sizes[i])) / np.sqrt(sizes[i]) for i in range(len(sizes) - 1)]
    biases = [0.5 * rng.normal(size=sizes[i + 1]) for i in range(len(sizes) - 1)]
    return feynmlp.MLP(weights, biases, hidden, draw(st.sampled_from(outputs)))


def points_for(n_in, batch=None):
    coordinate = st.floats(-2.0, 2.0, allow_nan=False)
    if batch is None:
        return st.lists(coordinate, min_size=n_in, max_size=n_in)
    return st.lists(st.lists(coordinate, min_size=n_in, max_size=n_in), min_size=batch, max_size=batch)


BAD_FLOATS = st.sampled_from([np.nan, np.inf, -np.inf])
JUNK = st.one_of(
    st.none(), st.booleans(), st.text(max_size=4), st.integers(-10**20, 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.lists(st.one_of(st.floats(-3, 3), st.text(max_size=2), st.lists(st.floats(-3, 3), max_size=3)), max_size=4),
)


@st.composite
def arrays_for(draw, n_in):
    """Arrays near the right shape: right or wrong width and rank, sometimes one NaN/inf."""
    shape = draw(st.one_of(st.just((n_in,)), st.tuples(st.integers(0, 3), st.just(n_in)),
                           hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
    array = draw(hnp.arrays(np.float64, shape, elements=st.floats(-2, 2)))
    if array.size and draw(st.booleans()):
        array.flat[draw(st.integers(0, array.size - 1))] = draw(BAD_FLOATS)
    return array


ORDERS = st.one_of(st.integers(1, 4), st.integers(-10**6, 0), st.integers(17, 10**30),
                   st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans(),
                   st.sampled_from([np.int64(2), np.float64(2.0), [2], 10_000]))


def wrts_for(n_in):
    return st.one_of(st.none(), st.lists(st.integers(-3, n_in + 2), max_size=n_in + 2),
                     st.lists(st.integers(0, n_in - 1), min_size=1, max_size=n_in, unique=True),
                     st.integers(-2, n_in + 1), st.text(max_size=2), st.lists(st.floats(-1, 4), max_size=3),
                     st.just([[0]]))


DTYPES = st.sampled_from([np.float64, np.float32, "float64", "float32", "f8", None, np.float16, np.int64, complex])


def normalised_order(order):
    """The order as taylor accepts it (an int 1..4 here), or None if it must be refused."""
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, np.integer)):
        return None
    return int(order) if 1 <= order <= 16 else None


# ----------------------------------------------------------------------------- right answers

@FUZZ
@given(data=st.data())
def test_taylor_matches_nested_jacfwd(data):
    mlp = data.draw(networks(), "mlp")
    order = data.draw(st.integers(1, 4), "order")
    batch = data.draw(st.sampled_from([None, 1, 2]), "batch")
    points = data.draw(points_for(mlp.n_inputs, batch), "points")
    wrt = data.draw(st.one_of(st.none(), st.lists(st.integers(0, mlp.n_inputs - 1), min_size=1,
                                                  max_size=mlp.n_inputs, unique=True)), "wrt")
    expansion = feynmlp.taylor(mlp, points, order, wrt=wrt)
    check_expansion(mlp, points, order, wrt, expansion)
    # The polynomial itself: at h = 0 it is the network's value, computed by NumPy.
    n = len(expansion.wrt)
    at_zero = expansion(np.zeros(n) if batch is None else np.zeros((len(points), n)))
    assert_close(at_zero, mlp(np.asarray(points, dtype=np.float64)), 1e-12, "value")


@FUZZ
@given(data=st.data())
def test_directional_matches_torch_along_the_line(data):
    mlp = data.draw(networks(), "mlp")
    order = data.draw(st.integers(1, 4), "order")
    point = data.draw(points_for(mlp.n_inputs), "point")
    direction = data.draw(points_for(mlp.n_inputs), "direction")
    series = feynmlp.directional(mlp, point, direction, order)
    want = torch_directional_coefficients(torch_network(mlp), point, direction, order)
    assume(np.all(np.isfinite(want)) and np.max(np.abs(want)) < 1e12)
    assert_close(series, want, RTOL, "directional")


# ----------------------------------------------------------------------------- malformed calls

def sometimes_broken(data, valid, broken, label):
    """A valid value three times in four, else a broken one."""
    return data.draw(valid if data.draw(st.integers(0, 3), f"{label} kept") else broken, label)


@FUZZ
@given(data=st.data())
def test_malformed_taylor_calls_raise_documented_errors(data):
    mlp = data.draw(networks(), "mlp")
    n = mlp.n_inputs
    x = sometimes_broken(data, st.one_of(points_for(n), points_for(n, 2)), st.one_of(arrays_for(n), JUNK), "x")
    order = sometimes_broken(data, st.integers(1, 4), ORDERS, "order")
    wrt = sometimes_broken(data, st.one_of(st.none(), st.lists(st.integers(0, n - 1), min_size=1, max_size=n,
                                                               unique=True)), wrts_for(n), "wrt")
    dtype = sometimes_broken(data, st.sampled_from([np.float64, "float64", None]), DTYPES, "dtype")
    try:
        expansion = feynmlp.taylor(mlp, x, order, wrt=wrt, dtype=dtype)
    except FeynmlpError:
        event("refused")
        return
    event("accepted")
    # Accepted: then every argument was valid, and the answer must be right.
    k = normalised_order(order)
    assert k is not None and k <= 4, f"order {order!r} was accepted"
    points = np.asarray(x, dtype=np.float64)
    assert points.ndim in (1, 2) and points.shape[-1] == mlp.n_inputs and np.all(np.isfinite(points))
    assert np.dtype(dtype) in (np.float64, np.float32)
    assert expansion.dtype == np.dtype(dtype)
    check_expansion(mlp, points, k, wrt, expansion, RTOL if np.dtype(dtype) == np.float64 else 1e-3)


@FUZZ
@given(data=st.data())
def test_malformed_directional_calls_raise_documented_errors(data):
    mlp = data.draw(networks(), "mlp")
    n = mlp.n_inputs
    valid = st.one_of(points_for(n), points_for(n, 2), points_for(n, 3))
    x = sometimes_broken(data, valid, st.one_of(arrays_for(n), JUNK), "x")
    v = sometimes_broken(data, valid, st.one_of(arrays_for(n), JUNK), "v")
    order = sometimes_broken(data, st.integers(1, 4), ORDERS, "order")
    try:
        series = feynmlp.directional(mlp, x, v, order)
    except FeynmlpError:
        event("refused")
        return
    event("accepted")
    k = normalised_order(order)
    assert k is not None and k <= 4, f"order {order!r} was accepted"
    points, directions = np.broadcast_arrays(np.atleast_2d(np.asarray(x, dtype=np.float64)),
                                             np.atleast_2d(np.asarray(v, dtype=np.float64)))
    got = series[None] if series.ndim == 2 else series  # (n_out, K+1) for one point and direction
    for p in range(points.shape[0]):
        want = torch_directional_coefficients(torch_network(mlp), points[p], directions[p], k)
        assume(np.all(np.isfinite(want)) and np.max(np.abs(want)) < 1e12)
        assert_close(got[p], want, RTOL, f"point {p}")


NETWORK_MUTATIONS = (
    "none", "none", "alias", "NaN weight", "inf bias", "transposed weight", "3-D weight", "empty weight",
    "junk weight", "string weight", "bias of the wrong length", "missing bias", "extra bias", "weights not a list",
    "no layers", "junk activation", "unknown activation", "wrong number of activations", "piecewise linear",
    "junk output activation", "custom activation of two symbols", "complex weight",
)


@st.composite
def network_arguments(draw):
    """(weights, biases, activation, output_activation, what was broken): valid arguments of a
    random network with zero, one or two things broken."""
    sizes = ([draw(st.integers(1, 3))] + [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]
             + [draw(st.integers(1, 2))])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weights = [0.7 * rng.normal(size=(sizes[i + 1], sizes[i])) for i in range(len(sizes) - 1)]
    biases = [0.3 * rng.normal(size=sizes[i + 1]) for i in range(len(sizes) - 1)]
    activation = [draw(st.sampled_from(SMOOTH)) for _ in range(len(sizes) - 2)]
    output = draw(st.sampled_from([None, "tanh", "sigmoid"]))
    mutations = draw(st.lists(st.sampled_from(NETWORK_MUTATIONS), min_size=1, max_size=2))
    layer = draw(st.integers(0, len(weights) - 1))
    for mutation in mutations:
        if mutation == "alias":
            activation = [{"silu": "swish", "sigmoid": " Logistic", "identity": "linear"}.get(a, a.upper())
                          for a in activation]
        elif mutation == "NaN weight":
            weights[layer] = weights[layer].copy()
            weights[layer].flat[0] = np.nan
        elif mutation == "inf bias":
            biases[layer] = np.full_like(biases[layer], -np.inf)
        elif mutation == "transposed weight":
            weights[layer] = weights[layer].T
        elif mutation == "3-D weight":
            weights[layer] = weights[layer][None]
        elif mutation == "empty weight":
            weights[layer] = np.zeros((0, weights[layer].shape[1]))
        elif mutation == "junk weight":
            weights[layer] = draw(JUNK)
        elif mutation == "string weight":
            weights[layer] = weights[layer].astype(str)
        elif mutation == "bias of the wrong length":
            biases[layer] = np.append(biases[layer], 1.0)
        elif mutation == "missing bias":
            biases = biases[:-1]
        elif mutation == "extra bias":
            biases = biases + [np.zeros(1)]
        elif mutation == "weights not a list":
            weights = weights[0]
        elif mutation == "no layers":
            weights, biases = [], []
        elif mutation == "junk activation":
            activation = draw(JUNK)
        elif mutation == "unknown activation":
            activation = draw(st.text(max_size=6))
        elif mutation == "wrong number of activations":
            activation = activation + ["tanh"]
        elif mutation == "piecewise linear":
            activation = [draw(st.sampled_from(RELU_LIKE)) for _ in activation]
        elif mutation == "junk output activation":
            output = draw(st.one_of(JUNK, st.text(max_size=6)))
        elif mutation == "custom activation of two symbols":
            import sympy as sp

            x, y = sp.symbols("x y")
            activation = x * sp.tanh(y)
        elif mutation == "complex weight":
            weights[layer] = weights[layer] * (1 + 1j)
    return weights, biases, activation, output, mutations


@FUZZ
@given(arguments=network_arguments(), order=st.integers(1, 3))
def test_malformed_networks_raise_documented_errors(arguments, order):
    weights, biases, activation, output, mutations = arguments
    try:
        mlp = feynmlp.MLP(weights, biases, activation, output)
        expansion = feynmlp.taylor(mlp, np.full(mlp.n_inputs, 0.3), order)
    except FeynmlpError:
        event("refused")
        return
    event("accepted")
    always_invalid = {"NaN weight", "inf bias", "3-D weight", "empty weight", "string weight", "complex weight",
                      "bias of the wrong length", "missing bias", "extra bias", "weights not a list", "no layers",
                      "wrong number of activations", "custom activation of two symbols"}
    assert not always_invalid & set(mutations), mutations
    assert all(np.all(np.isfinite(w)) for w in mlp.weights + mlp.biases)
    if mlp.is_relu_like:
        assert order == 1  # higher orders are refused for piecewise-linear networks
        return
    check_expansion(mlp, np.full(mlp.n_inputs, 0.3), order, None, expansion)


# Exponent lists of the right length holding floats, strings, None or ragged lists are left out:
# they raise TypeError or ValueError today (test_hardening_inputs.py::
# test_non_integer_exponents_are_a_feynmlp_error).
# Orders 5-16 are left out too: they are valid, and generating their kernels takes seconds.
ALPHAS = st.one_of(st.lists(st.integers(0, 2), min_size=2, max_size=2),
                   st.lists(st.integers(0, 2), min_size=2, max_size=2),
                   st.lists(st.sampled_from([-2, -1, 0, 1, 2, 20, 10**6]), min_size=2, max_size=2),
                   st.lists(st.integers(-2, 2), max_size=4),
                   st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=1), min_size=2, max_size=2),
                   st.none(), st.integers(-3, 3), st.text(max_size=3), st.floats(), st.booleans(),
                   st.lists(st.booleans(), min_size=2, max_size=2), st.just([2**70, 0]))


@FUZZ
@given(alpha=ALPHAS)
def test_malformed_diagram_requests_raise_documented_errors(alpha):
    mlp = feynmlp.MLP([np.array([[0.5, -0.3], [0.2, 0.8]]), np.array([[1.0, -1.0]])], None, "tanh")
    try:
        contributions = feynmlp.diagram_contributions(mlp, [0.1, -0.2], alpha)
    except FeynmlpError:
        event("refused")
        return
    event("accepted")
    exponents = np.asarray(alpha, dtype=np.int64)
    assert exponents.shape == (2,) and np.all(exponents >= 0) and 1 <= exponents.sum() <= 4
    total = sum(c.value for c in contributions)
    expansion = feynmlp.taylor(mlp, [0.1, -0.2], int(exponents.sum()))
    assert_close(total, expansion.coefficient(exponents), 1e-10, "sum of diagrams")


# ----------------------------------------------------------------------------- damaged model files

@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    import sympy as sp

    x = sp.Symbol("x")
    rng = np.random.default_rng(7)
    mlp = feynmlp.MLP([rng.normal(size=(3, 2)), rng.normal(size=(2, 3)), rng.normal(size=(1, 2))], None,
                      ["tanh", x * sp.tanh(x)], "sigmoid")
    folder = tmp_path_factory.mktemp("models")
    originals = {}
    for suffix in (".safetensors", ".npz"):
        path = folder / f"model{suffix}"
        mlp.save(path, record={"note": "fuzz"})
        originals[suffix] = path.read_bytes()
    return mlp, folder, originals


@settings(FUZZ, max_examples=4 * FUZZ.max_examples)
@given(data=st.data(), suffix=st.sampled_from([".safetensors", ".npz"]))
def test_damaged_model_files_are_refused_or_read_back_unchanged(saved_models, data, suffix):
    mlp, folder, originals = saved_models
    good = bytearray(originals[suffix])
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]), "kind")
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4), "flips")):
            position = data.draw(st.integers(0, len(good) - 1), "position")
            good[position] ^= 1 << data.draw(st.integers(0, 7), "bit")
    elif kind == "cut":
        good = good[:data.draw(st.integers(0, len(good) - 1), "length")]
    else:
        position = data.draw(st.integers(0, len(good)), "position")
        good[position:position] = data.draw(st.binary(min_size=1, max_size=8), "inserted")
    path = folder / f"damaged{suffix}"
    path.write_bytes(bytes(good))
    try:
        loaded = feynmlp.load(path)
    except ModelFileError:
        event("refused")
        return
    event("read back")
    # Read without complaint: then it must be exactly the saved network (the record, which is
    # free-form text, may differ).
    assert loaded.layer_sizes == mlp.layer_sizes
    for a, b in zip(loaded.weights + loaded.biases, mlp.weights + mlp.biases):
        np.testing.assert_array_equal(a, b)
    assert loaded.hidden_activations == mlp.hidden_activations
    assert loaded.output_activation == mlp.output_activation

