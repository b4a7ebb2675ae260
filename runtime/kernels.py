"""Finding, verifying and loading the generated kernel modules.

In: an activation (built-in name or SymPy expression) and an order K. Out: the imported kernel
module (`taylor_derivatives` and its array form `taylor_derivatives_vector`,
`compose_directional`, `compose_multivariate`, ORDER, VALENCES).

- Shipped kernels (orders 1-4, built-in activations) are imported from feynmlp.generated after
  checking the file's SHA-256 against generated/manifest.json and the manifest's codegen hash
  against the generator sources installed beside it: an edited or stale kernel is refused with
  the command that refreshes it, never imported.
- Anything else is generated on demand into the kernel cache (`cache_folder()`:
  FEYNMLP_CACHE_DIR/kernels, else the platform's user cache folder; a private temporary folder,
  with a warning, if that is not writable). An entry is `<stem>.py` plus `<stem>.sha256`, the
  stem ending in the kernel's generator signature. Under a per-entry file lock, a missing or
  damaged entry (bytes not matching the sidecar, another signature) is removed and generated
  afresh, atomically; a failed generation leaves neither file. The verified bytes themselves
  are executed, so no unverified byte (or .pyc) is ever run. Only this path imports SymPy.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import numbers
import os
import stat
import sys
import tempfile
import threading
import time
import types
import warnings
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import files, threads, workspace
from .activation_names import BUILTIN_ACTIVATIONS, canonical_name, check_order_supported
from .errors import FeynmlpError, StaleKernelError
from .kernel_signature import codegen_hash, file_digest, kernel_signature
from .once import once

log = logging.getLogger("feynmlp")

SHIPPED_ORDERS = (1, 2, 3, 4)
# Above this order the vertex sums (p(K) partitions: 231 at K = 16) make the generated module
# and Numba's compile time grow past anything useful, and a multivariate expansion in even a
# few variables no longer fits in memory; directional mode is the tool for high orders.
MAX_ORDER = 16
_CACHE_PACKAGE = "feynmlp_kernel_cache"
# Subfolder of the kernel cache holding the (empty, persistent) per-entry lock files.
LOCK_FOLDER = ".locks"
# How long a process waits for another one generating the same kernel before giving up.
LOCK_TIMEOUT_S = 900
# Symbolic work (SymPy, Jinja2) runs in one thread of the process at a time: SymPy's caches and
# assumptions are not made for concurrent use, and the work holds the GIL, so nothing is lost.
_SYMBOLIC = threading.RLock()


def validate_order(order) -> int:
    """The order as an int in 1..MAX_ORDER, or a FeynmlpError naming the value."""
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        raise FeynmlpError(f"order must be an integer, got {order!r}")
    order = int(order)
    if order < 1:
        raise FeynmlpError(f"order must be at least 1, got {order}")
    if order > MAX_ORDER:
        raise FeynmlpError(
            f"order {order} is above the largest supported order {MAX_ORDER}: the vertex sums grow "
            f"like the number of integer partitions of the order and the multivariate coefficients "
            f"like n^K/K!; for very high orders along one direction use feynmlp.directional")
    return order


def is_shipped(name: str, order: int) -> bool:
    """True if generated/ ships the kernel of built-in `name` at `order` (ReLU-likes: order 1)."""
    return order in SHIPPED_ORDERS and (name in BUILTIN_ACTIVATIONS or order == 1)


def is_sympy_instance(obj, name: str, module: str) -> bool:
    """True if obj is an instance of SymPy's class `module`.`name`, without importing SymPy.

    Reads the object's own class hierarchy and never the sympy module: another thread may be
    importing SymPy at this moment, and a partly initialised module lacks its classes.
    """
    return any(cls.__name__ == name and cls.__module__ == module for cls in type(obj).__mro__)


def is_sympy_expression(obj) -> bool:
    """True for a SymPy expression (see is_sympy_instance)."""
    return is_sympy_instance(obj, "Basic", "sympy.core.basic")


def kernel_module(activation, order: int):
    """The kernel module for `activation` (name or SymPy expression) at expansion order `order`.

    Raises:
        FeynmlpError: a bad order, or no usable cache folder; UnsupportedActivationError: an
            unknown activation or one without derivatives of this order; StaleKernelError: a
            shipped kernel that was edited or does not match the installed generator.
    """
    order = validate_order(order)
    if is_sympy_expression(activation):
        return _cached_kernel(activation, order, cache_folder())
    name = canonical_name(activation)
    check_order_supported(name, order)
    if is_shipped(name, order):
        return _shipped_kernel(name, order)
    return _cached_kernel(name, order, cache_folder())


class Kernels(NamedTuple):
    """The kernel modules one expansion uses, per hidden layer: `compose` for the vertex layers
    of the series pushed forward (None below order 2, where the vertex layer is plain NumPy),
    `derivatives` for the activation's derivatives s^(m)(z0)/m! (of a higher order than
    `compose` when the top orders come from a contraction), and `output` for the output
    activation (None if linear)."""

    compose: list
    derivatives: list
    output: object


def resolve_kernels(hidden_activations, output_activation, compose_order: int,
                    derivative_order: int | None = None) -> Kernels:
    """Every kernel module an expansion needs, generated or loaded in the calling thread.

    Called before the points are split into threads, so that no worker thread ever generates,
    verifies or imports a kernel: on a fresh cache that means importing SymPy and Jinja2 and
    writing files, which must happen once, not once per thread and never beside a thread
    that inspects the half-imported modules.
    """
    derivative_order = compose_order if derivative_order is None else derivative_order
    derivatives = [kernel_module(activation, derivative_order) for activation in hidden_activations]
    if derivative_order == compose_order:
        compose = derivatives
    else:
        compose = [kernel_module(activation, compose_order) if compose_order > 1 else None
                   for activation in hidden_activations]
    output = None if output_activation is None else kernel_module(output_activation, max(1, compose_order))
    return Kernels(compose, derivatives, output)


# ----------------------------------------------------------------------------- shipped kernels

@once
def _manifest() -> dict:
    try:
        return json.loads(resources.files("feynmlp.generated").joinpath("manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise StaleKernelError(
            f"generated/manifest.json is missing or unreadable ({exc}); refresh the shipped kernels "
            "with: feynmlp generate-kernels --all") from exc


@once
def _shipped_kernel(name: str, order: int):
    filename = f"{name}_order{order}.py"
    manifest = _manifest()
    refresh = f"feynmlp generate-kernels --order {order} --activation {name}"
    if manifest.get("codegen_hash") != codegen_hash():
        raise StaleKernelError(
            "the shipped kernels in generated/ were produced by a different version of the generator "
            f"than the one installed (codegen hash {str(manifest.get('codegen_hash'))[:12]} != "
            f"{codegen_hash()[:12]}); refresh them with: feynmlp generate-kernels --all")
    return import_verified(filename, manifest, "manifest.json", refresh)


def import_verified(filename: str, manifest: dict, manifest_name: str, refresh: str):
    """Import the shipped module generated/`filename` if its bytes match its SHA-256 in the
    manifest (read from generated/`manifest_name`); StaleKernelError naming `refresh` if not."""
    entry = manifest.get("kernels", {}).get(filename)
    if entry is None:
        raise StaleKernelError(f"kernel {filename} is not listed in generated/{manifest_name}; create it with: "
                               f"{refresh}")
    try:
        data = resources.files("feynmlp.generated").joinpath(filename).read_bytes()
    except OSError as exc:
        raise StaleKernelError(f"kernel file {filename} is missing ({exc}); recreate it with: {refresh}") from exc
    if file_digest(data) != entry["sha256"]:
        raise StaleKernelError(
            f"kernel file {filename} does not match its SHA-256 in generated/{manifest_name}: it was edited or "
            f"damaged, and generated files must not be edited; restore it with: {refresh}")
    return importlib.import_module(f"feynmlp.generated.{filename[:-3]}")


# ----------------------------------------------------------------------------- kernel cache

def cache_folder() -> Path:
    """The kernel cache folder, created if need be.

    FEYNMLP_CACHE_DIR/kernels if that variable is set, else <user cache folder>/feynmlp/kernels.
    If that folder cannot be created or written, or every user may write to it (anyone could
    plant a kernel there), a private temporary folder is used instead with a RuntimeWarning
    (once per process and folder). The variable is read on every call, so changing it takes
    effect at once.

    Raises:
        FeynmlpError: no usable folder at all (the temporary one failed too).
    """
    configured = os.environ.get("FEYNMLP_CACHE_DIR")
    if configured:
        base = Path(configured).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_cache_dir("feynmlp"))
    return _usable_cache_folder(str(base / "kernels"))


def cached_kernel_path(activation, order: int) -> Path:
    """Where the kernel cache keeps the module of (activation, order) (it may not exist yet).

    Beside it lies `<same stem>.sha256`, the SHA-256 of its bytes. The stem is
    `<activation>_order<K>_<first 16 hex digits of the generator signature>`, so kernels of
    another generator or SymPy version never share a file. Imports SymPy.
    """
    validate_order(order)
    if not is_sympy_expression(activation):
        activation = canonical_name(activation)
    _, _, stem = _cache_entry(activation, int(order))
    return cache_folder() / f"{stem}.py"


@once
def _usable_cache_folder(candidate: str) -> Path:
    folder = Path(candidate)
    problem = _folder_problem(folder)
    if problem is None:
        return folder
    fallback = _private_temporary_folder(folder)
    warnings.warn(f"kernel cache folder {candidate!r} {problem}; using {str(fallback)!r} instead (set "
                  "FEYNMLP_CACHE_DIR to a writable folder of your own to keep kernels between sessions)",
                  RuntimeWarning, stacklevel=4)
    return fallback


def _folder_problem(folder: Path) -> str | None:
    """None if `folder` exists (or can be created), is writable and is not writable by everyone,
    and no folder above it lets every user rename or replace what it holds."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        info = folder.stat()
        if info.st_mode & stat.S_IWOTH:
            # Anyone could put a module and a matching .sha256 there before this process does.
            return "is writable by every user"
        for above in folder.resolve().parents:
            mode = above.stat().st_mode
            # Without the sticky bit (which /tmp has), anyone may rename a folder in there and
            # put one of their own, with planted kernels, in its place.
            if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
                return f"lies in {str(above)!r}, which every user may write to without the sticky bit"
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    return None


def _private_temporary_folder(tried: Path) -> Path:
    """<tmp>/feynmlp-<uid>/kernels if that is this user's own, else a fresh mkdtemp folder."""
    base = Path(tempfile.gettempdir()) / f"feynmlp-{_user_tag()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(base)
        # A shared /tmp lets anyone create this name first (or as a symlink): use it only if it
        # is a real folder of this user that nobody else may write to.
        owned = not hasattr(os, "getuid") or info.st_uid == os.getuid()
        if stat.S_ISDIR(info.st_mode) and owned and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            folder = base / "kernels"
            if _folder_problem(folder) is None:
                return folder
    except OSError:
        pass
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"feynmlp-{_user_tag()}-")) / "kernels"
        folder.mkdir()
        return folder
    except OSError as exc:
        raise FeynmlpError(
            f"no writable folder for generated kernels: {str(tried)!r} is not usable and neither is the "
            f"temporary folder {tempfile.gettempdir()!r} ({exc.strerror or exc}); set FEYNMLP_CACHE_DIR to a "
            "writable folder") from exc


def _user_tag() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # pragma: no cover - Windows
        return os.environ.get("USERNAME", "user")


def _cache_entry(activation, order: int):
    """(spec, signature, file stem) of one cached kernel; the signature keys the cache."""
    with _SYMBOLIC:
        from .codegen import activations, generate  # the only runtime path that imports SymPy

        spec = activations.get_activation(activation)
        signature = kernel_signature(spec.signature(), order, generate.sympy_series())
    return spec, signature, f"{spec.name}_order{order}_{signature[:16]}"


@once
def _cached_kernel(activation, order: int, folder: Path):
    from filelock import FileLock, Timeout

    spec, signature, stem = _cache_entry(activation, order)
    path, sidecar = folder / f"{stem}.py", folder / f"{stem}.sha256"
    locks = folder / LOCK_FOLDER
    try:
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeynmlpError(f"cannot create the lock folder {str(locks)!r} of the kernel cache "
                           f"({exc.strerror or exc}); set FEYNMLP_CACHE_DIR to a writable folder") from exc
    # One lock per entry: of several processes missing the same kernel, one generates it and
    # the others wait, then find it valid. The lock files stay (empty) in their own folder:
    # removing a lock file that another process is waiting on would break the exclusion.
    lock = FileLock(str(locks / f"{stem}.lock"), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            data = _valid_entry(path, sidecar, signature)
            if data is None:
                data = _generate_entry(spec, order, signature, path, sidecar)
    except Timeout:
        raise FeynmlpError(
            f"waited {LOCK_TIMEOUT_S} s for another process to finish generating {path.name} (lock "
            f"{lock.lock_file}); if no other feynmlp process is running, delete that lock file") from None
    return _execute(stem, path, data, order, signature)


def _valid_entry(path: Path, sidecar: Path, signature: str) -> bytes | None:
    """The bytes of a cached kernel if they match their sidecar and signature, else None.

    A damaged entry (truncated, edited, missing or wrong sidecar, another generator's
    signature) is removed, never imported.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    else:
        try:
            expected = sidecar.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            expected = None
        if expected is None:
            problem = f"has no readable SHA-256 sidecar {sidecar.name}"
        elif file_digest(data) != expected:
            problem = "does not match its SHA-256 sidecar (it was truncated, edited or damaged)"
        elif _signature_line(signature) not in data:
            problem = f"does not carry the generator signature {signature} its name promises"
        else:
            return data
    log.warning("feynmlp: cached kernel %s %s; regenerating it", path, problem)
    _discard(path, sidecar)
    return None


def _signature_line(signature: str) -> bytes:
    # The line templates/kernel_module.py.jinja writes (SIGNATURE = "{{ signature }}").
    return f'\nSIGNATURE = "{signature}"\n'.encode()


def _generate_entry(spec, order: int, signature: str, path: Path, sidecar: Path) -> bytes:
    """Render the kernel and install it with its sidecar; on any failure leave neither behind."""
    from .codegen import generate

    started = time.perf_counter()
    log.info("feynmlp: generating kernel %s (order %d) into %s", spec.name, order, path.parent)
    with _SYMBOLIC:
        kernel = generate.render_kernel(spec, order)  # a failure here has written nothing
    if kernel.signature != signature:  # pragma: no cover - the two are computed the same way
        raise StaleKernelError(f"generated kernel {path.name} has signature {kernel.signature}, expected "
                               f"{signature}; the generator is inconsistent")
    data = kernel.text.encode("utf-8")
    try:
        files.atomic_write(path, data)
        files.atomic_write(sidecar, file_digest(data) + "\n")
    except BaseException:
        _discard(path, sidecar)
        raise
    log.info("feynmlp: generated %s in %.2f s", path.name, time.perf_counter() - started)
    return data


def _discard(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("feynmlp: could not remove %s (%s)", path, exc)


def _execute(stem: str, path: Path, data: bytes, order: int, signature: str):
    """Run the verified bytes as a module.

    The bytes checked are the bytes run: the file is not read again (it could change in
    between) and no .pyc is written or read (a .pyc is trusted on its timestamp alone). The
    code object carries the file's path, so Numba's on-disk cache, keyed on that file, works.
    """
    name = f"{_CACHE_PACKAGE}.{stem}"
    code = compile(data, str(path), "exec", dont_inherit=True)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
        if getattr(module, "ORDER", None) != order or getattr(module, "SIGNATURE", None) != signature:
            raise StaleKernelError(f"cached kernel {path} is not the kernel of order {order} with "
                                   f"signature {signature}")
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


# ----------------------------------------------------------------------------- first-call timing

_compiled: set = set()


def call_kernel(module, function_name: str, *args, blocks: int | None = None):
    """Call a kernel, logging how long the first call per (kernel, dtype) took (compile or load).

    With blocks=N the kernel takes two more arguments, a range lo, hi of its N rows, and runs
    in blocks of rows in threads (feynmlp.threads); a first call compiles on one row first.
    """
    function = getattr(module, function_name)
    key = (module.__name__, function_name, args[0].dtype.str)
    if key in _compiled:
        return function(*args) if blocks is None else threads.run_blocks(function, args, blocks)
    name = module.__name__.rsplit(".", 1)[-1]
    started = time.perf_counter()
    log.info("feynmlp: preparing %s.%s for %s (Numba compiles it, or loads it from its cache)", name,
             function_name, args[0].dtype)
    result = function(*args) if blocks is None else function(*args, 0, min(1, blocks))
    stats = getattr(function, "stats", None)
    source = "from Numba's cache" if stats is not None and stats.cache_hits else "compiled"
    log.info("feynmlp: %s.%s ready in %.2f s (%s)", name, function_name, time.perf_counter() - started, source)
    _compiled.add(key)
    if blocks is not None:
        threads.run_blocks(function, args, blocks, start=min(1, blocks))
    return result


# Below this many values the array form's NumPy calls (about 1 us each) cost more than the
# element loop saves (3-14 ns per value): one point through a 64-wide layer stays in the loop.
VECTOR_MIN_VALUES = 1024
# Float64 arrays as long as z that the array form needs, at most: the work rows of the built-in
# activations (VECTOR_ARRAYS, at most 2) and the float64 copy of a float32 z.
VECTOR_FORM_ARRAYS = 3


def activation_derivatives(module, z, out) -> None:
    """out[i, m] = s^(m)(z[i]) / m! for m = 0..ORDER (z 1-D): the kernel module's array form
    (`taylor_derivatives_vector`, NumPy ufuncs for the transcendental functions, in work rows
    this thread keeps) for long z, its element loop (`taylor_derivatives`) for short z; the two
    agree to rounding."""
    if z.shape[0] < VECTOR_MIN_VALUES:
        call_kernel(module, "taylor_derivatives", z, out)
        return
    work = workspace.array("activation derivatives", (module.VECTOR_ARRAYS, z.shape[0]), np.float64)
    call_kernel(module, "taylor_derivatives_vector", z, out, work)


def raw_derivatives(activation, order: int):
    """s^(m)(z) for m = 0..m_max (not divided by m!), from the generated kernel of `order`."""
    module = kernel_module(activation, order)

    def derivatives(z, m_max):
        z = np.asarray(z, dtype=np.float64)
        flat = np.ascontiguousarray(z.reshape(-1))
        out = np.empty((flat.size, order + 1))
        module.taylor_derivatives(flat, out)
        factorials = np.array([math.factorial(m) for m in range(order + 1)], dtype=np.float64)
        raw = (out * factorials)[:, : m_max + 1].T
        return raw.reshape((m_max + 1,) + z.shape)

    return derivatives
