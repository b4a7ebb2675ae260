"""The `feynmlp rules` subcommand: show the Feynman-like rules and every diagram of one order.

In: command-line arguments (--order, --format, --out, --depth, --by-shape/--all-trees,
--expand-layers). Out: the rules as plain text or a standalone LaTeX document (stdout, or a
file), or a PNG grid of the drawn diagrams (a file, or stdout with --out -). Files are written
with feynmlp.files.atomic_writer: a temporary file in the target's folder, then os.replace, so
a failure leaves nothing half-written; a symbolic link is written through to its target, a FIFO
or a character device in place.

Module-level imports stay light (the CLI imports every subcommand to build its parser);
SymPy, Jinja2 and matplotlib are imported inside `run`.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import FeynmlpError
from ..files import STDOUT, atomic_writer, check_output_file

# The command stops at order 7: 39208 labelled trees in 90 shapes. Beyond that (order 8:
# 660032 trees, 260 shapes; order 9: 12.8 million) a printed listing is no longer something
# a person reads, and the numbers are better obtained from `feynmlp.diagrams` in Python.
MAX_ORDER = 7
DEFAULT_DEPTH = 2
DEFAULT_PNG_NAME = "feynmlp-rules-order{order}.png"

CLI_DESCRIPTION = f"""\
Print or write the Feynman-like rules of one order: the propagators, the vertices, and every
diagram of d^k f / dx_i1 ... dx_ik for an MLP f(x) with H hidden layers.

What the pieces are (all evaluated at the expansion point x):
  propagator  P(l',l)[b,a] = dz(l')_b / da(l)_a, the linear response of neuron b in layer l'
              to neuron a in a lower layer l: a product of weight matrices W and first
              activation derivatives s'. Input propagators start at an input x_i (l = 0),
              output propagators end at an output f_o (l' = L = H + 1); the full propagator
              P(L,0) is the Jacobian.
  vertex      G(l)[a,m] = s_l^(m)(z(l)_a), the m-th derivative (m >= 2) of the activation at
              neuron a of hidden layer l: the point where m lines from lower layers merge.
  diagram     a rooted tree: leaves are the derivative indices i1..ik, internal nodes are
              vertices (>= 2 children), the root connects to the output. Its value is the
              product of its propagators and vertices, summed over the hidden layers of its
              vertices (increasing towards the root) and over neuron indices. The derivative
              is the sum of all diagrams; there are no symmetry factors.

Formats:
  text   the rules and each diagram's formula as plain text (default; to stdout)
  latex  a standalone LaTeX document with the definitions and each diagram drawn with
         TikZ-Feynman beside its formula; compiles with pdflatex (needs tikz-feynman)
  png    a grid of the drawn diagrams with their tree labels, for a quick look
         (needs --out, or writes {DEFAULT_PNG_NAME.format(order='K')} in the current folder)

Up to order 4 every labelled tree is listed (1, 1, 4, 26 of them for k = 1..4). From order 5
on (236, 2752, 39208 trees) the listing shows one representative per unlabelled shape (12, 33,
90 shapes) with its number of labellings; --all-trees lists every tree anyway (text and latex
up to order 6), --by-shape groups at lower orders too. Orders above {MAX_ORDER} are refused.

With --operator laplacian|biharmonic (instead of --order): the rules each neuron follows to
carry its gradient and the operator (and for the biharmonic its Hessian and L3) through the
network, and the operator's diagrams grouped by the paired indices.

Examples:
  feynmlp rules --order 3
  feynmlp rules --operator biharmonic --format latex --out biharmonic.tex
  feynmlp rules --order 3 --depth 3 --expand-layers
  feynmlp rules --order 4 --format latex --out rules4.tex && pdflatex rules4.tex
  feynmlp rules --order 5 --format png --out order5.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `rules` options to `parser`."""
    parser.add_argument("--order", "-k", type=int, default=None, metavar="K",
                        help=f"derivative order k, 1..{MAX_ORDER} (k = 1: the Jacobian)")
    parser.add_argument("--operator", choices=("laplacian", "biharmonic"), default=None,
                        help="instead of one order: the collapsed per-neuron rules of an operator and its "
                             "diagrams grouped by the paired indices")
    parser.add_argument("--format", "-f", choices=("text", "latex", "png"), default="text",
                        help="output format (default: text)")
    parser.add_argument("--out", "-o", metavar="FILE", default=None,
                        help="output file, or - for stdout (default: stdout for text and latex; "
                             f"for png {DEFAULT_PNG_NAME.format(order='K')} in the current folder)")
    parser.add_argument("--depth", "-H", type=int, default=DEFAULT_DEPTH, metavar="H",
                        help="number of hidden layers H: the layer sums run over 1..H and the "
                             f"output layer is L = H + 1 (default: {DEFAULT_DEPTH})")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--by-shape", dest="by_shape", action="store_const", const=True,
                       default=None, help="list one representative per unlabelled tree shape")
    group.add_argument("--all-trees", dest="by_shape", action="store_const", const=False,
                       help="list every labelled tree, also from order 5 on (text and latex "
                            "up to order 6)")
    parser.add_argument("--expand-layers", action="store_true",
                        help="also write every layer placement as its own term with numbered "
                             "layers (text and latex; refused beyond 400 terms)")


def _validate(args: argparse.Namespace) -> None:
    if args.operator is not None:
        if args.order is not None:
            raise FeynmlpError(f"--operator {args.operator} fixes the order; drop --order")
        return
    if args.order is None:
        raise FeynmlpError("give --order K (the rules of one order) or --operator laplacian|biharmonic")
    order, depth = args.order, args.depth
    if order < 1:
        raise FeynmlpError(f"--order must be at least 1 (the first derivative), got {order}")
    if order > MAX_ORDER:
        raise FeynmlpError(
            f"--order {order} is above the maximum {MAX_ORDER}: order {order} has "
            f"{_count(order)} labelled trees, too many for a listing a person can read; use "
            f"--order {MAX_ORDER} or lower (in Python, feynmlp.codegen.diagrams.count_trees and "
            "tree_shapes count and list the shapes of any order)")
    if depth < 1:
        raise FeynmlpError(f"--depth must be at least 1 hidden layer, got {depth}")
    if depth > 50:
        raise FeynmlpError(f"--depth {depth} is more than 50 hidden layers; use a smaller --depth")
    if args.by_shape is False and order > 6 and args.format != "png":
        raise FeynmlpError(f"--all-trees at --order {order} would list {_count(order)} trees; "
                           "use it up to order 6, or leave it out to list by shape")


def _count(order: int) -> int:
    from .diagrams import count_trees
    return count_trees(order)


def _target(path: str) -> tuple[str, bool]:
    """(the absolute output path, whether it is a regular file), after checking that it can be
    written: a file's folder must exist and accept a new file; a symbolic link is checked at
    its target; a FIFO, a character device or '-' (stdout) is written in place."""
    if path == STDOUT:
        return path, False
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(target):
        raise FeynmlpError(f"--out {path!r} is a folder; give a file name inside it")
    kind = check_output_file(target, advice="choose another --out").kind
    return target, kind == "file"


def _write_atomically(target: str, write) -> None:
    """Call write(file object) through feynmlp.files.atomic_writer: a temporary file beside
    `target` moved into place, or the stream itself for a FIFO, a device or stdout."""
    try:
        with atomic_writer(target) as handle:
            write(handle)
    except OSError as exc:
        raise FeynmlpError(f"cannot write {target!r} ({exc.strerror or exc}); choose another --out") from None


def run(args: argparse.Namespace) -> int:
    """Produce the requested listing; returns 0 (errors raise FeynmlpError)."""
    _validate(args)
    if args.operator is not None:
        return _run_operator(args)
    order, depth, fmt = args.order, args.depth, args.format
    out = args.out
    if fmt == "png" and out is None:
        out = DEFAULT_PNG_NAME.format(order=order)
    target, regular = _target(out) if out is not None else (None, False)

    if fmt == "png":
        from .diagram_drawing import write_png_grid
        from .diagrams import tree_shapes, trees

        grouped = order >= 5 if args.by_shape is None else args.by_shape
        if grouped:
            entries = [(t, f"{t}  x{n}" if n > 1 else str(t)) for t, n in tree_shapes(order)]
            title = (f"order {order}: {len(entries)} tree shapes "
                     f"({_count(order)} labelled trees; xN = number of labellings)")
        else:
            if order > 6:
                raise FeynmlpError(f"--all-trees --format png at --order {order} would draw "
                                   f"{_count(order)} panels; use order 6 or lower")
            entries = [(t, str(t)) for t in trees(order)]
            title = f"order {order}: {len(entries)} labelled tree{'s' if len(entries) != 1 else ''}"
        _write_atomically(target, lambda fh: write_png_grid(entries, fh, title=title))
        _report(target, regular)
        return 0

    from .latex_rules import rules_latex, rules_text

    make = rules_latex if fmt == "latex" else rules_text
    text = make(order, depth, by_shape=args.by_shape, expand_layers=args.expand_layers)
    return _emit_text(text, target, regular)


def _run_operator(args: argparse.Namespace) -> int:
    """The collapsed rules of --operator, as text, LaTeX or a PNG of its diagram classes."""
    from . import operator_listing

    operator, fmt, out = args.operator, args.format, args.out
    if fmt == "png" and out is None:
        out = f"feynmlp-rules-{operator}.png"
    target, regular = _target(out) if out is not None else (None, False)
    if fmt == "png":
        from .diagram_drawing import write_png_grid

        entries, title = operator_listing.png_entries(operator)
        _write_atomically(target, lambda fh: write_png_grid(entries, fh, title=title))
        _report(target, regular)
        return 0
    text = (operator_listing.rules_latex if fmt == "latex" else operator_listing.rules_text)(operator)
    return _emit_text(text, target, regular)


def _emit_text(text: str, target, regular: bool) -> int:
    """Write text to standard output (no target, or -) or atomically to the target file."""
    if target is None or target == STDOUT:
        sys.stdout.write(text)
        return 0
    _write_atomically(target, lambda fh: fh.write(text.encode("utf-8")))
    _report(target, regular)
    return 0


def _report(target: str, regular: bool) -> None:
    # Only for files: a stream (a FIFO, /dev/stdout, a terminal) may be where stdout goes
    # too, and the line would end up inside the document.
    if regular:
        print(f"wrote {target}")
