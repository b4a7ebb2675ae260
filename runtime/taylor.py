"""The user-facing expansions: `taylor`, `directional`, `diagram_contributions`.

In: an `MLP`, expansion points x ((n_in,) or (batch, n_in)), an order K, and optionally a subset
of input variables (`wrt`) or directions (`v`). Out: a `TaylorExpansion` (coefficients over
graded multi-indices, dense derivative tensors on request, evaluation, SymPy export), the
univariate series along directions, or the value of every diagram of one coefficient.
Validation happens here, once, with errors that name the bad value; the numerics are in
feynmlp.forward (kernels) and feynmlp.diagram_values (propagators and vertices).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import numpy as np

from . import forward, multi_index
from .errors import FeynmlpError, ResourceLimitError
from .kernels import kernel_module, validate_order
from .mlp import MLP


class TaylorExpansion:
    """Taylor coefficients of an MLP around one or several points.

    f_o(x + h) = sum over alpha of coefficients[..., o, column(alpha)] * h^alpha (|alpha| <= order)

    Attributes:
        multi_indices: (M, n_in) int array of the exponents alpha, graded then lexicographic
            (1, x0, x1, ..., x0^2, x0 x1, ...). With `wrt`, only those columns are nonzero.
        coefficients: (batch, n_out, M), or (n_out, M) for a single point: d^alpha f / alpha!.
        order, point, wrt (tuple of expanded input indices), dtype.
    """

    def __init__(self, coefficients: np.ndarray, points: np.ndarray, order: int, wrt: tuple[int, ...],
                 n_inputs: int, single: bool):
        self._coefficients = coefficients  # always (batch, n_out, M)
        self._single = single
        self.order = order
        self.wrt = wrt
        self.n_inputs = n_inputs
        self.point = points[0] if single else points

    @functools.cached_property
    def _local(self) -> np.ndarray:
        """Exponents over the expanded variables only, (M, len(wrt))."""
        return multi_index.exponents(len(self.wrt), self.order)

    @functools.cached_property
    def multi_indices(self) -> np.ndarray:
        # Built on first use: for 64 inputs at order 3 it is a 24 MB table.
        full = np.zeros((self._local.shape[0], self.n_inputs), dtype=np.int64)
        full[:, list(self.wrt)] = self._local
        return full

    @property
    def coefficients(self) -> np.ndarray:
        return self._coefficients[0] if self._single else self._coefficients

    @property
    def dtype(self):
        return self._coefficients.dtype

    def coefficient(self, alpha: Sequence[int]) -> np.ndarray:
        """The coefficients d^alpha f / alpha! of one multi-index alpha (exponents over all inputs)."""
        alpha = _integer_exponents(alpha)
        if alpha.shape != (self.n_inputs,):
            raise FeynmlpError(f"alpha must have {self.n_inputs} exponents, got shape {alpha.shape}")
        outside = [int(i) for i in np.flatnonzero(alpha) if i not in self.wrt]
        if outside:
            raise FeynmlpError(f"alpha differentiates inputs {outside}, which this expansion holds fixed (wrt={self.wrt})")
        if alpha.sum() > self.order or np.any(alpha < 0):
            raise FeynmlpError(f"alpha {alpha.tolist()} is outside this expansion of order {self.order}")
        column = multi_index.column_of(len(self.wrt), self.order, alpha[list(self.wrt)])
        return self.coefficients[..., int(column)]

    def derivative_tensor(self, k: int) -> np.ndarray:
        """The dense symmetric k-th derivative tensor, shape (batch, n_out) + (n,)*k, n = len(wrt).

        Not divided by factorials: entry [..., i1, ..., ik] is d^k f / dx_i1 ... dx_ik. Axes
        run over the expanded variables in the order of `wrt` (all inputs by default).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= self.order:
            raise FeynmlpError(f"derivative order must be between 0 and {self.order}, got {k!r}")
        n = len(self.wrt)
        batch, n_out, _ = self._coefficients.shape
        size = batch * n_out * n**k * self.dtype.itemsize
        if size > forward.memory_budget():
            raise ResourceLimitError(
                f"the dense order-{k} tensor would take {size / 2**30:.1f} GiB (n^k = {n}^{k} entries per output "
                "and point); use .coefficients (unique entries only) or wrt= to restrict the variables")
        tensor = np.zeros((batch, n_out) + (n,) * k, dtype=self.dtype)
        offsets, _, padded = multi_index.layout(n, self.order)
        for column in range(offsets[k], offsets[k + 1]):
            variables = tuple(int(v) for v in padded[column, :k])
            alpha = self._local[column]
            value = self._coefficients[:, :, column] * math.prod(math.factorial(int(a)) for a in alpha)
            for permutation in set(itertools.permutations(variables)):
                tensor[(slice(None), slice(None)) + permutation] = value
        return tensor[0] if self._single else tensor

    @property
    def gradient(self) -> np.ndarray:
        """(batch, n_out, n): first derivatives (the full propagator P(L,0) of the rules)."""
        return self.derivative_tensor(1)

    @property
    def hessian(self) -> np.ndarray:
        """(batch, n_out, n, n): second derivatives."""
        return self.derivative_tensor(2)

    def __call__(self, h) -> np.ndarray:
        """The Taylor polynomial at displacements h from the expansion point(s).

        h has the width of the expanded variables (len(wrt)). For a single-point expansion h is
        (n,) -> (n_out,) or (p, n) -> (p, n_out); for a batch, h is (batch, n) -> (batch, n_out).
        """
        h = np.asarray(h, dtype=self.dtype)
        n = len(self.wrt)
        if h.shape[-1:] != (n,):
            raise FeynmlpError(f"displacements must have {n} components (the expanded variables), got shape {h.shape}")
        monomials = np.prod(h[..., None, :] ** self._local, axis=-1)  # (..., M)
        if self._single:
            return monomials @ self._coefficients[0].T
        if h.shape != (self._coefficients.shape[0], n):
            raise FeynmlpError(f"for a batch of {self._coefficients.shape[0]} points, h must have shape "
                               f"({self._coefficients.shape[0]}, {n}), got {h.shape}")
        return np.einsum("bm,bom->bo", monomials, self._coefficients)

    def to_sympy(self, symbols=None):
        """The Taylor polynomials as SymPy expressions in the displacements h_i (one per output).

        For a batch, a list (one entry per point) of such lists.
        """
        import sympy as sp

        if symbols is None:
            symbols = sp.symbols(" ".join(f"h{i}" for i in self.wrt) + " ,")[: len(self.wrt)]
        monomials = [sp.Mul(*(s**int(a) for s, a in zip(symbols, alpha))) for alpha in self._local]
        polynomials = [[sp.Add(*(sp.Float(float(c), 17) * m for c, m in zip(row, monomials) if c != 0))
                        for row in point] for point in self._coefficients]
        return polynomials[0] if self._single else polynomials

    def __repr__(self) -> str:
        return (f"TaylorExpansion(order={self.order}, points={1 if self._single else self._coefficients.shape[0]}, "
                f"outputs={self._coefficients.shape[1]}, variables={len(self.wrt)}, "
                f"coefficients={self._coefficients.shape[2]} per output)")


# ----------------------------------------------------------------------------- validation

def _check_mlp(mlp) -> MLP:
    if not isinstance(mlp, MLP):
        raise FeynmlpError(f"expected a feynmlp.MLP, got {type(mlp).__name__}; build one with feynmlp.MLP(weights, "
                           "biases, activation) or feynmlp.MLP.from_torch(module)")
    return mlp


def _check_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise FeynmlpError(f"dtype must be float64 or float32, got {dtype!r}") from None
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise FeynmlpError(f"dtype must be float64 or float32, got {dtype}")
    return dtype


def _check_points(x, n_inputs: int, what: str = "x", dtype=np.float64) -> tuple[np.ndarray, bool]:
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


def _integer_exponents(alpha) -> np.ndarray:
    """alpha as an array of integers; anything else (floats, even 1.0, as for `order`) is refused.

    Python integers beyond int64 stay Python integers (an object array), so that the order
    check names them instead of an overflow.
    """
    try:
        values = np.asarray(alpha)
    except (TypeError, ValueError):  # ragged nesting
        raise FeynmlpError(f"alpha must be a list of integer exponents, got {alpha!r}") from None
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "O" and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                        for v in values.flat):
        return values
    raise FeynmlpError(f"alpha must be a list of integer exponents, got {alpha!r}")


def _check_wrt(wrt, n_inputs: int) -> tuple[int, ...]:
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


def _check_nonfinite_option(nonfinite) -> None:
    if nonfinite not in ("raise", "propagate"):
        raise FeynmlpError(f"nonfinite must be 'raise' or 'propagate', got {nonfinite!r}")


def _refuse_nonfinite(values: np.ndarray, what: str, describe) -> None:
    """A FeynmlpError naming the first inf/NaN result (finite inputs overflowed inside the network)."""
    bad = ~np.isfinite(values)
    if bad.any():
        point, output, column = (int(i) for i in np.argwhere(bad)[0])
        raise FeynmlpError(
            f"{int(bad.sum())} {what}(s) overflowed to inf/NaN inside the network although the inputs are "
            f"finite (first: point {point}, output {output}, {describe(column)}); the pre-activations are "
            "too large for the activation's derivatives in this dtype (try float64 or smaller inputs), or "
            "pass nonfinite='propagate' to get them as inf/NaN")


def _activations(mlp: MLP, order: int):
    mlp.check_order_supported(order)
    return mlp.hidden_activations, mlp.output_activation


# ----------------------------------------------------------------------------- public API

def taylor(mlp: MLP, x, order: int, wrt=None, dtype=np.float64, scheme: str = "auto",
           nonfinite: str = "raise") -> TaylorExpansion:
    """All Taylor coefficients d^alpha f(x) / alpha! with |alpha| <= order.

    Args:
        mlp: the network.
        x: expansion point (n_in,) or points (batch, n_in).
        order: K >= 1.
        wrt: input indices to expand in (default all); the other inputs stay fixed at x.
        dtype: float64 (default) or float32.
        scheme: "auto" (default: chosen by the network's shape), "forward" (every coefficient
            through every layer; best for many outputs) or "top-vertex" (orders < K forward,
            order K from the topmost vertex and the output propagators; linear outputs only).
        nonfinite: "raise" (default): finite inputs whose coefficients overflow inside the
            network (an exp layer with large pre-activations, say) give a FeynmlpError naming
            the first such coefficient; "propagate": return them as inf/NaN.

    Returns:
        a TaylorExpansion; `.coefficients` has shape (batch, n_out, M) (or (n_out, M) for one
        point) with M = C(n + K, K), n = len(wrt).
    """
    mlp = _check_mlp(mlp)
    order = validate_order(order)
    dtype = _check_dtype(dtype)
    points, single = _check_points(x, mlp.n_inputs, dtype=dtype)
    variables = _check_wrt(wrt, mlp.n_inputs)
    if scheme not in forward.SCHEMES:
        raise FeynmlpError(f"scheme must be one of {', '.join(forward.SCHEMES)}, got {scheme!r}")
    hidden, output = _activations(mlp, order)
    if scheme == "top-vertex" and output is not None:
        raise FeynmlpError("scheme 'top-vertex' needs a linear output layer; this network has output "
                           f"activation {output!r}; use scheme='forward' or 'auto'")
    _check_nonfinite_option(nonfinite)
    coefficients = forward.multivariate_series(mlp.weights, mlp.biases, hidden, output, points, order,
                                               wrt=np.array(variables), dtype=dtype, scheme=scheme)
    if nonfinite == "raise":
        _refuse_nonfinite(coefficients, "coefficient", lambda c: f"multi-index column {c}")
    return TaylorExpansion(coefficients, points, order, variables, mlp.n_inputs, single)


def directional(mlp: MLP, x, v, order: int, dtype=np.float64, nonfinite: str = "raise") -> np.ndarray:
    """Coefficients of t -> f(x + t v) up to t^order (univariate Taylor mode).

    x and v are (n_in,) or (batch, n_in) and broadcast against each other. Returns
    (batch, n_out, order + 1), or (n_out, order + 1) when both are single vectors. For the Born
    series, the k-th Born term of a potential U is directional(mlp, 0, U, K)[..., k].
    """
    mlp = _check_mlp(mlp)
    order = validate_order(order)
    dtype = _check_dtype(dtype)
    points, single_x = _check_points(x, mlp.n_inputs, "x", dtype)
    directions, single_v = _check_points(v, mlp.n_inputs, "v", dtype)
    if points.shape[0] != directions.shape[0] and points.shape[0] != 1:
        if directions.shape[0] != 1:
            raise FeynmlpError(f"x and v hold different numbers of points ({points.shape[0]} and "
                               f"{directions.shape[0]})")
        directions = np.broadcast_to(directions, points.shape)
    # One point with many directions stays one point: forward pushes it through once.
    hidden, output = _activations(mlp, order)
    _check_nonfinite_option(nonfinite)
    series = forward.directional_series(mlp.weights, mlp.biases, hidden, output, np.ascontiguousarray(points),
                                        np.ascontiguousarray(directions), order, dtype=dtype)
    if nonfinite == "raise":
        _refuse_nonfinite(series, "directional coefficient", lambda k: f"t^{k}")
    return series[0] if single_x and single_v else series


class DiagramContribution:
    """One diagram (tree, layer placement) and its contribution to a Taylor coefficient.

    Attributes:
        diagram: a feynmlp.codegen.diagrams.Diagram (tree with labelled leaves, a hidden layer
            for each vertex); leaf j stands for input `indices[j - 1]`.
        indices: the ordered input indices of the derivative d^k f / dx_i1 ... dx_ik.
        value: (n_out,) contribution to the coefficient d^alpha f / alpha! (the derivative
            contribution divided by alpha!).
    """

    def __init__(self, diagram, indices, value):
        self.diagram, self.indices, self.value = diagram, indices, value

    @property
    def vertex_valences(self) -> tuple[int, ...]:
        return tuple(node.valence for node in self.diagram.tree.internal_nodes)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.diagram.layers)

    def __repr__(self) -> str:
        return f"DiagramContribution({self.diagram}, value={np.array2string(self.value, precision=6)})"


def diagram_contributions(mlp: MLP, x, alpha) -> list[DiagramContribution]:
    """Every diagram of the coefficient d^alpha f(x) / alpha! with its value; they sum to it.

    alpha is a multi-index of exponents over the inputs (length n_in, |alpha| >= 1). The values
    come straight from propagators and vertices (DESIGN.md section 2), not from the kernels, so
    this is the interpretability view: which layers and vertex valences carry a coefficient.
    """
    from .diagram_values import diagram_values

    mlp = _check_mlp(mlp)
    point, single = _check_points(x, mlp.n_inputs)
    if not single:
        raise FeynmlpError(f"diagram_contributions takes one point of shape ({mlp.n_inputs},), got {np.shape(x)}")
    exponents = _integer_exponents(alpha)
    if exponents.shape != (mlp.n_inputs,) or np.any(exponents < 0) or exponents.sum() < 1:
        raise FeynmlpError(f"alpha must be {mlp.n_inputs} nonnegative exponents with |alpha| >= 1, got {alpha!r}")
    order = validate_order(int(exponents.sum()))
    from .codegen.diagrams import MAX_ENUMERATED_ORDER, count_trees  # pure Python, no SymPy

    if order > MAX_ENUMERATED_ORDER:
        # Refused before any kernel is generated for this order.
        raise ResourceLimitError(
            f"alpha {exponents.tolist()} has order {order}, whose {count_trees(order)} labelled trees are too "
            f"many to list one by one (the limit is order {MAX_ENUMERATED_ORDER}); the coefficient itself "
            "comes from feynmlp.taylor(..., wrt=[...]) or feynmlp.directional")
    hidden, output = _activations(mlp, order)
    indices = tuple(int(i) for i in np.repeat(np.arange(mlp.n_inputs), exponents))
    derivatives = [_raw_derivatives(activation, order) for activation in hidden]
    output_derivatives = _raw_derivatives(output, order) if output is not None else None
    scale = 1.0 / math.prod(math.factorial(int(a)) for a in exponents)
    values = diagram_values(mlp.weights, mlp.biases, derivatives, point[0], indices,
                            output_derivatives=output_derivatives)
    return [DiagramContribution(diagram, indices, value * scale) for diagram, value in values]


def _raw_derivatives(activation, order: int):
    """s^(m)(z) for m = 0..m_max (not divided by m!), from the generated kernel of `order`."""
    module = kernel_module(activation, order)

    def derivatives(z, m_max):
        z = np.asarray(z, dtype=np.float64)
        flat = np.ascontiguousarray(z.reshape(-1))
        out = np.empty((flat.size, order + 1))
        module.taylor_derivatives(flat, out)
        factorials = np.array([math.factorial(m) for m in range(order + 1)], dtype=np.float64)
        raw = (out * factorials)[:, : m_max + 1].T
        return raw.reshape((m_max + 1,) + z.shape)

    return derivatives
