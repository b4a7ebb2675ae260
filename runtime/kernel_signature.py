"""The generator signature: what a generated kernel must match to be trusted.

In: the source files of the kernel-shaping code and the kernel template (read as package data,
no import), the values the generator reads from the activation registry, and the options of
one kernel. Out: hex digests. The codegen hash changes whenever something that shapes generated
text changes, and only then: each Python source is hashed as its syntax tree with the parts
that never reach a kernel taken out (docstrings, comments, the messages of raise, assert,
warnings and log calls, argparse help= texts), the template with its {# ... #} comments taken
out, and the registry as the values the generator reads from it. The loader compares the hash with the one recorded in
generated/manifest.json and refuses stale kernels, naming the command that refreshes them.
Kept on the runtime side so that checking a kernel never imports SymPy.

The command line of the generator (feynmlp.codegen.command) is deliberately outside the hashed
set: it only chooses which kernels to render and where to write them.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import re
from importlib import resources

GENERATOR_VERSION = "1"

# (package, file) pairs whose content shapes every generated kernel module: the derivation,
# the printer, the rendering (the Jinja2 environment's whitespace options included) and this
# file (the signature lines). The activation registry enters through `registry_text`.
SIGNATURE_SOURCES = (
    ("feynmlp", "kernel_signature.py"),
    ("feynmlp.codegen", "activations.py"),
    ("feynmlp.codegen", "vertex_sums.py"),
    ("feynmlp.codegen", "printing.py"),
    ("feynmlp.codegen", "generate.py"),
    ("feynmlp.codegen", "templating.py"),
    ("feynmlp.templates", "kernel_module.py.jinja"),
)

# Calls whose arguments are messages for people: `<logger or module>.<one of these>(...)`.
_MESSAGE_CALLS = {"debug", "info", "warning", "warn", "error", "exception", "critical"}
_TEMPLATE_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)


def read_source(package: str, name: str) -> bytes:
    """The bytes of one signature source, as installed beside this module."""
    return resources.files(package).joinpath(name).read_bytes()


def normalised_source(name: str, data: bytes) -> str:
    """The part of one signature source that can shape a kernel's text, as a canonical string.

    A template loses its {# ... #} comments (Jinja2 never renders them). A Python module is
    parsed and written out node by node without docstrings, comments, layout and the message
    arguments named in the module docstring; fields that are empty or None are left out, so
    that the text is the same on every Python the package supports (3.12 added empty
    `type_params` to every def, 3.13 changed what ast.dump prints for empty fields).
    """
    text = data.decode("utf-8")
    if not name.endswith(".py"):
        return _TEMPLATE_COMMENT.sub("", text)
    return _canonical(_strip_messages(ast.parse(text)))


def _strip_messages(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            node.exc.args, node.exc.keywords = [], []
        elif isinstance(node, ast.Assert):
            node.msg = None
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in _MESSAGE_CALLS:
                node.args, node.keywords = [], []
            else:
                node.keywords = [k for k in node.keywords if k.arg != "help"]
    return tree


def _canonical(node) -> str:
    if isinstance(node, ast.AST):
        fields = []
        for field in node._fields:
            value = getattr(node, field, None)
            if value is None or value == [] or isinstance(value, ast.expr_context):
                continue
            fields.append(f"{field}={_canonical(value)}")
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(_canonical(item) for item in node) + "]"
    return repr(node)


def registry_text() -> str:
    """The values the code generator reads from the activation registry, as text.

    Only the values: the registry's NumPy functions, torch names and messages shape no kernel.
    """
    from . import activation_names as registry

    return repr((registry.BUILTIN_ACTIVATIONS, registry.RELU_LIKE, sorted(registry.PIECEWISE_LINEAR.items())))


@functools.lru_cache(maxsize=1)
def codegen_hash() -> str:
    """SHA-256 over the kernel-shaping part of the generator's sources, the kernel template and
    the activation registry's values."""
    digest = hashlib.sha256(GENERATOR_VERSION.encode())
    digest.update(f"\0registry\0{registry_text()}".encode())
    for package, name in SIGNATURE_SOURCES:
        digest.update(f"\0{package}/{name}\0".encode())
        digest.update(normalised_source(name, read_source(package, name)).encode())
    return digest.hexdigest()


def kernel_signature(activation_signature: str, order: int, sympy_version: str) -> str:
    """The signature of one kernel module: generator, SymPy series and output-shaping options."""
    text = "\n".join([codegen_hash(), sympy_version, str(order), activation_signature])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
