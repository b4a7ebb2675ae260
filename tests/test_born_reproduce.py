"""`feynmlp born reproduce` end to end on the tiny preset: files, metrics, saved models, and the
plumbing (scaling folded, the linear polynomial subtracted exactly, a_ML2 formula exact),
each against an independent reference (torch autograd, explicit sums)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import feynmlp
from feynmlp.born import born_kernels, born_terms
from feynmlp.born.perturbation import (PRESETS, combine, ensemble_directional,
                                       ensemble_taylor_at_zero, iteration_targets,
                                       run_iterations, taylor_polynomial, training_potentials)
from feynmlp.born.report import born_relative_errors, compute_metrics
from feynmlp.cli import main
from feynmlp.errors import FeynmlpError

torch = pytest.importorskip("torch")

REQUIRED = ("grid", "R", "preset", "e1", "e2_f1", "e2_f2", "born_median_rel_err",
            "ml2_vs_born12_median_rel", "ml2_vs_exact_median_rel", "born1_vs_exact_median_rel",
            "born12_vs_exact_median_rel", "wall_seconds")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    status = main(["born", "reproduce", "--preset", "tiny", "--out", str(out), "--no-progress"])
    assert status == 0
    return out


@pytest.fixture(scope="module")
def tiny_run():
    return run_iterations(PRESETS["tiny"])


def test_reproduce_writes_report_metrics_figures_and_models(cli_run):
    metrics = json.loads((cli_run / "metrics.json").read_text())
    for key in REQUIRED:
        assert key in metrics, key
    assert metrics["preset"] == "tiny" and metrics["grid"] == PRESETS["tiny"].grid
    assert set(metrics["born_median_rel_err"]) == {"1", "2", "3"}
    for name in ("first_order.png", "second_order_heatmaps.png", "born_terms.png",
                 "ml2_vs_born.png"):
        data = (cli_run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (cli_run / "report.md").read_text()
    assert "e2(f2)" in report and "Goals of the full preset" in report
    assert ("missed" in report) or ("met" in report)
    members = [it["members"] for it in metrics["iterations"]]
    assert members == [spec.members for spec in PRESETS["tiny"].iterations]


def test_saved_models_load_and_reproduce_the_reported_coefficients(cli_run):
    metrics = json.loads((cli_run / "metrics.json").read_text())
    preset = PRESETS["tiny"]
    N = preset.grid
    kernels = born_kernels(N, preset.R, 2)
    ensembles = []
    for k, spec in enumerate(preset.iterations, start=1):
        mlps = [feynmlp.load(cli_run / "models" / f"iteration-{k}" / f"member-{m}.safetensors")
                for m in range(spec.members)]
        for m, mlp in enumerate(mlps):
            assert mlp.record["iteration"] == k and mlp.record["member"] == m
            assert {"dataset", "config", "seed", "metrics", "scaling"} <= set(mlp.record)
        ensembles.append(mlps)
    # Ensemble mean of the gradients, by central finite differences of the loaded networks
    # (independent of the Taylor kernels).
    h = 1e-4
    eye = np.eye(N) * h
    grads = [(m(eye)[:, 0] - m(-eye)[:, 0]) / (2 * h) for m in ensembles[0]]
    g1 = np.mean(grads, axis=0)
    e1 = np.linalg.norm(g1 - kernels.first) / np.linalg.norm(kernels.first)
    assert metrics["e1"] == pytest.approx(e1, rel=1e-5)


def test_scaling_is_folded_into_every_saved_network(tiny_run):
    U = tiny_run.test_U
    for it in tiny_run.iterations:
        for net in it.networks:
            np.testing.assert_allclose(net.mlp(U)[:, 0], net.torch_predict(U), rtol=1e-11,
                                       atol=1e-13)


def _autograd_taylor(net, N):
    """f(0), gradient and Hessian at U = 0 of the trained torch module, unscaled by hand."""
    s, q = net.scaling.input_scale, net.scaling.output_scale
    x0 = torch.zeros(N, dtype=torch.float64)

    def f(x):
        return net.module(x[None, :])[0, 0]

    value = float(f(x0).detach()) * q + net.scaling.output_shift
    grad = torch.autograd.functional.jacobian(f, x0).numpy() * q / s
    hess = torch.autograd.functional.hessian(f, x0).numpy() * q / np.outer(s, s)
    return value, grad, hess


def test_taylor_data_at_zero_match_torch_autograd(tiny_run):
    N = tiny_run.preset.grid
    for it in tiny_run.iterations:
        ref = [_autograd_taylor(n, N) for n in it.networks]
        assert it.value0 == pytest.approx(np.mean([r[0] for r in ref]), rel=1e-12, abs=1e-14)
        np.testing.assert_allclose(it.gradient, np.mean([r[1] for r in ref], axis=0),
                                   rtol=1e-10, atol=1e-12 * np.abs(it.gradient).max())
        np.testing.assert_allclose(it.hessian, np.mean([r[2] for r in ref], axis=0),
                                   rtol=1e-9, atol=1e-11 * np.abs(it.hessian).max())


def test_subtraction_of_the_linear_polynomial_is_exact(tiny_run):
    preset = tiny_run.preset
    U, depth, a = training_potentials(200, preset.grid, preset.R, seed=99,
                                      depth_range=(0.1, 1.0))
    nets = tiny_run.iterations[0].networks
    ref = [_autograd_taylor(n, preset.grid) for n in nets]
    value = np.mean([r[0] for r in ref])
    grad = np.mean([r[1] for r in ref], axis=0)
    y2 = iteration_targets(a, U, [nets])
    np.testing.assert_allclose(y2, a - (value + U @ grad), rtol=1e-10,
                               atol=1e-12 * np.abs(a).max())
    # Exact option: the exact Born terms are subtracted.
    born = born_terms(U, 2, preset.R)
    np.testing.assert_allclose(iteration_targets(a, U, [nets, nets], born, "exact"),
                               a - born[:, 0] - born[:, 1], rtol=0, atol=0)
    # The third iteration subtracts f2's own quadratic polynomial.
    nets2 = tiny_run.iterations[1].networks
    ref2 = [_autograd_taylor(n, preset.grid) for n in nets2]
    v2 = np.mean([r[0] for r in ref2])
    g2 = np.mean([r[1] for r in ref2], axis=0)
    H2 = np.mean([r[2] for r in ref2], axis=0)
    y3 = iteration_targets(a, U, [nets, nets2])
    expected = a - (value + U @ grad) - (v2 + U @ g2 + 0.5 * np.einsum("bn,nm,bm->b", U, H2, U))
    np.testing.assert_allclose(y3, expected, rtol=1e-9, atol=1e-11 * np.abs(a).max())
    with pytest.raises(FeynmlpError, match="subtract"):
        iteration_targets(a, U, [nets], subtract="bogus")


def test_combination_formula_is_exact(tiny_run):
    it1, it2 = tiny_run.iterations[:2]
    U = tiny_run.test_U
    ml2 = tiny_run.a_ml2()
    loops = np.array([sum(it1.gradient[n] * u[n] for n in range(len(u)))
                      + 0.5 * sum(it2.hessian[n, m] * u[n] * u[m]
                                  for n in range(len(u)) for m in range(len(u))) for u in U])
    np.testing.assert_allclose(ml2, loops, rtol=1e-12, atol=1e-15)
    # The same from the directional series: t^1 of f1 plus t^2 of f2 along U.
    np.testing.assert_allclose(ml2, it1.test_series[:, 1] + it2.test_series[:, 2],
                               rtol=1e-8, atol=1e-12 * np.abs(ml2).max())
    np.testing.assert_allclose(combine(it1.gradient, it2.hessian, U[0]), ml2[0], rtol=1e-14)


def test_metrics_follow_their_definitions(tiny_run):
    m = compute_metrics(tiny_run)
    c, second = tiny_run.kernels.first, tiny_run.kernels.second
    it1, it2 = tiny_run.iterations[:2]
    assert m["e1"] == pytest.approx(np.linalg.norm(it1.gradient - c) / np.linalg.norm(c))
    assert m["e2_f2"] == pytest.approx(np.linalg.norm(it2.hessian - second) / np.linalg.norm(second))
    born = tiny_run.test_born
    a = tiny_run.test_a
    assert m["born_median_rel_err"]["2"] == pytest.approx(
        np.median(np.abs(it2.test_series[:, 2] / born[:, 1] - 1)))
    assert m["born12_vs_exact_median_rel"] == pytest.approx(
        np.median(np.abs((born[:, 0] + born[:, 1]) / a - 1)))
    assert [g["metric"] for g in m["goals"]] == ["e1", "e2_f2", "born_median_rel_err.2",
                                                 "ml2_vs_born12_median_rel"]


def test_per_iteration_families_set_the_training_potentials(cli_run):
    """An IterationSpec's own families replace the preset's: the saved records, the preset
    definition and the row counts all follow, the latter checked by redrawing the data set."""
    metrics = json.loads((cli_run / "metrics.json").read_text())
    preset = PRESETS["tiny"]
    for k, spec in enumerate(preset.iterations, start=1):
        expected = list(spec.families or preset.families or []) or None
        assert metrics["preset_definition"]["iterations"][k - 1]["families"] == (
            list(spec.families) if spec.families else None)
        mlp = feynmlp.load(cli_run / "models" / f"iteration-{k}" / "member-0.safetensors")
        assert mlp.record["dataset"]["families"] == (expected or "all")
        U, depth, a = training_potentials(spec.size, preset.grid, preset.R,
                                          seed=preset.seed * 100 + k, depth_range=spec.depth_range,
                                          families=expected, a_max=preset.a_max)
        assert metrics["iterations"][k - 1]["train_size"] == len(a)
        assert mlp.record["dataset"]["size"] == len(a)
    # The tiny preset trains iterations 2 and 3 on independent steps only (as quick and full
    # do): a steps-only draw differs from the all-families one.
    assert preset.iterations[1].families == ("steps",)
    U_steps, _, _ = training_potentials(200, preset.grid, preset.R, seed=5, depth_range=(0.3, 2.0),
                                        families=["steps"])
    U_all, _, _ = training_potentials(200, preset.grid, preset.R, seed=5, depth_range=(0.3, 2.0))
    assert not np.array_equal(U_steps[:10], U_all[:10])


def test_born_error_histograms_use_the_reported_errors(tiny_run):
    """The figure's relative errors, against an explicit loop over the test potentials; their
    medians are the reported ones; only networks f_j with j <= k go into panel k."""
    errors = born_relative_errors(tiny_run)
    m = compute_metrics(tiny_run)
    born = tiny_run.test_born
    for it in tiny_run.iterations:
        for k in range(1, 4):
            loop = np.array([abs(it.test_series[i, k] - born[i, k - 1]) / abs(born[i, k - 1])
                             for i in range(len(born))])
            np.testing.assert_allclose(errors[(it.k, k)], loop, rtol=1e-14, atol=0)
            assert m["born_median_rel_err_by_network"][f"f{it.k}"][str(k)] == pytest.approx(
                float(np.median(loop)), rel=1e-14)


def test_directional_and_polynomial_helpers_agree(tiny_run):
    nets = tiny_run.iterations[1].networks
    U = tiny_run.test_U[:5]
    series = ensemble_directional(nets, U, 3)
    assert series.shape == (5, 4)
    value, grad, hess = ensemble_taylor_at_zero(nets, tiny_run.preset.grid, 2)
    quad = value + U @ grad + 0.5 * np.einsum("bn,nm,bm->b", U, hess, U)
    np.testing.assert_allclose(taylor_polynomial(nets, U, 2), quad, rtol=1e-9,
                               atol=1e-12 * np.abs(quad).max())


def test_training_potentials_are_symmetric_shallow_and_filtered():
    U, depth, a = training_potentials(2000, 16, 1.0, seed=0, depth_range=(0.01, 2.0))
    assert np.allclose(np.abs(U).max(axis=1), depth)
    assert 0.3 < np.mean(U.sum(axis=1) < 0) < 0.7  # both signs
    assert np.all(np.abs(a) <= 3.0)
    assert len(U) > 1500
    with pytest.raises(FeynmlpError, match="depth_range"):
        training_potentials(10, 8, 1.0, seed=0, depth_range=(1.0, 0.5))


def test_unknown_preset_is_refused():
    from feynmlp.born.perturbation import get_preset
    with pytest.raises(FeynmlpError, match="unknown preset"):
        get_preset("huge")
