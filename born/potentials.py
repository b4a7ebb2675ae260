"""Random ensembles of step potentials for training and testing networks on the Born series.

In: how many potentials, the grid (N steps over [0, R]), a seed, which families, the depth
range, whether repulsive parts are allowed, and the shallow and near-threshold filters.
Out: step values U of shape (n, N) (hbar = 2 mu = 1, U < 0 attractive) and one family label
per row (a NumPy str array, no objects).

The distribution (also in DISTRIBUTION below, which data sets store in their metadata):
every potential is U = -depth * shape, where the shape is normalised to max_n |shape_n| = 1
(so depth = max_n |U_n|; Yukawa: see below). The depth is log-uniform in
depth_range / R^2 (default 1e-3 .. 1e2 in units of 1/R^2; a constant well binds at
pi^2/4 = 2.47), so that potentials close to U = 0 are as well covered as strong ones. Draws
with a bound state (if shallow) or with |a| > a_max R (near a zero-energy threshold) are
rejected and redrawn, so the depth distribution is log-uniform conditioned on passing the
filters. Family shapes, with x = (n + 1/2)/N the step midpoints in units of R:
  fourier      exp(g(x)), g a random Fourier series sum_{j=1..8} (A_j cos(j pi x) +
               B_j sin(j pi x)) / j with A_j, B_j standard normal, scaled to unit pointwise
               variance (a smooth log-normal profile); with repulsive: g(x) + mu, mu uniform
               in (-1, 1), which changes sign inside the range.
  square       a constant well on the first k steps, k uniform in 1..N (exact closed forms).
  exponential  exp(-x / b), b log-uniform in (0.05, 1).
  gaussian     exp(-x^2 / (2 b^2)), b log-uniform in (0.05, 1).
  yukawa       (b / x) exp(1 - x / b), b log-uniform in (0.05, 1): here depth is |U| at
               r = b, not the maximum (the 1/r is sampled at the step midpoints, which
               regularises the origin, so the peak grows with N).
  steps        independent step values, uniform in (0, 1) (with repulsive: (-1, 1)); the only
               family whose potentials span all N directions of U space, which a network's
               Taylor coefficients at U = 0 need in order to be identified in every direction.
Attractive (U <= 0) by default; with repulsive=True the simple families (square, exponential,
gaussian, yukawa) get an overall sign +-1 with probability 1/2 each (barriers), and fourier
and steps change sign inside the range as described.

Reproducibility: each family draws from its own stream, numpy.random.default_rng(
SeedSequence([seed, family code])), and the final shuffle from SeedSequence([seed, 0]); the
same arguments give the same array on every machine and NumPy version with the same
Generator algorithms (PCG64).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from feynmlp.errors import FeynmlpError

from ._checks import check_positive_int, check_range
from .exact_scattering import scattering_length_and_bound_states

__all__ = ["FAMILIES", "DEFAULT_DEPTH_RANGE", "DEFAULT_A_MAX", "DISTRIBUTION", "sample_potentials"]

# name -> (stream code, one-line description); codes are part of the seeding scheme, never reuse.
FAMILIES = {
    "fourier": (1, "smooth random log-normal profile exp(random Fourier series, 8 modes)"),
    "square": (2, "constant well on the first k steps, k uniform in 1..N"),
    "exponential": (3, "exp(-r/b), b/R log-uniform in (0.05, 1)"),
    "gaussian": (4, "exp(-r^2/(2 b^2)), b/R log-uniform in (0.05, 1)"),
    "yukawa": (5, "(b/r) exp(1 - r/b) at step midpoints (depth = |U(b)|), b/R log-uniform in (0.05, 1)"),
    "steps": (6, "independent uniform step values (spans all N directions)"),
}
DEFAULT_DEPTH_RANGE = (1e-3, 1e2)  # max |U_n| in units of 1/R^2
DEFAULT_A_MAX = 10.0  # |a| in units of R
_FOURIER_MODES = 8
_WIDTH_RANGE = (0.05, 1.0)  # b / R of the exponential, Gaussian and Yukawa families
_CHUNK = 4096  # draws per rejection round and family
# Give up when fewer than 1 in this many draws passes the filters: the options then describe
# (almost) no shallow potential, and looping on would look like a hang.
_MIN_ACCEPTANCE = 1e-3

DISTRIBUTION = (
    "U = -depth * shape / max|shape| (yukawa: / shape(b)), depth log-uniform in "
    "depth_range / R^2; redrawn if it has a bound state (shallow) or |a| > a_max R. "
    "Families (x = step midpoint / R): fourier exp(g), g a random Fourier series of 8 modes "
    "with N(0,1)/j amplitudes scaled to unit variance (repulsive: g + U(-1,1)); square: a well "
    "on the first k ~ U{1..N} steps; exponential exp(-x/b); gaussian exp(-x^2/2b^2); yukawa "
    "(b/x) exp(1-x/b); b log-uniform in (0.05, 1); steps: iid U(0,1) (repulsive: U(-1,1)). "
    "repulsive: square/exponential/gaussian/yukawa get a random overall sign. Families split "
    "in exact proportion to their weights. Streams: default_rng(SeedSequence([seed, family "
    "code])), shuffle with SeedSequence([seed, 0])."
)


def _log_uniform(rng, lo, hi, size):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def _shapes(family: str, rng, size: int, N: int, repulsive: bool) -> np.ndarray:
    """`size` profiles of one family, shape (size, N); positive = attractive.

    Normalised to max |.| = 1, except yukawa, normalised to 1 at r = b.
    """
    x = (np.arange(N) + 0.5) / N
    if family == "fourier":
        j = np.arange(1, _FOURIER_MODES + 1)
        amp = (1.0 / j) / math.sqrt(np.sum(1.0 / j ** 2))  # unit pointwise variance
        A = rng.standard_normal((size, _FOURIER_MODES)) * amp
        B = rng.standard_normal((size, _FOURIER_MODES)) * amp
        g = A @ np.cos(np.pi * np.outer(j, x)) + B @ np.sin(np.pi * np.outer(j, x))
        if repulsive:
            shape = g + rng.uniform(-1.0, 1.0, (size, 1))
        else:
            shape = np.exp(g - g.max(axis=1, keepdims=True))
    elif family == "square":
        k = rng.integers(1, N + 1, size)
        shape = (np.arange(N)[None, :] < k[:, None]).astype(np.float64)
    elif family in ("exponential", "gaussian", "yukawa"):
        b = _log_uniform(rng, *_WIDTH_RANGE, (size, 1))
        # Exponents are shifted so the first step is exp(0): no underflow of the whole row.
        if family == "exponential":
            shape = np.exp(-(x - x[0]) / b)
        elif family == "gaussian":
            shape = np.exp(-(x * x - x[0] * x[0]) / (2.0 * b * b))
        else:
            # Normalised at r = b, not at the maximum: the sampled 1/r peak grows with N, and
            # a max-normalised Yukawa would be almost all peak and never bind.
            shape = (b / x) * np.exp(1.0 - x / b)
    elif family == "steps":
        shape = rng.uniform(-1.0 if repulsive else 0.0, 1.0, (size, N))
    else:  # pragma: no cover - names are checked before
        raise AssertionError(family)
    if repulsive and family in ("square", "exponential", "gaussian", "yukawa"):
        shape = shape * rng.choice([-1.0, 1.0], (size, 1))
    if family == "yukawa":
        return shape
    peak = np.abs(shape).max(axis=1, keepdims=True)
    peak[peak == 0] = 1.0  # an all-zero draw (probability zero) stays zero
    return shape / peak


def _family_counts(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split n over the families in proportion to weights (largest remainders, ties by order)."""
    total = sum(weights.values())
    exact = {f: n * w / total for f, w in weights.items()}
    counts = {f: int(math.floor(v)) for f, v in exact.items()}
    left = n - sum(counts.values())
    for f in sorted(weights, key=lambda f: -(exact[f] - counts[f]))[:left]:
        counts[f] += 1
    return counts


def _check_families(families) -> dict[str, float]:
    if families is None:
        return {f: 1.0 for f in FAMILIES}
    if isinstance(families, str):
        families = [f.strip() for f in families.split(",") if f.strip()]
    if isinstance(families, dict):
        weights = dict(families)
    else:
        weights = {}
        for f in families:
            weights[f] = weights.get(f, 0.0) + 1.0
    if not weights:
        raise FeynmlpError(f"families is empty; choose some of {', '.join(FAMILIES)}")
    for f, w in weights.items():
        if f not in FAMILIES:
            raise FeynmlpError(f"unknown potential family {f!r}; choose from {', '.join(FAMILIES)}")
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not (w >= 0 and math.isfinite(w)):
            raise FeynmlpError(f"the weight of family {f!r} must be a finite number >= 0, got {w!r}")
    if sum(weights.values()) <= 0:
        raise FeynmlpError(f"family weights {weights} are all zero; give at least one a positive weight")
    return {f: float(weights[f]) for f in FAMILIES if f in weights}  # canonical order


def check_sampling_arguments(n, grid, R, seed, families, depth_range, a_max):
    """Validate sample_potentials' arguments; returns them normalised. Raises FeynmlpError."""
    n = check_positive_int(n, "the number of potentials (size)")
    grid = check_positive_int(grid, "grid (the number of steps N)")
    R = check_range(R)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise FeynmlpError(f"seed must be an integer >= 0, got {seed!r}")
    weights = _check_families(families)
    if depth_range is None:
        depth_range = DEFAULT_DEPTH_RANGE
    try:
        lo, hi = (float(v) for v in depth_range)
    except (TypeError, ValueError):
        raise FeynmlpError(
            f"depth_range must be a pair (min, max) of depths max|U| R^2, got {depth_range!r}") from None
    if not (0 < lo <= hi < math.inf):
        raise FeynmlpError(
            f"depth_range must satisfy 0 < min <= max < inf (depth max|U| in units of 1/R^2; a "
            f"log-uniform draw needs min > 0), got {depth_range!r}")
    if a_max is not None:
        a_max = check_range(a_max, "a_max (in units of R; None disables the near-threshold cut)")
    return n, grid, R, int(seed), weights, (lo, hi), a_max


def _sample_family(family, rows, U_out, a_out, R, seed, depth_range, repulsive, shallow, a_max,
                   progress):
    """Draw potentials of one family until len(rows) pass the filters; the i-th accepted one
    goes to row rows[i] of U_out (and its scattering length to a_out), so that the output is
    written once, already shuffled, with no intermediate copies."""
    count, grid = len(rows), U_out.shape[1]
    rng = np.random.default_rng(np.random.SeedSequence([seed, FAMILIES[family][0]]))
    lo, hi = depth_range[0] / R ** 2, depth_range[1] / R ** 2
    have, drawn = 0, 0
    while have < count:
        depth = _log_uniform(rng, lo, hi, (_CHUNK, 1))
        U = -depth * _shapes(family, rng, _CHUNK, grid, repulsive)
        a, n_bound = scattering_length_and_bound_states(U, R)
        keep = np.isfinite(a)
        if shallow:
            keep &= n_bound == 0
        if a_max is not None:
            keep &= np.abs(a) <= a_max * R
        take = np.flatnonzero(keep)[:count - have]
        U_out[rows[have:have + len(take)]] = U[take]
        a_out[rows[have:have + len(take)]] = a[take]
        have += len(take)
        drawn += _CHUNK
        if progress is not None:
            progress(len(take))
        if have < count and drawn >= 20 * _CHUNK and have < _MIN_ACCEPTANCE * drawn:
            raise FeynmlpError(
                f"only {have} of {drawn} {family!r} potentials passed the filters (shallow="
                f"{shallow}, a_max={a_max}) with depth_range={depth_range} (max|U| R^2); lower "
                f"the depth range (a constant well binds at pi^2/4 = 2.47), allow bound states, "
                f"or drop this family")


def sample_potentials_with_a(n, grid=64, R=1.0, seed=0, families=None, depth_range=None,
                             repulsive=False, shallow=True, a_max=DEFAULT_A_MAX, _progress=None):
    """Like `sample_potentials`, and also the exact scattering lengths the filter computed.

    `_progress`, if given, is called with the number of rows accepted since its last call.

    Returns:
        (U (n, grid), labels (n,), a (n,)).
    """
    n, grid, R, seed, weights, depth_range, a_max = check_sampling_arguments(
        n, grid, R, seed, families, depth_range, a_max)
    counts = _family_counts(n, weights)
    # The shuffle: the families' rows, in the order of FAMILIES, go to these output rows.
    destination = np.random.default_rng(np.random.SeedSequence([seed, 0])).permutation(n)
    U = np.empty((n, grid))
    a = np.empty(n)
    labels = np.empty(n, dtype=f"<U{max(len(f) for f in FAMILIES)}")
    start = 0
    for family, count in counts.items():
        rows = destination[start:start + count]
        start += count
        if count:
            _sample_family(family, rows, U, a, R, seed, depth_range, bool(repulsive),
                           bool(shallow), a_max, _progress)
            labels[rows] = family
    return U, labels, a


def sample_potentials(n, grid=64, R=1.0, seed=0, families=None, depth_range=None,
                      repulsive=False, shallow=True, a_max=DEFAULT_A_MAX):
    """Draw n step potentials from the documented ensemble (see the module docstring).

    Args:
        n: number of potentials.
        grid: number of steps N over [0, R].
        R: the range (length unit of the problem).
        seed: integer >= 0; the same arguments always give the same potentials.
        families: None (all of FAMILIES, equal shares), a sequence of names (repeats raise
            the share), a comma-separated string, or a dict name -> weight. Rows are split over
            the families in exact proportion to the weights, then shuffled.
        depth_range: (min, max) of the depth max_n |U_n| in units of 1/R^2, log-uniform;
            default (1e-3, 1e2).
        repulsive: allow repulsive parts (see the module docstring); default attractive only.
        shallow: reject potentials with a bound state (default True).
        a_max: reject |a| > a_max * R (near-threshold potentials); default 10; None keeps all.

    Returns:
        (U, labels): U float64 of shape (n, grid); labels a str array of shape (n,) naming
        each row's family.

    Raises:
        FeynmlpError: a bad argument, or filters that (almost) nothing passes.
    """
    U, labels, _ = sample_potentials_with_a(n, grid, R, seed, families, depth_range, repulsive,
                                            shallow, a_max)
    return U, labels
