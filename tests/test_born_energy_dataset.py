"""Data sets with energies: a(k) and its Born terms as extra arrays, from the API and from
`feynmlp born dataset --energies`."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from feynmlp.born import born_terms, load_dataset, make_dataset, scattering_length, write_dataset
from feynmlp.errors import FeynmlpError


def test_energy_columns_against_closed_forms():
    R = 1.5
    k = [0.0, 0.8, 2.0]
    arrays, meta = make_dataset(200, grid=8, R=R, seed=5, order=2, energies=k)
    U, a_k, born_k = arrays["U"], arrays["a_k"], arrays["born_k"]
    assert arrays["k"].tolist() == k and a_k.shape == (200, 3) and born_k.shape == (200, 3, 2)
    assert meta["energies"] == k and "a_k" in meta["arrays"]
    # k = 0 is the scattering length and its Born terms
    np.testing.assert_array_equal(a_k[:, 0], arrays["a"])
    np.testing.assert_array_equal(born_k[:, 0], arrays["born"])
    # a_1(k) = sum_n U_n int_{step n} sin^2(kr)/k^2 dr, from the grid alone
    r = R * np.arange(9) / 8
    for e in (1, 2):
        F = r / 2 - np.sin(2 * k[e] * r) / (4 * k[e])
        np.testing.assert_allclose(born_k[:, e, 0], U @ (np.diff(F) / k[e] ** 2), rtol=1e-11,
                                   atol=1e-300)
    # square rows: a(k) from tan(kR' + delta) = (k/q) tan(qR') with R' the well's width
    square = np.flatnonzero(arrays["family"] == "square")[:5]
    assert square.size
    for i in square:
        width = R * np.count_nonzero(U[i]) / 8
        V0 = -U[i][0]
        q = math.sqrt(k[2] ** 2 + V0)
        t = k[2] / q * math.tan(q * width)
        delta = math.atan(t) - k[2] * width
        assert a_k[i, 2] == pytest.approx(-math.tan(delta) / k[2], rel=1e-9)
    # the weak rows: a_1(k) + a_2(k) approximates a(k)
    weak = np.abs(U).max(axis=1) * R ** 2 < 0.02
    assert weak.sum() > 10
    np.testing.assert_allclose(born_k[weak, 1:].sum(axis=-1), a_k[weak, 1:], rtol=1e-3)


def test_energies_round_trip_and_absent_by_default(tmp_path):
    out = tmp_path / "d.npz"
    write_dataset(out, 40, grid=4, seed=1, energies=[0.5, 1.5])
    arrays, meta = load_dataset(out)
    expected, _ = make_dataset(40, grid=4, seed=1, energies=[0.5, 1.5])
    for name in ("k", "a_k", "born_k", "U", "a"):
        np.testing.assert_array_equal(arrays[name], expected[name])
    write_dataset(out, 40, grid=4, seed=1)
    arrays, meta = load_dataset(out)
    assert "a_k" not in arrays and "energies" not in meta


@pytest.mark.parametrize("energies, match", [
    ([], "non-empty"),
    ([1.0, -0.5], "negative"),
    ([float("nan")], "non-finite"),
    ([[1.0]], "non-empty"),
])
def test_bad_energies_leave_no_file(tmp_path, energies, match):
    with pytest.raises(FeynmlpError, match=match):
        write_dataset(tmp_path / "d.npz", 10, grid=4, energies=energies)
    assert os.listdir(tmp_path) == []


def test_cli_energies(tmp_path, cli_main, capsys):
    out = tmp_path / "d.npz"
    code = cli_main(["born", "dataset", "--size", "30", "--grid", "4", "--out", str(out),
                     "--energies", "0.25, 1,3", "--order", "2"])
    assert code == 0
    arrays, meta = load_dataset(out)
    assert arrays["k"].tolist() == [0.25, 1.0, 3.0] and arrays["born_k"].shape == (30, 3, 2)
    assert "3 k" in capsys.readouterr().out


@pytest.mark.parametrize("value, word", [("1,x", "'x'"), ("-1", "negative"), ("", "''"),
                                         ("nan", "non-finite")])
def test_cli_bad_energies_exit_2_one_line(tmp_path, cli_main, capsys, value, word):
    code = cli_main(["born", "dataset", "--size", "5", "--out", str(tmp_path / "d.npz"),
                     "--energies", value])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and word in err
    assert os.listdir(tmp_path) == []


def test_energies_with_a_zarr_store_are_refused(tmp_path, cli_main, capsys):
    # The Zarr store holds U, a, born and family only: --energies must not be dropped silently.
    code = cli_main(["born", "dataset", "--size", "10", "--grid", "4", "--energies", "1",
                     "--out", str(tmp_path / "d.zarr")])
    assert code == 2
    assert "--energies is written to .npz data sets only" in capsys.readouterr().err
    assert not (tmp_path / "d.zarr").exists()


def test_uniform_energy_distribution_one_k_per_row():
    R = 1.5
    arrays, meta = make_dataset(120, grid=8, R=R, seed=4, order=2, energies="uniform:0.5:3")
    U, k = arrays["U"], arrays["k"]
    assert k.shape == (120,) and arrays["a_k"].shape == (120,) and arrays["born_k"].shape == (120, 2)
    assert k.min() >= 0.5 and k.max() <= 3.0 and np.unique(k).size == 120
    # the draw: numpy's default_rng on its own stream of the seed, as documented
    expected_k = np.random.default_rng(np.random.SeedSequence([4, 101])).uniform(0.5, 3.0, 120)
    np.testing.assert_array_equal(k, expected_k)
    # every row labelled at its own k, evaluated row by row here
    for i in range(0, 120, 7):
        assert arrays["a_k"][i] == pytest.approx(float(scattering_length(U[i], R, k[i])), rel=1e-12)
        np.testing.assert_allclose(arrays["born_k"][i], born_terms(U[i], 2, R, k=k[i]), rtol=1e-12)
    # a_1(k) = sum_n U_n int_{step n} sin^2(kr)/k^2 dr, per row
    r = R * np.arange(9) / 8
    F = r[None, :] / 2 - np.sin(2 * k[:, None] * r[None, :]) / (4 * k[:, None])
    first = np.sum(U * np.diff(F, axis=1), axis=1) / k ** 2
    np.testing.assert_allclose(arrays["born_k"][:, 0], first, rtol=1e-10)
    assert meta["energies"]["distribution"] == "uniform"
    assert (meta["energies"]["low"], meta["energies"]["high"]) == (0.5, 3.0)
    # the same seed gives the same rows and k; another seed other k
    again, _ = make_dataset(120, grid=8, R=R, seed=4, order=2, energies="uniform:0.5:3")
    np.testing.assert_array_equal(again["k"], k)
    other, _ = make_dataset(120, grid=8, R=R, seed=5, order=2, energies="uniform:0.5:3")
    assert not np.array_equal(other["k"], k)
    # k has a stream of its own: the potentials are those drawn without energies
    plain, _ = make_dataset(120, grid=8, R=R, seed=4, order=2)
    np.testing.assert_array_equal(plain["U"], U)
    np.testing.assert_array_equal(plain["a"], arrays["a"])


def test_uniform_energies_round_trip(tmp_path):
    out = tmp_path / "d.npz"
    write_dataset(out, 30, grid=4, seed=2, energies="uniform:0:2")
    arrays, meta = load_dataset(out)
    expected, _ = make_dataset(30, grid=4, seed=2, energies="uniform:0:2")
    for name in ("k", "a_k", "born_k", "U", "a"):
        np.testing.assert_array_equal(arrays[name], expected[name])
    assert meta["energies"]["per_row"] is True


@pytest.mark.parametrize("spec, match", [
    ("uniform:3:1", "LO < HI"),
    ("uniform:1:1", "LO < HI"),
    ("uniform:-1:2", "LO < HI"),
    ("uniform:0:inf", "finite"),
    ("uniform:0:x", "must be numbers"),
    ("normal:0:1", "not a distribution"),
    ("uniform:0", "not a distribution"),
])
def test_bad_energy_distributions_leave_no_file(tmp_path, spec, match):
    with pytest.raises(FeynmlpError, match=match):
        write_dataset(tmp_path / "d.npz", 10, grid=4, energies=spec)
    assert os.listdir(tmp_path) == []


def test_cli_uniform_energies(tmp_path, cli_main, capsys):
    out = tmp_path / "d.npz"
    code = cli_main(["born", "dataset", "--size", "25", "--grid", "4", "--out", str(out), "--seed",
                     "3", "--energies", "uniform:0:3", "--order", "2", "--range", "2"])
    assert code == 0
    arrays, meta = load_dataset(out)
    expected = np.random.default_rng(np.random.SeedSequence([3, 101])).uniform(0.0, 3.0, 25)
    np.testing.assert_array_equal(arrays["k"], expected)
    np.testing.assert_allclose(arrays["a_k"], scattering_length(arrays["U"], 2.0, arrays["k"]),
                               rtol=1e-13)
    assert "one k per potential" in capsys.readouterr().out
    for bad in ("uniform:2:1", "uniform:a:b", "gauss:0:1"):
        code = cli_main(["born", "dataset", "--size", "5", "--grid", "4", "--out",
                         str(tmp_path / "bad.npz"), "--energies", bad])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and bad in err
        assert not (tmp_path / "bad.npz").exists()
