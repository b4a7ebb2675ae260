"""Any linear differential operator of an MLP, and sparse requests of Taylor coefficients.

In: an `MLP`, points x ((n_in,) or (batch, n_in)), and either `terms` ({multi-index: coefficient},
or a SymPy linear combination of Derivatives of one function of the inputs) or a list of
multi-indices. Out: `operator`: sum_alpha c_alpha d^alpha f, (batch, n_out) or (n_out,);
`sparse_taylor`: the coefficients d^alpha f / alpha! of the listed multi-indices only;
`divergence`: sum_i df_i/dx_i of a network with as many outputs as inputs.

Why it is exact without computing every coefficient: the coefficient of h^gamma in s(p(h))
(Faa di Bruno) reads only coefficients p_alpha with alpha <= gamma componentwise, since products
of monomials add exponents. So a set S of multi-indices that holds every alpha' <= alpha for
each of its alpha (downward closed) can be pushed through the layers alone, and every gamma in
S comes out exact. S here is the closure of the requested multi-indices over the inputs they
differentiate; the generated Taylor kernel of the operator's order (compose_multivariate, shipped
or generated into the kernel cache like any order) runs over vertex tables built for S.
"""
from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping

import numpy as np

from . import checks, memory, multi_index, push, taylor as _taylor, threads
from .errors import FeynmlpError, ResourceLimitError
from .kernels import MAX_ORDER, is_sympy_expression, resolve_kernels
from .mlp import MLP

# The series of one block of points a thread takes through all layers at a time: long enough
# matrix products, small enough to stay in the caches.
_BLOCK_BYTES = 2**20
# Above this many multi-indices in S the tables of the vertex sums are refused: they grow
# like |S|^m for valence m, and a request that large is better served by feynmlp.taylor.
_MAX_SUBSET = 200_000


# ----------------------------------------------------------------------------- validation

def check_terms(terms, n_inputs: int) -> dict[tuple[int, ...], float]:
    """terms as {multi-index tuple: float}; FeynmlpError naming the first bad term."""
    if is_sympy_expression(terms):
        from .codegen.operator_expression import terms_from_expression

        terms = terms_from_expression(terms, n_inputs)
    if not isinstance(terms, Mapping):
        raise FeynmlpError(f"terms must be a dict {{multi-index tuple: coefficient}} or a SymPy expression, got "
                           f"{type(terms).__name__}")
    if not terms:
        raise FeynmlpError("terms is empty; give at least one {multi-index: coefficient}, e.g. "
                           f"{{{tuple([2] + [0] * (n_inputs - 1))}: 1.0}}")
    checked: dict[tuple[int, ...], float] = {}
    for key, coefficient in terms.items():
        alpha = check_multi_index(key, n_inputs, f"term {key!r}")
        if isinstance(coefficient, bool) or not isinstance(coefficient, numbers.Real):
            raise FeynmlpError(f"term {key!r}: the coefficient must be a real number, got {coefficient!r}")
        if not math.isfinite(float(coefficient)):
            raise FeynmlpError(f"term {key!r}: the coefficient {coefficient!r} is not finite")
        checked[alpha] = checked.get(alpha, 0.0) + float(coefficient)
    return checked


def check_multi_index(key, n_inputs: int, what: str) -> tuple[int, ...]:
    """key as a tuple of n_inputs non-negative ints with sum <= MAX_ORDER, else FeynmlpError."""
    if isinstance(key, (str, bytes)) or not isinstance(key, (tuple, list, np.ndarray)):
        raise FeynmlpError(f"{what}: a multi-index must be a tuple of {n_inputs} non-negative integers, got "
                           f"{type(key).__name__}")
    entries = list(key)
    if len(entries) != n_inputs:
        raise FeynmlpError(f"{what}: the multi-index has {len(entries)} entries, the network has {n_inputs} inputs")
    for entry in entries:
        if isinstance(entry, (bool, np.bool_)) or not isinstance(entry, (numbers.Integral, np.integer)):
            raise FeynmlpError(f"{what}: the multi-index entries must be integers, got {entry!r}")
        if entry < 0:
            raise FeynmlpError(f"{what}: the multi-index has the negative entry {entry}")
    alpha = tuple(int(e) for e in entries)
    if sum(alpha) > MAX_ORDER:
        raise FeynmlpError(f"{what}: the derivative has order {sum(alpha)}, above the largest supported order "
                           f"{MAX_ORDER}")
    return alpha


# ----------------------------------------------------------------------------- the set S

class Subset:
    """A downward-closed set S of multi-indices over some inputs, graded, and its vertex tables.

    Attributes: variables (input indices), order K (largest |alpha|), exponents (|S|, n_v) in
    graded-lexicographic order (row 0 the zero index, rows 1..n_v the first-order ones),
    column(alpha) its row, tables (table2, weight2, ..., tableK, weightK) for
    compose_multivariate: every multiset of m nonzero members whose sum is a member.
    """

    def __init__(self, requested: list[tuple[int, ...]], n_inputs: int):
        used = sorted({i for alpha in requested for i in range(n_inputs) if alpha[i] > 0})
        self.variables = np.array(used, dtype=np.int64)
        self.order = max(1, max(sum(alpha) for alpha in requested))
        restricted = [tuple(alpha[i] for i in used) for alpha in requested]
        # Counted before the closure is built: each term alone has prod(alpha_i + 1) below it.
        if sum(math.prod(a + 1 for a in alpha) for alpha in restricted) > 4 * _MAX_SUBSET:
            raise ResourceLimitError(f"the operator needs more than {_MAX_SUBSET} multi-indices (all those below "
                                     "its terms); use feynmlp.taylor for every coefficient up to its order")
        closure = set()
        for alpha in restricted:
            closure.update(itertools.product(*(range(a + 1) for a in alpha)))
        if len(closure) > _MAX_SUBSET:
            raise ResourceLimitError(f"the operator needs {len(closure)} multi-indices (all those below its terms), "
                                     f"more than {_MAX_SUBSET}; use feynmlp.taylor for every coefficient up to its "
                                     "order")
        n_v, order = len(used), self.order
        ordered = sorted(closure, key=lambda e: (sum(e), _sorted_tuple(e)))
        rows = np.array(ordered, dtype=np.int64).reshape(len(ordered), n_v)
        self.exponents = rows
        self.degrees = rows.sum(axis=1)
        self.padded = np.full((rows.shape[0], order), n_v, dtype=np.int64)
        for r, e in enumerate(rows):
            t = _sorted_tuple(e)
            self.padded[r, :len(t)] = t
        # With no variable (only f itself requested) S is the zero index alone, and no table.
        self.ranks = (multi_index._columns_of_tuples(n_v, order, self.padded, self.degrees) if n_v
                      else np.zeros(1, dtype=np.int64))
        self._index = {tuple(e): r for r, e in enumerate(rows.tolist())}
        self.tables = self._tables()

    def __len__(self) -> int:
        return self.exponents.shape[0]

    def column(self, alpha: tuple[int, ...]) -> int:
        return self._index[tuple(alpha[i] for i in self.variables)]

    def _lookup(self, merged: np.ndarray, degrees: np.ndarray) -> np.ndarray:
        """Row in S of each merged tuple, or -1."""
        if merged.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        ranks = multi_index._columns_of_tuples(len(self.variables), self.order, merged, degrees)
        where = np.minimum(np.searchsorted(self.ranks, ranks), len(self) - 1)
        return np.where(self.ranks[where] == ranks, where, -1)

    def _tables(self) -> tuple[np.ndarray, ...]:
        order = self.order
        end_of_degree = np.searchsorted(self.degrees, np.arange(order + 1), side="right")
        result = []
        for m in range(2, order + 1):
            members = np.arange(1, end_of_degree[max(0, order - (m - 1))], dtype=np.int64)[:, None]
            merged, total = self.padded[members[:, 0]], self.degrees[members[:, 0]]
            for j in range(1, m):
                remaining = m - 1 - j
                cap = np.maximum(order - total - remaining, 0)
                stop = end_of_degree[cap]
                last = members[:, -1]
                counts = np.maximum(stop - last, 0)
                # The candidate rows, their merged tuples and the sort's copies, before they exist.
                needed = int(counts.sum()) * 8 * (2 * (j + 1) + 3 * order + 4) + self._kept_bytes(result)
                if needed > memory.budget():
                    raise ResourceLimitError(
                        f"the vertex tables of this operator (order {order}, {len(self)} multi-indices below its "
                        f"terms) need more than {memory.size_text(needed)} while they are built, above the "
                        f"{memory.size_text(memory.budget())} allowed; split the operator into terms of lower order "
                        "or fewer mixed inputs (set FEYNMLP_MAX_MEMORY_GB to change the limit)")
                parent = np.repeat(np.arange(members.shape[0]), counts)
                starts = np.cumsum(counts) - counts
                appended = np.arange(parent.size, dtype=np.int64) - np.repeat(starts, counts) + last[parent]
                merged = multi_index.sorted_rows(np.concatenate([merged[parent], self.padded[appended]], axis=1))
                merged = merged[:, :order]
                total = total[parent] + self.degrees[appended]
                found = self._lookup(merged, total)
                keep = found >= 0  # a partial sum outside S has no completion inside S
                members = np.concatenate([members[parent], appended[:, None]], axis=1)[keep]
                merged, total = merged[keep], total[keep]
                targets = found[keep]
            weights = multi_index._distinct_orderings(members)
            table = np.ascontiguousarray(np.concatenate([targets[:, None], members], axis=1))
            result += [table, weights]
        return tuple(result)

    @staticmethod
    def _kept_bytes(tables) -> int:
        return sum(t.nbytes for t in tables)

    def table_bytes(self) -> int:
        return sum(t.nbytes for t in self.tables)


def _sorted_tuple(exponents) -> tuple[int, ...]:
    return tuple(i for i, e in enumerate(exponents) for _ in range(int(e)))


# ----------------------------------------------------------------------------- the push

def subset_series(weights, biases, hidden_activations, output_activation, points, subset: Subset,
                  dtype=np.float64) -> np.ndarray:
    """(batch, n_out, |S|): the Taylor coefficients d^alpha f / alpha! of every alpha in S."""
    points = np.asarray(points, dtype=dtype)
    batch = points.shape[0]
    widths = [w.shape[0] for w in weights]
    columns, order, itemsize = len(subset), subset.order, np.dtype(dtype).itemsize
    block = int(max(1, min(batch, _BLOCK_BYTES // (max(widths) * columns * itemsize))))
    # Per thread and point of a block: two series, the composed series, the derivatives (as
    # computed and transposed) and the values of the widest layer.
    working = threads.count() * block * max(widths) * (3 * columns + 2 * (order + 1) + 1) * itemsize
    memory.check(batch * widths[-1] * columns * itemsize, itemsize, subset.table_bytes(), working,
                 f"an operator of order {order} over {columns} multi-indices for {batch} point(s)",
                 "use fewer points per call", f"{columns} multi-indices per output and point, ")
    kernels = resolve_kernels(hidden_activations, output_activation, order)
    weights = [np.asarray(w, dtype=dtype) for w in weights]
    biases = [np.asarray(b, dtype=dtype) for b in biases]
    variables = subset.variables
    result = np.empty((batch, widths[-1], columns), dtype=dtype)

    def push_blocks(lo, hi):
        for start in range(lo, hi, block):
            push_block(start, min(hi, start + block))

    def push_block(lo, hi):
        series, _ = push.push(weights, biases, kernels, points[lo:hi], order, variables, dtype, subset=subset)
        result[lo:hi] = series.transpose(0, 2, 1)

    with threads.single_blas_thread():
        threads.run_blocks(push_blocks, (), batch)
    return result


# ----------------------------------------------------------------------------- public API

def operator(mlp: MLP, x, terms, dtype=np.float64, nonfinite: str = "raise") -> np.ndarray:
    """sum_alpha c_alpha d^alpha f at each point, for terms {alpha: c_alpha}.

    Args:
        mlp: the network.
        x: point (n_in,) or points (batch, n_in).
        terms: {multi-index tuple of length n_in: real coefficient}, e.g. for u(t, x, y)
            u_t + u_xx + u_yy: {(1, 0, 0): 1.0, (0, 2, 0): 1.0, (0, 0, 2): 1.0}; or a SymPy
            expression, a linear combination of Derivatives of one function of n_in symbols,
            e.g. Derivative(u(t, x, y), t) + Derivative(u(t, x, y), (x, 2)) + ... (read as an
            expression tree, never evaluated as text). The zero multi-index stands for f itself.
        dtype, nonfinite: as in feynmlp.taylor.

    Returns:
        (batch, n_out), or (n_out,) for a single point: derivatives, not Taylor coefficients.
        For a dask array x, a lazy dask array (feynmlp.distributed).
    """
    if checks.is_dask_array(x):
        from . import distributed

        return distributed.operator("operator", mlp, x, dtype, nonfinite, terms=terms)
    mlp = checks.check_mlp(mlp)
    checked = check_terms(terms, mlp.n_inputs)
    dtype = checks.check_dtype(dtype)
    points, single = checks.check_points(x, mlp.n_inputs, dtype=dtype)
    checks.check_nonfinite_option(nonfinite)
    if max(sum(alpha) for alpha in checked) == 2:  # order 1 (ReLU networks too) stays on the general path
        values = _second_order(mlp, points, checked, dtype, nonfinite)
        return values[0] if single else values
    subset = Subset(list(checked), mlp.n_inputs)
    coefficients = _subset_coefficients(mlp, points, subset, dtype, nonfinite)
    columns = np.array([subset.column(alpha) for alpha in checked], dtype=np.intp)
    scale = np.array([c * math.prod(math.factorial(a) for a in alpha) for alpha, c in checked.items()],
                     dtype=np.float64)
    values = (coefficients[:, :, columns].astype(np.float64) @ scale).astype(dtype)
    return values[0] if single else values


def _second_order(mlp: MLP, points, terms: dict, dtype, nonfinite: str) -> np.ndarray:
    """c f + b.grad f + sum_ij A_ij d2f/dx_i dx_j by the Laplacian's collapsed rules.

    With A = sum_k lambda_k v_k v_k^T (symmetric; its eigenvectors, or the unit vectors when it
    is diagonal), sum_ij A_ij d_ij f = sum_k lambda_k d2f/dv_k^2: the weighted Laplacian along
    the directions v_k, which the Laplacian's kernel carries. The first-order part b.grad f
    starts in the operator's own row (feynmlp.operators.carried_operator says why
    that is exact). Cost: the Laplacian's, with one carried row per direction v_k.
    """
    from .operators import evaluate

    n = mlp.n_inputs
    A, b, c = np.zeros((n, n)), np.zeros(n), 0.0
    for alpha, coefficient in terms.items():
        used = [i for i, a in enumerate(alpha) for _ in range(a)]
        if not used:
            c += coefficient
        elif len(used) == 1:
            b[used[0]] += coefficient
        else:
            i, j = used
            A[i, j] += coefficient / 2
            A[j, i] += coefficient / 2
    if np.count_nonzero(A - np.diag(np.diag(A))) == 0:
        on = np.flatnonzero(np.diag(A))
        directions, sums = on, np.diag(A)[on]  # the input variables themselves
    else:
        eigenvalues, vectors = np.linalg.eigh(A)
        on = np.flatnonzero(np.abs(eigenvalues) > 1e-14 * np.max(np.abs(eigenvalues)))
        directions, sums = vectors[:, on].T, eigenvalues[on]
    carried = evaluate("laplacian", mlp, points, directions, sums, b if np.any(b) else None, dtype, nonfinite)
    values = carried[:, -1, :] + c * carried[:, 0, :]
    return values.astype(dtype, copy=False)


def sparse_taylor(mlp: MLP, x, order: int, indices, dtype=np.float64, nonfinite: str = "raise") -> "SparseExpansion":
    """The coefficients d^alpha f / alpha! of the listed multi-indices only (|alpha| <= order)."""
    mlp = checks.check_mlp(mlp)
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise FeynmlpError(f"indices must be a list of multi-indices, got {type(indices).__name__}")
    listed = [check_multi_index(alpha, mlp.n_inputs, f"index {_short(alpha)}") for alpha in indices]
    if not listed:
        raise FeynmlpError("indices is empty; list at least one multi-index")
    for alpha in listed:
        if sum(alpha) > order:
            raise FeynmlpError(f"index {alpha} has order {sum(alpha)}, above the requested order {order}")
    dtype = checks.check_dtype(dtype)
    points, single = checks.check_points(x, mlp.n_inputs, dtype=dtype)
    checks.check_nonfinite_option(nonfinite)
    subset = Subset(listed, mlp.n_inputs)
    coefficients = _subset_coefficients(mlp, points, subset, dtype, nonfinite)
    columns = np.array([subset.column(alpha) for alpha in listed], dtype=np.intp)
    return SparseExpansion(np.ascontiguousarray(coefficients[:, :, columns]), np.array(listed, dtype=np.int64),
                           order, points, single)


def divergence(mlp: MLP, x, dtype=np.float64, nonfinite: str = "raise") -> np.ndarray:
    """sum_i df_i/dx_i of a vector field (n_out == n_in): (batch,), or a 0-d array for one point."""
    mlp = checks.check_mlp(mlp)
    if mlp.n_outputs != mlp.n_inputs:
        raise FeynmlpError(f"the divergence needs as many outputs as inputs; this network maps {mlp.n_inputs} "
                           f"inputs to {mlp.n_outputs} outputs")
    gradient = _taylor.taylor(mlp, x, 1, dtype=dtype, nonfinite=nonfinite).gradient
    return np.trace(gradient, axis1=-2, axis2=-1)


def _subset_coefficients(mlp: MLP, points, subset: Subset, dtype, nonfinite: str) -> np.ndarray:
    order = subset.order
    hidden, output = checks.supported_activations(mlp, order)
    coefficients = checks.guard_division(
        lambda: subset_series(mlp.weights, mlp.biases, hidden, output, points, subset, dtype),
        mlp, points, order, dtype)
    if nonfinite == "raise":
        checks.refuse_nonfinite(coefficients, "coefficient",
                                lambda c: f"multi-index {subset.exponents[c].tolist()} over inputs "
                                          f"{subset.variables.tolist()}", mlp, points, order, dtype)
    return coefficients


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class SparseExpansion:
    """Taylor coefficients of the listed multi-indices only.

    Attributes:
        multi_indices: (M, n_in) the listed alpha, in the order given.
        coefficients: (batch, n_out, M), or (n_out, M) for a single point: d^alpha f / alpha!.
        order, point.
    """

    def __init__(self, coefficients, multi_indices, order, points, single):
        self._coefficients = coefficients
        self._single = single
        self.multi_indices = multi_indices
        self.order = order
        self.point = points[0] if single else points

    @property
    def coefficients(self) -> np.ndarray:
        return self._coefficients[0] if self._single else self._coefficients

    def coefficient(self, alpha) -> np.ndarray:
        """The coefficients d^alpha f / alpha! of one listed multi-index."""
        alpha = np.asarray(alpha)
        hits = []
        if alpha.shape == self.multi_indices.shape[1:]:
            hits = np.flatnonzero((self.multi_indices == alpha).all(axis=1))
        if len(hits) == 0:
            raise FeynmlpError(f"alpha {alpha.tolist()} is not among the requested indices")
        return self.coefficients[..., int(hits[0])]
