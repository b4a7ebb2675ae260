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

from . import multi_index
from .errors import ResourceLimitError
from .kernels import call_kernel, kernel_module


def memory_budget() -> int:
    """Bytes one expansion may allocate: FEYNMLP_MAX_MEMORY_GB, else 80 % of physical memory."""
    configured = os.environ.get("FEYNMLP_MAX_MEMORY_GB")
    if configured:
        return int(float(configured) * 2**30)
    try:
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _check_memory(widths, batch: int, columns: int, itemsize: int, order: int, n_vars: int, what: str) -> None:
    # Two layer-sized arrays live at once (series in, series out), plus the result.
    layer = max(widths) * batch * columns * itemsize
    needed = 2 * layer + widths[-1] * batch * columns * itemsize
    budget = memory_budget()
    if needed > budget:
        raise ResourceLimitError(
            f"{what} of order {order} in {n_vars} variables for {batch} point(s) needs about "
            f"{needed / 2**30:.1f} GiB ({columns} coefficients per neuron and point, widest layer "
            f"{max(widths)}), more than the {budget / 2**30:.1f} GiB allowed; restrict the variables "
            "with wrt=[...], use fewer points per call, or use feynmlp.directional for the series "
            "along chosen directions (set FEYNMLP_MAX_MEMORY_GB to change the limit)")


def multivariate_series(weights, biases, hidden_activations, output_activation, points, order: int,
                        wrt=None, dtype=np.float64) -> np.ndarray:
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

    Returns:
        (batch, n_out, M) with M = C(len(wrt) + K, K), columns in feynmlp.multi_index order.
    """
    points = np.asarray(points, dtype=dtype)
    batch = points.shape[0]
    variables = np.arange(points.shape[1]) if wrt is None else np.asarray(wrt, dtype=np.int64)
    n_vars = variables.size
    columns = multi_index.count(n_vars, order)
    widths = [w.shape[0] for w in weights]
    _check_memory(widths, batch, columns, np.dtype(dtype).itemsize, order, n_vars, "a multivariate expansion")
    tables = multi_index.vertex_tables(n_vars, order)
    first = np.asarray(weights[0], dtype=dtype)
    series = np.zeros((first.shape[0], batch, columns), dtype=dtype)
    series[:, :, 0] = first @ points.T + np.asarray(biases[0], dtype=dtype)[:, None]
    # The first affine map is exactly linear: its order-1 coefficients are the weight columns.
    series[:, :, 1:1 + n_vars] = first[:, variables][:, None, :]
    return _propagate(series, weights, biases, hidden_activations, output_activation, order, dtype,
                      "compose_multivariate", tables).transpose(1, 0, 2)


def directional_series(weights, biases, hidden_activations, output_activation, points, directions,
                       order: int, dtype=np.float64) -> np.ndarray:
    """Coefficients of t -> f(x + t v) up to t^order, for each (point, direction) pair.

    points and directions are (batch, n_in); returns (batch, n_out, order + 1).
    """
    points = np.asarray(points, dtype=dtype)
    directions = np.asarray(directions, dtype=dtype)
    batch = points.shape[0]
    widths = [w.shape[0] for w in weights]
    _check_memory(widths, batch, order + 1, np.dtype(dtype).itemsize, order, 1, "a directional expansion")
    first = np.asarray(weights[0], dtype=dtype)
    series = np.zeros((first.shape[0], batch, order + 1), dtype=dtype)
    series[:, :, 0] = first @ points.T + np.asarray(biases[0], dtype=dtype)[:, None]
    series[:, :, 1] = first @ directions.T
    return _propagate(series, weights, biases, hidden_activations, output_activation, order, dtype,
                      "compose_directional", ()).transpose(1, 0, 2)


def _propagate(series, weights, biases, hidden_activations, output_activation, order, dtype, kernel, tables):
    """Alternate vertex layers (kernels) and affine maps (one matrix product each)."""
    _, batch, columns = series.shape
    for layer in range(1, len(weights)):
        series = _vertex_layer(series, hidden_activations[layer - 1], order, kernel, tables)
        weight = np.asarray(weights[layer], dtype=dtype)
        flat = weight @ series.reshape(series.shape[0], batch * columns)
        series = flat.reshape(weight.shape[0], batch, columns)
        series[:, :, 0] += np.asarray(biases[layer], dtype=dtype)[:, None]
    if output_activation is not None:
        series = _vertex_layer(series, output_activation, order, kernel, tables)
    return series


def _vertex_layer(series, activation, order, kernel, tables):
    module = kernel_module(activation, order)
    rows = series.reshape(-1, series.shape[-1])
    out = np.empty_like(rows)
    call_kernel(module, kernel, rows, out, *tables)
    return out.reshape(series.shape)
