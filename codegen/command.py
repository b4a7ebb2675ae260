"""The `feynmlp generate-kernels` / `generate-kernels` command: argv -> kernels on disk.

In: parsed arguments (--order/--activation, or --all; --out, --check, --quiet). Out: an exit
status (0 written or current, 1 `--check` found stale files) and a summary line; bad input
raises FeynmlpError for the command line to print. The work itself is feynmlp.codegen.generate;
this module only chooses the requests and the folder, so that its texts (help, messages) lie
outside the generator signature (feynmlp.kernel_signature) and editing them leaves the shipped
kernels valid.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..activation_names import BUILTIN_ACTIVATIONS, RELU_LIKE
from ..errors import FeynmlpError, UnsupportedActivationError
from ..kernels import MAX_ORDER, validate_order
from .operator_generate import check_operators, write_operators
from .generate import check_kernels, default_output_folder, refresh_command, shipped_requests, write_kernels

CLI_DESCRIPTION = """\
Generate the Numba kernel module for one expansion order and activation.

feynmlp expands a network f(x0 + h) = sum_alpha c_alpha h^alpha layer by layer. At each hidden
neuron the incoming Taylor series p(h) passes a vertex: the activation s is composed with it,
[s(z0 + p)]_k = sum over partitions of k of s^(m)(z0)/m! * (weight) * (product of p's), which
is Faa di Bruno's formula; a vertex of valence m is the m-th derivative s^(m). This command
derives those sums and the closed-form derivatives s^(m) with SymPy for the chosen order K,
and writes `<activation>_order<K>.py` (plus manifest.json) into the output folder.

Kernels for orders 1-4 and every built-in activation ship with feynmlp in generated/; other
orders and custom activations are generated on demand into the user cache. Use this command
to refresh generated/ after changing the generator, or `--check` to verify it is current.

examples:
  feynmlp generate-kernels --order 3 --activation tanh
  feynmlp generate-kernels --all              # refresh every shipped kernel
  feynmlp generate-kernels --all --check      # exit 1 with a diff if generated/ is stale
"""


def add_arguments(parser) -> None:
    parser.add_argument("--order", "-k", type=int, metavar="K",
                        help="expansion order: kernels give all Taylor coefficients up to |alpha| = K "
                             f"(1..{MAX_ORDER})")
    parser.add_argument("--activation", "-a", metavar="NAME",
                        help=f"activation of the hidden layers: {', '.join(BUILTIN_ACTIVATIONS)} "
                             f"({', '.join(RELU_LIKE)} for order 1)")
    parser.add_argument("--all", action="store_true",
                        help="every shipped kernel: orders 1-4 for every built-in activation, and the "
                             "collapsed rules of the Laplacian and the biharmonic")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="output folder (default: feynmlp's own generated/ folder)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a unified diff if the files on disk differ from "
                             "what the generator produces now")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")


def run(args) -> int:
    if args.all:
        if args.order is not None or args.activation is not None:
            raise FeynmlpError("--all regenerates every shipped kernel; drop --order/--activation, or drop --all")
        requests = shipped_requests()
        refresh = "feynmlp generate-kernels --all"
    else:
        if args.order is None or args.activation is None:
            raise FeynmlpError("give --order K and --activation NAME (or --all for every shipped kernel)")
        validate_order(args.order)
        from .activations import get_activation

        spec = get_activation(_activation_argument(args.activation))
        requests = [(spec, args.order)]
        refresh = refresh_command(spec.name, args.order)
    folder = args.out if args.out is not None else default_output_folder()
    if args.out is not None:
        refresh += f" --out {args.out}"
    started = time.perf_counter()
    if args.check:
        diffs = check_kernels(requests, folder, progress=not args.quiet)
        if args.all:
            diffs += check_operators(folder)
        if diffs:
            print("".join(diffs))
            print(f"generate-kernels: {len(diffs)} file(s) in {folder} are stale; refresh them with: {refresh}")
            return 1
        if not args.quiet:
            print(f"generate-kernels: {len(requests)} kernel(s) in {folder} are up to date")
        return 0
    changed = write_kernels(requests, folder, progress=not args.quiet)
    if args.all:  # the collapsed operator rules ship beside the Taylor kernels
        changed += write_operators(folder)
    if not args.quiet:
        print(f"generate-kernels: {len(requests)} kernel(s) derived in {time.perf_counter() - started:.1f} s; "
              f"{len(changed)} file(s) written to {folder}" + (f": {', '.join(changed)}" if changed else " (all current)"))
    return 0


def _activation_argument(text: str):
    """A built-in name, or a custom activation written as a formula in one variable."""
    from ..activation_names import canonical_name

    try:
        return canonical_name(text)
    except UnsupportedActivationError as unknown:
        if not any(ch in text for ch in "()*+-/"):
            raise unknown
    from .safe_expression import parse_activation

    expression, _ = parse_activation(text)
    return expression
