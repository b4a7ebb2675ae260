"""The one mapping from a foreign model's layers to an `MLP`, shared by every model reader.

In: a list of steps, in the order the foreign model applies them to its one input:
`Dense(weight, bias)` (an affine layer, weight of shape (n_out, n_in) as torch.nn.Linear
stores it), `Activation(name)` (a canonical name of the activation registry,
feynmlp.activation_names) and `Scale(scale, shift)` (an elementwise y = scale * x + shift with
constant scale and shift, scalars or vectors over the features: the input and output scalers
of a trained model). Each step carries `where`, the words that name it in the foreign model
(a node and its source line, an ONNX node, a pipeline step), so that every refusal names the
layer it is about. Out: the `MLP`, or a `FeynmlpError` naming the step.

The layout accepted is feynmlp's network: Dense layers with at most one activation between
two of them, an optional output activation after the last one. A Scale next to a Dense layer
is folded into it: before it, W (scale * x + shift) + b = (W diag(scale)) x + (W shift + b);
after it (with no activation between), scale * (W x + b) + shift = diag(scale) W x +
(scale * b + shift). Each folded weight is one float64 product per entry, so the folded
network agrees with the foreign one to rounding. A Scale that touches no Dense layer (after
the output activation, or between two activations) changes what an activation sees in a way
no weight can absorb, and is refused.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .activation_names import canonical_name
from .errors import FeynmlpError
from .mlp import MLP

__all__ = ["Dense", "Activation", "Scale", "float_array", "build_mlp"]


def float_array(value: Any, where: str, what: str = "weight") -> np.ndarray:
    """`value` (a NumPy array or anything np.asarray reads) as a float64 copy, refusing what a
    weight must not be: a non-float dtype (integers, booleans, complex, objects) or non-finite
    entries; the message names the step."""
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise FeynmlpError(
            f"{where}: the {what} has dtype {array.dtype}; weights must be floating point "
            "(float16, float32 or float64): convert them before reading the model")
    array = np.array(array, dtype=np.float64, order="C", copy=True)
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise FeynmlpError(
            f"{where}: the {what} has {bad} non-finite entr{'y' if bad == 1 else 'ies'} (NaN or "
            f"infinite) out of {array.size}; the network must be finite (did training diverge?)")
    return array


@dataclasses.dataclass
class Dense:
    """An affine layer W x + b; bias None means a zero bias."""

    weight: np.ndarray
    bias: np.ndarray | None
    where: str


@dataclasses.dataclass
class Activation:
    """An elementwise activation, by its registry name (aliases accepted)."""

    name: str
    where: str


@dataclasses.dataclass
class Scale:
    """y = scale * x + shift elementwise; scale and shift are scalars or vectors of the width."""

    scale: Any
    shift: Any
    where: str


def _vector(value: Any, width: int, where: str, what: str) -> np.ndarray:
    """A scalar or feature vector of a Scale step as a float64 vector of length `width`."""
    array = float_array(value, where, what)
    if array.ndim >= 1 and array.size == width and all(n == 1 for n in array.shape[:-1]):
        return array.reshape(width)
    if array.size == 1 and all(n == 1 for n in array.shape):
        return np.full(width, array.reshape(()), dtype=np.float64)
    raise FeynmlpError(
        f"{where}: the {what} has shape {array.shape}, but the values it scales have {width} "
        f"features; a scaler's constants must be scalars or vectors of length {width}")


def _compose(outer: Scale, inner: Scale) -> Scale:
    """outer(inner(x)) as one Scale: a2 (a1 x + c1) + c2 = (a2 a1) x + (a2 c1 + c2)."""
    a1, c1 = np.asarray(inner.scale, dtype=np.float64), np.asarray(inner.shift, dtype=np.float64)
    a2, c2 = np.asarray(outer.scale, dtype=np.float64), np.asarray(outer.shift, dtype=np.float64)
    try:
        return Scale(a2 * a1, a2 * c1 + c2, inner.where)
    except ValueError:  # shapes that do not broadcast
        raise FeynmlpError(
            f"{outer.where}: its constants have shapes {a2.shape}, {c2.shape}, which do not match "
            f"those of {inner.where} ({a1.shape}, {c1.shape}); the shapes do not chain") from None


def _check_scale(step: Scale) -> Scale:
    return Scale(float_array(step.scale, step.where, "scale"), float_array(step.shift, step.where, "shift"),
                 step.where)


def build_mlp(steps: list[Any], source: str) -> MLP:
    """The MLP that applies `steps` in order, with every Scale folded into its Dense neighbour.

    Args:
        steps: Dense, Activation and Scale steps in the order they act on the input.
        source: what the model is ("module Net", "model.onnx"), for the messages.

    Raises:
        FeynmlpError: a step in a place the network has no room for, shapes that do not chain,
            non-float or non-finite weights; the message names the step.
        UnsupportedActivationError: an activation name the registry does not know.
    """
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    hidden: list[str] = []
    activation: Activation | None = None  # the activation after the latest Dense, if any
    before: Scale | None = None  # a Scale waiting for the next Dense layer
    for step in steps:
        if isinstance(step, Scale):
            step = _check_scale(step)
            if weights and activation is None:
                # Directly after a Dense layer: fold into it.
                n_out = weights[-1].shape[0]
                scale = _vector(step.scale, n_out, step.where, "scale")
                shift = _vector(step.shift, n_out, step.where, "shift")
                weights[-1] = scale[:, None] * weights[-1]
                biases[-1] = scale * biases[-1] + shift
            else:
                before = step if before is None else _compose(step, before)
            continue
        if isinstance(step, Activation):
            name = canonical_name(step.name)
            if not weights:
                raise FeynmlpError(
                    f"{step.where}: the activation {name} comes before the first linear layer; "
                    "feynmlp's network starts with an affine map W(1) x + b(1), so apply this "
                    "function to the inputs before calling the network")
            if before is not None:
                raise FeynmlpError(
                    f"{before.where}: an elementwise scaling between two activations (before "
                    f"{step.where}) cannot be folded into a linear layer; feynmlp's network has "
                    "exactly one activation between two linear layers")
            if activation is not None:
                raise FeynmlpError(
                    f"{step.where} directly follows the activation at {activation.where}; feynmlp "
                    "allows at most one activation between two linear layers (write their "
                    "composition as one custom SymPy activation with MLP(...) instead)")
            activation = Activation(name, step.where)
            continue
        if not isinstance(step, Dense):  # pragma: no cover - readers build only these three
            raise TypeError(f"unknown step {step!r}")
        weight = float_array(step.weight, step.where, "weight")
        if weight.ndim != 2 or 0 in weight.shape:
            raise FeynmlpError(
                f"{step.where}: the weight has shape {weight.shape}; a linear layer's weight must "
                "be a nonempty 2-D matrix (n_out, n_in)")
        bias = (np.zeros(weight.shape[0]) if step.bias is None
                else float_array(step.bias, step.where, "bias"))
        if bias.size != weight.shape[0] or any(n != 1 for n in bias.shape[:-1]):
            raise FeynmlpError(
                f"{step.where}: the bias has shape {bias.shape} but the weight has shape "
                f"{weight.shape}; the bias must be a vector of length {weight.shape[0]}")
        bias = bias.reshape(weight.shape[0])
        if weights and weight.shape[1] != weights[-1].shape[0]:
            raise FeynmlpError(
                f"{step.where}: the weight has shape {weight.shape}, so the layer expects "
                f"{weight.shape[1]} inputs, but the layer before outputs {weights[-1].shape[0]}; "
                "the shapes do not chain")
        if before is not None:
            scale = _vector(before.scale, weight.shape[1], before.where, "scale")
            shift = _vector(before.shift, weight.shape[1], before.where, "shift")
            bias = weight @ shift + bias
            weight = weight * scale[None, :]
            before = None
        if weights:
            hidden.append(activation.name if activation is not None else "identity")
        activation = None
        weights.append(weight)
        biases.append(bias)
    if not weights:
        raise FeynmlpError(f"{source} contains no linear layer; an MLP needs at least one")
    if before is not None:
        raise FeynmlpError(
            f"{before.where}: an elementwise scaling after the output activation "
            f"{activation.name if activation else ''} cannot be folded into the last linear layer; "
            "apply it to the network's output yourself")
    output = activation.name if activation is not None else None
    return MLP(weights, biases, activation=hidden, output_activation=output)
