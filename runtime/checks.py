"""Validation of what users pass to the public functions, and the errors that explain a failed
expansion.

In: the arguments of feynmlp.taylor, directional, the operators and their Dask forms (a network,
points, dtype, wrt, the nonfinite option), or a computation that produced inf/NaN or divided by
zero. Out: the checked values (points as a 2-D array and whether one point was given, wrt as a
tuple of indices, ...), or a FeynmlpError that names the bad value and the fix; for a failed
expansion, the first layer, neuron and point whose pre-activation, activation or derivative is
not finite. Imports neither SymPy nor Dask.
"""
from __future__ import annotations

import sys

import numpy as np

from .errors import FeynmlpError
from .kernels import raw_derivatives
from .mlp import MLP, tensor_as_numpy


def check_mlp(mlp) -> MLP:
    if not isinstance(mlp, MLP):
        raise FeynmlpError(f"expected a feynmlp.MLP, got {type(mlp).__name__}; build one with feynmlp.MLP(weights, "
                           "biases, activation) or feynmlp.MLP.from_torch(module)")
    return mlp


def check_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise FeynmlpError(f"dtype must be float64 or float32, got {dtype!r}") from None
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise FeynmlpError(f"dtype must be float64 or float32, got {dtype}")
    return dtype


def real_array(value, what: str, dtype) -> np.ndarray:
    """`value` (array-like or torch tensor) as an array of `dtype`; anything but real numbers is refused."""
    value = tensor_as_numpy(value, what)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise FeynmlpError(f"{what} must be an array of numbers: {exc}") from None
    if array.dtype.kind == "c":
        raise FeynmlpError(f"{what} must hold real numbers, got dtype {array.dtype}")
    if array.dtype.kind not in "biuf":
        raise FeynmlpError(f"{what} must be an array of numbers, got dtype {array.dtype}")
    return array.astype(dtype, copy=False)


def check_points(x, n_inputs: int, what: str = "x", dtype=np.float64) -> tuple[np.ndarray, bool]:
    x = tensor_as_numpy(x, what)
    try:
        # Inside the try: a ragged nested list makes even the complex test raise.
        complex_dtype = np.asarray(x).dtype if np.iscomplexobj(x) else None
        points = None if complex_dtype is not None else np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FeynmlpError(f"{what} must be an array of numbers: {exc}") from None
    if complex_dtype is not None:
        raise FeynmlpError(f"{what} must hold real numbers, got dtype {complex_dtype}")
    if points.ndim not in (1, 2) or points.shape[-1] != n_inputs:
        raise FeynmlpError(f"{what} must have shape ({n_inputs},) or (batch, {n_inputs}) for this network, "
                           f"got {points.shape}")
    bad = ~np.isfinite(points)
    if bad.any():
        raise FeynmlpError(f"{what} contains {int(bad.sum())} NaN or infinite value(s) "
                           f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})")
    if points.ndim == 2 and points.shape[0] == 0:
        raise FeynmlpError(f"{what} holds no points (shape {points.shape})")
    limit = np.finfo(dtype).max
    if np.dtype(dtype) != np.float64 and np.any(np.abs(points) > limit):
        raise FeynmlpError(f"{what} holds values beyond the largest {np.dtype(dtype)} ({limit:.3g}); "
                           "use dtype=float64")
    return np.atleast_2d(points), points.ndim == 1


def check_wrt(wrt, n_inputs: int) -> tuple[int, ...]:
    if wrt is None:
        return tuple(range(n_inputs))
    if hasattr(wrt, "__len__") and len(wrt) > n_inputs:
        raise FeynmlpError(f"wrt holds {len(wrt)} indices but the network has only {n_inputs} inputs")
    if np.asarray(wrt).dtype == bool:
        # A boolean mask would be read as the indices 0 and 1; say so instead.
        raise FeynmlpError(f"wrt must be a list of input indices, got the booleans {wrt!r}; for a mask "
                           "pass np.flatnonzero(mask)")
    try:
        indices = [int(i) for i in np.atleast_1d(np.asarray(wrt))]
        if not np.all(np.asarray(wrt) == np.asarray(indices)):
            raise ValueError
    except (TypeError, ValueError):
        raise FeynmlpError(f"wrt must be a list of input indices, got {wrt!r}") from None
    if not indices:
        raise FeynmlpError("wrt is empty; give at least one input index")
    bad = [i for i in indices if not 0 <= i < n_inputs]
    if bad:
        shown = ", ".join(str(i) for i in bad[:10]) + (f", ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise FeynmlpError(f"wrt holds input indices [{shown}] outside 0..{n_inputs - 1}")
    if len(set(indices)) != len(indices):
        raise FeynmlpError(f"wrt holds repeated indices: {indices}")
    return tuple(indices)


def check_nonfinite_option(nonfinite) -> None:
    if nonfinite not in ("raise", "propagate"):
        raise FeynmlpError(f"nonfinite must be 'raise' or 'propagate', got {nonfinite!r}")


def refuse_nonfinite(values: np.ndarray, what: str, describe, mlp: MLP, points: np.ndarray, order: int,
                      dtype) -> None:
    """A FeynmlpError naming the first inf/NaN result and where it comes from (finite inputs)."""
    bad = ~np.isfinite(values)
    if bad.any():
        point, output, column = (int(i) for i in np.argwhere(bad)[0])
        row = min(point, points.shape[0] - 1)  # one point shared by many directions
        cause = _layer_fault(mlp, points[row:row + 1], order)
        if cause is None and np.dtype(dtype) == np.dtype(np.float32):
            cause = ("the coefficients overflowed float32, while every activation and derivative is finite in "
                     "float64 at this point; try dtype=float64 or smaller inputs")
        elif cause is None:
            cause = ("the coefficients overflowed float64 (products of large derivatives and weights, with every "
                     "activation and derivative finite at this point); use smaller inputs or weights, or a lower "
                     "order")
        raise FeynmlpError(
            f"{int(bad.sum())} {what}(s) came out inf/NaN although the inputs are finite (first: point {point}, "
            f"output {output}, {describe(column)}): {cause}; or pass nonfinite='propagate' to get them as inf/NaN")


def guard_division(compute, mlp: MLP, points: np.ndarray, order: int, dtype):
    """compute(), with a kernel's ZeroDivisionError (a custom activation such as 1/x or log(x)
    whose derivatives divide by a pre-activation of exactly 0) turned into a FeynmlpError that
    names the activation, layer, neuron and point."""
    try:
        return compute()
    except ZeroDivisionError:
        cause = _layer_fault(mlp, points, order) or "in a kernel, with every pre-activation and activation finite"
        raise FeynmlpError(f"the expansion divided by zero: {cause}") from None


def _layer_fault(mlp: MLP, points: np.ndarray, order: int) -> str | None:
    """Why an expansion at `points` (P, n_in) fails, or None if no layer is at fault: walks the
    network in float64, layer by layer, and names the first pre-activation, activation value or
    derivative that is not finite (or whose evaluation divides by zero). Runs only once an
    expansion has failed, so its cost (a forward pass) does not matter."""
    layers = [(f"hidden layer {l + 1}", activation) for l, activation in enumerate(mlp.hidden_activations)]
    if mlp.output_activation is not None:
        layers.append(("the output layer", mlp.output_activation))

    def place(where, index, width):
        point, neuron = divmod(index, width)
        return f"{where}, neuron {neuron}" + (f", point {point}" if points.shape[0] > 1 else "")

    with np.errstate(all="ignore"):
        z = points @ mlp.weights[0].T + mlp.biases[0]
        for l, (where, activation) in enumerate(layers):
            flat = z.reshape(-1)
            if not np.all(np.isfinite(flat)):
                i = int(np.flatnonzero(~np.isfinite(flat))[0])
                return (f"the pre-activation of {place(where, i, z.shape[1])} is {flat[i]} (an overflow of float64); "
                        "use smaller inputs or weights")
            evaluate = raw_derivatives(activation, order)
            try:
                derivatives = evaluate(flat, order)  # (order + 1, P * width), float64
            except ZeroDivisionError:
                i = _first_raising(lambda part: evaluate(part, order), flat)
                return (f"the activation {activation} divides by zero at pre-activation z = {flat[i]:.6g} "
                        f"({place(where, i, z.shape[1])}): it is singular there; choose an expansion point (or "
                        "weights) away from the singularity")
            for test, kind in ((np.isnan, "nan"), (np.isinf, "inf")):
                hit = test(derivatives)
                if hit.any():
                    i = int(np.flatnonzero(hit.any(axis=0))[0])
                    m = int(np.flatnonzero(hit[:, i])[0])
                    what = f"the activation {activation}" + (f" (its derivative of order {m})" if m else "")
                    if kind == "nan":
                        return (f"{what} is not defined at pre-activation z = {flat[i]:.6g} "
                                f"({place(where, i, z.shape[1])}): NaN from an activation evaluated outside its "
                                "domain, not an overflow; choose an expansion point (or weights) that keeps the "
                                "pre-activations inside its domain")
                    return (f"{what} is infinite at pre-activation z = {flat[i]:.6g} ({place(where, i, z.shape[1])}): "
                            "beyond the float64 range (an overflow) or at a singularity; use smaller inputs or "
                            "weights, or a point away from the singularity")
            if l + 1 < len(mlp.weights):
                z = derivatives[0].reshape(z.shape) @ mlp.weights[l + 1].T + mlp.biases[l + 1]
    return None


def _first_raising(call, values: np.ndarray) -> int:
    """The first index i such that call(values[i:i + 1]) raises ZeroDivisionError, given that
    call(values) does: bisection, a few calls instead of one per value."""
    lo, hi = 0, values.size
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            call(values[lo:mid])
            lo = mid
        except ZeroDivisionError:
            hi = mid
    return lo


def supported_activations(mlp: MLP, order: int):
    mlp.check_order_supported(order)
    return mlp.hidden_activations, mlp.output_activation


def is_dask_array(value) -> bool:
    """True for a dask.array.Array; never imports Dask (such an array means Dask is loaded)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(value, module.Array)
