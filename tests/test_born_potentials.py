"""The random potential ensembles: reproducibility, the documented distribution, the filters."""
from __future__ import annotations

import math

import numpy as np
import pytest

from feynmlp.born import FAMILIES, bound_state_count, sample_potentials, scattering_length
from feynmlp.born.potentials import sample_potentials_with_a
from feynmlp.errors import FeynmlpError


def test_reproducible_and_seed_dependent():
    U1, f1 = sample_potentials(600, grid=16, seed=3)
    U2, f2 = sample_potentials(600, grid=16, seed=3)
    U3, _ = sample_potentials(600, grid=16, seed=4)
    np.testing.assert_array_equal(U1, U2)
    np.testing.assert_array_equal(f1, f2)
    assert not np.array_equal(U1, U3)
    assert U1.shape == (600, 16) and U1.dtype == np.float64
    assert f1.dtype.kind == "U"  # plain strings: storable without pickle


def test_family_streams_are_independent_of_the_other_families():
    # Each family draws from its own stream: asking for one family alone gives the same
    # potentials as its rows in a mixed sample.
    U_all, f_all = sample_potentials(300, grid=8, seed=1, families=["square", "gaussian"])
    U_sq, _ = sample_potentials(150, grid=8, seed=1, families=["square"])
    assert sorted(map(tuple, U_all[f_all == "square"])) == sorted(map(tuple, U_sq))


def test_default_ensemble_is_attractive_shallow_and_not_near_threshold():
    U, fam, a = sample_potentials_with_a(3000, grid=32, R=1.0, seed=0)
    assert set(fam) == set(FAMILIES)
    counts = {f: int((fam == f).sum()) for f in FAMILIES}
    assert counts == {f: 500 for f in FAMILIES}  # exact equal shares
    assert np.all(U <= 0)
    assert np.all(bound_state_count(U) == 0)
    np.testing.assert_array_equal(a, scattering_length(U))
    assert np.all(np.abs(a) <= 10.0)
    assert np.all(a <= 0)  # attractive and shallow


def test_depths_are_log_uniform_in_the_range():
    lo, hi = 1e-3, 1e2
    U, fam = sample_potentials(6000, grid=16, seed=2, families=["exponential", "steps", "fourier"],
                               depth_range=(lo, hi), shallow=False, a_max=None)
    depth = np.abs(U).max(axis=1)
    assert depth.min() >= lo * (1 - 1e-12) and depth.max() <= hi * (1 + 1e-12)
    # without filters: log10(depth) uniform on [-3, 2]; compare quartiles with a tolerance of
    # a few standard errors
    q = np.quantile(np.log10(depth), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(q, [-1.75, -0.5, 0.75], atol=0.12)


def test_depth_range_scales_with_R():
    U1, _ = sample_potentials(200, grid=8, R=1.0, seed=5, families=["square"], a_max=None)
    U2, _ = sample_potentials(200, grid=8, R=2.0, seed=5, families=["square"], a_max=None)
    # same draws, U scaled by 1/R^2 (a scales with R, so the same rows pass the filters)
    np.testing.assert_allclose(U2, U1 / 4, rtol=1e-12)


def test_square_wells_are_exact_wells():
    U, _ = sample_potentials(300, grid=12, seed=0, families=["square"])
    for row in U:
        k = np.count_nonzero(row)
        assert np.all(row[:k] == row[0]) and np.all(row[k:] == 0)
        # shallow: sqrt(V0) * width < pi/2
        assert math.sqrt(-row[0]) * k / 12 < math.pi / 2


def test_steps_family_spans_every_direction():
    U, _ = sample_potentials(200, grid=64, seed=0, families=["steps"])
    assert np.linalg.matrix_rank(U) == 64


def test_repulsive_option():
    U, fam, a = sample_potentials_with_a(1200, grid=16, seed=0, repulsive=True)
    assert (U > 0).any(axis=1).mean() > 0.3
    for f in ("square", "exponential", "gaussian", "yukawa"):
        rows = U[fam == f]
        signs = np.sign(rows[np.abs(rows).max(axis=1) > 0].sum(axis=1))
        assert set(signs) == {-1.0, 1.0}  # wells and barriers
        # one overall sign per potential
        assert np.all((rows >= 0).all(axis=1) | (rows <= 0).all(axis=1))
    mixed = U[fam == "steps"]
    assert ((mixed > 0).any(axis=1) & (mixed < 0).any(axis=1)).mean() > 0.9
    assert np.all(bound_state_count(U) == 0)
    assert np.all(np.abs(a) <= 10)


def test_bound_states_allowed_on_request():
    U, _ = sample_potentials(500, grid=16, seed=0, families=["square"], shallow=False,
                             depth_range=(1.0, 100.0))
    assert (bound_state_count(U) > 0).mean() > 0.3


def test_weights():
    _, fam = sample_potentials(100, grid=4, seed=0, families={"square": 3, "steps": 1})
    assert (fam == "square").sum() == 75 and (fam == "steps").sum() == 25
    _, fam = sample_potentials(7, grid=4, seed=0, families="square,steps")
    assert sorted(((fam == "square").sum(), (fam == "steps").sum())) == [3, 4]


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "size"),
    (dict(n=2.5), "size"),
    (dict(grid=0), "grid"),
    (dict(R=-1.0), "R must be"),
    (dict(seed=-1), "seed"),
    (dict(families=["square", "hexagon"]), "unknown potential family 'hexagon'"),
    (dict(families=[]), "families is empty"),
    (dict(families={"square": -1}), "weight"),
    (dict(depth_range=(0, 1)), "depth_range"),
    (dict(depth_range=(2, 1)), "depth_range"),
    (dict(depth_range=5), "depth_range"),
    (dict(a_max=0), "a_max"),
])
def test_bad_arguments(kwargs, match):
    args = dict(n=10, grid=8)
    args.update(kwargs)
    with pytest.raises(FeynmlpError, match=match):
        sample_potentials(**args)


def test_impossible_filters_fail_clearly():
    # constant wells deeper than the threshold pi^2/4 all bind: nothing can pass
    with pytest.raises(FeynmlpError, match="passed the filters"):
        sample_potentials(10, grid=4, seed=0, families=["square"], depth_range=(50, 60))
