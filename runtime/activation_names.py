"""Names of the built-in activations, known to the runtime without importing SymPy.

In: nothing. Out: the tuple of built-in names, the aliases users and torch modules use for
them, and the ReLU-like names that have no derivatives of order >= 2. The symbolic
definitions live in feynmlp.codegen.activations and must list exactly these names.
"""
from __future__ import annotations

from .errors import UnsupportedActivationError

BUILTIN_ACTIVATIONS = ("tanh", "sigmoid", "softplus", "silu", "gelu", "sin", "cos", "exp", "identity")

# Piecewise-linear activations: their second and higher derivatives vanish almost everywhere
# (and are distributions at the kinks), so a network built from them has no higher Taylor
# coefficients. They are accepted for order 1 only.
RELU_LIKE = ("relu", "leaky_relu", "hardtanh", "relu6")

ALIASES = {
    "swish": "silu",
    "logistic": "sigmoid",
    "linear": "identity",
    "none": "identity",
    "erf_gelu": "gelu",
}


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
