"""Training networks for the Born series: scaling folded into the saved network, recovery of a
known Hessian, argument checks, and `import feynmlp.born` without torch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import feynmlp
from feynmlp.born.training import (Scaling, TrainConfig, fit_scaling, fold_scaling, require_torch,
                                   train_ensemble, train_network)
from feynmlp.errors import FeynmlpError

torch = pytest.importorskip("torch")


def test_fold_scaling_matches_the_scaled_network_without_torch():
    rng = np.random.default_rng(0)
    mlp = feynmlp.MLP([rng.normal(size=(7, 5)), rng.normal(size=(6, 7)), rng.normal(size=(1, 6))],
                      [rng.normal(size=7), rng.normal(size=6), rng.normal(size=1)], "tanh")
    scaling = Scaling(input_scale=rng.uniform(0.1, 3.0, 5), output_shift=-0.7, output_scale=0.02)
    folded = fold_scaling(mlp, scaling)
    U = rng.normal(size=(20, 5))
    expected = scaling.output_scale * mlp(U / scaling.input_scale)[:, 0] + scaling.output_shift
    np.testing.assert_allclose(folded(U)[:, 0], expected, rtol=1e-13, atol=1e-15)


def test_fit_scaling_keeps_the_origin_and_handles_constant_columns():
    X = np.array([[1.0, 0.0], [-3.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    s = fit_scaling(X, y)
    assert s.input_scale[0] == pytest.approx(np.sqrt(np.mean(X[:, 0] ** 2)))
    assert s.input_scale[1] > 0  # an all-zero column gets a finite positive scale
    assert s.output_shift == pytest.approx(2.5)
    assert s.output_scale == pytest.approx(np.std(y))


def test_saved_network_equals_trained_network_on_raw_inputs(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(scale=1e-2, size=(300, 6))  # physical inputs far from unit scale
    y = 5.0 + 40.0 * X[:, 0] - 300.0 * X[:, 1] * X[:, 2]
    net = train_network(X, y, TrainConfig(hidden=(12, 12), epochs=3, patience=0, threads=1),
                        seed=3, record={"note": "test"})
    path = tmp_path / "net.safetensors"
    net.mlp.save(path)
    loaded = feynmlp.load(path)
    Xt = rng.normal(scale=1e-2, size=(50, 6))
    np.testing.assert_allclose(loaded(Xt)[:, 0], net.torch_predict(Xt), rtol=1e-12, atol=1e-12)
    rec = loaded.record
    assert rec["note"] == "test" and rec["seed"] == 3
    assert rec["config"]["hidden"] == [12, 12]
    assert set(rec["metrics"]) >= {"validation_rmse", "epochs_run", "seconds"}
    assert len(rec["scaling"]["input_scale"]) == 6


def test_network_trained_on_an_exact_quadratic_recovers_its_hessian():
    """The whole chain (scaling, training, folding, Taylor kernels) finds a second order."""
    rng = np.random.default_rng(2)
    n = 4
    g = rng.normal(size=n)
    B = rng.normal(size=(n, n))
    A = 0.5 * (B + B.T)  # the Hessian to recover
    X = rng.uniform(-1.0, 1.0, size=(2000, n)) * 0.5  # physical scale 0.5, not 1
    y = 0.3 + X @ g + 0.5 * np.einsum("bi,ij,bj->b", X, A, X)
    config = TrainConfig(hidden=(32,), epochs=30, batch_size=128, lr=1e-2, patience=0,
                         lbfgs_steps=500, threads=1)
    net = train_network(X, y, config, seed=0)
    T = feynmlp.taylor(net.mlp, np.zeros(n), 2)
    H = T.hessian[0]
    assert np.linalg.norm(H - A) / np.linalg.norm(A) < 0.05  # about 0.014 measured
    np.testing.assert_allclose(T.gradient[0], g, rtol=0, atol=0.02 * np.linalg.norm(g))


def test_sample_weights_and_ensembles():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 3))
    y = X[:, 0]
    config = TrainConfig(hidden=(4,), epochs=2, patience=0, threads=1)
    nets = train_ensemble(X, y, config, members=2, seed=5, sample_weights=np.linspace(1, 2, 40))
    assert [n.mlp.record["member"] for n in nets] == [0, 1]
    assert [n.mlp.record["seed"] for n in nets] == [5000, 5001]
    assert not np.allclose(nets[0].mlp.weights[0], nets[1].mlp.weights[0])
    with pytest.raises(FeynmlpError, match="sample_weights"):
        train_network(X, y, config, sample_weights=-np.ones(40))
    with pytest.raises(FeynmlpError, match="members"):
        train_ensemble(X, y, config, members=0)


def test_bad_arguments_are_refused():
    with pytest.raises(FeynmlpError, match="smooth"):
        TrainConfig(activation="relu")
    with pytest.raises(FeynmlpError, match="dtype"):
        TrainConfig(dtype="float16")
    with pytest.raises(FeynmlpError, match="validation_fraction"):
        TrainConfig(validation_fraction=1.0)
    with pytest.raises(FeynmlpError, match="shape"):
        train_network(np.zeros((10, 3)), np.zeros(9))
    with pytest.raises(FeynmlpError, match="NaN"):
        train_network(np.full((10, 3), np.nan), np.zeros(10))


def test_float32_training_gives_a_float64_network():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(50, 3))
    net = train_network(X, X[:, 1], TrainConfig(hidden=(5,), epochs=2, dtype="float32", threads=1))
    assert net.mlp.weights[0].dtype == np.float64
    np.testing.assert_allclose(net.mlp(X)[:, 0], net.torch_predict(X), rtol=1e-5, atol=1e-6)


def test_require_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(FeynmlpError, match=r"feynmlp\[train\]"):
        require_torch()


def test_born_modules_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import feynmlp.born, feynmlp.born.training, feynmlp.born.perturbation, "
            "feynmlp.born.report, feynmlp.born.cli\n"
            "feynmlp.born.perturbation.get_preset('quick')\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
