"""Kernel generation: activation + order -> rendered kernel module -> file in generated/.

In: (activation, order) requests and an output folder. Out: `<activation>_order<K>.py` files
rendered from templates/kernel_module.py.jinja, and `manifest.json` listing each file with its
SHA-256 and generator signature. Stages: derive (SymPy: activation derivatives, vertex sums),
print (CSE'd source lines), render (Jinja2), write (atomic, only when changed). `--check`
renders into memory and compares instead of writing. The command line that drives these
stages is feynmlp.codegen.command.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import time
from pathlib import Path

from ..errors import FeynmlpError
from ..kernel_signature import GENERATOR_VERSION, codegen_hash, file_digest, kernel_signature
from ..kernels import SHIPPED_ORDERS, is_shipped, validate_order

log = logging.getLogger("feynmlp.codegen")

TEMPLATE = "kernel_module.py.jinja"
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class RenderedKernel:
    filename: str
    text: str
    activation: str
    order: int
    signature: str


def sympy_series() -> str:
    """SymPy's major.minor version: part of every signature (printing may change between them)."""
    import sympy

    return ".".join(sympy.__version__.split(".")[:2])


def render_kernel(activation, order: int) -> RenderedKernel:
    """Derive, print and render the kernel module of one (activation, order)."""
    from . import activations, printing, vertex_sums, templating

    validate_order(order)
    spec = activations.get_activation(activation)
    if spec.max_order is not None and order > spec.max_order:
        spec.taylor_derivatives(order)  # raises the activation's own explanation
    started = time.perf_counter()
    vector_lines = []
    if spec.first_order_code is not None:
        value_code, derivative_code = spec.first_order_code
        derivative_lines = [f"s0 = {value_code}", f"s1 = {derivative_code}"]
    else:
        names, expressions, clamp_lines = spec.kernel_assignments(order)
        carrier_lines = list(spec.preamble) + clamp_lines + [f"{c.symbol.name} = {c.code}" for c in spec.carriers]
        polynomial_lines = printing.assignments(names, expressions, temporary_prefix="_d")
        derivative_lines = carrier_lines + polynomial_lines
        if spec.vector_inputs:
            vector_lines = clamp_lines + [f"{c.symbol.name} = {code}"
                                          for c, code in zip(spec.carriers, spec.vector_carriers)] + polynomial_lines
    directional_lines = printing.assignments(
        [f"c{k}" for k in range(1, order + 1)], vertex_sums.directional_expressions(order), temporary_prefix="_c")
    term_lines = []
    for k, terms in enumerate(vertex_sums.vertex_terms(order), start=1):
        listed = ", ".join(f"{term.parts} x {term.weight}" for term in terms)
        term_lines.append(f"order {k}: {listed}")
    vector_rows, vector_prepared, vector_ufuncs = spec.vector_steps() if vector_lines else ([], [], [])
    signature = kernel_signature(spec.signature(), order, sympy_series())
    filename = f"{spec.name}_order{order}.py"
    text = templating.render(
        TEMPLATE,
        template_name=TEMPLATE,
        generator_version=GENERATOR_VERSION,
        signature=signature,
        activation=spec.name,
        activation_definition=str(spec.definition),
        order=order,
        refresh_command=refresh_command(spec.name, order),
        derivative_lines=derivative_lines,
        uses_math=any("math." in line for line in derivative_lines + vector_lines),
        vector_lines=vector_lines,
        vector_rows=vector_rows,
        vector_prepared=vector_prepared,
        vector_ufuncs=vector_ufuncs,
        directional_lines=directional_lines,
        valences=list(vertex_sums.valences(order)),
        valences_tuple=repr(vertex_sums.valences(order)),
        vertex_terms=term_lines,
    )
    log.debug("rendered %s in %.2f s", filename, time.perf_counter() - started)
    return RenderedKernel(filename, text, spec.name, order, signature)


def refresh_command(activation: str, order: int) -> str:
    if activation.startswith("custom_"):
        return "regenerated automatically in the user cache on the next call"
    return f"feynmlp generate-kernels --order {order} --activation {activation}"


def shipped_requests() -> list[tuple[str, int]]:
    """Every (activation, order) whose kernel ships in generated/."""
    from .activations import builtin_names

    return [(name, order) for name in builtin_names() for order in SHIPPED_ORDERS if is_shipped(name, order)]


def default_output_folder() -> Path:
    from importlib import resources

    return Path(str(resources.files("feynmlp.generated")))


def _manifest_entry(kernel: RenderedKernel) -> dict:
    return {"activation": kernel.activation, "order": kernel.order, "signature": kernel.signature,
            "sha256": file_digest(kernel.text.encode("utf-8"))}


def _manifest_text(entries: dict) -> str:
    manifest = {"generator_version": GENERATOR_VERSION, "codegen_hash": codegen_hash(),
                "sympy": sympy_series(), "kernels": dict(sorted(entries.items()))}
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def _read_manifest_entries(folder: Path) -> dict:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return dict(data.get("kernels", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def write_kernels(requests, folder: Path, progress: bool = False) -> list[str]:
    """Render each request and write it (atomically, only if changed); update the manifest.

    Everything is rendered before anything is written, so a failing derivation leaves the
    folder as it was. Returns the names of the files that changed.
    """
    from ..files import write_if_changed

    folder = Path(folder)
    _check_folder(folder)
    kernels = [render_kernel(a, k) for a, k in _progress(requests, progress, "deriving kernels")]
    entries = _read_manifest_entries(folder)
    changed = []
    for kernel in kernels:
        if write_if_changed(folder / kernel.filename, kernel.text):
            changed.append(kernel.filename)
        entries[kernel.filename] = _manifest_entry(kernel)
    if write_if_changed(folder / MANIFEST, _manifest_text(entries)):
        changed.append(MANIFEST)
    return changed


def check_kernels(requests, folder: Path, progress: bool = False) -> list[str]:
    """Unified diffs of every file in `folder` that differs from what the generator renders now."""
    folder = Path(folder)
    kernels = [render_kernel(a, k) for a, k in _progress(requests, progress, "deriving kernels")]
    entries = _read_manifest_entries(folder)
    expected = {kernel.filename: kernel.text for kernel in kernels}
    for kernel in kernels:
        entries[kernel.filename] = _manifest_entry(kernel)
    expected[MANIFEST] = _manifest_text(entries)
    return diff_against(folder, expected)


def diff_against(folder: Path, expected: dict[str, str]) -> list[str]:
    """Unified diffs of the files in `folder` whose text differs from `expected` (file name ->
    text the generator renders now); a missing or unreadable file counts as empty."""
    diffs = []
    for name, text in expected.items():
        try:
            current = (folder / name).read_text()
        except OSError:
            current = ""
        if current != text:
            diffs.append("".join(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                fromfile=f"{folder / name} (on disk)", tofile=f"{folder / name} (generator now)")))
    return diffs


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise FeynmlpError(f"output folder {str(folder)!r} is a file; pass a folder with --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeynmlpError(
            f"cannot create output folder {str(folder)!r}: {exc.strerror or exc}; pass a writable folder with --out") from exc


def _progress(items, enabled: bool, label: str):
    if not enabled or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="kernel", leave=False)
