"""Finite-energy S-wave scattering of step potentials: phase shifts, a(k), its Born series,
the effective range and the Born series of the shape parameter.

In: step values U of shape (..., N) (conventions of `feynmlp.born.exact_scattering`: hbar =
2 mu = 1, U_n on [r_{n-1}, r_n), r_n = n R / N, zero for r >= R), the range R and wave
numbers k >= 0 (inverse length, energy E = k^2) that broadcast against U.shape[:-1].
Out:
- `phase_shift(U, k, R)`: delta(k) on the principal branch (-pi/2, pi/2];
- `scattering_length_at(U, k, R)`: a(k) = -tan(delta)/k, which tends to a as k -> 0;
- `born_terms_at(U, order, R, k)`: the terms of a(k; lambda U) = sum_j lambda^j a_j(k);
- `born_kernels_at(N, R, order, k)`: the derivatives of a(k) at U = 0;
- `effective_range(U, R)`, `shape_parameter(U, R)`: r_e and rho = a^2 r_e / 2 of
  a(k) = a + rho k^2 + O(k^4), i.e. k cot delta = -1/a + r_e k^2 / 2 + ...;
- `shape_terms(U, order, R)`: the Born terms rho_j of rho.

Method (docs/energy.md). Lengths are in units of Delta = R/N: kappa = k Delta, u = U_n Delta^2,
z = u - kappa^2 on a step, where u'' = z u. Across a step the pair (u, u') is multiplied by
the exact transfer T(z) = [[C, S], [z S, C]] with the entire functions C, S of
`exact_scattering`. The code carries instead (p, q) = M(r)^-1 (u, u'), where the columns of
M(r) = [[sin(kr)/k, cos(kr)], [cos(kr), -k sin(kr)]] are the free solutions; then
u = p sin(kr)/k + q cos(kr), so outside the range a(k) = -q/p and tan(delta) = k q/p. For U = 0
(p, q) = (1, 0) everywhere, and the transfer of a step is G = M(r_n)^-1 T(z) M(r_{n-1}) = I
exactly. Expanding T around the free z0 = -kappa^2 in powers of u,
    G = I + sum_{j>=1} u^j H_j,    H_j = M(r_n)^-1 T_j(z0) M(r_{n-1}),
where T_j are the Taylor coefficients of T at z0, which gives three things at once:
- every increment of (p, q) carries a factor u, so weak potentials lose nothing to
  cancellation (steps with |u| > 2 use the closed forms of T instead, where there is nothing to
  lose);
- the Born series: (p, q) propagated as truncated power series in the coupling lambda
  (G(lambda) = I + sum_j lambda^j u^j H_j) gives a(k; lambda U) = -q(lambda)/p(lambda) as a
  power series, whose coefficients are the exact Born terms a_j(k), to rounding;
- continuity at k -> 0: sin(kr)/k, cos(kr), k sin(kr) and the T_j(z0) are entire functions of
  k^2, evaluated without division by k, so a_j(k) tends to the zero-energy a_j smoothly and
  without loss of precision; at k = 0, (p, q) is the (u', w = u - r u') of `exact_scattering`.
The effective range comes from the derivative in k^2 at k = 0, carried alongside (a dual
number in k^2): rho = d a(k)/d(k^2) = -(q' p - q p')/p^2 and r_e = 2 rho / a^2 = -2 (q' p - q p')/q^2.

Oscillating (q^2 = k^2 - U_n > 0), evanescent (q^2 < 0) and k^2 = U_n steps share one formula.
Steps with kappa > 1 are split into equal sub-steps (the same potential on a finer grid), so
that |z0| <= 1 and the Taylor series at z0 converge quickly.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from feynmlp.errors import FeynmlpError, ResourceLimitError

from ._checks import check_positive_int, check_potential, check_range

__all__ = [
    "phase_shift",
    "scattering_length_at",
    "born_terms_at",
    "born_kernels_at",
    "effective_range",
    "shape_parameter",
    "shape_terms",
    "check_wave_numbers",
]

_BLOCK = 4096
# Largest k Delta of a (sub)step: |z0| = kappa^2 <= 1 keeps the Taylor series at z0 short.
_KAPPA_MAX = 1.0
# Steps with |u| <= _U_SERIES use G = I + sum_{j<=_TERMS} u^j H_j; the T_j(z0) decay like
# 1/(2j-1)!, so 18 terms leave < 1e-30 at |u| = 2.
_U_SERIES = 2.0
_TERMS = 18
# Terms of the Taylor series (in z0, |z0| <= 1) of each T_j(z0): the coefficients fall like
# 1/(2i)!, so 26 terms are below 1e-50.
_Z0_TERMS = 26
_MAX_TENSOR_BYTES = 2 * 1024 ** 3
# Most sub-steps one potential is split into (k R <= this, whatever N): beyond it the step loop
# alone would take minutes per potential.
_MAX_SUBSTEPS = 1 << 15
# Values per array of one block (rows x sub-steps), so memory stays flat however fine the split.
_BLOCK_VALUES = _BLOCK * 64


def check_wave_numbers(k, name: str = "k") -> np.ndarray:
    """k as a float64 array of finite values >= 0."""
    try:
        arr = np.asarray(k, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FeynmlpError(
            f"{name} must be real wave numbers k >= 0 (inverse length, E = k^2); could not "
            f"convert it to float64 ({exc})") from None
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)].flat[0]
        raise FeynmlpError(f"{name} has a non-finite value {bad!r}; wave numbers must be finite "
                           "numbers >= 0")
    if np.any(arr < 0):
        bad = arr[arr < 0].flat[0]
        raise FeynmlpError(f"{name} has a negative value {bad!r}; pass k >= 0 (the S-wave "
                           "quantities depend on k^2 only, use |k|)")
    return arr


def _broadcast(U, k):
    """Flattened rows (M, N) of U and (M,) of k, and the broadcast leading shape."""
    lead_u, N = U.shape[:-1], U.shape[-1]
    try:
        lead = np.broadcast_shapes(lead_u, k.shape)
    except ValueError:
        raise FeynmlpError(
            f"k of shape {k.shape} does not broadcast with the potentials' leading shape {lead_u} "
            f"(U has shape {U.shape}); pass one k, k of shape {lead_u}, or e.g. U[..., None, :] "
            "with k of shape (K,) for every potential at every k") from None
    Uf = np.broadcast_to(U, lead + (N,)).reshape(-1, N)
    kf = np.broadcast_to(k, lead).reshape(-1)
    return lead, Uf, kf


def _scalar_if_0d(x):
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


# --- the Taylor coefficients of T(z) = [[C, S], [z S, C]] at z0 -----------------------------

def _coefficient_table(jmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tab[j, i] = binom(i + j, i) F_{i+j} for F = C, S, zS (F_n their Taylor coefficients at 0):
    the Taylor coefficient of t^j in F(z0 + t) is sum_i tab[j, i] z0^i."""
    n = jmax + _Z0_TERMS + 1
    C = np.array([1.0 / math.factorial(2 * m) for m in range(n)])
    S = np.array([1.0 / math.factorial(2 * m + 1) for m in range(n)])
    W = np.array([0.0] + [1.0 / math.factorial(2 * m - 1) for m in range(1, n)])
    tabs = []
    for F in (C, S, W):
        tab = np.empty((jmax + 1, _Z0_TERMS))
        for j in range(jmax + 1):
            for i in range(_Z0_TERMS):
                tab[j, i] = math.comb(i + j, i) * F[i + j]
        tabs.append(tab)
    return tuple(tabs)


_TABLES: dict[int, tuple] = {}


def _shifted_coefficients(z0, jmax: int):
    """(c, s, w), each of shape (jmax + 1,) + z0.shape: T_j(z0) = [[c_j, s_j], [w_j, c_j]]."""
    if jmax not in _TABLES:
        _TABLES[jmax] = _coefficient_table(jmax)
    z0 = np.asarray(z0, dtype=np.float64)
    out = []
    for tab in _TABLES[jmax]:
        acc = np.zeros((jmax + 1,) + z0.shape)
        for i in range(_Z0_TERMS - 1, -1, -1):
            acc *= z0
            acc += tab[:, i].reshape((jmax + 1,) + (1,) * z0.ndim)
        out.append(acc)
    return tuple(out)


# --- 2x2 matrices as 4-tuples of arrays (broadcast over rows) --------------------------------

def _mm(A, B):
    a00, a01, a10, a11 = A
    b00, b01, b10, b11 = B
    return (a00 * b00 + a01 * b10, a00 * b01 + a01 * b11,
            a10 * b00 + a11 * b10, a10 * b01 + a11 * b11)


def _add(*mats):
    return tuple(sum(parts) for parts in zip(*mats))


def _free_matrices(rho, kappa):
    """M(rho) and M(rho)^-1 in units of Delta (rho = r/Delta, kappa = k Delta)."""
    k2 = kappa * kappa
    sn = rho * np.sinc(kappa * rho / np.pi)  # sin(kappa rho)/kappa, = rho at kappa = 0
    cs = np.cos(kappa * rho)
    return (sn, cs, cs, -k2 * sn), (k2 * sn, cs, cs, -sn)


def _free_derivatives(rho):
    """d M / d kappa^2 and d M^-1 / d kappa^2 at kappa = 0."""
    r2, r3 = rho * rho / 2.0, rho ** 3 / 6.0
    return (-r3, -r2, -r2, -rho), (rho, -r2, -r2, r3)


def _step_H(n, kappa, coefs, jmax, dual):
    """[H_1 .. H_jmax] of step n (and their k^2 derivatives at kappa = 0 if dual)."""
    c, s, w = coefs
    M0, _ = _free_matrices(float(n), kappa)
    _, Minv1 = _free_matrices(float(n + 1), kappa)
    H = []
    for j in range(1, jmax + 1):
        H.append(_mm(Minv1, _mm((c[j], s[j], w[j], c[j]), M0)))
    if not dual:
        return H, None
    dM0, _ = _free_derivatives(float(n))
    _, dMinv1 = _free_derivatives(float(n + 1))
    dH = []
    for j in range(1, jmax + 1):
        Tj = (c[j], s[j], w[j], c[j])
        # d T_j(z0) / d kappa^2 = -d T_j / d z0 = -(j + 1) T_{j+1}(z0)
        dTj = tuple(-(j + 1) * x for x in (c[j + 1], s[j + 1], w[j + 1], c[j + 1]))
        dH.append(_add(_mm(dMinv1, _mm(Tj, M0)), _mm(Minv1, _mm(dTj, M0)),
                       _mm(Minv1, _mm(Tj, dM0))))
    return H, dH


def _apply(G, p, q):
    return G[0] * p + G[1] * q, G[2] * p + G[3] * q


# --- the exact (non-perturbative) propagation ------------------------------------------------

def _exact_block(u, kappa, dual: bool):
    """Final (p, q) (and (p', q') = d/d kappa^2 at kappa = 0 if dual) for rows u (B, N)."""
    from .exact_scattering import step_functions

    B, N = u.shape
    coefs = _shifted_coefficients(-kappa * kappa, _TERMS + 1)
    p, q = np.ones(B), np.zeros(B)
    dp = dq = None
    if dual:
        dp, dq = np.zeros(B), np.zeros(B)
    strong = np.abs(u) > _U_SERIES
    any_strong = bool(strong.any())
    c, s, w = coefs
    # d T_j / d kappa^2 = -d T_j / d z0 = -(j + 1) T_{j+1}(z0)
    dc, ds, dw = ([-(j + 1) * x[j + 1] for j in range(_TERMS + 1)] for x in coefs) if dual \
        else (None, None, None)
    for n in range(N):
        M0, _ = _free_matrices(float(n), kappa)
        _, Minv1 = _free_matrices(float(n + 1), kappa)
        un = np.clip(u[:, n], -_U_SERIES, _U_SERIES)  # the others are overwritten below
        # T(z0 + u) - T(z0) = u (T_1 + u (T_2 + ...)) by Horner, then G - I = M^-1 (..) M
        tc, ts, tw = c[_TERMS], s[_TERMS], w[_TERMS]
        for j in range(_TERMS - 1, 0, -1):
            tc, ts, tw = un * tc + c[j], un * ts + s[j], un * tw + w[j]
        DT = (un * tc, un * ts, un * tw, un * tc)
        D = _mm(Minv1, _mm(DT, M0))
        dpn, dqn = _apply(D, p, q)
        new_p, new_q = p + dpn, q + dqn
        if dual:
            M0d, _ = _free_derivatives(float(n))
            _, Minv1d = _free_derivatives(float(n + 1))
            tc, ts, tw = dc[_TERMS], ds[_TERMS], dw[_TERMS]
            for j in range(_TERMS - 1, 0, -1):
                tc, ts, tw = un * tc + dc[j], un * ts + ds[j], un * tw + dw[j]
            dDT = (un * tc, un * ts, un * tw, un * tc)
            dD = _add(_mm(Minv1d, _mm(DT, M0)), _mm(Minv1, _mm(dDT, M0)),
                      _mm(Minv1, _mm(DT, M0d)))
            a1, b1 = _apply(dD, p, q)
            a2, b2 = _apply(D, dp, dq)
            new_dp, new_dq = dp + a1 + a2, dq + b1 + b2
        if any_strong and strong[:, n].any():
            sel = strong[:, n]
            ks = kappa[sel] if np.ndim(kappa) else kappa
            z = u[sel, n] - ks * ks  # |z| > 1: u > 2 or u < -2 with kappa^2 <= 1
            C, zS, zQ = step_functions(z)  # all three times one positive factor where z > 1
            S = zS / z
            M0, _ = _free_matrices(float(n), ks)
            _, Minv1 = _free_matrices(float(n + 1), ks)
            G = _mm(Minv1, _mm((C, S, zS, C), M0))
            ps, qs = p[sel], q[sel]
            new_p[sel], new_q[sel] = _apply(G, ps, qs)
            if dual:
                Q = zQ / z
                dT = (-S / 2, -Q / 2, -(C + S) / 2, -S / 2)  # d T / d kappa^2 = -d T / d z
                dM0, _ = _free_derivatives(float(n))
                _, dMinv1 = _free_derivatives(float(n + 1))
                T = (C, S, zS, C)
                dG = _add(_mm(dMinv1, _mm(T, M0)), _mm(Minv1, _mm(dT, M0)),
                          _mm(Minv1, _mm(T, dM0)))
                a1, b1 = _apply(dG, ps, qs)
                a2, b2 = _apply(G, dp[sel], dq[sel])
                new_dp[sel], new_dq[sel] = a1 + a2, b1 + b2
        # One common positive factor per row changes no ratio; it keeps strong steps from
        # overflowing.
        scale = np.maximum(np.abs(new_p), np.abs(new_q))
        p, q = new_p / scale, new_q / scale
        if dual:
            dp, dq = new_dp / scale, new_dq / scale
    return p, q, dp, dq


# --- the Born series: (p, q) as power series in the coupling ---------------------------------

def _series_block(u, kappa, order: int, dual: bool):
    """Coefficients p_m, q_m (m = 0..order) of (p, q)(lambda) (and their k^2 derivatives)."""
    B, N = u.shape
    jmax = order + 1 if dual else order
    coefs = _shifted_coefficients(-kappa * kappa, jmax)
    P = np.zeros((order + 1, B))
    Qs = np.zeros((order + 1, B))
    P[0] = 1.0
    dP = dQ = None
    if dual:
        dP, dQ = np.zeros((order + 1, B)), np.zeros((order + 1, B))
    for n in range(N):
        H, dH = _step_H(n, kappa, coefs, order, dual)
        un = u[:, n]
        upow = [None, un]
        for j in range(2, order + 1):
            upow.append(upow[-1] * un)
        # Descending m: the update of order m reads only orders < m, not yet updated.
        for m in range(order, 0, -1):
            for j in range(1, m + 1):
                A = tuple(upow[j] * x for x in H[j - 1])
                a, b = _apply(A, P[m - j], Qs[m - j])
                if dual:
                    dA = tuple(upow[j] * x for x in dH[j - 1])
                    a1, b1 = _apply(dA, P[m - j], Qs[m - j])
                    a2, b2 = _apply(A, dP[m - j], dQ[m - j])
                    dP[m] += a1 + a2
                    dQ[m] += b1 + b2
                P[m] += a
                Qs[m] += b
    return P, Qs, dP, dQ


def _series_mul(x, y, order):
    out = np.zeros((order + 1,) + x.shape[1:])
    for m in range(order + 1):
        for i in range(m + 1):
            out[m] += x[i] * y[m - i]
    return out


def _series_inverse(p, order):
    b = np.zeros_like(p)
    b[0] = 1.0 / p[0]
    for m in range(1, order + 1):
        acc = np.zeros_like(p[0])
        for i in range(1, m + 1):
            acc += p[i] * b[m - i]
        b[m] = -acc * b[0]
    return b


# --- refinement and blocks -------------------------------------------------------------------

def _check_substeps(N, kappa_max, R):
    s = max(1, math.ceil(kappa_max / _KAPPA_MAX))
    if N * s > _MAX_SUBSTEPS:
        raise FeynmlpError(
            f"k = {kappa_max * N / R!r} is too large: k R = {kappa_max * N:.3g} needs {N * s} "
            f"sub-steps of k Delta <= 1, more than the {_MAX_SUBSTEPS} supported; use k R <= "
            f"{_MAX_SUBSTEPS * _KAPPA_MAX:.0f}")
    return s


def _groups(kappa):
    """Rows grouped by their sub-step count s = ceil(kappa / _KAPPA_MAX) (>= 1)."""
    s = np.maximum(1, np.ceil(kappa / _KAPPA_MAX)).astype(np.int64)
    for value in np.unique(s):
        yield int(value), np.flatnonzero(s == value)


def _run(Uf, kf, R, block_fn):
    """Apply block_fn(u, kappa, delta) to all rows, grouped by refinement; returns a list of the
    (rows, results) of each call."""
    N = Uf.shape[1]
    delta = R / N
    kappa = kf * delta
    _check_substeps(N, float(kappa.max()) if kappa.size else 0.0, R)
    out = []
    for s, rows in _groups(kappa):
        d = delta / s
        block = max(1, min(_BLOCK, _BLOCK_VALUES // (N * s)))
        for start in range(0, rows.size, block):
            idx = rows[start:start + block]
            u = Uf[idx] * (d * d)
            if s > 1:
                u = np.repeat(u, s, axis=1)
            out.append((idx, block_fn(u, kappa[idx] / s, d)))
    return out


# --- public functions ------------------------------------------------------------------------

def _exact_pq(U, k, R):
    U = check_potential(U)
    R = check_range(R)
    k = check_wave_numbers(k)
    lead, Uf, kf = _broadcast(U, k)
    p = np.empty(kf.size)
    q = np.empty(kf.size)
    kd = np.empty(kf.size)
    delta = np.empty(kf.size)
    for idx, (pb, qb, kb, d) in _run(
            Uf, kf, R, lambda u, kap, d: _exact_block(u, kap, False)[:2] + (kap, d)):
        p[idx], q[idx], kd[idx], delta[idx] = pb, qb, kb, d
    return lead, Uf, kf, p, q, kd, delta


def phase_shift(U, k, R: float = 1.0):
    """Exact S-wave phase shift delta(k) of step potentials, on the branch (-pi/2, pi/2].

    Args:
        U: step values, shape (..., N), hbar = 2 mu = 1 (see `scattering_length`).
        k: wave numbers >= 0 (inverse length; E = k^2 in these units), any shape that
            broadcasts with U.shape[:-1]; e.g. U[:, None, :] with k of shape (K,) gives every
            potential at every k.
        R: the range.

    Returns:
        delta, shape broadcast(U.shape[:-1], k.shape): beyond R, u(r) is proportional to
        sin(kr + delta). Only delta modulo pi is defined by the step potential alone (Levinson's
        theorem would count the bound states); the principal value is returned, with +pi/2 at a
        pole of tan(delta). delta(0) = 0.

    Raises:
        FeynmlpError: bad U or R, k negative or non-finite, or k not broadcasting with U.
    """
    lead, _, _, p, q, kd, _ = _exact_pq(U, k, R)
    theta = np.arctan2(kd * q, p)  # tan(delta) = kappa q / p
    theta = np.where(theta > np.pi / 2, theta - np.pi, theta)
    theta = np.where(theta <= -np.pi / 2, theta + np.pi, theta)
    return _scalar_if_0d(theta.reshape(lead))


def scattering_length_at(U, k, R: float = 1.0):
    """a(k) = -tan(delta(k))/k of step potentials; a at k = 0 (see `scattering_length`)."""
    from .exact_scattering import scattering_length

    lead, Uf, kf, p, q, _, delta = _exact_pq(U, k, R)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = -delta * q / p
    pole = p == 0
    if pole.any():
        warnings.warn(
            f"{int(pole.sum())} of the (potential, k) pairs sit exactly at a pole of tan(delta) "
            "(delta = pi/2), where a(k) = -tan(delta)/k is infinite; returning +-inf there",
            RuntimeWarning, stacklevel=3)
    zero = kf == 0
    if zero.any():
        # k = 0 is the scattering length itself, computed as at zero energy (bit for bit).
        a[zero] = scattering_length(Uf[zero], R)
    return _scalar_if_0d(a.reshape(lead))


def born_terms_at(U, order: int, R: float = 1.0, k=0.0) -> np.ndarray:
    """The Born terms a_1(k) .. a_order(k) of a(k); shape broadcast(U.shape[:-1], k.shape) + (order,)."""
    from .born_series import born_terms

    U = check_potential(U)
    order = check_positive_int(order, "order")
    R = check_range(R)
    k = check_wave_numbers(k)
    lead, Uf, kf = _broadcast(U, k)
    out = np.empty((kf.size, order))

    def block(u, kap, d):
        P, Qs, _, _ = _series_block(u, kap, order, False)
        b = _series_inverse(P, order)
        a = -_series_mul(Qs, b, order)
        return (a[1:] * d).T

    for idx, res in _run(Uf, kf, R, block):
        out[idx] = res
    zero = kf == 0
    if zero.any():
        out[zero] = born_terms(Uf[zero], order, R)
    return out.reshape(lead + (order,))


def _zero_energy_dual(U, R, order=None):
    """Exact (order None) or series propagation at k = 0 with the k^2 derivative."""
    U = check_potential(U)
    R = check_range(R)
    lead, N = U.shape[:-1], U.shape[-1]
    delta = R / N
    flat = U.reshape(-1, N)
    results = []
    for start in range(0, flat.shape[0], _BLOCK):
        u = flat[start:start + _BLOCK] * (delta * delta)
        kap = np.zeros(u.shape[0])
        if order is None:
            results.append(_exact_block(u, kap, True))
        else:
            results.append(_series_block(u, kap, order, True))
    return lead, delta, flat, results


def shape_parameter(U, R: float = 1.0):
    """rho = d a(k) / d(k^2) at k = 0, the k^2 coefficient of a(k) = a + rho k^2 + O(k^4).

    rho = a^2 r_e / 2 with the effective range r_e; unlike r_e it stays finite as U -> 0
    (rho_1 = -int U r^4 dr / 3), and it is infinite at a zero-energy threshold (a = +-inf).
    Shape (...), in the cube of the length unit of R.
    """
    lead, delta, _, results = _zero_energy_dual(U, R)
    parts = []
    for p, q, dp, dq in results:
        with np.errstate(divide="ignore", invalid="ignore"):
            parts.append(-(dq * p - q * dp) / (p * p))
    rho = np.concatenate(parts) if parts else np.empty(0)
    return _scalar_if_0d((rho * delta ** 3).reshape(lead))


def effective_range(U, R: float = 1.0):
    """Exact effective range r_e of step potentials: k cot(delta) = -1/a + r_e k^2 / 2 + O(k^4).

    Computed from the zero-energy solution and its derivative in k^2 (no fit):
    r_e = 2 rho / a^2, which stays finite at a zero-energy threshold (a = +-inf).

    Args:
        U: step values, shape (..., N); R: the range.

    Returns:
        r_e, shape (...), in the length unit of R. A constant well U = -V0 (K^2 = V0) has
        r_e = R - R^3 / (3 a^2) - 1 / (K^2 a), with a its scattering length.

    Raises:
        FeynmlpError: bad U or R, or a potential with a = 0 (U = 0 among them), for which
            r_e = 2 rho / a^2 is infinite; use `shape_parameter` (rho) or `shape_terms` there.
    """
    lead, delta, flat, results = _zero_energy_dual(U, R)
    parts = []
    start = 0
    for p, q, dp, dq in results:
        zero = q == 0
        if zero.any():
            row = start + int(np.flatnonzero(zero)[0])
            where = (f"the potential at index {tuple(int(i) for i in np.unravel_index(row, lead))}"
                     if lead else "the potential")
            raise FeynmlpError(
                f"{where} has scattering length "
                f"a = 0 (max |U| = {float(np.abs(flat[row]).max())!r}), so its effective range "
                "r_e = 2 rho / a^2 is infinite; use shape_parameter(U, R) for rho = a^2 r_e / 2, "
                "or drop that potential")
        parts.append(-2.0 * (dq * p - q * dp) / (q * q))
        start += p.size
    r_e = np.concatenate(parts) if parts else np.empty(0)
    return _scalar_if_0d((r_e * delta).reshape(lead))


def shape_terms(U, order: int, R: float = 1.0) -> np.ndarray:
    """The Born terms rho_1 .. rho_order of the shape parameter rho = a^2 r_e / 2.

    rho(lambda U) = sum_j lambda^j rho_j(U), rho_j homogeneous of degree j in U;
    rho_1 = -int U r^4 dr / 3 (constant well U = -V0: rho_1 = V0 R^5 / 15).

    Returns:
        Array of shape (..., order), in the cube of the length unit of R.
    """
    order = check_positive_int(order, "order")
    lead, delta, _, results = _zero_energy_dual(U, R, order)
    parts = []
    for P, Qs, dP, dQ in results:
        b = _series_inverse(P, order)
        b2 = _series_mul(b, b, order)
        rho = -(_series_mul(dQ, b, order) - _series_mul(_series_mul(Qs, dP, order), b2, order))
        parts.append(rho[1:].T)
    out = np.concatenate(parts) if parts else np.empty((0, order))
    return (out * delta ** 3).reshape(lead + (order,))


def born_kernels_at(N: int, R: float = 1.0, order: int = 2, k: float = 0.0):
    """The derivatives of a(k) at U = 0 on N steps over [0, R] (a `BornKernels` with its k).

    Built from the per-step matrices H_j (module docstring): with h(n) = H_1(n) (1, 0),
    a_1 = -sum_n u_n h_q(n); the second and third orders are the ordered products of H's along
    the steps, combined through a = -q/p. Exact to rounding.
    """
    from .born_series import BornKernels

    N = check_positive_int(N, "N")
    R = check_range(R)
    order = check_positive_int(order, "order")
    kk = check_wave_numbers(k)
    if kk.ndim != 0:
        raise FeynmlpError(f"born_kernels takes one k (a number), got an array of shape {kk.shape}; "
                           "build one BornKernels per k")
    kk = float(kk)
    if order > 3:
        raise FeynmlpError(
            f"born_kernels builds derivative tensors up to order 3, got order={order}; for higher "
            "orders along given potentials use born_terms(U, order, R, k=k)")
    delta = R / N
    s = _check_substeps(N, kk * delta, R)
    Nf = N * s
    needed = 8 * 8 * Nf ** 3 if order == 3 else 8 * 8 * Nf ** 2
    if needed > _MAX_TENSOR_BYTES:
        raise ResourceLimitError(
            f"the order-{order} kernel at k = {kk} needs {needed / 1024 ** 3:.1f} GiB ({Nf} "
            f"sub-steps of k Delta <= 1); use a coarser grid, a smaller k, or born_terms along the "
            "directions you need")
    d = delta / s
    kappa = kk * d
    coefs = _shifted_coefficients(np.float64(-kappa * kappa), order)
    rho = np.arange(Nf, dtype=np.float64)
    c, sv, w = coefs
    M0, _ = _free_matrices(rho, kappa)
    _, Minv1 = _free_matrices(rho + 1.0, kappa)
    H = [_mm(Minv1, _mm((c[j], sv[j], w[j], c[j]), M0)) for j in range(1, order + 1)]
    hp, hq = H[0][0], H[0][2]  # h(n) = H_1(n) (1, 0)
    first = -hq
    second = third = None
    if order >= 2:
        e2p, e2q = H[1][0], H[1][2]
        # X(m, n) = H_1(m) h(n), used for m > n
        Xp = np.outer(H[0][0], hp) + np.outer(H[0][1], hq)
        Xq = np.outer(H[0][2], hp) + np.outer(H[0][3], hq)
        lower = np.tril(np.ones((Nf, Nf), dtype=bool), -1)  # [m, n]: m > n
        Bq = np.where(lower, Xq, 0.0) + np.diag(e2q)  # q2 = sum Bq u u
        Bp = np.where(lower, Xp, 0.0) + np.diag(e2p)
        A2 = -Bq + np.outer(hq, hp)  # a_2 = -q2 + q1 p1
        second = A2 + A2.T
        if order >= 3:
            e3q = H[2][2]
            A3 = np.zeros((Nf, Nf, Nf))
            idx = np.arange(Nf)
            A3[idx, idx, idx] -= e3q
            # m > n: u_m^2 u_n H_2(m) h(n) and u_m u_n^2 H_1(m) H_2(n) (1, 0)
            t1 = np.outer(H[1][2], hp) + np.outer(H[1][3], hq)
            t2 = np.outer(H[0][2], e2p) + np.outer(H[0][3], e2q)
            mm_, nn_ = np.nonzero(lower)
            A3[mm_, mm_, nn_] -= t1[mm_, nn_]
            A3[mm_, nn_, nn_] -= t2[mm_, nn_]
            # l > m > n: H_1(l) H_1(m) h(n)
            chain = (H[0][2][:, None, None] * np.where(lower, Xp, 0.0)[None]
                     + H[0][3][:, None, None] * np.where(lower, Xq, 0.0)[None])
            A3 -= chain * lower[:, :, None]
            # + q2 p1 + q1 p2 - q1 p1^2
            A3 += Bq[:, :, None] * hp[None, None, :]
            A3 += hq[:, None, None] * Bp[None, :, :]
            A3 -= hq[:, None, None] * hp[None, :, None] * hp[None, None, :]
            third = sum(A3.transpose(perm) for perm in
                        ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)))
    first = first * d ** 3
    if second is not None:
        second = second * d ** 5
    if third is not None:
        third = third * d ** 7
    if s > 1:
        first = first.reshape(N, s).sum(axis=1)
        if second is not None:
            second = second.reshape(N, s, N, s).sum(axis=(1, 3))
        if third is not None:
            third = third.reshape(N, s, N, s, N, s).sum(axis=(1, 3, 5))
    return BornKernels(N=N, R=R, first=first, second=second, third=third, k=kk)
