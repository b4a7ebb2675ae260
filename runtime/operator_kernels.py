"""The shipped kernels of the collapsed operator rules: their signature and their loading.

In: an operator name with collapsed rules ("laplacian", "biharmonic"). Out: its imported kernel
module from feynmlp.generated (`activate`, `rows`, ORDER), after checking the file's SHA-256
against generated/operator_manifest.json and the manifest's operator hash against the
generator sources installed beside it; an edited or stale file is refused with the command
that refreshes it, never imported.

The rule kernels do not depend on the activation: they read the activation's derivatives from
the activation's own kernel module (feynmlp.kernels.kernel_module, shipped or generated into
the cache for custom activations). So the two modules here serve every activation. Their hash
covers the generic generator's hash (feynmlp.kernel_signature.codegen_hash, the printer and the
activation registry among its inputs) and the operator generator's own sources; it is kept
apart from the generic hash, so that the Taylor kernels do not change when the operator
generator does. Imports no SymPy.
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources

from .errors import StaleKernelError
from .kernel_signature import GENERATOR_VERSION, codegen_hash, normalised_source, read_source
from .kernels import import_verified
from .once import once

OPERATOR_MANIFEST = "operator_manifest.json"
# Operators with collapsed rules, and the derivative order each reads from the activation.
RULE_OPERATORS = {"laplacian": 2, "biharmonic": 4}
OPERATOR_SOURCES = (
    ("feynmlp.codegen", "operator_rules.py"),
    ("feynmlp.codegen", "operator_generate.py"),
    ("feynmlp.templates", "operator_module.py.jinja"),
)


def operator_filename(operator: str) -> str:
    return f"{operator}_operator.py"


def operator_hash() -> str:
    """SHA-256 over the generic generator hash and the kernel-shaping part of the operator
    generator's sources (docstrings, comments and messages left out, as for codegen_hash)."""
    digest = hashlib.sha256(f"{GENERATOR_VERSION}\0{codegen_hash()}".encode())
    for package, name in OPERATOR_SOURCES:
        digest.update(f"\0{package}/{name}\0".encode())
        digest.update(normalised_source(name, read_source(package, name)).encode())
    return digest.hexdigest()


def operator_signature(operator: str, sympy_version: str) -> str:
    """The signature of one rule module: operator hash, SymPy series and operator."""
    return hashlib.sha256("\n".join([operator_hash(), sympy_version, operator]).encode()).hexdigest()[:32]


@once
def _operator_manifest() -> dict:
    try:
        return json.loads(resources.files("feynmlp.generated").joinpath(OPERATOR_MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise StaleKernelError(
            f"generated/{OPERATOR_MANIFEST} is missing or unreadable ({exc}); refresh the shipped kernels "
            "with: feynmlp generate-kernels --all") from exc


@once
def rule_module(operator: str):
    """The verified kernel module of `operator`'s collapsed rules."""
    filename = operator_filename(operator)
    refresh = "feynmlp generate-kernels --all"
    manifest = _operator_manifest()
    if manifest.get("operator_hash") != operator_hash():
        raise StaleKernelError(
            f"the operator kernels in generated/ were produced by a different version of the generator than the "
            f"one installed (operator hash {str(manifest.get('operator_hash'))[:12]} != {operator_hash()[:12]}); "
            f"refresh them with: {refresh}")
    return import_verified(filename, manifest, OPERATOR_MANIFEST, refresh)
