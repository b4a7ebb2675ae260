"""Exact scattering lengths of step potentials, against closed forms, high-precision arithmetic
and an independent ODE integration of the variable-phase equation."""
from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from feynmlp.born import scattering_length
from feynmlp.errors import FeynmlpError


def square_well_a(V0, R):
    """a of U = -V0 on [0, R] (V0 < 0: a barrier): R - tan(kR)/k or R - tanh(kR)/k, k^2 = |V0|.

    Evaluated with mpmath at enough digits that the difference keeps 30 significant ones
    however weak the potential (in floating point the closed form itself cancels).
    """
    if V0 == 0:
        return 0.0
    digits = 30 + max(0, int(-math.log10(abs(V0) * R * R)))
    with mpmath.workdps(digits):
        v, r = mpmath.mpf(V0), mpmath.mpf(R)
        k = mpmath.sqrt(abs(v))
        ratio = mpmath.tan(k * r) / k if v > 0 else mpmath.tanh(k * r) / k
        return float(r - ratio)


@pytest.mark.parametrize("R", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("N", [1, 7, 64])
@pytest.mark.parametrize("V0R2", [1e-3, 0.5, 2.0, 2.4, 2.6, 10.0, 50.0])
def test_constant_well_closed_form(R, N, V0R2):
    V0 = V0R2 / R ** 2
    a = scattering_length(np.full(N, -V0), R)
    assert a == pytest.approx(square_well_a(V0, R), rel=1e-12, abs=0)


@pytest.mark.parametrize("R", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("N", [1, 5, 64])
@pytest.mark.parametrize("V0R2", [1e-6, 0.3, 4.0, 100.0, 1e4, 1e8])
def test_constant_barrier_closed_form(R, N, V0R2):
    V0 = V0R2 / R ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way for strong barriers
        a = scattering_length(np.full(N, V0), R)
    assert a == pytest.approx(square_well_a(-V0, R), rel=1e-12, abs=0)
    assert 0 < a < R


def test_well_on_part_of_the_range():
    # A well on the first k of N steps is a square well of range k R / N; the zero steps beyond
    # it must leave a unchanged.
    N, k, R, V0 = 64, 20, 2.0, 1.7
    U = np.zeros(N)
    U[:k] = -V0
    assert scattering_length(U, R) == pytest.approx(square_well_a(V0, k * R / N), rel=1e-12)


def _well_a_mp(V0):
    return square_well_a(V0, 1.0)


@pytest.mark.parametrize("V0", [s * 10.0 ** e for e in range(-300, 1, 20) for s in (1, -1)]
                         + [s * v for v in (1e-8, 3e-4, 0.015, 0.99, 1.01, 2.0) for s in (1, -1)])
def test_tiny_and_small_depths_have_no_cancellation(V0):
    # For tiny |U| the scattering length is a_1 = -V0/3 to full relative precision: a naive
    # a = R - u/u' loses everything here, and a switch between series and closed forms would
    # show up as a jump.
    for N in (1, 16):
        a = scattering_length(np.full(N, -V0))
        assert a == pytest.approx(_well_a_mp(V0), rel=2e-14, abs=0)


def test_continuous_through_zero():
    V0 = np.concatenate([-np.logspace(-3, -12, 40), [0.0], np.logspace(-12, -3, 40)])
    a = scattering_length(-V0[:, None] * np.ones((1, 8)))
    expected = np.array([_well_a_mp(v) for v in V0])
    np.testing.assert_allclose(a, expected, rtol=2e-14, atol=0)
    assert np.all(np.diff(a) < 0)  # deeper well, smaller a


def _ode_scattering_length(U, R):
    """Integrate a'(r) = U(r) (r - a)^2, a(0) = 0, step by step with tight tolerances."""
    N = len(U)
    a = 0.0
    for n, Un in enumerate(U):
        sol = solve_ivp(lambda r, y, Un=Un: [Un * (r - y[0]) ** 2], (n * R / N, (n + 1) * R / N),
                        [a], method="DOP853", rtol=1e-13, atol=1e-16)
        assert sol.success
        a = sol.y[0, -1]
    return a


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), N=st.integers(1, 24), R=st.floats(0.3, 3.0),
       kind=st.sampled_from(["attractive", "repulsive", "mixed"]))
def test_against_ode_integration(seed, N, R, kind):
    rng = np.random.default_rng(seed)
    if kind == "attractive":
        # scaled to at most 0.9 of the constant-well threshold: no bound state, so u' > 0 and
        # the variable-phase equation has no pole
        U = -rng.uniform(0, 0.9 * math.pi ** 2 / 4, N) / R ** 2
    elif kind == "repulsive":
        U = rng.uniform(0, 30, N) / R ** 2
    else:
        U = rng.uniform(-1, 1, N) / R ** 2
    expected = _ode_scattering_length(U, R)
    assert scattering_length(U, R) == pytest.approx(expected, rel=1e-10, abs=1e-13 * R)


def test_vectorised_over_leading_axes():
    rng = np.random.default_rng(1)
    U = rng.uniform(-3, 3, (2, 3, 10))
    a = scattering_length(U, 1.5)
    assert a.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert a[i, j] == scattering_length(U[i, j], 1.5)
    assert scattering_length(U[0, 0]).shape == ()


def test_many_rows_in_several_blocks():
    # more rows than one internal block, constant wells of known a
    V0 = np.linspace(0.01, 2.0, 20000)
    a = scattering_length(-V0[:, None] * np.ones((1, 4)))
    expected = 1 - np.tan(np.sqrt(V0)) / np.sqrt(V0)
    np.testing.assert_allclose(a, expected, rtol=1e-12)


@pytest.mark.parametrize("bad, match", [
    (np.array([1.0, np.nan]), "non-finite"),
    (np.array([np.inf]), "non-finite"),
    (np.zeros(0), "N >= 1"),
    (3.0, "N >= 1"),
    ([["a"]], "float64"),
])
def test_bad_potentials(bad, match):
    with pytest.raises(FeynmlpError, match=match):
        scattering_length(bad)


@pytest.mark.parametrize("R", [0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_range(R):
    with pytest.raises(FeynmlpError, match="R must be a positive finite number"):
        scattering_length(np.ones(3), R)
