"""Exact S-wave scattering lengths and bound-state counts of step potentials.

In: step values U of shape (..., N) (U_n on [r_{n-1}, r_n), r_n = n R / N, zero for r >= R),
in units where hbar = 2 mu = 1 (so U = 2 mu V / hbar^2, an inverse length squared), and R.
Out: the scattering length a (shape (...), same length unit as R; a < 0 for weak attraction),
the number of bound states, and the shallow test (no bound state).

Method (docs/born.md): the zero-energy equation u'' = U u is solved exactly step by
step with the 2x2 transfer matrix of each step, vectorised over the leading axes; the only
Python loop runs over the N steps. Instead of (u, u') or D = u/u', the state carried is
(w, u') with w = u - r u' and a(r) = r - u/u' = -w/u': for U = 0 the solution is u = r, so
w = 0 exactly and every increment of w is proportional to U. That is what keeps tiny |U|
free of the cancellation in a = R - D_N. The step functions
    C(z) = cos(sqrt(-z)) = cosh(sqrt(z)),  S(z) = sin(sqrt(-z))/sqrt(-z) = sinh(sqrt z)/sqrt z,
    Q(z) = (C - S)/z,   z = U_n Delta^2,
are entire in z, so attractive, repulsive and zero steps share one formula (no branch jump at
U_n = 0); near z = 0 they are evaluated from their Taylor series. Across a step from r0 to
r1 = r0 + Delta, (u, u') -> [[C, Delta S], [U Delta S, C]] (u, u'), which for (w, u') reads
    w1  = (C - U Delta S r1) w0 - U Delta (Delta^2 Q + S r0 r1) u'0
    u1' = U Delta S w0 + (C + U Delta S r0) u'0.
This is docs/born.md's recursion for D = u/u' = r - a written without its poles (D is infinite
where u' = 0), so potentials with bound states pass through as well.

Bound states (Sturm's oscillation theorem): their number is the number of zeros of u in
(0, infinity); zeros inside the range are counted step by step from the sign of u (and from
its phase in steps deep enough to hold several), the line u ~ (r - a) outside adds one iff
a > R.
"""
from __future__ import annotations

import math

import numpy as np

from ._checks import check_potential, check_range

__all__ = [
    "scattering_length",
    "bound_state_count",
    "has_bound_state",
    "is_shallow",
    "scattering_length_and_bound_states",
]

# Rows per block: the per-step arrays of one block stay in cache, and memory stays flat for
# arrays of any size.
_BLOCK = 8192

# |z| below which C, S, Q come from their Taylor series, in two bands so that the common case
# of small steps needs few terms: below 1/8, 8 terms reach full double precision; below 1,
# 13 terms do. Above 1 the closed forms lose at most a factor ~4 to the cancellation in C - S.
# Which formula an element gets depends on its own z only, so a potential's a does not depend
# on the other rows it is computed with (bit for bit).
_SERIES_LIMIT = 1.0
_SMALL, _SMALL_TERMS = 0.125, 8
_MEDIUM_TERMS = 13
_PI2 = math.pi ** 2
_C_COEF = np.array([1.0 / math.factorial(2 * j) for j in range(_MEDIUM_TERMS)])
_Q_COEF = np.array([2.0 * j / math.factorial(2 * j + 1) for j in range(1, _MEDIUM_TERMS + 1)])


def _horner(coef: np.ndarray, z: np.ndarray) -> np.ndarray:
    out = np.full_like(z, coef[-1])
    for c in coef[-2::-1]:
        out *= z
        out += c
    return out


def step_functions(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C(z), z S(z), z Q(z) of the module docstring, each possibly times one positive factor.

    For z > 1 (strong repulsion) all three are multiplied by exp(-sqrt z) so that cosh and
    sinh cannot overflow; the transfer matrix is linear in (C, S, Q), and only ratios of the
    propagated pair matter, so a common positive factor per step changes nothing.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.size == 0 or (-_SMALL < z.min() and z.max() < _SMALL):
        return _series(z, _SMALL_TERMS)  # the common case: one formula for every element
    # The small-|z| series on all elements (clipped: the others are overwritten below, and
    # must not overflow meanwhile), then the few others by gather and scatter.
    C, zS, zQ = _series(np.clip(z, -_SMALL, _SMALL), _SMALL_TERMS)
    for select, formula in ((lambda v: (np.abs(v) >= _SMALL) & (np.abs(v) < _SERIES_LIMIT),
                             lambda v: _series(v, _MEDIUM_TERMS)),
                            (lambda v: v <= -_SERIES_LIMIT, _attractive_closed_form),
                            (lambda v: v >= _SERIES_LIMIT, _repulsive_closed_form)):
        mask = select(z)
        if mask.any():
            C[mask], zS[mask], zQ[mask] = formula(z[mask])
    return C, zS, zQ


def _attractive_closed_form(z):
    x = np.sqrt(-z)
    c = np.cos(x)
    s = np.sin(x) / x
    return c, z * s, c - s


def _repulsive_closed_form(z):
    # cosh and sinh times exp(-sqrt z): no overflow however strong the barrier
    y = np.sqrt(z)
    e = np.exp(-2.0 * y)
    c = 0.5 * (1.0 + e)
    s = 0.5 * (1.0 - e) / y
    return c, z * s, c - s


def _series(z, terms):
    """C, z S, z Q from `terms` terms of their Taylor series; S = C - z Q needs no series of its
    own and does not cancel (C is near 1, z Q near z/3)."""
    C = _horner(_C_COEF[:terms], z)
    zQ = _horner(_Q_COEF[:terms], z)
    zQ *= z
    zS = C - zQ
    zS *= z
    return C, zS, zQ


def _solve_block(z: np.ndarray, count_nodes: bool):
    """Propagate (omega, u') = (w/Delta, u') across the steps of one block of rows.

    z has shape (B, N) with z = U Delta^2. Returns omega_N and u'_N (both divided by one
    common positive factor, which the ratio a = -Delta omega / u' does not see) and, if
    count_nodes, the number of nodes of u in (0, R] per row (else None).
    """
    B, N = z.shape
    # Work on the transpose so that each step reads contiguous memory.
    zT = np.ascontiguousarray(z.T)
    CT, zST, zQT = step_functions(zT)
    omega = np.zeros(B)
    du = np.ones(B)
    nodes = np.zeros(B, dtype=np.int64) if count_nodes else None
    negative = np.zeros(B, dtype=bool)  # sign of u at the left edge of the step (u > 0 at r = 0+)
    deep_steps = count_nodes and bool((zT <= -_PI2).any())
    for n in range(N):
        rho0, rho1 = float(n), float(n + 1)
        c, zs = CT[n], zST[n]
        # w1 = (C - z S rho1) w0 - z (Q + S rho0 rho1) u'  and  u1' = z S w0 + (C + z S rho0) u'
        # (lengths in units of Delta): every off-free-solution term carries a factor z.
        new_omega = (c - zs * rho1) * omega - (zQT[n] + zs * (rho0 * rho1)) * du
        new_du = zs * omega + (c + zs * rho0) * du
        # Renormalise every step: strong steps may grow the pair by large factors, and a
        # common positive factor changes neither a nor the signs the node count reads.
        scale = np.maximum(np.abs(new_omega), np.abs(new_du))
        new_omega /= scale
        new_du /= scale
        if count_nodes:
            new_negative = (new_omega + rho1 * new_du) < 0  # u(r_n) / Delta < 0
            # Where u > 0 a non-attractive step makes it convex (u'' = U u >= 0), so it has at
            # most one zero in the step; an attractive step with k Delta = sqrt(-z) < pi spans
            # less than half an oscillation, so it has at most one too. Then a zero lies in
            # (r_{n-1}, r_n] iff the sign of u changes. (A zero exactly on a step edge has
            # probability zero and is not treated specially.)
            nodes += negative ^ new_negative
            if deep_steps:
                _count_deep_step_nodes(nodes, zT[n], omega + rho0 * du, du, negative, new_negative)
            negative = new_negative
        omega, du = new_omega, new_du
    return omega, du, nodes


def _count_deep_step_nodes(nodes, z, u0, du0, negative0, negative1):
    """Correct the sign-change count of one step where it is attractive with sqrt(-z) >= pi."""
    deep = z <= -_PI2
    if deep.any():
        # u = A sin(theta0 + k (r - r_{n-1})), k = sqrt(-U), with theta0 = atan2(k u0, u0')
        # taken in [0, pi): the zeros in (r_{n-1}, r_n] are the multiples of pi in
        # (theta0, theta0 + k Delta], with k Delta = sqrt(-z). This replaces the sign test.
        x = np.sqrt(-z[deep])
        theta0 = np.mod(np.arctan2(x * u0[deep], du0[deep]), np.pi)
        nodes[deep] += (np.floor((theta0 + x) / np.pi).astype(np.int64)
                        - (negative0[deep] ^ negative1[deep]))


def _solve(U, R, count_nodes: bool):
    """Shared driver: checks, blocks, and the final a = -w/u' (and node counts)."""
    U = check_potential(U)
    R = check_range(R)
    lead, N = U.shape[:-1], U.shape[-1]
    delta = R / N
    flat = U.reshape(-1, N)
    a = np.empty(flat.shape[0])
    nodes = np.empty(flat.shape[0], dtype=np.int64) if count_nodes else None
    for start in range(0, flat.shape[0], _BLOCK):
        block = flat[start:start + _BLOCK] * (delta * delta)
        omega, du, n_in = _solve_block(block, count_nodes)
        with np.errstate(divide="ignore", invalid="ignore"):
            # u'(R) = 0 exactly is the zero-energy threshold: a = +-inf.
            a[start:start + _BLOCK] = -delta * omega / du
        if count_nodes:
            uR = omega + N * du
            # Outside R, u is the line u(R) + u'(R) (r - R): one more zero, at r = a > R, iff
            # u(R) and u'(R) have opposite signs.
            nodes[start:start + _BLOCK] = n_in + (uR * du < 0)
    a = a.reshape(lead)
    if count_nodes:
        return a, nodes.reshape(lead)
    return a


def _scalar_if_0d(x):
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def scattering_length(U, R: float = 1.0, k=None):
    """Exact S-wave scattering length of step potentials, or a(k) = -tan(delta(k))/k.

    Args:
        U: step values, shape (..., N): U[..., n] is the value on [n R/N, (n+1) R/N), in units
            hbar = 2 mu = 1 (U = 2 mu V / hbar^2, inverse length squared; see
            `feynmlp.born.units.potential_to_U` for MeV and fm). Negative = attractive.
            Zero beyond R.
        R: the range, in the length unit of the problem.
        k: None or 0 for the scattering length a; else wave numbers k >= 0 (inverse length)
            broadcasting with U.shape[:-1], for a(k) = -tan(delta(k))/k, which tends to a as
            k -> 0 (`feynmlp.born.finite_energy`); the result then has the broadcast shape, and
            is +-inf, with a RuntimeWarning, at a pole of tan(delta).

    Returns:
        a, shape (...) (a NumPy float for a single potential), in the length unit of R. Outside
        the range the zero-energy solution is proportional to (r - a), so a weak attraction gives
        a < 0, a hard sphere of radius R gives a = R, and a potential exactly at a zero-energy
        threshold gives +-inf.

    Raises:
        FeynmlpError: U not of shape (..., N) with finite entries, R not positive, or k
            negative, non-finite or not broadcasting with U.shape[:-1].
    """
    if k is not None:
        from .finite_energy import check_wave_numbers, scattering_length_at
        kk = check_wave_numbers(k)
        if kk.ndim != 0 or kk != 0:
            return scattering_length_at(U, kk, R)
    return _scalar_if_0d(_solve(U, R, count_nodes=False))


def bound_state_count(U, R: float = 1.0):
    """Number of bound states (E < 0) of step potentials, shape (...), int64.

    By Sturm's oscillation theorem the number of bound states equals the number of zeros of
    the regular zero-energy solution u in (0, infinity). Inside the range they are counted
    step by step (a deep attractive step may hold several); outside, u is proportional to
    (r - a), which adds one zero iff a > R. A potential exactly at threshold (a = +-inf) has a
    zero-energy state that is not counted.
    """
    return _scalar_if_0d(_solve(U, R, count_nodes=True)[1])


def scattering_length_and_bound_states(U, R: float = 1.0):
    """Both `scattering_length` and `bound_state_count` from one pass over the steps.

    Returns:
        (a, n_bound): float64 and int64 arrays of shape (...).
    """
    a, nodes = _solve(U, R, count_nodes=True)
    return _scalar_if_0d(a), _scalar_if_0d(nodes)


def has_bound_state(U, R: float = 1.0):
    """True where the potential binds at least one state (shape (...), bool).

    A constant well U = -V0 on [0, R] binds iff V0 > pi^2 / (4 R^2).
    """
    return _scalar_if_0d(np.asarray(bound_state_count(U, R)) > 0)


def is_shallow(U, R: float = 1.0, a_max: float | None = None):
    """The shallow test: no bound state (and, if a_max is given, |a| <= a_max).

    "Shallow" potentials are those the Born series and the network experiments are meant for:
    the scattering length is then a continuous function of U on the segment from 0 to U
    (no threshold crossed), and for purely attractive U it is negative. `a_max` (same unit as
    R) also rejects near-threshold potentials, whose |a| is huge.

    Returns:
        bool array of shape (...) (a NumPy bool for a single potential).
    """
    a, nodes = _solve(U, R, count_nodes=True)
    ok = np.asarray(nodes) == 0
    if a_max is not None:
        a_max = check_range(a_max, "a_max")
        ok &= np.abs(a) <= a_max
    return _scalar_if_0d(ok)
