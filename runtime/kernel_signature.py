"""The generator signature: what a generated kernel must match to be trusted.

In: the source files of the generator and the kernel template (read as package data, no
import), and the options of one kernel. Out: hex digests. The codegen hash changes whenever
any file that shapes generated code changes; the loader compares it with the hash recorded in
generated/manifest.json and refuses stale kernels, naming the command that refreshes them.
Kept on the runtime side so that checking a kernel never imports SymPy.
"""
from __future__ import annotations

import functools
import hashlib
from importlib import resources

GENERATOR_VERSION = "1"

# (package, file) pairs whose content shapes every generated kernel module.
SIGNATURE_SOURCES = (
    ("feynmlp", "activation_names.py"),
    ("feynmlp", "kernel_signature.py"),
    ("feynmlp.codegen", "activations.py"),
    ("feynmlp.codegen", "vertex_sums.py"),
    ("feynmlp.codegen", "printing.py"),
    ("feynmlp.codegen", "generate.py"),
    ("feynmlp.templates", "kernel_module.py.jinja"),
)


@functools.lru_cache(maxsize=1)
def codegen_hash() -> str:
    """SHA-256 over the generator's sources and the kernel template."""
    digest = hashlib.sha256(GENERATOR_VERSION.encode())
    for package, name in SIGNATURE_SOURCES:
        digest.update(f"\0{package}/{name}\0".encode())
        digest.update(resources.files(package).joinpath(name).read_bytes())
    return digest.hexdigest()


def kernel_signature(activation_signature: str, order: int, sympy_version: str) -> str:
    """The signature of one kernel module: generator, SymPy series and output-shaping options."""
    text = "\n".join([codegen_hash(), sympy_version, str(order), activation_signature])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
