"""feynmlp.top_vertex: the contraction of the top two orders (K >= 3) by the topmost vertex.

- The plan, which depends only on (n, K), against brute-force enumeration of the sorted
  variable tuples written here (itertools), numbered as multi_index.column_of numbers their
  exponent vectors.
- The coefficients of scheme="top-vertex" at K = 3 and 4 against scheme="forward" (every order
  pushed forward through the layers, none of this module's code) and against torch (nested
  jacfwd, helpers.torch_reference), on small networks: one to three hidden layers, one to three
  outputs, a subset of the variables, plans cut into many tiles and chunks; a wider network
  with both schemes at K = 2..4; and K = 6, 7.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import feynmlp
from feynmlp import multi_index, top_vertex
from feynmlp.multivariate import multivariate_series
from helpers.networks import random_layers, random_mlp
from helpers.torch_reference import assert_relative_close, check_against_torch


def tuples_of_order(n: int, k: int) -> list[tuple[int, ...]]:
    """The sorted variable tuples of order k, lexicographic (feynmlp.multi_index's order)."""
    return list(itertools.combinations_with_replacement(range(n), k))


def brute_force_columns(n: int, order: int) -> dict[tuple[int, ...], int]:
    """Column of every sorted tuple of order <= `order`: graded, lexicographic within an order."""
    columns = {}
    for k in range(order + 1):
        for t in tuples_of_order(n, k):
            columns[t] = len(columns)
    return columns


# ----------------------------------------------------------------------------- the plan

@pytest.mark.parametrize("n,order", [(1, 3), (2, 3), (3, 3), (2, 4), (4, 4), (3, 5)])
def test_plan_against_brute_force_enumeration(n, order):
    """The split table (every pair the first-variable rule keeps goes to the column of
    alpha + beta, the others are -1), the first-variable powers and counts, the order-(K-1)
    pair targets and the tiles, each rebuilt from tuples enumerated here."""
    plan = top_vertex.plan(n, order)
    columns = brute_force_columns(n, order)
    # The enumeration is feynmlp.multi_index's numbering, looked up through exponent vectors
    # (independently of the plan's merged-tuple arithmetic).
    vectors = np.array([np.bincount(np.array(t, dtype=np.int64), minlength=n) for t in columns])
    assert np.array_equal(multi_index.column_of(n, order, vectors), list(columns.values()))
    offset_k = math.comb(n + order - 1, order - 1)  # columns of order < K
    # Splits |alpha| = k1 = 1 .. K-2 against |beta| = K - k1, targets laid out one after another.
    position = 0
    assert plan.splits.shape == (order - 2, 5)
    for k1, (a0, na, b0, nb, offset) in zip(range(1, order - 1), plan.splits):
        alphas, betas = tuples_of_order(n, k1), tuples_of_order(n, order - k1)
        assert (a0, na) == (columns[alphas[0]], len(alphas))
        assert (b0, nb) == (columns[betas[0]], len(betas))
        assert offset == position
        position += na * nb
        table = plan.targets[offset:offset + na * nb].reshape(na, nb)
        for a, alpha in enumerate(alphas):
            for b, beta in enumerate(betas):
                want = columns[tuple(sorted(alpha + beta))] - offset_k if alpha[0] <= beta[0] else -1
                assert table[a, b] == want, (alpha, beta)
        # Every allowed pair lies in a tile of its split, in the rows the tile says it needs.
        tiles = plan.tiles[plan.tiles[:, 3] == k1 - 1]
        for a, alpha in enumerate(alphas):
            for b, beta in enumerate(betas):
                if alpha[0] <= beta[0]:
                    assert any(c0 <= b < c1 and a < needed for c0, c1, needed, _ in tiles), (alpha, beta)
    assert plan.targets.size == position
    # First-variable power of every column below order K (0 for the constant) and first count
    # of every column of order K.
    lower = [t for t in columns if len(t) < order]
    assert np.array_equal(plan.first_power, [t.count(t[0]) if t else 0 for t in lower])
    top = tuples_of_order(n, order)
    assert np.array_equal(plan.first_count, [t.count(t[0]) for t in top])
    # alpha + e_j for every alpha of order K-1 and variable j, and alpha's first variable.
    below = tuples_of_order(n, order - 1)
    assert plan.pair_targets.shape == (len(below), n)
    for a, alpha in enumerate(below):
        assert plan.first_variable[a] == alpha[0]
        for j in range(n):
            assert plan.pair_targets[a, j] == columns[tuple(sorted(alpha + (j,)))] - offset_k
    # The vertex tables of order K-1, grouped by target column.
    assert np.all(np.diff(plan.tables[:, 0]) >= 0)
    assert plan.tables.shape[0] == sum(multi_index.vertex_table_rows(n, order - 1).values())


@pytest.mark.parametrize("order", [0, 1, 2])
def test_plan_is_for_orders_three_and_above(order):
    with pytest.raises(ValueError, match="orders >= 3"):
        top_vertex.plan(2, order)


# ----------------------------------------------------------------------------- coefficients

NETWORKS = [
    ((3, 5, 4, 2), ["tanh", "sigmoid"]),
    ((2, 6, 1), ["softplus"]),
    ((4, 3, 5, 3, 3), ["gelu", "sin", "silu"]),
    ((1, 4, 4, 2), ["cos", "tanh"]),
]


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("sizes,activations", NETWORKS, ids=lambda v: "-".join(map(str, v)))
def test_orders_3_and_4_against_forward_and_torch(sizes, activations, order):
    rng = np.random.default_rng(order * 10 + len(sizes))
    mlp = random_mlp(rng, sizes, activations)
    points = rng.normal(size=(3, sizes[0]))
    expansion = check_against_torch(mlp, points, order, scheme="top-vertex")
    forward = feynmlp.taylor(mlp, points, order, scheme="forward")
    assert_relative_close(expansion.coefficients, forward.coefficients, rtol=1e-12, what=f"{sizes}, K = {order}")


@pytest.mark.parametrize("order", [3, 4])
def test_orders_3_and_4_wrt_a_subset(order):
    rng = np.random.default_rng(31 + order)
    mlp = random_mlp(rng, (5, 6, 4, 2), ["tanh", "gelu"])
    points = rng.normal(size=(2, 5))
    wrt = [3, 0, 4]
    expansion = check_against_torch(mlp, points, order, wrt=wrt, scheme="top-vertex")
    forward = feynmlp.taylor(mlp, points, order, wrt=wrt, scheme="forward")
    assert_relative_close(expansion.coefficients, forward.coefficients, rtol=1e-12)


def test_schemes_agree_on_wider_networks():
    """Both schemes of feynmlp.multivariate against each other on a wider network with
    several outputs (order 2 is feynmlp.hessian, 3 and 4 the contraction)."""
    rng = np.random.default_rng(5)
    weights, biases = random_layers(rng, (6, 9, 7, 8, 3), 0.7, 0.3)
    points = rng.normal(size=(5, 6)) * 0.5
    acts = ["tanh", "gelu", "sin"]
    for order in (2, 3, 4):
        a = multivariate_series(weights, biases, acts, None, points, order, scheme="forward")
        b = multivariate_series(weights, biases, acts, None, points, order, scheme="top-vertex")
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 2 beta columns and chunks of 4 order-(K-1) rows: small plans then run the paths
    of many tiles and chunks. The plans are cached by (n, K): rebuilt here, and again after."""
    monkeypatch.setattr(top_vertex, "_TILE", 2)
    monkeypatch.setattr(top_vertex, "_CHUNK", 4)
    top_vertex.plan.cache_clear()
    yield
    top_vertex.plan.cache_clear()


@pytest.mark.parametrize("order", [3, 4])
def test_many_tiles_and_chunks_against_forward_and_torch(small_tiles, order):
    rng = np.random.default_rng(50 + order)
    mlp = random_mlp(rng, (4, 5, 3, 2), ["sigmoid", "tanh"])
    points = rng.normal(size=(3, 4))
    plan = top_vertex.plan(4, order)
    assert len(plan.tiles) > 4 and len(plan.segments) > 2
    expansion = check_against_torch(mlp, points, order, scheme="top-vertex")
    forward = feynmlp.taylor(mlp, points, order, scheme="forward")
    assert_relative_close(expansion.coefficients, forward.coefficients, rtol=1e-12)


@pytest.mark.parametrize("order", [6, 7])
def test_top_vertex_orders_6_and_7(order):
    """Vertices of valence 5 and 6 inside the contraction (its own code path for valence >= 5)."""
    rng = np.random.default_rng(order)
    mlp = random_mlp(rng, (2, 5, 4, 1), ["tanh", "tanh"])
    check_against_torch(mlp, rng.normal(size=(2, 2)), order, scheme="top-vertex")
