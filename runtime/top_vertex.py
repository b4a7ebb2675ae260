"""The highest order by its topmost vertex: order-K coefficients from order-(K-1) series.

In: for one hidden layer, the Taylor series of its pre-activations up to order K-1
(neurons, M', points), the activation's Taylor derivatives s_m = s^(m)(z0)/m! at the point, and
the output propagators g = df/da (outputs, neurons, points). Out: that layer's contribution to
the order-K coefficients of the outputs, (outputs, M_K, points).

Why: every diagram of order K has a topmost vertex. Summing over the layer and neuron b of
that vertex, the order-K coefficient of a scalar output is

    sum_l sum_b g(l)_b * sum over multisets {alpha_1..alpha_m}, m >= 2, sum = gamma
                         of s_m(z_b) * (orderings) * prod_i D(l)_{b; alpha_i},

with the forward coefficients D needed only to order K-1 (a much smaller series than order K)
and g from one backward pass. The sum over b is a matrix product: for each vertex valence m
the sources split into a "left" tuple (alpha_1..alpha_{m-1}, multiplied out elementwise) and
the "right" multi-index alpha_m, and sum_b (g s_m)_b Left_{u,b} D_{b,r} is a batched GEMM over
the points. A sparse matrix then adds each (left, right) product to its target gamma with its
weight. Products that are not canonical (the same multiset in another order) get weight 0,
the price of using BLAS instead of a gather loop.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from . import multi_index

# Work arrays of one block stay below this many bytes (they are rebuilt per block of sources).
_BLOCK_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class _Group:
    """Top-vertex terms of one valence m whose right source has order `right_order`."""

    valence: int
    left: np.ndarray          # (u, m-1) source columns multiplied elementwise
    right_start: int          # right sources are the columns right_start .. right_stop-1
    right_stop: int
    scatter: object           # scipy.sparse CSC (M_K, u * n_right): weights into targets


@functools.lru_cache(maxsize=16)
def plan(n: int, order: int) -> tuple[_Group, ...]:
    """The grouped top-vertex terms for n variables at order K (from the vertex tables)."""
    import scipy.sparse

    offsets, column_order, _ = multi_index.layout(n, order)
    tables = multi_index.vertex_tables(n, order)
    top_start, top_stop = offsets[order], offsets[order + 1]
    groups = []
    for m in range(2, order + 1):
        table, weight = tables[2 * (m - 2)], tables[2 * (m - 2) + 1]
        on_top = table[:, 0] >= top_start
        table, weight = table[on_top], weight[on_top]
        right_orders = column_order[table[:, m]]
        for right_order in np.unique(right_orders):
            rows = right_orders == right_order
            left, inverse = np.unique(table[rows, 1:m], axis=0, return_inverse=True)
            right_start, right_stop = int(offsets[right_order]), int(offsets[right_order + 1])
            n_right = right_stop - right_start
            flat = inverse.reshape(-1) * n_right + (table[rows, m] - right_start)
            # CSC: blocks of sources are column slices.
            scatter = scipy.sparse.csc_matrix(
                (weight[rows], (table[rows, 0] - top_start, flat)),
                shape=(top_stop - top_start, left.shape[0] * n_right))
            groups.append(_Group(m, np.ascontiguousarray(left), right_start, right_stop, scatter))
    return tuple(groups)


def contribution(series: np.ndarray, derivatives: np.ndarray, propagators: np.ndarray, order: int,
                 n: int) -> np.ndarray:
    """One hidden layer's share of the order-K coefficients.

    Args:
        series: (neurons, M', points) pre-activation series up to order K-1 (graded layout).
        derivatives: (neurons, K+1, points) s^(m)(z0)/m!.
        propagators: (outputs, neurons, points) g = d output / d activation of this layer.
        order: K >= 2.
        n: number of expansion variables.

    Returns:
        (outputs, M_K, points): contributions to the coefficients of order exactly K.
    """
    neurons, _, points = series.shape
    outputs = propagators.shape[0]
    offsets, _, _ = multi_index.layout(n, order)
    result = np.zeros((offsets[order + 1] - offsets[order], outputs * points), dtype=series.dtype)
    # Points first: each point is one GEMM of the batch. (points, M', neurons)
    by_point = np.ascontiguousarray(series.transpose(2, 1, 0))
    for group in plan(n, order):
        # c[o, p, b] = g * s_m: the topmost vertex with its output propagator.
        vertex = np.ascontiguousarray(propagators.transpose(0, 2, 1) * derivatives[:, group.valence, :].T[None, :, :])
        # Contiguous operands: numpy's matmul calls BLAS only on contiguous 2-D slices.
        right = np.ascontiguousarray(by_point[:, group.right_start:group.right_stop, :].transpose(0, 2, 1))  # (p, b, r)
        n_right = group.right_stop - group.right_start
        per_left = outputs * points * max(neurons, n_right) * series.itemsize
        block = max(1, _BLOCK_BYTES // per_left)
        for start in range(0, group.left.shape[0], block):
            left = group.left[start:start + block]
            product = by_point[:, left[:, 0], :]  # (p, u, b)
            for column in range(1, left.shape[1]):
                product = product * by_point[:, left[:, column], :]
            scatter = group.scatter[:, start * n_right:(start + left.shape[0]) * n_right]
            for output in range(outputs):
                # (p, u, b) @ (p, b, r) -> (p, u, r): one GEMM per point (3-D operands: numpy
                # hands stacked 3-D products to BLAS, 4-D ones to a slow generic loop).
                gemm = np.matmul(np.multiply(product, vertex[output][:, None, :], order="C"), right)
                flat = gemm.transpose(1, 2, 0).reshape(left.shape[0] * n_right, points)
                result[:, output * points:(output + 1) * points] += scatter @ flat
    return result.reshape(-1, outputs, points).transpose(1, 0, 2)
