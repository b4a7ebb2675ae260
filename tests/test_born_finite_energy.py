"""Finite-energy scattering of step potentials (feynmlp.born.finite_energy) against independent
references: the square well's closed form in high precision, the variable-phase ODE integrated
with DOP853, Taylor coefficients of closed forms in the coupling, polynomial fits in the
coupling, small-k fits of a(k), and finite differences."""
from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from feynmlp.born import (born_kernels, born_terms, effective_range, phase_shift,
                          scattering_length, shape_parameter, shape_terms)
from feynmlp.errors import FeynmlpError


# --- references --------------------------------------------------------------------------------

def _well_tan_delta(U0, R, k, dps=40):
    """tan(delta) of U = U0 on [0, R] from tan(kR + delta) = (k/q) tan(qR), q^2 = k^2 - U0,
    in mpmath at `dps` digits (q imaginary gives tanh, q = 0 gives kR); dps=None keeps the
    caller's precision (mpmath.taylor raises it while it differentiates)."""
    if dps is not None:
        with mpmath.workdps(dps):
            return _well_tan_delta(U0, R, k, None)
    U0, R, k = mpmath.mpf(U0), mpmath.mpf(R), mpmath.mpf(k)
    q2 = k * k - U0
    if q2 == 0:
        t = k * R
    else:
        q = mpmath.sqrt(mpmath.mpc(q2))
        t = mpmath.re(k * mpmath.tan(q * R) / q)
    tkR = mpmath.tan(k * R)
    return (t - tkR) / (1 + t * tkR)


def _well_delta(U0, R, k):
    with mpmath.workdps(40):
        return float(mpmath.atan(_well_tan_delta(U0, R, k)))


def _well_a_k(U0, R, k):
    # enough digits that the difference t - tan(kR) keeps 30 of its own for tiny U0
    dps = 40 + max(0, int(-math.log10(abs(U0) * R * R))) if U0 != 0 else 40
    with mpmath.workdps(dps):
        return float(-_well_tan_delta(U0, R, k, dps) / mpmath.mpf(k))


def _well_born_terms(U0, R, k, order):
    """Taylor coefficients in lambda of a(k; lambda U0) for the square well, by mpmath."""
    with mpmath.workdps(50):
        f = lambda lam: -_well_tan_delta(lam * U0, R, k, None) / mpmath.mpf(k)
        return [float(c) for c in mpmath.taylor(f, 0, order)[1:]]


def _ode_a_k(U, R, k):
    """Integrate a' = (U/k^2)(sin kr - k a cos kr)^2, a(0) = 0, step by step with DOP853."""
    N = len(U)
    a = 0.0
    for n, Un in enumerate(U):
        f = lambda r, y, Un=Un: [Un / k ** 2 * (math.sin(k * r) - k * y[0] * math.cos(k * r)) ** 2]
        sol = solve_ivp(f, (n * R / N, (n + 1) * R / N), [a], method="DOP853", rtol=1e-13, atol=1e-15)
        assert sol.success
        a = sol.y[0, -1]
    return a


# --- phase shifts and a(k) ----------------------------------------------------------------------

@pytest.mark.parametrize("N", [1, 7, 64])
@pytest.mark.parametrize("U0R2", [-60.0, -9.0, -2.0, -1e-3, 0.5, 4.0, 30.0, 1e4])
@pytest.mark.parametrize("kR", [1e-4, 0.5, 2.0, 6.0, 40.0])
def test_square_well_phase_shift_and_a_k(N, U0R2, kR):
    R = 1.3
    U0, k = U0R2 / R ** 2, kR / R
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way, even for U = 1e4 / R^2
        delta = phase_shift(np.full(N, U0), k, R)
        a = scattering_length(np.full(N, U0), R, k)
    assert -math.pi / 2 < delta <= math.pi / 2
    assert delta == pytest.approx(_well_delta(U0, R, k), rel=1e-11, abs=1e-13)
    assert a == pytest.approx(_well_a_k(U0, R, k), rel=1e-11, abs=0)


@pytest.mark.parametrize("N", [1, 5])
def test_step_with_k_squared_equal_to_U(N):
    # q = 0 inside: u is linear there, tan(kR + delta) = kR
    R, k = 1.0, 2.0
    U = np.full(N, k * k)
    # atan(2) - 2 = -0.893 lies on the principal branch already
    assert phase_shift(U, k, R) == pytest.approx(math.atan(k * R) - k * R, abs=1e-13)
    assert scattering_length(U, R, k) == pytest.approx(_well_a_k(k * k, R, k), rel=1e-12)


@pytest.mark.parametrize("U0", [1e-300, -1e-200, 1e-12, -3e-8, 1e-4])
@pytest.mark.parametrize("k", [0.3, 3.0])
def test_weak_potentials_keep_full_relative_precision(U0, k):
    # a(k) is of order U; a transfer of u/u' or (u, u') loses it to cancellation with the free
    # solution, the (p, q) form does not
    for N in (1, 16):
        a = scattering_length(np.full(N, U0), 1.0, k)
        assert a == pytest.approx(_well_a_k(U0, 1.0, k), rel=1e-13, abs=0)


@pytest.mark.parametrize("seed", range(4))
def test_against_variable_phase_ode(seed):
    rng = np.random.default_rng(seed)
    N, R = int(rng.integers(1, 12)), float(rng.uniform(0.5, 2.0))
    U = rng.uniform(-1.0, 1.0, N) / R ** 2  # weak: tan(delta) stays finite along r
    for kR in (0.2, 1.5, 3.0):
        k = kR / R
        assert scattering_length(U, R, k) == pytest.approx(_ode_a_k(U, R, k), rel=1e-10, abs=1e-13)


def test_tends_to_the_scattering_length():
    rng = np.random.default_rng(3)
    U = rng.uniform(-2, 1, (4, 12))
    a = scattering_length(U, 1.0)
    np.testing.assert_allclose(scattering_length(U, 1.0, 1e-9), a, rtol=1e-14)
    assert np.array_equal(scattering_length(U, 1.0, 0.0), a)  # k = 0 is the zero-energy code
    assert np.array_equal(scattering_length(U, 1.0, np.zeros(4)), a)


def test_vectorised_over_potentials_and_k():
    rng = np.random.default_rng(1)
    U = rng.uniform(-3, 3, (2, 3, 10))
    k = np.array([0.0, 0.7, 4.0])
    a = scattering_length(U, 1.5, k)
    delta = phase_shift(U, k, 1.5)
    assert a.shape == delta.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert a[i, j] == pytest.approx(scattering_length(U[i, j], 1.5, k[j]), rel=1e-15)
            assert delta[i, j] == pytest.approx(phase_shift(U[i, j], k[j], 1.5), abs=1e-15)
    outer = scattering_length(U[:, :, None, :], 1.5, np.array([0.1, 0.2, 0.3, 0.4]))
    assert outer.shape == (2, 3, 4)
    assert outer[1, 2, 3] == pytest.approx(scattering_length(U[1, 2], 1.5, 0.4), rel=1e-15)
    assert np.ndim(phase_shift(U[0, 0], 1.0)) == 0
    assert phase_shift(U[0, 0], 0.0) == 0.0


@pytest.mark.parametrize("k, match", [
    (-1.0, "negative"),
    (np.array([0.5, -0.1]), "negative"),
    (float("nan"), "non-finite"),
    (float("inf"), "non-finite"),
    (np.ones(4), "does not broadcast"),
    ("x", "could not convert"),
    (1e7, "too large"),
])
def test_bad_wave_numbers(k, match):
    U = np.ones((3, 5))
    for call in (lambda: phase_shift(U, k), lambda: scattering_length(U, 1.0, k),
                 lambda: born_terms(U, 2, 1.0, k=k)):
        with pytest.raises(FeynmlpError, match=match):
            call()


def test_bad_potential_at_finite_k():
    with pytest.raises(FeynmlpError, match="non-finite"):
        phase_shift(np.array([1.0, np.nan]), 1.0)


def test_pole_of_tan_delta_is_infinite_with_a_warning(monkeypatch):
    # p = 0 (delta = pi/2) exactly: force it in the propagation, which float input never hits
    from feynmlp.born import finite_energy as fe
    real = fe._exact_block

    def at_pole(u, kappa, dual):
        p, q, dp, dq = real(u, kappa, dual)
        p = p.copy()
        p[0] = 0.0
        return p, q, dp, dq

    monkeypatch.setattr(fe, "_exact_block", at_pole)
    U = np.array([[-1.0, -1.0], [-0.5, -0.5]])
    with pytest.warns(RuntimeWarning, match="pole of tan"):
        a = scattering_length(U, 1.0, 1.0)
    assert np.isinf(a[0]) and np.isfinite(a[1])
    assert phase_shift(U, 1.0)[0] == pytest.approx(math.pi / 2)


# --- Born terms of a(k) -------------------------------------------------------------------------

@pytest.mark.parametrize("U0", [-1.5, 0.8])
@pytest.mark.parametrize("kR", [0.4, 2.5])
@pytest.mark.parametrize("N", [1, 9])
def test_square_well_born_terms_against_taylor_of_closed_form(U0, kR, N):
    R = 1.2
    k = kR / R
    got = born_terms(np.full(N, U0), 4, R, k=k)
    np.testing.assert_allclose(got, _well_born_terms(U0, R, k, 4), rtol=1e-11)
    # a_1(k) = int U sin^2(kr)/k^2 dr
    assert got[0] == pytest.approx(U0 * (R / 2 - math.sin(2 * k * R) / (4 * k)) / k ** 2, rel=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_born_terms_against_polynomial_fit_in_the_coupling(seed):
    rng = np.random.default_rng(seed)
    N, R = 10, 1.0
    U = rng.uniform(-2, 2, N)
    k = float(rng.uniform(0.3, 3.0))
    lam = 0.05 * np.cos(np.pi * (np.arange(15) + 0.5) / 15)  # Chebyshev nodes
    a = np.array([scattering_length(l * U, R, k) for l in lam])
    coef = np.polynomial.polynomial.polyfit(lam, a, 9)
    got = born_terms(U, 3, R, k=k)
    assert coef[0] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(got, coef[1:4], rtol=1e-6)


def test_born_terms_continuous_at_small_k_with_no_loss():
    rng = np.random.default_rng(7)
    U = rng.uniform(-3, 3, (6, 16))
    R = 1.4
    b0 = born_terms(U, 5, R)
    rho = shape_terms(U, 5, R)
    for k in (1e-12, 1e-8, 1e-5):
        bk = born_terms(U, 5, R, k=k)
        # a_j(k) = a_j + rho_j k^2 + O(k^4): the difference is resolved down to k^2 ~ 1e-10
        np.testing.assert_allclose(bk, b0 + rho * k * k, rtol=1e-13, atol=0)
    for k in (1e-3, 1e-2):
        diff = (born_terms(U, 5, R, k=k) - b0) / k ** 2
        np.testing.assert_allclose(diff, rho, rtol=30 * k * k * R * R)


def test_born_terms_shapes_and_zero_energy_dispatch():
    U = np.random.default_rng(0).uniform(-1, 1, (2, 3, 6))
    assert born_terms(U, 2, 1.0, k=np.array([0.5, 1.0, 2.0])).shape == (2, 3, 2)
    assert born_terms(U[:, :, None, :], 2, 1.0, k=np.array([0.5, 1.0])).shape == (2, 3, 2, 2)
    assert np.array_equal(born_terms(U, 3, 1.0, k=0.0), born_terms(U, 3, 1.0))


@pytest.mark.parametrize("N, k", [(8, 0.9), (5, 30.0)])  # 30: k Delta > 1, split steps
def test_finite_k_kernels_against_born_terms_and_finite_differences(N, k):
    R = 1.0
    K = born_kernels(N, R, 3, k=k)
    assert K.k == k
    rng = np.random.default_rng(2)
    # more potentials than a cubic form in N variables has coefficients (120 for N = 8), so
    # agreement pins down the symmetric third derivative tensor entry by entry
    U = rng.uniform(-2, 2, (300, N))
    np.testing.assert_allclose(K.born_terms(U), born_terms(U, 3, R, k=k), rtol=1e-10, atol=1e-14)
    # first: int_{step n} sin^2(kr)/k^2 dr in closed form
    r = np.linspace(0, R, N + 1)
    F = lambda x: x / 2 - np.sin(2 * k * x) / (4 * k)
    np.testing.assert_allclose(K.first, (F(r[1:]) - F(r[:-1])) / k ** 2, rtol=1e-12)
    # second: central differences of a(k) at U = 0
    h = 1e-3
    E = np.eye(N)
    fd = np.empty((N, N))
    for n in range(N):
        for m in range(N):
            f = lambda s, t: scattering_length(s * E[n] + t * E[m], R, k)
            fd[n, m] = (f(h, h) - f(h, -h) - f(-h, h) + f(-h, -h)) / (4 * h * h)
    np.testing.assert_allclose(K.second, fd, rtol=1e-5, atol=1e-8 * np.abs(fd).max())
    for perm in ((1, 0, 2), (0, 2, 1)):
        np.testing.assert_allclose(K.third, K.third.transpose(perm), rtol=1e-13,
                                   atol=1e-15 * np.abs(K.third).max())


def test_kernels_that_would_not_fit_are_refused_before_allocation():
    from feynmlp.errors import ResourceLimitError
    with pytest.raises(ResourceLimitError, match="GiB"):
        born_kernels(64, 1.0, 2, k=2e4)


def test_finite_k_kernels_tend_to_zero_energy_kernels():
    K0 = born_kernels(12, 2.0, 3)
    Kk = born_kernels(12, 2.0, 3, k=1e-9)
    for x, y in ((K0.first, Kk.first), (K0.second, Kk.second), (K0.third, Kk.third)):
        np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-13 * np.abs(x).max())


# --- effective range and shape parameter -------------------------------------------------------

@pytest.mark.parametrize("U0", [-2.0, -0.3, 0.7, 5.0, -10.0])  # -10: one bound state
def test_square_well_effective_range(U0):
    R = 1.1
    K2 = -U0
    K = math.sqrt(abs(K2))
    a = R - (math.tan(K * R) / K if K2 > 0 else math.tanh(K * R) / K)
    # textbook: r_e = R - R^3 / (3 a^2) - 1 / (K^2 a), K^2 = -U0 (either sign)
    expected = R - R ** 3 / (3 * a * a) - 1 / (K2 * a)
    for N in (1, 6):
        assert effective_range(np.full(N, U0), R) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_shape_parameter_against_small_k_fit(seed):
    rng = np.random.default_rng(seed)
    N, R = 12, 1.0
    U = rng.uniform(-4, 3, N)
    k = np.linspace(0.02, 0.2, 12)
    a_k = scattering_length(U, R, k)
    coef = np.polynomial.polynomial.polyfit(k * k, a_k, 5)  # a + rho k^2 + c k^4 + ...
    a = scattering_length(U, R)
    rho = shape_parameter(U, R)
    assert coef[0] == pytest.approx(a, rel=1e-9)
    assert rho == pytest.approx(coef[1], rel=1e-6)
    assert effective_range(U, R) == pytest.approx(2 * coef[1] / a ** 2, rel=1e-6)


def test_shape_terms_first_order_and_fit_in_the_coupling():
    rng = np.random.default_rng(5)
    N, R = 9, 1.5
    U = rng.uniform(-2, 2, N) / R ** 2
    r = np.linspace(0, R, N + 1)
    got = shape_terms(U, 3, R)
    assert got[0] == pytest.approx(-np.sum(U * (r[1:] ** 5 - r[:-1] ** 5)) / 15, rel=1e-13)
    lam = 0.05 * np.cos(np.pi * (np.arange(15) + 0.5) / 15)
    rho = np.array([shape_parameter(l * U, R) for l in lam])
    coef = np.polynomial.polynomial.polyfit(lam, rho, 9)
    np.testing.assert_allclose(got, coef[1:4], rtol=1e-6)
    # homogeneous of degree j
    np.testing.assert_allclose(shape_terms(-0.3 * U, 3, R), got * (-0.3) ** np.arange(1, 4), rtol=1e-13)


def test_effective_range_of_a_zero_scattering_length_is_an_error():
    with pytest.raises(FeynmlpError, match="a = 0"):
        effective_range(np.zeros((2, 4)))
    assert shape_parameter(np.zeros(4)) == 0.0
