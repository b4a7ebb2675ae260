"""Finding, verifying and loading the generated kernel modules.

In: an activation (built-in name or SymPy expression) and an order K. Out: the imported kernel
module (`taylor_derivatives`, `compose_directional`, `compose_multivariate`, ORDER, VALENCES).

- Shipped kernels (orders 1-4, built-in activations) are imported from feynmlp.generated after
  checking the file's SHA-256 against generated/manifest.json and the manifest's codegen hash
  against the generator sources installed beside it: an edited or stale kernel is refused with
  the command that refreshes it, never imported.
- Anything else is generated on demand into the kernel cache (FEYNMLP_CACHE_DIR, else the
  platform's user cache folder; a temporary folder, with a warning, if that is not writable),
  under a per-file lock, atomically, with a SHA-256 sidecar. A cached file whose content does
  not match its sidecar is regenerated, never imported. Only this path imports SymPy.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from importlib import resources
from pathlib import Path

from .activation_names import BUILTIN_ACTIVATIONS, canonical_name, check_order_supported
from .errors import FeynmlpError, StaleKernelError
from .kernel_signature import codegen_hash, file_digest

log = logging.getLogger("feynmlp")

SHIPPED_ORDERS = (1, 2, 3, 4)
# Above this order the vertex sums (p(K) partitions: 231 at K = 16) make the generated module
# and Numba's compile time grow past anything useful, and a multivariate expansion in even a
# few variables no longer fits in memory; directional mode is the tool for high orders.
MAX_ORDER = 16
_CACHE_PACKAGE = "feynmlp_kernel_cache"


def validate_order(order) -> int:
    """The order as an int in 1..MAX_ORDER, or a FeynmlpError naming the value."""
    if isinstance(order, bool) or not isinstance(order, int):
        raise FeynmlpError(f"order must be an integer, got {order!r}")
    if order < 1:
        raise FeynmlpError(f"order must be at least 1, got {order}")
    if order > MAX_ORDER:
        raise FeynmlpError(
            f"order {order} is above the largest supported order {MAX_ORDER}: the vertex sums grow "
            f"like the number of integer partitions of the order and the multivariate coefficients "
            f"like n^K/K!; for very high orders along one direction use feynmlp.directional")
    return order


def is_sympy_expression(obj) -> bool:
    """True for a SymPy expression, without importing SymPy when the caller has not."""
    sympy = sys.modules.get("sympy")
    return sympy is not None and isinstance(obj, sympy.Basic)


def kernel_module(activation, order: int):
    """The kernel module for `activation` (name or SymPy expression) at expansion order `order`."""
    validate_order(order)
    if is_sympy_expression(activation):
        return _cached_kernel(activation, order)
    name = canonical_name(activation)
    check_order_supported(name, order)
    if order in SHIPPED_ORDERS and (name in BUILTIN_ACTIVATIONS or order == 1):
        return _shipped_kernel(name, order)
    return _cached_kernel(name, order)


# ----------------------------------------------------------------------------- shipped kernels

@functools.lru_cache(maxsize=1)
def _manifest() -> dict:
    try:
        return json.loads(resources.files("feynmlp.generated").joinpath("manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise StaleKernelError(
            f"generated/manifest.json is missing or unreadable ({exc}); refresh the shipped kernels "
            "with: feynmlp generate-kernels --all") from exc


@functools.lru_cache(maxsize=None)
def _shipped_kernel(name: str, order: int):
    filename = f"{name}_order{order}.py"
    manifest = _manifest()
    refresh = f"feynmlp generate-kernels --order {order} --activation {name}"
    if manifest.get("codegen_hash") != codegen_hash():
        raise StaleKernelError(
            "the shipped kernels in generated/ were produced by a different version of the generator "
            f"than the one installed (codegen hash {str(manifest.get('codegen_hash'))[:12]} != "
            f"{codegen_hash()[:12]}); refresh them with: feynmlp generate-kernels --all")
    entry = manifest.get("kernels", {}).get(filename)
    if entry is None:
        raise StaleKernelError(f"kernel {filename} is not listed in generated/manifest.json; create it with: {refresh}")
    try:
        data = resources.files("feynmlp.generated").joinpath(filename).read_bytes()
    except OSError as exc:
        raise StaleKernelError(f"kernel file {filename} is missing ({exc}); recreate it with: {refresh}") from exc
    if file_digest(data) != entry["sha256"]:
        raise StaleKernelError(
            f"kernel file {filename} does not match its SHA-256 in generated/manifest.json: it was edited or "
            f"damaged, and generated files must not be edited; restore it with: {refresh}")
    return importlib.import_module(f"feynmlp.generated.{filename[:-3]}")


# ----------------------------------------------------------------------------- kernel cache

def cache_folder() -> Path:
    """The kernel cache: FEYNMLP_CACHE_DIR, else the user cache folder, else a temporary one."""
    configured = os.environ.get("FEYNMLP_CACHE_DIR")
    if configured:
        candidate = Path(configured).expanduser()
    else:
        import platformdirs

        candidate = Path(platformdirs.user_cache_dir("feynmlp"))
    folder = candidate / "kernels"
    if _writable(folder):
        return folder
    fallback = Path(tempfile.gettempdir()) / f"feynmlp-{_user_tag()}" / "kernels"
    warnings.warn(f"kernel cache folder {str(folder)!r} is not writable; using {str(fallback)!r} instead "
                  "(set FEYNMLP_CACHE_DIR to a writable folder to keep kernels between sessions)",
                  RuntimeWarning, stacklevel=3)
    if not _writable(fallback):
        raise StaleKernelError(f"no writable folder for generated kernels (tried {folder} and {fallback}); "
                               "set FEYNMLP_CACHE_DIR to a writable folder")
    return fallback


def _user_tag() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # pragma: no cover - Windows
        return os.environ.get("USERNAME", "user")


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def _cache_key(description: str, order: int) -> str:
    return hashlib.sha256(f"{codegen_hash()}\n{description}\n{order}".encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _cached_kernel(activation, order: int):
    from filelock import FileLock

    from .codegen import generate  # the only runtime path that imports SymPy
    from .files import atomic_write

    validate_order(order)
    if is_sympy_expression(activation):
        from .codegen.activations import custom_activation

        spec = custom_activation(activation)
        import sympy

        description = sympy.srepr(spec.definition)
    else:
        from .codegen.activations import get_activation

        spec = get_activation(activation)
        description = spec.name
    folder = cache_folder()
    stem = f"{spec.name}_order{order}_{_cache_key(description, order)}"
    path, sidecar = folder / f"{stem}.py", folder / f"{stem}.sha256"
    with FileLock(str(folder / f"{stem}.lock")):
        if not _cache_entry_valid(path, sidecar):
            started = time.perf_counter()
            log.info("feynmlp: generating kernel %s (order %d) into %s", spec.name, order, folder)
            kernel = generate.render_kernel(spec, order)
            data = kernel.text.encode("utf-8")
            atomic_write(path, data)
            atomic_write(sidecar, file_digest(data) + "\n")
            log.info("feynmlp: generated %s in %.2f s", path.name, time.perf_counter() - started)
        module_name = f"{_CACHE_PACKAGE}.{stem}"
        spec_ = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec_)
        sys.modules[module_name] = module
        spec_.loader.exec_module(module)
    return module


def _cache_entry_valid(path: Path, sidecar: Path) -> bool:
    try:
        expected = sidecar.read_text().strip()
        data = path.read_bytes()
    except OSError:
        return False
    if file_digest(data) == expected:
        return True
    log.warning("feynmlp: cached kernel %s does not match its SHA-256; regenerating it", path)
    return False


# ----------------------------------------------------------------------------- first-call timing

_compiled: set = set()


def call_kernel(module, function_name: str, *args):
    """Call a kernel, logging how long the first call per (kernel, dtype) took (compile or load)."""
    function = getattr(module, function_name)
    key = (module.__name__, function_name, args[0].dtype.str)
    if key in _compiled:
        return function(*args)
    started = time.perf_counter()
    log.info("feynmlp: preparing %s.%s for %s (Numba compiles it, or loads it from its cache)",
             module.__name__.rsplit(".", 1)[-1], function_name, args[0].dtype)
    result = function(*args)
    stats = getattr(function, "stats", None)
    source = "from Numba's cache" if stats is not None and stats.cache_hits else "compiled"
    log.info("feynmlp: %s.%s ready in %.2f s (%s)", module.__name__.rsplit(".", 1)[-1], function_name,
             time.perf_counter() - started, source)
    _compiled.add(key)
    return result
