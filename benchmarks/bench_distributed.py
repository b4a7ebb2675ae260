"""Benchmark: feynmlp on Dask clusters of 1 and 2 worker processes, and data sets streamed to Zarr.

In: the sizes below (defaults: the scale table of the distributed-computing goals) and --json
FILE. Out: on stdout, one markdown table per measurement; with --json, the same numbers in a
file. Needs the `distributed` extra. Run at a small size first:

    python benchmarks/bench_distributed.py --points 20000 --zarr-points 20000 --born-size 20000

Measurements (tanh network 32 -> 64 -> 64 -> 64 -> 1, float64, random normal points):
- taylor: feynmlp.taylor(mlp, x, K).coefficients.sum(axis=0) computed on a fresh
  LocalCluster(processes=True, threads_per_worker=1) of 1 and of 2 workers, for each order in
  --orders; points per second over --points points in chunks of --chunk rows, after every
  worker has prepared its kernels (a warm-up expansion on each worker, not timed). The sum
  keeps the result small: the (points, 1, C(32 + K, K)) coefficients are computed in full on
  the workers, block by block, and reduced there. The speed-up is rate(2) / rate(1).
- zarr: the order-2 coefficients (561 per point) of --zarr-points points written to a Zarr
  array with dask.array.to_zarr on 2 workers; wall time, bytes written, and the peak resident
  memory (ru_maxrss) of each worker process and of this (client) process.
- born: feynmlp.born.write_zarr_dataset of --born-size potentials x 64 steps on 2 workers;
  wall time and the same peak memories.
Every run gets a fresh cluster, so a worker's ru_maxrss is the peak of that run alone.
Absolute times on a shared machine are noisy; the load average is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _network():
    import feynmlp

    rng = np.random.default_rng(0)
    sizes = (32, 64, 64, 64, 1)
    weights = [rng.normal(size=(o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(size=o) * 0.1 for o in sizes[1:]]
    return feynmlp.MLP(weights, biases, "tanh")


def _warm(order: int) -> int:
    """On a worker: prepare the kernels of `order` with a few points (not timed)."""
    import feynmlp

    feynmlp.taylor(_network(), np.zeros((4, 32)), order)
    return os.getpid()


def _cluster(workers: int):
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=40)
    return cluster, Client(cluster)


def _points(count: int, chunk: int):
    import dask.array as da

    return da.random.default_rng(1).standard_normal((count, 32), chunks=(chunk, 32))


def bench_taylor(points: int, chunk: int, orders, workers_list) -> list[dict]:
    import feynmlp

    mlp = _network()
    rows = []
    for order in orders:
        for workers in workers_list:
            cluster, client = _cluster(workers)
            try:
                from dask.distributed import wait

                client.run(_warm, order)
                x = client.persist(_points(points, chunk))
                wait(x)  # the points are drawn before the clock starts
                started = time.perf_counter()
                total = feynmlp.taylor(mlp, x, order).coefficients.sum(axis=0).compute()
                elapsed = time.perf_counter() - started
                peaks = client.run(_peak_mb)
            finally:
                client.close()
                cluster.close()
            rows.append({"order": order, "workers": workers, "points": points, "chunk": chunk,
                         "seconds": elapsed, "points_per_s": points / elapsed,
                         "worker_peak_mb": sorted(peaks.values()), "checksum": float(np.abs(total).sum())})
    return rows


def bench_zarr(points: int, chunk: int, workers: int, folder: str) -> dict:
    import dask.array as da

    import feynmlp

    mlp = _network()
    path = os.path.join(folder, "coefficients.zarr")
    cluster, client = _cluster(workers)
    try:
        client.run(_warm, 2)
        coefficients = feynmlp.taylor(mlp, _points(points, chunk), 2).coefficients
        started = time.perf_counter()
        da.to_zarr(coefficients, path, overwrite=True)
        elapsed = time.perf_counter() - started
        peaks = client.run(_peak_mb)
    finally:
        client.close()
        cluster.close()
    written = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    shutil.rmtree(path, ignore_errors=True)
    return {"points": points, "chunk": chunk, "workers": workers, "coefficients_per_point": 561,
            "gigabytes": points * 561 * 8 / 1e9, "bytes_written": written, "seconds": elapsed,
            "worker_peak_mb": sorted(peaks.values()), "client_peak_mb": _peak_mb()}


def bench_born(size: int, chunk: int, workers: int, folder: str) -> dict:
    from feynmlp.born import write_zarr_dataset

    path = os.path.join(folder, "born.zarr")
    cluster, client = _cluster(workers)
    try:
        started = time.perf_counter()
        write_zarr_dataset(path, size, grid=64, seed=0, chunk_size=chunk, client=client)
        elapsed = time.perf_counter() - started
        peaks = client.run(_peak_mb)
    finally:
        client.close()
        cluster.close()
    shutil.rmtree(path, ignore_errors=True)
    return {"size": size, "grid": 64, "chunk": chunk, "workers": workers, "seconds": elapsed,
            "rows_per_s": size / elapsed, "worker_peak_mb": sorted(peaks.values()), "client_peak_mb": _peak_mb()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000, help="taylor: points (default 1e6)")
    parser.add_argument("--chunk", type=int, default=10_000, help="taylor and zarr: rows per block (default 1e4)")
    parser.add_argument("--orders", default="2,3", help="taylor: orders K (default 2,3)")
    parser.add_argument("--workers", default="1,2", help="taylor: worker processes to compare (default 1,2)")
    parser.add_argument("--zarr-points", type=int, default=2_000_000, help="zarr: points (default 2e6, 9 GB)")
    parser.add_argument("--born-size", type=int, default=10_000_000, help="born: potentials (default 1e7)")
    parser.add_argument("--born-chunk", type=int, default=100_000, help="born: rows per chunk (default 1e5)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: taylor, zarr, born")
    parser.add_argument("--folder", default=None, help="where the Zarr stores go (default a temporary folder)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the numbers to FILE")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    folder = args.folder or tempfile.mkdtemp(prefix="feynmlp-bench-distributed-")
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores; stores in {folder}")
    results: dict = {}
    if "taylor" not in skip:
        orders = [int(k) for k in args.orders.split(",")]
        workers = [int(w) for w in args.workers.split(",")]
        rows = bench_taylor(args.points, args.chunk, orders, workers)
        results["taylor"] = rows
        print("\n| K | workers | points | s | points/s | speed-up | worker peak MB |\n|---|---|---|---|---|---|---|")
        for row in rows:
            base = next(r for r in rows if r["order"] == row["order"] and r["workers"] == min(workers))
            print(f"| {row['order']} | {row['workers']} | {row['points']} | {row['seconds']:.2f} | "
                  f"{row['points_per_s']:.0f} | {row['points_per_s'] / base['points_per_s']:.2f} | "
                  f"{', '.join(f'{m:.0f}' for m in row['worker_peak_mb'])} |")
    if "zarr" not in skip:
        row = bench_zarr(args.zarr_points, args.chunk, 2, folder)
        results["zarr"] = row
        print("\n| points | GB | workers | s | worker peak MB | client peak MB |\n|---|---|---|---|---|---|")
        print(f"| {row['points']} | {row['gigabytes']:.2f} | {row['workers']} | {row['seconds']:.1f} | "
              f"{', '.join(f'{m:.0f}' for m in row['worker_peak_mb'])} | {row['client_peak_mb']:.0f} |")
    if "born" not in skip:
        row = bench_born(args.born_size, args.born_chunk, 2, folder)
        results["born"] = row
        print("\n| potentials | steps | workers | s | rows/s | worker peak MB | client peak MB |\n"
              "|---|---|---|---|---|---|---|")
        print(f"| {row['size']} | 64 | {row['workers']} | {row['seconds']:.1f} | {row['rows_per_s']:.0f} | "
              f"{', '.join(f'{m:.0f}' for m in row['worker_peak_mb'])} | {row['client_peak_mb']:.0f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    if args.folder is None:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
