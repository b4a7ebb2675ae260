"""The Laplacian and the biharmonic of an MLP by collapsed rules, without the other coefficients.

In: an `MLP`, points x ((n_in,) or (batch, n_in)), optionally the inputs to differentiate in
(`wrt`; the others are held fixed). Out: sum_i d2f/dx_i^2 (`laplacian`) or
sum_ij d4f/dx_i^2 dx_j^2 (`biharmonic`), (batch, n_out) or (n_out,) for one point; the sums
run over `wrt` (all inputs by default). These are derivatives, not Taylor coefficients.

Each neuron carries a few derivatives of its pre-activation through the network
(docs/operators.md): the value, the gradient J and the Laplacian for `laplacian`; the value, J,
the Hessian H (upper triangle), L3_a = sum_i d3z/dx_i^2 dx_a and the biharmonic B for
`biharmonic`. The affine maps act linearly on all of them (one matrix product per layer, with
the points and the carried rows stacked into its long dimension; the bias only shifts the
value). Through an activation they follow the collapsed Faa di Bruno rules derived by
feynmlp.codegen.operator_rules and shipped as kernels in generated/ (feynmlp.operator_kernels);
the activation's derivatives come from its own Taylor kernel module, so custom activations work
as in `feynmlp.taylor`. Two paths run the same steps: for the Laplacian's rule in float64 with
activations that have an array form, one compiled call per thread for the whole network (the
generated push_network, through feynmlp.array_form); otherwise NumPy and Numba calls from
Python, layer by layer.
Validation is shared with `feynmlp.taylor`.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import checks, memory, threads, workspace
from .kernels import VECTOR_FORM_ARRAYS, activation_derivatives, call_kernel, resolve_kernels
from .operator_kernels import RULE_OPERATORS, rule_module

# The carried rows of one block of points a thread takes through all layers at a time, on the
# NumPy path (Python between the layers: few, long blocks). Measured on both cores, two runs
# each: u_t + u_xx + u_yy on 3 -> 128^3 -> 1 at 10,000 points took 29.5-32.0 ms with 4 MiB,
# 30.8-31.6 ms with 2 MiB, 32.4-33.7 ms with 1 MiB and 30.9-32.8 ms with 8 MiB.
_BLOCK_BYTES = 2**22
# But at least this many points, where a block of that many stays under _MOST_BLOCK_BYTES: the
# rule kernels' inner loops run over a block's points, and LLVM's vector loops need length.
# The biharmonic of 32 -> 64^3 -> 1 (594 carried rows) at 64 points took 16.0 ms in blocks of
# 6 points (2 MiB), 13.1 ms of 13 and 9.2 ms of 32.
_LEAST_BLOCK_POINTS = 32
_MOST_BLOCK_BYTES = 2**25
# On the fused path (one compiled call for all blocks) short blocks cost nothing between them,
# and a block whose two carried arrays stay in the core's L2 cache runs faster: about
# _FUSED_BLOCK_BYTES each, in a multiple of _FUSED_BLOCK_STEP points (aligned vector loops; 24
# points ran slower than 16 or 32). Measured on an Intel Xeon with 2 MiB of L2 per core, MKL:
# the Laplacian of 32 -> 64^3 -> 1 at 128 points on one thread took a median 1.24 ms in blocks
# of 16 points, 1.31 of 32, 1.33 of 64, 1.42 of 128 and 1.46 of 8; u_t + u_xx + u_yy above,
# both cores, 20.2 ms in blocks of 64 points (256 KiB), 21.0 of 32, 21.7 of 128, 23.8 of 1024.
_FUSED_BLOCK_BYTES = 2**18
_FUSED_BLOCK_STEP = 16


def laplacian(mlp, x, wrt=None, dtype=np.float64, nonfinite: str = "raise") -> np.ndarray:
    """sum_i d2f/dx_i^2 at each point, i over `wrt` (default: every input).

    Args:
        mlp: the network (feynmlp.MLP).
        x: point (n_in,) or points (batch, n_in).
        wrt: input indices the sum runs over; the other inputs stay fixed (e.g. the spatial
            Laplacian of u(t, x, y) is wrt=[1, 2]).
        dtype: float64 (default) or float32.
        nonfinite: "raise" (default) or "propagate", as in feynmlp.taylor.

    Returns:
        (batch, n_out), or (n_out,) for a single point.
    """
    return _collapsed("laplacian", mlp, x, wrt, dtype, nonfinite)


def biharmonic(mlp, x, wrt=None, dtype=np.float64, nonfinite: str = "raise") -> np.ndarray:
    """sum_ij d4f/dx_i^2 dx_j^2 (the bilaplacian) at each point, i and j over `wrt`.

    Arguments and result as for `laplacian`. Costs about as much as a Hessian pushed forward:
    each neuron carries its upper-triangular Hessian, never the fourth-order coefficients.
    """
    return _collapsed("biharmonic", mlp, x, wrt, dtype, nonfinite)


def _collapsed(operator: str, mlp, x, wrt, dtype, nonfinite: str) -> np.ndarray:
    if checks.is_dask_array(x):
        from . import distributed

        return distributed.operator(operator, mlp, x, dtype, nonfinite, wrt=wrt)
    mlp = checks.check_mlp(mlp)
    dtype = checks.check_dtype(dtype)
    points, single = checks.check_points(x, mlp.n_inputs, dtype=dtype)
    variables = checks.check_wrt(wrt, mlp.n_inputs)
    values = evaluate(operator, mlp, points, list(variables), np.ones(len(variables)), None, dtype, nonfinite)[:, -1, :]
    return values[0] if single else values


def evaluate(operator: str, mlp, points, directions, weights, first_order, dtype, nonfinite: str):
    """carried_operator with feynmlp.taylor's guards: the activation's order, a division by
    zero, and non-finite results (named, or propagated)."""
    order = RULE_OPERATORS[operator]
    hidden, output = checks.supported_activations(mlp, order)
    checks.check_nonfinite_option(nonfinite)
    carried = checks.guard_division(
        lambda: carried_operator(operator, mlp.weights, mlp.biases, hidden, output, points, directions, weights,
                                 first_order, dtype),
        mlp, points, order, dtype)
    if nonfinite == "raise":
        checks.refuse_nonfinite(carried[:, -1, :, None], f"{operator} value", lambda _: operator, mlp, points,
                                order, dtype)
    return carried


def carried_operator(operator: str, weights, biases, hidden_activations, output_activation, points, directions,
                     sum_weights, first_order=None, dtype=np.float64) -> np.ndarray:
    """The value and the operator of every output at each point: (batch, 2, n_out).

    directions (d, n_in): the derivatives are taken along these vectors; or (d,) integers: along
    these input variables; sum_weights (d,): the Laplacian sums w_a d2f/dv_a^2 (the
    biharmonic kernel takes no weights: they must be ones). first_order (n_in,) or None: for
    the Laplacian, b adds b.grad f to the operator's row. Memory is checked before anything
    is allocated.

    Why b needs no carried row of its own: L = b.grad + sum_a w_a d2/dv_a^2 has no term of
    order 0, so through an activation L[s(z)] = s'(z) L[z] + s''(z) sum_a w_a (dz/dv_a)^2,
    the very rule of the Laplacian's row; only its start differs, L[z] = W b for the first
    layer's pre-activations z = W x + c.

    Layout: a block of P points is carried neurons-major, (neurons, rows, P), so that each
    layer is one product W @ carried with the rows and points of a neuron as its long side
    (measured 8-12 % faster than carried @ W.T for 128-wide layers), and the rule kernels
    run along the points of one neuron and row at a time.
    """
    points = np.asarray(points, dtype=dtype)
    directions = np.asarray(directions)
    count = directions.shape[0]
    order = RULE_OPERATORS[operator]
    rules = rule_module(operator)
    rows = rules.rows(count)
    kept = 2
    widths = [w.shape[0] for w in weights]
    batch = points.shape[0]
    itemsize = np.dtype(dtype).itemsize
    kernels = resolve_kernels(hidden_activations, output_activation, order)
    forms = _array_forms(operator, kernels, dtype, len(weights))
    block = _block_points(batch, rows * max(widths) * itemsize, forms is not None)
    # Per thread: two carried arrays of a block, the pre-activations of two layers and the
    # derivatives of its widest layer, the rows kept for the result, the rule kernel's
    # per-point work arrays (at most d + 6 rows), and the float64 arrays of the derivatives'
    # array form. On the fused path, also the BLAS library's packed copy of a block: its blocks
    # are short enough to be packed whole (the Laplacian of 32 -> 64^3 -> 1 at 20,000 points
    # grew by one such copy per thread beyond the other arrays).
    carried_arrays = 3 if forms else 2
    working = threads.count() * (max(widths) * (itemsize * block * (carried_arrays * rows + order + 3 + kept)
                                                + 8 * block * VECTOR_FORM_ARRAYS) + itemsize * block * (count + order + 7))
    memory.check(batch * widths[-1] * kept * itemsize, itemsize, 0, working,
                 f"the {operator} in {count} variables for {batch} point(s)",
                 "use fewer points per call, or restrict the variables with wrt=[...]",
                 f"{rows} carried rows per neuron and point, widest layer {max(widths)}, ")
    weights = [np.asarray(w, dtype=dtype) for w in weights]
    biases = [np.asarray(b, dtype=dtype) for b in biases]
    # The first layer's derivatives along each direction are the same at every point: the
    # rows that start every block, (neurons, rows - 1).
    first_weights = np.asarray(weights[0], dtype=np.float64)
    start_rows = np.zeros((widths[0], rows - 1), dtype=dtype)
    start_rows[:, :count] = (first_weights[:, directions.astype(np.intp)] if directions.ndim == 1
                             else first_weights @ directions.astype(np.float64).T)
    if first_order is not None:
        assert operator == "laplacian", "only the Laplacian's rule carries a first-order part"
        start_rows[:, count] = first_weights @ np.asarray(first_order, dtype=np.float64)
    sum_weights = np.asarray(sum_weights, dtype=dtype)
    result = np.empty((batch, kept, widths[-1]), dtype=dtype)

    if forms:
        return _run_fused(rules, points, block, weights, biases, forms, kernels.output is not None, start_rows,
                          sum_weights, result)

    def push_block(lo, hi):
        # The NumPy path: layer by layer, NumPy's products and the rule kernels called from
        # Python. Pre-activations (neurons, points) alternate between two work arrays, since
        # one layer's are read while the next layer's are written.
        size = hi - lo
        values = workspace.array(("operator values", 0), (max(widths), size), dtype)[:widths[0]]
        np.matmul(weights[0], points[lo:hi].T, out=values)
        np.add(values, biases[0][:, None], out=values)
        carried = workspace.array(("operator", 0), (widths[0], rows, size), dtype)
        carried[:, 1:, :] = start_rows[:, :, None]
        for layer in range(1, len(weights)):
            # After the last hidden layer only the value and the operator's row (the last one)
            # are read, unless an output activation needs every row.
            last = layer == len(weights) - 1 and kernels.output is None
            _activate(carried, values, kernels.derivatives[layer - 1], rules, sum_weights, not last)
            weight = weights[layer]
            if last:
                # Two products straight from the strided rows, instead of copying them first.
                out = workspace.array(("operator", "kept"), (weight.shape[0], kept, size), dtype)
                np.matmul(weight, carried[:, 0, :], out=out[:, 0, :])
                np.matmul(weight, carried[:, -1, :], out=out[:, 1, :])
            else:
                out = workspace.array(("operator", layer % 2), (weight.shape[0],) + carried.shape[1:], dtype)
                np.matmul(weight, carried.reshape(carried.shape[0], -1), out=out.reshape(weight.shape[0], -1))
            carried = out
            values = workspace.array(("operator values", layer % 2), (max(widths), size), dtype)[:widths[layer]]
            np.add(carried[:, 0, :], biases[layer][:, None], out=values)
        if kernels.output is not None:
            _activate(carried, values, kernels.output, rules, sum_weights, False)
        else:
            carried[:, 0, :] = values
        # Without a hidden layer, or after an output activation, every row is still here.
        result[lo:hi] = (carried if carried.shape[1] == kept else carried[:, ::rows - 1, :]).transpose(2, 1, 0)

    def push_numpy(lo, hi):
        for start in range(lo, hi, block):
            push_block(start, min(hi, start + block))

    with threads.single_blas_thread():
        threads.run_blocks(push_numpy, (), batch)
    return result


def _run_fused(rules, points, block, weights, biases, forms, output: bool, start_rows, sum_weights, result):
    """carried_operator's fused path: the generated push_network on every worker thread at once,
    sharing the blocks of points through atomic counters; fills and returns result."""
    from . import blas  # imports Numba, which `import feynmlp` leaves out

    # C-contiguous arrays (the kernel addresses their elements in flat order); the layers as
    # tuples of one Numba type each.
    points, sum_weights = np.ascontiguousarray(points), np.ascontiguousarray(sum_weights)
    network = [tuple(np.ascontiguousarray(array) for array in arrays) for arrays in (weights, biases)]
    # Fresh for every call: a pool thread still leaving the previous call's kernel reads only
    # that call's counters.
    counters = np.zeros(2, dtype=np.int64)
    shared = (points, counters, block, *network, forms, output, start_rows, sum_weights)
    # Each thread's own work arrays, all from this thread's workspace: the pool threads then run
    # no Python before the kernel, so they start sooner. No thread touches them once all blocks
    # are finished, which is when run_shared returns.
    widest, rows = max(w.shape[0] for w in weights), start_rows.shape[1] + 1
    gemm = blas.gemm(np.float64)
    calls = []
    for thread in range(min(threads.count(), -(-points.shape[0] // block))):
        work = workspace.arrays(("operator network", thread), [(widest * rows * block,)] * 2
                                + [(widest * block,)] * 2 + [(rules.ORDER + 1, block), (VECTOR_FORM_ARRAYS, block)],
                                np.float64)
        calls.append(shared + (*work, workspace.array(("operator scratch", thread), (5,), np.int64), gemm,
                               *blas.scratch(np.float64), result))
    # The fused path calls no BLAS but blas.gemm's: where that starts no threads of its own,
    # nothing needs holding (setting and restoring the thread counts took 40 us).
    with threads.single_blas_thread() if blas.starts_threads() else contextlib.nullcontext():
        threads.run_shared(rules.push_network, calls)
    return result


def _array_forms(operator: str, kernels, dtype, layers: int):
    """The ArrayForm (feynmlp.array_form) of every activation as a tuple, hidden layers first,
    then the output's, when the fused Laplacian kernels can take the network: float64, at least
    one hidden layer, every activation with an array form; else None (the NumPy path)."""
    if operator != "laplacian" or np.dtype(dtype) != np.float64 or layers < 2:
        return None
    from . import array_form  # imports Numba, which `import feynmlp` leaves out
    modules = list(kernels.derivatives) + ([kernels.output] if kernels.output is not None else [])
    forms = tuple(array_form.callbacks(module) for module in modules)
    return forms if all(form is not None for form in forms) else None


def _block_points(batch: int, bytes_per_point: int, fused: bool) -> int:
    """Points per block. Fused: about _FUSED_BLOCK_BYTES of carried rows, in a multiple of
    _FUSED_BLOCK_STEP points. Else _BLOCK_BYTES of carried rows, or _LEAST_BLOCK_POINTS where
    those fit in _MOST_BLOCK_BYTES, and blocks of equal size within each thread's share (a short
    last block would run its products at a lower rate)."""
    share = -(-batch // threads.count())
    if fused:
        steps = max(1, round(_FUSED_BLOCK_BYTES / (bytes_per_point * _FUSED_BLOCK_STEP)))
        return min(share, steps * _FUSED_BLOCK_STEP)
    most = max(1, _BLOCK_BYTES // bytes_per_point, min(_LEAST_BLOCK_POINTS, _MOST_BLOCK_BYTES // bytes_per_point))
    return -(-share // -(-share // most))


def _activate(carried, values, module, rules, sum_weights, full: bool) -> None:
    """The activation of one layer applied to its carried block (neurons, rows, points), in
    place, from its pre-activations `values` (neurons, points); with full False only the value
    and the operator's row."""
    derivatives = workspace.array("operator derivatives", (rules.ORDER + 1, values.size), carried.dtype).T
    activation_derivatives(module, values.reshape(-1), derivatives)
    if rules.OPERATOR == "laplacian":
        call_kernel(rules, "activate", carried, derivatives, sum_weights, 0, carried.shape[0], full)
    else:
        call_kernel(rules, "activate", carried, derivatives, 0, carried.shape[0], full)
