"""Dask arrays in, Dask arrays out, on a real multi-process cluster: results equal to the
in-memory expansion for even and uneven chunkings, laziness, per-block input checks, one
compile per worker process with one kernel and one BLAS thread per task, a worker killed
mid-computation, and the threaded scheduler."""
from __future__ import annotations

import os
import pickle
import signal
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")
from dask.array.utils import assert_eq as _dask_assert_eq  # noqa: E402

import feynmlp  # noqa: E402
from feynmlp import distributed as fd  # noqa: E402
from helpers.networks import random_mlp  # noqa: E402


def assert_eq(lazy, expected, **kwargs):
    """dask's assert_eq (chunks, dtype and meta checked against the computed blocks), to
    rounding: the in-memory expansion splits its points over threads differently, and BLAS
    rounds blocks of other sizes differently in the last bit."""
    assert isinstance(lazy, da.Array), f"expected a lazy dask array, got {type(lazy).__name__}"
    _dask_assert_eq(lazy, expected, rtol=1e-12, atol=1e-12, **kwargs)


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two worker processes with one thread each, started once for the module."""
    cluster = distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def network():
    return random_mlp(np.random.default_rng(7), (3, 10, 10, 2), "tanh")


def _points(rows, seed=1):
    return np.random.default_rng(seed).normal(size=(rows, 3))


@pytest.mark.parametrize("chunks", [(12, 3), ((5, 17, 26), 3), (12, (2, 1))],
                         ids=["even", "uneven", "split-features"])
def test_taylor_on_cluster_equals_in_memory(client, network, chunks):
    x = _points(48)
    lazy = feynmlp.taylor(network, da.from_array(x, chunks=chunks), 3)
    ref = feynmlp.taylor(network, x, 3)
    assert isinstance(lazy.coefficients, da.Array) and isinstance(lazy.multi_indices, np.ndarray)
    assert lazy.coefficients.chunks[0] == da.from_array(x, chunks=chunks).chunks[0]
    assert lazy.coefficients.chunks[1:] == ((2,), (20,))
    np.testing.assert_array_equal(lazy.multi_indices, ref.multi_indices)
    assert_eq(lazy.coefficients, ref.coefficients, scheduler=client)
    assert_eq(lazy.gradient, ref.gradient, scheduler=client)
    assert_eq(lazy.hessian, ref.hessian, scheduler=client)
    assert_eq(lazy.derivative_tensor(3), ref.derivative_tensor(3), scheduler=client)
    h = _points(48, seed=2) * 0.1
    assert_eq(lazy(da.from_array(h, chunks=7)), ref(h), scheduler=client)


def test_gradient_on_cluster_against_closed_form(client):
    # One hidden tanh layer: grad f = W2 diag(1 - tanh(W1 x + b1)^2) W1, independent of the kernels.
    rng = np.random.default_rng(3)
    w1, b1, w2 = rng.normal(size=(6, 4)), rng.normal(size=6), rng.normal(size=(1, 6))
    mlp = feynmlp.MLP([w1, w2], [b1, None], "tanh")
    x = rng.normal(size=(30, 4))
    gradient = feynmlp.taylor(mlp, da.from_array(x, chunks=(8, 4)), 2).gradient.compute(scheduler=client)
    expected = np.einsum("oh,bh,hi->boi", w2, 1 - np.tanh(x @ w1.T + b1) ** 2, w1)
    np.testing.assert_allclose(gradient, expected, rtol=1e-12, atol=1e-14)


def test_directional_on_cluster_equals_in_memory(client, network):
    v = _points(40, seed=4)
    ref = feynmlp.directional(network, np.zeros(3), v, 6)
    lazy = feynmlp.directional(network, np.zeros(3), da.from_array(v, chunks=(9, 3)), 6)
    assert lazy.chunks == ((9, 9, 9, 9, 4), (2,), (7,))
    assert_eq(lazy, ref, scheduler=client)
    x = _points(40, seed=5)
    assert_eq(feynmlp.directional(network, da.from_array(x, chunks=(16, 3)), v, 4),
              feynmlp.directional(network, x, v, 4), scheduler=client)


def test_single_point_expansion_is_lazy_and_equal(network):
    x = _points(1)[0]
    lazy = feynmlp.taylor(network, da.from_array(x), 2)
    ref = feynmlp.taylor(network, x, 2)
    assert lazy.coefficients.shape == (2, 10)
    assert_eq(lazy.coefficients, ref.coefficients, scheduler="sync")
    h = np.random.default_rng(6).normal(size=(4, 5, 3))
    assert_eq(lazy(h), ref(h), scheduler="sync")
    assert_eq(lazy.hessian, ref.hessian, scheduler="sync")


def test_threaded_scheduler(network):
    x = _points(50, seed=8)
    lazy = feynmlp.taylor(network, da.from_array(x, chunks=(7, 3)), 2, wrt=[0, 2])
    ref = feynmlp.taylor(network, x, 2, wrt=[0, 2])
    assert_eq(lazy.coefficients, ref.coefficients, scheduler="threads")
    assert_eq(lazy.hessian, ref.hessian, scheduler="threads")


@pytest.mark.parametrize("chunks", [(12, 3), ((5, 17, 26), (2, 1))], ids=["even", "uneven-split-features"])
def test_operators_on_cluster_equal_in_memory(client, network, chunks):
    # The in-memory operators are checked against torch (tests/test_operators.py); on dask
    # arrays they must give the same numbers, lazily, in the same row chunks.
    x = _points(48, seed=21)
    lazy_x = da.from_array(x, chunks=chunks)
    terms = {(1, 0, 0): 1.0, (0, 2, 0): 1.0, (0, 0, 3): -0.5}
    cases = [(feynmlp.laplacian(network, lazy_x), feynmlp.laplacian(network, x)),
             (feynmlp.laplacian(network, lazy_x, wrt=[1, 2]), feynmlp.laplacian(network, x, wrt=[1, 2])),
             (feynmlp.biharmonic(network, lazy_x), feynmlp.biharmonic(network, x)),
             (feynmlp.operator(network, lazy_x, terms), feynmlp.operator(network, x, terms))]
    for lazy, ref in cases:
        assert lazy.chunks == (lazy_x.chunks[0], (2,))
        assert_eq(lazy, ref, scheduler=client)
    single = feynmlp.laplacian(network, da.from_array(x[0], chunks=2))
    assert single.shape == (2,)
    assert_eq(single, feynmlp.laplacian(network, x[0]), scheduler="threads")


def test_operators_on_dask_arrays_check_their_terms_when_the_graph_is_built(network):
    lazy_x = da.zeros((10, 3), chunks=5)
    with pytest.raises(feynmlp.FeynmlpError, match="term"):
        feynmlp.operator(network, lazy_x, {(2, 0): 1.0})
    with pytest.raises(feynmlp.FeynmlpError):
        feynmlp.laplacian(network, lazy_x, wrt=[5])


def test_directional_with_two_dask_arrays_of_different_chunks(network):
    x, v = _points(30, seed=13), _points(30, seed=14)
    lazy = feynmlp.directional(network, da.from_array(x, chunks=(7, 3)), da.from_array(v, chunks=(11, 2)), 3)
    assert lazy.chunks[0] == (7, 7, 7, 7, 2)
    assert_eq(lazy, feynmlp.directional(network, x, v, 3), scheduler="threads")


def test_thread_limit_is_per_thread_and_restored():
    from feynmlp import threads

    outside = threads.count()
    with threads.limited(1):
        assert threads.count() == 1 and threads.blocks(1000) == [(0, 1000)]
        seen = []
        import threading
        other = threading.Thread(target=lambda: seen.append(threads.count()))
        other.start()
        other.join()
        assert seen == [outside]  # another thread keeps its own count
    assert threads.count() == outside


def test_graph_building_is_lazy_and_fast(monkeypatch, network):
    calls = []
    # The module feynmlp.taylor (the package's name `taylor` is the function) calls both.
    taylor_module = sys.modules["feynmlp.taylor"]
    for name in ("multivariate_series", "directional_series"):
        original = getattr(taylor_module, name)

        def counting(*args, _original=original, **kwargs):
            calls.append(1)
            return _original(*args, **kwargs)

        monkeypatch.setattr(taylor_module, name, counting)
    points = da.zeros((20_000_000, 3), chunks=(100_000, 3))
    started = time.perf_counter()
    e = feynmlp.taylor(network, points, 3)
    tensors = [e.coefficients, e.gradient, e.hessian, e.derivative_tensor(3), e(points)]
    series = feynmlp.directional(network, np.zeros(3), points, 5)
    elapsed = time.perf_counter() - started
    assert calls == [], "a kernel ran while the graph was built"
    assert elapsed < 1.0, f"building the graphs of 2e7 points took {elapsed:.2f} s"
    assert tensors[3].shape == (20_000_000, 2, 3, 3, 3) and series.shape == (20_000_000, 2, 6)
    # The same graphs on a few points do run the counted kernels: the counter sees them.
    small = feynmlp.taylor(network, da.zeros((10, 3), chunks=5), 3).coefficients
    assert calls == []
    small.compute(scheduler="sync")
    assert len(calls) == 2


def test_block_errors_name_their_rows(network):
    x = _points(50)
    x[31, 1] = np.nan
    with pytest.raises(feynmlp.FeynmlpError, match=r"rows 26\.\.38 .*first at row 31, column 1"):
        feynmlp.taylor(network, da.from_array(x, chunks=13), 2).coefficients.compute(scheduler="sync")
    # A dask array that declares float64 but whose blocks are float32 (mismatched dtypes).
    lying = da.from_array(_points(50), chunks=13).map_blocks(lambda b: b.astype(np.float32), dtype=np.float64)
    with pytest.raises(feynmlp.FeynmlpError, match=r"holds dtype float32 but the dask array declares float64"):
        feynmlp.taylor(network, lying, 2).coefficients.compute(scheduler="sync")
    # An overflow inside the network: the in-memory error, placed in the block's rows.
    exp_net = feynmlp.MLP([np.full((2, 3), 1.0), np.ones((1, 2))], None, "exp")
    big = np.zeros((20, 3))
    big[17] = 400.0
    with pytest.raises(feynmlp.FeynmlpError, match=r"in rows 15\.\.19 .*counted from row 15.*first: point 2"):
        feynmlp.taylor(exp_net, da.from_array(big, chunks=5), 2).coefficients.compute(scheduler="sync")


def test_bad_dask_inputs_refused_at_graph_time(network):
    with pytest.raises(feynmlp.FeynmlpError, match="must hold real numbers"):
        feynmlp.taylor(network, da.zeros((4, 3), dtype=complex), 2)
    with pytest.raises(feynmlp.FeynmlpError, match=r"shape \(3,\) or \(batch, 3\)"):
        feynmlp.taylor(network, da.zeros((4, 5)), 2)
    unknown = da.zeros((10, 3), chunks=5)
    unknown = unknown[unknown[:, 0] > -1]
    with pytest.raises(feynmlp.FeynmlpError, match="compute_chunk_sizes"):
        feynmlp.taylor(network, unknown, 2)


def test_payload_is_small_and_workers_build_once(client):
    mlp = random_mlp(np.random.default_rng(11), (3, 32, 32, 1), "sigmoid")
    x = _points(64, seed=9)
    lazy = feynmlp.taylor(mlp, da.from_array(x, chunks=4), 3).coefficients
    # The weights are one key of the graph; each block's task only names it, and carries no
    # compiled code.
    weights_bytes = sum(w.nbytes + b.nbytes for w, b in zip(mlp.weights, mlp.biases))
    graph = dict(lazy.__dask_graph__())
    models = [key for key in graph if str(key).startswith("feynmlp-model-")]
    blocks = [value for key, value in graph.items() if isinstance(key, tuple) and key[0].startswith("feynmlp-taylor")]
    assert len(models) == 1 and len(blocks) == 16
    model = pickle.dumps(graph[models[0]])
    assert weights_bytes < len(model) < weights_bytes + 2000
    for payload in (model, *(pickle.dumps(block) for block in blocks)):
        assert b"numba" not in payload and b"Dispatcher" not in payload
    assert max(len(pickle.dumps(block)) for block in blocks) < 2000 < weights_bytes
    before = client.run(fd.process_report)
    first = lazy.compute(scheduler=client)
    middle = client.run(fd.process_report)
    second = lazy.compute(scheduler=client)
    after = client.run(fd.process_report)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, feynmlp.taylor(mlp, x, 3).coefficients, rtol=1e-12, atol=1e-12)
    ran = [worker for worker in after if after[worker]["blocks"] > before[worker]["blocks"]]
    assert ran, "no worker ran a block"
    for worker in ran:
        # One MLP built from the spec per process, however many blocks; the kernels are
        # prepared by the first compute and reused by the second.
        assert after[worker]["models_built"] - before[worker]["models_built"] <= 1
        assert after[worker]["kernels_prepared"] == middle[worker]["kernels_prepared"] or \
            middle[worker]["blocks"] == before[worker]["blocks"]
        assert after[worker]["kernel_threads"] == 1 and after[worker]["blas_threads"] == 1
    assert sum(after[w]["blocks"] - before[w]["blocks"] for w in after) == 32


def test_worker_killed_mid_computation(client, network):
    x = _points(12000, seed=12)  # 120 blocks: long enough to be caught running
    lazy = feynmlp.taylor(network, da.from_array(x, chunks=100), 4).coefficients
    future = client.compute(lazy)
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 30
    victim = None
    while victim is None and time.monotonic() < deadline:
        busy = [worker for worker, tasks in client.processing().items() if tasks]
        if busy and not future.done():
            victim = busy[0]
        else:
            time.sleep(0.01)
    assert victim is not None, "no worker started a block"
    os.kill(pids[victim], signal.SIGKILL)
    result = future.result(timeout=120)
    assert victim not in client.scheduler_info()["workers"] or client.run(os.getpid).get(victim) != pids[victim]
    np.testing.assert_allclose(result, feynmlp.taylor(network, x, 4).coefficients, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- Born data sets in Zarr

from feynmlp.born import load_zarr_dataset, make_dataset, write_zarr_dataset  # noqa: E402
from feynmlp.born.zarr_dataset import chunk_seed  # noqa: E402


@pytest.fixture
def zarr():
    return pytest.importorskip("zarr")  # Zarr 3 needs Python >= 3.11 (see pyproject.toml)

_SET = dict(size=700, grid=8, R=1.5, seed=5, order=2)


def _arrays(path):
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(group[name][:]) for name in ("U", "a", "born", "family", "done")}


def _assert_same(first, second):
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_zarr_one_chunk_is_the_npz_data_set(tmp_path, zarr):
    write_zarr_dataset(tmp_path / "one.zarr", chunk_size=1000, **_SET)
    arrays, metadata = load_zarr_dataset(tmp_path / "one.zarr")
    expected, expected_metadata = make_dataset(**_SET)
    for name in expected:
        np.testing.assert_array_equal(arrays[name], expected[name], err_msg=name)
    assert {k: metadata[k] for k in expected_metadata} == json_roundtrip(expected_metadata)
    assert metadata["chunk_size"] == 1000


def json_roundtrip(value):
    import json
    return json.loads(json.dumps(value))


def test_zarr_rows_independent_of_workers_and_scheduler(tmp_path, zarr, client, cli_main, capsys):
    write_zarr_dataset(tmp_path / "threads.zarr", chunk_size=200, **_SET)
    write_zarr_dataset(tmp_path / "one-worker.zarr", chunk_size=200, workers=1, **_SET)
    status = cli_main(["born", "dataset", "--size", "700", "--grid", "8", "--range", "1.5", "--seed", "5",
                       "--order", "2", "--chunk-size", "200", "--scheduler", client.scheduler.address,
                       "--out", str(tmp_path / "two-workers.zarr")])
    assert status == 0 and "4 of 4 chunks" in capsys.readouterr().out
    reference = _arrays(tmp_path / "threads.zarr")
    _assert_same(_arrays(tmp_path / "one-worker.zarr"), reference)
    _assert_same(_arrays(tmp_path / "two-workers.zarr"), reference)
    assert reference["done"].all() and zarr.open_group(str(tmp_path / "two-workers.zarr")).attrs["complete"] is True
    # Chunk i holds the in-memory data set of its rows drawn with the chunk's seed; labels
    # checked against the closed form a_1 = sum_n U_n (r_n^3 - r_{n-1}^3) / 3.
    for i, (lo, hi) in enumerate([(0, 200), (200, 400), (400, 600), (600, 700)]):
        part, _ = make_dataset(hi - lo, grid=8, R=1.5, seed=chunk_seed(5, i), order=2)
        np.testing.assert_array_equal(reference["U"][lo:hi], part["U"])
    r = 1.5 * np.arange(9) / 8
    np.testing.assert_allclose(reference["born"][:, 0], reference["U"] @ ((r[1:] ** 3 - r[:-1] ** 3) / 3),
                               rtol=1e-12, atol=1e-300)
    assert len({tuple(reference["U"][i]) for i in range(700)}) == 700  # no chunk repeats another


def test_zarr_half_written_store_resumes(tmp_path, zarr):
    path = tmp_path / "set.zarr"
    write_zarr_dataset(path, chunk_size=300, **_SET)
    complete = _arrays(path)
    # Interrupt by hand: chunk 1 overwritten with garbage and not marked done, complete unset.
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["complete"] = False
    group["done"][1] = False
    group["U"][300:600] = np.nan
    group["a"][300:600] = 1e9
    with pytest.raises(feynmlp.FeynmlpError, match="half-written"):
        load_zarr_dataset(path)
    result = write_zarr_dataset(path, chunk_size=300, **_SET)
    assert result["written"] == 1 and result["chunks"] == 3
    _assert_same(_arrays(path), complete)
    assert zarr.open_group(str(path)).attrs["complete"] is True
    assert write_zarr_dataset(path, chunk_size=300, **_SET)["written"] == 0


def test_zarr_store_of_another_data_set_is_refused_unchanged(tmp_path, zarr, cli_main, capsys):
    path = tmp_path / "set.zarr"
    write_zarr_dataset(path, chunk_size=300, **_SET)
    before = _arrays(path)
    for change, what in ((dict(seed=6), "seed is 5, this run's is 6"), (dict(chunk_size=250), "chunk_size"),
                         (dict(grid=9), "grid")):
        arguments = {**_SET, "chunk_size": 300, **change}
        with pytest.raises(feynmlp.FeynmlpError, match=f"already holds a different data set: its {what}"):
            write_zarr_dataset(path, **arguments)
    _assert_same(_arrays(path), before)
    status = cli_main(["born", "dataset", "--size", "700", "--grid", "8", "--seed", "1", "--out", str(path)])
    err = capsys.readouterr().err
    assert status == 2 and "different data set" in err and len(err.strip().splitlines()) == 1
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.attrs["title"] = "not ours"
    with pytest.raises(feynmlp.FeynmlpError, match="does not hold a feynmlp Born data set"):
        write_zarr_dataset(tmp_path / "other.zarr", **_SET)


def test_unreachable_scheduler_fails_within_seconds(tmp_path, zarr, cli_main, capsys):
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    status = cli_main(["born", "dataset", "--size", "10", "--out", str(tmp_path / "x.zarr"),
                       "--scheduler", f"tcp://127.0.0.1:{port}"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert status == 2 and "cannot reach the Dask scheduler" in err and len(err.strip().splitlines()) == 1
    assert elapsed < 15 and not (tmp_path / "x.zarr").exists()


def test_zarr_options_refused_for_npz(tmp_path, cli_main, capsys):
    status = cli_main(["born", "dataset", "--size", "10", "--out", str(tmp_path / "x.npz"), "--workers", "2"])
    assert status == 2 and "--workers: only for Zarr output" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
