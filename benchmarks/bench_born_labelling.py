"""Benchmark: labelling step potentials with exact scattering lengths and Born terms.

In: --size potentials of --grid steps (default 100,000 x 64), --order (default 3), --repeat.
Out: a table on stdout with the wall time of each part of `feynmlp born dataset` (sampling
with its shallow/near-threshold filter, exact a, bound-state count, Born terms, the whole
make_dataset, writing the .npz) and, as the baseline measured in the same run, a plain Python
loop over potentials of the textbook tan/tanh transfer recursion (timed on a subset and
scaled up). Times are the best of --repeat runs. Run: python benchmarks/bench_born_labelling.py
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np

from feynmlp.born import (born_terms, bound_state_count, make_dataset, sample_potentials,
                          save_dataset, scattering_length)


def _best(fn, repeat):
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _python_loop_scattering_length(U, R):
    """The textbook recursion of D = u/u' (docs/born.md), one potential and one step at a time."""
    out = []
    for row in U:
        delta = R / len(row)
        D = 0.0
        for Un in row:
            if Un < 0:
                k = math.sqrt(-Un)
                t = math.tan(k * delta)
                D = (D + t / k) / (1 - k * D * t)
            elif Un > 0:
                k = math.sqrt(Un)
                t = math.tanh(k * delta)
                D = (D + t / k) / (1 + k * D * t)
            else:
                D += delta
        out.append(R - D)
    return np.array(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-size", type=int, default=2000,
                        help="potentials the Python-loop baseline runs on (scaled to --size)")
    args = parser.parse_args(argv)
    R = 1.0

    rows = []
    t_sample, (U, _) = _best(lambda: sample_potentials(args.size, grid=args.grid, R=R, seed=0),
                             args.repeat)
    rows.append(("sample_potentials (draw + shallow/|a| filter)", t_sample))
    t_a, a = _best(lambda: scattering_length(U, R), args.repeat)
    rows.append(("scattering_length (exact a)", t_a))
    t_nb, _ = _best(lambda: bound_state_count(U, R), args.repeat)
    rows.append(("bound_state_count (a + node count)", t_nb))
    t_born, _ = _best(lambda: born_terms(U, args.order, R), args.repeat)
    rows.append((f"born_terms (a_1..a_{args.order})", t_born))
    t_make, (arrays, meta) = _best(
        lambda: make_dataset(args.size, grid=args.grid, R=R, seed=0, order=args.order), args.repeat)
    rows.append(("make_dataset (all of the above that it needs)", t_make))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.npz")
        t_save, _ = _best(lambda: save_dataset(path, arrays, meta), args.repeat)
        size_mb = os.path.getsize(path) / 1e6
    rows.append((f"save_dataset ({size_mb:.0f} MB .npz)", t_save))

    n_base = min(args.baseline_size, args.size)
    t_base, a_base = _best(lambda: _python_loop_scattering_length(U[:n_base], R), 1)
    t_base *= args.size / n_base
    # keep the baseline honest: it must compute the same numbers
    assert np.allclose(a_base, a[:n_base], rtol=1e-9, atol=1e-12), "baseline disagrees"

    print(f"{args.size} potentials x {args.grid} steps, Born order {args.order}, best of "
          f"{args.repeat}, {os.cpu_count()} CPU(s)")
    print(f"{'part':50s} {'seconds':>9s} {'us/pot':>8s} {'vs loop':>8s}")
    for name, t in rows:
        print(f"{name:50s} {t:9.3f} {1e6 * t / args.size:8.2f} {t / t_base:8.4f}")
    print(f"{'baseline: Python loop, tan/tanh recursion (a only)':50s} {t_base:9.3f} "
          f"{1e6 * t_base / args.size:8.2f} {1.0:8.4f}   (timed on {n_base}, scaled)")
    print(f"labelling (a + bound states + Born terms), total {t_nb + t_born:.2f} s; "
          f"full data set incl. sampling and file {t_make + t_save:.2f} s")


if __name__ == "__main__":
    main()
