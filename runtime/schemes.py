"""The ways of computing multivariate coefficients: one object per scheme, and which one a
request gets.

In: a Request (the network, the number of points, the order, the expansion variables, the
dtype) and the scheme the caller asked for ("auto", "forward" or "top-vertex"). Out: the
Scheme object that runs it. Every scheme answers the same small protocol (Scheme below), so
the caller (feynmlp.multivariate) reads: validate, pick, check memory, run blocks.

The schemes:
- "forward" (feynmlp.forward): every coefficient through every layer;
- "top-vertex": orders below K forward, the top orders from the topmost vertex and the output
  propagators; one object per order range, because order 2 has a path of its own
  (feynmlp.hessian) and orders >= 3 share the contraction of feynmlp.top_vertex.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from .errors import FeynmlpError

SCHEMES = ("auto", "forward", "top-vertex")

# The FLOP models' count of the activation's derivatives s(z), s'(z), ...: about ten FLOPs per
# neuron and order (negligible next to the products; counted for completeness).
ACTIVATION_FLOPS_PER_ORDER = 10


@dataclasses.dataclass(frozen=True)
class Request:
    """One multivariate expansion: the network, how many points, the order, the variables.

    weights, biases: per layer, W (n_l, n_{l-1}) and b (n_l,); hidden_activations: one per
    hidden layer; output_activation: None (linear) or an activation; variables: int64 indices
    of the inputs expanded in; dtype: of all arithmetic.
    """

    weights: tuple
    biases: tuple
    hidden_activations: tuple
    output_activation: object
    order: int
    variables: np.ndarray
    dtype: np.dtype
    batch: int

    # Derived once, in __post_init__: read on every request, as plain attributes.
    widths: list = dataclasses.field(init=False)      # the hidden layers' widths, then the outputs'
    n_vars: int = dataclasses.field(init=False)
    itemsize: int = dataclasses.field(init=False)
    outputs: int = dataclasses.field(init=False)
    hidden_neurons: int = dataclasses.field(init=False)

    def __post_init__(self):
        widths = [w.shape[0] for w in self.weights]
        for name, value in (("widths", widths), ("n_vars", int(self.variables.size)),
                            ("itemsize", np.dtype(self.dtype).itemsize), ("outputs", widths[-1]),
                            ("hidden_neurons", sum(widths[:-1]))):
            object.__setattr__(self, name, value)


class Scheme(Protocol):
    """What every scheme provides. `name` is the one users pass as scheme=...; a plan holds
    everything a scheme settles once per request (kernels, tables, converted weights) and is
    built in the calling thread, before the points are split into threads."""

    name: str

    def serves(self, request: Request) -> bool:
        """Whether this scheme computes the request (order, output activation, layers)."""

    def points_per_chunk(self, request: Request) -> int:
        """Points per block of work, all threads together (bounds the work arrays)."""

    def table_bytes(self, request: Request) -> int:
        """Bytes of the tables and plans, which depend on the variables and the order only."""

    def workspace_bytes(self, request: Request, points: int) -> int:
        """Bytes of the work arrays for a block of `points` points, all threads together."""

    def flops(self, request: Request, points: int) -> int:
        """Floating-point operations for `points` points, counted analytically from the
        products and loops the scheme runs (the benchmark's rate is this over the time)."""

    def plan(self, request: Request) -> object:
        """Kernels and tables, resolved and built in the calling thread."""

    def expand(self, plan, points: np.ndarray, out: np.ndarray) -> None:
        """The coefficients of a block of points (points, n_in) into out (points, n_out, M)."""


def registry() -> tuple:
    """Every scheme object, in the order they are asked whether they serve a request."""
    global _REGISTRY
    if _REGISTRY is None:
        # Imported on first use: the scheme modules import Numba, which `import feynmlp` leaves
        # out (it is a fifth of a second).
        from . import forward, hessian, top_vertex

        _REGISTRY = (forward.SCHEME, hessian.SCHEME, top_vertex.SCHEME)
    return _REGISTRY


_REGISTRY = None


def check_name(scheme: str, output_activation) -> None:
    """FeynmlpError unless `scheme` is one of SCHEMES and applies to a network with this
    output activation."""
    if scheme not in SCHEMES:
        raise FeynmlpError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if scheme == "top-vertex" and output_activation is not None:
        raise FeynmlpError("scheme 'top-vertex' needs a linear output layer; this network has output "
                           f"activation {output_activation!r}; use scheme='forward' or 'auto'")


def choose(request: Request, scheme: str = "auto"):
    """The scheme object that runs `request`, by name ("auto": choose_scheme picks)."""
    check_name(scheme, request.output_activation)
    if scheme == "auto":
        scheme = choose_scheme(request.outputs, request.order, request.output_activation is not None, request.n_vars)
    for candidate in registry():
        if candidate.name == scheme and candidate.serves(request):
            return candidate
    # No vertex (order 1, or no hidden layer): the top-vertex scheme is the forward pass.
    return choose(request, "forward")


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
