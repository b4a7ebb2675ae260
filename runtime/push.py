"""The forward push and the output propagators, shared by every multivariate scheme.

In: a network (weights W(l) (n_l, n_{l-1}), biases, the kernel modules of its activations),
expansion points (points, n_in), the order P to push and the expansion variables. Out:

- push(): the output's Taylor series up to order P, one block per point (points, M_P, n_out),
  and per hidden layer the activation's derivatives s^(m)(z0)/m!; optionally the hidden
  layers' pre-activation series and derivatives side by side as one wide layer (points, ...,
  all hidden neurons), the form the top-vertex contractions read.
- output_propagators(): g(l) = d f / d a(l) for every hidden layer and output, one backward
  pass, side by side (outputs * points, all hidden neurons).

Each layer is one affine map applied to all coefficients at once (a single matrix product
with the points and coefficients stacked into its long dimension, where BLAS is fast) and
one vertex layer (the generated kernel composing the activation's Taylor series with the
incoming one: docs/mathematics.md, "Vertex sums and the layer recursion").
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import multi_index, workspace
from .kernels import Kernels, call_kernel

def push(weights, biases, kernels: Kernels, points, order, variables, dtype, stack=None, wide=None, subset=None):
    """Forward series (points, M, n_out) up to `order` (M = multi_index.count(n, order)), and per
    hidden layer the activation's derivatives s^(m)(z0)/m!, m = 0 .. the order D of
    kernels.derivatives, (points, D + 1, neurons), or None where `wide` holds them.

    With stack (points, M, all hidden neurons), each hidden layer's pre-activation series is
    also copied into its block of stack's neuron columns, in order; with wide (points, D + 1,
    all hidden neurons), the derivatives are written there, layer by layer, and kept per layer
    only where a vertex layer of order >= 2 reads them.

    With subset (a feynmlp.operator_terms.Subset: a downward-closed set S of multi-indices, the
    constant first and the variables' first orders next, and its vertex tables), only the
    coefficients of S are pushed (M = |S|): exact for every member of S, as a coefficient of
    s(p(x)) depends only on the coefficients of p at multi-indices below it.

    One block per point, neurons innermost: the vertex kernels vectorise over the neurons, the
    affine maps are one matrix product over all points and coefficients, and the top-vertex
    contractions read each point's block without a transpose. The series returned is a
    feynmlp.workspace array: valid until the next expansion on this thread.
    """
    if order == 0 and wide is not None and stack is None and subset is None and kernels.output is None:
        return _push_values(weights, biases, kernels, points, dtype, wide), [None] * (len(weights) - 1)
    n_vars = variables.size
    if subset is None:
        columns = multi_index.count(n_vars, order)
        tables = multi_index.vertex_tables(n_vars, order) if order > 1 else ()
    else:
        columns, tables = len(subset), subset.tables
    first = np.asarray(weights[0], dtype=dtype)
    series = workspace.array(("series", 0), (points.shape[0], columns, first.shape[0]), dtype)
    series[:, 0, :] = points @ first.T + np.asarray(biases[0], dtype=dtype)
    if order:
        # The first affine map is exactly linear: its order-1 coefficients are the weight columns.
        series[:, 1:1 + n_vars, :] = first[:, variables].T[None, :, :]
        series[:, 1 + n_vars:, :] = 0.0
    column = 0
    derivatives = []
    for layer in range(1, len(weights)):
        width = series.shape[2]
        if stack is not None:
            stack[:, :, column:column + width] = series
        target = None if wide is None else wide[:, :, column:column + width]
        column += width
        derivatives.append(_values(series, kernels.derivatives[layer - 1], target, keep=wide is None or order > 1))
        if order == 0 and target is not None:
            series = target[:, :1, :]  # the activations: the next affine map reads them in place
        else:
            layer_derivatives = derivatives[-1] if derivatives[-1] is not None else target
            series = _vertex_layer(series, layer_derivatives, kernels.compose[layer - 1], order, tables)
        # Two series buffers in turn: the input of a layer is dead once its vertex layer ran.
        series = _affine(series, weights[layer], biases[layer], dtype, ("series", layer % 2))
    if kernels.output is not None:
        series = _vertex_layer(series, _values(series, kernels.output), kernels.output, order, tables)
    return series, derivatives


def _push_values(weights, biases, kernels: Kernels, points, dtype, wide):
    """push() of order 0 into `wide`, for a linear output: the values alone need no vertex
    layer, so each layer is a matrix product, the bias, and the derivatives written into wide,
    whose s(z) columns the next product reads in place. Returns the outputs (points, 1, n_out).
    (The order-2 top-vertex scheme calls this once per block: a short path matters for one point.)"""
    activations, column = points, 0
    for layer in range(len(weights) - 1):
        weight = np.asarray(weights[layer], dtype=dtype)
        width = weight.shape[0]
        z = np.matmul(activations, weight.T)
        z += np.asarray(biases[layer], dtype=dtype)
        module = kernels.derivatives[layer]
        values = np.empty((z.size, module.ORDER + 1), dtype=dtype)
        call_kernel(module, "taylor_derivatives", z.reshape(-1), values)
        wide[:, :, column:column + width] = values.reshape(z.shape[0], width, -1).transpose(0, 2, 1)
        activations = wide[:, 0, column:column + width]
        column += width
    outputs = np.matmul(activations, np.asarray(weights[-1], dtype=dtype).T)
    outputs += np.asarray(biases[-1], dtype=dtype)
    return outputs[:, None, :]


def _affine(series, weight, bias, dtype, name):
    """W over the neuron axis, into the workspace array `name`: one matrix product over all
    points and coefficients."""
    weight = np.asarray(weight, dtype=dtype)
    points, columns, width = series.shape
    out = workspace.array(name, (points, columns, weight.shape[0]), dtype)
    # One column (the values alone) may be a strided view: as rows it needs no copy.
    flat = series[:, 0, :] if columns == 1 else series.reshape(points * columns, width)
    np.matmul(flat, weight.T, out=out.reshape(points * columns, -1))
    out[:, 0, :] += np.asarray(bias, dtype=dtype)
    return out


def _vertex_layer(series, derivatives, module, order, tables):
    out = workspace.array("composed", series.shape, series.dtype)
    if order <= 1:
        # No vertex below order 2: s(z0 + dz) = s0 + s1 dz. Two NumPy passes, as fast as the
        # kernel, and one compiled function fewer on a cold first call (0.25 s at K = 3).
        out[:, 0, :] = derivatives[:, 0, :]
        np.multiply(series[:, 1:, :], derivatives[:, 1:2, :], out=out[:, 1:, :])
        return out
    call_kernel(module, "compose_multivariate", series, derivatives, out, *tables)
    return out


def _values(series, module, target=None, keep=True):
    """s^(m)(z0)/m! for m = 0..K at each point and neuron, by the kernel module of order K:
    written to target (points, K + 1, neurons) if given; returned as a C-contiguous array of
    that shape if keep (the vertex kernels read it), else None."""
    order = module.ORDER
    z0 = np.ascontiguousarray(series[:, 0, :]).reshape(-1)
    out = np.empty((z0.size, order + 1), dtype=series.dtype)
    call_kernel(module, "taylor_derivatives", z0, out)
    by_order = out.reshape(series.shape[0], series.shape[2], order + 1).transpose(0, 2, 1)
    if target is not None:
        target[...] = by_order
    return np.ascontiguousarray(by_order) if keep else None


class Layers(NamedTuple):
    """A network's hidden layers as the top-vertex schemes read them, built once per request."""

    between: np.ndarray  # W(2) .. W(L) between the hidden layers, flat, one after the other
    matrices: list       # the same as matrices (views of between)
    last: np.ndarray     # the output weights, C-contiguous
    bounds: np.ndarray   # (layers + 1,) the hidden layers' columns side by side


def layers(weights, dtype) -> Layers:
    """Layers of `weights` in `dtype`."""
    between, matrices = between_weights(weights, dtype)
    bounds = np.cumsum([0] + [w.shape[0] for w in weights[:-1]]).astype(np.int64)
    return Layers(between, matrices, np.ascontiguousarray(weights[-1], dtype=dtype), bounds)


def between_weights(weights, dtype) -> tuple[np.ndarray, list]:
    """The weights between consecutive hidden layers, W(2) .. W(L), in `dtype`: flat, one after
    the other (what the compiled Hessian kernel reads), and as matrices (views of the flat
    array). Weights that already lie one after the other in one buffer (an MLP's do) are
    viewed, not copied."""
    between = [np.asarray(w, dtype=dtype) for w in weights[1:-1]]
    flat = _adjacent(between)
    if flat is None:
        flat = np.concatenate([w.reshape(-1) for w in between]) if between else np.zeros(0, dtype=dtype)
    views, offset = [], 0
    for w in between:
        views.append(flat[offset:offset + w.size].reshape(w.shape))
        offset += w.size
    return flat, views


def _adjacent(arrays) -> np.ndarray | None:
    """A flat view of C-contiguous arrays that lie one after the other in one buffer, or None."""
    if not arrays:
        return None
    root = arrays[0]
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root.ndim != 1 or root.dtype != arrays[0].dtype or not root.flags.c_contiguous:
        return None
    start = root.__array_interface__["data"][0]
    at = arrays[0].__array_interface__["data"][0]
    for array in arrays:
        if not array.flags.c_contiguous or array.__array_interface__["data"][0] != at or array.dtype != root.dtype:
            return None
        at += array.nbytes
    first = (arrays[0].__array_interface__["data"][0] - start) // root.itemsize
    if (at - start) // root.itemsize > root.size:
        return None
    return root[first:first + sum(array.size for array in arrays)]


def output_propagators(layers: Layers, derivatives, propagators) -> None:
    """g(l) = d f / d a(l) of every hidden layer l and output, into propagators (outputs,
    points, all hidden neurons; layer l's columns bounds[l] .. bounds[l + 1] - 1), from the
    derivatives side by side (points, D + 1, all hidden neurons; s' is m = 1) and the network's
    Layers.

    g(L) of the last hidden layer is the output weights, the same at every point; below it,
    g(l) = (g(l+1) s'(l+1)) W(l+1), one matrix product per layer for all outputs and points.
    NumPy, not a compiled kernel: the products are BLAS's either way, and a kernel would add
    its compile time to a cold first call."""
    dtype = propagators.dtype
    outputs, points, _ = propagators.shape
    bounds, between = layers.bounds, layers.matrices
    propagators[:, :, bounds[-2]:] = layers.last[:, None, :]
    if len(bounds) < 3:
        return
    widest = max(bounds[l + 1] - bounds[l] for l in range(len(bounds) - 1))
    scaled_buffer, product_buffer = workspace.arrays("propagator products", [(outputs * points * widest,)] * 2, dtype)
    for l in range(len(bounds) - 2, 0, -1):
        above, below = slice(bounds[l], bounds[l + 1]), slice(bounds[l - 1], bounds[l])
        scaled = scaled_buffer[:outputs * points * (bounds[l + 1] - bounds[l])].reshape(outputs, points, -1)
        np.multiply(propagators[:, :, above], derivatives[None, :, 1, above], out=scaled)
        product = product_buffer[:outputs * points * (bounds[l] - bounds[l - 1])].reshape(outputs * points, -1)
        np.matmul(scaled.reshape(outputs * points, -1), between[l - 1], out=product)
        propagators[:, :, below] = product.reshape(outputs, points, -1)
