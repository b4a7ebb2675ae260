"""Rendering the kernels of the collapsed operator rules into generated/.

In: operator names ("laplacian", "biharmonic") and an output folder. Out:
`<operator>_operator.py` rendered from templates/operator_module.py.jinja and
`operator_manifest.json` listing each with its SHA-256 and signature. The rules come from
feynmlp.codegen.operator_rules; the printer is the one of the Taylor kernels. `check`
renders into memory and compares instead of writing.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import sympy as sp

from ..kernel_signature import GENERATOR_VERSION, file_digest
from ..operator_kernels import (OPERATOR_MANIFEST, RULE_OPERATORS, operator_filename, operator_hash,
                                operator_signature)
from . import operator_rules, printing, templating
from .generate import diff_against, sympy_series

TEMPLATE = "operator_module.py.jinja"
# In the kernels every contraction is a per-neuron local named <name>_k.
_LOCAL = {name: sp.Symbol(f"{name}_k", real=True) for name in ("jj", "lap", "jl3", "hf", "jhj")}


@dataclasses.dataclass(frozen=True)
class RenderedOperator:
    filename: str
    text: str
    operator: str
    order: int
    signature: str


def render_operator(operator: str) -> RenderedOperator:
    order = operator_rules.operator_order(operator)
    if RULE_OPERATORS.get(operator) != order:
        raise ValueError(f"operator {operator!r}: the runtime expects order {RULE_OPERATORS.get(operator)}, "
                         f"the rules have {order}")
    substitutions = {operator_rules.SYMBOLS[name]: local for name, local in _LOCAL.items()}
    lines = {}
    for name, expression in operator_rules.rules(operator).items():
        lines[name] = printing.assignments([f"{name}_new"], [expression.xreplace(substitutions)],
                                           temporary_prefix="_r")
    scale_lines = [f"s{m} = {float(math.factorial(m))!r} * derivatives[base, {m}]" for m in range(order + 1)]
    row_scale_lines = [f"s{m} = {float(math.factorial(m))!r} * rows[{m}, k]" for m in range(order + 1)]
    signature = operator_signature(operator, sympy_series())
    text = templating.render(
        TEMPLATE,
        template_name=TEMPLATE,
        generator_version=GENERATOR_VERSION,
        signature=signature,
        operator=operator,
        order=order,
        refresh_command="feynmlp generate-kernels --all",
        rule_lines=operator_rules.rule_text(operator),
        scale_lines=scale_lines,
        row_scale_lines=row_scale_lines,
        lines=lines,
    )
    return RenderedOperator(operator_filename(operator), text, operator, order, signature)


def shipped_operators() -> list[str]:
    return list(RULE_OPERATORS)


def _manifest_text(kernels) -> str:
    entries = {k.filename: {"operator": k.operator, "order": k.order, "signature": k.signature,
                            "sha256": file_digest(k.text.encode("utf-8"))} for k in kernels}
    manifest = {"generator_version": GENERATOR_VERSION, "operator_hash": operator_hash(),
                "sympy": sympy_series(), "kernels": dict(sorted(entries.items()))}
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def _expected(operators) -> dict[str, str]:
    kernels = [render_operator(name) for name in operators]
    expected = {k.filename: k.text for k in kernels}
    expected[OPERATOR_MANIFEST] = _manifest_text(kernels)
    return expected


def write_operators(folder: Path, operators=None) -> list[str]:
    """Render every operator kernel and its manifest into `folder` (atomically, only if changed);
    the names of the files that changed. Everything is rendered before anything is written."""
    from ..files import write_if_changed

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = _expected(shipped_operators() if operators is None else operators)
    return [name for name, text in expected.items() if write_if_changed(folder / name, text)]


def check_operators(folder: Path) -> list[str]:
    """Unified diffs of the operator files in `folder` that differ from what is rendered now."""
    return diff_against(Path(folder), _expected(shipped_operators()))
