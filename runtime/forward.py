"""Pushing truncated Taylor series forward through an MLP with the generated kernels.

In: weights W(l) (n_l, n_{l-1}), biases, one activation per hidden layer (and optionally an
output activation), expansion points, the order K, and either a subset of input variables
(multivariate mode) or directions (univariate mode). Out: the Taylor coefficients of every
output, (batch, n_out, M) over the graded multi-indices of feynmlp.multi_index, or
(batch, n_out, K+1) along each direction.

Each layer is one affine map applied to all coefficients at once (a single matrix product
with the points and coefficients stacked into its long dimension, where BLAS is fast) and
one vertex layer (the generated kernel composing the activation's Taylor series with the
incoming one: docs/mathematics.md, "Vertex sums and the layer recursion").
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import memory, multi_index, threads, workspace
from .kernels import call_kernel, kernel_module
from .schemes import SCHEMES, choose_scheme


# Per-layer series arrays of one block of points stay below this many bytes: the matrix
# products stay long (points x coefficients) while memory stays bounded.
_CHUNK_BYTES = 128 * 2**20


class Kernels(NamedTuple):
    """The kernel modules one expansion uses, per hidden layer: `compose` for the vertex layers
    of the series pushed forward, `derivatives` for the activation's derivatives s^(m)(z0)/m!
    (of a higher order than `compose` when the top orders come from the contraction), and
    `output` for the output activation (None if linear)."""

    compose: list
    derivatives: list
    output: object


def resolve_kernels(hidden_activations, output_activation, compose_order: int,
                    derivative_order: int | None = None) -> Kernels:
    """Every kernel module an expansion needs, generated or loaded in the calling thread.

    Called before the points are split into threads, so that no worker thread ever generates,
    verifies or imports a kernel: on a fresh cache that means importing SymPy and Jinja2 and
    writing files, which must happen once, not once per thread and never beside a thread
    that inspects the half-imported modules.
    """
    derivative_order = compose_order if derivative_order is None else derivative_order
    derivatives = [kernel_module(activation, derivative_order) for activation in hidden_activations]
    if derivative_order == compose_order:
        compose = derivatives
    else:  # below order 2 the vertex layer is plain NumPy (_vertex_layer_multivariate) and needs no kernel
        compose = [kernel_module(activation, compose_order) if compose_order > 1 else None
                   for activation in hidden_activations]
    output = None if output_activation is None else kernel_module(output_activation, compose_order)
    return Kernels(compose, derivatives, output)


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
    itemsize = np.dtype(dtype).itemsize
    hidden = sum(widths[:-1])
    # Orders pushed forward, and the orders of the kernels that compose the series (vertex
    # layers) and that give the activation's derivatives (up to K for the contraction).
    if scheme == "forward":
        pushed = compose_order = order
    elif order == 2:
        from . import hessian

        pushed, compose_order = 1, 2
    else:
        from . import top_vertex

        pushed = compose_order = top_vertex.pushed_order(order)
    low = multi_index.count(n_vars, pushed)
    # Points per chunk: the largest per-layer series stays under _CHUNK_BYTES; for top-vertex,
    # all hidden layers side by side under half of it (each thread holds three more series of
    # one layer besides, and the contraction's output).
    neurons = max(widths) if scheme == "forward" else 2 * hidden
    chunk = int(max(1, min(batch, _CHUNK_BYTES // (neurons * low * itemsize))))
    if scheme == "forward":
        tables = multi_index.vertex_table_bytes(n_vars, order)
        # Per point: two series buffers and the composed series of the widest layer, and the
        # activation's derivatives.
        working = chunk * max(widths) * (3 * columns + order + 1) * itemsize
    elif order == 2:
        tables = 0
        working = hessian.workspace_bytes(n_vars, widths, chunk, itemsize)
    else:
        outputs = widths[-1]
        tables = (multi_index.vertex_table_bytes(n_vars, order - 1) + top_vertex.plan_bytes(n_vars, order)
                  + top_vertex.workspace_bytes(n_vars, order, hidden, outputs, itemsize))
        # Per point: the hidden layers' series side by side and the pushed series (two buffers
        # and the composed one); the derivatives (twice: per layer and side by side), the
        # vertex coefficients; the output propagators (per layer, the product making them, side
        # by side); the partners pulled backwards (two buffers, a term, and the result); and
        # the contraction's outputs of orders K-1 and K.
        working = chunk * itemsize * (low * (hidden + 3 * max(widths)) + (3 * order + 1) * hidden
                                      + outputs * ((n_vars + 4) * hidden + 3 * n_vars * max(widths))
                                      + outputs * (multi_index.count_of_order(n_vars, order)
                                                   + multi_index.count_of_order(n_vars, order - 1)))
    memory.check(batch * widths[-1] * columns * itemsize, itemsize, tables, working,
                  f"a multivariate expansion of order {order} in {n_vars} variables for {batch} point(s)",
                  "restrict the variables with wrt=[...], use fewer points per call, or use feynmlp.directional for "
                  "the series along chosen directions",
                  f"{columns} coefficients per output and point, widest layer {max(widths)}, ")
    # Kernels and tables are settled here, once, before the points are split into threads.
    kernels = resolve_kernels(hidden_activations, output_activation, compose_order, derivative_order=order)
    result = np.empty((batch, widths[-1], columns), dtype=dtype)
    if scheme == "top-vertex" and order > 2:
        top_vertex.plan(n_vars, order)
    if pushed > 1:
        multi_index.vertex_tables(n_vars, pushed)

    def expand(lo, hi):
        # Points are independent: each thread pushes its own block through every layer.
        if scheme == "forward":
            series, _ = _push(weights, biases, kernels, points[lo:hi], order, variables, dtype)
            result[lo:hi] = series.transpose(0, 2, 1)
        elif order == 2:
            hessian.expand(weights, biases, kernels.derivatives, points, variables, dtype, result, lo, hi)
        else:
            _top_vertex(weights, biases, kernels, points[lo:hi], order, variables, dtype, result[lo:hi])

    # BLAS on one thread, the threads being feynmlp's (threads.single_blas_thread says why).
    with threads.single_blas_thread():
        for start in range(0, batch, chunk):
            threads.run_blocks(expand, (), min(batch, start + chunk), start=start)
    return result


def _push(weights, biases, kernels: Kernels, points, order, variables, dtype, stack=None):
    """Forward series (points, M, n_out) up to `order`, and per hidden layer the activation's
    derivatives s^(m)(z0)/m!, m = 0 .. the order of kernels.derivatives, (points, m + 1, neurons).
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
        derivatives.append(_values(series, kernels.derivatives[layer - 1]))
        series = _vertex_layer_multivariate(series, derivatives[-1], kernels.compose[layer - 1], order, tables)
        # Two series buffers in turn: the input of a layer is dead once its vertex layer ran.
        series = _affine(series, weights[layer], biases[layer], dtype, ("series", layer % 2))
    if kernels.output is not None:
        series = _vertex_layer_multivariate(series, _values(series, kernels.output), kernels.output, order, tables)
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


def _vertex_layer_multivariate(series, derivatives, module, order, tables):
    out = workspace.array("composed", series.shape, series.dtype)
    if order == 1:
        # No vertex below order 2: s(z0 + dz) = s0 + s1 dz. Two NumPy passes, as fast as the
        # kernel, and one compiled function fewer on a cold first call (0.25 s at K = 3).
        out[:, 0, :] = derivatives[:, 0, :]
        np.multiply(series[:, 1:, :], derivatives[:, 1:2, :], out=out[:, 1:, :])
        return out
    call_kernel(module, "compose_multivariate", series, derivatives, out, *tables)
    return out


def _values(series, module):
    """s^(m)(z0)/m! for m = 0..K at each point and neuron, by the kernel module of order K:
    (points, K + 1, neurons)."""
    order = module.ORDER
    z0 = np.ascontiguousarray(series[:, 0, :]).reshape(-1)
    out = np.empty((z0.size, order + 1), dtype=series.dtype)
    call_kernel(module, "taylor_derivatives", z0, out)
    return np.ascontiguousarray(out.reshape(series.shape[0], series.shape[2], order + 1).transpose(0, 2, 1))


def _top_vertex(weights, biases, kernels, points, order, variables, dtype, out):
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
    lower, derivatives = _push(weights, biases, kernels, points, pushed, variables, dtype, stack=stack)
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
    network once per chunk of directions and its activation derivatives are computed once per
    neuron, not per direction (the Born terms of many potentials are expansions at the one
    point U = 0).

    The directions go through the network in chunks whose series (two layer-sized arrays and
    the composed one) fit in the memory budget beside the result; a request whose result and
    a single direction's series do not fit is refused before anything is allocated.
    """
    points = np.asarray(points, dtype=dtype)
    directions = np.asarray(directions, dtype=dtype)
    batch = directions.shape[0]
    shared = points.shape[0] == 1
    widths = [w.shape[0] for w in weights]
    chunk, _ = directional_plan(widths, batch, directions.shape[1], order, np.dtype(dtype).itemsize)
    kernels = resolve_kernels(hidden_activations, output_activation, order)
    result = np.empty((batch, widths[-1], order + 1), dtype=dtype)
    with threads.single_blas_thread():  # feynmlp's threads instead, as in multivariate_series
        for start in range(0, batch, chunk):
            stop = min(batch, start + chunk)
            _directional(weights, biases, kernels, points if shared else points[start:stop], directions[start:stop],
                         order, dtype, shared, result[start:stop])
    return result


def directional_plan(widths, batch: int, n_inputs: int, order: int, itemsize: int) -> tuple[int, int]:
    """(directions per chunk, estimated peak bytes) of a directional expansion; refuses with
    ResourceLimitError if it cannot fit in memory.budget().

    Counted: the result; per direction of a chunk, three layer-sized series of order + 1
    coefficients (a layer's input, its composed series and the next layer's) and the first
    layer's two products; the caller's checks of the directions and of the result for
    non-finite values (boolean arrays). The chunk is as large as the budget allows, up to
    _CHUNK_BYTES per series.
    """
    steps = order + 1
    result = batch * widths[-1] * steps * itemsize
    inputs = 2 * batch * n_inputs  # the caller's finiteness check of the directions
    per_direction = (3 * max(widths) * steps + 2 * widths[0]) * itemsize
    room = memory.budget() - memory.fixed(result, itemsize, inputs)
    chunk = int(min(batch, max(1, _CHUNK_BYTES // (max(widths) * steps * itemsize)), max(1, room // per_direction)))
    needed = memory.check(result, itemsize, inputs, chunk * per_direction,
                          f"a directional expansion of order {order} for {batch} direction(s)",
                          "use fewer directions per call")
    return chunk, needed


def _directional(weights, biases, kernels, points, directions, order, dtype, shared, result):
    """The series of one chunk of directions, written to result (directions, n_out, order + 1)."""
    batch = directions.shape[0]
    first = np.asarray(weights[0], dtype=dtype)
    series = workspace.array(("series", 0), (first.shape[0], batch, order + 1), dtype)
    series[:, :, 0] = first @ points.T + np.asarray(biases[0], dtype=dtype)[:, None]  # one column, or batch
    series[:, :, 1] = first @ directions.T
    series[:, :, 2:] = 0.0
    step = order + 1
    for layer in range(1, len(weights)):
        series, activated = _vertex_layer_directional(series, kernels.compose[layer - 1], order, shared)
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
    if kernels.output is not None:
        series, _ = _vertex_layer_directional(series, kernels.output, order, shared)
    result[...] = series.transpose(1, 0, 2)


def _vertex_layer_directional(series, module, order, shared):
    """The activation (its kernel module) applied to (neurons, batch, order + 1) series, into
    the workspace; and, when every direction shares one point, the activation's values
    (neurons,) at that point."""
    rows = series.reshape(-1, series.shape[-1])
    out = workspace.array("composed", rows.shape, rows.dtype)
    if not shared:
        call_kernel(module, "compose_directional", rows, out, blocks=rows.shape[0])
        return out.reshape(series.shape), None
    derivatives = np.empty((series.shape[0], order + 1), dtype=series.dtype)
    call_kernel(module, "taylor_derivatives", np.ascontiguousarray(series[:, 0, 0]), derivatives)
    call_kernel(module, "compose_directional_shared", rows, derivatives, out, blocks=rows.shape[0])
    return out.reshape(series.shape), derivatives[:, 0].copy()
