"""Pushing truncated Taylor series forward through an MLP with the generated kernels.

In: weights W(l) (n_l, n_{l-1}), biases, one activation per hidden layer (and optionally an
output activation), expansion points, the order K, and either a subset of input variables
(multivariate mode) or directions (univariate mode). Out: the Taylor coefficients of every
output, (batch, n_out, M) over the graded multi-indices of feynmlp.multi_index, or
(batch, n_out, K+1) along each direction.

Each layer is one affine map applied to all coefficients at once (a single matrix product
with the points and coefficients stacked into its long dimension, where BLAS is fast) and
one vertex layer (the generated kernel composing the activation's Taylor series with the
incoming one: DESIGN.md section 2, "resummed layer by layer").
"""
from __future__ import annotations

import os

import numpy as np

from . import multi_index, threads, workspace
from .errors import ResourceLimitError
from .kernels import call_kernel, kernel_module


# Per-layer series arrays of one block of points stay below this many bytes: the matrix
# products stay long (points x coefficients) while memory stays bounded.
_CHUNK_BYTES = 128 * 2**20


def memory_budget() -> int:
    """Bytes one expansion may allocate: FEYNMLP_MAX_MEMORY_GB, else 80 % of physical memory."""
    configured = os.environ.get("FEYNMLP_MAX_MEMORY_GB")
    if configured:
        return int(float(configured) * 2**30)
    try:
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _check_memory(widths, batch: int, columns: int, itemsize: int, order: int, n_vars: int, what: str,
                  tables: int = 0) -> None:
    """Refuse, before allocating anything, a request that would not fit in the memory budget.

    Counts the result, two layer-sized series of one block of points, and the vertex index
    tables (which depend only on the number of variables and the order).
    """
    per_point = max(widths) * columns * itemsize
    block = min(batch, max(1, _CHUNK_BYTES // max(per_point, 1)))
    needed = widths[-1] * batch * columns * itemsize + 2 * block * per_point + tables
    budget = memory_budget()
    if needed > budget:
        raise ResourceLimitError(
            f"{what} of order {order} in {n_vars} variables for {batch} point(s) needs about "
            f"{_size(needed)} ({columns} coefficients per output and point, widest layer {max(widths)}"
            + (f", vertex tables {_size(tables)}" if tables >= 2**20 else "") + f"), more than the {_size(budget)} "
            "allowed; restrict the variables with wrt=[...], use fewer points per call, or use "
            "feynmlp.directional for the series along chosen directions (set FEYNMLP_MAX_MEMORY_GB "
            "to change the limit)")


SCHEMES = ("auto", "forward", "top-vertex")


def choose_scheme(n_outputs: int, order: int, has_output_activation: bool, n_vars: int) -> str:
    """Forward-only for an output activation, order 1 or many outputs; else the topmost vertex.

    The top-vertex scheme pushes only orders <= K-2 forward and contracts the top orders with
    the output propagators, once per output; pushing everything forward costs about the same
    for any number of outputs but grows much faster with K. Measured on 32 -> 64 -> 64 -> m
    (tanh, 256 points): at K = 2 (feynmlp.hessian, two cores) the top-vertex scheme was faster
    up to m = 64 (7x at m = 4, 1.6x at m = 32, 1.1x at m = 64); at K = 3 (one core) up to
    m = 16 (2.2x at m = 8). The bound for K >= 3 stays on the safe side as K grows.
    """
    if order < 2 or has_output_activation or n_vars < 2:
        return "forward"
    limit = 64 if order == 2 else max(4, 16 // (order - 1))
    return "top-vertex" if n_outputs <= limit else "forward"


def multivariate_series(weights, biases, hidden_activations, output_activation, points, order: int,
                        wrt=None, dtype=np.float64, scheme: str = "auto") -> np.ndarray:
    """Taylor coefficients d^alpha f / alpha! at each point, all |alpha| <= order.

    Args:
        weights, biases: per layer, W (n_l, n_{l-1}) and b (n_l,).
        hidden_activations: one activation (name or SymPy expression) per hidden layer.
        output_activation: None, or an activation applied to the last affine map.
        points: (batch, n_in) expansion points.
        order: K >= 1.
        wrt: indices of the input variables to expand in (default: all); the others are held
            fixed at the point.
        dtype: float64 or float32 for all arithmetic.
        scheme: "forward" (push every coefficient through every layer), "top-vertex" (push
            orders < K, then contract the order-K vertices with the output propagators), or
            "auto" (chosen by shape, see choose_scheme).

    Returns:
        (batch, n_out, M) with M = C(len(wrt) + K, K), columns in feynmlp.multi_index order.
    """
    points = np.asarray(points, dtype=dtype)
    batch = points.shape[0]
    variables = np.arange(points.shape[1]) if wrt is None else np.asarray(wrt, dtype=np.int64)
    n_vars = variables.size
    columns = multi_index.count(n_vars, order)
    widths = [w.shape[0] for w in weights]
    if scheme == "auto":
        scheme = choose_scheme(widths[-1], order, output_activation is not None, n_vars)
    if scheme == "top-vertex" and (order < 2 or len(weights) < 2):
        scheme = "forward"  # no vertex (order 1, or no hidden layer): both schemes are the same pass
    if scheme not in SCHEMES[1:] or (scheme == "top-vertex" and output_activation is not None):
        raise ValueError(f"scheme {scheme!r} does not apply here; use one of {SCHEMES}")
    if scheme == "forward":
        pushed, tables = order, multi_index.vertex_table_bytes(n_vars, order)
    elif order == 2:
        from . import hessian

        pushed = 1
        tables = hessian.workspace_bytes(n_vars, widths, batch, np.dtype(dtype).itemsize)
    else:
        from . import top_vertex

        pushed = top_vertex.pushed_order(order)
        tables = (multi_index.vertex_table_bytes(n_vars, order - 1) + top_vertex.plan_bytes(n_vars, order)
                  + top_vertex.workspace_bytes(n_vars, order, sum(widths[:-1]), widths[-1], np.dtype(dtype).itemsize))
    _check_memory(widths, batch, columns, np.dtype(dtype).itemsize, order, n_vars, "a multivariate expansion",
                  tables=tables)
    # Points per block: the largest per-layer series stays under _CHUNK_BYTES; for top-vertex,
    # all hidden layers side by side under half of it (each thread holds three more series of
    # one layer besides, and the contraction's output).
    neurons = max(widths) if scheme == "forward" else 2 * sum(widths[:-1])
    per_point = neurons * multi_index.count(n_vars, pushed) * np.dtype(dtype).itemsize
    chunk = int(max(1, min(batch, _CHUNK_BYTES // per_point)))
    result = np.empty((batch, widths[-1], columns), dtype=dtype)
    if scheme == "top-vertex" and order > 2:
        top_vertex.plan(n_vars, order)  # built once here, not by each thread

    def expand(lo, hi):
        # Points are independent: each thread pushes its own block through every layer.
        if scheme == "forward":
            series, _ = _push(weights, biases, hidden_activations, output_activation, points[lo:hi], order, variables,
                              dtype)
            result[lo:hi] = series.transpose(0, 2, 1)
        elif order == 2:
            hessian.expand(weights, biases, hidden_activations, points, variables, dtype, result, lo, hi)
        else:
            _top_vertex(weights, biases, hidden_activations, points[lo:hi], order, variables, dtype, result[lo:hi])

    # BLAS on one thread, the threads being feynmlp's (threads.single_blas_thread says why).
    with threads.single_blas_thread():
        for start in range(0, batch, chunk):
            threads.run_blocks(expand, (), min(batch, start + chunk), start=start)
    return result


def _push(weights, biases, hidden_activations, output_activation, points, order, variables, dtype, stack=None,
          derivative_order=None):
    """Forward series (points, M, n_out) up to `order`, and per hidden layer the activation's
    derivatives s^(m)(z0)/m!, m = 0..derivative_order (default `order`), (points, m + 1, neurons).
    With stack (points, M, sum of the hidden widths), each hidden layer's pre-activation series
    is also copied into its own block of stack's neuron columns, in order.

    One block per point, neurons innermost: the vertex kernels vectorise over the neurons, the
    affine maps are one matrix product over all points and coefficients, and the top-vertex
    contraction reads each point's block without a transpose. The series returned is a
    feynmlp.workspace array: valid until the next expansion on this thread.
    """
    n_vars = variables.size
    columns = multi_index.count(n_vars, order)
    tables = multi_index.vertex_tables(n_vars, order)
    derivative_order = order if derivative_order is None else derivative_order
    first = np.asarray(weights[0], dtype=dtype)
    series = workspace.array(("series", 0), (points.shape[0], columns, first.shape[0]), dtype)
    series[:, 0, :] = points @ first.T + np.asarray(biases[0], dtype=dtype)
    # The first affine map is exactly linear: its order-1 coefficients are the weight columns.
    series[:, 1:1 + n_vars, :] = first[:, variables].T[None, :, :]
    series[:, 1 + n_vars:, :] = 0.0
    column = 0
    derivatives = []
    for layer in range(1, len(weights)):
        if stack is not None:
            stack[:, :, column:column + series.shape[2]] = series
            column += series.shape[2]
        derivatives.append(_values(series, hidden_activations[layer - 1], derivative_order))
        series = _vertex_layer_multivariate(series, derivatives[-1], hidden_activations[layer - 1], order, tables)
        # Two series buffers in turn: the input of a layer is dead once its vertex layer ran.
        series = _affine(series, weights[layer], biases[layer], dtype, ("series", layer % 2))
    if output_activation is not None:
        series = _vertex_layer_multivariate(series, _values(series, output_activation, order), output_activation,
                                            order, tables)
    return series, derivatives


def _affine(series, weight, bias, dtype, name):
    """W over the neuron axis, into the workspace array `name`: one matrix product over all
    points and coefficients."""
    weight = np.asarray(weight, dtype=dtype)
    points, columns, width = series.shape
    out = workspace.array(name, (points, columns, weight.shape[0]), dtype)
    np.matmul(series.reshape(points * columns, width), weight.T, out=out.reshape(points * columns, -1))
    out[:, 0, :] += np.asarray(bias, dtype=dtype)
    return out


def _vertex_layer_multivariate(series, derivatives, activation, order, tables):
    out = workspace.array("composed", series.shape, series.dtype)
    if order == 1:
        # No vertex below order 2: s(z0 + dz) = s0 + s1 dz. Two NumPy passes, as fast as the
        # kernel, and one compiled function fewer on a cold first call (0.25 s at K = 3).
        out[:, 0, :] = derivatives[:, 0, :]
        np.multiply(series[:, 1:, :], derivatives[:, 1:2, :], out=out[:, 1:, :])
        return out
    call_kernel(kernel_module(activation, order), "compose_multivariate", series, derivatives, out, *tables, 0,
                series.shape[0])
    return out


def _values(series, activation, order):
    """s^(m)(z0)/m! for m = 0..order at each point and neuron: (points, order + 1, neurons)."""
    module = kernel_module(activation, order)
    z0 = np.ascontiguousarray(series[:, 0, :]).reshape(-1)
    out = np.empty((z0.size, order + 1), dtype=series.dtype)
    call_kernel(module, "taylor_derivatives", z0, out)
    return np.ascontiguousarray(out.reshape(series.shape[0], series.shape[2], order + 1).transpose(0, 2, 1))


def _top_vertex(weights, biases, hidden_activations, points, order, variables, dtype, out):
    """All coefficients up to `order` of a network with a linear output, by the topmost vertex,
    written to out (points, outputs, M). Orders up to top_vertex.pushed_order(K) are pushed
    forward; the top two come from the contraction (K >= 3; K = 2 is feynmlp.hessian)."""
    from . import top_vertex

    pushed = top_vertex.pushed_order(order)
    n_vars = variables.size
    widths = [w.shape[0] for w in weights[:-1]]
    bounds = np.cumsum([0] + widths)
    batch = points.shape[0]
    stack = workspace.array("stack", (batch, multi_index.count(n_vars, pushed), bounds[-1]), dtype)
    lower, derivatives = _push(weights, biases, hidden_activations, None, points, pushed, variables, dtype,
                               stack=stack, derivative_order=order)
    outputs = lower.shape[2]
    # Output propagators g(l) = d f / d a(l), one backward pass: (outputs, points, neurons).
    last = np.asarray(weights[-1], dtype=dtype)
    propagators = [np.ascontiguousarray(np.broadcast_to(last[:, None, :], (outputs, batch, last.shape[1])))]
    between = [np.asarray(w, dtype=dtype) for w in weights[1:-1]]
    for layer in range(len(derivatives) - 1, 0, -1):
        propagators.insert(0, (propagators[0] * derivatives[layer][None, :, 1, :]) @ between[layer - 1])
    low = lower.shape[1]
    sizes = (multi_index.count_of_order(n_vars, order - 1), multi_index.count_of_order(n_vars, order))
    top = workspace.array("top", (outputs, batch, sizes[1]), dtype)
    below = workspace.array("below", (outputs, batch, sizes[0]), dtype)
    top_vertex.contract(stack, bounds, derivatives, propagators, between, order, n_vars, top, below)
    out[:, :, :low] = lower.transpose(0, 2, 1)
    out[:, :, low:low + sizes[0]] = below.transpose(1, 0, 2)
    np.divide(top.transpose(1, 0, 2), top_vertex.plan(n_vars, order).first_count, out=out[:, :, low + sizes[0]:])


def directional_series(weights, biases, hidden_activations, output_activation, points, directions,
                       order: int, dtype=np.float64) -> np.ndarray:
    """Coefficients of t -> f(x + t v) up to t^order, for each (point, direction) pair.

    points is (batch, n_in), or (1, n_in) for one point shared by every direction; directions
    is (batch, n_in); returns (batch, n_out, order + 1). A shared point is pushed through the
    network once and its activation derivatives are computed once per neuron, not per
    direction (the Born terms of many potentials are expansions at the one point U = 0).
    """
    points = np.asarray(points, dtype=dtype)
    directions = np.asarray(directions, dtype=dtype)
    batch = directions.shape[0]
    shared = points.shape[0] == 1
    widths = [w.shape[0] for w in weights]
    _check_memory(widths, batch, order + 1, np.dtype(dtype).itemsize, order, 1, "a directional expansion")
    with threads.single_blas_thread():  # feynmlp's threads instead, as in multivariate_series
        return _directional(weights, biases, hidden_activations, output_activation, points, directions, order,
                            dtype, batch, shared)


def _directional(weights, biases, hidden_activations, output_activation, points, directions, order, dtype, batch,
                 shared):
    first = np.asarray(weights[0], dtype=dtype)
    series = workspace.array(("series", 0), (first.shape[0], batch, order + 1), dtype)
    series[:, :, 0] = first @ points.T + np.asarray(biases[0], dtype=dtype)[:, None]  # one column, or batch
    series[:, :, 1] = first @ directions.T
    series[:, :, 2:] = 0.0
    step = order + 1
    for layer in range(1, len(weights)):
        series, activated = _vertex_layer_directional(series, hidden_activations[layer - 1], order, shared)
        weight = np.asarray(weights[layer], dtype=dtype)
        bias = np.asarray(biases[layer], dtype=dtype)
        out = workspace.array(("series", layer % 2), (weight.shape[0], batch, step), dtype)
        flat_in, flat_out = series.reshape(series.shape[0], -1), out.reshape(weight.shape[0], -1)

        def block(lo, hi, flat_in=flat_in, flat_out=flat_out, weight=weight):
            np.matmul(weight, flat_in[:, lo * step:hi * step], out=flat_out[:, lo * step:hi * step])

        threads.run_blocks(block, (), batch)
        if shared:
            # Every direction gets the same values, bit for bit: the one point's own pass.
            out[:, :, 0] = (weight @ activated + bias)[:, None]
        else:
            out[:, :, 0] += bias[:, None]
        series = out
    if output_activation is not None:
        series, _ = _vertex_layer_directional(series, output_activation, order, shared)
    # A new array for the caller: the series above live in the workspace.
    return series.transpose(1, 0, 2).copy()


def _vertex_layer_directional(series, activation, order, shared):
    """The activation applied to (neurons, batch, order + 1) series, into the workspace; and,
    when every direction shares one point, the activation's values (neurons,) at that point."""
    module = kernel_module(activation, order)
    rows = series.reshape(-1, series.shape[-1])
    out = workspace.array("composed", rows.shape, rows.dtype)
    if not shared:
        call_kernel(module, "compose_directional", rows, out, blocks=rows.shape[0])
        return out.reshape(series.shape), None
    derivatives = np.empty((series.shape[0], order + 1), dtype=series.dtype)
    call_kernel(module, "taylor_derivatives", np.ascontiguousarray(series[:, 0, 0]), derivatives)
    call_kernel(module, "compose_directional_shared", rows, derivatives, out, blocks=rows.shape[0])
    return out.reshape(series.shape), derivatives[:, 0].copy()
