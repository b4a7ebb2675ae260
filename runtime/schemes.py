"""The ways of computing multivariate coefficients, and which one a request gets.

In: the network's shape (outputs, output activation), the order and the number of variables.
Out: the scheme's name: "forward" (every coefficient through every layer, feynmlp.forward) or
"top-vertex" (orders below K forward, the top orders from the topmost vertex and the output
propagators: feynmlp.hessian at K = 2, feynmlp.top_vertex at K >= 3).
"""
from __future__ import annotations

SCHEMES = ("auto", "forward", "top-vertex")


def choose_scheme(n_outputs: int, order: int, has_output_activation: bool, n_vars: int) -> str:
    """Forward-only for an output activation, order 1 or many outputs; else the topmost vertex.

    The top-vertex scheme pushes only orders <= K-2 forward and contracts the top orders with
    the output propagators, once per output; pushing everything forward costs about the same
    for any number of outputs but grows much faster with K. Measured on 32 -> 64 -> 64 -> m
    (tanh, 256 points): at K = 2 (feynmlp.hessian, two cores) the top-vertex scheme was faster
    up to m = 64 (7x at m = 4, 1.6x at m = 32, 1.1x at m = 64); at K = 3 (one core) up to
    m = 16 (2.2x at m = 8). The bound for K >= 3 stays on the safe side as K grows.
    """
    if order < 2 or has_output_activation or n_vars < 2:
        return "forward"
    limit = 64 if order == 2 else max(4, 16 // (order - 1))
    return "top-vertex" if n_outputs <= limit else "forward"
