"""MLP.from_sklearn (feynmlp.sklearn_reader): fitted estimators, small and trained here.

Forward values against predict / predict_proba (1e-12); gradients and Hessians of the
feynmlp expansion against central finite differences of predict; refusals by name.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, PolynomialFeatures, StandardScaler  # noqa: E402

import feynmlp  # noqa: E402
from feynmlp import MLP  # noqa: E402
from feynmlp.errors import FeynmlpError, UnsupportedActivationError  # noqa: E402

RNG = np.random.default_rng(8)
X = RNG.normal(size=(80, 3)) * [1.0, 20.0, 0.05] + [0.5, -3.0, 1.0]
Y = np.tanh(X[:, 0]) + 0.05 * X[:, 1] + 10 * X[:, 2]


def _fit(estimator, y=Y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: a few iterations are enough here
        return estimator.fit(X, y)


def _finite_difference_derivatives(f, x, h=1e-4):
    """Gradient and Hessian of a scalar f by central differences (errors O(h^2))."""
    n = len(x)
    eye = np.eye(n) * h
    gradient = np.array([(f(x + eye[i]) - f(x - eye[i])) / (2 * h) for i in range(n)])
    hessian = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            hessian[i, j] = (f(x + eye[i] + eye[j]) - f(x + eye[i] - eye[j])
                             - f(x - eye[i] + eye[j]) + f(x - eye[i] - eye[j])) / (4 * h * h)
    return gradient, hessian


@pytest.mark.parametrize("activation", ["tanh", "logistic", "identity", "relu"])
def test_regressor_in_a_pipeline_of_every_scaler(activation):
    estimator = _fit(make_pipeline(StandardScaler(), MinMaxScaler(), MaxAbsScaler(),
                                   MLPRegressor(hidden_layer_sizes=(7, 5), activation=activation,
                                                max_iter=80, random_state=1)))
    mlp = MLP.from_sklearn(estimator)
    name = {"logistic": "sigmoid"}.get(activation, activation)
    assert mlp.hidden_activations == [name, name] and mlp.output_activation is None
    np.testing.assert_allclose(mlp(X)[:, 0], estimator.predict(X), rtol=1e-12, atol=1e-12)

    point = X[3]
    gradient, hessian = _finite_difference_derivatives(lambda u: estimator.predict(u[None, :])[0], point)
    order = 1 if activation == "relu" else 2
    expansion = feynmlp.taylor(mlp, point, order)
    np.testing.assert_allclose(expansion.derivative_tensor(1)[0], gradient, rtol=1e-6, atol=1e-7)
    if order == 2:
        np.testing.assert_allclose(expansion.derivative_tensor(2)[0], hessian, rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(UnsupportedActivationError, match="piecewise linear"):
            feynmlp.taylor(mlp, point, 2)


def test_multi_output_regressor():
    estimator = _fit(MLPRegressor(hidden_layer_sizes=(4,), max_iter=50, random_state=0),
                     np.stack([Y, -Y], axis=1))
    mlp = MLP.from_sklearn(estimator)
    np.testing.assert_allclose(mlp(X), estimator.predict(X), rtol=1e-12, atol=1e-12)


def test_binary_classifier_gives_the_probability_of_the_positive_class():
    estimator = _fit(make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(5,), activation="tanh",
                                                                   max_iter=60, random_state=0)), Y > 0)
    mlp = MLP.from_sklearn(estimator)
    assert mlp.output_activation == "sigmoid"
    np.testing.assert_allclose(mlp(X)[:, 0], estimator.predict_proba(X)[:, 1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make, fragments", [
    (lambda: _fit(MLPClassifier(hidden_layer_sizes=(3,), max_iter=20), np.digitize(Y, np.quantile(Y, [0.3, 0.6]))),
     ["MLPClassifier with 3 classes", "softmax"]),
    (lambda: _fit(make_pipeline(MinMaxScaler(clip=True), MLPRegressor(hidden_layer_sizes=(3,), max_iter=20))),
     ["'minmaxscaler'", "clip=True"]),
    (lambda: _fit(make_pipeline(PolynomialFeatures(), MLPRegressor(hidden_layer_sizes=(3,), max_iter=20))),
     ["'polynomialfeatures'", "PolynomialFeatures", "not supported"]),
    # Built from fitted steps: scikit-learn itself refuses to fit a network before a scaler.
    (lambda: Pipeline([("net", _fit(MLPRegressor(hidden_layer_sizes=(3,), max_iter=20))),
                       ("scale", _fit(StandardScaler()))]),
     ["'net'", "last step"]),
    (lambda: _fit(LinearRegression()), ["LinearRegression", "not supported"]),
    (lambda: MLPRegressor(), ["not fitted"]),
    (lambda: "model.pkl", ["'model.pkl'", "never loads pickled"]),
])
def test_refusals_name_the_estimator(make, fragments):
    with pytest.raises(FeynmlpError) as info:
        MLP.from_sklearn(make())
    message = str(info.value)
    assert "\n" not in message and len(message) <= 500, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_non_finite_weights_are_refused_naming_the_layer():
    estimator = _fit(MLPRegressor(hidden_layer_sizes=(4,), max_iter=20, random_state=0))
    estimator.coefs_[1][2, 0] = np.inf
    with pytest.raises(FeynmlpError, match="MLPRegressor layer 1: the weight has 1 non-finite"):
        MLP.from_sklearn(estimator)
