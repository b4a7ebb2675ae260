"""The Born series of step potentials: exact Born terms and the discretised kernels.

In: step values U of shape (..., N) (conventions of `feynmlp.born.exact_scattering`: hbar =
2 mu = 1, U_n on [r_{n-1}, r_n), r_n = n R / N), an order K and the range R.
Out:
- `born_terms(U, K, R)`: a_1 .. a_K of shape (..., K), the terms of a(lambda U) =
  sum_k lambda^k a_k(U) (a_k is homogeneous of degree k in U); exact to rounding, any K.
- `born_kernels(N, R, order)`: the derivatives of a at U = 0 (a `BornKernels`): the
  first-order kernel c, the second-order matrix -2K and, for order 3, the third-order tensor.

Born terms, method (docs/born.md). The variable-phase equation a'(r) = U(r) (r - a)^2,
a(0) = 0, expanded as a = sum_k a_k gives
    a_k' = U [ delta_{k1} r^2 - 2 r a_{k-1} + sum_{i+j=k-1, i,j>=1} a_i a_j ].
On a step U is constant, so if a_1 .. a_{k-1} are polynomials in r there, so is a_k (degree
2k+1). The code carries, per row, the values a_k(r_{n-1}) and on each step builds the
polynomials in the local variable tau = (r - r_{n-1}) / Delta in [0, 1] (in units of Delta,
with z = U_n Delta^2, the equation reads alpha' = z (n - 1 + tau - alpha)^2, a = Delta alpha),
integrates them exactly, and evaluates at tau = 1. Polynomial coefficients are arrays over
the rows, so the work is vectorised over every leading axis; only the steps are looped over.

Kernels, method. With g(r, r') = -min(r, r') the terms are nested integrals
    a_k = (-1)^(k-1) int r1 U(r1) min(r1, r2) U(r2) ... min(r_{k-1}, r_k) U(r_k) r_k,
so on steps a_2 = -sum_nm K_nm U_n U_m and a_3 = sum_nmp I_nmp U_n U_m U_p with
    K_nm  = int_{step n} int_{step m} r min(r, r') r',
    I_nmp = int_{step m} g_n(r) g_p(r) dr,   g_n(r) = int_{step n} r' min(r', r) dr'.
g_n is a polynomial of degree <= 3 on each step m (a constant for n < m, linear for n > m,
cubic for n = m), so every integral is a finite sum of exact moments, computed in the local
variable of step m to avoid cancellation between large powers of r.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feynmlp.errors import FeynmlpError, ResourceLimitError

from ._checks import check_positive_int, check_potential, check_range

__all__ = ["born_terms", "born_kernels", "BornKernels"]

_BLOCK = 8192
# Largest third-order tensor born_kernels builds (bytes); the (N, N, N) float64 array and two
# temporaries of the same size must fit in memory.
_MAX_TENSOR_BYTES = 2 * 1024 ** 3


def _poly_mul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Product of two polynomials whose coefficients (lowest first) run along axis 0."""
    out = np.zeros((p.shape[0] + q.shape[0] - 1,) + p.shape[1:])
    for s in range(p.shape[0]):
        out[s:s + q.shape[0]] += p[s] * q
    return out


def _born_block(z: np.ndarray, order: int) -> np.ndarray:
    """alpha_1 .. alpha_K at r = R (units of Delta) for one block; z = U Delta^2, shape (B, N)."""
    B, N = z.shape
    zT = np.ascontiguousarray(z.T)
    values = np.zeros((order, B))  # alpha_k at the left edge of the current step
    # 1 / (j + 1) for integrating a polynomial of degree j term by term.
    inv = [(1.0 / np.arange(1, 2 * k + 2, dtype=np.float64))[:, None] for k in range(1, order + 1)]
    for n in range(N):
        u = zT[n]
        m = float(n)
        polys = []  # polys[k-1]: coefficients of alpha_k(tau), shape (2k + 2, B)
        for k in range(1, order + 1):
            if k == 1:
                # integrand (m + tau)^2 = m^2 + 2 m tau + tau^2
                integrand = np.array([m * m, 2.0 * m, 1.0])[:, None]
            else:
                prev = polys[k - 2]
                integrand = np.zeros((2 * k + 1, B))
                integrand[:-1] -= (2.0 * m) * prev  # -2 (m + tau) alpha_{k-1}
                integrand[1:] -= 2.0 * prev
                for i in range(1, k - 1):  # + sum_{i+j=k-1} alpha_i alpha_j, each pair once
                    j = k - 1 - i
                    if i > j:
                        break
                    weight = 1.0 if i == j else 2.0
                    integrand += weight * _poly_mul(polys[i - 1], polys[j - 1])
            poly = np.empty((2 * k + 2, B))
            poly[0] = values[k - 1]
            poly[1:] = integrand * inv[k - 1] * u
            polys.append(poly)
        for k in range(order):
            # alpha_k at tau = 1. Summed in a fixed order rather than with .sum(axis=0), whose
            # order (and so the last bit) depends on the number of rows: a row's Born terms
            # must not depend on which other rows share its block.
            acc = polys[k][0].copy()
            for row in polys[k][1:]:
                acc += row
            values[k] = acc
    return values.T


def born_terms(U, order: int, R: float = 1.0, k=None) -> np.ndarray:
    """The Born terms a_1 .. a_order of step potentials (of a(k) if k is given), exact.

    Args:
        U: step values, shape (..., N), hbar = 2 mu = 1 (see `scattering_length`).
        order: the highest term K >= 1. The cost grows like K^3 per step.
        R: the range.
        k: None or 0 for the Born terms of the scattering length; else wave numbers k >= 0
            broadcasting with U.shape[:-1], for the Born terms a_j(k) of a(k) = -tan(delta)/k
            (`feynmlp.born.finite_energy`; a_1(k) = int U sin^2(kr)/k^2 dr), which tend to
            the zero-energy a_j as k -> 0. The result then has shape
            broadcast(U.shape[:-1], k.shape) + (order,).

    Returns:
        Array of shape (..., order): [..., k-1] is a_k, the part of the scattering length of
        degree k in U, so that a(lambda U) = sum_k lambda^k a_k for |lambda| below the radius
        of convergence. For a constant well U = -V0: a_1 = -V0 R^3/3, a_2 = -2 V0^2 R^5/15,
        a_3 = -17 V0^3 R^7/315.

    Raises:
        FeynmlpError: bad U, order or R.
    """
    if k is not None:
        from .finite_energy import born_terms_at, check_wave_numbers
        kk = check_wave_numbers(k)
        if kk.ndim != 0 or kk != 0:
            return born_terms_at(U, order, R, kk)
    U = check_potential(U)
    order = check_positive_int(order, "order")
    R = check_range(R)
    lead, N = U.shape[:-1], U.shape[-1]
    delta = R / N
    flat = U.reshape(-1, N)
    out = np.empty((flat.shape[0], order))
    for start in range(0, flat.shape[0], _BLOCK):
        out[start:start + _BLOCK] = _born_block(flat[start:start + _BLOCK] * (delta * delta), order)
    out *= delta
    return out.reshape(lead + (order,))


@dataclass(frozen=True)
class BornKernels:
    """Derivatives of the scattering length (or of a(k)) at U = 0 on N steps over [0, R].

    Attributes:
        N, R: the grid.
        first: shape (N,), first[n] = d a / d U_n = c_n = (r_n^3 - r_{n-1}^3) / 3.
        second: shape (N, N), second[n, m] = d^2 a / dU_n dU_m = -2 K_nm (symmetric), so that
            a_2(U) = U @ second @ U / 2.
        third: shape (N, N, N) or None (order < 3): third[n, m, p] = d^3 a / dU_n dU_m dU_p,
            fully symmetric, so that a_3(U) = einsum('nmp,n,m,p', third, U, U, U) / 6.
        k: the wave number the derivatives are taken at (0: the scattering length a; else
            a(k) = -tan(delta(k))/k, whose first derivative is int_{step n} sin^2(kr)/k^2 dr).

    These are what the Taylor coefficients of a network trained on (U, a) must approach:
    the derivative tensors, not the Taylor coefficients (which carry 1/2 and 1/6, and merge
    the permutations of an index triple).
    """

    N: int
    R: float
    first: np.ndarray
    second: np.ndarray | None
    third: np.ndarray | None
    k: float = 0.0

    @property
    def K(self) -> np.ndarray:
        """The matrix K of a_2 = -sum_nm K_nm U_n U_m (docs/born.md), i.e. -second / 2."""
        if self.second is None:
            raise FeynmlpError("these kernels were built with order=1; call born_kernels(N, R, order=2)")
        return -0.5 * self.second

    def born_terms(self, U) -> np.ndarray:
        """a_1, a_2 (, a_3) of potentials U (..., N) from the kernels: shape (..., order)."""
        U = check_potential(U)
        if U.shape[-1] != self.N:
            raise FeynmlpError(
                f"U has {U.shape[-1]} steps but these kernels are for N = {self.N}; build "
                f"born_kernels({U.shape[-1]}, R) for this grid")
        terms = [U @ self.first]
        if self.second is not None:
            terms.append(0.5 * np.einsum("...n,nm,...m->...", U, self.second, U))
        if self.third is not None:
            terms.append(np.einsum("...n,...m,...p,nmp->...", U, U, U, self.third, optimize=True) / 6.0)
        return np.stack(terms, axis=-1)


def _g_coefficients(N: int) -> np.ndarray:
    """G[m, n, i]: coefficient of t^i in g_n(r) on step m, t = r - r_{m-1}, units Delta = 1.

    g_n(r) = int_{step n} r' min(r', r) dr':
      n < m: int r'^2 = c_n (a constant);
      n > m: r int r' = s_n (m + t);
      n = m: (r^3 - m^3)/3 + r ((m+1)^2 - r^2)/2 = m s_m + s_m t - (m/2) t^2 - t^3/6,
    with steps numbered from 0, c_n = ((n+1)^3 - n^3)/3 and s_n = ((n+1)^2 - n^2)/2.
    """
    j = np.arange(N, dtype=np.float64)
    c = (3.0 * j * j + 3.0 * j + 1.0) / 3.0
    s = (2.0 * j + 1.0) / 2.0
    G = np.zeros((N, N, 4))
    m_idx, n_idx = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    below = n_idx < m_idx
    above = n_idx > m_idx
    G[..., 0] = np.where(below, c[n_idx], 0.0) + np.where(above, s[n_idx] * m_idx, 0.0)
    G[..., 1] = np.where(above, s[n_idx], 0.0)
    diag = np.arange(N)
    G[diag, diag, 0] = j * s
    G[diag, diag, 1] = s
    G[diag, diag, 2] = -0.5 * j
    G[diag, diag, 3] = -1.0 / 6.0
    return G


def born_kernels(N: int, R: float = 1.0, order: int = 2, k=None) -> BornKernels:
    """The derivatives of the scattering length at U = 0, exactly, on N steps over [0, R].

    Args:
        N: number of steps.
        R: the range.
        order: 1, 2 or 3; the highest derivative built (order 3 holds N^3 numbers).
        k: None or 0 for the scattering length; else one wave number k > 0 for the
            derivatives of a(k) (`feynmlp.born.finite_energy.born_kernels_at`).

    Returns:
        A `BornKernels` (first (N,), second (N, N) or None, third (N, N, N) or None).

    Raises:
        FeynmlpError: bad N, R or order (> 3: use `born_terms` for directional higher terms).
        ResourceLimitError: the third-order tensor would not fit in memory.
    """
    if k is not None:
        from .finite_energy import born_kernels_at, check_wave_numbers
        kk = check_wave_numbers(k)
        if kk.ndim != 0 or kk != 0:
            return born_kernels_at(N, R, order, kk)
    N = check_positive_int(N, "N")
    R = check_range(R)
    order = check_positive_int(order, "order")
    if order > 3:
        raise FeynmlpError(
            f"born_kernels builds derivative tensors up to order 3, got order={order}; for higher "
            "orders along given potentials use born_terms(U, order, R)")
    if order == 3 and 3 * 8 * N ** 3 > _MAX_TENSOR_BYTES:
        raise ResourceLimitError(
            f"the third-order kernel for N = {N} needs {3 * 8 * N ** 3 / 1024 ** 3:.1f} GiB; use a "
            f"coarser grid or contract with born_terms along the directions you need")
    delta = R / N
    j = np.arange(N, dtype=np.float64)
    first = delta ** 3 * (3.0 * j * j + 3.0 * j + 1.0) / 3.0
    second = third = None
    if order >= 2:
        G = _g_coefficients(N)
        moments = 1.0 / np.arange(1, 8, dtype=np.float64)  # int_0^1 t^q dt
        # K_nm = int_{step m} g_n(r) r dr, r = m + t
        weights = j[:, None] * moments[None, :4] + moments[None, 1:5]  # (m, i)
        K = np.einsum("mni,mi->nm", G, weights)
        K = 0.5 * (K + K.T)  # exact symmetry (the two triangles round differently)
        second = -2.0 * delta ** 5 * K
        if order >= 3:
            T = moments[np.add.outer(np.arange(4), np.arange(4))]  # T[i, j] = 1/(i+j+1)
            # I[n, m, p] = int_{step m} g_n g_p; a_3 = sum I U U U, so the derivative tensor
            # sums I over the 6 index permutations; I is symmetric in n <-> p, leaving the 3
            # choices of the middle (integrated last) index, twice each.
            Gt = np.einsum("mni,ij->mnj", G, T)
            I = np.einsum("mnj,mpj->nmp", Gt, G, optimize=True)
            third = 2.0 * delta ** 7 * (I + I.transpose(1, 0, 2) + I.transpose(0, 2, 1))
    return BornKernels(N=N, R=R, first=first, second=second, third=third)
