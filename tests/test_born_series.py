"""Born terms and kernels, against closed forms, sum rules, and derivatives of the exact
scattering length (polynomial fits in a coupling lambda, finite differences at U = 0)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feynmlp.born import BornKernels, born_kernels, born_terms, scattering_length
from feynmlp.errors import FeynmlpError, ResourceLimitError


# --- constant well: the Taylor series of R - tan(kR)/k, tan x = x + x^3/3 + 2x^5/15 + 17x^7/315
# + 62x^9/2835 + ..., with k^2 = V0.
def constant_well_terms(V0, R):
    return np.array([-V0 * R ** 3 / 3, -2 * V0 ** 2 * R ** 5 / 15, -17 * V0 ** 3 * R ** 7 / 315,
                     -62 * V0 ** 4 * R ** 9 / 2835])


@pytest.mark.parametrize("R", [0.4, 1.0, 2.7])
@pytest.mark.parametrize("N", [1, 2, 9, 64])
@pytest.mark.parametrize("V0", [0.3, -1.7, 25.0])
def test_constant_well_born_terms(R, N, V0):
    terms = born_terms(np.full(N, -V0), 4, R)
    np.testing.assert_allclose(terms, constant_well_terms(V0, R), rtol=1e-12)


@pytest.mark.parametrize("N", [1, 64, 200])
def test_constant_well_to_high_order(N):
    # a = R - tan(kR)/k for U = -1, R = 1: a_k = -(coefficient of x^(2k+1) in tan x), from SymPy
    import sympy
    x = sympy.Symbol("x")
    series = sympy.series(sympy.tan(x), x, 0, 24).removeO()
    expected = [-float(series.coeff(x, 2 * k + 1)) for k in range(1, 12)]
    np.testing.assert_allclose(born_terms(-np.ones(N), 11), expected, rtol=1e-13)


def test_well_on_part_of_the_range():
    N, k, R, V0 = 32, 11, 1.8, 2.2
    U = np.zeros(N)
    U[:k] = -V0
    np.testing.assert_allclose(born_terms(U, 4, R), constant_well_terms(V0, k * R / N), rtol=1e-12)


def _taylor_coefficients_in_lambda(U, R, order, lam_max, deg=14):
    """Coefficients of lambda^1..lambda^order of a(lambda U), from a Chebyshev fit of the exact
    scattering length on [-lam_max, lam_max] (an independent route to the Born terms)."""
    t = np.cos(np.pi * (np.arange(deg + 1) + 0.5) / (deg + 1))  # Chebyshev nodes on [-1, 1]
    values = scattering_length((lam_max * t)[:, None] * U[None, :], R)
    power = np.polynomial.chebyshev.Chebyshev.fit(t, values, deg, domain=[-1, 1]).convert(
        kind=np.polynomial.Polynomial)
    return power.coef[1:order + 1] / lam_max ** np.arange(1, order + 1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), N=st.integers(1, 20), R=st.floats(0.5, 2.0),
       kind=st.sampled_from(["attractive", "repulsive", "mixed"]))
def test_born_terms_against_fit_of_exact_a(seed, N, R, kind):
    rng = np.random.default_rng(seed)
    low, high = {"attractive": (-1, 0), "repulsive": (0, 1), "mixed": (-1, 1)}[kind]
    U = rng.uniform(low, high, N) / R ** 2
    # |lambda| <= lam_max stays well inside the radius of convergence (the nearest threshold,
    # at |lambda| max|U| R^2 >= pi^2/4 for either sign of lambda).
    v_max = np.abs(U).max()
    fit = _taylor_coefficients_in_lambda(U, R, 4, 0.5 / (v_max * R ** 2))
    terms = born_terms(U, 4, R)
    # The fit's error is relative to the natural size of a_k, that of a constant well of depth
    # max|U| (mixed-sign potentials can have much smaller a_k through cancellations).
    scale = np.abs(constant_well_terms(v_max, R))
    assert np.all(np.abs(terms - fit) <= 1e-7 * scale), (terms, fit)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), N=st.integers(1, 16),
       lam=st.floats(0.01, 3.0) | st.floats(-3.0, -0.01) | st.just(0.0))
def test_born_terms_are_homogeneous(seed, N, lam):
    U = np.random.default_rng(seed).uniform(-2, 2, N)
    # tolerance relative to the natural size of each term (mixed signs can cancel in a_k)
    scale = np.abs(constant_well_terms(np.abs(lam * U).max(), 1.0))
    diff = born_terms(lam * U, 4) - born_terms(U, 4) * lam ** np.arange(1, 5)
    assert np.all(np.abs(diff) <= 1e-13 * scale)


def test_born_terms_shapes_and_first_order():
    rng = np.random.default_rng(3)
    U = rng.uniform(-1, 1, (2, 5, 8))
    terms = born_terms(U, 3, 1.4)
    assert terms.shape == (2, 5, 3)
    for i, j in itertools.product(range(2), range(5)):
        np.testing.assert_array_equal(terms[i, j], born_terms(U[i, j], 3, 1.4))
    r = 1.4 * np.arange(9) / 8
    np.testing.assert_allclose(born_terms(U, 1, 1.4)[..., 0], U @ ((r[1:] ** 3 - r[:-1] ** 3) / 3),
                               rtol=1e-13)
    assert born_terms(np.zeros(4), 6).tolist() == [0.0] * 6


# --- kernels --------------------------------------------------------------------------------

def design_kernels(N, R):
    """c and K exactly as docs/born.md writes them (an independent transcription)."""
    r = R * np.arange(N + 1) / N
    c = (r[1:] ** 3 - r[:-1] ** 3) / 3
    s = (r[1:] ** 2 - r[:-1] ** 2) / 2
    K = np.empty((N, N))
    for n in range(N):
        for m in range(N):
            if n != m:
                K[n, m] = c[min(n, m)] * s[max(n, m)]
            else:
                K[n, n] = (2 / 3) * ((r[n + 1] ** 5 - r[n] ** 5) / 5
                                     - r[n] ** 3 * (r[n + 1] ** 2 - r[n] ** 2) / 2)
    return c, K


@pytest.mark.parametrize("N", [1, 3, 16, 64])
@pytest.mark.parametrize("R", [0.5, 1.0, 2.0])
def test_kernels_closed_forms_and_sum_rules(N, R):
    k = born_kernels(N, R, order=3)
    c, K = design_kernels(N, R)
    np.testing.assert_allclose(k.first, c, rtol=1e-13)
    np.testing.assert_allclose(k.second, -2 * K, rtol=1e-11)
    np.testing.assert_allclose(k.K, K, rtol=1e-11)
    assert k.first.sum() == pytest.approx(R ** 3 / 3, rel=1e-13)
    assert k.K.sum() == pytest.approx(2 * R ** 5 / 15, rel=1e-13)
    assert k.second.sum() == pytest.approx(-4 * R ** 5 / 15, rel=1e-13)
    # Constant well: sum of the third derivatives is 6 a_3(U = -1) / (-1)^3 = 6 * 17 R^7 / 315
    assert k.third.sum() == pytest.approx(6 * 17 * R ** 7 / 315, rel=1e-12)
    np.testing.assert_array_equal(k.second, k.second.T)
    for perm in itertools.permutations(range(3)):
        np.testing.assert_allclose(k.third, k.third.transpose(perm), rtol=1e-13)


def _a(U, R):
    return scattering_length(U, R)


def test_first_kernel_against_finite_differences():
    N, R, h = 10, 1.3, 1e-4
    eye = np.eye(N)
    # central difference: error h^2 a''' / 6, tiny at U = 0
    fd = (_a(h * eye, R) - _a(-h * eye, R)) / (2 * h)
    np.testing.assert_allclose(born_kernels(N, R, 1).first, fd, rtol=1e-7)


def test_second_kernel_against_finite_differences():
    N, R, h = 7, 1.6, 1e-3
    eye = np.eye(N)
    fd = np.empty((N, N))
    for n, m in itertools.product(range(N), repeat=2):
        pp, pm, mp, mm = (_a(sx * h * eye[n] + sy * h * eye[m], R)
                          for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)))
        fd[n, m] = (pp - pm - mp + mm) / (4 * h * h)
    np.testing.assert_allclose(born_kernels(N, R, 2).second, fd, rtol=1e-5)


def _third_fd(R, v, w, x, h):
    """d^3/dx dy dz a(x v + y w + z x) at 0 by the 8-point central difference."""
    total = 0.0
    for sx, sy, sz in itertools.product((1, -1), repeat=3):
        total += sx * sy * sz * _a(h * (sx * v + sy * w + sz * x), R)
    return total / (8 * h ** 3)


def test_third_kernel_against_finite_differences():
    N, R = 6, 1.2
    third = born_kernels(N, R, 3).third
    eye = np.eye(N)
    triples = [(0, 0, 0), (0, 1, 2), (5, 5, 5), (1, 4, 4), (2, 3, 5), (0, 5, 3)]
    for n, m, p in triples:
        # Richardson: the 8-point formula has an h^2 error; combine h and h/2.
        d1 = _third_fd(R, eye[n], eye[m], eye[p], 0.02)
        d2 = _third_fd(R, eye[n], eye[m], eye[p], 0.01)
        assert third[n, m, p] == pytest.approx((4 * d2 - d1) / 3, rel=1e-6), (n, m, p)
    rng = np.random.default_rng(5)
    for _ in range(3):
        v, w, x = rng.normal(size=(3, N))
        d1 = _third_fd(R, v, w, x, 0.02)
        d2 = _third_fd(R, v, w, x, 0.01)
        assert np.einsum("nmp,n,m,p", third, v, w, x) == pytest.approx((4 * d2 - d1) / 3, rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), N=st.integers(1, 12), R=st.floats(0.3, 3.0))
def test_kernels_reproduce_born_terms(seed, N, R):
    # Two independent routes: the nested-integral kernels, and the polynomial propagation of
    # the variable-phase expansion.
    U = np.random.default_rng(seed).uniform(-3, 3, (4, N)) / R ** 2
    k = born_kernels(N, R, 3)
    np.testing.assert_allclose(k.born_terms(U), born_terms(U, 3, R), rtol=1e-10, atol=1e-14 * R ** 3)


def test_kernel_arguments():
    with pytest.raises(FeynmlpError, match="order=4"):
        born_kernels(4, 1.0, 4)
    with pytest.raises(FeynmlpError, match="N must be a positive integer"):
        born_kernels(0)
    with pytest.raises(ResourceLimitError, match="GiB"):
        born_kernels(5000, 1.0, 3)
    k = born_kernels(5, 1.0, 1)
    assert isinstance(k, BornKernels) and k.second is None and k.third is None
    with pytest.raises(FeynmlpError, match="order=1"):
        k.K
    with pytest.raises(FeynmlpError, match="N = 5"):
        born_kernels(5, 1.0, 2).born_terms(np.ones(6))
    with pytest.raises(FeynmlpError, match="order must be a positive integer"):
        born_terms(np.ones(3), 0)
    with pytest.raises(FeynmlpError, match="order must be a positive integer"):
        born_terms(np.ones(3), 2.0)
    assert math.isclose(born_kernels(3, 2.0).R, 2.0)
