"""The `feynmlp` command line: one parser, one subcommand per job.

In: argv. Out: an exit status (0 success, 1 `--check` found stale files, 2 bad input, with one
line on stderr naming the bad value). Each subcommand lives beside the code it drives and
exposes `add_arguments(parser)` and `run(args) -> int`; this module only wires them up, and
imports them lazily so that `feynmlp --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import FeynmlpError

# (subcommand, module that implements it, one-line summary shown by `feynmlp --help`)
_COMMANDS = (
    ("demo", "feynmlp.demo",
     "expand a built-in example network and show its coefficients, checks and diagrams"),
    ("generate-kernels", "feynmlp.codegen.command",
     "derive the diagram rules for one order and activation with SymPy and write the Numba kernel module"),
    ("rules", "feynmlp.codegen.rules",
     "print or write the Feynman-like rules (propagators, vertices, every diagram) of one order"),
    ("born", "feynmlp.born.cli",
     "S-wave scattering lengths and Born series of step potentials (data sets, experiments)"),
    ("convert", "feynmlp.convert",
     "read an ONNX or Keras model file and write it as a feynmlp .safetensors file, printing its layers"),
)

_DESCRIPTION = """\
feynmlp: Taylor coefficients of multilayer perceptrons to any order.

A trained MLP f(x) is expanded around a point x0 as f(x0 + h) = sum_alpha c_alpha h^alpha.
feynmlp derives the coefficients from Feynman-like rules (propagators = products of weights
and first activation derivatives, vertices = higher activation derivatives), generates
specialised Numba kernels for each order and activation, and evaluates them on real networks.
Python users import `feynmlp` (see `feynmlp.taylor`); this command line generates kernels,
shows the rules, runs the Born-series experiments, and converts model files of other programs. Run `feynmlp COMMAND --help` for each.
"""


def build_parser(prog: str = "feynmlp") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, summary in _COMMANDS:
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=summary, description=getattr(module, "CLI_DESCRIPTION", summary),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def _dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except FeynmlpError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `feynmlp` console script."""
    return _dispatch(build_parser(), argv)


def generate_kernels_main(argv: list[str] | None = None) -> int:
    """Entry point of the `generate-kernels` console script (same as `feynmlp generate-kernels`)."""
    module = importlib.import_module("feynmlp.codegen.command")
    parser = argparse.ArgumentParser(prog="generate-kernels", description=module.CLI_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return _dispatch(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
