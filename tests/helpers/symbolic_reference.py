"""An independent reference for tests: a small MLP written out symbolically and differentiated
by SymPy's own `diff` (no diagrams, no Faa di Bruno, no generated code involved)."""
from __future__ import annotations

import math

import numpy as np
import sympy as sp

ACTIVATION_FORMULAS = {
    "tanh": sp.tanh,
    "sigmoid": lambda z: 1 / (1 + sp.exp(-z)),
    "softplus": lambda z: sp.log(1 + sp.exp(z)),
    "silu": lambda z: z / (1 + sp.exp(-z)),
    "gelu": lambda z: z * (1 + sp.erf(z / sp.sqrt(2))) / 2,
    "sin": sp.sin,
    "cos": sp.cos,
    "exp": sp.exp,
    "identity": lambda z: z,
}


def symbolic_outputs(weights, biases, activations, output_activation=None):
    """(input symbols, list of output expressions) of the MLP, built with exact float weights."""
    xs = sp.symbols(f"x0:{weights[0].shape[1]}", real=True)
    h = sp.Matrix(xs)
    for layer, (w, b) in enumerate(zip(weights, biases)):
        h = sp.Matrix(w.tolist()) * h + sp.Matrix(b.tolist())
        act = activations[layer] if layer < len(weights) - 1 else output_activation
        if act is not None:
            f = ACTIVATION_FORMULAS[act] if isinstance(act, str) else sp.Lambda(next(iter(act.free_symbols)), act)
            h = h.applyfunc(f)
    return xs, list(h)


def taylor_coefficients(expr, xs, point, exponent_vectors) -> np.ndarray:
    """d^alpha expr / alpha! at point for every alpha, each derivative taken from a lower one
    (graded order: alpha = beta + e_i with beta already differentiated), evaluated in mpmath
    at 30 digits."""
    import mpmath

    derivatives = {}
    for alpha in map(tuple, np.asarray(exponent_vectors).tolist()):
        if sum(alpha) == 0:
            derivatives[alpha] = expr
            continue
        i = max(j for j, a in enumerate(alpha) if a)
        beta = alpha[:i] + (alpha[i] - 1,) + alpha[i + 1:]
        derivatives[alpha] = sp.diff(derivatives[beta], xs[i])
    function = sp.lambdify(xs, list(derivatives.values()), modules="mpmath")
    with mpmath.workdps(30):
        values = function(*[mpmath.mpf(float(p)) for p in point])
    factorials = [math.prod(math.factorial(a) for a in alpha) for alpha in derivatives]
    return np.array([float(v) / f for v, f in zip(values, factorials)])


def directional_coefficients(expr, xs, point, direction, order) -> np.ndarray:
    """Coefficients of t -> expr(point + t direction) up to t^order: SymPy diff in t, mpmath."""
    import mpmath

    t = sp.Symbol("t", real=True)
    shifted = expr.xreplace({x: sp.Float(float(p), 30) + sp.Float(float(v), 30) * t
                             for x, p, v in zip(xs, point, direction)})
    derivatives = [shifted]
    for _ in range(order):
        derivatives.append(sp.diff(derivatives[-1], t))
    function = sp.lambdify([t], derivatives, modules="mpmath")
    with mpmath.workdps(30):
        values = function(mpmath.mpf(0))
    return np.array([float(v) / math.factorial(k) for k, v in enumerate(values)])
