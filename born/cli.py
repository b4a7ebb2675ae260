"""`feynmlp born ...`: the command line of the Born-series toolkit.

In: the `born` subparser from feynmlp.cli (add_arguments) and the parsed arguments (run).
Out: subcommands that write files, and an exit status (0 success; a FeynmlpError becomes one
line on stderr and status 2 in feynmlp.cli). Imports here stay light (argparse only) so that
`feynmlp --help` is fast; NumPy and the numerics are imported inside the runners.

To add a subcommand, write `_add_<name>_arguments(parser)` and `_run_<name>(args) -> int` and
add one row to `_SUBCOMMANDS`.
"""
from __future__ import annotations

import argparse
import sys
import time

CLI_DESCRIPTION = """\
S-wave scattering lengths and Born series of step potentials.

Conventions (as on the documentation page docs/born.md):
  units      hbar = 2 mu = 1: the potential enters as U(r) = 2 mu V(r) / hbar^2, an inverse
             length squared (U = V in these units). In MeV and fm, U [fm^-2] = 2 mu V / (hbar c)^2
             with hbar c = 197.3269804 MeV fm and mu the reduced mass in MeV
             (feynmlp.born.units.potential_to_U); R and a are then in fm.
  potentials step functions on a uniform grid: U_n on [(n-1) R/N, n R/N), n = 1..N, zero for
             r >= R. U < 0 is attractive.
  a          the zero-energy solution of u'' = U u, u(0) = 0, is proportional to (r - a) for
             r >= R. A weak attraction gives a < 0, a hard sphere of radius R gives a = R; a
             constant well U = -V0 gives a = R - tan(sqrt(V0) R)/sqrt(V0) and binds its first
             state at V0 = pi^2 / (4 R^2), where a jumps from -inf to +inf.
  Born terms a = a_1 + a_2 + ..., the Taylor series of a around U = 0; a_k has degree k in
             U (constant well: a_1 = -V0 R^3/3, a_2 = -2 V0^2 R^5/15, a_3 = -17 V0^3 R^7/315).
  shallow    no bound state; the data sets keep only shallow potentials by default.
  a(k)       at energy k^2, u ~ sin(kr + delta) beyond R and a(k) = -tan(delta)/k, which tends
             to a as k -> 0; a(k) = a + rho k^2 + ..., rho = a^2 r_e / 2 (docs/energy.md).

Python API: feynmlp.born (scattering_length, phase_shift, effective_range, born_terms,
born_kernels, sample_potentials, make_dataset, load_dataset, ...). Run
`feynmlp born SUBCOMMAND --help` for each subcommand.
"""

_DATASET_DESCRIPTION = """\
Draw random shallow step potentials and label each with its exact scattering length a and
its Born terms a_1 .. a_K (exact, closed form), then write one .npz file:
  U (size, N) step values;  a (size,);  born (size, K), born[:, k-1] = a_k;
  family (size,) the family of each row;  metadata_json (uint8 bytes of a JSON object:
  grid, R, seed, distribution, feynmlp version, ...).
With --energies K1,K2,... (wave numbers k >= 0 in the inverse length unit of --range; the
energy is k^2 in units hbar = 2 mu = 1) it also stores, for E wave numbers:
  k (E,);  a_k (size, E), a(k) = -tan(delta(k))/k (a where k = 0);
  born_k (size, E, K), born_k[:, e, j-1] = a_j(k_e), the Born terms of a(k).
With --energies uniform:LO:HI each potential gets one wave number of its own, uniform in
[LO, HI] (same unit, 0 <= LO < HI, drawn from --seed), stored per row instead:
  k (size,);  a_k (size,), a(k) of the row at its k;  born_k (size, K), born_k[:, j-1] = a_j(k).
Load it with feynmlp.born.load_dataset(path), or with np.load(path, allow_pickle=False).

Conventions: hbar = 2 mu = 1, so U = 2 mu V / hbar^2 (1/length^2); R and a share one length
unit (fm with U in fm^-2 = 2 mu V / (hbar c)^2). U[:, n] is the value on [n R/N, (n+1) R/N),
zero beyond R; U < 0 attracts, and a weak attraction gives a < 0. See `feynmlp born --help`.

Distribution: U = -depth * shape with the shape normalised to max |shape| = 1, so the depth is
max_n |U_n|; depth is log-uniform in [--depth-min, --depth-max] / R^2 (potentials near U = 0
and strong ones are equally represented). Draws with a bound state (unless --allow-bound) or
with |a| > --a-max * R (near a zero-energy threshold) are rejected and redrawn. Families
(x = r / R at the step midpoints):
  fourier      exp(g(x)), g a random Fourier series of 8 modes (smooth random profile)
  square       constant well on the first k steps, k uniform in 1..N
  exponential  exp(-x/b);  gaussian  exp(-x^2/(2 b^2));  yukawa  (b/x) exp(1 - x/b)
               (yukawa's depth is |U| at r = b), with b log-uniform in (0.05, 1)
  steps        independent uniform step values: spans all N directions of U, which a
               network's Taylor coefficients at U = 0 need to be identified in every direction
With --repulsive, square/exponential/gaussian/yukawa get a random overall sign (barriers) and
fourier/steps profiles change sign inside the range. The same arguments and --seed always give
the same file. The file is written atomically: on any error nothing is left behind.

Large sets: --out DIR.zarr writes a Zarr group instead (arrays U, a, born, family, a done
flag per chunk; the metadata as attributes, the attribute complete = true last), chunk by chunk
through Dask: --chunk-size rows per task, --workers N for a local cluster of N processes,
--scheduler ADDRESS for a running one. Chunk i is drawn with its own seed derived from --seed
and i (chunk 0 with --seed itself), so the rows depend on --seed and --chunk-size only. Run the
same command again on an interrupted store to finish it; a store holding another data set is
refused and left as it is. Read it with feynmlp.born.load_zarr_dataset(path) or zarr.

Example: feynmlp born dataset --size 100000 --grid 64 --seed 0 --out data.npz
         feynmlp born dataset --size 10000000 --workers 2 --out data.zarr
"""


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, required=True, metavar="N_POT",
                        help="number of potentials (rows) to draw")
    parser.add_argument("--out", required=True, metavar="FILE.npz|DIR.zarr",
                        help="output: an .npz file (its folder must exist), or a Zarr store ending in "
                             ".zarr, written chunk by chunk through Dask (for large sets)")
    parser.add_argument("--grid", type=int, default=64, metavar="N",
                        help="number of steps of each potential (default 64)")
    parser.add_argument("--range", dest="R", type=float, default=1.0, metavar="R",
                        help="range R of the potentials, in the length unit of your problem "
                             "(default 1; a and the Born terms come out in this unit)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, integer >= 0 (default 0)")
    parser.add_argument("--families", default=None, metavar="LIST",
                        help="comma-separated families to draw in equal shares (default all: "
                             "fourier,square,exponential,gaussian,yukawa,steps; repeat a name to "
                             "double its share)")
    parser.add_argument("--depth-min", type=float, default=1e-3, metavar="D",
                        help="smallest depth max|U| in units of 1/R^2 (default 1e-3)")
    parser.add_argument("--depth-max", type=float, default=1e2, metavar="D",
                        help="largest depth max|U| in units of 1/R^2 (default 100; a constant "
                             "well binds at pi^2/4 = 2.47)")
    parser.add_argument("--repulsive", action="store_true",
                        help="also draw repulsive parts (barriers, sign-changing profiles)")
    parser.add_argument("--allow-bound", action="store_true",
                        help="keep potentials with bound states (default: shallow ones only)")
    parser.add_argument("--a-max", type=float, default=10.0, metavar="A",
                        help="reject |a| > A * R, i.e. potentials near a zero-energy threshold "
                             "(default 10; 0 or a negative value disables the cut)")
    parser.add_argument("--order", type=int, default=3, metavar="K",
                        help="highest Born term a_K to store (default 3)")
    parser.add_argument("--energies", default=None, metavar="K1,K2,...|uniform:LO:HI",
                        help="comma-separated wave numbers k >= 0 (1/length, energy k^2) at which "
                             "to add a(k) = -tan(delta)/k and its Born terms (arrays k, a_k, born_k); "
                             "or uniform:LO:HI, one k per potential drawn uniformly in [LO, HI] "
                             "(seeded by --seed), with a(k) and the Born terms at that k, per row")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is shown on stderr only when that is a terminal)")
    zarr = parser.add_argument_group("Zarr output (--out DIR.zarr; needs pip install 'feynmlp[distributed]')")
    zarr.add_argument("--chunk-size", type=int, default=None, metavar="ROWS",
                      help="rows per chunk and per Dask task (default 100000); the rows depend on the seed "
                           "and the chunk size only, never on where they are computed")
    zarr.add_argument("--workers", type=int, default=None, metavar="N",
                      help="start a local Dask cluster of N worker processes (default: Dask's threads in "
                           "this process)")
    zarr.add_argument("--scheduler", default=None, metavar="ADDRESS",
                      help="use the running Dask scheduler at ADDRESS (tcp://host:8786); the .zarr folder "
                           "must be on a file system every worker sees")


def _parse_energies(text):
    """--energies K1,K2,... as a list of floats (checked further by the data set), or a
    distribution "uniform:LO:HI", checked here and passed on as text."""
    from feynmlp.errors import FeynmlpError

    if text is None:
        return None
    if ":" in text:
        from .dataset import parse_energy_distribution
        parse_energy_distribution(text)
        return text.strip()
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            values.append(float(item))
        except ValueError:
            raise FeynmlpError(
                f"--energies must be comma-separated numbers k >= 0 or uniform:LO:HI, got "
                f"{item!r} in {text!r}; e.g. --energies 0.5,1,2 or --energies uniform:0:3") from None
    return values


def _run_dataset(args: argparse.Namespace) -> int:
    from feynmlp.errors import FeynmlpError

    from .dataset import write_dataset

    families = args.families
    if families is not None:
        families = [f.strip() for f in families.split(",") if f.strip()]
    a_max = args.a_max if args.a_max > 0 else None
    energies = _parse_energies(args.energies)
    start = time.perf_counter()
    if args.out.rstrip("/").endswith(".zarr"):
        if energies is not None:
            raise FeynmlpError("--energies is written to .npz data sets only; give --out ending in .npz, or drop "
                               "--energies for the Zarr store")
        from .zarr_dataset import DEFAULT_CHUNK_SIZE, write_zarr_dataset

        result = write_zarr_dataset(
            args.out, args.size, grid=args.grid, R=args.R, seed=args.seed, families=families,
            depth_range=(args.depth_min, args.depth_max), repulsive=args.repulsive,
            shallow=not args.allow_bound, a_max=a_max, order=args.order,
            chunk_size=DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size,
            workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress)
        if result["written"] == 0:
            print(f"{result['path']} already holds this data set, complete; nothing written")
        else:
            resumed = result["written"] < result["chunks"]
            print(f"wrote {result['path']}: {args.size} potentials x {args.grid} steps, exact a and Born terms "
                  f"a_1..a_{args.order}, {result['written']} of {result['chunks']} chunks"
                  f"{' (resumed)' if resumed else ''} ({time.perf_counter() - start:.1f} s)")
        return 0
    given = [flag for flag, value in (("--chunk-size", args.chunk_size), ("--workers", args.workers),
                                      ("--scheduler", args.scheduler)) if value is not None]
    if given:
        raise FeynmlpError(f"{', '.join(given)}: only for Zarr output; give --out ending in .zarr, or drop "
                           f"{'it' if len(given) == 1 else 'them'} for an .npz file")
    path = write_dataset(
        args.out, args.size, grid=args.grid, R=args.R, seed=args.seed, families=families,
        depth_range=(args.depth_min, args.depth_max), repulsive=args.repulsive,
        shallow=not args.allow_bound, a_max=a_max, order=args.order,
        progress=not args.no_progress, energies=energies)
    if energies is None:
        at_k = ""
    elif isinstance(energies, str):
        at_k = f", and a(k) with its Born terms at one k per potential ({energies})"
    else:
        at_k = f", and a(k) with its Born terms at {len(energies)} k"
    print(f"wrote {path}: {args.size} potentials x {args.grid} steps, exact a and Born terms "
          f"a_1..a_{args.order}{at_k} ({time.perf_counter() - start:.1f} s)")
    return 0


_REPRODUCE_DESCRIPTION = """\
Run the iterative neural-network perturbation theory of the Born series end to end (needs
PyTorch: pip install feynmlp[train]) and write into --out:
  report.md      the figures of merit, each goal of the full preset met or missed (by how much)
  metrics.json   grid, R, preset, e1, e2_f1, e2_f2, born_median_rel_err {"1","2","3"},
                 ml2_vs_born12_median_rel, ml2_vs_exact_median_rel, born1_vs_exact_median_rel,
                 born12_vs_exact_median_rel, wall_seconds, and per-iteration details
  *.png          first-order coefficients against c; Hessians of f1, f2 against -2K;
                 histograms (log axes) of the relative errors of the learned Born terms
                 a_1, a_2, a_3; a_ML2 against a_1 + a_2 and a
  models/iteration-K/member-M.safetensors   the trained networks (feynmlp.load), scalings
                 folded in, so their Taylor coefficients at U = 0 are in physical units

Iteration 1 trains f1 on (U, a); iteration k > 1 on a minus the Taylor polynomials of the
earlier networks (f1's linear one, f2's quadratic one, ...); a_ML2(U) = d f1(0) . U +
(1/2) U . d^2 f2(0) . U. Presets: tiny (seconds; plumbing only), quick (N = 64, 2-member
ensembles of 2 x 64; 3 minutes on one core), full (N = 64, 8/6/4-member ensembles of 2 x 64,
40k potentials per iteration; 29 minutes on one core). Iterations 2 and 3 train on the
independent-steps family only (see README.md).

With --observable energy the networks take (U_1 .. U_N, k^2) (k^2 last, in the toolkit's
units) and learn a(k) = -tan(delta(k))/k, with k R uniform in [0, 3.6] in the training
data (tiny, quick, full; the reported k R go up to 3);
the perturbation theory in U runs at fixed k (Taylor coefficients in the U inputs at
(0, k^2)), and the mixed coefficient d^2 f1 / d(k^2) dU at (0, 0) gives rho_1 of
a(k) = a + rho k^2 + ...; metrics.json then holds grid, R, k_values,
born_median_rel_err_k {k: {"1", "2"}}, e1_k, e2_f2_k, rho1_median_rel_err, wall_seconds
(docs/energy.md). Presets: tiny (seconds), quick (N = 64, 2 iterations, 3 members each,
30k rows per iteration), full (N = 64, 4 / 6 members, 80k rows per iteration).
"""


def _add_reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="quick", choices=("tiny", "quick", "full"),
                        help="experiment size (default quick)")
    parser.add_argument("--out", default="born-reproduce", metavar="DIR",
                        help="output folder, created if missing (default ./born-reproduce)")
    parser.add_argument("--seed", type=int, default=None,
                        help="override the preset's seed (integer >= 0)")
    parser.add_argument("--observable", choices=("scattering-length", "energy"),
                        default="scattering-length",
                        help="what the networks learn: the scattering length a(U) (default) or "
                             "a(k) on inputs (U, k^2)")
    parser.add_argument("--subtract", choices=("network", "exact"), default=None,
                        help="what iteration k > 1 subtracts: the earlier networks' Taylor "
                             "polynomials (default) or the exact Born terms")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they are shown on stderr only on a terminal)")


def _run_reproduce(args: argparse.Namespace) -> int:
    from feynmlp.errors import FeynmlpError
    from feynmlp.files import check_output_folder

    # Before anything slow (importing torch, training): a bad --out fails at once.
    check_output_folder(args.out, advice="choose another --out")

    from .perturbation import get_preset
    from .report import reproduce
    from .training import require_torch

    require_torch()
    if args.observable == "energy":
        return _run_energy_reproduce(args)
    preset = get_preset(args.preset)
    if args.seed is not None:
        if args.seed < 0:
            raise FeynmlpError(f"--seed must be >= 0, got {args.seed}")
        preset = preset.replace(seed=args.seed)
    if args.subtract is not None:
        preset = preset.replace(subtract=args.subtract)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    metrics = reproduce(preset, args.out, progress=not args.no_progress, log=log)
    born = metrics["born_median_rel_err"]
    print(f"wrote {args.out}/report.md, metrics.json, figures and models "
          f"({metrics['wall_seconds']:.0f} s): e1 = {metrics['e1']:.3g}, "
          f"e2(f1) = {metrics['e2_f1']:.3g}, e2(f2) = {metrics.get('e2_f2', float('nan')):.3g}, "
          "learned Born terms median rel. err " +
          ", ".join(f"a_{k}: {v:.3g}" for k, v in born.items()))
    return 0


def _run_energy_reproduce(args: argparse.Namespace) -> int:
    from feynmlp.errors import FeynmlpError

    from .energy_reproduce import get_energy_preset, reproduce_energy

    if args.subtract is not None:
        raise FeynmlpError("--subtract applies to --observable scattering-length only; the "
                           "energy experiment subtracts the networks' own Taylor polynomials")
    preset = get_energy_preset(args.preset)
    if args.seed is not None:
        if args.seed < 0:
            raise FeynmlpError(f"--seed must be >= 0, got {args.seed}")
        preset = preset.replace(seed=args.seed)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    metrics = reproduce_energy(preset, args.out, progress=not args.no_progress, log=log)
    parts = []
    for key, row in metrics["born_median_rel_err_k"].items():
        parts.append(f"k = {key}: " + ", ".join(f"a_{j} {v:.3g}" for j, v in row.items()))
    print(f"wrote {args.out}/report.md, metrics.json, figures and models "
          f"({metrics['wall_seconds']:.0f} s): learned Born terms median rel. err "
          + "; ".join(parts) + f"; rho_1 {metrics['rho1_median_rel_err']:.3g}")
    return 0


# (name, one-line summary, long description, add_arguments, run)
_SUBCOMMANDS = (
    ("dataset", "write a labelled data set (potentials, exact a, Born terms) to an .npz file",
     _DATASET_DESCRIPTION, _add_dataset_arguments, _run_dataset),
    ("reproduce", "train the iterative perturbation-theory networks and write report.md, "
     "metrics.json, figures", _REPRODUCE_DESCRIPTION, _add_reproduce_arguments, _run_reproduce),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `born` subcommands to `parser` (the `feynmlp born` subparser)."""
    sub = parser.add_subparsers(dest="born_command", metavar="SUBCOMMAND")
    for name, summary, description, add, runner in _SUBCOMMANDS:
        cmd = sub.add_parser(name, help=summary, description=description,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        add(cmd)
        cmd.set_defaults(_born_run=runner)
    parser.set_defaults(_born_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Run the chosen `born` subcommand; without one, print the help and return 2."""
    runner = getattr(args, "_born_run", None)
    if runner is None:
        args._born_parser.print_help(sys.stderr)
        return 2
    return int(runner(args) or 0)
