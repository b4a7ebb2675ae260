"""feynmlp.operator, taylor(..., indices=...) and feynmlp.divergence.

References: torch.func (dense derivative tensors by nested jacfwd, contracted with the
operator's terms), the all-coefficients path feynmlp.taylor for orders up to 6, the full vertex
tables of feynmlp.multi_index for the tables built over a subset, and a hand-written loop.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

import feynmlp
from feynmlp import FeynmlpError
from feynmlp.operator_terms import Subset
from feynmlp import multi_index
from helpers.networks import random_mlp
from helpers.torch_reference import assert_relative_close, torch_derivative_tensors, torch_network

RTOL = 1e-10


def torch_operator(mlp, points, terms, custom=None):
    """sum_alpha c_alpha d^alpha f from torch's dense tensors: (batch, n_out)."""
    f = torch_network(mlp, custom)
    order = max(sum(alpha) for alpha in terms)
    values = []
    for x in points:
        tensors = torch_derivative_tensors(f, x, order)
        total = 0.0
        for alpha, c in terms.items():
            index = tuple(i for i, a in enumerate(alpha) for _ in range(a))
            total = total + c * tensors[len(index)][(slice(None),) + index]
        values.append(total)
    return np.array(values)


CASES = [
    ((3, 6, 5, 1), "tanh", None, {(1, 0, 0): 1.0, (0, 2, 0): 1.0, (0, 0, 2): 1.0}),
    ((3, 6, 5, 2), "sigmoid", None, {(2, 0, 0): 1.0, (0, 1, 1): -0.5, (0, 0, 3): 2.0}),
    ((4, 5, 4, 3), ["silu", "gelu"], None, {(0, 1, 0, 0): 0.25, (1, 1, 1, 1): 1.5, (0, 0, 0, 0): -2.0}),
    ((2, 5, 5, 5, 1), "softplus", "tanh", {(4, 0): 1.0, (2, 2): 2.0, (0, 4): 1.0}),
    ((5, 7, 2), "sin", None, {(0, 0, 3, 0, 1): 3.0}),
    ((3, 4, 4, 2), "exp", None, {(1, 1, 0): 1.0, (0, 0, 1): -1.0}),
    ((2, 4, 3), "cos", None, {(1, 0): 1.0}),
    # Second order: the weighted Laplacian along the eigenvectors of the operator's matrix
    # (mixed partials, negative eigenvalues), with first-order and zeroth-order parts.
    ((3, 6, 5, 2), "tanh", None, {(1, 1, 0): 2.0, (2, 0, 0): -1.0, (0, 0, 2): 0.5, (0, 1, 0): 3.0, (0, 0, 0): 1.0}),
    ((3, 5, 4, 1), ["gelu", "sin"], "sigmoid", {(0, 1, 1): 1.0, (1, 0, 0): -2.0}),
    ((4, 3), "tanh", None, {(1, 1, 0, 0): 1.0, (0, 0, 0, 1): 1.0}),
    ((2, 4, 1), "softplus", None, {(2, 0): 1.0, (0, 2): 1.0}),
]


@pytest.mark.parametrize("sizes, activations, output, terms", CASES)
def test_operator_against_torch(sizes, activations, output, terms):
    rng = np.random.default_rng(sum(sizes))
    mlp = random_mlp(rng, sizes, activations, output)
    points = rng.normal(size=(3, sizes[0]))
    got = feynmlp.operator(mlp, points, terms)
    assert_relative_close(got, torch_operator(mlp, points, terms), RTOL, f"operator {terms}")
    single = feynmlp.operator(mlp, points[0], terms)
    assert single.shape == (sizes[-1],)
    # The same point alone: equal to rounding, not bit for bit, since the BLAS sums a product
    # with another row count in another order (seen with one worker thread).
    np.testing.assert_allclose(single, got[0], rtol=1e-14, atol=1e-15 * np.max(np.abs(got)))


@pytest.mark.parametrize("terms", [
    {(6, 0, 0): 1.0},
    {(2, 2, 2): 1.0, (0, 3, 3): -0.5, (1, 0, 5): 0.25, (0, 0, 0): 1.0},
    {(1, 2, 3): 2.0, (4, 1, 0): 1.0, (0, 0, 1): 3.0},
])
def test_orders_up_to_6_against_all_coefficients(terms):
    rng = np.random.default_rng(7)
    mlp = random_mlp(rng, (3, 6, 6, 2), ["tanh", "softplus"])
    points = rng.normal(size=(2, 3))
    expansion = feynmlp.taylor(mlp, points, 6)
    want = sum(c * math.prod(math.factorial(a) for a in alpha) * expansion.coefficient(list(alpha))
               for alpha, c in terms.items())
    assert_relative_close(feynmlp.operator(mlp, points, terms), want, RTOL, f"operator {terms}")


def test_sympy_expression_is_read_as_terms():
    t, x, y = sp.symbols("t x y")
    u = sp.Function("u")(t, x, y)
    expression = sp.Derivative(u, t) + sp.Derivative(u, (x, 2)) + 3 * sp.Derivative(u, x, y) / 2 - sp.pi * u
    rng = np.random.default_rng(2)
    mlp = random_mlp(rng, (3, 5, 5, 1), "tanh")
    points = rng.normal(size=(4, 3))
    terms = {(1, 0, 0): 1.0, (0, 2, 0): 1.0, (0, 1, 1): 1.5, (0, 0, 0): -math.pi}
    assert_relative_close(feynmlp.operator(mlp, points, expression), torch_operator(mlp, points, terms), RTOL,
                          "sympy operator")


def test_sparse_taylor_against_the_full_expansion():
    rng = np.random.default_rng(4)
    mlp = random_mlp(rng, (4, 6, 5, 2), "gelu")
    points = rng.normal(size=(3, 4))
    listed = [(0, 0, 0, 0), (3, 0, 0, 1), (0, 2, 0, 0), (1, 1, 1, 1)]
    sparse = feynmlp.taylor(mlp, points, 4, indices=listed)
    assert isinstance(sparse, feynmlp.SparseExpansion)
    assert sparse.coefficients.shape == (3, 2, 4)
    full = feynmlp.taylor(mlp, points, 4)
    for column, alpha in enumerate(listed):
        assert_relative_close(sparse.coefficients[:, :, column], full.coefficient(list(alpha)), RTOL, str(alpha))
        np.testing.assert_array_equal(sparse.coefficient(alpha), sparse.coefficients[:, :, column])
    np.testing.assert_array_equal(sparse.multi_indices, np.array(listed))


def test_divergence_against_torch():
    rng = np.random.default_rng(6)
    mlp = random_mlp(rng, (4, 7, 4), "tanh")
    points = rng.normal(size=(3, 4))
    f = torch_network(mlp)
    want = np.array([np.trace(torch_derivative_tensors(f, x, 1)[1]) for x in points])
    assert_relative_close(feynmlp.divergence(mlp, points), want, RTOL, "divergence")
    with pytest.raises(FeynmlpError, match="as many outputs as inputs"):
        feynmlp.divergence(random_mlp(rng, (3, 4, 2), "tanh"), np.zeros(3))


@pytest.mark.parametrize("n, order", [(2, 4), (3, 3), (4, 2)])
def test_subset_tables_of_a_full_set_match_the_full_tables(n, order):
    # With every multi-index up to `order` requested, S is the full set and its tables must
    # hold exactly the rows of feynmlp.multi_index.vertex_tables (columns map through the exponents).
    requested = [tuple(int(v) for v in row) for row in multi_index.exponents(n, order)]
    subset = Subset(requested, n)
    full = multi_index.exponents(n, order)
    to_full = {tuple(row): c for c, row in enumerate(full.tolist())}
    mapping = np.array([to_full[tuple(row)] for row in subset.exponents.tolist()])
    reference = multi_index.vertex_tables(n, order)
    for m in range(2, order + 1):
        table, weight = subset.tables[2 * (m - 2)], subset.tables[2 * (m - 2) + 1]
        want_table, want_weight = reference[2 * (m - 2)], reference[2 * (m - 2) + 1]
        got = sorted((tuple(sorted(mapping[row[1:]].tolist())), int(mapping[row[0]]), w) for row, w in zip(table, weight))
        want = sorted((tuple(row[1:].tolist()), int(row[0]), w) for row, w in zip(want_table, want_weight))
        assert got == want


def test_subset_is_the_downward_closure():
    subset = Subset([(2, 0, 1), (0, 0, 0)], 3)
    assert sorted(map(tuple, subset.exponents.tolist())) == sorted(
        [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)])
    assert subset.variables.tolist() == [0, 2]


# ----------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def mlp():
    return random_mlp(np.random.default_rng(0), (3, 4, 1), "tanh")


@pytest.mark.parametrize("terms, message", [
    ({(2, 0): 1.0}, r"term \(2, 0\): the multi-index has 2 entries, the network has 3 inputs"),
    ({(2, -1, 0): 1.0}, r"term \(2, -1, 0\): the multi-index has the negative entry -1"),
    ({(1.5, 0, 0): 1.0}, r"term \(1.5, 0, 0\): the multi-index entries must be integers, got 1.5"),
    ({(True, 0, 0): 1.0}, r"term \(True, 0, 0\): the multi-index entries must be integers"),
    ({}, "terms is empty"),
    ({(2, 0, 0): float("nan")}, r"term \(2, 0, 0\): the coefficient nan is not finite"),
    ({(2, 0, 0): float("inf")}, r"term \(2, 0, 0\): the coefficient inf is not finite"),
    ({(2, 0, 0): "1.0"}, r"term \(2, 0, 0\): the coefficient must be a real number, got '1.0'"),
    ({(2, 0, 0): 1j}, r"term \(2, 0, 0\): the coefficient must be a real number"),
    ({(9, 8, 0): 1.0}, r"term \(9, 8, 0\): the derivative has order 17, above the largest supported order 16"),
    ({"xx": 1.0}, r"term 'xx': a multi-index must be a tuple of 3 non-negative integers, got str"),
    ([((2, 0, 0), 1.0)], "terms must be a dict"),
])
def test_bad_terms_name_the_term(mlp, terms, message):
    with pytest.raises(FeynmlpError, match=message):
        feynmlp.operator(mlp, np.zeros(3), terms)


def _symbols():
    t, x, y = sp.symbols("t x y")
    return t, x, y, sp.Function("u")(t, x, y)


@pytest.mark.parametrize("build, message", [
    (lambda t, x, y, u: sp.Derivative(u, x) * sp.Derivative(u, y), r"is not a number times a derivative of u\(t, x, y\)"),
    (lambda t, x, y, u: x * sp.Derivative(u, x), r"term x\*Derivative\(u\(t, x, y\), x\) is not a number times"),
    (lambda t, x, y, u: sp.Derivative(u, x) + sp.Derivative(sp.Function("v")(t, x, y), y), "exactly one function"),
    (lambda t, x, y, u: sp.Derivative(sp.Function("u")(t, x), x), "must take the network's 3 inputs"),
    (lambda t, x, y, u: sp.sin(x) + x, "exactly one function"),
    (lambda t, x, y, u: sp.Derivative(u, x) ** 2, "is not a number times a derivative"),
    (lambda t, x, y, u: sp.I * sp.Derivative(u, x), "is not a real number"),
    (lambda t, x, y, u: sp.oo * sp.Derivative(u, x), "the coefficient oo is not finite"),
    (lambda t, x, y, u: sp.Derivative(u, x) + 1, r"term 1 is not a number times a derivative"),
    (lambda t, x, y, u: sp.Derivative(u, (x, 17)), r"the derivative has order 17"),
])
def test_bad_sympy_operators(mlp, build, message):
    with pytest.raises(FeynmlpError, match=message):
        feynmlp.operator(mlp, np.zeros(3), build(*_symbols()))


@pytest.mark.parametrize("kwargs, message", [
    (dict(indices=[(1, 0)]), r"index \(1, 0\): the multi-index has 2 entries"),
    (dict(indices=[(3, 0, 0)]), r"index \(3, 0, 0\) has order 3, above the requested order 2"),
    (dict(indices=[]), "indices is empty"),
    (dict(indices="xx"), "indices must be a list of multi-indices"),
    (dict(indices=[(1, 0, 0)], wrt=[0]), "drop wrt= and scheme="),
])
def test_bad_sparse_requests(mlp, kwargs, message):
    with pytest.raises(FeynmlpError, match=message):
        feynmlp.taylor(mlp, np.zeros(3), 2, **kwargs)


def test_relu_networks_refuse_second_order_operators():
    relu = random_mlp(np.random.default_rng(1), (3, 4, 1), "relu")
    for call in (lambda: feynmlp.laplacian(relu, np.zeros(3)), lambda: feynmlp.biharmonic(relu, np.zeros(3)),
                 lambda: feynmlp.operator(relu, np.zeros(3), {(0, 2, 0): 1.0})):
        with pytest.raises(feynmlp.UnsupportedActivationError):
            call()
    # First-order operators of ReLU networks are fine (a brute-force loop over the weights).
    x = np.array([0.3, -0.2, 0.5])
    z = relu.weights[0] @ x + relu.biases[0]
    want = relu.weights[1] @ ((z > 0) * relu.weights[0][:, 1])
    np.testing.assert_allclose(feynmlp.operator(relu, x, {(0, 1, 0): 1.0}), want, rtol=1e-12)


def test_operators_with_too_many_multi_indices_below_them_are_refused():
    # 13 terms of 16 first powers each over 20 inputs: 13 * 2^16 multi-indices below them,
    # counted (and refused) before the set is built.
    n = 20
    mlp = random_mlp(np.random.default_rng(0), (n, 2, 1), "tanh")
    terms = {tuple(1 if (i - shift) % n < 16 else 0 for i in range(n)): 1.0 for shift in range(13)}
    with pytest.raises(feynmlp.ResourceLimitError, match="more than 200000 multi-indices"):
        feynmlp.operator(mlp, np.zeros(n), terms)


def test_vertex_tables_beyond_the_memory_budget_are_refused(monkeypatch):
    # d^10 f / dx_0 .. dx_9: the tables list every set partition of every subset of the ten
    # inputs (Bell(11) = 678,570 rows), tens of MB while they are built.
    mlp = random_mlp(np.random.default_rng(0), (10, 2, 1), "tanh")
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", "0.01")
    with pytest.raises(feynmlp.ResourceLimitError, match="the vertex tables of this operator"):
        feynmlp.operator(mlp, np.zeros(10), {(1,) * 10: 1.0})
