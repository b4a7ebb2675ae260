"""Writing files so that nothing is ever left half-written.

In: a path and the bytes or text to put there. Out: the file, replaced atomically (a temporary
file in the same folder, flushed, then os.replace), or an untouched destination and no
temporary left behind if anything fails. `write_if_changed` skips identical content, because
Numba's cache keys on modification time and size: rewriting an identical kernel would force
a recompile for nothing.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import FeynmlpError


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` atomically; raise FeynmlpError naming the path if impossible."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    folder = path.parent if str(path.parent) else Path(".")
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False) as handle:
            tmp_name = handle.name
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        raise FeynmlpError(
            f"cannot write {str(path)!r}: {exc.strerror or exc} (choose a writable folder)") from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return path


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
