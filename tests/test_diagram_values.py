"""Diagram-by-diagram evaluation (runtime/diagram_values.py) against independent references.

- The sum of the diagrams equals SymPy's own `diff` of the whole network written out as one
  symbolic expression (orders 1..4; tanh, sigmoid, sin, softplus, gelu, and a mixed network),
  the activation derivatives coming from SymPy `diff` + `lambdify` of the activation alone.
- Each single diagram of orders 2 and 3 equals the explicit formula of docs/mathematics.md, with the
  propagators rebuilt here from their definition as matrix products.
- A hypothesis property test over random architectures compares with PyTorch autograd.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feynmlp import FeynmlpError
from helpers.networks import random_layers
from feynmlp.diagram_values import (
    derivative_from_diagrams,
    diagram_value,
    diagram_values,
    input_propagators,
    network_point,
    propagator,
    vertex,
)

U = sp.Symbol("u")
ACTIVATIONS = {
    "tanh": sp.tanh(U),
    "sigmoid": 1 / (1 + sp.exp(-U)),
    "sin": sp.sin(U),
    "softplus": sp.log(1 + sp.exp(U)),
    "gelu": U / 2 * (1 + sp.erf(U / sp.sqrt(2))),
}


@functools.lru_cache(maxsize=None)
def derivative_function(name: str, m_max: int = 6):
    """`d(z, m) -> s^(0..m)(z)` from SymPy diff + lambdify of the activation alone."""
    expr = ACTIVATIONS[name]
    funcs = [sp.lambdify(U, sp.diff(expr, U, m), modules=["scipy", "numpy"]) for m in range(m_max + 1)]

    def d(z, m):
        z = np.asarray(z, dtype=float)
        return np.stack([np.broadcast_to(np.asarray(funcs[j](z), dtype=float), z.shape)
                         for j in range(m + 1)])
    return d


def random_case(sizes, seed):
    """Weights, biases and a point, all from one seed."""
    rng = np.random.default_rng(seed)
    ws, bs = random_layers(rng, sizes, 0.9, 0.4)
    x = rng.normal(scale=0.6, size=sizes[0])
    return ws, bs, x


class SymbolicNetwork:
    """The MLP as SymPy expressions in x_0.., with SymPy derivatives evaluated at x."""

    def __init__(self, ws, bs, x, activations, output_activation=None):
        self.xs = sp.symbols(f"x0:{len(x)}")
        a = list(self.xs)
        for l, (w, b) in enumerate(zip(ws, bs)):
            z = [sum(sp.Float(w[i, j]) * a[j] for j in range(w.shape[1])) + sp.Float(b[i])
                 for i in range(w.shape[0])]
            if l < len(ws) - 1:
                a = [ACTIVATIONS[activations[l]].subs(U, zi) for zi in z]
            elif output_activation is not None:
                a = [ACTIVATIONS[output_activation].subs(U, zi) for zi in z]
            else:
                a = z
        self._cache = {(): a}
        self._point = {s: sp.Float(float(v), 30) for s, v in zip(self.xs, x)}

    def _diff(self, idx):
        if idx not in self._cache:
            self._cache[idx] = [sp.diff(e, self.xs[idx[-1]]) for e in self._diff(idx[:-1])]
        return self._cache[idx]

    def derivative(self, idx) -> np.ndarray:
        return np.array([float(e.xreplace(self._point).evalf(20)) for e in self._diff(tuple(idx))])


# Index tuples of orders 1..4 over 3 inputs: distinct, repeated and mixed indices. (The
# order-4 SymPy derivative dominates the runtime; one mixed order-4 tuple per network.)
INDEX_TUPLES = [(2,), (0, 1), (1, 1), (0, 1, 2), (2, 0, 2), (0, 1, 2, 0)]
SIZES = (3, 2, 2, 1)
NETWORKS = {
    "tanh": (("tanh", "tanh"), None),
    "sigmoid": (("sigmoid", "sigmoid"), None),
    "sin": (("sin", "sin"), None),
    "softplus": (("softplus", "softplus"), None),
    "mixed": (("tanh", "sin"), None),
}


@functools.lru_cache(maxsize=None)
def symbolic_case(name):
    acts, out_act = NETWORKS[name]
    ws, bs, x = random_case(SIZES, seed=sorted(NETWORKS).index(name) + 11)
    return ws, bs, x, acts, SymbolicNetwork(ws, bs, x, acts, out_act)


def assert_close(actual, expected, rtol=1e-10):
    actual, expected = np.asarray(actual), np.asarray(expected)
    # relative to the size of the derivative tensor entry, with a floor for exact zeros
    scale = np.maximum(np.abs(expected), 1e-3 * np.max(np.abs(expected)) + 1e-300)
    assert np.all(np.abs(actual - expected) <= rtol * scale), (actual, expected)


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("idx", INDEX_TUPLES, ids=lambda t: "d" + "".join(map(str, t)))
def test_diagram_sum_equals_sympy_diff(name, idx):
    ws, bs, x, acts, sym = symbolic_case(name)
    derivs = [derivative_function(a) for a in acts]
    got = derivative_from_diagrams(ws, bs, derivs, x, idx)
    assert_close(got, sym.derivative(idx))


@pytest.mark.parametrize("idx", [(0,), (0, 1), (2, 2), (0, 1, 2)], ids=str)
def test_gelu_and_two_outputs_against_sympy(idx):
    ws, bs, x = random_case((3, 2, 2, 2), seed=5)
    sym = SymbolicNetwork(ws, bs, x, ("gelu", "gelu"))
    got = derivative_from_diagrams(ws, bs, derivative_function("gelu"), x, idx)
    assert got.shape == (2,)
    assert_close(got, sym.derivative(idx))


@pytest.mark.parametrize("idx", [(1,), (0, 1), (0, 1, 1)], ids=str)
def test_output_activation_is_one_more_vertex_layer(idx):
    ws, bs, x = random_case((3, 2, 2), seed=3)
    sym = SymbolicNetwork(ws, bs, x, ("tanh",), output_activation="sigmoid")
    terms = diagram_values(ws, bs, derivative_function("tanh"), x, idx,
                           output_derivatives=derivative_function("sigmoid"))
    # one hidden layer plus the output vertex layer: depth 2
    assert all(max(d.layers, default=1) <= 2 for d, _ in terms)
    assert_close(sum(v for _, v in terms), sym.derivative(idx))


# -- each diagram against the explicit formulas of docs/mathematics.md -----------------------

def explicit_propagators(ws, bs, x, d):
    """P(l', l) from its definition W(l') S1(l'-1) ... S1(l+1) W(l+1), with z(l) recomputed."""
    L = len(ws)
    zs, a = [], x
    for l in range(L):
        z = ws[l] @ a + bs[l]
        zs.append(z)
        a = d(z, 0)[0] if l < L - 1 else z
    s1 = {l: np.diag(d(zs[l - 1], 1)[1]) for l in range(1, L)}
    s = {(l, m): d(zs[l - 1], m)[m] for l in range(1, L) for m in range(4)}

    def P(to, frm):
        mat = ws[frm]
        for k in range(frm + 1, to):
            mat = ws[k] @ s1[k] @ mat
        return mat
    return P, s


def test_each_order_two_diagram_matches_design_formula():
    ws, bs, x = random_case((3, 3, 4, 2, 2), seed=21)  # L = 4, three hidden layers
    d = derivative_function("tanh")
    P, s = explicit_propagators(ws, bs, x, d)
    L = len(ws)
    i, j = 2, 0
    terms = diagram_values(ws, bs, d, x, (i, j))
    assert [str(dg) for dg, _ in terms] == ["(1,2)@1", "(1,2)@2", "(1,2)@3"]
    for dg, value in terms:
        (l,) = dg.layers
        # d_ij f = sum_l P(L,l)[o,a] s_l''(z(l)_a) P(l,0)[a,i] P(l,0)[a,j]
        expect = np.einsum("oa,a,a,a->o", P(L, l), s[l, 2], P(l, 0)[:, i], P(l, 0)[:, j])
        np.testing.assert_allclose(value, expect, rtol=1e-12, atol=0)


def test_each_order_three_diagram_matches_design_formula():
    ws, bs, x = random_case((3, 3, 4, 2, 2), seed=22)
    d = derivative_function("sigmoid")
    P, s = explicit_propagators(ws, bs, x, d)
    L = len(ws)
    idx = (1, 2, 0)
    got = {str(dg): v for dg, v in diagram_values(ws, bs, d, x, idx)}
    assert len(got) == 3 + 3 * 3
    col = {n: (lambda l, n=n: P(l, 0)[:, idx[n - 1]]) for n in (1, 2, 3)}
    for l in (1, 2, 3):
        expect = np.einsum("oa,a,a,a,a->o", P(L, l), s[l, 3], col[1](l), col[2](l), col[3](l))
        np.testing.assert_allclose(got[f"(1,2,3)@{l}"], expect, rtol=1e-12)
    for l in (1, 2, 3):
        for lp in range(l + 1, 4):
            # inner pair (p, q) at (l, a), remaining leaf r at (l', b)
            for p, q, r, name in [(1, 2, 3, "((1,2)@{l},3)@{lp}"), (1, 3, 2, "((1,3)@{l},2)@{lp}"),
                                  (2, 3, 1, "(1,(2,3)@{l})@{lp}")]:
                expect = np.einsum("ob,b,ba,a,a,a,b->o", P(L, lp), s[lp, 2], P(lp, l), s[l, 2],
                                   col[p](l), col[q](l), col[r](lp))
                np.testing.assert_allclose(got[name.format(l=l, lp=lp)], expect, rtol=1e-12)


def test_propagator_helpers():
    ws, bs, x = random_case((3, 4, 3, 2), seed=8)
    d = derivative_function("tanh")
    point = network_point(ws, bs, d, x, max_order=3)
    P, s = explicit_propagators(ws, bs, x, d)
    assert point.depth == 2 and point.n_layers == 3 and point.widths == (3, 4, 3, 2)
    for to in range(1, 4):
        for frm in range(0, to):
            np.testing.assert_allclose(propagator(point, to, frm), P(to, frm), rtol=1e-13)
    assert [p.shape for p in input_propagators(point)] == [(4, 3), (3, 3), (2, 3)]
    np.testing.assert_allclose(vertex(point, 2, 3), s[2, 3], rtol=1e-13)
    with pytest.raises(FeynmlpError, match="P\\(1,2\\)"):
        propagator(point, 1, 2)
    with pytest.raises(FeynmlpError, match="hidden layers"):
        vertex(point, 3, 2)


def test_order_one_is_the_jacobian():
    ws, bs, x = random_case((3, 4, 2), seed=9)
    d = derivative_function("sin")
    (dg, v), = diagram_values(ws, bs, d, x, (1,))
    jac = ws[1] @ np.diag(np.cos(ws[0] @ x + bs[0])) @ ws[0]
    np.testing.assert_allclose(v, jac[:, 1], rtol=1e-13)
    assert str(dg) == "1"


@pytest.mark.parametrize("kwargs,match", [
    (dict(indices=(3,)), "out of range"),
    (dict(indices=()), "at least one"),
    (dict(x=np.zeros(2)), "x has shape"),
    (dict(biases=[np.zeros(4)]), "bias"),
    (dict(derivatives=[]), "one per hidden layer"),
])
def test_bad_input_is_refused(kwargs, match):
    ws, bs, x = random_case((3, 4, 2), seed=1)
    args = dict(weights=ws, biases=bs, derivatives=derivative_function("tanh"), x=x, indices=(0, 1))
    args.update(kwargs)
    with pytest.raises(FeynmlpError, match=match):
        diagram_values(**args)


def test_bad_diagram_for_network_is_refused():
    from feynmlp.codegen.diagrams import diagrams
    ws, bs, x = random_case((3, 4, 2), seed=1)
    point = network_point(ws, bs, derivative_function("tanh"), x, 2)
    deep = diagrams(2, 3)[-1]
    with pytest.raises(FeynmlpError, match="outside the hidden layers"):
        diagram_value(point, deep, (0, 1))


# -- property test against PyTorch autograd -------------------------------------------------

TORCH_ACTS = ("tanh", "sigmoid", "sin", "softplus")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    widths=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    n_in=st.integers(1, 3),
    n_out=st.integers(1, 2),
    act_codes=st.lists(st.sampled_from(TORCH_ACTS), min_size=3, max_size=3),
    order=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_against_torch_autograd(widths, n_in, n_out, act_codes, order, seed):
    sizes = (n_in, *widths, n_out)
    ws, bs, x = random_case(sizes, seed)
    acts = act_codes[: len(widths)]
    idx = tuple(np.random.default_rng(seed).integers(0, n_in, size=order))
    got = derivative_from_diagrams(ws, bs, [derivative_function(a) for a in acts], x, idx)
    pytest.importorskip("torch")
    from helpers.torch_reference import torch_index_derivative

    expect = torch_index_derivative(ws, bs, x, acts, idx)
    scale = max(np.max(np.abs(expect)), 1e-12)
    np.testing.assert_allclose(got, expect, rtol=1e-9, atol=1e-12 * scale)
    n_terms = sum(1 for _ in diagram_values(ws, bs, derivative_function("tanh"), x, idx))
    H = len(widths)
    assert n_terms == {1: 1, 2: H, 3: H + 3 * H * (H - 1) // 2}[order]
    assert math.isfinite(float(np.sum(got)))
