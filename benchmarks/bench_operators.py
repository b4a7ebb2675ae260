"""Benchmark: differential operators of MLPs, feynmlp against folx, JAX and torch.func, same run.

In: --cases (default all), --repeats, --quick, --json FILE. Out: on stdout, per case the median
time of every tool over its timed runs, the ratio time_tool / time_feynmlp, the largest relative
difference from feynmlp's values, feynmlp's FLOP count, its FLOP rate as a fraction of the
matrix-product rate measured in this run (a 1 MiB block of rows times a square matrix of the
case's width, on one BLAS thread, times feynmlp's worker threads), peak memory
of every tool's process, and the issue's goals as pass/miss. Run:
    python benchmarks/bench_operators.py --quick

Cases (tanh networks, float64, weights N(0, 1/fan_in), biases N(0, 0.1^2), points N(0, 1)):
    laplacian   32 -> 64 -> 64 -> 64 -> 1, 256 points, sum_i d2f/dx_i^2
    biharmonic  the same network, 64 points, sum_ij d4f/dx_i^2 dx_j^2
    pde         3 -> 128 -> 128 -> 128 -> 1, inputs (t, x, y), 10,000 points, u_t + u_xx + u_yy
Tools:
    feynmlp          feynmlp.laplacian / feynmlp.biharmonic / feynmlp.operator
    feynmlp-taylor   feynmlp.taylor of the operator's order, then the operator's sum of coefficients
    folx             folx.forward_laplacian, jit(vmap(...)), x64 (Laplacian only)
    jax              jit(vmap(...)): trace of jax.hessian; trace of the Hessian of that trace;
                     grad and hessian for the PDE
    torch            torch.func: vmap of hessian/jacrev (Laplacian and PDE; the biharmonic's
                     nested Hessian is left to JAX, the issue's baseline)

How: every tool runs in its own fresh subprocess per case (peak memory ru_maxrss is its own);
one call first (JIT compilation, kernel loading), then --repeats timed calls (a short case:
as many as fill 1 s, at most 100); the median is reported. OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are removed from the subprocesses' environment, as in bench_taylor.py. FLOPs
are counted analytically for feynmlp's algorithm (see `feynmlp_flops`), not measured.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SHORT_CASE_S, MAX_REPEATS = 1.0, 100
PDE_TERMS = {(1, 0, 0): 1.0, (0, 2, 0): 1.0, (0, 0, 2): 1.0}

CASES = {
    "laplacian": dict(sizes=(32, 64, 64, 64, 1), points=256, order=2,
                      tools=("feynmlp", "feynmlp-taylor", "folx", "jax", "torch")),
    "biharmonic": dict(sizes=(32, 64, 64, 64, 1), points=64, order=4,
                       tools=("feynmlp", "feynmlp-taylor", "jax")),
    "pde": dict(sizes=(3, 128, 128, 128, 1), points=10_000, order=2,
                tools=("feynmlp", "feynmlp-taylor", "jax", "torch")),
}
# The issue's goals: (baseline tools whose best time is compared, required ratio).
GOALS = {
    "laplacian": [(("folx",), 2.0), (("feynmlp-taylor",), 1.0)],
    "biharmonic": [(("jax",), 20.0), (("feynmlp-taylor",), 10.0)],
    "pde": [(("jax", "torch"), 3.0)],
}
MEMORY_GOAL = (2.0, 0.5)  # peak <= 2 x output + 0.5 GB


def write_data(name: str, case: dict, path: Path, seed: int, points: int) -> None:
    rng = np.random.default_rng([seed, *case["sizes"]])
    arrays = {}
    sizes = case["sizes"]
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        arrays[f"W{layer}"] = rng.normal(size=(n_out, n_in)) / math.sqrt(n_in)
        arrays[f"b{layer}"] = 0.1 * rng.normal(size=n_out)
    arrays["X"] = rng.normal(size=(points, sizes[0]))
    np.savez(path, **arrays)


# ======================================================================== analytic FLOPs

def feynmlp_flops(name: str, sizes, batch: int) -> int:
    """FLOPs of feynmlp's algorithm for the case: the collapsed rules, d directions, R carried
    rows per neuron (d + 2; the biharmonic 2 + 2d + d(d+1)/2):

        2 n_1 n_0 B                                 first affine map (values)
      + sum over hidden layers of n_l B (10 K + A)  activation derivatives and rule kernel
      + sum over later affine maps of 2 n_l n_(l-1) B R'

    with R' = R, except for the output map, R' = 2 (only the value and the operator's row are
    mapped); the rule kernel's A = 3d + 4 (Laplacian) or
    9 T + 15 d + 30, T = d(d+1)/2 (biharmonic). The pde case is a second-order operator:
    feynmlp.operator carries it as a weighted Laplacian along d = 2 directions (x and y), the
    first-order part u_t starting in the operator's row.
    """
    n0, hidden = sizes[0], sizes[1:-1]
    if name == "biharmonic":
        d, order = n0, 4
        triangle = d * (d + 1) // 2
        rows, work, last = 2 + 2 * d + triangle, 9 * triangle + 15 * d + 30, 2
    else:
        d, order = (n0, 2) if name == "laplacian" else (2, 2)
        rows, work, last = d + 2, 3 * d + 4, 2
    flops = 2 * sizes[1] * n0 * batch
    flops += sum(width * batch * (10 * order + work) for width in hidden)
    maps = list(zip(sizes[1:-1], sizes[2:]))
    for index, (n_in, n_next) in enumerate(maps):
        flops += 2 * n_next * n_in * batch * (last if index == len(maps) - 1 else rows)
    return flops


# ======================================================================== worker side

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _layers(data):
    count = sum(1 for key in data if key.startswith("W"))
    return [data[f"W{i}"] for i in range(count)], [data[f"b{i}"] for i in range(count)]


def _biharmonic_from_taylor(expansion) -> np.ndarray:
    """sum_ij d4f/dx_i^2 dx_j^2 = 24 sum_i c_(4 e_i) + 8 sum_(i<j) c_(2 e_i + 2 e_j)."""
    alphas = np.asarray(expansion.multi_indices)
    four = (alphas.sum(axis=1) == 4) & (alphas.max(axis=1) == 4)
    pairs = (alphas.sum(axis=1) == 4) & ((alphas == 2).sum(axis=1) == 2)
    c = expansion.coefficients
    return 24 * c[..., four].sum(axis=-1) + 8 * c[..., pairs].sum(axis=-1)


def _operator_from_taylor(expansion, terms) -> np.ndarray:
    total = 0.0
    for alpha, coefficient in terms.items():
        total = total + coefficient * math.prod(math.factorial(a) for a in alpha) * expansion.coefficient(list(alpha))
    return total


def _feynmlp_call(name, tool, data):
    import feynmlp

    weights, biases = _layers(data)
    mlp = feynmlp.MLP(weights, biases, "tanh")
    X = data["X"]
    if tool == "feynmlp":
        if name == "laplacian":
            return lambda: feynmlp.laplacian(mlp, X)
        if name == "biharmonic":
            return lambda: feynmlp.biharmonic(mlp, X)
        return lambda: feynmlp.operator(mlp, X, PDE_TERMS)
    if name == "laplacian":
        return lambda: np.einsum("boii->bo", feynmlp.taylor(mlp, X, 2).hessian)
    if name == "biharmonic":
        return lambda: _biharmonic_from_taylor(feynmlp.taylor(mlp, X, 4))
    return lambda: _operator_from_taylor(feynmlp.taylor(mlp, X, 2), PDE_TERMS)


def _jax_call(name, tool, data):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    weights, biases = _layers(data)
    W = [jnp.asarray(w) for w in weights]
    b = [jnp.asarray(v) for v in biases]

    def f(x):  # scalar output
        z = W[0] @ x + b[0]
        for w, c in zip(W[1:], b[1:]):
            z = w @ jnp.tanh(z) + c
        return z[0]

    if tool == "folx":
        from folx import forward_laplacian

        one = lambda x: forward_laplacian(f)(x).laplacian  # noqa: E731
    elif name == "laplacian":
        one = lambda x: jnp.trace(jax.hessian(f)(x))  # noqa: E731
    elif name == "biharmonic":
        lap = lambda x: jnp.trace(jax.hessian(f)(x))  # noqa: E731
        one = lambda x: jnp.trace(jax.hessian(lap)(x))  # noqa: E731
    else:
        def one(x):
            hessian = jax.hessian(f)(x)
            return jax.grad(f)(x)[0] + hessian[1, 1] + hessian[2, 2]
    batched = jax.jit(jax.vmap(one))
    X = jnp.asarray(data["X"])
    return lambda: np.asarray(batched(X).block_until_ready())[:, None]


def _torch_call(name, tool, data):
    import torch
    from torch.func import grad, hessian, vmap

    weights, biases = _layers(data)
    W = [torch.tensor(w, dtype=torch.float64) for w in weights]
    b = [torch.tensor(v, dtype=torch.float64) for v in biases]

    def f(x):
        z = W[0] @ x + b[0]
        for w, c in zip(W[1:], b[1:]):
            z = w @ torch.tanh(z) + c
        return z[0]

    X = torch.tensor(data["X"], dtype=torch.float64)
    if name == "laplacian":
        batched = vmap(lambda x: torch.trace(hessian(f)(x)))
    else:
        def one(x):
            second = hessian(f)(x)
            return grad(f)(x)[0] + second[1, 1] + second[2, 2]

        batched = vmap(one)

    def call():
        with torch.no_grad():
            return batched(X).numpy()[:, None]

    return call


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = dict(tool=spec["tool"])
    try:
        data = dict(np.load(spec["data"]))
        name, tool = spec["name"], spec["tool"]
        maker = {"feynmlp": _feynmlp_call, "feynmlp-taylor": _feynmlp_call, "folx": _jax_call, "jax": _jax_call,
                 "torch": _torch_call}[tool]
        started = time.perf_counter()
        call = maker(name, tool, data)
        out = call()  # compilation, kernel loading
        result["first_call_s"] = time.perf_counter() - started
        times = []
        budget = max(spec["repeats"], 1)
        while len(times) < budget:
            start = time.perf_counter()
            out = call()
            times.append(time.perf_counter() - start)
            if len(times) == spec["repeats"]:
                budget = max(spec["repeats"], min(MAX_REPEATS, int(SHORT_CASE_S // max(statistics.median(times), 1e-9))))
        result.update(status="ok", times=times, median_s=statistics.median(times), reps=len(times))
        np.save(spec["check"], np.asarray(out, dtype=np.float64).reshape(-1))
    except Exception as exc:  # reported in the table; the run goes on
        import traceback

        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:300],
                      traceback=traceback.format_exc()[-3000:])
    result["peak_rss_mb"] = _peak_rss_mb()
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


def matmul_worker(result_path: str, width: int, rows: int) -> int:
    """float64 (rows x width) @ (width x width), about the size of the blocks of carried rows
    feynmlp multiplies (1 MiB at width 128 is 1024 rows): the rate its affine maps could reach."""
    from threadpoolctl import threadpool_limits

    from feynmlp import threads

    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(rows, width)), rng.normal(size=(width, width))
    out = np.empty((rows, width))
    times = []
    # One BLAS thread, as inside feynmlp's worker threads; the rate of all of them together is
    # that times feynmlp's thread count.
    with threadpool_limits(1):
        np.matmul(A, B, out=out)
        for _ in range(50):
            start = time.perf_counter()
            for _ in range(10):
                np.matmul(A, B, out=out)
            times.append((time.perf_counter() - start) / 10)
    per_thread = 2 * width * width * rows / statistics.median(times) / 1e9
    Path(result_path).write_text(json.dumps(dict(gflops=per_thread * threads.count(), per_thread=per_thread,
                                                 threads=threads.count())))
    return 0


# ======================================================================== orchestration

def subprocess_env() -> dict:
    env = dict(os.environ)
    for name in OPENBLAS_VARIABLES:
        env.pop(name, None)
    env.update(JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    return env


def run_worker(args_list, timeout: float) -> tuple[int | None, str]:
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args_list], env=subprocess_env(),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    return done.returncode, (done.stdout + done.stderr)[-1500:]


def run_case(name: str, case: dict, args, work: Path) -> dict:
    points = case["points"] if not args.quick else max(8, case["points"] // 8)
    data = work / f"{name}.npz"
    write_data(name, case, data, args.seed, points)
    results = {}
    for tool in case["tools"]:
        if args.tools and tool not in args.tools:
            continue
        print(f"  {name}: {tool}", file=sys.stderr, flush=True)
        spec = dict(name=name, tool=tool, data=str(data), repeats=args.repeats,
                    result=str(work / f"{name}-{tool}.json"), check=str(work / f"{name}-{tool}.npy"))
        spec_path = work / f"{name}-{tool}.spec.json"
        spec_path.write_text(json.dumps(spec))
        code, tail = run_worker(["--_worker", str(spec_path)], args.timeout)
        if code != 0 or not Path(spec["result"]).exists():
            results[tool] = dict(status="failed", reason=f"exit {code}: {tail.strip().splitlines()[-1:]}")
            continue
        results[tool] = json.loads(Path(spec["result"]).read_text())
        results[tool]["check_file"] = spec["check"] if Path(spec["check"]).exists() else None
    reference = results.get("feynmlp", {}).get("check_file")
    for tool, result in results.items():
        if reference and result.get("check_file"):
            a, b = np.load(result["check_file"]), np.load(reference)
            result["max_rel_diff"] = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)) \
                if a.shape == b.shape else None
    width = max(case["sizes"][1:])
    matmul_path = work / f"{name}-matmul.json"
    run_worker(["--_matmul", str(matmul_path), str(width), str(2**20 // (8 * width))], args.timeout)
    rate = json.loads(matmul_path.read_text())["gflops"] if matmul_path.exists() else None
    flops = feynmlp_flops(name, case["sizes"], points)
    return dict(name=name, points=points, sizes=case["sizes"], tools=results, feynmlp_flops=flops,
                matmul_gflops=rate)


def report(records, args) -> None:
    from feynmlp import blas

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}; repeats {args.repeats}{' (quick)' if args.quick else ''}; "
          f"feynmlp's kernels call {blas.library()}'s gemm (FEYNMLP_BLAS={os.environ.get('FEYNMLP_BLAS', 'auto')}; "
          "the matmul rate is NumPy's)")
    for record in records:
        name, tools = record["name"], record["tools"]
        mine = tools.get("feynmlp", {}).get("median_s")
        print(f"\n{name}: {' -> '.join(map(str, record['sizes']))}, {record['points']} points")
        print(f"  {'tool':<16}{'median s':>12}{'runs':>6}{'tool/feynmlp':>14}{'max rel diff':>14}{'peak MB':>10}")
        for tool, result in tools.items():
            if result.get("status") != "ok":
                print(f"  {tool:<16}{result.get('status')}: {result.get('reason', '')[:90]}")
                continue
            ratio = result["median_s"] / mine if mine else float("nan")
            diff = result.get("max_rel_diff")
            print(f"  {tool:<16}{result['median_s']:>12.4g}{result['reps']:>6}{ratio:>14.2f}"
                  f"{(f'{diff:.1e}' if diff is not None else '-'):>14}{result['peak_rss_mb']:>10.0f}")
        if mine:
            rate = record["feynmlp_flops"] / mine / 1e9
            share = f", {100 * rate / record['matmul_gflops']:.0f} % of the matmul rate " \
                    f"({record['matmul_gflops']:.1f} GFLOP/s)" if record["matmul_gflops"] else ""
            print(f"  feynmlp: {record['feynmlp_flops'] / 1e6:.1f} MFLOP, {rate:.1f} GFLOP/s{share}")
            output_gb = record["points"] * record["sizes"][-1] * 8 / 2**30
            peak_gb = tools["feynmlp"]["peak_rss_mb"] / 1024
            limit = MEMORY_GOAL[0] * output_gb + MEMORY_GOAL[1]
            print(f"  goal peak memory <= {limit:.2f} GB: {peak_gb:.2f} GB "
                  f"({'pass' if peak_gb <= limit else 'miss'}; the whole process, Python and libraries included)")
            for baselines, wanted in GOALS[name]:
                times = [tools[t]["median_s"] for t in baselines if tools.get(t, {}).get("status") == "ok"]
                if not times:
                    print(f"  goal {'/'.join(baselines)} >= {wanted:g}x: not measured")
                    continue
                ratio = min(times) / mine
                print(f"  goal best of {'/'.join(baselines)} / feynmlp >= {wanted:g}: {ratio:.2f} "
                      f"({'pass' if ratio >= wanted else 'miss'})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="all", help="comma separated: " + ", ".join(CASES) + " (default all)")
    parser.add_argument("--tools", default=None, help="comma separated subset of the tools (default: every one)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per tool (at least; short cases more)")
    parser.add_argument("--quick", action="store_true", help="an eighth of the points, for a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per tool and case")
    parser.add_argument("--json", metavar="FILE", default=None, help="write every number to FILE")
    args = parser.parse_args(argv)
    names = list(CASES) if args.cases == "all" else [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    args.tools = None if args.tools is None else [t.strip() for t in args.tools.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-operators-") as folder:
        records = [run_case(name, CASES[name], args, Path(folder)) for name in names]
    report(records, args)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(records=records), indent=1, default=float))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--_worker":
        sys.exit(worker_main(sys.argv[2]))
    if len(sys.argv) >= 5 and sys.argv[1] == "--_matmul":  # width, rows
        sys.exit(matmul_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    sys.exit(main())
