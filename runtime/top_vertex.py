"""The highest orders by the topmost vertex: order K (and K-1) from series pushed to order K-2.

In: the Taylor series of every hidden layer's pre-activations pushed forward up to order
K-2 (K >= 3; order 2 has its own path, feynmlp.hessian), one block per point with the layers
side by side (points, M'', all hidden neurons), and per hidden layer the activation's Taylor derivatives
s_m = s^(m)(z0)/m! (points, K+1, neurons), the output propagators g = df/da (outputs, points,
neurons) and the weights between hidden layers. Out: the coefficients of order K of every
output (outputs, points, M_K) and those of order K-1.

Why, in three steps (docs/mathematics.md, 'The top vertex'):

1. Every diagram of order K has a topmost vertex. Summing over the layer and the neuron b of
   that vertex, the order-K coefficient of a scalar output is sum_l sum_b g(l)_b [h_b(dz_b)]_K
   with dz_b the non-constant part of the pre-activation series and
   h_b(y) = sum_{m >= 2} s_m y^m the vertices of valence >= 2 (valence 1 is inside g).

2. The order-K part of F = h(dz) is one product of two series. Applying x_i d/dx_i to F,
       gamma_i F_gamma = sum_{alpha + beta = gamma} alpha_i D_alpha R_beta,   R = h'(dz),
   for any variable i; with i = the first (smallest) variable of gamma only the pairs whose
   alpha contains it remain, first(alpha) <= first(beta): half of all pairs. Per point and
   split |alpha| = k1 this is a matrix product over the neurons (rows alpha, columns beta)
   whose entries are added to their targets gamma = alpha + beta. Multi-indices are
   lexicographic in their sorted variable tuples, so the allowed alphas of a tile of betas are
   a prefix of the rows: each tile is one GEMM of only the needed rows, scattered while it is
   still in cache.

3. The series' own top order K-1 never has to be pushed through the affine maps (for n = 32,
   M_{K-1} is ten times M_{K-2}, so that push would dominate). D_{K-1} enters the order-K
   coefficient only linearly, through the valence-2 terms c_1 D_alpha D_j (c_1 = 2 s_2,
   alpha of order K-1, j a variable), i.e. sum_l D_{K-1}(l)^T Y(l) with Y = g c_1 D_1. Since
   D_{K-1}(l) = W_l (s_1 D_{K-1}(l-1) + P(l-1)), where P is the order-(K-1) part of the
   products of lower orders (valence >= 2), the partners Y can be pulled backwards instead,
   a few (neurons x neurons) @ (neurons x n) products per point:
       sum_l D_{K-1}(l)^T Y(l) = sum_l P(l)^T V(l),  V(l) = W_{l+1}^T Y~(l+1),
       Y~(L) = Y(L),  Y~(l) = Y(l) + s_1(l) W_{l+1}^T Y~(l+1).
   The output's own order K-1 coefficient is sum_l g(l)^T P(l), one more column of the same
   product. What remains per layer is composed per point from orders <= K-2: P and R, from
   the vertex tables of order K-1 in one pass, the rows of order K-1 in chunks that are used
   (split |alpha| = 1, P^T [V | g]) while they are still in cache.

4. Everything above is a sum over the neurons b of per-neuron products, so the hidden layers
   are laid side by side as one wide layer: one product per tile with all layers' neurons as
   its inner dimension, and one scatter, not one per layer. The vertex products of a target
   are summed per valence m before they are weighted (by c_{m-1} for R, s_m for P), and all
   outputs share each product (the rows of g D are (variable, output) pairs).
"""
from __future__ import annotations

import dataclasses
import functools
import typing

import numpy as np
from numba import njit

from . import blas, memory, multi_index, push, threads, workspace
from .blas import PLAIN, TRANSPOSED
from .forward import series_flops
from .kernels import Kernels, resolve_kernels

# Columns (betas) per GEMM tile: large enough for BLAS, small enough that the tile's product
# and its targets stay in the core's cache while they are scattered.
_TILE = 192
# Rows of order K-1 composed at a time (a multiple of _TILE): R and P of one chunk stay in
# cache while their products (the split |alpha| = 1 and P^T [V | g]) use them.
_CHUNK = 2 * _TILE


# The columns of Plan.splits, Plan.tiles and Plan.segments.
SPLIT_ALPHA_START, SPLIT_ALPHA_COUNT, SPLIT_BETA_START, SPLIT_BETA_COUNT, SPLIT_TARGETS = range(5)
TILE_START, TILE_STOP, TILE_ROWS, TILE_SPLIT = range(4)
SEGMENT_ROW_START, SEGMENT_ROW_STOP, SEGMENT_TILE_START, SEGMENT_TILE_STOP, SEGMENT_TOP_START, SEGMENT_TOP_STOP = range(6)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything about the contraction that depends only on (n, K)."""

    splits: np.ndarray        # (S, SPLIT_*): alpha column start, alpha count, beta start, beta count, targets offset
    tiles: np.ndarray         # (T, TILE_*): beta tile start, stop (within the split), alpha rows needed, split
    targets: np.ndarray       # int32, per split (alpha count x beta count): gamma - offset_K, or -1
    first_power: np.ndarray   # alpha_first of each column of order <= K-1 (0 for the constant)
    first_count: np.ndarray   # (M_K,) gamma_first
    pair_targets: np.ndarray  # (M_{K-1}, n) int32: gamma of alpha + e_j for |alpha| = K-1 (K >= 3)
    first_variable: np.ndarray  # (M_{K-1},) first variable of each alpha of order K-1 (K >= 3)
    tables: np.ndarray        # (rows, K) vertex tables of order K-1 sorted by target, padded with -1
    valence: np.ndarray       # (rows,) m of each table row
    weight: np.ndarray        # (rows,) distinct orderings of each row's sources
    segments: np.ndarray      # (1 + C, SEGMENT_*): table rows, tiles, order-(K-1) rows (start, stop each);
                              # segment 0: orders < K-1 and the splits |alpha| >= 2,
                              # segment 1 + c: chunk c of the order-(K-1) rows and its tiles of split 0


def pushed_order(order: int) -> int:
    """The order to which the series are pushed forward before the contraction."""
    return order - 2


def _first_splits(order: int) -> range:
    """The sizes |alpha| contracted by the first-variable rule (step 2; |alpha| = K-1 is step 3)."""
    return range(1, order - 1)


def plan_bytes(n: int, order: int) -> int:
    """Peak bytes of building and holding plan(n, order), counted without building it (for the
    memory check): the int32 target tables, the merged tuples of one split while they are
    sorted, and the padded vertex tables of order K-1."""
    sizes = [multi_index.count_of_order(n, k) * multi_index.count_of_order(n, order - k) for k in range(1, order)]
    rows = sum(multi_index.vertex_table_rows(n, order - 1).values())
    return 4 * sum(sizes) + 16 * order * max(sizes) + rows * 8 * (order + 2) + 8 * multi_index.count(n, order)


def workspace_bytes(n: int, order: int, width: int, outputs: int, itemsize: int = 8) -> int:
    """Bytes of the per-thread work arrays of the contraction (R below order K-1, g D per
    output, R and P of one chunk, one matrix product) for `width` neurons (all hidden layers
    together)."""
    pushed = multi_index.count(n, pushed_order(order))
    chunk = min(_CHUNK, multi_index.count_of_order(n, order - 1))
    per_worker = (pushed * (1 + outputs) + 2 * chunk) * width + outputs * max(chunk * (n + 1), _TILE * pushed)
    return threads.count() * per_worker * itemsize


class Prepared(typing.NamedTuple):
    """What TopVertexScheme.plan settles once per request."""

    request: object
    kernels: Kernels
    contraction: Plan
    layers: push.Layers


class TopVertexScheme:
    """Orders K >= 3 by the topmost vertex: orders <= K-2 pushed forward (feynmlp.push), K-1
    and K from the contraction (this module's docstring)."""

    name = "top-vertex"

    def serves(self, request) -> bool:
        return request.order >= 3 and request.output_activation is None and len(request.weights) >= 2

    def points_per_chunk(self, request) -> int:
        # All hidden layers side by side under half of the chunk's bytes: each thread holds three
        # more series of one layer besides, and the contraction's output.
        return memory.points_per_chunk(request.batch, 2 * request.hidden_neurons,
                                     multi_index.count(request.n_vars, pushed_order(request.order)), request.itemsize)

    def table_bytes(self, request) -> int:
        """The vertex tables of order K-1, the plan and the per-thread work arrays of the
        contraction."""
        n, order = request.n_vars, request.order
        return (multi_index.vertex_table_bytes(n, order - 1) + plan_bytes(n, order)
                + workspace_bytes(n, order, request.hidden_neurons, request.outputs, request.itemsize))

    def workspace_bytes(self, request, points: int) -> int:
        """Per point: the hidden layers' series side by side and the pushed series (two
        buffers and the composed one); the derivatives (twice: per layer and side by side),
        the vertex coefficients; the output propagators (side by side, and the product making
        them per layer); the partners pulled backwards (two buffers, a term, and the result);
        and the contraction's outputs of orders K-1 and K."""
        n, order, outputs = request.n_vars, request.order, request.outputs
        hidden, widest = request.hidden_neurons, max(request.widths)
        low = multi_index.count(n, pushed_order(order))
        return points * request.itemsize * (
            low * (hidden + 3 * widest) + (3 * order + 1) * hidden
            + outputs * ((n + 4) * hidden + 3 * n * widest)
            + outputs * (multi_index.count_of_order(n, order) + multi_index.count_of_order(n, order - 1)))

    def flops(self, request, points: int) -> int:
        """FLOPs = ForwardScheme's count for orders <= P = K-2                  forward push
              + sum over hidden layers below the last of (n_out n_l B + 2 n_out n_l n_(l-1) B)
                                                                             output propagators
              + sum over hidden layers below the last of n_out B n (2 n_(l+1) + 4) n_l
                                                                             partners pulled back
              + sum over hidden layers l of n_l B V'                          R and P per neuron
              + sum over hidden layers l of n_out B [n_l M_P                  g * D
                    + sum over tiles (2 n_l + 2) rows width                   GEMM + scatter per tile
                    + (2 n_l + 2) (n + 1) M_(K-1)]                            P^T [V | g] + scatter
        with M_P = C(n+P, P), M_(K-1) = C(n+K-2, K-1), V' = (M_P - 1) + sum_{m=2..K-1} R_m (m + 2)
        + R_top * 2 over the vertex tables of order K-1 (R_top: the rows whose target has order
        K-1, which also feed P), and the tiles of plan(n, K) (one GEMM (rows x n_l) @ (n_l x
        width) per tile, point and output). The tiles are read from the plan itself, so this
        counts the products the kernel executes, including the few masked ones at tile edges.
        """
        n, order, n_out = request.n_vars, request.order, request.outputs
        hidden = request.widths[:-1]
        pushed = pushed_order(order)
        flops = series_flops(request.weights[0].shape[1], request.widths, n, pushed, points)
        flops += sum(n_out * upper * points + 2 * n_out * upper * lower * points
                     for lower, upper in zip(hidden[:-1], hidden[1:]))
        pushed_columns = multi_index.count(n, pushed)
        top_rows = multi_index.count_of_order(n, order - 1)
        flops += sum(n_out * points * n * (2 * upper + 4) * lower for lower, upper in zip(hidden[:-1], hidden[1:]))
        rows = multi_index.vertex_table_rows(n, order - 1)
        contraction = plan(n, order)
        derivative_series = ((pushed_columns - 1) + sum(r * (m + 2) for m, r in rows.items())
                             + 2 * int((contraction.tables[:, 0] >= pushed_columns).sum()))
        tiles = contraction.tiles
        entries = int(((tiles[:, TILE_STOP] - tiles[:, TILE_START]) * tiles[:, TILE_ROWS]).sum())
        for width in hidden:
            flops += width * points * derivative_series
            flops += n_out * points * (width * pushed_columns + (2 * width + 2) * (entries + (n + 1) * top_rows))
        return flops

    def plan(self, request) -> Prepared:
        order, dtype = request.order, request.dtype
        pushed = pushed_order(order)
        kernels = resolve_kernels(request.hidden_activations, None, pushed, derivative_order=order)
        if pushed > 1:
            multi_index.vertex_tables(request.n_vars, pushed)
        return Prepared(request, kernels, plan(request.n_vars, order), push.layers(request.weights, dtype))

    def expand(self, prepared: Prepared, points, out) -> None:
        """All coefficients up to K of a block of points into out (points, outputs, M)."""
        request, contraction = prepared.request, prepared.contraction
        order, n, dtype, outputs = request.order, request.n_vars, request.dtype, request.outputs
        layers = prepared.layers
        count, neurons = points.shape[0], int(layers.bounds[-1])
        pushed = pushed_order(order)
        stack = workspace.array("stack", (count, multi_index.count(n, pushed), neurons), dtype)
        derivatives = workspace.array("derivatives", (count, order + 1, neurons), dtype)
        lower, _ = push.push(request.weights, request.biases, prepared.kernels, points, pushed, request.variables,
                             dtype, stack=stack, wide=derivatives)
        propagators = workspace.array("propagators", (outputs, count, neurons), dtype)
        push.output_propagators(layers, derivatives, propagators)
        sizes = (multi_index.count_of_order(n, order - 1), multi_index.count_of_order(n, order))
        top = workspace.array("top", (outputs, count, sizes[1]), dtype)
        below = workspace.array("below", (outputs, count, sizes[0]), dtype)
        contract(contraction, stack, layers.bounds, derivatives, propagators, layers.matrices, top, below)
        low = lower.shape[1]
        out[:, :, :low] = lower.transpose(0, 2, 1)
        out[:, :, low:low + sizes[0]] = below.transpose(1, 0, 2)
        np.divide(top.transpose(1, 0, 2), contraction.first_count, out=out[:, :, low + sizes[0]:])


SCHEME = TopVertexScheme()


def _targets_of_pairs(n: int, order: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Column (minus offset_K) of each merged pair of sorted tuples left[i] + right[i]."""
    offsets, _, _ = multi_index.layout(n, order)
    merged = multi_index.sorted_rows(np.concatenate([left, right], axis=1))
    degrees = np.full(merged.shape[0], order, dtype=np.int64)
    return multi_index._columns_of_tuples(n, order, merged, degrees) - offsets[order]


@functools.lru_cache(maxsize=8)
def plan(n: int, order: int) -> Plan:
    """The contraction plan for n variables at order K >= 3."""
    if order < 3:
        raise ValueError(f"the top-vertex contraction is for orders >= 3 (order 2 is feynmlp.hessian), got {order}")
    offsets, _, padded = multi_index.layout(n, order)
    top = int(offsets[order])
    splits, tiles, tile_ptr, targets = [], [], [0], []
    position = 0
    for k1 in _first_splits(order):
        k2 = order - k1
        a0, a1 = int(offsets[k1]), int(offsets[k1 + 1])
        b0, b1 = int(offsets[k2]), int(offsets[k2 + 1])
        alpha, beta = padded[a0:a1, :k1], padded[b0:b1, :k2]
        first_a, first_b = alpha[:, 0], beta[:, 0]
        # Allowed pairs: first(alpha) <= first(beta); the target is the merged sorted tuple.
        rows, cols = np.nonzero(first_a[:, None] <= first_b[None, :])
        table = np.full((a1 - a0, b1 - b0), -1, dtype=np.int32)
        table[rows, cols] = _targets_of_pairs(n, order, alpha[rows], beta[cols])
        splits.append((a0, a1 - a0, b0, b1 - b0, position))
        position += table.size
        targets.append(table.reshape(-1))
        for c0 in range(0, b1 - b0, _TILE):
            c1 = min(c0 + _TILE, b1 - b0)
            # Rows whose first variable is at most the tile's last beta's first variable.
            needed = int(np.searchsorted(first_a, first_b[c1 - 1], side="right"))
            if needed:
                tiles.append((c0, c1, needed, len(splits) - 1))
        tile_ptr.append(len(tiles))
    lower = padded[:offsets[order]]
    first_power = (lower == lower[:, :1]).sum(axis=1).astype(np.float64)
    first_power[0] = 0.0
    upper = padded[top:offsets[order + 1], :order]
    first_count = (upper == upper[:, :1]).sum(axis=1).astype(np.float64)
    alpha = padded[offsets[order - 1]:offsets[order], :order - 1]
    pairs = np.repeat(alpha, n, axis=0), np.tile(np.arange(n), alpha.shape[0])[:, None]
    pair_targets = _targets_of_pairs(n, order, *pairs).astype(np.int32).reshape(alpha.shape[0], n)
    first_variable = np.ascontiguousarray(alpha[:, 0])
    tables, valence, weight = _padded_tables(n, order - 1)
    # _contract_points accumulates per target, and within a target per run of one valence: the
    # stable sort keeps each target's rows in _padded_tables' order of valence (one run each).
    by_target = np.argsort(tables[:, 0], kind="stable")
    tables, valence, weight = tables[by_target], valence[by_target], weight[by_target]
    tiles = np.array(tiles, dtype=np.int64).reshape(-1, 4)
    first_top = int(offsets[order - 1])
    top_rows = pair_targets.shape[0]
    chunks = np.array(list(range(0, top_rows, _CHUNK)) + [top_rows], dtype=np.int64)
    chunk_rows = np.searchsorted(tables[:, 0], np.concatenate([[first_top], first_top + chunks[1:]]))
    chunk_tiles = tile_ptr[0] + np.searchsorted(tiles[tile_ptr[0]:tile_ptr[1], TILE_START], chunks)
    # Split 0 (|alpha| = 1) runs per chunk of the order-(K-1) rows; segment 0 has the rest.
    segments = [(0, chunk_rows[0], tile_ptr[1], tile_ptr[-1], 0, 0)]
    segments += [(chunk_rows[c], chunk_rows[c + 1], chunk_tiles[c], chunk_tiles[c + 1], chunks[c], chunks[c + 1])
                 for c in range(len(chunks) - 1)]
    result = Plan(np.array(splits, dtype=np.int64), tiles, np.concatenate(targets), first_power, first_count,
                  pair_targets, first_variable, tables, valence, weight, np.array(segments, dtype=np.int64))
    for field in dataclasses.fields(result):
        getattr(result, field.name).setflags(write=False)
    return result


def _padded_tables(n: int, order: int):
    """All vertex tables of `order` >= 2 in one (rows, order + 1) array padded with -1."""
    raw = multi_index.vertex_tables(n, order)
    parts, valence, weight = [], [], []
    for m in range(2, order + 1):
        table = raw[2 * (m - 2)]
        block = np.full((table.shape[0], order + 1), -1, dtype=np.int64)
        block[:, :m + 1] = table
        parts.append(block)
        valence.append(np.full(table.shape[0], m, dtype=np.int64))
        weight.append(raw[2 * (m - 2) + 1])
    return np.concatenate(parts), np.concatenate(valence), np.concatenate(weight)


def contract(p: Plan, series, bounds, derivatives, propagators, weights, result: np.ndarray,
             below: np.ndarray) -> None:
    """The order-K and order-(K-1) coefficients of the outputs (K >= 3), by the contraction plan p.

    Args:
        series: (points, M'', neurons of all hidden layers) pre-activation series up to
            pushed_order(K), graded layout; hidden layer l owns the neuron columns
            bounds[l] .. bounds[l + 1] - 1.
        bounds: (layers + 1,) the layers' column bounds in series.
        derivatives: (points, K+1, neurons of all hidden layers) s^(m)(z0)/m!.
        propagators: (outputs, points, neurons of all hidden layers) g = d output / d activation.
        weights: the weight matrices between consecutive hidden layers, W(l+1) (n_{l+1}, n_l).
        result: (outputs, points, M_K), overwritten with the coefficients of order exactly K
            times gamma_first, i.e. not yet divided by p.first_count (the caller does that in
            the copy to its result, saving a pass over the largest array).
        below: (outputs, points, M_{K-1}), overwritten with the coefficients of order K-1.

    Every term is a sum over neurons of per-neuron products, so all hidden layers are one
    wide layer here: one GEMM with a long inner dimension and one scatter per tile, not one
    per layer. Runs in the caller's thread, with BLAS held to one thread by the caller.
    """
    dtype = result.dtype
    order = derivatives.shape[1] - 1
    points, _, neurons = derivatives.shape
    n = p.pair_targets.shape[1]
    outputs = propagators.shape[0]
    # c_j = (j + 1) s_{j+1}: the coefficients of h'(y) = sum_j c_j y^j, j = 1 .. K-1.
    coefficients = workspace.array("coefficients", (points, order - 1, neurons), dtype)
    np.multiply(derivatives[:, 2:, :], np.arange(2, order + 1, dtype=dtype)[None, :, None], out=coefficients)
    partners = workspace.array("partners", (points, outputs, n + 1, neurons), dtype)
    _partners(series, bounds, derivatives, coefficients, propagators, weights, n, partners)
    result[...] = 0.0
    below[...] = 0.0
    _contract_block(p, series, derivatives, coefficients, propagators, partners, result, below)


def _contract_block(p: Plan, series, derivatives, coefficients, propagators, partners, result, below) -> None:
    """_contract_points on every point of the arrays, with this thread's work arrays.

    The arrays go to the kernel as (rows, neurons) matrices or flat (index arithmetic in the
    kernel): Numba's code for array views and indices in three or more dimensions was most of
    its compile time."""
    dtype = result.dtype
    points, pushed, neurons = series.shape
    outputs = propagators.shape[0]
    n = p.pair_targets.shape[1]
    tiles = p.tiles
    chunk = int((p.segments[:, SEGMENT_TOP_STOP] - p.segments[:, SEGMENT_TOP_START]).max())
    tile_entries = (tiles[:, TILE_STOP] - tiles[:, TILE_START]) * tiles[:, TILE_ROWS]
    largest = outputs * max(chunk * (n + 1), int(tile_entries.max(initial=0)))
    # Work arrays of this thread, reused from call to call (feynmlp.workspace).
    r = workspace.array("contract r", (pushed, neurons), dtype)                  # R = h'(dz), orders < K-1
    r_top = workspace.array("contract r_top", (max(1, chunk), neurons), dtype)   # R of one chunk of order K-1
    p_top = workspace.array("contract p_top", (max(1, chunk), neurons), dtype)   # P of the same chunk
    scaled = workspace.array("contract scaled", (pushed * outputs, neurons), dtype)  # g * D, row j * outputs + o
    buffer = workspace.array("contract product", (max(1, largest),), dtype)      # one matrix product
    if not all(a.flags.c_contiguous for a in (series, derivatives, coefficients, propagators, partners, result, below)):
        raise ValueError("the top-vertex kernel takes C-contiguous arrays")
    ints, scalars = blas.scratch(dtype)
    _contract_points(
        blas.gemm(dtype), ints, scalars,
        *(a.reshape(-1, neurons) for a in (series, derivatives, coefficients, propagators, partners)),
        result.reshape(outputs * points, -1), below.reshape(outputs * points, below.shape[2]), p.first_power,
        p.splits, tiles, p.targets, p.first_variable, p.pair_targets.reshape(-1), p.tables.reshape(-1), p.tables.shape[1],
        p.valence, p.weight, p.segments, r, r_top, p_top, scaled, buffer, points, outputs, n)


def _partners(series, bounds, derivatives, coefficients, propagators, weights, n, partners):
    """Fill partners (points, outputs, n + 1, neurons of all layers): in layer l's columns, the
    pulled-back partners V(l) of the top-order products (step 3 of the module docstring) and,
    last, g(l)."""
    points, outputs, dtype = partners.shape[0], partners.shape[1], partners.dtype
    accumulated = None  # Y~(l+1), (points * outputs * n, neurons of layer l+1)
    for l in range(len(bounds) - 2, -1, -1):
        columns = slice(bounds[l], bounds[l + 1])
        width = bounds[l + 1] - bounds[l]
        g = propagators[:, :, columns].transpose(1, 0, 2)  # (points, outputs, neurons)
        partners[:, :, n, columns] = g
        pulled = workspace.array(("pulled", l % 2), (points, outputs, n, width), dtype)
        if accumulated is None:
            pulled[...] = 0.0  # V(L) = 0: nothing above the last hidden layer
        else:
            # V(l) = W_{l+1}^T Y~(l+1): one matrix product over all points, outputs and variables.
            np.matmul(accumulated, weights[l], out=pulled.reshape(-1, width))
        partners[:, :, :n, columns] = pulled
        if l:
            # Y~(l) = Y(l) + s_1(l) V(l), with Y = g c_1 D_1.
            gc = g * coefficients[:, None, 0, columns]
            term = workspace.array("partner term", pulled.shape, dtype)
            np.multiply(gc[:, :, None, :], series[:, None, 1:1 + n, columns], out=term)
            pulled *= derivatives[:, None, None, 1, columns]
            pulled += term
            accumulated = pulled.reshape(-1, width)


@njit(nogil=True, cache=True, error_model="numpy")
def _contract_points(gemm, ints, scalars, series, derivatives, coefficients, propagators, partners, result, below,
                     first_power, splits, tiles, targets, first_variable, pair_targets, tables, width_t, valence, weight,
                     segments, r, r_top, p_top, scaled, buffer, points, outputs, n):  # pragma: no cover - compiled
    """Every point, all hidden layers side by side as one wide layer, added into result (and
    below).

    Per point, segment by segment of the plan: segment 0 composes R's orders < K-1 from the
    tables and runs the splits |alpha| >= 2; segment 1 + c composes R and P of chunk c of the
    order-(K-1) rows, runs the split |alpha| = 1 over the chunk's betas and the chunk's
    P^T [V | g].

    Written for a short compile (each callee, allocation, array view or index of more
    dimensions costs Numba and LLVM tens of milliseconds): one function whose only callee is
    blas.product; the work arrays r, r_top, p_top, scaled = g D and buffer passed in; the
    arrays as (rows, neurons) matrices (series, derivatives, coefficients: row p * rows per
    point + j; propagators, result, below: row o * points + p; partners: row (p * outputs + o)
    * (n + 1) + j; scaled: row j * outputs + o, so that one product serves every output) or
    flat (tables: rows of width_t, the target then the sources; pair_targets: n per row of
    order K-1). The loops over neurons index [row, b], not [row * neurons + b]: with b >= 0
    known, LLVM vectorises them.
    """
    neurons = series.shape[1]
    pushed = series.shape[0] // points
    n_derivatives = derivatives.shape[0] // points     # K + 1
    n_coefficients = coefficients.shape[0] // points   # K - 1
    # The accumulators of one target, one valence and one term, allocated here: LLVM vectorises their loops
    # only when it knows they share no memory with the arguments (passed in, K = 4 ran 14 % slower).
    # np.empty and a loop, not np.zeros: np.zeros costs a cold compile 0.2 s more (its own overloads).
    acc_r = np.empty(neurons, dtype=r.dtype)
    acc_p = np.empty(neurons, dtype=r.dtype)
    term = np.empty(neurons, dtype=r.dtype)
    q = np.empty(neurons, dtype=r.dtype)
    for b in range(neurons):
        acc_r[b] = 0.0
        acc_p[b] = 0.0
        term[b] = 0.0
        q[b] = 0.0
    for p in range(points):
        dz = p * pushed                                         # this point's rows
        cz = p * n_coefficients
        sz = p * n_derivatives
        # R below order K-1 starts as its linear part c_1 D (row 0, the constant, is never read).
        for j in range(1, pushed):
            for b in range(neurons):
                r[j, b] = coefficients[cz, b] * series[dz + j, b]
        for j in range(pushed):
            for o in range(outputs):
                g = o * points + p
                for b in range(neurons):
                    scaled[j * outputs + o, b] = series[dz + j, b] * propagators[g, b]
        for segment in range(segments.shape[0]):
            i0 = segments[segment, SEGMENT_ROW_START]
            i1 = segments[segment, SEGMENT_ROW_STOP]
            start = segments[segment, SEGMENT_TOP_START]
            rows = segments[segment, SEGMENT_TOP_STOP] - start
            # Table rows i0..i1-1, sorted by target: R = h'(dz) added into r below order K-1; R
            # and P (the order-(K-1) part of h(dz), s_m = derivatives[m]) written to r_top and
            # p_top for the chunk. Each target is accumulated in acc_r (acc_p) and written once.
            for i in range(i0, i1):
                m = valence[i]
                w = weight[i]
                row = i * width_t
                target = tables[row]
                # The products of one valence are summed in q, then weighted by c_{m-1} (R) and
                # s_m (P) once per target and valence (the rows of a target come by valence).
                if m == 2:
                    a1 = dz + tables[row + 1]
                    a2 = dz + tables[row + 2]
                    for b in range(neurons):
                        q[b] += w * series[a1, b] * series[a2, b]
                else:
                    a1 = dz + tables[row + 1]
                    a2 = dz + tables[row + 2]
                    for b in range(neurons):
                        term[b] = w * series[a1, b] * series[a2, b]
                    for k in range(3, m):
                        source = dz + tables[row + k]
                        for b in range(neurons):
                            term[b] *= series[source, b]
                    last_source = dz + tables[row + m]
                    for b in range(neurons):
                        q[b] += term[b] * series[last_source, b]
                top_target = target >= pushed
                last = i + 1 == i1 or tables[row + width_t] != target
                if last or valence[i + 1] != m:
                    # (acc_p is only read for targets of order K-1; below, it is reset unread.)
                    cm = cz + m - 1
                    sm = sz + m
                    for b in range(neurons):
                        acc_r[b] += coefficients[cm, b] * q[b]
                        acc_p[b] += derivatives[sm, b] * q[b]
                        q[b] = 0.0
                if last:
                    if top_target:
                        # Order K-1 has no linear part: every such target is written here, once.
                        at = target - pushed - start
                        for b in range(neurons):
                            r_top[at, b] = acc_r[b]
                            p_top[at, b] = acc_p[b]
                            acc_r[b] = 0.0
                            acc_p[b] = 0.0
                    else:
                        for b in range(neurons):
                            r[target, b] += acc_r[b]
                            acc_r[b] = 0.0
                            acc_p[b] = 0.0
            # The segment's tiles: the right operand is r (row = beta's column) in segment 0,
            # r_top (row = beta's column - pushed - start) in the chunks.
            right = r if segment == 0 else r_top
            shift = 0 if segment == 0 else pushed + start
            # All outputs in one product: the rows of `scaled` are (j, output) pairs.
            for t in range(segments[segment, SEGMENT_TILE_START], segments[segment, SEGMENT_TILE_STOP]):
                c0 = tiles[t, TILE_START]
                width = tiles[t, TILE_STOP] - c0
                count = tiles[t, TILE_ROWS]
                s = tiles[t, TILE_SPLIT]
                a0 = splits[s, SPLIT_ALPHA_START]
                n_beta = splits[s, SPLIT_BETA_COUNT]
                # buffer[:count * outputs * width] = left[a0 * outputs:(a0 + count) * outputs]
                # @ right[b:b + width].T, both row-major with `neurons` columns; in BLAS's
                # column-major terms C^T = B^T' A^T.
                blas.product(gemm, ints, scalars, TRANSPOSED, PLAIN, width, count * outputs, neurons,
                             blas.at(right, (splits[s, SPLIT_BETA_START] + c0 - shift) * neurons), neurons,
                             blas.at(scaled, a0 * outputs * neurons), neurons, blas.at(buffer, 0), width)
                for a in range(count):
                    power = first_power[a0 + a]
                    base = splits[s, SPLIT_TARGETS] + a * n_beta + c0
                    for o in range(outputs):
                        out = o * points + p
                        row = (a * outputs + o) * width
                        for k in range(width):
                            target = targets[base + k]
                            if target >= 0:
                                result[out, target] += power * buffer[np.uint64(row + k)]
            if rows == 0:
                continue
            # P^T [V | g] for all outputs: the pulled-back valence-2 terms and the order-(K-1)
            # coefficients, buffer[:rows * outputs * (n + 1)] = p_top[:rows] @ partners[p].T.
            blas.product(gemm, ints, scalars, TRANSPOSED, PLAIN, outputs * (n + 1), rows, neurons,
                         blas.at(partners, p * outputs * (n + 1) * neurons), neurons, blas.at(p_top, 0), neurons,
                         blas.at(buffer, 0), outputs * (n + 1))
            for a in range(rows):
                # gamma_first of alpha + e_j: 1 below alpha's first variable f, alpha_f + 1
                # at f, alpha_f above (the first-variable rule's normalisation, undone).
                f = first_variable[start + a]
                power = first_power[pushed + start + a]
                pairs = (start + a) * n
                for o in range(outputs):
                    out = o * points + p
                    product = (a * outputs + o) * (n + 1)
                    for j in range(n):
                        weight_j = 1.0 if j < f else (power + 1.0 if j == f else power)
                        result[out, pair_targets[pairs + j]] += weight_j * buffer[product + j]
                    below[out, start + a] += buffer[product + n]
