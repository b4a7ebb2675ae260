"""feynmlp: Taylor coefficients of multilayer perceptrons to any order, through Feynman-like rules.

In: a trained MLP (arrays, a torch module, or a safetensors/npz file) and expansion points.
Out: Taylor coefficients, derivative tensors, directional (univariate) Taylor series, and the
diagram-by-diagram view of each coefficient. Importing this package loads NumPy and Numba
only; the symbolic generator (SymPy, Jinja2) lives in `feynmlp.codegen` and is imported only
when a kernel has to be generated.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    FeynmlpError,
    ModelFileError,
    ResourceLimitError,
    StaleKernelError,
    UnsupportedActivationError,
)
from .mlp import MLP
from .model_io import load, read_metadata, save
from .operator_terms import SparseExpansion, divergence, operator
from .operators import biharmonic, laplacian
from .taylor import DiagramContribution, TaylorExpansion, diagram_contributions, directional, taylor

__all__ = [
    "__version__",
    "FeynmlpError",
    "ModelFileError",
    "ResourceLimitError",
    "StaleKernelError",
    "UnsupportedActivationError",
    "diagrams",
    "MLP",
    "load",
    "save",
    "read_metadata",
    "taylor",
    "directional",
    "diagram_contributions",
    "laplacian",
    "biharmonic",
    "operator",
    "divergence",
    "SparseExpansion",
    "TaylorExpansion",
    "DiagramContribution",
]


def diagrams(order: int, depth: int | None = None):
    """The diagrams of one order: labelled rooted trees, and their layer placements for `depth`.

    See `feynmlp.codegen.diagrams.diagrams` (pure Python; imports no SymPy).
    """
    from .codegen.diagrams import diagrams as _diagrams
    return _diagrams(order, depth)
