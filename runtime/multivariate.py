"""Multivariate Taylor coefficients of an MLP: the one entry every scheme runs behind.

In: weights W(l) (n_l, n_{l-1}), biases, one activation per hidden layer (and optionally an
output activation), expansion points (batch, n_in), the order K, a subset of the input
variables and the scheme asked for. Out: the Taylor coefficients of every output, (batch,
n_out, M) over the graded multi-indices of feynmlp.multi_index.

The steps are the same for every scheme (feynmlp.schemes): validate and pick the scheme,
check the memory the request needs, settle its kernels and tables in the calling thread, then
run blocks of points in threads.
"""
from __future__ import annotations

import numpy as np

from . import memory, multi_index, threads
from .schemes import Request, choose


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
            orders < K, then contract the top orders with the output propagators), or "auto"
            (chosen by shape, see feynmlp.schemes.choose_scheme).

    Returns:
        (batch, n_out, M) with M = C(len(wrt) + K, K), columns in feynmlp.multi_index order.
    """
    points = np.asarray(points, dtype=dtype)
    variables = np.arange(points.shape[1]) if wrt is None else np.asarray(wrt, dtype=np.int64)
    request = Request(tuple(weights), tuple(biases), tuple(hidden_activations), output_activation, order,
                      variables, np.dtype(dtype), points.shape[0])
    chosen = choose(request, scheme)
    batch, columns, widths = request.batch, multi_index.count(request.n_vars, order), request.widths
    chunk = chosen.points_per_chunk(request)
    memory.check(batch * request.outputs * columns * request.itemsize, request.itemsize, chosen.table_bytes(request),
                 chosen.workspace_bytes(request, chunk),
                 f"a multivariate expansion of order {order} in {request.n_vars} variables for {batch} point(s)",
                 "restrict the variables with wrt=[...], use fewer points per call, or use feynmlp.directional for "
                 "the series along chosen directions",
                 f"{columns} coefficients per output and point, widest layer {max(widths)}, ")
    plan = chosen.plan(request)
    result = np.empty((batch, request.outputs, columns), dtype=dtype)

    def expand(lo, hi):
        # Points are independent: each thread expands its own block.
        chosen.expand(plan, points[lo:hi], result[lo:hi])

    # BLAS on one thread, the threads being feynmlp's (threads.single_blas_thread says why).
    with threads.single_blas_thread():
        for start in range(0, batch, chunk):
            threads.run_blocks(expand, (), min(batch, start + chunk), start=start)
    return result
