"""Writing output files: atomically where the path is a file, in place where it is a stream.

In: a path, and the bytes or text to put there (or a block that writes to a binary handle).
Out: what happens depends on what the path names; `output_target` decides, once, for every
writer of feynmlp (kernels, model files, data sets, documents, reports all go through
`atomic_writer`):
- nothing yet, or a regular file: the data go to a temporary file in the same folder, flushed
  and synced, then os.replace; on any failure (a full disk or an interrupt included) the
  destination is untouched and no temporary is left behind. The new file gets the permissions a
  plain open() would give (0666 less the umask), not mkstemp's 0600.
- a symbolic link: the same, for the file at the end of the whole chain of links and in that
  file's folder, so the link stays a link and its target is what changes; a dangling link
  creates the file it names. Replacing the link itself would leave its target stale.
- a FIFO or a character device (a terminal, /dev/null, /dev/stdout), and "-" (standard
  output): written in place, as a shell redirection writes them. A rename would replace the
  device or FIFO with a regular file, and a reader waiting on it would never see the data.
  Bytes already sent cannot be taken back if the writer fails midway.
- a folder, a socket, a block device (a disk), a loop of links: refused with a FeynmlpError.
`check_output_file` and `check_output_folder` make the same decision and probe the folder with
a real temporary file (os.access says yes to root even where nothing can be created, as in
/proc), so that a command fails on a bad --out before its computation, with the real cause.
`write_if_changed` skips identical content, because Numba's cache keys on modification time and
size: rewriting an identical kernel would force a recompile for nothing.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from .errors import FeynmlpError

STDOUT = "-"


class OutputTarget(NamedTuple):
    """Where an output path leads. kind: "file" (replaced atomically), "stream" (a FIFO or a
    character device, written in place) or "stdout"; path: the file at the end of any chain of
    symbolic links (the path itself otherwise), or "-" for standard output."""
    kind: str
    path: str


# The kinds refused, with the words the error uses for each.
_REFUSED = ((stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISBLK, "a block device (a disk), which feynmlp never writes to"))


def output_kind(mode: int) -> str | None:
    """The kind of output ("file" or "stream") for an os.stat mode; None where it is refused."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return "stream"
    return None


def output_target(path: str | os.PathLike) -> OutputTarget:
    """Decide how `path` is written (see the module docstring); FeynmlpError if it cannot be."""
    name = os.fspath(path)
    if name == STDOUT:
        return OutputTarget("stdout", STDOUT)
    resolved = os.path.realpath(name) if os.path.islink(name) else name
    shown = repr(name) if resolved == name else f"{name!r} (a symbolic link to {resolved!r})"
    try:
        mode = os.stat(resolved).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FeynmlpError(
                f"cannot write {name!r}: it is a loop of symbolic links (or a chain of more than "
                "40); point the link at a file or give another path") from None
        # Nothing there yet (or a folder that cannot be read): a new file, whose folder the
        # temporary file's creation checks.
        return OutputTarget("file", resolved)
    kind = output_kind(mode)
    if kind is None:
        what = next((words for test, words in _REFUSED if test(mode)), "not a regular file")
        raise FeynmlpError(f"cannot write {shown}: it is {what}; give the path of a file to write")
    return OutputTarget(kind, resolved)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike):
    """Yield a binary handle whose content ends up at `path` (see the module docstring).

    A file is replaced atomically once the block exits normally; on any exception the temporary
    file is removed and the exception propagates unchanged (callers turn OSError into their own
    error with advice). A stream or standard output gets the bytes as they are written. Paths
    that cannot be written (a folder, a socket, ...) raise FeynmlpError before anything is
    written.
    """
    target = output_target(path)
    if target.kind == "stdout":
        writer = _stdout_writer()
    elif target.kind == "stream":
        writer = _stream_writer(target.path)
    else:
        writer = _replacing_writer(target.path)
    with writer as handle:
        yield handle


@contextlib.contextmanager
def _replacing_writer(path: str):
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


@contextlib.contextmanager
def _stream_writer(path: str):
    # No O_CREAT: a device or FIFO that vanished since output_target looked is an error, not
    # a reason to create a regular file in /dev. No O_TRUNC needed: streams have no length.
    # Opening a FIFO blocks until a reader opens it, as a shell redirection does.
    descriptor = os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    mode = os.fstat(descriptor).st_mode
    if output_kind(mode) != "stream":
        os.close(descriptor)
        raise FeynmlpError(f"cannot write {path!r}: it stopped being a FIFO or device while it was "
                           "being opened; try again")
    with os.fdopen(descriptor, "wb") as handle:
        yield handle
        handle.flush()


@contextlib.contextmanager
def _stdout_writer():
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        raise FeynmlpError("cannot write '-': standard output is a text-only stream here; give the "
                           "path of a file to write")
    stream.flush()  # text printed before must come first
    yield buffer
    buffer.flush()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` with `atomic_writer`; raise FeynmlpError naming the path if impossible."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with atomic_writer(path) as handle:
            handle.write(payload)
    except OSError as exc:
        raise FeynmlpError(
            f"cannot write {str(path)!r}: {exc.strerror or exc} (choose a writable folder)") from exc
    return Path(path)


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write `text` with `atomic_write` unless the file already holds exactly it; True if written.

    Only a regular file is read for the comparison: reading a FIFO would wait for a writer.
    """
    path = Path(path)
    if output_target(path).kind == "file":
        try:
            if path.read_bytes() == text.encode("utf-8"):
                return False
        except OSError:
            pass
    atomic_write(path, text)
    return True


# ----------------------------------------------------------------------------- checks before work

def describe(path: str) -> str:
    """What `path` is, in words, for error messages ("a regular file", "a FIFO", ...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a loop of symbolic links"
        return "a symbolic link to a missing path" if os.path.islink(path) else "missing"
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a regular file"),
                        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def _creation_refused(exc: OSError) -> str:
    """Why nothing can be created in an existing folder, from the OSError of an attempt."""
    if exc.errno == errno.ENOENT:
        # /proc and similar file systems answer "No such file or directory" for a folder
        # that plainly exists; say what is really going on.
        return "it exists, but its file system does not allow new files, as with /proc and /sys"
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if exc.errno == errno.ENOTDIR:
        return "it is not a folder"
    return exc.strerror or str(exc)


def _nearest_existing(path: str) -> str:
    """`path` or its nearest ancestor that exists (as anything, a dangling link included)."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_folder_accepts_files(folder: str, advice: str) -> None:
    """FeynmlpError (ending with `advice`) unless a new file can be created in `folder`."""
    if not os.path.isdir(folder):
        existing = _nearest_existing(folder)
        if os.path.lexists(existing) and not os.path.isdir(existing):
            where = "that path" if existing == folder else repr(existing)
            raise FeynmlpError(f"the output folder {folder!r} does not exist: {where} is "
                               f"{describe(existing)}, not a folder; {advice}")
        raise FeynmlpError(f"the output folder {folder!r} does not exist; create it first "
                           f"(mkdir -p) or {advice}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FeynmlpError(f"the output folder {folder!r} is not writable; {advice}")
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".feynmlp-probe-", suffix=".tmp")
    except OSError as exc:
        raise FeynmlpError(f"cannot write to the output folder {folder!r} "
                           f"({_creation_refused(exc)}); {advice}") from None
    os.close(descriptor)
    os.remove(probe)


def check_output_file(path: str | os.PathLike, advice: str = "choose another output path") -> OutputTarget:
    """`output_target(path)`, after checking that a file there can really be written.

    For a file (or a link to one) the folder that will hold it must exist and accept a new file
    (probed); streams and standard output need no check. Raises FeynmlpError ending with
    `advice` otherwise; writes nothing.
    """
    target = output_target(path)
    if target.kind == "file":
        check_folder_accepts_files(os.path.dirname(os.path.abspath(target.path)), advice)
    return target


def check_output_folder(path: str | os.PathLike, advice: str = "choose another output folder") -> str:
    """The absolute path of the output folder `path`, after checking that it is a folder that
    accepts new files, or can be created as one (probed with a temporary folder beside it, which
    is removed). Creates nothing; raises FeynmlpError ending with `advice` otherwise."""
    name = os.fspath(path)
    folder = os.path.abspath(name)
    if os.path.isdir(folder):
        check_folder_accepts_files(folder, advice)
        return folder
    if os.path.lexists(folder):
        raise FeynmlpError(f"the output folder {name!r} is {describe(folder)}, not a folder; give a "
                           f"folder (it is created if missing) or {advice}")
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise FeynmlpError(f"cannot create the output folder {name!r}: {existing!r} is "
                           f"{describe(existing)}, not a folder; {advice}")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".feynmlp-probe-"))
    except OSError as exc:
        raise FeynmlpError(f"cannot create the output folder {name!r} in {existing!r} "
                           f"({_creation_refused(exc)}); {advice}") from None
    return folder
