"""Benchmark: feynmlp's Taylor coefficients against JAX and torch.func, same networks, same points.

In: --cases (default all), --repeats, --quick, --json FILE and the limits below. Out: on
stdout, a table of median times with the ratios time_baseline / time_feynmlp, the largest
relative difference between the tools (expected around 1e-12 or better), feynmlp's FLOP count,
FLOP rate and its fraction of the matrix-product rate measured in this run, peak memory, first-
call times (cold and warm caches) and the issue's goals as pass/miss; with --json, all of it
(plus every single timing) in a file. Run: python benchmarks/bench_taylor.py --quick

Cases (tanh networks, float64; --cases takes names or group names, comma separated):
    dense2..dense5  32 -> 64 -> 64 -> 64 -> 1, 256 random points, all coefficients to order K
    born2, born3    64 -> 128 -> 128 -> 128 -> 1 (the Born network), one point (U = 0)
    directional3    the Born network, 10,000 random potentials v at x = 0: t -> f(t v) to t^3
    multi2, multi3  32 -> 64 -> 64 -> 8, 256 random points
Tools: feynmlp (taylor / directional); jax: jit(vmap(jacfwd^(K-1)(jacrev(f)))), the dense n^K
tensor, in chunks of points when K >= 4 (memory), or nested jax.jvp for directional;
jax-jet: jax.experimental.jet (directional only); torch: torch.func, the same nesting.

How each number is obtained (benchmarks/README.md has the column-by-column version):
- Every tool runs in its own fresh subprocess per case, so peak memory (ru_maxrss) and
  first-call times are its own. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the
  environment of every subprocess (this machine sets them); the OpenBLAS kernel that runs is
  printed (threadpoolctl). Nothing outside the subprocesses is changed.
- Times exclude JIT compilation (JAX is compiled ahead of time, feynmlp's kernels are loaded
  by a one-point call first). A tool is probed on 1 point, then on more, and its full time is
  extrapolated linearly in the number of points. A baseline whose estimate exceeds
  --baseline-timeout is skipped (the estimate is printed, marked ~); feynmlp beyond
  --feynmlp-limit is timed on the largest probed subset and its full time extrapolated (~).
  The median is over --repeats timed runs, or for a short case over as many as fill
  SHORT_CASE_S of timing (at most MAX_REPEATS), the same rule for every tool: three runs of a
  few milliseconds said more about the machine's noise than about the tools.
- The baselines return the order-K derivative tensor only; feynmlp returns every coefficient up
  to order K. Agreement is checked on the order-K unique entries d^K f / dx_i1..dx_iK
  (i1 <= .. <= iK; derivative = coefficient * alpha!) of the first --check-points points, as
  max |a - b| / max |b|.
- FLOPs are counted analytically for the scheme feynmlp's "auto" picks for the case (it
  reports forward / top-vertex), by that scheme's own count (`flops` of the objects in
  feynmlp.schemes, formulas in their docstrings; feynmlp.directional.directional_flops), not
  measured: the count lives beside the code it describes.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# Set on this project's machines; removed from every benchmark subprocess, nowhere else.
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DENSE_SIZES = (32, 64, 64, 64, 1)
BORN_SIZES = (64, 128, 128, 128, 1)
MULTI_SIZES = (32, 64, 64, 8)
TOOLS = ("feynmlp", "jax", "jax-jet", "torch")

# The issue's goals. Speed: time_JAX / time_feynmlp at least this, by order (multivariate cases).
SPEED_GOAL = {2: 2.0, 3: 5.0, 4: 15.0}
K5_GOAL_S = 30.0            # dense5: all 256 points
FLOP_FRACTION_GOAL = 0.30   # of the 4000 x 4000 float64 matrix-product rate measured in the run
MEMORY_GOAL = (2.0, 0.5)    # peak <= 2 * unique output + 0.5 GB
COLD_GOAL_S, WARM_GOAL_S = 3.0, 0.5  # first call, shipped kernels (orders <= 4)
SHORT_CASE_S, MAX_REPEATS = 1.0, 100  # short cases: timed runs filling this long, at most this many
SHIPPED_MAX_ORDER = 4


# ======================================================================== cases and their data

def all_cases(quick: bool, points: int | None, potentials: int | None) -> dict[str, dict]:
    """name -> case description (plain JSON-able dict)."""
    many = points or (16 if quick else 256)
    cases = {}
    for K in (2, 3, 4, 5):
        cases[f"dense{K}"] = dict(name=f"dense{K}", group="dense", sizes=DENSE_SIZES, order=K,
                                  points=many, mode="multivariate", at="random",
                                  title=f"dense K={K}")
    for K in (2, 3):
        cases[f"born{K}"] = dict(name=f"born{K}", group="born", sizes=BORN_SIZES, order=K, points=1,
                                 mode="multivariate", at="zero", title=f"born K={K}")
    cases["directional3"] = dict(name="directional3", group="directional", sizes=BORN_SIZES, order=3,
                                 points=potentials or (1000 if quick else 10_000), mode="directional",
                                 at="zero", title="directional K=3")
    for K in (2, 3):
        cases[f"multi{K}"] = dict(name=f"multi{K}", group="multi", sizes=MULTI_SIZES, order=K,
                                  points=many, mode="multivariate", at="random",
                                  title=f"multi-out K={K}")
    return cases


QUICK_CASES = ("dense2", "dense3", "born3", "directional3", "multi2")


def select_cases(spec: str | None, cases: dict, quick: bool) -> list[dict]:
    if not spec or spec == "all":
        names = list(QUICK_CASES) if quick else list(cases)
    else:
        names = []
        for item in (s.strip() for s in spec.split(",") if s.strip()):
            matched = [n for n, c in cases.items() if item in (n, c["group"])]
            if not matched:
                groups = sorted({c["group"] for c in cases.values()})
                raise SystemExit(f"unknown case {item!r}; choose from {', '.join(cases)} or the groups "
                                 f"{', '.join(groups)} (comma separated), or 'all'")
            names += [n for n in matched if n not in names]
    return [cases[n] for n in names]


def write_case_data(case: dict, path: Path, seed: int) -> None:
    """Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2) (tanh neither saturated nor linear),
    points ~ N(0, 1) or zero; directional: potentials ~ N(0, 0.5^2). Same seed, same data."""
    rng = np.random.default_rng([seed, *case["sizes"]])
    sizes = case["sizes"]
    arrays = {}
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        arrays[f"W{layer}"] = rng.normal(size=(n_out, n_in)) / math.sqrt(n_in)
        arrays[f"b{layer}"] = 0.1 * rng.normal(size=n_out)
    n = sizes[0]
    if case["mode"] == "directional":
        arrays["X"] = np.zeros((1, n))
        arrays["V"] = 0.5 * rng.normal(size=(case["points"], n))
    elif case["at"] == "zero":
        arrays["X"] = np.zeros((case["points"], n))
    else:
        arrays["X"] = rng.normal(size=(case["points"], n))
    np.savez(path, **arrays)


# ======================================================================== analytic counts

def case_flops(case: dict, batch: int, scheme: str | None = "forward") -> int:
    """FLOPs of `scheme` ("forward", "top-vertex"; None: forward) for the case, as the scheme
    objects of the installed feynmlp count them (Scheme.flops; directional.directional_flops)."""
    from feynmlp import schemes
    from feynmlp.directional import directional_flops

    sizes, order = case["sizes"], case["order"]
    if case["mode"] == "directional":
        return directional_flops(sizes[0], sizes[1:], order, batch)
    request = schemes.Request(tuple(np.zeros((b, a)) for a, b in zip(sizes[:-1], sizes[1:])),
                              tuple(np.zeros(b) for b in sizes[1:]), ("tanh",) * (len(sizes) - 2), None, order,
                              np.arange(sizes[0]), np.dtype(np.float64), batch)
    return schemes.choose(request, scheme or "forward").flops(request, batch)


def unique_output_bytes(case: dict, batch: int) -> int:
    n, K, n_out = case["sizes"][0], case["order"], case["sizes"][-1]
    columns = K + 1 if case["mode"] == "directional" else math.comb(n + K, K)
    return batch * n_out * columns * 8


def dense_bytes_per_point(case: dict) -> tuple[int, int]:
    """(dense order-K output, rough working set of the nested-jacobian baselines) per point.

    The working set, about 3 * widest layer * n^(K-1) * 8 B, matches JAX's measured peak within
    a factor of about 1.5 for K = 4, 5 on the dense network."""
    n, K, n_out = case["sizes"][0], case["order"], case["sizes"][-1]
    widest = max(case["sizes"][1:])
    return n_out * n ** K * 8, 3 * widest * n_out * n ** (K - 1) * 8


# ======================================================================== worker side

def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl is not installed"}]
    keep = ("user_api", "internal_api", "version", "architecture", "num_threads", "prefix")
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def canonical_tuples(n: int, order: int) -> np.ndarray:
    """All i1 <= .. <= iK over range(n), lexicographic: the order every tool reports its
    unique order-K derivatives in (independent of feynmlp's own column layout)."""
    return np.array(list(itertools.combinations_with_replacement(range(n), order)), dtype=np.int64)


def dense_to_unique(dense: np.ndarray, tuples: np.ndarray) -> np.ndarray:
    """(points, n_out, n, .., n) -> (points, n_out, C): the entries at sorted index tuples."""
    index = (slice(None), slice(None)) + tuple(tuples[:, j] for j in range(tuples.shape[1]))
    return np.asarray(dense[index])


class Measurement:
    """Probe, decide, time; shared by all tools.

    run(s) computes the case on the first s points and returns something `block` waits for;
    prepare(s) compiles for s points (JAX) and returns the seconds it took.
    """

    def __init__(self, run, prepare, block, batch, limit, repeats, allow_subset):
        self.run, self.prepare, self.block = run, prepare, block
        self.batch, self.limit, self.repeats, self.allow_subset = batch, limit, repeats, allow_subset
        self.probes: dict[int, float] = {}
        self.compile_s: dict[int, float] = {}
        self.output, self.output_points = None, 0

    def timed(self, s: int) -> float:
        if s not in self.compile_s:
            self.compile_s[s] = self.prepare(s)
        self.output = None  # free the previous result before the next one is allocated
        start = time.perf_counter()
        out = self.run(s)
        self.block(out)
        seconds = time.perf_counter() - start
        self.output, self.output_points = out, s
        return seconds

    def probe(self, s: int) -> None:
        self.probes[s] = self.timed(s)

    def grow(self) -> int:
        """Probe on 1 point, then on up to 16x more, while a probe costs under limit/4."""
        s = 1
        if s not in self.probes:
            self.probe(1)
        while s < self.batch:
            rate = self.probes[s] / s
            if rate * self.batch <= self.limit / 4:
                following = self.batch
            else:
                following = min(self.batch, 16 * s)
                if rate * following > self.limit / 4:
                    break
            self.probe(following)
            s = following
        return s

    def estimate(self, s: int) -> float:
        return self.probes[self.batch] if self.batch in self.probes else self.probes[s] * self.batch / s

    def time(self) -> dict:
        s = self.grow()
        estimate = self.estimate(s)
        result = dict(probes={str(k): v for k, v in self.probes.items()}, est_full_s=estimate)
        if estimate <= self.limit:
            final = self.batch
        elif self.allow_subset:
            final = s
        else:
            result.update(status="skipped", points_timed=0,
                          reason=f"est. {estimate:.3g} s per run (from {s} point{'s' * (s > 1)}) "
                                 f"> limit {self.limit:.3g} s")
            return result
        # One untimed warm-up run at the final size (the probe there, if there was one: first
        # runs at a new size are often slower), then the timed runs; all of them together stay
        # under 1.5 x the limit, with at least one timed run.
        budget = 1.5 * self.limit
        per_run = max(self.probes.get(final, estimate), 1e-9)
        warm_up = final in self.probes
        if not warm_up and budget >= 2 * per_run:
            per_run = max(self.timed(final), 1e-9)
            budget -= per_run
            warm_up = True
        wanted = max(self.repeats, min(MAX_REPEATS, int(SHORT_CASE_S // per_run)))
        repeats = min(wanted, max(1, int(budget // per_run)))
        result["warm_up"] = warm_up
        times = []
        cpu_start, wall_start = _cpu_s(), time.perf_counter()
        while len(times) < repeats:
            times.append(self.timed(final))
        wall = time.perf_counter() - wall_start
        median = statistics.median(times)
        result.update(status="ok" if final == self.batch else "subset", points_timed=final,
                      times=times, median_s=median, reps=len(times),
                      cpu_over_wall=(_cpu_s() - cpu_start) / wall if wall > 0.05 else None,
                      full_s=median * self.batch / final, extrapolated=final != self.batch)
        if final != self.batch:
            result["reason"] = (f"est. {estimate:.3g} s per run > limit {self.limit:.3g} s: timed on "
                                f"{final} of {self.batch} points, extrapolated")
        return result


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = dict(tool=spec["tool"], mode=spec.get("worker_mode", "time"))
    start = time.perf_counter()
    try:
        data = dict(np.load(spec["data"]))
        tool = spec["tool"]
        runner = {"feynmlp": _feynmlp_worker, "jax": _jax_worker, "jax-jet": _jax_worker,
                  "torch": _torch_worker}[tool]
        result.update(runner(spec, data))
    except Exception as exc:  # reported in the table; the run goes on
        import traceback
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:300],
                      traceback=traceback.format_exc()[-3000:])
    result["peak_rss_mb"] = _peak_rss_mb()
    result["worker_wall_s"] = time.perf_counter() - start
    result["blas"] = _blas_info()
    Path(spec["result"]).write_text(json.dumps(result, default=float))
    return 0


def _layers(data):
    count = sum(1 for key in data if key.startswith("W"))
    return [data[f"W{i}"] for i in range(count)], [data[f"b{i}"] for i in range(count)]


def _save_check(spec, values: np.ndarray) -> int:
    points = min(spec["check_points"], values.shape[0])
    np.save(spec["check"], np.ascontiguousarray(values[:points]))
    return points


def _source_digest(feynmlp) -> str:
    """SHA-256 (first 12 hex digits) of the feynmlp runtime and shipped kernels this process
    imported: the working tree may change between (or during) runs."""
    import hashlib
    import importlib

    digest = hashlib.sha256()
    folders = [Path(feynmlp.__file__).parent]
    try:
        folders.append(Path(importlib.import_module("feynmlp.generated").__file__).parent)
    except ImportError:
        pass
    for folder in folders:
        for path in sorted(folder.glob("*.py")) + sorted(folder.glob("*.json")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _feynmlp_worker(spec, data) -> dict:
    started = time.perf_counter()
    import feynmlp
    import_s = time.perf_counter() - started
    case, K = spec["case"], spec["case"]["order"]
    weights, biases = _layers(data)
    mlp = feynmlp.MLP(weights, biases, "tanh")
    X = data["X"]
    info = dict(import_s=import_s, feynmlp_file=feynmlp.__file__, source_digest=_source_digest(feynmlp))
    # Which scheme "auto" picks, if this version has a choice (internal API, hence guarded).
    choose = getattr(getattr(feynmlp, "schemes", None), "choose_scheme", None)
    if case["mode"] == "directional":
        info["scheme"] = "directional"
    elif choose is not None:
        try:
            info["scheme"] = choose(case["sizes"][-1], K, False, case["sizes"][0])
        except Exception as exc:  # a changed signature: report, do not fail the case
            info["scheme"] = None
            info["scheme_error"] = f"{type(exc).__name__}: {exc}"
    else:
        info["scheme"] = "forward"
    if case["mode"] == "directional":
        V = data["V"]

        def call(lo, hi):
            return feynmlp.directional(mlp, X[0], V[lo:hi], K)

        columns = K + 1
    else:
        def call(lo, hi, expansion=False):
            result = feynmlp.taylor(mlp, X[lo:hi], K)
            return result if expansion else result.coefficients

        columns = math.comb(case["sizes"][0] + K, K)
    n_out = case["sizes"][-1]

    # First call in this process (cold or warm kernel caches, decided by the caller), then the
    # same call again: the difference is loading or compiling the kernels (and building tables).
    started = time.perf_counter()
    first = call(0, 1) if case["mode"] == "directional" else call(0, 1, expansion=True)
    info["first_call_s"] = time.perf_counter() - started
    started = time.perf_counter()
    call(0, 1)
    info["steady_1pt_s"] = time.perf_counter() - started
    if spec.get("worker_mode") == "firstcall":
        info["status"] = "ok"
        return info

    # Map feynmlp's columns of order K onto the canonical tuple order, through the public
    # multi_indices (coefficient * alpha! = derivative).
    if case["mode"] == "multivariate":
        alphas = np.asarray(first.multi_indices)
        first = first.coefficients
        top = np.flatnonzero(alphas.sum(axis=1) == K)
        rows, variables = np.nonzero(alphas[top])
        tuples = np.repeat(variables, alphas[top][rows, variables]).reshape(top.size, K)
        order = np.lexsort(tuples.T[::-1])
        top_columns = top[order]
        factor = np.prod([[math.factorial(int(a)) for a in row] for row in alphas[top_columns]], axis=1)

    # Points per call: memory as the forward scheme estimates it (two layer-sized arrays and the output)
    # plus the unique output of the whole batch, kept under --max-memory-gb.
    widest = max(case["sizes"][1:])
    per_point = 3 * widest * columns * 8
    budget = spec["max_memory_gb"] * 2**30 - spec["batch"] * n_out * columns * 8
    chunk = 1
    while chunk * 2 <= spec["batch"] and per_point * chunk * 2 <= budget:
        chunk *= 2
    state = dict(chunk=chunk)

    def run(s):
        while True:
            try:
                if s <= state["chunk"]:
                    return call(0, s)
                out = np.empty((s, n_out, columns))
                for lo in range(0, s, state["chunk"]):
                    out[lo:lo + state["chunk"]] = call(lo, min(s, lo + state["chunk"]))
                return out
            except feynmlp.ResourceLimitError:
                if state["chunk"] == 1:
                    raise
                state["chunk"] //= 2

    measurement = Measurement(run, lambda s: 0.0, lambda out: None, spec["batch"], spec["limit"],
                              spec["repeats"], allow_subset=True)
    measurement.probes[1] = info["steady_1pt_s"]
    measurement.output, measurement.output_points = first, 1
    info["rss_before_mb"] = _rss_mb()
    info.update(measurement.time())
    info["chunk"] = state["chunk"]
    out = np.asarray(measurement.output)
    if case["mode"] == "multivariate":
        out = out[:spec["check_points"], :, top_columns] * factor
    info["check_points"] = _save_check(spec, out)
    return info


def _dense_plan(spec) -> tuple[int, str | None]:
    """(points per call, reason it cannot run at all or None) for a dense-tensor baseline."""
    case = spec["case"]
    output, working = dense_bytes_per_point(case)
    budget = spec["max_memory_gb"] * 2**30
    total = spec["batch"] * output
    if total + working > budget:
        n, K = case["sizes"][0], case["order"]
        return 1, (f"the dense output ({spec['batch']} x {case['sizes'][-1]} x {n}^{K} x 8 B = "
                   f"{total / 1e9:.3g} GB) does not fit the memory limit ({spec['max_memory_gb']:.3g} GiB)")
    chunk = spec["batch"]
    if case["order"] >= 4 or chunk * working > spec["chunk_memory_gb"] * 2**30:
        chunk = 1
        while chunk * 2 <= spec["batch"] and 2 * chunk * working <= spec["chunk_memory_gb"] * 2**30:
            chunk *= 2
    return chunk, None


def _baseline(spec, compute, to_numpy, block, prepare_for) -> dict:
    """The shared part of the JAX and torch workers: plan, check run, probes, timing.

    compute(size, lo, hi): the result on points lo..hi-1, in a call shaped for `size` points;
    prepare_for(size): compile for that shape, returning the seconds it took."""
    case = spec["case"]
    info = {}
    if case["mode"] == "directional":
        chunk, cannot = spec["batch"], None
    else:
        chunk, cannot = _dense_plan(spec)
        output, working = dense_bytes_per_point(case)
        if cannot and (not spec["check_when_cannot"] or output + working > spec["max_memory_gb"] * 2**30):
            why = "not even one point fits for a check" if spec["check_when_cannot"] else \
                "the reference baseline checks a point"
            return dict(status="cannot run", reason=f"{cannot}; {why}", points_timed=0)
    info["chunk"] = chunk

    def run(s):
        if s <= chunk:
            return [compute(s, 0, s)]
        return [compute(chunk, lo, min(s, lo + chunk)) for lo in range(0, s, chunk)]

    def prepare(s):
        return prepare_for(min(s, chunk))

    measurement = Measurement(run, prepare, lambda out: [block(o) for o in out], spec["batch"],
                              spec["limit"], spec["repeats"], allow_subset=False)
    info["rss_before_mb"] = _rss_mb()
    started = time.perf_counter()
    measurement.probe(1)
    info["first_call_s"] = time.perf_counter() - started  # compile (JAX) or set-up (torch) + one point
    if not cannot:
        measurement.probe(1)  # the probe proper, warm
    if cannot:
        info.update(status="cannot run", reason=f"{cannot}; checked on 1 point", points_timed=0,
                    probes={"1": measurement.probes[1]},
                    est_full_s=measurement.probes[1] * spec["batch"])
    else:
        info.update(measurement.time())
    info["compile_s"] = {str(k): v for k, v in measurement.compile_s.items()}
    pieces, held = [], 0  # only the checked points: a copy of the whole output would add to the peak
    for piece in measurement.output:
        if held >= min(spec["check_points"], measurement.output_points):
            break
        pieces.append(to_numpy(piece[:spec["check_points"] - held]))
        held += pieces[-1].shape[0]
    values = np.concatenate(pieces)[:measurement.output_points]
    if case["mode"] == "multivariate":
        values = dense_to_unique(values[:spec["check_points"]],
                                 canonical_tuples(case["sizes"][0], case["order"]))
    info["check_points"] = _save_check(spec, values)
    return info


def _jax_worker(spec, data) -> dict:
    started = time.perf_counter()
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import_s = time.perf_counter() - started
    case, K, tool = spec["case"], spec["case"]["order"], spec["tool"]
    weights, biases = _layers(data)
    W = [jnp.asarray(w) for w in weights]
    b = [jnp.asarray(v) for v in biases]

    def f(x):
        z = W[0] @ x + b[0]
        for w, c in zip(W[1:], b[1:]):
            z = w @ jnp.tanh(z) + c
        return z

    if case["mode"] == "directional":
        x0 = jnp.asarray(data["X"][0])
        points = data["V"]
        if tool == "jax-jet":
            from jax.experimental import jet

            def series(v):  # jet's terms are derivatives: x(t) = x0 + v t
                y0, ys = jet.jet(f, (x0,), ([v] + [jnp.zeros_like(v)] * (K - 1),))
                return jnp.stack([y0] + list(ys), axis=-1)
        else:
            def series(v):  # K nested jvps, each carrying the lower orders along as aux
                def h(x):
                    return f(x), ()
                for _ in range(K):
                    def h(x, inner=h):
                        primal, tangent, aux = jax.jvp(inner, (x,), (v,), has_aux=True)
                        return tangent, aux + (primal,)
                top, lower = h(x0)
                return jnp.stack(lower + (top,), axis=-1)
        factorials = np.array([math.factorial(k) for k in range(K + 1)], dtype=np.float64)
        batched = jax.jit(jax.vmap(series))

        def to_numpy(out):
            return np.asarray(out) / factorials
    else:
        if tool == "jax-jet":
            return dict(status="n/a", reason="jet is timed in the directional case only")
        points = data["X"]
        g = jax.jacrev(f)
        for _ in range(K - 1):
            g = jax.jacfwd(g)
        batched = jax.jit(jax.vmap(g))

        def to_numpy(out):
            return np.asarray(out)

    compiled = {}

    def prepare_for(size):
        if size in compiled:
            return 0.0
        started = time.perf_counter()
        compiled[size] = batched.lower(jnp.asarray(points[:size])).compile()
        return time.perf_counter() - started

    def compute(size, lo, hi):
        part = points[lo:hi]
        if part.shape[0] < size:  # the last chunk: pad to the compiled shape
            part = np.concatenate([part, np.repeat(part[-1:], size - part.shape[0], axis=0)])
        out = compiled[size](jnp.asarray(part))
        return out if hi - lo == size else out[:hi - lo]

    info = _baseline(spec, compute, to_numpy, lambda out: out.block_until_ready(), prepare_for)
    info["import_s"] = import_s
    info["jax_version"] = jax.__version__
    return info


def _torch_worker(spec, data) -> dict:
    started = time.perf_counter()
    import torch
    from torch.func import jacfwd, jacrev, jvp, vmap
    import_s = time.perf_counter() - started
    case, K = spec["case"], spec["case"]["order"]
    weights, biases = _layers(data)
    W = [torch.tensor(w, dtype=torch.float64) for w in weights]
    b = [torch.tensor(v, dtype=torch.float64) for v in biases]

    def f(x):
        z = W[0] @ x + b[0]
        for w, c in zip(W[1:], b[1:]):
            z = w @ torch.tanh(z) + c
        return z

    if case["mode"] == "directional":
        x0 = torch.tensor(data["X"][0], dtype=torch.float64)
        points = torch.tensor(data["V"], dtype=torch.float64)

        def series(v):
            def h(x):
                return f(x), ()
            for _ in range(K):
                def h(x, inner=h):
                    primal, tangent, aux = jvp(inner, (x,), (v,), has_aux=True)
                    return tangent, aux + (primal,)
            top, lower = h(x0)
            return torch.stack(lower + (top,), dim=-1)
        batched = vmap(series)
        factorials = np.array([math.factorial(k) for k in range(K + 1)], dtype=np.float64)

        def to_numpy(out):
            return out.numpy() / factorials
    else:
        points = torch.tensor(data["X"], dtype=torch.float64)
        g = jacrev(f)
        for _ in range(K - 1):
            g = jacfwd(g)
        batched = vmap(g)

        def to_numpy(out):
            return out.numpy()

    def compute(size, lo, hi):
        with torch.no_grad():
            return batched(points[lo:hi])

    info = _baseline(spec, compute, to_numpy, lambda out: None, lambda size: 0.0)
    info["import_s"] = import_s
    info["torch_threads"] = torch.get_num_threads()
    info["torch_version"] = torch.__version__
    return info


# ======================================================================== machine calibration

def worker_matmul(result_path: str, quick: bool) -> int:
    """float64 matrix-product rates: 4000 x 4000 x 4000, and (64 x 64) @ (64 x 262144), the
    shape of feynmlp's affine maps (weights times all coefficients of all points)."""
    rates = {}
    rng = np.random.default_rng(0)
    for name, (a_shape, b_shape), repeats in (("square4000", ((4000, 4000), (4000, 4000)), 2 if quick else 5),
                                               ("inner64", ((64, 64), (64, 262144)), 5 if quick else 9)):
        A, B = rng.normal(size=a_shape), rng.normal(size=b_shape)
        A @ B  # warm-up: threads started, pages touched
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            A @ B
            times.append(time.perf_counter() - start)
        flops = 2 * a_shape[0] * a_shape[1] * b_shape[1]
        rates[name] = dict(gflops=flops / statistics.median(times) / 1e9, times=times)
    result = dict(rates=rates, blas=_blas_info(), numpy=np.__version__,
                  env={k: os.environ.get(k) for k in OPENBLAS_VARIABLES})
    Path(result_path).write_text(json.dumps(result))
    return 0


# ======================================================================== orchestration

class LoadSampler(threading.Thread):
    """Samples /proc/loadavg every few seconds while the benchmark runs."""

    def __init__(self, every=3.0):
        super().__init__(daemon=True)
        self.every, self.samples, self._stop_event = every, [], threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            try:
                fields = Path("/proc/loadavg").read_text().split()
                self.samples.append((time.time(), float(fields[0]), fields[3]))
            except OSError:
                self.samples.append((time.time(), os.getloadavg()[0], "?"))
            self._stop_event.wait(self.every)

    def stop(self):
        self._stop_event.set()
        self.join(timeout=5)

    def summary(self) -> dict:
        loads = [s[1] for s in self.samples] or [float("nan")]
        return dict(samples=len(loads), load1_min=min(loads), load1_median=statistics.median(loads),
                    load1_max=max(loads), cpus=os.cpu_count())


def subprocess_env(cache: Path | None) -> dict:
    env = dict(os.environ)
    for name in OPENBLAS_VARIABLES:
        env.pop(name, None)
    env["JAX_ENABLE_X64"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONWARNINGS"] = "ignore"
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache / "numba")
        env["FEYNMLP_CACHE_DIR"] = str(cache / "feynmlp")
    return env


def run_subprocess(args, env, timeout: float, log: Path) -> tuple[int | None, str]:
    """Run `python this_script args` in its own process group; kill the group on timeout.

    Returns (exit code or None on timeout, the tail of its output)."""
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
    tail = log.read_bytes()[-2000:].decode(errors="replace")
    return code, tail


def run_worker(case, tool, args, work: Path, cache: Path | None, mode="time", check_when_cannot=True) -> dict:
    tag = f"{case['name']}-{tool}-{mode}"
    spec = dict(tool=tool, case=case, data=str(work / f"{case['name']}.npz"), worker_mode=mode,
                batch=case["points"], repeats=args.repeats, check_points=args.check_points,
                limit=args.feynmlp_limit if tool == "feynmlp" else args.baseline_timeout,
                max_memory_gb=args.max_memory_gb, chunk_memory_gb=args.chunk_memory_gb,
                check_when_cannot=check_when_cannot,
                result=str(work / f"{tag}.json"), check=str(work / f"{tag}.npy"))
    spec_path = work / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    timeout = (args.repeats + 4) * spec["limit"] + 300
    started = time.perf_counter()
    code, tail = run_subprocess(["--_worker", str(spec_path)], subprocess_env(cache), timeout,
                                work / f"{tag}.log")
    wall = time.perf_counter() - started
    if code is None:
        return dict(tool=tool, status="timed out", reason=f"killed after {timeout:.0f} s", wall_s=wall)
    result_path = Path(spec["result"])
    if code != 0 or not result_path.exists():
        last = [line for line in tail.strip().splitlines() if line.strip()][-1:] or ["no output"]
        return dict(tool=tool, status="failed", reason=f"exit code {code}: {last[0][:200]}", wall_s=wall)
    result = json.loads(result_path.read_text())
    result["wall_s"] = wall
    check = Path(spec["check"])
    result["check_file"] = str(check) if check.exists() else None
    return result


def max_relative_difference(a_path, b_path, per_order: bool) -> float | None:
    """max |a - b| / max |b| over the points both tools checked (order-K unique entries;
    per_order (directional): each order separately, the largest of those)."""
    if not a_path or not b_path:
        return None
    a, b = np.load(a_path), np.load(b_path)
    points = min(a.shape[0], b.shape[0])
    if points == 0 or a.shape[1:] != b.shape[1:]:
        return None
    a, b = a[:points], b[:points]
    if per_order:  # directional: (points, n_out, K + 1)
        return max(float(np.max(np.abs(a[..., k] - b[..., k])) / max(np.max(np.abs(b[..., k])), 1e-300))
                   for k in range(a.shape[-1]))
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def tools_for(case, selected) -> list[str]:
    tools = [t for t in selected if t != "jax-jet" or case["mode"] == "directional"]
    return tools


def git_state() -> dict:
    def git(*command):
        try:
            return subprocess.run(["git", "-C", str(REPO), *command], capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    return dict(head=git("rev-parse", "--short", "HEAD"), changed_files=len(changed))


def run_case(case, args, work: Path, tools) -> dict:
    write_case_data(case, work / f"{case['name']}.npz", args.seed)
    cache = work / f"cache-{case['name']}"
    results = {}
    record = dict(case=case, tools=results)
    if "feynmlp" in tools:
        if args.first_call:
            _progress(f"  {case['name']}: feynmlp first call, empty kernel caches")
            record["feynmlp_cold"] = run_worker(case, "feynmlp", args, work, cache, mode="firstcall")
        _progress(f"  {case['name']}: feynmlp")
        results["feynmlp"] = run_worker(case, "feynmlp", args, work, cache)
    # Where a dense baseline cannot run at all, only the reference (JAX, else torch) spends the
    # time of a one-point check; the other would only repeat it (torch: minutes at K = 5).
    reference = "jax" if "jax" in tools else "torch"
    for tool in tools:
        if tool != "feynmlp":
            _progress(f"  {case['name']}: {tool}")
            results[tool] = run_worker(case, tool, args, work, None, check_when_cannot=tool == reference)
    checks = {tool: r.get("check_file") for tool, r in results.items()}
    pairs = [("feynmlp", "jax"), ("feynmlp", "torch"), ("jax", "torch"), ("feynmlp", "jax-jet"),
             ("jax-jet", "jax")]
    per_order = case["mode"] == "directional"
    record["max_rel_diff"] = {f"{a}|{b}": max_relative_difference(checks.get(a), checks.get(b), per_order)
                              for a, b in pairs if a in results and b in results}
    return record


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ======================================================================== report

def _fmt_s(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _full_time(result) -> tuple[float | None, bool]:
    """(time for all points, is it an estimate)."""
    if result is None:
        return None, False
    if result.get("status") in ("ok", "subset"):
        return result["full_s"], bool(result.get("extrapolated"))
    if result.get("status") in ("skipped", "cannot run") and result.get("est_full_s"):
        return result["est_full_s"], True
    return None, False


def _time_cell(result) -> str:
    if result is None:
        return "-"
    status = result.get("status")
    value, estimated = _full_time(result)
    if status == "ok":
        return _fmt_s(value)
    if status == "subset":
        return f"~{_fmt_s(value)}"
    if status in ("skipped", "cannot run"):
        return f"{'skip' if status == 'skipped' else 'cannot run'} (~{_fmt_s(value)})" if value else status
    return status or "?"


def _ratio_cell(baseline, feynmlp) -> str:
    b, b_est = _full_time(baseline)
    f, f_est = _full_time(feynmlp)
    if baseline is not None and baseline.get("status") == "cannot run":
        return "-"  # its estimate is for a computation that does not fit in memory
    if b is None or f is None or f <= 0:
        return "-"
    ratio = b / f
    return f"{'~' if b_est or f_est else ''}{ratio:.3g}x"


def _diff_cell(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def evaluate_goals(record, rates) -> dict:
    """Each goal: (text, 'pass' | 'miss' | 'n/a')."""
    case, results = record["case"], record["tools"]
    feyn = results.get("feynmlp")
    goals = {}
    K = case["order"]
    if feyn is None or feyn.get("status") not in ("ok", "subset"):
        return {"feynmlp": (f"feynmlp {feyn.get('status') if feyn else 'not run'}", "n/a")}
    f_time, f_est = _full_time(feyn)
    mark = "~" if f_est else ""
    if case["mode"] == "multivariate" and K in SPEED_GOAL:
        jax_time, j_est = _full_time(results.get("jax"))
        if jax_time is None:
            goals["speed"] = (f"JAX/feynmlp >= {SPEED_GOAL[K]:g}x: JAX not timed", "n/a")
        else:
            ratio = jax_time / f_time
            est = "~" if f_est or j_est else ""
            goals["speed"] = (f"JAX/feynmlp {est}{ratio:.3g}x >= {SPEED_GOAL[K]:g}x",
                              "pass" if ratio >= SPEED_GOAL[K] else "miss")
    if case["name"] == "dense5":
        goals["K5"] = (f"{case['points']} points {mark}{_fmt_s(f_time)} s < {K5_GOAL_S:g} s",
                       "pass" if f_time < K5_GOAL_S else "miss")
    square = rates.get("square4000", {}).get("gflops")
    if square:
        rate = case_flops(case, case["points"], feyn.get("scheme")) / f_time / 1e9
        fraction = rate / square
        goals["flops"] = (f"{mark}{100 * fraction:.1f} % of {square:.0f} GFLOP/s >= {100 * FLOP_FRACTION_GOAL:.0f} %",
                          "pass" if fraction >= FLOP_FRACTION_GOAL else "miss")
    peak = feyn.get("peak_rss_mb")
    if peak:
        limit_mb = (MEMORY_GOAL[0] * unique_output_bytes(case, case["points"]) + MEMORY_GOAL[1] * 1e9) / 2**20
        if feyn["points_timed"] == case["points"]:
            goals["memory"] = (f"peak {peak:.0f} MB <= {limit_mb:.0f} MB", "pass" if peak <= limit_mb else "miss")
        else:  # run on a subset: only a subset peak above the full limit is conclusive
            goals["memory"] = (f"peak {peak:.0f} MB on {feyn['points_timed']} of {case['points']} points; "
                               f"limit {limit_mb:.0f} MB for all", "miss" if peak > limit_mb else "n/a")
    cold = record.get("feynmlp_cold", {}).get("first_call_s")
    warm = feyn.get("first_call_s")
    if K <= SHIPPED_MAX_ORDER:
        if cold is not None:
            goals["cold"] = (f"cold {cold:.2f} s < {COLD_GOAL_S:g} s", "pass" if cold < COLD_GOAL_S else "miss")
        if warm is not None and record.get("feynmlp_cold"):
            goals["warm"] = (f"warm {warm:.2f} s < {WARM_GOAL_S:g} s", "pass" if warm < WARM_GOAL_S else "miss")
    else:
        goals["first call"] = (f"order {K} is not shipped (cold {_fmt_s(cold)} s, warm {_fmt_s(warm)} s)", "n/a")
    return goals


def print_table(headers, rows) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def _kernels_blas() -> str:
    """The BLAS whose gemm feynmlp's kernels call in the benchmark's processes (they inherit
    FEYNMLP_BLAS)."""
    from feynmlp import blas

    return blas.library()


def report(summary) -> None:
    machine, rates = summary["machine"], summary["machine"]["rates"]
    print()
    print(f"feynmlp benchmark  ({summary['git']['head']}, {summary['git']['changed_files']} changed files "
          f"in the working tree; {machine['platform']}, {machine['cpus']} CPUs)")
    blas = [b for b in machine["blas"] if b.get("internal_api") == "openblas"] or machine["blas"]
    for b in blas:
        print(f"BLAS: {b.get('internal_api')} {b.get('version')}, kernel {b.get('architecture')}, "
              f"{b.get('num_threads')} threads ({b.get('prefix')})")
    if machine.get("kernels_blas"):
        print(f"feynmlp's compiled kernels call {machine['kernels_blas']}'s gemm "
              f"(FEYNMLP_BLAS={machine['feynmlp_blas_env'] or 'auto'}); the matmul rates are NumPy's")
    parent = ", ".join(f"{k}={v if v is not None else '(unset)'}" for k, v in machine["openblas_env"].items())
    print(f"environment of this process: {parent}; removed in every benchmark subprocess")
    digests = sorted({r.get("source_digest") for record in summary["cases"]
                      for r in [record["tools"].get("feynmlp", {}), record.get("feynmlp_cold", {})]
                      if r.get("source_digest")})
    if len(digests) > 1:
        print(f"WARNING: feynmlp's sources changed during the run ({len(digests)} versions: "
              f"{', '.join(digests)}; per case in the JSON): the cases did not all time the same code")
    elif digests:
        print(f"feynmlp sources (runtime + generated) digest {digests[0]}")
    print("matrix products (float64, numpy; the larger of the rates at start and end is used): "
          + ", ".join(f"{label} {rates[name]['gflops']:.1f} GFLOP/s (start {rates[name]['start']:.1f}, "
                      f"end {rates[name]['end']:.1f})"
                      for name, label in (("square4000", "4000^3"), ("inner64", "(64x64)@(64x262144)"))))
    load = summary["load"]
    print(f"load (1-min average, sampled every 3 s): min {load['load1_min']:.2f}, median "
          f"{load['load1_median']:.2f}, max {load['load1_max']:.2f} on {load['cpus']} CPUs; "
          f"repeats {summary['options']['repeats']}, wall {summary['wall_s']:.0f} s")
    print()
    print("Times: whole case (all points), median; ~ = extrapolated from fewer points or estimated; "
          "ratio = time_tool / time_feynmlp (> 1: feynmlp faster); rel diff = max|a-b|/max|b| on "
          "order-K unique entries")
    headers = ["case", "pts", "coef/out", "feynmlp s", "JAX s", "JAX/f", "torch s", "torch/f",
               "jet s", "jet/f", "diff f-JAX", "diff f-torch", "diff JAX-torch"]
    rows = []
    for record in summary["cases"]:
        case, results, diffs = record["case"], record["tools"], record["max_rel_diff"]
        n, K = case["sizes"][0], case["order"]
        columns = K + 1 if case["mode"] == "directional" else math.comb(n + K, K)
        f = results.get("feynmlp")
        rows.append([case["title"], case["points"], columns, _time_cell(f),
                     _time_cell(results.get("jax")), _ratio_cell(results.get("jax"), f),
                     _time_cell(results.get("torch")), _ratio_cell(results.get("torch"), f),
                     _time_cell(results.get("jax-jet")), _ratio_cell(results.get("jax-jet"), f),
                     _diff_cell(diffs.get("feynmlp|jax")), _diff_cell(diffs.get("feynmlp|torch")),
                     _diff_cell(diffs.get("jax|torch"))])
    print_table(headers, rows)

    print()
    print("feynmlp: FLOPs of the scheme 'auto' picks (each scheme's own count, Scheme.flops), rate reached, "
          "peak RSS of its process, first call (one point) in a fresh process")
    headers = ["case", "scheme", "GFLOP", "GFLOP/s", "% 4000^3", "% 64-inner", "peak MB", "unique MB", "pts timed",
               "cold 1st s", "warm 1st s", "1-pt s", "cpu/wall"]
    rows = []
    for record in summary["cases"]:
        case, f = record["case"], record["tools"].get("feynmlp")
        if not f:
            continue
        flops = case_flops(case, case["points"], f.get("scheme"))
        full, est = _full_time(f)
        rate = flops / full / 1e9 if full else None
        mark = "~" if est else ""
        cold = record.get("feynmlp_cold", {})
        rows.append([case["title"], f.get("scheme") or "?", f"{flops / 1e9:.3g}",
                     f"{mark}{rate:.3g}" if rate else "-",
                     f"{mark}{100 * rate / rates['square4000']['gflops']:.1f}" if rate else "-",
                     f"{mark}{100 * rate / rates['inner64']['gflops']:.1f}" if rate else "-",
                     f"{f['peak_rss_mb']:.0f}" if f.get("peak_rss_mb") else "-",
                     f"{unique_output_bytes(case, case['points']) / 2**20:.1f}",
                     f.get("points_timed", "-"),
                     _fmt_s(cold.get("first_call_s")) if cold.get("status") == "ok" else cold.get("status", "-"),
                     _fmt_s(f.get("first_call_s")), _fmt_s(f.get("steady_1pt_s")),
                     f"{f['cpu_over_wall']:.2f}" if f.get("cpu_over_wall") else "-"])
    print_table(headers, rows)

    print()
    print("Goals of the issue")
    headers = ["case", "goal", "measured", "result"]
    rows = []
    for record in summary["cases"]:
        for name, (text, verdict) in record["goals"].items():
            rows.append([record["case"]["title"], name, text, verdict])
    print_table(headers, rows)

    notes = []
    for record in summary["cases"]:
        items = list(record["tools"].items())
        if record.get("feynmlp_cold"):
            items.append(("feynmlp (cold first call)", record["feynmlp_cold"]))
        for tool, result in items:
            if result.get("reason"):
                notes.append(f"{record['case']['title']}, {tool}: {result['status']}: {result['reason']}")
            if result.get("status") in ("ok", "subset") and result.get("reps", 3) < summary["options"]["repeats"]:
                notes.append(f"{record['case']['title']}, {tool}: {result['reps']} timed run(s) "
                              f"({_fmt_s(result['median_s'])} s each on {result['points_timed']} points)")
            if result.get("warm_up") is False:
                notes.append(f"{record['case']['title']}, {tool}: no warm-up run at the final size "
                              "(the limit allows one run)")
            if tool in ("jax", "torch") and result.get("chunk") and result["chunk"] < record["case"]["points"] \
                    and result.get("status") == "ok":
                notes.append(f"{record['case']['title']}, {tool}: computed in chunks of {result['chunk']} points")
    if notes:
        print()
        print("Notes")
        for note in notes:
            print(f"- {note}")


# ======================================================================== main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", help="comma-separated case or group names (default: all; with --quick: "
                                        + ",".join(QUICK_CASES) + ")")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tool and case (median), after "
                                                               "one warm-up run; more for short cases (as many "
                                                               f"as fill {SHORT_CASE_S:g} s, at most {MAX_REPEATS}), "
                                                               "fewer where they would take over 1.5 x the limit")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 points, 1000 potentials, "
                                                             "orders <= 3, a few cases, about a minute")
    parser.add_argument("--json", metavar="FILE", help="write every result to this JSON file")
    parser.add_argument("--points", type=int, help="points of the dense and multi cases (default 256, quick 16)")
    parser.add_argument("--potentials", type=int, help="directions of the directional case (default 10000)")
    parser.add_argument("--baseline-timeout", type=float, default=120.0,
                        help="skip a baseline whose estimated time for one run exceeds this (s)")
    parser.add_argument("--feynmlp-limit", type=float, default=120.0,
                        help="time feynmlp on a subset of points (and extrapolate) when one run would "
                             "take longer than this (s)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="memory a tool may use (default: half of MemAvailable at start)")
    parser.add_argument("--chunk-memory-gb", type=float, default=2.0,
                        help="working set per chunk of points for the dense baselines")
    parser.add_argument("--check-points", type=int, default=8, help="points compared between tools")
    parser.add_argument("--no-first-call", dest="first_call", action="store_false",
                        help="skip the cold first-call process (then feynmlp's own first call is cold)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="keep the worker files (logs, check arrays) in DIR")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_matmul", help=argparse.SUPPRESS)
    return parser


def calibrate(work: Path, when: str, quick: bool) -> dict:
    _progress(f"matrix-product rates ({when})")
    path = work / f"matmul-{when}.json"
    code, tail = run_subprocess(["--_matmul", str(path)] + ["--quick"] * quick, subprocess_env(None), 600,
                                work / f"matmul-{when}.log")
    if code != 0 or not path.exists():
        raise SystemExit(f"the matrix-product calibration failed (exit code {code}): {tail}")
    return json.loads(path.read_text())


def _available_memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args._worker:
        return worker_main(args._worker)
    if args._matmul:
        return worker_matmul(args._matmul, args.quick)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tool(s) {unknown}; choose from {', '.join(TOOLS)}")
    if args.max_memory_gb is None:
        args.max_memory_gb = round(0.5 * _available_memory_gb(), 1)
    cases = select_cases(args.cases, all_cases(args.quick, args.points, args.potentials), args.quick)

    started = time.perf_counter()
    sampler = LoadSampler()
    sampler.start()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="feynmlp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        _progress(f"benchmark files in {work}; memory limit {args.max_memory_gb} GiB per tool")
        calibration = calibrate(work, "start", args.quick)
        records = []
        for case in cases:
            _progress(f"{case['title']} ({case['points']} points), load {os.getloadavg()[0]:.2f}")
            records.append(run_case(case, args, work, tools_for(case, tools)))
        # Measured again at the end: on a shared machine one moment's rate may be a loaded one.
        # The larger of the two stands for what the machine can do.
        final = calibrate(work, "end", args.quick)
        rates = {name: dict(gflops=max(calibration["rates"][name]["gflops"], final["rates"][name]["gflops"]),
                            start=calibration["rates"][name]["gflops"], end=final["rates"][name]["gflops"])
                 for name in calibration["rates"]}
        for record in records:
            record["goals"] = evaluate_goals(record, rates)
        sampler.stop()
        summary = dict(
            options={k: v for k, v in vars(args).items() if not k.startswith("_")},
            git=git_state(),
            machine=dict(platform=platform.platform(), python=platform.python_version(), cpus=os.cpu_count(),
                         rates=rates, blas=calibration["blas"], kernels_blas=_kernels_blas(),
                         feynmlp_blas_env=os.environ.get("FEYNMLP_BLAS"),
                         openblas_env={k: os.environ.get(k) for k in OPENBLAS_VARIABLES},
                         subprocess_openblas_env=calibration["env"]),
            load=sampler.summary(), load_samples=sampler.samples,
            wall_s=time.perf_counter() - started, cases=records)
        for record in records:  # what --json gets: the check files are temporary
            for result in list(record["tools"].values()) + [record.get("feynmlp_cold", {})]:
                result.pop("check_file", None)
            record["goals"] = {k: dict(text=t, result=v) for k, (t, v) in record["goals"].items()}
        report_summary = json.loads(json.dumps(summary, default=float))
        for record in report_summary["cases"]:
            record["goals"] = {k: (v["text"], v["result"]) for k, v in record["goals"].items()}
        report(report_summary)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1, default=float))
            print(f"\nresults written to {args.json}")
    finally:
        sampler.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
