"""The registry of activations: everything feynmlp knows about an activation, except calculus.

In: nothing (plain data and small functions; importing it loads NumPy only, never SymPy,
Jinja2 or torch). Out:
- the built-in names (`BUILTIN_ACTIVATIONS`, smooth, any order) and the piecewise-linear ones
  (`RELU_LIKE`, first order only) with their shapes (`PIECEWISE_LINEAR`, the leaky slope
  `LEAKY_SLOPE` written here once), and the aliases users and torch modules use for them
  (`ALIASES`, `canonical_name`);
- the NumPy function of each built-in name, which evaluates `MLP(x)` (`NUMPY_FUNCTIONS`);
- the torch module class of each activation a torch network may contain (`TORCH_MODULES`,
  class names only, for `MLP.from_torch` and the Born toolkit's training);
- the checks of a user's custom SymPy activation (`check_custom_expression`) and of an
  expansion order (`check_order_supported`).

Readers: feynmlp.kernels, feynmlp.mlp, feynmlp.born.training and feynmlp.codegen.activations,
whose symbolic definitions list exactly these names. The code generator reads only
BUILTIN_ACTIVATIONS, RELU_LIKE and PIECEWISE_LINEAR: their values, not this file's text, go into
the codegen hash (feynmlp.kernel_signature), so that editing a NumPy function, a torch name or
a message here leaves the shipped kernels valid.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from .errors import UnsupportedActivationError

BUILTIN_ACTIVATIONS = ("tanh", "sigmoid", "softplus", "silu", "gelu", "sin", "cos", "exp", "identity")

# torch.nn.LeakyReLU's default negative_slope, the one slope feynmlp supports.
LEAKY_SLOPE = 0.01


@dataclasses.dataclass(frozen=True)
class PiecewiseLinear:
    """s(x) = x on (lower, upper); outside, a constant (the clamp), except that below `lower`
    a nonzero `slope` gives s(x) = slope * x (lower is then 0: the leaky ReLU)."""

    lower: float
    upper: float = math.inf
    slope: float = 0.0


# Piecewise-linear activations: their second and higher derivatives vanish almost everywhere
# (and are distributions at the kinks), so a network built from them has no higher Taylor
# coefficients. They are accepted for order 1 only.
PIECEWISE_LINEAR = {
    "relu": PiecewiseLinear(lower=0.0),
    "leaky_relu": PiecewiseLinear(lower=0.0, slope=LEAKY_SLOPE),
    "hardtanh": PiecewiseLinear(lower=-1.0, upper=1.0),
    "relu6": PiecewiseLinear(lower=0.0, upper=6.0),
}
RELU_LIKE = tuple(PIECEWISE_LINEAR)

ALIASES = {
    "swish": "silu",
    "logistic": "sigmoid",
    "linear": "identity",
    "none": "identity",
    "erf_gelu": "gelu",
}

# torch.nn class of each activation a torch network may contain. Their settings must match
# feynmlp's definitions (Softplus beta=1, GELU approximate='none', LeakyReLU LEAKY_SLOPE,
# Hardtanh the bounds above), which feynmlp.mlp checks on each module it reads.
TORCH_MODULES = {"tanh": "Tanh", "sigmoid": "Sigmoid", "silu": "SiLU", "gelu": "GELU", "softplus": "Softplus",
                 "relu": "ReLU", "leaky_relu": "LeakyReLU", "hardtanh": "Hardtanh", "relu6": "ReLU6"}
# The smooth ones: what a network trained for Taylor coefficients of order >= 2 may use.
SMOOTH_TORCH_ACTIVATIONS = tuple(name for name in TORCH_MODULES if name not in PIECEWISE_LINEAR)


def canonical_name(name: str) -> str:
    """The built-in name for `name` (case-insensitive, aliases resolved), or a clear error."""
    if not isinstance(name, str):
        raise UnsupportedActivationError(f"activation name must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key in BUILTIN_ACTIVATIONS or key in RELU_LIKE:
        return key
    raise UnsupportedActivationError(
        f"unknown activation {name!r}; built-in activations are {', '.join(BUILTIN_ACTIVATIONS)} "
        "(or pass a SymPy expression in one symbol for a custom activation)")


def check_order_supported(name: str, order: int) -> None:
    """Refuse ReLU-like activations for order >= 2, saying why."""
    if name in RELU_LIKE and order >= 2:
        raise UnsupportedActivationError(
            f"activation {name!r} is piecewise linear: its derivatives of order >= 2 vanish almost "
            f"everywhere (and are Dirac deltas at the kinks), so order {order} Taylor coefficients "
            "of such a network are not defined by the diagram rules; use a smooth activation "
            "(tanh, sigmoid, softplus, silu, gelu, ...) or order 1")


# ----------------------------------------------------------------------------------------
# NumPy forward functions of the built-in activations.
# ----------------------------------------------------------------------------------------

def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Written through exp(-|z|) so that neither branch overflows for large |z|.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(z: np.ndarray) -> np.ndarray:
    # log(1 + e^z) without overflow; the exact function, not torch's linearisation above 20.
    return np.logaddexp(0.0, z)


def _gelu(z: np.ndarray) -> np.ndarray:
    # scipy is a hard dependency (Numba's BLAS); imported here so `import feynmlp` stays light.
    from scipy.special import erf
    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def _piecewise_linear(shape: PiecewiseLinear) -> Callable[[np.ndarray], np.ndarray]:
    if shape.slope:
        return lambda z: np.where(z > shape.lower, z, shape.slope * z)
    if shape.upper == math.inf:
        return lambda z: np.maximum(z, shape.lower)
    return lambda z: np.clip(z, shape.lower, shape.upper)


NUMPY_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "silu": lambda z: z * _sigmoid(z),
    "gelu": _gelu,
    "sin": np.sin,
    "cos": np.cos,
    "exp": np.exp,
    "identity": lambda z: z,
    **{name: _piecewise_linear(shape) for name, shape in PIECEWISE_LINEAR.items()},
}


# ----------------------------------------------------------------------------------------
# Custom activations.
# ----------------------------------------------------------------------------------------

# Longest repr of a user's value quoted in an error message: a message is one line naming the
# value and the fix, and the repr of a state dict, a tensor or a nested module runs to
# thousands of characters over many lines.
REPR_LIMIT = 80


def short_repr(value: Any) -> str:
    """repr(value) on one line, cut to REPR_LIMIT characters."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the error being reported
        text = f"<{type(value).__name__} object>"
    text = " ".join(text.split())
    return text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT - 3] + "..."


def check_custom_expression(expr: Any, where: str, smooth: bool = False) -> Any:
    """Validate a SymPy activation; returns it unchanged.

    Args:
        expr: the activation, a SymPy expression in exactly one free symbol.
        where: what the messages name as the bad value's place ("activation of hidden layer 2").
        smooth: also refuse the non-smooth building blocks (Max, Min, Abs, Piecewise, Heaviside,
            sign), whose higher derivatives are not functions: needed for Taylor coefficients,
            not for evaluating the network.

    Raises:
        UnsupportedActivationError: naming the expression and the fix.
    """
    import sympy
    from sympy.core.function import AppliedUndef

    if not isinstance(expr, sympy.Expr):
        raise UnsupportedActivationError(
            f"{where}: a custom activation must be a SymPy expression (sympy.Expr), got the "
            f"{type(expr).__name__} {short_repr(expr)}; write it as an expression in one symbol, "
            "e.g. x*tanh(x)")
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    if len(symbols) != 1:
        found = ", ".join(s.name for s in symbols) or "none"
        raise UnsupportedActivationError(
            f"{where}: a custom activation must have exactly one free symbol (its input), but "
            f"{expr} has {len(symbols)} ({found}); substitute numbers for the other symbols")
    undefined = sorted(str(f) for f in expr.atoms(AppliedUndef))
    if undefined:
        raise UnsupportedActivationError(
            f"{where}: custom activation {expr} uses undefined function(s) {', '.join(undefined)}; "
            "write it with known functions only (exp, log, tanh, erf, ...)")
    if expr.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        raise UnsupportedActivationError(
            f"{where}: custom activation {expr} contains an infinite or undefined constant; "
            "fix the expression (a division by zero?)")
    if expr.has(sympy.I):
        raise UnsupportedActivationError(
            f"{where}: custom activation {expr} contains the imaginary unit I; feynmlp expands real "
            "networks only")
    if smooth and expr.has(sympy.Heaviside, sympy.Max, sympy.Min, sympy.Abs, sympy.Piecewise, sympy.sign):
        raise UnsupportedActivationError(
            f"{where}: custom activation {expr} is not smooth (it contains Max/Min/Abs/Piecewise/"
            "Heaviside/sign): its higher derivatives are not functions; use a smooth expression")
    return expr
