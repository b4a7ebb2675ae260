"""The top-vertex scheme at order 2: values, gradients and Hessians in one compiled pass per
block of points.

In: a feynmlp.schemes.Request of order 2 for a network with a linear output. Out: every
coefficient up to order 2, written into (points, outputs, M) in feynmlp.multi_index order: the
value, the gradient, and the Hessian's upper triangle (d^2 f / dx_i dx_j for i < j, half of it
for i = j).

Why a path of its own: at K = 2 the topmost-vertex sum (docs/mathematics.md, 'Order 2') is

    d^2 f / dx_i dx_j = sum_l sum_b D(l)_bi w(l)_b D(l)_bj,   w(l) = g(l) * s''(z(l)),

with D(l) the Jacobian of layer l's pre-activations in the variables, D(1) = W1[:, vars] and
D(l+1) = W(l+1) diag(s'(z(l))) D(l). Everything in it besides the Jacobians (the values, s',
s'', the output propagators g) is one number per neuron and point: feynmlp.push gives them
(the push of order 0 and the output propagators, shared with the contraction of orders >= 3).
One kernel, _hessians, does the rest: the gradient; layer 1's part of every Hessian (D(1) is
the same at every point, so that part is one product for all points); then the deeper layers'
Jacobians and their contraction a few points at a time: the Jacobians of all hidden layers
side by side for a sub-block of points stay in the core's cache from the product that makes
them to the one that contracts them.
"""
from __future__ import annotations

import threading
import typing

import numpy as np
from numba import njit

from . import blas, memory, multi_index, push, threads, workspace
from .blas import PLAIN, TRANSPOSED
from .kernels import Kernels, resolve_kernels
from .schemes import ACTIVATION_FLOPS_PER_ORDER

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


class Prepared(typing.NamedTuple):
    """What HessianScheme.plan settles once per request."""

    request: object
    kernels: Kernels
    first: np.ndarray    # D(1) = W1[:, vars], (n_1, n), C-contiguous
    layers: push.Layers


class HessianScheme:
    """Order 2 by the topmost vertex (docs/mathematics.md, 'Order 2')."""

    name = "top-vertex"

    def serves(self, request) -> bool:
        return request.order == 2 and request.output_activation is None and len(request.weights) >= 2

    def points_per_chunk(self, request) -> int:
        return memory.points_per_chunk(request.batch, 2 * request.hidden_neurons, multi_index.count(request.n_vars, 1),
                                     request.itemsize)

    def table_bytes(self, request) -> int:
        return 0

    def workspace_bytes(self, request, points: int) -> int:
        """Per neuron and point: the three derivatives, the contraction weights and the
        propagators per output; per point and output: the slopes g(1) s'(1), and the two
        layer-sized arrays that make the propagators; the push of order 0 (two series buffers,
        the composed one, the values and derivatives of the widest layer as the kernel writes
        them). Per thread: one sub-block's Jacobians and their scaled copy, one point's product
        and layer 1's pairs."""
        n, itemsize, outputs = request.n_vars, request.itemsize, request.outputs
        hidden = request.widths[:-1]
        neurons = sum(hidden)
        per_point = (3 + 2 * outputs) * neurons + outputs * (2 * max(hidden) + hidden[0]) + 7 * max(hidden)
        per_thread = _SUB_BLOCK_BYTES * 2 + itemsize * (n * outputs * (neurons + n) + hidden[0] * n * (n + 1) // 2)
        return itemsize * per_point * points + threads.count() * per_thread

    def flops(self, request, points: int) -> int:
        """N = sum of the hidden widths, T = n(n+1)/2, blocks of points as
        feynmlp.threads.blocks splits them:

        FLOPs = 2 n_1 n_0 B + sum over later layers of 2 n_l n_(l-1) B      forward values
              + sum over hidden layers of 20 n_l B                           s, s', s''/2
              + sum over hidden layers of 3 n_out n_l B                      weights w, next g
              + sum over hidden layers but the last of 2 n_out n_(l+1) n_l B  propagators
              + 2 n_out n n_1 B                                              gradient
              + sum over hidden layers l >= 2 of (n n_(l-1) + 2 n n_(l-1) n_l) B  Jacobians
              + per block of b points, with C the neurons contracted per point:
                if b >= n/2 (layer 1 shared): 2 n_1 T + 2 n_out n_1 T b, C = N - n_1   w(1) @ pairs
                else C = N
              + b (n_out n C + sum over the diagonal blocks [i0, i1) of
                   2 (n - i0) (i1 - i0) n_out C)                             (w D)^T D per point
        """
        sizes = [request.weights[0].shape[1], *request.widths]
        n, n_out, hidden = request.n_vars, request.outputs, sizes[1:-1]
        neurons, triangle = sum(hidden), n * (n + 1) // 2
        flops = sum(2 * upper * lower * points for lower, upper in zip(sizes[:-1], sizes[1:]))
        flops += sum((ACTIVATION_FLOPS_PER_ORDER * 2 + 3 * n_out) * width * points for width in hidden)
        flops += sum(2 * n_out * upper * lower * points for lower, upper in zip(hidden[:-1], hidden[1:]))
        flops += 2 * n_out * n * hidden[0] * points
        flops += sum((n * lower + 2 * n * lower * upper) * points for lower, upper in zip(hidden[:-1], hidden[1:]))
        step = -(-n // _DIAGONAL_BLOCKS)
        for lo, hi in threads.blocks(points):
            block = hi - lo
            contracted = neurons
            if block >= _SHARED_FIRST_LAYER_POINTS_PER_VARIABLE * n:
                flops += 2 * hidden[0] * triangle + 2 * n_out * hidden[0] * triangle * block
                contracted -= hidden[0]
            products = sum(2 * (n - i0) * (min(n, i0 + step) - i0) * n_out * contracted for i0 in range(0, n, step))
            flops += block * (n_out * n * contracted + products)
        return flops

    def plan(self, request) -> Prepared:
        key = (tuple(map(id, request.weights)), np.dtype(request.dtype).str, request.n_vars)
        with _PLANS_LOCK:
            kept = _PLANS.get(key)
        if (kept is not None and kept.request.hidden_activations == request.hidden_activations
                and all(a is b for a, b in zip(kept.request.weights, request.weights))):
            return kept._replace(request=request)
        kernels = resolve_kernels(request.hidden_activations, None, 0, derivative_order=2)
        dtype = request.dtype
        first = np.asarray(request.weights[0], dtype=dtype)
        all_inputs = request.n_vars == first.shape[1] and not np.any(request.variables != np.arange(first.shape[1]))
        if not all_inputs:
            first = first[:, request.variables]
        first = np.ascontiguousarray(first)
        plan = Prepared(request, kernels, first, push.layers(request.weights, dtype))
        if _only_views(plan):
            with _PLANS_LOCK:
                if len(_PLANS) >= _PLANS_KEPT:
                    _PLANS.pop(next(iter(_PLANS)))
                _PLANS[key] = plan
        return plan

    def expand(self, plan: Prepared, points, out) -> None:
        """Runs in the caller's thread, with BLAS held to one thread by the caller."""
        request = plan.request
        dtype = np.dtype(request.dtype)
        count, n, outputs = points.shape[0], request.n_vars, request.outputs
        bounds = plan.layers.bounds
        neurons = int(bounds[-1])
        widths = request.widths
        sub = int(max(1, min(count, _SUB_BLOCK_BYTES // (n * neurons * dtype.itemsize))))
        shared = count >= _SHARED_FIRST_LAYER_POINTS_PER_VARIABLE * n
        # The derivatives, the propagators and _hessians' work arrays, from one buffer.
        derivatives, propagators, *work = workspace.arrays("hessian", [
            (count, 3, neurons), (outputs, count, neurons),
            (outputs * count, neurons),                     # the contraction weights
            (outputs * count, widths[0]),                   # g(1) s'(1), for the gradient
            (sub * n, neurons),                             # one sub-block's Jacobians
            (sub * n, max(widths[:-1])),                    # their scaled copy
            (n * outputs, neurons),                         # one point's scaled Jacobians
            (n * outputs, n),                               # one point's product
            (widths[0], n * (n + 1) // 2) if shared else (1, 1)], dtype)  # layer 1's pairs
        values, _ = push.push(request.weights, request.biases, plan.kernels, points, 0, request.variables, dtype,
                              wide=derivatives)
        out[:, :, 0] = values[:, 0, :]
        push.output_propagators(plan.layers, derivatives, propagators)
        _hessians(blas.gemm(dtype), *blas.scratch(dtype), plan.first, plan.layers.between, bounds,
                  derivatives.reshape(-1, neurons), propagators.reshape(-1, neurons), out.reshape(count * outputs, -1),
                  *work, count, outputs, sub, -(-n // _DIAGONAL_BLOCKS), shared)

SCHEME = HessianScheme()

# Plans of recent requests, reused when the same weight arrays (the same objects) come again:
# a one-point expansion spends a tenth of its time building its plan. Only plans made of views
# of the request's own weights are kept (an MLP expanded in all its inputs, whose weights share
# one buffer), so that changing a weight in place changes the plan too; a new array is a new
# key. A kept plan holds its arrays, so their ids stay theirs.
_PLANS: dict = {}
_PLANS_LOCK = threading.Lock()
_PLANS_KEPT = 8


def _only_views(plan: Prepared) -> bool:
    """Whether every array of the plan is a request's weight array or a view of one."""
    weights, layers = plan.request.weights, plan.layers
    return (plan.first is weights[0] and layers.last is weights[-1]
            and all(np.shares_memory(view, w) for view, w in zip(layers.matrices, weights[1:-1])))


@njit(nogil=True, cache=True, error_model="numpy")
def _hessians(gemm, ints, scalars, first, between, bounds, derivatives, propagators, out, weight, first_slope,
              jacobians, scaled_in, scaled, product, pairs, count, outputs, sub, step,
              shared):  # pragma: no cover - compiled
    """Gradients and Hessian upper triangles of every point into out[:, 1:] (rows p * outputs
    + o), from the derivatives s^(m)/m! (rows p * 3 + m) and the output propagators g (rows
    o * count + p), all hidden layers side by side as columns.

    First the contraction weights w = 2 g s''/2 into weight, and the gradient: per output,
    (g(1) s'(1)) D(1). With `shared`, layer 1's part, D(1)^T diag(w(1)) D(1) with D(1) the
    same at every point, is one product for all points: w(1) (points x n_1) times pairs (n_1 x
    n(n+1)/2), pairs[b, (i, j)] = D(1)_bi D(1)_bj. The rest, per sub-block of `sub` points:
    the Jacobians, rows (point, variable) and all hidden layers' neurons side by side as
    columns (layer 1's are the weights' columns; layer l + 1's are one product, (D(l) * s'(l))
    W(l+1)^T, over the whole sub-block); then per point one product (D * w)^T-by-D over the
    neurons of layers 2.. (all layers, without `shared`) for all outputs at once (rows of
    `scaled` are (variable, output) pairs), added to layer 1's part. between holds W(2) ..
    W(L) flat, one after the other.
    """
    n = first.shape[1]
    neurons = bounds[bounds.shape[0] - 1]
    layers = bounds.shape[0] - 1
    first_width = bounds[1]
    low = first_width if shared else 0  # the neurons low.. are contracted per point
    deep = neurons - low
    wide = scaled_in.shape[1]
    base = 1 + n
    width = out.shape[1]
    for r in range(outputs * count):
        p = r % count
        for b in range(neurons):
            column = np.uint64(b)  # known >= 0: no wraparound test, so LLVM vectorises
            weight[r, column] = 2.0 * propagators[r, column] * derivatives[3 * p + 2, column]
        for b in range(first_width):
            column = np.uint64(b)
            first_slope[r, column] = propagators[r, column] * derivatives[3 * p + 1, column]
    # The gradient, per output: out[p * outputs + o, 1:1 + n] = first_slope[o * count + p] @ D(1).
    # Column-major: C (n x points, ld outputs * width) = first' (n x n_1) @ first_slope' (n_1 x points).
    for o in range(outputs):
        blas.product(gemm, ints, scalars, PLAIN, PLAIN, n, count, first_width, blas.at(first, 0), n,
                     blas.at(first_slope, o * count * first_width), first_width, blas.at(out, o * width + 1),
                     outputs * width)
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
            blas.product(gemm, ints, scalars, PLAIN, PLAIN, triangle, count, first_width, blas.at(pairs, 0), triangle,
                         blas.at(weight, o * count * neurons), neurons, blas.at(out, o * width + base),
                         outputs * width)
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
        offset = 0  # of W(l+1) in between
        for l in range(1, layers):
            c0 = bounds[l - 1]
            width_in = bounds[l] - c0
            width_out = bounds[l + 1] - bounds[l]
            for r in range(rows):
                slope = 3 * (p0 + r // n) + 1
                for b in range(width_in):
                    column = np.uint64(c0 + b)  # known >= 0: no wraparound test, so LLVM vectorises
                    scaled_in[r, b] = jacobians[r, column] * derivatives[slope, column]
            # jacobians[:rows, bounds[l]:bounds[l + 1]] = scaled_in[:rows, :width_in] @ W(l+1)^T;
            # column-major: C (width_out x rows, ld neurons) = W^T' (width_in x width_out)^T @ B.
            blas.product(gemm, ints, scalars, TRANSPOSED, PLAIN, width_out, rows, width_in, blas.at(between, offset),
                         width_in, blas.at(scaled_in, 0), wide, blas.at(jacobians, bounds[l]), neurons)
            offset += width_out * width_in
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
                blas.product(gemm, ints, scalars, TRANSPOSED, PLAIN, n - i0, (i1 - i0) * outputs, deep,
                             blas.at(jacobians, (q * n + i0) * neurons + low), neurons,
                             blas.at(scaled, i0 * outputs * neurons + low), neurons,
                             blas.at(product, i0 * outputs * n + i0), n)
            for o in range(outputs):
                column = base
                for i in range(n):
                    row = i * outputs + o
                    out[p * outputs + o, column] += 0.5 * product[row, i]
                    for j in range(i + 1, n):
                        out[p * outputs + o, column + j - i] += product[row, j]
                    column += n - i
