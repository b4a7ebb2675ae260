"""Order 2 by the topmost vertex in one compiled pass per block of points.

In: a network with a linear output (weights, biases, one activation per hidden layer), points
(batch, n_in), the expansion variables. Out: every coefficient up to order 2, written into
(batch, outputs, M) in feynmlp.multi_index order: the value, the gradient, and the Hessian's
upper triangle (d^2 f / dx_i dx_j for i < j, half of it for i = j).

Why a path of its own: at K = 2 the topmost-vertex sum (docs/mathematics.md, 'Order 2') is

    d^2 f / dx_i dx_j = sum_l sum_b D(l)_bi w(l)_b D(l)_bj,   w(l) = g(l) * s''(z(l)),

with D(l) the Jacobian of layer l's pre-activations in the variables, D(1) = W1[:, vars] and
D(l+1) = W(l+1) diag(s'(z(l))) D(l). Everything in it besides the Jacobians (the values, s',
s'', the output propagators g) is one number per neuron and point. The forward pass runs here
(NumPy's products and the generated taylor_derivatives); everything after it runs in two
kernels: _backward for g, the values and the gradient; _hessians for layer 1's part of every
Hessian (D(1) is the same at every point, so that part is one product for all points), then
the deeper layers' Jacobians and their contraction a few points at a time: the Jacobians of
all hidden layers side by side for a sub-block of points stay in the core's cache from the
product that makes them to the one that contracts them.

Measured for 32 -> 64^3 -> 1 at 256 points on two cores: the general path (top_vertex.contract,
which now starts at K = 3; it kept every layer's series for the whole block in memory and
passed over it per layer and step) took 10.0 ms; this path's first version 7.4 ms; 5.3 ms with
the rest of session 4's changes; 4.7-4.9 ms with layer 1's part as one product and the
backward pass compiled (its NumPy calls had taken a fifth of the time).
"""
from __future__ import annotations

import itertools

import numpy as np
from numba import njit

from . import blas, threads, workspace
from .blas import PLAIN, TRANSPOSED
from .kernels import call_kernel

# Bytes of the Jacobians of one sub-block of points (all hidden layers side by side): the
# sub-block stays in a core's L2 cache between the products that make and contract it.
_SUB_BLOCK_BYTES = 384 * 2**10
# The Hessian is symmetric: its rows are contracted in this many blocks, each only with the
# columns on and right of the diagonal. Two blocks do 3/4 of the full product (4 % faster at
# 32 variables on two cores; three blocks, of odd sizes for BLAS, were slower than one).
_DIAGONAL_BLOCKS = 2
# Layer 1's part of the Hessians is one product for all points of a thread (w(1) @ pairs) when
# it has at least this many points per variable, else a part of each point's contraction:
# building pairs costs n_1 n(n+1)/2 products however few the points. Measured on one core, the
# two break even at 12-16 points for 32 variables and 16-32 points for 64.
_SHARED_FIRST_LAYER_POINTS_PER_VARIABLE = 0.5


def expand(weights, biases, derivative_kernels, points, variables, dtype, result, lo, hi) -> None:
    """Coefficients up to order 2 of points lo..hi-1, into result[lo:hi] (batch, outputs, M);
    derivative_kernels: per hidden layer, the activation's kernel module of order 2.

    Runs in the caller's thread, with BLAS held to one thread by the caller (forward.py)."""
    dtype = np.dtype(dtype)
    count, n = hi - lo, variables.size
    hidden = [np.ascontiguousarray(w, dtype=dtype) for w in weights[:-1]]
    last = np.ascontiguousarray(weights[-1], dtype=dtype)
    widths = [w.shape[0] for w in hidden]
    bounds = [0, *itertools.accumulate(widths)]
    neurons, outputs, widest = bounds[-1], last.shape[0], max(widths)
    # s^(m)(z)/m!, m = 0, 1, 2, of every hidden neuron: layer l's part of the buffer is
    # (points, width, 3), from the generated taylor_derivatives. Everything after the forward
    # pass is compiled (_backward, _hessians).
    derivatives = workspace.array("hessian derivatives", (3 * count * neurons,), dtype)
    z = workspace.array("hessian pre-activations", (count * widest,), dtype)
    activated = points[lo:hi]
    for l, w in enumerate(hidden):
        z_l = z[:count * widths[l]].reshape(count, widths[l])
        np.matmul(activated, w.T, out=z_l)
        z_l += np.asarray(biases[l], dtype=dtype)
        layer = derivatives[3 * count * bounds[l]:3 * count * bounds[l + 1]].reshape(-1, 3)
        call_kernel(derivative_kernels[l], "taylor_derivatives", z_l.reshape(-1), layer)
        activated = layer.reshape(count, widths[l], 3)[:, :, 0]
    out = result[lo:hi]
    first = np.ascontiguousarray(hidden[0][:, variables])  # (n_1, n): D(1)
    sub = int(max(1, min(count, _SUB_BLOCK_BYTES // (n * neurons * dtype.itemsize))))
    slope = workspace.array("hessian slope", (count, neurons), dtype)
    weight = workspace.array("hessian weight", (outputs * count, neurons), dtype)
    back = workspace.array("hessian propagators", (2, outputs * count, widest), dtype)
    jacobians = workspace.array("hessian jacobians", (sub * n, neurons), dtype)
    scaled_in = workspace.array("hessian scaled input", (sub * n, widest), dtype)
    scaled = workspace.array("hessian scaled", (n * outputs, neurons), dtype)
    product = workspace.array("hessian product", (n * outputs, n), dtype)
    shared = count >= _SHARED_FIRST_LAYER_POINTS_PER_VARIABLE * n
    pairs = workspace.array("hessian first-layer pairs", (widths[0], n * (n + 1) // 2) if shared else (1, 1), dtype)
    ints = np.zeros(8, dtype=np.int32)
    scalars = np.array([1.0, 0.0], dtype=dtype)
    # The BLAS operands by address, in the order _hessians reads them (hidden[1:] are the
    # weights between hidden layers).
    address = blas.operands(jacobians, scaled_in, scaled, product, ints, scalars, pairs, weight, out, first, back,
                            *hidden[1:])
    gemm = blas.gemm(dtype)
    sizes = np.array([count, n, outputs, sub, dtype.itemsize, -(-n // _DIAGONAL_BLOCKS), shared], dtype=np.int64)
    bounds = np.array(bounds, dtype=np.int64)
    out = out.reshape(count * outputs, -1)
    _backward(gemm, derivatives, last, np.asarray(biases[-1], dtype=dtype), slope, weight, back, out, ints, bounds,
              address, sizes)
    _hessians(gemm, first, slope, weight, out, jacobians, scaled_in, scaled, product, pairs, ints, bounds,
              address, sizes)


@njit(nogil=True, cache=True, error_model="numpy")
def _backward(gemm, derivatives, last, last_bias, slope, weight, back, out, ints, bounds, address,
              sizes):  # pragma: no cover - compiled
    """The values and gradients of every point into out (rows p * outputs + o), s' as (points,
    neurons) into slope, and the contraction weights w(l) = 2 g(l) s''(l)/2 into weight (rows
    o * count + p), from the hidden neurons' derivatives (layer l's block: points x width x 3).

    The output propagators g(l) = d f / d a(l) run backwards in `back` (rows o * count + p),
    one product per layer for all points.
    """
    count = sizes[0]
    n = sizes[1]
    outputs = sizes[2]
    item = sizes[4]
    neurons = bounds[bounds.shape[0] - 1]
    layers = bounds.shape[0] - 1
    first_width = bounds[1]
    ints_at = address[4]
    one = address[5]  # the scalars 1 and 0, for alpha and beta
    zero = one + item
    wide = back.shape[2]
    width = out.shape[1]
    # The values, and s' of every neuron as (points, neurons).
    top = 3 * count * bounds[layers - 1]
    top_width = neurons - bounds[layers - 1]
    for p in range(count):
        for o in range(outputs):
            value = last_bias[o]
            for b in range(top_width):
                value += last[o, b] * derivatives[top + 3 * (p * top_width + b)]
            out[p * outputs + o, 0] = value
    for l in range(layers):
        c0 = bounds[l]
        w_l = bounds[l + 1] - c0
        for p in range(count):
            at = 3 * (count * c0 + p * w_l) + 1
            for b in range(w_l):
                slope[p, c0 + b] = derivatives[at + 3 * b]
    # Backward: g (rows o * count + p) starts as the output weights, the same at every point.
    current = 0
    for o in range(outputs):
        for p in range(count):
            for b in range(top_width):
                back[0, o * count + p, b] = last[o, b]
    for l in range(layers - 1, -1, -1):
        c0 = bounds[l]
        w_l = bounds[l + 1] - c0
        for o in range(outputs):
            for p in range(count):
                r = o * count + p
                at = 3 * (count * c0 + p * w_l) + 2
                for b in range(w_l):
                    g = back[current, r, b]
                    weight[r, c0 + b] = 2.0 * g * derivatives[at + 3 * b]
                    back[current, r, b] = g * slope[p, c0 + b]  # now d f / d z(l)
        if l:
            # back[other] (rows x width_(l-1)) = back[current] @ W(l); column-major:
            # C (width_(l-1) x rows) = W(l)' (width_(l-1) x width_l) @ back[current]'.
            width_out = bounds[l] - bounds[l - 1]
            blas.product(gemm, ints, ints_at, one, zero, PLAIN, PLAIN, width_out, outputs * count, w_l,
                         address[10 + l], width_out, address[10] + item * current * outputs * count * wide, wide,
                         address[10] + item * (1 - current) * outputs * count * wide, wide)
            current = 1 - current
    # The gradient, per output: out[p * outputs + o, 1:1 + n] = (d f / d z(1))[o, p] @ D(1).
    # Column-major: C (n x points, ld outputs * width) = first' (n x n_1) @ back' (n_1 x points).
    for o in range(outputs):
        blas.product(gemm, ints, ints_at, one, zero, PLAIN, PLAIN, n, count, first_width,
                     address[9], n, address[10] + item * (current * outputs + o) * count * wide, wide,
                     address[8] + item * (o * width + 1), outputs * width)


@njit(nogil=True, cache=True, error_model="numpy")
def _hessians(gemm, first, slope, weight, out, jacobians, scaled_in, scaled, product, pairs, ints, bounds,
              address, sizes):  # pragma: no cover - compiled
    """Hessian upper triangles of every point into out[:, 1 + n:] (rows p * outputs + o), from
    s' (points x neurons) and the contraction weights (rows o * count + p) of _backward.

    With sizes[6] set (`shared`), layer 1's part, D(1)^T diag(w(1)) D(1) with D(1) the same
    at every point, is one product for all points: w(1) (points x n_1) times pairs (n_1 x
    n(n+1)/2), pairs[b, (i, j)] = D(1)_bi D(1)_bj. The rest, per sub-block of `sub` points:
    the Jacobians, rows (point, variable) and all hidden layers' neurons side by side as
    columns (layer 1's are the weights' columns; layer l + 1's are one product, (D(l) * s'(l))
    W(l+1)^T, over the whole sub-block); then per point one product (D * w)^T-by-D over the
    neurons of layers 2.. (all layers, without `shared`) for all outputs at once (rows of
    `scaled` are (variable, output) pairs), added to layer 1's part. One function, the BLAS
    operands passed as addresses (`address`: jacobians, scaled_in, scaled, product, ints,
    scalars, pairs, weight, out, first, back, then W(l+1) for l = 1 .. layers - 1): as in
    top_vertex._contract_points, for a short compile.
    """
    count = sizes[0]
    n = sizes[1]
    outputs = sizes[2]
    sub = sizes[3]
    item = sizes[4]
    step = sizes[5]
    neurons = bounds[bounds.shape[0] - 1]
    layers = bounds.shape[0] - 1
    first_width = bounds[1]
    shared = sizes[6] == 1  # layer 1's part as one product for all points
    low = first_width if shared else 0  # the neurons low.. are contracted per point
    deep = neurons - low
    jacobians_at = address[0]
    scaled_in_at = address[1]
    ints_at = address[4]
    one = address[5]  # the scalars 1 and 0, for alpha and beta
    zero = one + item
    wide = scaled_in.shape[1]
    base = 1 + n
    width = out.shape[1]
    if shared:
        # pairs[b, (i, j)] = D(1)_bi D(1)_bj for i <= j in multi_index order, halved on the
        # diagonal. Per output o: out[p * outputs + o, base:] = w(1)[o, p, :] @ pairs; column-
        # major: C (triangle x points, ld outputs * width) = pairs' (triangle x n_1) @ w(1)'.
        for b in range(first_width):
            column = 0
            for i in range(n):
                f = first[b, i]
                pairs[b, column] = 0.5 * f * f
                for j in range(1, n - i):
                    # unsigned: no wraparound test, so LLVM vectorises
                    pairs[b, np.uint64(column + j)] = f * first[b, np.uint64(i + j)]
                column += n - i
        triangle = pairs.shape[1]
        for o in range(outputs):
            blas.product(gemm, ints, ints_at, one, zero, PLAIN, PLAIN, triangle, count, first_width,
                         address[6], triangle, address[7] + item * o * count * neurons, neurons,
                         address[8] + item * (o * width + base), outputs * width)
        if deep == 0:
            return
    else:
        for r in range(count * outputs):
            for c in range(base, width):
                out[r, c] = 0.0
    # Layer 1's Jacobian is the same at every point, and the products below write only the
    # other layers' columns: its columns are filled once, for every sub-block.
    for r in range(sub * n):
        for b in range(first_width):
            jacobians[r, b] = first[b, r % n]
    for p0 in range(0, count, sub):
        points = min(sub, count - p0)
        rows = points * n
        for l in range(1, layers):
            c0 = bounds[l - 1]
            width_in = bounds[l] - c0
            for r in range(rows):
                p = p0 + r // n
                for b in range(width_in):
                    column = np.uint64(c0 + b)  # known >= 0: no wraparound test, so LLVM vectorises
                    scaled_in[r, b] = jacobians[r, column] * slope[p, column]
            # jacobians[:rows, bounds[l]:bounds[l + 1]] = scaled_in[:rows, :width_in] @ W(l+1)^T;
            # column-major: C (width_out x rows, ld neurons) = W^T' (width_in x width_out)^T @ B.
            blas.product(gemm, ints, ints_at, one, zero, TRANSPOSED, PLAIN, bounds[l + 1] - bounds[l], rows,
                         width_in, address[10 + l], width_in, scaled_in_at, wide, jacobians_at + item * bounds[l],
                         neurons)
        for q in range(points):
            p = p0 + q
            for i in range(n):
                for o in range(outputs):
                    r = o * count + p
                    for b in range(low, neurons):
                        column = np.uint64(b)
                        scaled[i * outputs + o, column] = jacobians[q * n + i, column] * weight[r, column]
            # product (n * outputs x n) = scaled @ D_p^T over the neurons low.., only its
            # blocks on and right of the diagonal (the Hessian is symmetric): rows i0..i1-1
            # times columns i0..n-1. Column-major: product^T = D_p' scaled^T.
            for i0 in range(0, n, step):
                i1 = min(n, i0 + step)
                blas.product(gemm, ints, ints_at, one, zero, TRANSPOSED, PLAIN, n - i0, (i1 - i0) * outputs, deep,
                             jacobians_at + item * ((q * n + i0) * neurons + low), neurons,
                             address[2] + item * (i0 * outputs * neurons + low), neurons,
                             address[3] + item * (i0 * outputs * n + i0), n)
            for o in range(outputs):
                column = base
                for i in range(n):
                    row = i * outputs + o
                    out[p * outputs + o, column] += 0.5 * product[row, i]
                    for j in range(i + 1, n):
                        out[p * outputs + o, column + j - i] += product[row, j]
                    column += n - i


def workspace_bytes(n: int, widths, batch: int, itemsize: int = 8) -> int:
    """Bytes of the work arrays of expand for `batch` points (the memory check): per neuron and
    point the three derivatives, the pre-activation, s', the contraction weights and two
    propagators per output; per thread one sub-block's Jacobians and their scaled copy, one
    point's product and layer 1's pairs."""
    hidden, outputs = widths[:-1], widths[-1]
    neurons = sum(hidden)
    per_point = (3 + 1 + 1 + outputs) * neurons + 2 * outputs * max(hidden)
    per_thread = _SUB_BLOCK_BYTES * 2 + itemsize * (n * outputs * (neurons + n) + hidden[0] * n * (n + 1) // 2)
    return itemsize * per_point * batch + threads.count() * per_thread
