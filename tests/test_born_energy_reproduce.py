"""`feynmlp born reproduce --observable energy` on the tiny preset: files, metrics keys, saved
models on (U, k^2), and every reported number recomputed from the saved models by finite
differences (independent of the Taylor kernels)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import feynmlp
from feynmlp.born import born_kernels, born_terms, scattering_length
from feynmlp.born.energy_reproduce import (ENERGY_PRESETS, energy_targets, energy_training_data,
                                            family_weights, k_balance_factor)
from feynmlp.errors import FeynmlpError
from feynmlp.born.potentials import FAMILIES, sample_potentials_with_a
from feynmlp.cli import main

torch = pytest.importorskip("torch")

PRESET = ENERGY_PRESETS["tiny"]


@pytest.fixture(scope="module")
def energy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("energy")
    status = main(["born", "reproduce", "--observable", "energy", "--preset", "tiny", "--out",
                   str(out), "--no-progress"])
    assert status == 0
    return out


def _ensemble(out, k):
    spec = PRESET.iterations[k - 1]
    return [feynmlp.load(out / "models" / f"iteration-{k}" / f"member-{m}.safetensors")
            for m in range(spec.members)]


def _mean(mlps, X):
    return np.mean([m(np.atleast_2d(X))[:, 0] for m in mlps], axis=0)


def test_files_and_metrics_keys(energy_run):
    metrics = json.loads((energy_run / "metrics.json").read_text())
    for key in ("grid", "R", "k_values", "born_median_rel_err_k", "rho1_median_rel_err",
                "wall_seconds", "e1_k"):
        assert key in metrics, key
    assert metrics["grid"] == PRESET.grid and metrics["R"] == PRESET.R
    assert metrics["k_values"] == [kR / PRESET.R for kR in PRESET.test_kR]
    assert list(metrics["born_median_rel_err_k"]) == [str(float(k)) for k in metrics["k_values"]]
    for row in metrics["born_median_rel_err_k"].values():
        assert set(row) == {"1", "2"}
    for name in ("energy_kernels.png", "energy_rho1.png", "energy_phase_shifts.png"):
        assert (energy_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (energy_run / "report.md").read_text()
    assert "rho_1" in report and ("met" in report or "missed" in report)
    for k, spec in enumerate(PRESET.iterations, start=1):
        names = sorted(os.listdir(energy_run / "models" / f"iteration-{k}"))
        assert names == [f"member-{m}.safetensors" for m in range(spec.members)]


def test_saved_models_take_k_squared_last_and_reproduce_e1(energy_run):
    metrics = json.loads((energy_run / "metrics.json").read_text())
    N, R = PRESET.grid, PRESET.R
    f1 = _ensemble(energy_run, 1)
    assert all(m.n_inputs == N + 1 and "k^2" in m.record["inputs"] for m in f1)
    h = 1e-5
    for k in metrics["k_values"]:
        X = np.zeros((2 * N, N + 1))
        X[:, -1] = k * k
        X[np.arange(N), np.arange(N)] = h
        X[N + np.arange(N), np.arange(N)] = -h
        values = _mean(f1, X)
        grad = (values[:N] - values[N:]) / (2 * h)
        first = born_kernels(N, R, 1, k=k).first
        e1 = np.linalg.norm(grad - first) / np.linalg.norm(first)
        assert metrics["e1_k"][str(float(k))] == pytest.approx(e1, rel=1e-5)


def test_learned_born_terms_and_rho1_from_the_saved_models(energy_run):
    metrics = json.loads((energy_run / "metrics.json").read_text())
    N, R = PRESET.grid, PRESET.R
    test_U, _, _ = sample_potentials_with_a(PRESET.test_size, N, R, seed=PRESET.seed + 1_000_003,
                                            depth_range=PRESET.test_depth_range)
    f1, f2 = _ensemble(energy_run, 1), _ensemble(energy_run, 2)
    t = 1e-3
    for k in metrics["k_values"]:
        col = np.full((len(test_U), 1), k * k)
        g = lambda mlps, s: _mean(mlps, np.hstack([s * test_U, col]))
        a1 = (g(f1, t) - g(f1, -t)) / (2 * t)  # t^1 coefficient
        a2 = (g(f2, t) - 2 * g(f2, 0.0) + g(f2, -t)) / (2 * t * t)  # t^2 coefficient
        exact = born_terms(test_U, 2, R, k=k)
        row = metrics["born_median_rel_err_k"][str(float(k))]
        assert row["1"] == pytest.approx(np.median(np.abs(a1 - exact[:, 0]) / np.abs(exact[:, 0])), rel=1e-4)
        assert row["2"] == pytest.approx(np.median(np.abs(a2 - exact[:, 1]) / np.abs(exact[:, 1])), rel=1e-3)
        a_net, a_k = g(f1, 1.0), scattering_length(test_U, R, k)
        assert metrics["f1_vs_exact_median_rel_k"][str(float(k))] == pytest.approx(
            np.median(np.abs(a_net - a_k) / np.abs(a_k)), rel=1e-9)
    # rho_1: d^2 f1 / d(k^2) dU_n at (0, 0) by central differences in both, applied to U
    h, s = 1e-4, 1e-4
    kernel = np.empty(N)
    for n in range(N):
        X = np.zeros((4, N + 1))
        X[:, n] = [h, h, -h, -h]
        X[:, -1] = [s, -s, s, -s]
        v = _mean(f1, X)
        kernel[n] = (v[0] - v[1] - v[2] + v[3]) / (4 * h * s)
    r = np.linspace(0, R, N + 1)
    rho1 = -test_U @ (r[1:] ** 5 - r[:-1] ** 5) / 15  # -int U r^4 dr / 3
    learned = test_U @ kernel
    assert metrics["rho1_median_rel_err"] == pytest.approx(
        np.median(np.abs(learned - rho1) / np.abs(rho1)), rel=1e-4)


def test_second_iteration_subtracts_the_linear_polynomial_in_U_at_fixed_k(energy_run):
    N, R = PRESET.grid, PRESET.R
    X, depth, a_k = energy_training_data(50, N, R, seed=7, depth_range=(0.1, 1.0), kR_max=3.0)
    assert np.all((X[:, -1] >= 0) & (X[:, -1] <= 9.0 / R ** 2))
    f1 = _ensemble(energy_run, 1)
    y = energy_targets(a_k, X, [f1])
    t = 1e-5
    U, k2 = X[:, :-1], X[:, -1:]
    f0 = _mean(f1, np.hstack([0 * U, k2]))
    slope = (_mean(f1, np.hstack([t * U, k2])) - _mean(f1, np.hstack([-t * U, k2]))) / (2 * t)
    np.testing.assert_allclose(y, a_k - f0 - slope, rtol=1e-6, atol=1e-9)


def test_energy_training_data_labels_are_exact():
    N, R = 6, 1.3
    X, depth, a_k = energy_training_data(80, N, R, seed=3, depth_range=(0.01, 1.0), kR_max=2.0)
    k = np.sqrt(X[:, -1])
    assert np.all(k * R <= 2.0)
    np.testing.assert_allclose(a_k, [scattering_length(u, R, kk) for u, kk in zip(X[:, :-1], k)],
                               rtol=1e-14)
    np.testing.assert_allclose(depth, np.abs(X[:, :-1]).max(axis=1) * R * R, rtol=1e-12)


def test_cli_energy_refuses_subtract(tmp_path, capsys):
    code = main(["born", "reproduce", "--observable", "energy", "--preset", "tiny", "--subtract",
                 "exact", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--subtract" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", sorted(ENERGY_PRESETS))
def test_training_k_range_contains_every_reported_k_inside(name):
    # a reported k at the edge of the training range is fitted from one side only
    preset = ENERGY_PRESETS[name]
    assert preset.kR_max > max(preset.test_kR) and min(preset.test_kR) == 0.0


def test_weighted_families_reach_the_sampler_and_the_records(energy_run):
    pairs = PRESET.iterations[0].families
    weights = family_weights(pairs)
    assert weights == {name: float(w) for name, w in pairs} and weights["steps"] == 3.0
    # the sampler draws the families in exact proportion to the weights (steps: 3 of 8 shares)
    _, labels, _ = sample_potentials_with_a(800, 8, 1.0, seed=2, families=weights,
                                            depth_range=(0.1, 0.2))
    assert np.sum(labels == "steps") == 300 and set(labels) == set(FAMILIES)
    metrics = json.loads((energy_run / "metrics.json").read_text())
    assert metrics["preset_definition"]["iterations"][0]["families"] == weights
    assert metrics["preset_definition"]["iterations"][1]["families"] == ["steps"]
    assert metrics["kR_train_range"] == [0.0, PRESET.kR_max]
    f1 = _ensemble(energy_run, 1)
    assert f1[0].record["dataset"]["families"] == weights
    assert family_weights(None) is None and family_weights(("steps",)) == ["steps"]
    with pytest.raises(FeynmlpError, match="pairs"):
        family_weights((("steps", "heavy"),))


def test_k_balance_evens_out_the_weighted_mean_square_over_k():
    rng = np.random.default_rng(0)
    bands, k_max = 6, 3.0
    mids = (np.arange(bands) + 0.5) * k_max / bands
    k = np.repeat(mids, 50)  # rows at the bands' midpoints: no interpolation
    depth = rng.uniform(1.0, 2.0, k.size)
    y = depth ** 2 * np.exp(-k) * rng.normal(size=k.size)  # shrinks with k like a residual
    for gamma in (1.0, 0.5):
        factor = k_balance_factor(y, depth, k * k, 2, k_max, gamma, bands=bands)
        # brute force: each band's mean of (y/depth^2)^2, divided by band 0's, to the -gamma
        z = (y / depth ** 2) ** 2
        means = np.array([np.mean(z[k == m]) for m in mids])
        np.testing.assert_allclose(factor, np.repeat((means / means[0]) ** -gamma, 50), rtol=1e-12)
    balanced = [np.mean((factor * z)[k == m]) for m in mids]  # gamma = 0.5: geometric mean
    np.testing.assert_allclose(balanced, np.sqrt(means * means[0]), rtol=1e-12)
    np.testing.assert_array_equal(k_balance_factor(y, depth, k * k, 2, k_max, 0.0, bands), 1.0)
    # between midpoints: linear interpolation of the band means in k (the extra row, with a
    # zero target on the edge between bands 1 and 2, counts in band 2)
    one = k_balance_factor(np.r_[y, 0.0], np.r_[depth, 1.0], np.r_[k, 0.5 * (mids[1] + mids[2])] ** 2,
                           2, k_max, 1.0, bands=bands)[-1]
    band2 = np.sum(z[k == mids[2]]) / 51
    assert one == pytest.approx(means[0] / (0.5 * (means[1] + band2)), rel=1e-12)
    with pytest.raises(FeynmlpError, match="bands"):
        k_balance_factor(y[:10], depth[:10], k[:10] ** 2, 2, k_max, 1.0, bands=bands)


def test_tiny_run_records_the_k_balance(energy_run):
    assert PRESET.k_balance[1] > 0
    metrics = json.loads((energy_run / "metrics.json").read_text())
    assert list(metrics["preset_definition"]["k_balance"]) == list(PRESET.k_balance)
    f2 = _ensemble(energy_run, 2)
    assert f"(m(k)/m(0))^(-{PRESET.k_balance[1]})" in f2[0].record["loss_weight"]
    assert "m(k)" not in _ensemble(energy_run, 1)[0].record["loss_weight"]  # k_balance[0] = 0
