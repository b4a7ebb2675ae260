"""Expansions of Dask arrays: lazy coefficients, computed block by block on Dask's workers.

In: an MLP and a `dask.array.Array` of points (batch, n_in) chunked along the batch axis (or,
for `directional`, points and directions of which at least one is a dask array). Out: a
`DaskTaylorExpansion` whose coefficients, derivative tensors, gradient, Hessian and polynomial
values are dask arrays, the directional series as a dask array (batch, n_out, K + 1), or a
differential operator's values as a dask array (batch, n_out).
Nothing is computed until the caller computes: building the graph reads only shapes, chunks
and dtypes, and never runs a kernel (every map_blocks call is given its `meta`).

What travels to a worker is a `BlockTask` (order, variables, dtype, scheme) per block and a
`ModelSpec` (weights, biases, activation names or SymPy expressions, and a digest of them)
once: the spec is one key of the graph that every block's task reads, so a worker receives the
weights once, not with each block. Plain arrays and strings, never a compiled function. A
worker process builds the MLP of a spec once (kept by digest) and loads its kernels once
through feynmlp's caches (the shipped modules, FEYNMLP_CACHE_DIR and Numba's on-disk cache),
then keeps both for every later task.

Threads: each task expands its block on the thread Dask runs it on, with one kernel thread
(threads.limited(1)) and BLAS on one thread (threads.single_blas_thread); Dask's worker
threads are the parallelism, so a worker with T threads runs T kernel threads and T BLAS
threads, never T x cores.

Checks that need the values (finiteness, the dtype the blocks really have) run per block when
the graph is computed; their errors name the block's rows of the whole array.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

import numpy as np

from . import checks, multi_index, threads
from .errors import FeynmlpError
from .kernels import validate_order
from .checks import is_dask_array, real_array
from .schemes import check_name
from .taylor import TaylorExpansion
from .taylor import directional as _directional_in_memory
from .taylor import taylor as _taylor_in_memory

__all__ = ["DaskTaylorExpansion", "ModelSpec", "BlockTask", "is_dask_array", "process_report"]


def _dask_array():
    import dask.array as da  # an argument is a dask array, so Dask is installed

    return da


def tokenize(*values) -> str:
    from dask.base import tokenize as dask_tokenize

    return dask_tokenize(*values)


# ----------------------------------------------------------------------------- the payload

@dataclass(frozen=True)
class ModelSpec:
    """A network as plain data: what a Dask task carries instead of a compiled function.

    weights, biases: tuples of float64 arrays; hidden: one activation per hidden layer (a
    canonical name or a SymPy expression); output: None or a name; digest: SHA-256 over all of
    them, the key under which a worker keeps the MLP it builds from the spec.
    """

    weights: tuple
    biases: tuple
    hidden: tuple
    output: str | None
    digest: str

    @classmethod
    def of(cls, mlp) -> "ModelSpec":
        hasher = hashlib.sha256()
        for array in (*mlp.weights, *mlp.biases):
            hasher.update(repr(array.shape).encode())
            hasher.update(np.ascontiguousarray(array).tobytes())
        for activation in (*mlp.hidden_activations, mlp.output_activation):
            # srepr: the exact SymPy tree (str() can print two expressions alike).
            text = activation if activation is None or isinstance(activation, str) else _srepr(activation)
            hasher.update(f"|{type(activation).__name__}:{text}".encode())
        return cls(tuple(mlp.weights), tuple(mlp.biases), tuple(mlp.hidden_activations),
                   mlp.output_activation, hasher.hexdigest())

    def model(self):
        """The MLP of this spec, built once per process and kept."""
        with _models_lock:
            model = _models.get(self.digest)
            if model is None:
                from .mlp import MLP

                model = MLP(list(self.weights), list(self.biases), list(self.hidden), self.output)
                _models[self.digest] = model
                _report["models_built"] += 1
        return model


def _srepr(expression) -> str:
    import sympy

    return sympy.srepr(expression)


# Per worker process: the MLPs built from specs, and what process_report() returns.
_models: dict = {}
_models_lock = threading.Lock()
_report = {"models_built": 0, "blocks": 0, "kernel_threads": 0, "blas_threads": 0}


def process_report() -> dict:
    """What this process has done for Dask tasks: its pid, the MLPs built from specs
    (models_built), the blocks expanded, the most kernel and BLAS threads one block used, and
    the kernels prepared (compiled or loaded from Numba's cache) so far in this process.
    On a cluster: client.run(process_report), one entry per worker."""
    from . import kernels

    with _models_lock:
        return {"pid": os.getpid(), **_report, "kernels_prepared": len(kernels._compiled)}


def _blas_thread_count() -> int:
    controller = threads._blas_controller()
    counts = [library.get_num_threads() for library in controller.select(user_api="blas").lib_controllers]
    return max(counts, default=1)


@dataclass(frozen=True)
class BlockTask:
    """The function Dask runs on each block: a small picklable description of one expansion,
    called with the block(s) and then the ModelSpec (a key of the graph, see model_key).

    kind: "taylor", "directional", or an operator ("laplacian", "biharmonic", "operator");
    declared: the dtypes the input dask arrays declare, one per array argument (a block whose
    real dtype differs is refused); names: the arguments' names in error messages ("x", "v");
    terms: an operator's checked terms as (multi-index, coefficient) pairs. The rest as in
    feynmlp.taylor.
    """

    kind: str
    order: int
    wrt: tuple | None
    dtype: str
    scheme: str
    nonfinite: str
    declared: tuple
    names: tuple
    terms: tuple = ()

    def __dask_tokenize__(self):
        return ("feynmlp.BlockTask", self.kind, self.order, self.wrt, self.dtype, self.scheme,
                self.nonfinite, self.declared, self.names, self.terms)

    def __call__(self, *arguments, block_info=None):
        *blocks, spec = arguments
        lo, hi = block_info[None]["array-location"][0] if block_info else (0, blocks[0].shape[0])
        where = f"rows {lo}..{hi - 1} of the dask array"
        for block, declared, name, position in zip(blocks, self.declared, self.names, range(len(blocks))):
            if block.dtype != np.dtype(declared):
                raise FeynmlpError(
                    f"{name}: a block ({where}) holds dtype {block.dtype} but the dask array declares "
                    f"{np.dtype(declared).name}; declare the dtype its blocks really have (dtype=/meta= where "
                    "the array is built), or make the blocks match the declared dtype")
            bad = ~np.isfinite(block) if block.dtype.kind == "f" else None
            if bad is not None and bad.any():
                row, column = (int(i) for i in np.argwhere(bad)[0])
                first = row + (block_info[position]["array-location"][0][0] if block_info else lo)
                raise FeynmlpError(
                    f"{name} contains {int(bad.sum())} NaN or infinite value(s) in {where} (first at row "
                    f"{first}, column {column}); replace or drop those rows")
        model = spec.model()
        with threads.limited(1), threads.single_blas_thread():
            with _models_lock:
                _report["blocks"] += 1
                _report["kernel_threads"] = max(_report["kernel_threads"], threads.count())
                _report["blas_threads"] = max(_report["blas_threads"], _blas_thread_count())
            try:
                if self.kind == "taylor":
                    return _taylor_in_memory(model, blocks[0], self.order, wrt=self.wrt, dtype=self.dtype,
                                             scheme=self.scheme, nonfinite=self.nonfinite).coefficients
                if self.kind in ("laplacian", "biharmonic"):
                    from . import operators

                    return getattr(operators, self.kind)(model, blocks[0], wrt=self.wrt, dtype=self.dtype,
                                                         nonfinite=self.nonfinite)
                if self.kind == "operator":
                    from . import operator_terms

                    return operator_terms.operator(model, blocks[0], dict(self.terms), dtype=self.dtype,
                                                   nonfinite=self.nonfinite)
                return _directional_in_memory(model, blocks[0], blocks[1], self.order, dtype=self.dtype,
                                              nonfinite=self.nonfinite)
            except FeynmlpError as exc:
                # Points inside the message count from the block's first row.
                raise type(exc)(f"in {where} (points counted from row {lo}): {exc}") from None


def model_key(spec: ModelSpec):
    """The spec as one key of the graph (a dask Delayed named by its digest), which every
    block's task takes as its last argument: the scheduler sends it to a worker once."""
    from dask import delayed

    return delayed(spec, name="feynmlp-model-" + spec.digest, traverse=False)


# ----------------------------------------------------------------------------- inputs

def _check_dask_points(x, n_inputs: int, what: str):
    """(x as a 2-D dask array with one chunk along the features, single): shape, chunks and
    dtype are checked here; values are checked per block when computed."""
    if x.ndim not in (1, 2) or x.shape[-1] != n_inputs:
        raise FeynmlpError(f"{what} must have shape ({n_inputs},) or (batch, {n_inputs}) for this network, "
                           f"got the dask array of shape {x.shape}")
    if any(np.isnan(size) for size in x.shape) or any(np.isnan(c) for c in x.chunks[0]):
        raise FeynmlpError(f"{what} is a dask array of unknown chunk sizes {x.chunks}; call "
                           f"{what}.compute_chunk_sizes() (or build it with known chunks) first")
    kind = x.dtype.kind
    if kind == "c":
        raise FeynmlpError(f"{what} must hold real numbers, got the dask array of dtype {x.dtype}")
    if kind not in "biuf":
        raise FeynmlpError(f"{what} must be an array of numbers, got the dask array of dtype {x.dtype}")
    single = x.ndim == 1
    if single:
        x = x[None, :]
    if x.shape[0] == 0:
        raise FeynmlpError(f"{what} holds no points (shape {x.shape})")
    if x.numblocks[1] != 1:
        x = x.rechunk({1: -1})  # each block needs whole points
    return x, single


def _common_checks(mlp, order, dtype, nonfinite):
    mlp = checks.check_mlp(mlp)
    order = validate_order(order)
    dtype = checks.check_dtype(dtype)
    checks.supported_activations(mlp, order)
    checks.check_nonfinite_option(nonfinite)
    return mlp, order, dtype


def taylor(mlp, x, order, wrt=None, dtype=np.float64, scheme="auto", nonfinite="raise") -> "DaskTaylorExpansion":
    """feynmlp.taylor for a dask array x: the same arguments and checks, lazy results."""
    da = _dask_array()
    mlp, order, dtype = _common_checks(mlp, order, dtype, nonfinite)
    variables = checks.check_wrt(wrt, mlp.n_inputs)
    check_name(scheme, mlp.output_activation)  # at graph time, not in the tasks
    points, single = _check_dask_points(x, mlp.n_inputs, "x")
    spec = ModelSpec.of(mlp)
    task = BlockTask("taylor", order, variables, dtype.str, scheme, nonfinite, (points.dtype.str,), ("x",))
    columns = multi_index.count(len(variables), order)
    coefficients = da.map_blocks(task, points, model_key(spec), dtype=dtype, meta=np.empty((0, 0, 0), dtype=dtype),
                                 chunks=(points.chunks[0], (mlp.n_outputs,), (columns,)), new_axis=2,
                                 name="feynmlp-taylor-" + tokenize(task, spec.digest, points))
    return DaskTaylorExpansion(coefficients, points, order, variables, mlp.n_inputs, single)


def directional(mlp, x, v, order, dtype=np.float64, nonfinite="raise"):
    """feynmlp.directional where x or v (or both) is a dask array: a lazy (batch, n_out, K + 1)."""
    da = _dask_array()
    mlp, order, dtype = _common_checks(mlp, order, dtype, nonfinite)
    arrays, singles = [], []
    for value, what in ((x, "x"), (v, "v")):
        if is_dask_array(value):
            array, single = _check_dask_points(value, mlp.n_inputs, what)
        else:
            array, single = checks.check_points(value, mlp.n_inputs, what, dtype)
        arrays.append(array)
        singles.append(single)
    rows = [a.shape[0] for a in arrays]
    if rows[0] != rows[1] and 1 not in rows:
        raise FeynmlpError(f"x and v hold different numbers of points ({rows[0]} and {rows[1]})")
    # The batch: the array with more rows (x when both have as many); its row chunks are the
    # blocks. A NumPy batch beside a dask one takes the dask one's chunks.
    lead = 0 if rows[0] >= rows[1] else 1
    if not is_dask_array(arrays[lead]):
        lead = 1 - lead
    chunks = arrays[lead].chunks[0]
    for i in (0, 1):
        if not is_dask_array(arrays[i]):
            arrays[i] = da.from_array(arrays[i], chunks=(chunks if arrays[i].shape[0] == rows[lead] else 1, -1))
        elif arrays[i].shape[0] == rows[lead] and arrays[i].chunks[0] != chunks:
            arrays[i] = arrays[i].rechunk({0: chunks})
    spec = ModelSpec.of(mlp)
    task = BlockTask("directional", order, None, dtype.str, "auto", nonfinite, tuple(a.dtype.str for a in arrays),
                     ("x", "v"))
    series = da.map_blocks(task, *arrays, model_key(spec), dtype=dtype, meta=np.empty((0, 0, 0), dtype=dtype),
                           chunks=(chunks, (mlp.n_outputs,), (order + 1,)), new_axis=2,
                           name="feynmlp-directional-" + tokenize(task, spec.digest, *arrays))
    return series[0] if all(singles) else series


def operator(kind, mlp, x, dtype=np.float64, nonfinite="raise", wrt=None, terms=None):
    """feynmlp.laplacian / biharmonic (kind, with wrt) or feynmlp.operator (terms) for a dask
    array x: the same checks, a lazy (batch, n_out), or (n_out,) for a single point."""
    da = _dask_array()
    mlp = checks.check_mlp(mlp)
    dtype = checks.check_dtype(dtype)
    checks.check_nonfinite_option(nonfinite)
    variables, checked = None, ()
    if kind == "operator":
        from .operator_terms import check_terms

        checked = tuple(check_terms(terms, mlp.n_inputs).items())
    else:
        variables = checks.check_wrt(wrt, mlp.n_inputs)
    points, single = _check_dask_points(x, mlp.n_inputs, "x")
    spec = ModelSpec.of(mlp)
    task = BlockTask(kind, 0, variables, dtype.str, "auto", nonfinite, (points.dtype.str,), ("x",), checked)
    values = da.map_blocks(task, points, model_key(spec), dtype=dtype, meta=np.empty((0, 0), dtype=dtype),
                           chunks=(points.chunks[0], (mlp.n_outputs,)),
                           name=f"feynmlp-{kind}-" + tokenize(task, spec.digest, points))
    return values[0] if single else values


# ----------------------------------------------------------------------------- lazy expansion

def _tensor_block(coefficients, order, wrt, n_inputs, k):
    return TaylorExpansion(coefficients, None, order, wrt, n_inputs, single=False).derivative_tensor(k)


def _evaluate_block(coefficients, h, order, wrt, n_inputs, single):
    with threads.limited(1):
        return TaylorExpansion(coefficients, np.empty((1, 0)), order, wrt, n_inputs, single=single)(h)


class DaskTaylorExpansion(TaylorExpansion):
    """A TaylorExpansion whose coefficients are a dask array (batch, n_out, M); see feynmlp.taylor.

    coefficients, derivative_tensor(k), gradient, hessian, coefficient(alpha) and e(h) are dask
    arrays (nothing runs until they are computed); multi_indices is a NumPy array; compute()
    gives the in-memory TaylorExpansion; to_sympy computes first.
    """

    def derivative_tensor(self, k: int):
        """The dense k-th derivative tensor (batch, n_out) + (n,)*k as a dask array, one block
        per block of points (each block's memory is checked when it is computed)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= self.order:
            raise FeynmlpError(f"derivative order must be between 0 and {self.order}, got {k!r}")
        k = int(k)
        n = len(self.wrt)
        c = self._coefficients
        chunks = (c.chunks[0], c.chunks[1]) + ((n,),) * k
        options = {}
        if k == 0:
            options["drop_axis"] = 2
        elif k > 1:
            options["new_axis"] = list(range(3, 2 + k))
        tensor = c.map_blocks(_tensor_block, self.order, self.wrt, self.n_inputs, k, dtype=self.dtype,
                              meta=np.empty((0,) * (2 + k), dtype=self.dtype), chunks=chunks, **options)
        return tensor[0] if self._single else tensor

    def __call__(self, h):
        """The Taylor polynomial at displacements h, lazily (h a NumPy or dask array; shapes as
        for the in-memory expansion)."""
        da = _dask_array()
        n = len(self.wrt)
        c = self._coefficients
        batch, n_out, _ = c.shape
        if is_dask_array(h):
            if h.dtype.kind not in "biuf":
                raise FeynmlpError(f"displacements h must hold real numbers, got the dask array of dtype {h.dtype}")
            h = h.astype(self.dtype)
        else:
            h = real_array(h, "displacements h", self.dtype)
        if h.ndim == 0 or h.shape[-1] != n:
            raise FeynmlpError(
                f"displacements must have {n} components (the expanded variables), got shape {h.shape}")
        meta = np.empty((0, 0), dtype=self.dtype)
        if not self._single:
            if h.shape != (batch, n):
                raise FeynmlpError(f"for a batch of {batch} points, h must have shape ({batch}, {n}), got {h.shape}")
            h = da.asarray(h).rechunk((c.chunks[0], -1))
            return da.blockwise(_evaluate_block, "bo", c, "bom", h, "bj", concatenate=True, dtype=self.dtype,
                                meta=meta, order=self.order, wrt=self.wrt, n_inputs=self.n_inputs, single=False)
        lead = h.shape[:-1]
        flat = da.asarray(h).reshape(-1, n).rechunk({1: -1})
        values = da.blockwise(_evaluate_block, "ro", c, "zom", flat, "rj", concatenate=True, dtype=self.dtype,
                              meta=meta, order=self.order, wrt=self.wrt, n_inputs=self.n_inputs, single=True)
        return values.reshape(lead + (n_out,))

    def compute(self, **kwargs) -> TaylorExpansion:
        """The in-memory TaylorExpansion (coefficients and points computed together)."""
        import dask

        coefficients, points = dask.compute(self._coefficients, self.point, **kwargs)
        return TaylorExpansion(np.asarray(coefficients), np.atleast_2d(points), self.order, self.wrt,
                               self.n_inputs, self._single)

    def to_sympy(self, symbols=None):
        """As TaylorExpansion.to_sympy, after computing the coefficients."""
        return self.compute().to_sympy(symbols)
