"""Born data sets of any size, written to a Zarr group chunk by chunk through Dask.

In: the arguments of `feynmlp.born.make_dataset`, a Zarr path, the rows per chunk, and where to
run (Dask's local threads, a local cluster of `workers` processes, or the scheduler at an
address). Out: `write_zarr_dataset` writes the group and returns what it did; `load_zarr_dataset`
reads one back.

The group holds the arrays of the .npz format, each chunked by `chunk_size` rows:
    U       float64 (size, grid)    a       float64 (size,)
    born    float64 (size, order)   family  str (size,)
    done    bool (n_chunks,)        chunk i's rows are written (set after its rows)
and the metadata of the .npz format as attributes, plus `chunk_size`, `chunk_seeds` and
`complete`, which is written last: a group without complete = true is half-written.

Rows depend only on the seed and the chunk size: chunk i (rows i*chunk_size ...) is the data
set of its rows drawn with seed `chunk_seed(seed, i)` (chunk 0 with the seed itself, so a
one-chunk store holds exactly the .npz data set of the same arguments), whichever worker
draws it. Each chunk is one Dask task that draws, labels and writes its own rows, so no two
tasks write the same Zarr chunk and nothing but the task's own rows is in memory.

A rerun with the same arguments on a half-written store writes only the chunks not marked
done (a chunk interrupted half-way is not marked, so it is written again whole); on a
complete one it writes nothing. A store holding anything else is refused, unchanged.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from feynmlp.errors import FeynmlpError

from ._checks import check_positive_int
from .born_series import born_terms
from .dataset import FORMAT, FORMAT_VERSION, dataset_metadata
from .potentials import DEFAULT_A_MAX, check_sampling_arguments, sample_potentials_with_a

__all__ = ["write_zarr_dataset", "load_zarr_dataset", "chunk_seed", "DEFAULT_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE = 100_000  # 51 MB of U per chunk at 64 steps
# How long to try to reach a scheduler given by address before saying it cannot be reached.
CONNECT_TIMEOUT_S = 5
CHUNK_SEEDS = ("chunk 0: the seed; chunk i > 0: the integer of the two 32-bit words of "
               "numpy.random.SeedSequence([seed, i]).generate_state(2) (low word first)")


def chunk_seed(seed: int, index: int) -> int:
    """The seed chunk `index` of a store is drawn with (see CHUNK_SEEDS)."""
    if index == 0:
        return int(seed)
    low, high = np.random.SeedSequence([int(seed), int(index)]).generate_state(2)
    return int(low) | (int(high) << 32)


def _zarr():
    try:
        import zarr
    except ImportError:
        raise FeynmlpError("Zarr output needs zarr and dask: pip install 'feynmlp[distributed]'") from None
    return zarr


def _layout(size: int, grid: int, order: int, chunk_size: int) -> dict:
    n_chunks = -(-size // chunk_size)
    return {"U": ((size, grid), (chunk_size, grid), "float64"),
            "a": ((size,), (chunk_size,), "float64"),
            "born": ((size, order), (chunk_size, order), "float64"),
            "family": ((size,), (chunk_size,), "str"),
            "done": ((n_chunks,), (1,), "bool")}


def check_zarr_path(out) -> str:
    """The absolute path `out`, after checking it ends in .zarr and can hold a new store."""
    if not isinstance(out, (str, os.PathLike)):
        raise FeynmlpError(f"the output path must be a string, got {out!r}")
    path = os.path.abspath(os.fspath(out))
    if not path.rstrip(os.sep).endswith(".zarr"):
        raise FeynmlpError(f"the Zarr output {os.fspath(out)!r} must end in .zarr")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FeynmlpError(f"{path!r} exists and is not a folder, so not a Zarr store; choose another --out")
    from feynmlp.files import check_output_folder

    check_output_folder(path, advice="choose another --out")
    return path


def _jsonable(value):
    return json.loads(json.dumps(value))


def _existing_store(path: str, expected: dict, layout: dict):
    """The group at `path` if it holds this very data set (complete or half-written); a
    FeynmlpError naming the first difference otherwise. Reads only."""
    zarr = _zarr()
    try:
        group = zarr.open_group(path, mode="r+")
    except Exception as exc:  # zarr raises several kinds for a folder that is not a store
        raise FeynmlpError(f"{path!r} exists but is not a Zarr group ({type(exc).__name__}: {exc}); choose "
                           "another --out, or delete it") from None
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise FeynmlpError(f"{path!r} is a Zarr group that does not hold a feynmlp Born data set (format "
                           f"{attrs.get('format')!r}); choose another --out, or delete it")
    for key, want in expected.items():
        if attrs.get(key) != want:
            raise FeynmlpError(
                f"{path!r} already holds a different data set: its {key} is {attrs.get(key)!r}, this run's is "
                f"{want!r}; writing would mix two data sets, so nothing was written: choose another --out, or "
                "delete the store to write this one")
    for name, (shape, _, dtype) in layout.items():
        if name in group:
            array = group[name]
            kind = "str" if array.dtype.kind in "OUT" else array.dtype.name
            if tuple(array.shape) != shape or kind != dtype:
                raise FeynmlpError(
                    f"{path!r} already holds a different data set: its array {name!r} is {kind} of shape "
                    f"{tuple(array.shape)}, this run's is {dtype} of shape {shape}; choose another --out, or "
                    "delete it")
    return group


def _create_arrays(group, layout: dict) -> None:
    for name, (shape, chunks, dtype) in layout.items():
        if name in group:
            continue
        if dtype == "str":
            group.create_array(name, shape=shape, chunks=chunks, dtype=str)
        else:
            group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=False if dtype == "bool"
                               else np.nan)


def _write_chunk(path: str, index: int, lo: int, hi: int, arguments: dict) -> int:
    """Draw, label and write rows lo..hi-1 (chunk `index`), then mark the chunk done."""
    zarr = _zarr()
    U, labels, a = sample_potentials_with_a(
        hi - lo, arguments["grid"], arguments["R"], chunk_seed(arguments["seed"], index), arguments["families"],
        arguments["depth_range"], arguments["repulsive"], arguments["shallow"], arguments["a_max"])
    born = born_terms(U, arguments["order"], arguments["R"])
    group = zarr.open_group(path, mode="r+")
    group["U"][lo:hi] = U
    group["a"][lo:hi] = a
    group["born"][lo:hi] = born
    group["family"][lo:hi] = labels
    group["done"][index] = True
    return hi - lo


def _client(workers, scheduler):
    """(client, cluster) for the run: (None, None) for Dask's local threads."""
    if workers is not None and scheduler is not None:
        raise FeynmlpError("give either --workers (a local cluster) or --scheduler (an existing one), not both")
    if workers is None and scheduler is None:
        return None, None
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise FeynmlpError("--workers and --scheduler need dask.distributed: pip install "
                           "'feynmlp[distributed]'") from None
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise FeynmlpError(f"the scheduler address must be a string such as tcp://host:8786, got {scheduler!r}")
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT_S), None
        except Exception as exc:  # OSError, TimeoutError, ValueError for a malformed address
            raise FeynmlpError(
                f"cannot reach the Dask scheduler at {scheduler!r} within {CONNECT_TIMEOUT_S} s ({type(exc).__name__}: "
                f"{exc}); check the address (tcp://host:port of `dask scheduler`), or use --workers N for a local "
                "cluster") from None
    workers = check_positive_int(workers, "--workers (the number of local worker processes)")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=40)
    return Client(cluster), cluster


def write_zarr_dataset(out, size, grid=64, R=1.0, seed=0, families=None, depth_range=None, repulsive=False,
                       shallow=True, a_max=DEFAULT_A_MAX, order=3, chunk_size=DEFAULT_CHUNK_SIZE, workers=None,
                       scheduler=None, client=None, progress=False) -> dict:
    """Write a Born data set to the Zarr group `out`, chunk by chunk, through Dask.

    Args:
        out: a path ending in .zarr (a folder); the folder must be visible to every worker.
        size .. order: as in `make_dataset`.
        chunk_size: rows per chunk (and per Dask task); part of what defines the rows.
        workers: start a local cluster of this many worker processes (one thread each);
        scheduler: or the address of a running Dask scheduler; client: or a connected
            dask.distributed.Client. None of them: Dask's local threads.
        progress: show Dask's progress bar (only when stderr is a terminal, as for .npz).

    Returns:
        {"path", "chunks", "written" (chunks written by this call), "complete": True}.

    Raises:
        FeynmlpError: a bad argument, an unreachable scheduler, or a store at `out` that holds
            something else (left as it was); all checked before any row is drawn.
    """
    size, grid, R, seed, weights, depth_range, a_max = check_sampling_arguments(
        size, grid, R, seed, families, depth_range, a_max)
    order = check_positive_int(order, "order (the highest Born term)")
    chunk_size = check_positive_int(chunk_size, "the chunk size (rows per chunk)")
    path = check_zarr_path(out)
    zarr = _zarr()
    import dask

    metadata = dataset_metadata(size, grid, R, seed, weights, depth_range, repulsive, shallow, a_max, order)
    expected = _jsonable({**metadata, "chunk_size": chunk_size, "chunk_seeds": CHUNK_SEEDS})
    layout = _layout(size, grid, order, chunk_size)
    progress = bool(progress) and sys.stderr.isatty()
    group = _existing_store(path, expected, layout) if os.path.lexists(path) else None
    if group is not None and group.attrs.get("complete") is True:
        return {"path": path, "chunks": layout["done"][0][0], "written": 0, "complete": True}
    own_client, cluster = (None, None) if client is not None else _client(workers, scheduler)
    try:
        if group is None:
            # The attributes first (complete = false), so that an interrupted creation is
            # recognised as this data set, half-written, and resumed.
            group = zarr.open_group(path, mode="w-")
            group.attrs.update({**expected, "complete": False})
        _create_arrays(group, layout)
        done = np.asarray(group["done"][:], dtype=bool)
        arguments = {"grid": grid, "R": R, "seed": seed, "families": weights, "depth_range": depth_range,
                     "repulsive": bool(repulsive), "shallow": bool(shallow), "a_max": a_max, "order": order}
        pending = [i for i in range(done.size) if not done[i]]
        tasks = [dask.delayed(_write_chunk, pure=False)(path, i, i * chunk_size, min(size, (i + 1) * chunk_size),
                                                        arguments, dask_key_name=f"feynmlp-born-chunk-{i}")
                 for i in pending]
        runner = client or own_client
        if runner is not None:
            futures = runner.compute(tasks)
            if progress:
                from dask.distributed import progress as progress_bar

                progress_bar(futures)
            runner.gather(futures)
        elif progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                dask.compute(*tasks, scheduler="threads")
        else:
            dask.compute(*tasks, scheduler="threads")
        if not np.asarray(group["done"][:], dtype=bool).all():  # pragma: no cover - a task lied
            raise FeynmlpError(f"{path!r}: some chunks were not written; rerun the same command to finish them")
        group.attrs["complete"] = True
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()
    return {"path": path, "chunks": len(done), "written": len(pending), "complete": True}


def load_zarr_dataset(path):
    """Read a complete Zarr data set: (arrays as NumPy arrays, metadata dict), as load_dataset.

    Raises:
        FeynmlpError: not a feynmlp Born data set, or a half-written one.
    """
    zarr = _zarr()
    path = os.fspath(path)
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as exc:
        raise FeynmlpError(f"cannot open {path!r} as a Zarr group ({type(exc).__name__}: {exc})") from None
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise FeynmlpError(f"{path!r} has format {attrs.get('format')!r}, expected {FORMAT!r}")
    if attrs.get("format_version", 0) > FORMAT_VERSION:
        raise FeynmlpError(f"{path!r} has data set format version {attrs['format_version']}, newer than this "
                           f"feynmlp ({FORMAT_VERSION}); upgrade feynmlp")
    if attrs.get("complete") is not True:
        raise FeynmlpError(f"{path!r} is half-written (its attribute complete is not true); rerun the command "
                           "that wrote it to finish it")
    arrays = {name: np.asarray(group[name][:]) for name in ("U", "a", "born", "family")}
    arrays["family"] = np.array(arrays["family"].tolist(), dtype=str)  # NumPy fixed-width, as in .npz
    metadata = {k: v for k, v in attrs.items() if k != "complete"}
    return arrays, metadata
