"""Writing files so that nothing is ever left half-written.

In: a path, and the bytes or text to put there (or a block that writes to a binary handle).
Out: the file, replaced atomically (a temporary file in the same folder, flushed and synced,
then os.replace), or an untouched destination and no temporary left behind if anything fails,
a full disk or an interrupt included. `write_if_changed` skips identical content, because
Numba's cache keys on modification time and size: rewriting an identical kernel would force a
recompile for nothing. Every writer of feynmlp (kernels, model files, data sets, documents)
goes through `atomic_writer`.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import FeynmlpError


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike):
    """Yield a binary handle; on normal exit its content replaces `path` atomically.

    On any exception the temporary file is removed and the exception propagates unchanged
    (callers turn OSError into their own error with advice). The final file gets the
    permissions a plain open() would give (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` atomically; raise FeynmlpError naming the path if impossible."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with atomic_writer(path) as handle:
            handle.write(payload)
    except OSError as exc:
        raise FeynmlpError(
            f"cannot write {str(path)!r}: {exc.strerror or exc} (choose a writable folder)") from exc
    return Path(path)


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Atomically write `text` unless the file already holds exactly it; True if written."""
    path = Path(path)
    try:
        if path.read_bytes() == text.encode("utf-8"):
            return False
    except OSError:
        pass
    atomic_write(path, text)
    return True
