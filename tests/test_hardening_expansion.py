"""TaylorExpansion's evaluation, dense tensors and SymPy export at sizes and inputs users reach.

In: expansions built by feynmlp.taylor from small networks, and TaylorExpansions built directly
from random coefficients where only the combinatorics matter (so that no kernel of a high
order has to be generated). Out: checks of
- e(h) against a brute-force sum over multi-indices (enumerated here with itertools) and, for
  small h, against the network itself (the remainder shrinks like |h|^(K+1)); its memory stays
  within the budget (chunks of displacements) and a displacement that cannot fit is refused
  before allocation; a float32 expansion evaluates in float32;
- derivative_tensor(k) against its definition written here with permutations, and against
  torch's autodiff for a real network at k = 2..4, fast at high k;
- to_sympy's symbols (number, distinctness, a string of names);
- torch tensors that require grad, accepted wherever arrays are;
- non-finite coefficients from an activation evaluated outside its domain, named as such.
"""
from __future__ import annotations

import itertools
import math
import time
import tracemalloc

import numpy as np
import pytest
import sympy as sp
import torch

import feynmlp
from feynmlp import MLP, TaylorExpansion, multi_index
from feynmlp.errors import FeynmlpError, ResourceLimitError
from helpers.networks import random_mlp
from helpers.torch_reference import (assert_relative_close, torch_derivative_tensors, torch_directional_coefficients,
                                     torch_network)


def random_expansion(n, order, n_out=2, batch=None, dtype=np.float64, seed=0):
    """A TaylorExpansion over all n inputs with random coefficients (no network behind it)."""
    rng = np.random.default_rng(seed)
    columns = math.comb(n + order, order)
    points = rng.normal(size=(batch or 1, n))
    coefficients = rng.normal(size=(batch or 1, n_out, columns)).astype(dtype)
    return TaylorExpansion(coefficients, points, order, tuple(range(n)), n, batch is None)


def brute_force_polynomial(expansion, h):
    """sum over every alpha with |alpha| <= K of coefficient(alpha) * prod(h ** alpha), for one
    displacement h over all inputs; the multi-indices are enumerated here, not taken from feynmlp."""
    n = expansion.n_inputs
    total = 0.0
    for degree in range(expansion.order + 1):
        for variables in itertools.combinations_with_replacement(range(n), degree):
            alpha = [variables.count(i) for i in range(n)]
            total = total + expansion.coefficient(alpha) * math.prod(float(h[i]) ** alpha[i] for i in range(n))
    return np.asarray(total)


def peak_bytes(call):
    tracemalloc.start()
    try:
        result = call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


# ----------------------------------------------------------------------------- e(h)

@pytest.mark.parametrize("n,order", [(1, 5), (2, 4), (3, 3), (4, 2)])
def test_evaluation_matches_the_brute_force_sum(n, order):
    expansion = random_expansion(n, order, n_out=3)
    rng = np.random.default_rng(1)
    H = rng.normal(size=(5, n))
    got = expansion(H)
    want = np.stack([brute_force_polynomial(expansion, h) for h in H])
    assert_relative_close(got, want, rtol=1e-13, what="e(H)")
    assert_relative_close(expansion(H[2]), want[2], rtol=1e-13, what="e(h)")
    # Leading axes of any shape are kept.
    assert_relative_close(expansion(H[:4].reshape(2, 2, n)), want[:4].reshape(2, 2, 3), rtol=1e-13, what="e(H) 3-D")


def test_batch_evaluation_uses_each_points_own_coefficients():
    expansion = random_expansion(3, 3, n_out=2, batch=4)
    H = np.random.default_rng(2).normal(size=(4, 3))
    single = [TaylorExpansion(expansion.coefficients[b:b + 1], expansion.point[b:b + 1], 3, (0, 1, 2), 3, True)
              for b in range(4)]
    want = np.stack([brute_force_polynomial(s, h) for s, h in zip(single, H)])
    assert_relative_close(expansion(H), want, rtol=1e-13, what="batch e(H)")


def test_evaluation_with_wrt_takes_the_expanded_variables_only():
    mlp = random_mlp(np.random.default_rng(3), (4, 5, 2), "tanh")
    x = np.array([0.1, -0.3, 0.2, 0.4])
    part = feynmlp.taylor(mlp, x, 3, wrt=[3, 1])
    full = feynmlp.taylor(mlp, x, 3)
    h = np.array([0.05, -0.02])
    embedded = np.zeros(4)
    embedded[[3, 1]] = h
    assert_relative_close(part(h), full(embedded), rtol=1e-13, what="wrt evaluation")


@pytest.mark.parametrize("order", [2, 3, 4])
def test_evaluation_approximates_the_network_with_the_taylor_remainder(order):
    mlp = random_mlp(np.random.default_rng(4), (3, 6, 6, 2), ["tanh", "sin"])
    x = np.array([0.2, -0.1, 0.3])
    expansion = feynmlp.taylor(mlp, x, order)
    direction = np.array([0.6, -0.8, 0.5])
    errors = []
    for scale in (2e-2, 1e-2, 5e-3):
        h = scale * direction
        errors.append(np.max(np.abs(expansion(h) - mlp(x + h))))
    # The remainder is O(|h|^(K+1)): halving h divides it by about 2^(K+1).
    for big, small in zip(errors, errors[1:]):
        ratio = big / small
        assert 0.7 * 2 ** (order + 1) < ratio < 1.4 * 2 ** (order + 1), (order, errors)
    # Several displacements at once give the same as one at a time.
    H = np.outer([2e-2, -1e-2, 5e-3], direction)
    assert_relative_close(expansion(H), np.stack([expansion(h) for h in H]), rtol=1e-14, what="stacked")


def test_float32_expansion_evaluates_in_float32():
    mlp = random_mlp(np.random.default_rng(5), (3, 4, 2), "tanh")
    x = np.array([0.1, 0.2, -0.3])
    e32 = feynmlp.taylor(mlp, x, 3, dtype=np.float32)
    e64 = feynmlp.taylor(mlp, x, 3)
    h = np.array([0.1, -0.05, 0.02])
    assert e32(h).dtype == np.float32
    assert e32(np.stack([h, h])).dtype == np.float32
    assert_relative_close(e32(h), e64(h), rtol=1e-5, what="float32 e(h)")


def test_evaluation_memory_stays_within_the_budget(monkeypatch):
    # 12 variables at order 4 (M = 1820) and 500 displacements: a (p, M, n) table of powers
    # would take 87 MB; chunks of displacements keep under a 10 MB budget.
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", str(10 / 1024))
    expansion = random_expansion(12, 4, n_out=2)
    H = np.random.default_rng(6).normal(scale=0.3, size=(500, 12))
    got, peak = peak_bytes(lambda: expansion(H))
    assert peak < 10 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    for p in (0, 137, 499):
        assert_relative_close(got[p], brute_force_polynomial(expansion, H[p]), rtol=1e-12, what=f"displacement {p}")


def test_a_displacement_that_cannot_fit_is_refused_before_allocation(monkeypatch):
    # 30 variables at order 3: M = 5456 monomials per displacement; the budget is 4 KiB.
    expansion = random_expansion(30, 3, n_out=1)
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", str(4 / 2**20))
    H = np.zeros((3, 30))
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match=r"5456 monomials.*FEYNMLP_MAX_MEMORY_GB"):
            expansion(H)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5456 * 8


@pytest.mark.parametrize("h,match", [(["a", "b"], "displacements"), (np.array([1 + 1j, 0]), "real"),
                                     ([[0.1, 0.2], [0.3]], "displacements"), (np.zeros(3), "2 components")],
                         ids=["strings", "complex", "ragged", "width"])
def test_bad_displacements_are_a_feynmlp_error(h, match):
    expansion = random_expansion(2, 2)
    with pytest.raises(FeynmlpError, match=match):
        expansion(h)


def test_batch_displacements_of_the_wrong_shape_are_refused():
    expansion = random_expansion(2, 2, batch=3)
    with pytest.raises(FeynmlpError, match=r"shape \(3, 2\)"):
        expansion(np.zeros((2, 2)))


# ----------------------------------------------------------------------------- index tables

@pytest.mark.parametrize("n,order", [(1, 4), (3, 4), (5, 3), (2, 8)])
def test_index_tables_against_enumeration(n, order):
    # Multi-indices enumerated here, graded then lexicographic in their sorted variable tuples.
    tuples = [t for k in range(order + 1) for t in itertools.combinations_with_replacement(range(n), k)]
    column = {t: c for c, t in enumerate(tuples)}
    parent, variable = multi_index.parents(n, order)
    assert parent[0] == 0 and variable[0] == n
    for c, t in enumerate(tuples[1:], start=1):
        assert (parent[c], variable[c]) == (column[t[:-1]], t[-1])
    factorials = multi_index.factorials(n, order)
    for c, t in enumerate(tuples):
        assert factorials[c] == math.prod(math.factorial(t.count(i)) for i in range(n))
    for k in range(1, order + 1):
        table = multi_index.insertions(n, order, k)
        lower = [t for t in tuples if len(t) == k - 1]
        assert table.shape == (len(lower), n)
        for r, t in enumerate(lower):
            for v in range(n):
                assert table[r, v] == column[tuple(sorted(t + (v,)))]


# ----------------------------------------------------------------------------- derivative_tensor

def permutation_tensor(expansion, k):
    """The dense tensor by its definition: each coefficient times alpha! on every ordering of
    its variables (the multi-index enumerated here with itertools)."""
    n = expansion.n_inputs
    coefficients = np.atleast_3d(expansion.coefficients) if expansion.coefficients.ndim == 2 else expansion.coefficients
    lead = coefficients.shape[:-1] if expansion.coefficients.ndim == 3 else coefficients.shape[:1]
    tensor = np.zeros(lead + (n,) * k)
    for variables in itertools.combinations_with_replacement(range(n), k):
        alpha = [variables.count(i) for i in range(n)]
        value = expansion.coefficient(alpha) * math.prod(math.factorial(a) for a in alpha)
        for permutation in set(itertools.permutations(variables)):
            tensor[(Ellipsis,) + permutation] = value
    return tensor


# (6, 6) and (5, 5) copy blocks of the last 2 and 1 axes (taylor._tensor_split), the others entry by entry.
@pytest.mark.parametrize("n,order,batch", [(1, 4, None), (3, 4, None), (2, 5, 3), (4, 3, 2), (6, 6, None), (5, 5, 2)])
def test_derivative_tensors_match_their_definition(n, order, batch):
    expansion = random_expansion(n, order, n_out=2, batch=batch)
    for k in range(order + 1):
        got = expansion.derivative_tensor(k)
        want = permutation_tensor(expansion, k)
        assert got.shape == want.shape
        assert np.array_equal(got, want), k


def test_float32_derivative_tensors_stay_float32():
    expansion = random_expansion(3, 3, dtype=np.float32)
    assert expansion.derivative_tensor(3).dtype == np.float32
    assert np.array_equal(expansion.derivative_tensor(3), permutation_tensor(expansion, 3).astype(np.float32))


def test_derivative_tensors_match_torch_autodiff():
    mlp = random_mlp(np.random.default_rng(7), (3, 5, 4, 2), ["tanh", "softplus"])
    x = np.array([0.3, -0.2, 0.1])
    expansion = feynmlp.taylor(mlp, x, 4)
    reference = torch_derivative_tensors(torch_network(mlp), x, 4)
    for k in range(2, 5):
        assert_relative_close(expansion.derivative_tensor(k), reference[k], rtol=1e-9, what=f"order {k}")
    partial = feynmlp.taylor(mlp, x, 3, wrt=[2, 0])
    assert_relative_close(partial.derivative_tensor(3), reference[3][:, [2, 0]][:, :, [2, 0]][:, :, :, [2, 0]],
                          rtol=1e-9, what="wrt order 3")


def test_high_order_derivative_tensors_are_fast():
    # 5 variables at order 8: 5^8 = 390625 entries from 495 coefficients per output. Filling
    # them one permutation at a time takes seconds (up to 8! orderings per coefficient).
    expansion = random_expansion(5, 8, n_out=2)
    start = time.perf_counter()
    tensor = expansion.derivative_tensor(8)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"{elapsed:.2f} s"
    # Spot checks against the definition: entry [i1..i8] is alpha! times the coefficient.
    rng = np.random.default_rng(8)
    for index in rng.integers(0, 5, size=(50, 8)):
        alpha = [int(np.sum(index == i)) for i in range(5)]
        want = expansion.coefficient(alpha) * math.prod(math.factorial(a) for a in alpha)
        assert np.array_equal(tensor[(slice(None),) + tuple(index)], want)


# ----------------------------------------------------------------------------- to_sympy

def linear_expansion():
    return feynmlp.taylor(MLP([[[1.0, 2.0, -1.0]]], None), np.zeros(3), 1)


def test_to_sympy_refuses_too_few_or_too_many_symbols():
    a, b, c, d = sp.symbols("a b c d")
    expansion = linear_expansion()
    with pytest.raises(FeynmlpError, match=r"3 symbols.*got 2"):
        expansion.to_sympy([a, b])
    with pytest.raises(FeynmlpError, match=r"3 symbols.*got 4"):
        expansion.to_sympy([a, b, c, d])


def test_to_sympy_refuses_repeated_symbols():
    a, b = sp.symbols("a b")
    with pytest.raises(FeynmlpError, match="repeated.*a"):
        linear_expansion().to_sympy([a, b, a])


def test_to_sympy_refuses_non_symbols():
    a, b = sp.symbols("a b")
    with pytest.raises(FeynmlpError, match="symbol"):
        linear_expansion().to_sympy([a, b, 3])


@pytest.mark.parametrize("names", ["a b c", "a, b, c", "a:c", ["a", "b", "c"]])
def test_to_sympy_accepts_names_as_sympy_symbols_does(names):
    a, b, c = sp.symbols("a b c")
    (polynomial,) = linear_expansion().to_sympy(names)
    assert sp.expand(polynomial - (a + 2 * b - c)) == 0


def test_to_sympy_polynomial_is_the_evaluated_polynomial():
    expansion = random_expansion(3, 3, n_out=2)
    symbols = sp.symbols("u v w")
    polynomials = expansion.to_sympy(symbols)
    h = np.array([0.3, -0.7, 0.2])
    values = [float(p.subs(dict(zip(symbols, h)))) for p in polynomials]
    want = brute_force_polynomial(expansion, h)
    assert_relative_close(np.array(values), want, rtol=1e-13, what="to_sympy at h")
    (one_variable,) = random_expansion(1, 2, n_out=1).to_sympy("t")
    assert one_variable.free_symbols == {sp.Symbol("t")}


# ----------------------------------------------------------------------------- torch inputs

def test_torch_tensors_that_require_grad_are_accepted():
    mlp = random_mlp(np.random.default_rng(9), (2, 4, 1), "tanh")
    x = np.array([0.3, -0.4])
    v = np.array([1.0, 0.5])
    tx = torch.tensor(x, requires_grad=True)
    tv = torch.tensor(v, requires_grad=True)
    expansion = feynmlp.taylor(mlp, tx, 3)
    assert np.array_equal(expansion.coefficients, feynmlp.taylor(mlp, x, 3).coefficients)
    assert np.array_equal(feynmlp.directional(mlp, tx, tv, 3), feynmlp.directional(mlp, x, v, 3))
    want = torch_directional_coefficients(torch_network(mlp), x, v, 3)
    assert_relative_close(feynmlp.directional(mlp, tx, tv, 3), want, rtol=1e-9, what="directional from torch")
    contributions = feynmlp.diagram_contributions(mlp, tx, [1, 1])
    assert_relative_close(sum(c.value for c in contributions), expansion.coefficient([1, 1]), rtol=1e-12,
                          what="diagrams from torch")
    h = torch.tensor([0.01, 0.02], dtype=torch.float64, requires_grad=True)
    assert np.array_equal(expansion(h), expansion(np.array([0.01, 0.02])))
    # float32 tensors, and batches.
    batch = torch.tensor([[0.3, -0.4], [0.1, 0.2]], dtype=torch.float32, requires_grad=True)
    assert feynmlp.taylor(mlp, batch, 2).coefficients.shape == (2, 1, 6)
    # A dtype NumPy lacks gets a FeynmlpError that says how to convert it.
    with pytest.raises(FeynmlpError, match=r"bfloat16.*\.double\(\)"):
        feynmlp.taylor(mlp, tx.to(torch.bfloat16), 2)


# ----------------------------------------------------------------------------- non-finite coefficients

def test_an_activation_outside_its_domain_is_named_not_called_an_overflow():
    x = sp.Symbol("x")
    mlp = MLP([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0]]], None, activation=sp.log(x))
    for dtype in (np.float64, np.float32):
        with pytest.raises(FeynmlpError) as info:
            feynmlp.taylor(mlp, [0.5, -1.5], 2, dtype=dtype)
        message = str(info.value)
        assert "log(x)" in message and "not defined" in message and "-1.5" in message, message
        assert "layer 1" in message and "neuron 1" in message, message
        assert "float64" not in message and "overflow" not in message.replace("not an overflow", ""), message
    sqrt_mlp = MLP([[[1.0, -1.0]], [[2.0]]], None, activation=sp.sqrt(x))
    with pytest.raises(FeynmlpError, match=r"sqrt\(x\).*not defined.*z = -0\.5"):
        feynmlp.directional(sqrt_mlp, [0.25, 0.75], [1.0, 0.0], 3)


def test_overflow_advice_depends_on_the_dtype():
    # exp of pre-activations near 70: beyond float32 (3.4e38 ~ e^88.7 once the derivatives'
    # products are taken), well inside float64.
    mlp = MLP([np.full((2, 2), 50.0), np.full((1, 2), 1e3)], None, "exp")
    with pytest.raises(FeynmlpError, match="float64"):
        feynmlp.taylor(mlp, [0.8, 0.8], 2, dtype=np.float32)
    assert np.all(np.isfinite(feynmlp.taylor(mlp, [0.8, 0.8], 2).coefficients))
    # Far beyond float64 too: no advice to switch to it.
    with pytest.raises(FeynmlpError, match="overflow") as info:
        feynmlp.taylor(mlp, [10.0, 10.0], 2)
    assert "try float64" not in str(info.value)


def test_a_division_by_zero_in_an_activation_is_named():
    x = sp.Symbol("x")
    mlp = MLP([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0]]], None, activation=sp.log(x))
    points = [[0.5, 0.5], [0.5, 0.0]]
    where = r"log\(x\) divides by zero at pre-activation z = 0 \(hidden layer 1, neuron 1, point 1\)"
    with pytest.raises(FeynmlpError, match=where):
        feynmlp.taylor(mlp, points, 2)
    with pytest.raises(FeynmlpError, match=where):
        feynmlp.directional(mlp, points, [1.0, 0.0], 2)
    with pytest.raises(FeynmlpError, match=r"log\(x\) divides by zero at pre-activation z = 0 \(hidden layer 1, "
                                           r"neuron 1\)"):
        feynmlp.diagram_contributions(mlp, points[1], [1, 1])
