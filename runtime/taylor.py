"""The user-facing expansions: `taylor`, `directional`, `diagram_contributions`.

In: an `MLP`, expansion points x ((n_in,) or (batch, n_in)), an order K, and optionally a subset
of input variables (`wrt`) or directions (`v`). Out: a `TaylorExpansion` (coefficients over
graded multi-indices, dense derivative tensors on request, evaluation, SymPy export), the
univariate series along directions, or the value of every diagram of one coefficient.
The inputs are validated here, once, with errors that name the bad value (the scheme's name
where it is picked, feynmlp.schemes); the numerics are in feynmlp.multivariate (the schemes),
feynmlp.directional and feynmlp.diagram_values (propagators and vertices).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from . import memory, multi_index
from .directional import directional_series
from .errors import FeynmlpError, ResourceLimitError
from .checks import (check_dtype, check_mlp, check_nonfinite_option, check_points, check_wrt, guard_division,
                     is_dask_array, real_array, refuse_nonfinite, supported_activations)
from .kernels import raw_derivatives, validate_order
from .mlp import MLP
from .multivariate import multivariate_series

# Working memory of one chunk of e(h) (the monomials of a group of displacements) and of one
# chunk of a dense tensor's copy: large enough that the per-chunk NumPy calls cost nothing next
# to the arithmetic, small enough to bound the temporaries (measured: chunks of 1 to 32 MiB give
# the same speed for 40 displacements in 60 variables at order 4, and for 100 000 in 3).
_EVALUATION_CHUNK_BYTES = 2 * 2**20
_TENSOR_CHUNK_BYTES = 8 * 2**20
# Entries of a dense tensor copied as one contiguous block (see _tensor_split): 4 KiB of float64.
_TENSOR_BLOCK = 512


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
        k = int(k)
        n = len(self.wrt)
        batch, n_out, _ = self._coefficients.shape
        rows, itemsize = batch * n_out, self.dtype.itemsize
        split, _ = self._tensor_plan(k)
        offsets, _, _ = multi_index.layout(n, self.order)
        # d^alpha f = alpha! * coefficient: scaled once per column, not once per entry.
        block = slice(int(offsets[k]), int(offsets[k + 1]))
        values = self._coefficients[:, :, block] * multi_index.factorials(n, self.order)[block].astype(self.dtype)
        values = values.reshape(rows, -1)
        # Entry [i1..ik] is values[column of the multiset {i1..ik}]. Adding one index to a
        # multiset is a table lookup (multi_index.insertions), so both the blocks of the last
        # axes (values[:, c] for every completion c of a multiset, degree by degree downward)
        # and the multiset of every prefix (i1..ij, degree by degree upward) take one gather
        # per degree; the tensor is then one gather of whole contiguous blocks.
        for degree in range(k, k - split, -1):
            lookup = multi_index.insertions(n, self.order, degree) - offsets[degree]  # (C(degree - 1), n)
            values = np.take(values, lookup, axis=1, mode="clip").reshape(rows, lookup.shape[0], -1)
        values = values.reshape(rows, -1, n**split)
        prefix = np.zeros(1, dtype=np.intp)
        for degree in range(1, k - split + 1):
            prefix = (multi_index.insertions(n, self.order, degree)[prefix] - offsets[degree]).reshape(-1)
        tensor = np.empty((rows, prefix.size, n**split), dtype=self.dtype)
        step = max(1, _TENSOR_CHUNK_BYTES // (rows * n**split * itemsize))
        for lo in range(0, prefix.size, step):
            hi = min(prefix.size, lo + step)
            if rows == 1:  # a contiguous destination: no temporary
                np.take(values[0], prefix[lo:hi], axis=0, out=tensor[0, lo:hi], mode="clip")
            else:
                tensor[:, lo:hi] = np.take(values, prefix[lo:hi], axis=1, mode="clip")
        tensor = tensor.reshape((batch, n_out) + (n,) * k)
        return tensor[0] if self._single else tensor

    def _tensor_plan(self, k: int) -> tuple[int, int]:
        """(trailing axes per copied block, estimated peak bytes) of derivative_tensor(k);
        ResourceLimitError if that exceeds the memory budget."""
        n = len(self.wrt)
        batch, n_out, _ = self._coefficients.shape
        rows, itemsize = batch * n_out, self.dtype.itemsize
        split = _tensor_split(n, k)
        # The tensor; the table of the last `split` axes per multiset of the first k - split
        # indices, and the column of every such index tuple (each with the generation it is
        # built from); the insertion tables of degrees 1..k (multi_index keeps them) and, while
        # the largest is built, its (multiset, variable) rows sorted and ranked (about 3k + 2
        # integers per row); and one chunk of the copy.
        table = rows * multi_index.count_of_order(n, k - split) * n**split * itemsize
        tensor_bytes = rows * n**k * itemsize
        insertions = 0 if k == 0 else 8 * n * (multi_index.count(n, k - 1)
                                               + (3 * k + 2) * multi_index.count_of_order(n, k - 1))
        size = (tensor_bytes + 2 * table + 2 * 8 * n ** (k - split) + insertions
                + min(_TENSOR_CHUNK_BYTES, tensor_bytes))
        if size > memory.budget():
            raise ResourceLimitError(
                f"the dense order-{k} tensor would take {size / 2**30:.1f} GiB (n^k = {n}^{k} entries per output "
                "and point); use .coefficients (unique entries only) or wrt= to restrict the variables")
        return split, size

    @property
    def gradient(self) -> np.ndarray:
        """(batch, n_out, n): first derivatives (the full propagator P(L,0) of the rules)."""
        return self.derivative_tensor(1)

    @property
    def hessian(self) -> np.ndarray:
        """(batch, n_out, n, n): second derivatives."""
        return self.derivative_tensor(2)

    def __call__(self, h) -> np.ndarray:
        """The Taylor polynomial at displacements h from the expansion point(s), in self.dtype.

        h has the width of the expanded variables (len(wrt)). For a single-point expansion h is
        (n,) -> (n_out,), or (..., n) -> (..., n_out) for many displacements; for a batch, h is
        (batch, n) -> (batch, n_out), one displacement per point. The monomials are built degree
        by degree (each is a monomial one degree lower times one variable: one gather-multiply
        per degree), for groups of displacements at a time, so memory stays O(M) per group.
        """
        n = len(self.wrt)
        h = real_array(h, "displacements h", self.dtype)
        if h.ndim == 0 or h.shape[-1] != n:
            raise FeynmlpError(f"displacements must have {n} components (the expanded variables), got shape {h.shape}")
        batch, n_out, columns = self._coefficients.shape
        if not self._single and h.shape != (batch, n):
            raise FeynmlpError(f"for a batch of {batch} points, h must have shape ({batch}, {n}), got {h.shape}")
        flat = h.reshape(-1, n)
        count = flat.shape[0]
        itemsize = self.dtype.itemsize
        group, _ = self._evaluation_plan(count)
        offsets, _, _ = multi_index.layout(n, self.order)
        parent, variable = multi_index.parents(n, self.order)
        result = np.empty((count, n_out), dtype=self.dtype)
        monomial_buffer = np.empty(columns * group, dtype=self.dtype)
        for lo in range(0, count, group):
            hi = min(count, lo + group)
            width = hi - lo
            powers = np.ascontiguousarray(flat[lo:hi].T)  # (n, width): one row per variable
            monomials = monomial_buffer[:columns * width].reshape(columns, width)
            monomials[0] = 1
            step = max(1, _EVALUATION_CHUNK_BYTES // (width * max(itemsize, 8)))
            for degree in range(1, self.order + 1):
                for a in range(int(offsets[degree]), int(offsets[degree + 1]), step):
                    b = min(int(offsets[degree + 1]), a + step)
                    # Reading only lower degrees (monomials[:a]) and mode="clip" spare np.take the
                    # buffer it makes for overlapping or bounds-checked output; the tables hold
                    # valid rows only.
                    np.take(monomials[:a], parent[a:b], axis=0, out=monomials[a:b], mode="clip")
                    monomials[a:b] *= np.take(powers, variable[a:b], axis=0, mode="clip")
            if self._single and n_out * width <= 32:
                # Few products of long vectors: NumPy's own loop. A BLAS call here would wake
                # its threads for about 0.5 ms of work; measured on a busy machine that cost
                # 5 ms per call, more than building the monomials.
                result[lo:hi] = np.einsum("om,mw->wo", self._coefficients[0], monomials)
            elif self._single:
                result[lo:hi] = (self._coefficients[0] @ monomials).T
            else:
                result[lo:hi] = np.einsum("bom,mb->bo", self._coefficients[lo:hi], monomials)
        return result.reshape(h.shape[:-1] + (n_out,))

    def _evaluation_plan(self, count: int) -> tuple[int, int]:
        """(displacements per group, estimated peak bytes) of evaluating at `count`
        displacements; ResourceLimitError if even one displacement's monomials do not fit."""
        n = len(self.wrt)
        _, n_out, columns = self._coefficients.shape
        itemsize = self.dtype.itemsize
        per_displacement = columns * itemsize  # its monomials
        # The result, the index tables (the layout's sorted tuples, the parent/variable tables:
        # order + 3 integers per column) and the slices of the multiplication (the factors and
        # np.take's copy of a read-only index slice: at most one chunk each, and at most 8 bytes
        # per column of the top degree and displacement), all counted before any is built.
        slices = min(2 * _EVALUATION_CHUNK_BYTES, 16 * multi_index.count_of_order(n, self.order) * count)
        fixed = count * n_out * itemsize + 8 * (self.order + 3) * columns + slices
        budget = memory.budget()
        if fixed + per_displacement > budget:
            raise ResourceLimitError(
                f"evaluating the order-{self.order} polynomial in {n} variables at {count} displacement(s) needs at "
                f"least {memory.size_text(fixed + per_displacement)} ({columns} monomials per displacement, {n_out} "
                f"output(s)), more than the {memory.size_text(budget)} allowed; evaluate fewer displacements per call, "
                "restrict the variables with wrt=[...] or lower the order (set FEYNMLP_MAX_MEMORY_GB to change "
                "the limit)")
        group = int(max(1, min(count, min(_EVALUATION_CHUNK_BYTES, budget - fixed) // per_displacement)))
        return group, fixed + group * per_displacement

    def to_sympy(self, symbols=None):
        """The Taylor polynomials as SymPy expressions in the displacements h_i (one per output).

        symbols: one SymPy symbol per expanded variable, in the order of `wrt`; or their names,
        as one string in any form sympy.symbols reads ("a b c", "a, b, c", "a:c") or a list of
        strings. Default: h<i> for input i. For a batch, a list (one entry per point) of lists.
        """
        import sympy as sp

        symbols = _sympy_symbols(symbols, self.wrt)
        n = len(self.wrt)
        _, _, padded = multi_index.layout(n, self.order)
        # A sorted variable tuple repeats a variable once per power; the sentinel n pads it.
        monomials = [sp.Mul(*(symbols[v] for v in row if v < n)) for row in padded.tolist()]
        polynomials = [[sp.Add(*(sp.Float(float(c), 17) * m for c, m in zip(row, monomials) if c != 0))
                        for row in point] for point in self._coefficients]
        return polynomials[0] if self._single else polynomials

    def __repr__(self) -> str:
        return (f"TaylorExpansion(order={self.order}, points={1 if self._single else self._coefficients.shape[0]}, "
                f"outputs={self._coefficients.shape[1]}, variables={len(self.wrt)}, "
                f"coefficients={self._coefficients.shape[2]} per output)")


# ----------------------------------------------------------------------------- validation

def _tensor_split(n: int, k: int) -> int:
    """How many trailing axes of a dense order-k tensor go into each copied block: blocks of at
    least _TENSOR_BLOCK entries (copied whole, not entry by entry) while the table of blocks,
    one per multiset of the leading indices, stays within a quarter of the tensor."""
    split = 0
    while (split < k and n**split < _TENSOR_BLOCK
           and 4 * multi_index.count_of_order(n, k - split - 1) * n ** (split + 1) <= n**k):
        split += 1
    return split


def _sympy_symbols(symbols, wrt: tuple[int, ...]) -> list:
    """One distinct SymPy symbol per expanded variable, from what to_sympy was given."""
    import sympy as sp

    if symbols is None:
        return [sp.Symbol(f"h{i}") for i in wrt]
    given = symbols
    if isinstance(symbols, str):
        try:
            symbols = list(sp.symbols(symbols, seq=True))
        except (TypeError, ValueError) as exc:
            raise FeynmlpError(f"symbols {given!r} cannot be read as names ({exc}); give names such as "
                               "'a b c'") from None
    elif isinstance(symbols, sp.Basic):
        symbols = [symbols]
    else:
        try:
            symbols = [sp.Symbol(s) if isinstance(s, str) else s for s in symbols]
        except TypeError:
            raise FeynmlpError(f"symbols must be a list of SymPy symbols or a string of names, got the "
                               f"{type(given).__name__} {given!r}") from None
    for position, symbol in enumerate(symbols):
        if not (isinstance(symbol, sp.Basic) and getattr(symbol, "is_symbol", False)):
            raise FeynmlpError(f"symbols must be SymPy symbols or their names; entry {position} is the "
                               f"{type(symbol).__name__} {symbol!r}")
    if len(symbols) != len(wrt):
        raise FeynmlpError(f"to_sympy needs {len(wrt)} symbols, one per expanded variable (inputs {list(wrt)}), "
                           f"got {len(symbols)}: {', '.join(str(s) for s in symbols) or 'none'}")
    repeated = sorted({str(s) for s in symbols if symbols.count(s) > 1})
    if repeated:
        raise FeynmlpError(f"symbols holds the repeated symbol(s) {', '.join(repeated)}; each variable needs its own")
    return symbols


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


# ----------------------------------------------------------------------------- public API

def taylor(mlp: MLP, x, order: int, wrt=None, dtype=np.float64, scheme: str = "auto",
           nonfinite: str = "raise", indices=None) -> TaylorExpansion:
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
        indices: a list of multi-indices (tuples of n_in exponents, each |alpha| <= order) to
            compute instead of all of them; only those below them are pushed through the
            network (feynmlp.operator_terms).

    Returns:
        a TaylorExpansion; `.coefficients` has shape (batch, n_out, M) (or (n_out, M) for one
        point) with M = C(n + K, K), n = len(wrt). With indices, a feynmlp.SparseExpansion
        whose `.coefficients` has one column per listed multi-index, in the order given. For a
        dask array x, a lazy one (feynmlp.distributed.DaskTaylorExpansion) whose arrays are
        dask arrays.
    """
    if is_dask_array(x):
        if indices is not None:
            raise FeynmlpError("indices= is not available for dask arrays of points; compute the points "
                               "(x.compute()) or expand all coefficients of the dask array")
        from . import distributed
        return distributed.taylor(mlp, x, order, wrt, dtype, scheme, nonfinite)
    mlp = check_mlp(mlp)
    order = validate_order(order)
    if indices is not None:
        if wrt is not None or scheme != "auto":
            raise FeynmlpError("indices= names the multi-indices themselves; drop wrt= and scheme= when using it")
        from .operator_terms import sparse_taylor

        return sparse_taylor(mlp, x, order, indices, dtype=dtype, nonfinite=nonfinite)
    dtype = check_dtype(dtype)
    points, single = check_points(x, mlp.n_inputs, dtype=dtype)
    variables = check_wrt(wrt, mlp.n_inputs)
    hidden, output = supported_activations(mlp, order)
    check_nonfinite_option(nonfinite)
    # The scheme's name is checked, against the network too, where it is picked (feynmlp.schemes).
    coefficients = guard_division(
        lambda: multivariate_series(mlp.weights, mlp.biases, hidden, output, points, order,
                                            wrt=np.array(variables), dtype=dtype, scheme=scheme),
        mlp, points, order, dtype)
    if nonfinite == "raise":
        refuse_nonfinite(coefficients, "coefficient", lambda c: f"multi-index column {c}", mlp, points, order, dtype)
    return TaylorExpansion(coefficients, points, order, variables, mlp.n_inputs, single)


def directional(mlp: MLP, x, v, order: int, dtype=np.float64, nonfinite: str = "raise") -> np.ndarray:
    """Coefficients of t -> f(x + t v) up to t^order (univariate Taylor mode).

    x and v are (n_in,) or (batch, n_in) and broadcast against each other. Returns
    (batch, n_out, order + 1), or (n_out, order + 1) when both are single vectors. For the Born
    series, the k-th Born term of a potential U is directional(mlp, 0, U, K)[..., k]. If x or v
    is a dask array, the result is a lazy dask array (feynmlp.distributed).
    """
    if is_dask_array(x) or is_dask_array(v):
        from . import distributed
        return distributed.directional(mlp, x, v, order, dtype, nonfinite)
    mlp = check_mlp(mlp)
    order = validate_order(order)
    dtype = check_dtype(dtype)
    points, single_x = check_points(x, mlp.n_inputs, "x", dtype)
    directions, single_v = check_points(v, mlp.n_inputs, "v", dtype)
    if points.shape[0] != directions.shape[0] and points.shape[0] != 1:
        if directions.shape[0] != 1:
            raise FeynmlpError(f"x and v hold different numbers of points ({points.shape[0]} and "
                               f"{directions.shape[0]})")
        directions = np.broadcast_to(directions, points.shape)
    # One point with many directions stays one point: forward pushes it through once.
    hidden, output = supported_activations(mlp, order)
    check_nonfinite_option(nonfinite)
    series = guard_division(
        lambda: directional_series(mlp.weights, mlp.biases, hidden, output, np.ascontiguousarray(points),
                                           np.ascontiguousarray(directions), order, dtype=dtype),
        mlp, points, order, dtype)
    if nonfinite == "raise":
        refuse_nonfinite(series, "directional coefficient", lambda k: f"t^{k}", mlp, points, order, dtype)
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
    come straight from propagators and vertices (docs/mathematics.md), not from the kernels, so
    this is the interpretability view: which layers and vertex valences carry a coefficient.
    """
    from .diagram_values import diagram_values

    mlp = check_mlp(mlp)
    point, single = check_points(x, mlp.n_inputs)
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
    hidden, output = supported_activations(mlp, order)
    indices = tuple(int(i) for i in np.repeat(np.arange(mlp.n_inputs), exponents))
    derivatives = [raw_derivatives(activation, order) for activation in hidden]
    output_derivatives = raw_derivatives(output, order) if output is not None else None
    scale = 1.0 / math.prod(math.factorial(int(a)) for a in exponents)
    values = guard_division(
        lambda: diagram_values(mlp.weights, mlp.biases, derivatives, point[0], indices,
                               output_derivatives=output_derivatives),
        mlp, point, order, np.float64)
    return [DiagramContribution(diagram, indices, value * scale) for diagram, value in values]

