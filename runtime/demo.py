"""`feynmlp demo`: the whole tool on a built-in example network, in a few seconds.

In: an order, a seed and an optional output folder. Out: a printed tour: the example network,
its Taylor coefficients at a point from the generated kernels (with a finite-difference check
of the gradient and Hessian and the Taylor polynomial against the network), the first-call
(compile) time, and the diagrams that make up one mixed coefficient, each with its value; with
--out, the rules of that order as a PNG and the network as a safetensors file.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

CLI_DESCRIPTION = """\
Run feynmlp on a built-in example: a 4 -> 16 -> 16 -> 1 tanh network with weights drawn from a
fixed seed (no training needed). The demo expands it to order K around a point, checks the
gradient and Hessian against central finite differences and the Taylor polynomial against the
network itself, and lists the diagrams (trees of propagators and vertices, placed on layers)
that make up one mixed coefficient together with their values.

example:
  feynmlp demo --order 3 --out demo-output/
"""


def add_arguments(parser) -> None:
    parser.add_argument("--order", "-k", type=int, default=3, metavar="K", help="expansion order (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the example weights (default 0)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="also write the rules of order K as a PNG and the network as safetensors here")


def example_network(seed: int = 0):
    """The demo's network: 4 -> 16 -> 16 -> 1, tanh, weights ~ N(0, 1/fan_in)."""
    from .mlp import MLP

    rng = np.random.default_rng(seed)
    sizes = (4, 16, 16, 1)
    weights = [rng.normal(size=(sizes[i + 1], sizes[i])) / np.sqrt(sizes[i]) for i in range(3)]
    biases = [rng.normal(size=sizes[i + 1]) * 0.2 for i in range(3)]
    return MLP(weights, biases, activation="tanh")


def run(args) -> int:
    from .errors import FeynmlpError
    from .files import check_output_folder

    if args.order < 2 or args.order > 6:
        raise FeynmlpError(f"the demo runs orders 2..6, got --order {args.order}")
    if args.out is not None:
        # Before any computation: a bad --out fails at once, not after the whole tour.
        check_output_folder(args.out, advice="choose another --out")

    from .taylor import diagram_contributions, taylor

    mlp = example_network(args.seed)
    x0 = np.array([0.3, -0.2, 0.5, 0.1])
    print(f"network: {mlp!r}")
    print(f"expansion point x0 = {x0.tolist()}, order K = {args.order}\n")

    started = time.perf_counter()
    expansion = taylor(mlp, x0, args.order)
    first = time.perf_counter() - started
    started = time.perf_counter()
    expansion = taylor(mlp, x0, args.order)
    again = time.perf_counter() - started
    print(f"{expansion.coefficients.shape[-1]} coefficients per output; first call {first:.2f} s "
          f"(kernel compile or Numba cache load), second call {again * 1e3:.1f} ms\n")

    print("largest coefficients d^alpha f / alpha!:")
    coefficients = expansion.coefficients[0]
    for column in np.argsort(-np.abs(coefficients))[:8]:
        print(f"  alpha = {expansion.multi_indices[column].tolist()}   {coefficients[column]: .6e}")

    step = 1e-4
    grad_fd = np.array([(mlp(x0 + step * e) - mlp(x0 - step * e))[0] / (2 * step) for e in np.eye(4)])
    hess_fd = np.array([[(mlp(x0 + step * (ei + ej)) - mlp(x0 + step * (ei - ej)) - mlp(x0 - step * (ei - ej))
                          + mlp(x0 - step * (ei + ej)))[0] / (4 * step**2) for ej in np.eye(4)] for ei in np.eye(4)])
    print("\nchecks against independent references:")
    print(f"  gradient vs central differences: max |diff| = {np.max(np.abs(expansion.gradient[0] - grad_fd)):.1e}")
    print(f"  Hessian  vs central differences: max |diff| = {np.max(np.abs(expansion.hessian[0] - hess_fd)):.1e}")
    h = np.array([0.02, -0.01, 0.015, 0.01])
    for scale in (1.0, 0.5, 0.25):
        error = abs(expansion(scale * h)[0] - mlp(x0 + scale * h)[0])
        print(f"  |Taylor polynomial - network| at x0 + {scale:.2f} h: {error:.2e}  (shrinks like scale^{args.order + 1})")

    alpha = [1, 1] + [0] * 2
    alpha[2] = args.order - 2 if args.order > 2 else 0
    contributions = diagram_contributions(mlp, x0, alpha)
    total = sum(c.value[0] for c in contributions)
    print(f"\ndiagrams of the coefficient alpha = {alpha} ({len(contributions)} (tree, layer placement) terms):")
    for c in sorted(contributions, key=lambda c: -abs(c.value[0]))[:10]:
        print(f"  {str(c.diagram):28s} vertex valences {c.vertex_valences}  value {c.value[0]: .6e}")
    print(f"  sum of all diagrams {total: .10e}   kernel coefficient {expansion.coefficient(alpha)[0]: .10e}")

    if args.out is not None:
        import argparse

        from .codegen import rules

        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # the folder changed since it was checked
            raise FeynmlpError(f"cannot create the output folder {str(args.out)!r}: "
                               f"{exc.strerror or exc}; choose another --out") from None
        rules_order = min(args.order, 4)
        # The rules command's own parser: its defaults, whatever options it grows.
        rules_parser = argparse.ArgumentParser()
        rules.add_arguments(rules_parser)
        rules.run(rules_parser.parse_args(["--order", str(rules_order), "--format", "png", "--depth", "2",
                                           "--out", str(args.out / f"rules-order{rules_order}.png")]))
        mlp.save(args.out / "example-network.safetensors", record={"source": "feynmlp demo", "seed": args.seed})
        print(f"wrote {args.out / 'example-network.safetensors'}")
    return 0
