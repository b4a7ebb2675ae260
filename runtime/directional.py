"""Univariate Taylor mode: the series of t -> f(x + t v) along chosen directions.

In: weights W(l) (n_l, n_{l-1}), biases, one activation per hidden layer (and optionally an
output activation), points (batch, n_in) or one shared point, directions (batch, n_in) and
the order K. Out: (batch, n_out, K + 1), the coefficients of t^0 .. t^K.

Each layer is one matrix product over all directions and coefficients, and one vertex layer
(the generated kernel composing the activation's univariate Taylor series with the incoming
one: docs/mathematics.md, "Vertex sums and the layer recursion").
"""
from __future__ import annotations

import numpy as np

from . import memory, threads, workspace
from .kernels import call_kernel, resolve_kernels
from .schemes import ACTIVATION_FLOPS_PER_ORDER


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
    with threads.single_blas_thread():  # feynmlp's threads instead (threads.single_blas_thread says why)
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
    memory.CHUNK_BYTES per series.
    """
    steps = order + 1
    result = batch * widths[-1] * steps * itemsize
    inputs = 2 * batch * n_inputs  # the caller's finiteness check of the directions
    per_direction = (3 * max(widths) * steps + 2 * widths[0]) * itemsize
    room = memory.budget() - memory.fixed(result, itemsize, inputs)
    chunk = int(min(batch, max(1, memory.CHUNK_BYTES // (max(widths) * steps * itemsize)), max(1, room // per_direction)))
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


def directional_flops(n_in: int, widths, order: int, directions: int) -> int:
    """FLOPs of the series along `directions` directions, K + 1 coefficients per neuron:

    FLOPs = 2 * 2 n_1 n_0 B (values and first-order terms) + sum over hidden layers of n_l B V
          + sum over later affine maps of 2 n_l n_(l-1) B (K + 1),
    V = 10 K + sum_{k=1..K} sum over partitions p of k of (len(p) + 2) (Faa di Bruno).
    """
    vertex = ACTIVATION_FLOPS_PER_ORDER * order + sum(
        len(p) + 2 for k in range(1, order + 1) for p in _partitions(k))
    flops = 4 * widths[0] * n_in * directions
    flops += sum(width * directions * vertex for width in widths[:-1])
    flops += sum(2 * upper * lower * directions * (order + 1) for lower, upper in zip(widths[:-1], widths[1:]))
    return flops


def _partitions(k: int, largest: int | None = None):
    """The partitions of k into positive parts, largest first."""
    largest = k if largest is None else largest
    if k == 0:
        yield ()
        return
    for part in range(min(k, largest), 0, -1):
        for rest in _partitions(k - part, part):
            yield (part,) + rest
