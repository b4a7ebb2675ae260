"""Reading a fitted scikit-learn network (a live estimator object) as an `MLP`.

In: a fitted `MLPRegressor`, an `MLPClassifier` with a logistic output (binary, or
multilabel), or a `Pipeline` of affine scalers (`StandardScaler`, `MinMaxScaler` without
clipping, `MaxAbsScaler`) ending in one of those. Out: the `MLP` computing `predict` (a
regressor; a single-output regressor gives one output column) or `predict_proba[:, 1]` (a
binary classifier), the scalers folded into the first layer (feynmlp.layer_chain).
Anything else is refused by its class name.

Only live objects are read: a pickled estimator file is never loaded, because unpickling runs
whatever code the file names, so opening an untrusted pickle is running an untrusted program.
Load your own pickle yourself (joblib.load) if you trust it, and pass the estimator; or export
it to ONNX with skl2onnx and read that file with feynmlp.load.

scikit-learn's activations map to the registry's names: 'identity', 'logistic' (sigmoid),
'tanh', and 'relu', which is piecewise linear and so gives first-order coefficients only.
"""
from __future__ import annotations

import os
from typing import Any

from .activation_names import short_repr
from .errors import FeynmlpError
from .layer_chain import Activation, Dense, Scale, build_mlp

__all__ = ["read_estimator"]

# scikit-learn's activation names -> the registry's.
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler")
NETWORKS = ("MLPRegressor", "MLPClassifier")


def _kind(estimator: Any) -> str | None:
    """The class name of a scikit-learn estimator this reader knows, or None.

    The class must be scikit-learn's own, not a subclass, which may compute something else.
    """
    kind = type(estimator)
    module = getattr(kind, "__module__", "")
    if module.startswith("sklearn.") and kind.__name__ in SCALERS + NETWORKS + ("Pipeline",):
        return kind.__name__
    return None


def _refuse_other(estimator: Any, where: str) -> FeynmlpError:
    if isinstance(estimator, (str, bytes, os.PathLike)):
        return FeynmlpError(
            f"{where}: from_sklearn takes a fitted estimator object, got the path {short_repr(estimator)}; "
            "feynmlp never loads pickled estimators (unpickling runs code named in the file): load it "
            "yourself if you trust it and pass the object, or export it with skl2onnx and use feynmlp.load")
    return FeynmlpError(
        f"{where}: {type(estimator).__name__} ({short_repr(estimator)}) is not supported; from_sklearn "
        f"reads {', '.join(NETWORKS)}, optionally in a Pipeline after {', '.join(SCALERS)}")


def _scaler_steps(scaler: Any, kind: str, where: str) -> list[Any]:
    if not hasattr(scaler, "n_features_in_"):
        raise FeynmlpError(f"{where}: the {kind} is not fitted; fit the pipeline first")
    if kind == "StandardScaler":
        steps = []
        if scaler.mean_ is not None:
            steps.append(Scale(1.0, -scaler.mean_, where))
        if scaler.scale_ is not None:
            steps.append(Scale(1.0 / scaler.scale_, 0.0, where))
        return steps
    if kind == "MinMaxScaler":
        if scaler.clip:
            raise FeynmlpError(f"{where}: MinMaxScaler(clip=True) clips its output, which is not an affine "
                               "map; refit it with clip=False")
        return [Scale(scaler.scale_, scaler.min_, where)]
    return [Scale(1.0 / scaler.scale_, 0.0, where)]  # MaxAbsScaler: x / max|x|


def _network_steps(network: Any, kind: str, where: str) -> list[Any]:
    if not hasattr(network, "coefs_"):
        raise FeynmlpError(f"{where}: the {kind} is not fitted; fit it first")
    hidden = ACTIVATIONS.get(network.activation)
    if hidden is None:
        raise FeynmlpError(f"{where}: activation {network.activation!r} is not supported; use one of "
                           f"{', '.join(ACTIVATIONS)}")
    output = network.out_activation_
    if kind == "MLPClassifier" and output != "logistic":
        raise FeynmlpError(
            f"{where}: an MLPClassifier with {network.n_outputs_} classes ends in {output!r}, which couples "
            "the outputs; feynmlp reads binary (or multilabel) classifiers, whose output is the logistic "
            "function of each output unit")
    if output not in ("identity", "logistic"):
        raise FeynmlpError(f"{where}: the output activation {output!r} is not supported")
    steps: list[Any] = []
    for layer, (coef, intercept) in enumerate(zip(network.coefs_, network.intercepts_)):
        if layer:
            steps.append(Activation(hidden, f"{where} hidden layer {layer}"))
        # scikit-learn stores coefs_[l] as (n_in, n_out): X @ coef + intercept.
        steps.append(Dense(_transposed(coef, f"{where} layer {layer}"), intercept, f"{where} layer {layer}"))
    if output == "logistic":
        steps.append(Activation("sigmoid", f"{where} output"))
    return steps


def _transposed(coef: Any, where: str) -> Any:
    import numpy as np
    array = np.asarray(coef)
    if array.ndim != 2:
        raise FeynmlpError(f"{where}: the weight has shape {array.shape}; expected a matrix")
    return array.T


def read_estimator(estimator: Any) -> Any:
    """The MLP of a fitted scikit-learn network, or of a pipeline of scalers and one.

    Raises:
        FeynmlpError: an estimator or step that is not supported (named), an unfitted one, a
            path instead of an object, non-float or non-finite weights.
    """
    kind = _kind(estimator)
    if kind is None:
        raise _refuse_other(estimator, "from_sklearn")
    if kind == "Pipeline":
        named = list(estimator.steps)
    else:
        named = [(kind, estimator)]
    if not named:
        raise FeynmlpError("from_sklearn: the Pipeline has no steps")
    steps: list[Any] = []
    for position, (name, step) in enumerate(named):
        where = f"pipeline step {name!r}" if kind == "Pipeline" else kind
        step_kind = _kind(step)
        last = position == len(named) - 1
        if step_kind in SCALERS and not last:
            steps.extend(_scaler_steps(step, step_kind, where))
        elif step_kind in NETWORKS and last:
            steps.extend(_network_steps(step, step_kind, where))
        elif step_kind in NETWORKS + SCALERS:
            raise FeynmlpError(
                f"{where}: a {step_kind} at position {position} of the pipeline; from_sklearn reads scalers "
                "followed by one network, which must be the last step")
        else:
            raise _refuse_other(step, where)
    mlp = build_mlp(steps, f"the {kind}")
    mlp.record = {"source": "scikit-learn", "estimator": kind}
    return mlp
