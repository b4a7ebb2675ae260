"""Bound-state counts and the shallow test, against the square-well thresholds and against an
independent count of negative eigenvalues of a finite-difference Hamiltonian."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feynmlp.born import (bound_state_count, has_bound_state, is_shallow, scattering_length,
                          scattering_length_and_bound_states)
from feynmlp.errors import FeynmlpError


@pytest.mark.parametrize("R", [0.5, 1.0, 2.5])
@pytest.mark.parametrize("N", [1, 10, 64])
def test_square_well_first_threshold(R, N):
    threshold = math.pi ** 2 / (4 * R ** 2)
    below = np.full(N, -threshold * (1 - 1e-7))
    above = np.full(N, -threshold * (1 + 1e-7))
    assert not has_bound_state(below, R)
    assert is_shallow(below, R)
    assert has_bound_state(above, R)
    assert not is_shallow(above, R)
    # a jumps from -inf to +inf across the threshold
    assert scattering_length(below, R) < -1e5 * R
    assert scattering_length(above, R) > 1e5 * R


@pytest.mark.parametrize("N", [1, 3, 64])
@pytest.mark.parametrize("n_states", [1, 2, 3, 7])
def test_square_well_higher_thresholds(N, n_states):
    # The n-th bound state of a constant well appears at sqrt(V0) R = (2n - 1) pi / 2; with
    # N = 1 or 3 a deep step holds several nodes of u, which the count must not miss.
    R = 1.3
    V_n = ((2 * n_states - 1) * math.pi / (2 * R)) ** 2
    assert bound_state_count(np.full(N, -V_n * (1 - 1e-6)), R) == n_states - 1
    assert bound_state_count(np.full(N, -V_n * (1 + 1e-6)), R) == n_states


def test_repulsive_and_zero_potentials_bind_nothing():
    assert bound_state_count(np.zeros(5)) == 0
    assert bound_state_count(np.full(5, 1e6)) == 0
    assert not has_bound_state(np.full(64, 3.0))


def _fd_bound_state_count(U, R, L_over_R=20.0, points_per_step=48):
    """Negative eigenvalues of -u'' + U u on [0, L], u(0) = u(L) = 0, by finite differences.

    By Sylvester's law of inertia the count is the number of negative pivots of the LDL^T
    factorisation of the tridiagonal matrix; by Sturm's theorem it equals the number of zeros
    of the zero-energy solution in (0, L), i.e. the bound states as long as L > a. Vectorised
    over the rows of U.
    """
    U = np.atleast_2d(U)
    N = U.shape[1]
    h = R / (N * points_per_step)
    M = int(round(L_over_R * R / h))
    r = h * np.arange(1, M)
    step = np.minimum((r / R * N).astype(int), N)
    Ur = np.concatenate([U, np.zeros((U.shape[0], 1))], axis=1)[:, step]
    off = -1.0 / h ** 2
    d_prev = np.full(U.shape[0], np.inf)
    negatives = np.zeros(U.shape[0], dtype=int)
    for i in range(M - 1):
        d = 2.0 / h ** 2 + Ur[:, i] - (off * off / d_prev if i else 0.0)
        negatives += d < 0
        d_prev = d
    return negatives


def test_bound_state_count_against_finite_differences():
    rng = np.random.default_rng(7)
    N, R = 12, 1.5
    U = np.concatenate([
        -rng.uniform(0, 6, (40, N)),                          # attractive, 0-2 states
        rng.uniform(-40, 25, (40, N)),                       # mixed sign
        -rng.uniform(0, 1200, (20, N)) * rng.uniform(0, 1, (20, 1)),  # deep: several nodes per step
    ]) / R ** 2
    a, count = scattering_length_and_bound_states(U, R)
    # Away from thresholds (|a| not huge) the count cannot change under the small shifts of
    # the discretisation; the box must hold the outside zero at r = a.
    keep = np.abs(a) < 4 * R
    assert keep.sum() > 60
    expected = _fd_bound_state_count(U[keep], R)
    np.testing.assert_array_equal(count[keep], expected)
    assert expected.max() >= 5  # the deep rows really test multi-node steps


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), N=st.integers(1, 40), depth=st.floats(0.01, 30.0))
def test_shallow_attractive_potentials_have_negative_a(seed, N, depth):
    # docs/born.md: for U <= 0, no bound state implies a <= 0 (u is concave and has no zero).
    U = -depth * np.random.default_rng(seed).uniform(0, 1, N)
    if is_shallow(U):
        assert scattering_length(U) <= 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), N=st.integers(1, 30))
def test_count_grows_with_depth(seed, N):
    # Deepening an attractive potential never removes a bound state (Sturm comparison).
    shape = np.random.default_rng(seed).uniform(0, 1, N)
    counts = bound_state_count(-np.geomspace(0.1, 3000, 60)[:, None] * shape)
    assert np.all(np.diff(counts) >= 0)


def test_is_shallow_a_max():
    U = np.full(16, -2.3)  # shallow, a = 1 - tan(sqrt 2.3)/sqrt 2.3 = -7.78
    a = scattering_length(U)
    assert is_shallow(U)
    assert is_shallow(U, a_max=abs(a) * 1.01)
    assert not is_shallow(U, a_max=abs(a) * 0.99)
    with pytest.raises(FeynmlpError, match="a_max"):
        is_shallow(U, a_max=-1)


def test_vectorised_shapes():
    U = -np.linspace(0.1, 30, 12).reshape(3, 4, 1) * np.ones((1, 1, 8))
    assert bound_state_count(U).shape == (3, 4)
    assert has_bound_state(U).dtype == bool
    assert is_shallow(U).shape == (3, 4)
