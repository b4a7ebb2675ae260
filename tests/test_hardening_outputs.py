"""Where output paths lead: links, FIFOs, devices, standard output and refused kinds, and the
command-line errors of a bad --out.

Every writer of feynmlp (feynmlp.files.atomic_writer behind `rules --out`, `feynmlp.save`,
`born dataset`, `born reproduce`, the kernel cache) must write through a symbolic link to the
file at the end of its chain, write FIFOs and character devices in place, write "-" to standard
output, and refuse folders, sockets, block devices and loops of links with one line. The
references are the plain content each writer produces for a regular file (or the arrays it was
given), read back through the link or off the FIFO's reading end.

No real device is touched: a FIFO in a temporary folder stands in for a character device, and
os.stat is patched where a character or block device has to be seen.
"""
from __future__ import annotations

import importlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import feynmlp
from feynmlp import files
from feynmlp.born import load_dataset, make_dataset
from feynmlp.cli import main
from feynmlp.codegen.latex_rules import rules_text
from feynmlp.errors import FeynmlpError, ModelFileError
from feynmlp.mlp import MLP

FEYNMLP = Path(sys.executable).with_name("feynmlp")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- helpers ------------------------------------------------------------------------------------

class FifoReader:
    """Read a FIFO to its end in a thread, as `cat fifo` would.

    If nothing opens the FIFO for writing within `timeout`, the reader (and anything blocked
    on opening it for reading) is released by a brief empty write, so a writer that fails to
    write the FIFO makes the test fail instead of hang.
    """

    def __init__(self, path, timeout=20.0):
        self.path, self.data, self.timeout = os.fspath(path), None, timeout
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        self.watchdog = threading.Thread(target=self._release, daemon=True)
        self.watchdog.start()

    def _read(self):
        with open(self.path, "rb") as handle:
            self.data = handle.read()
        self.done.set()

    def _release(self):
        if self.done.wait(self.timeout):
            return
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    def result(self) -> bytes:
        self.thread.join(self.timeout + 5)
        assert not self.thread.is_alive(), "nothing was written to the FIFO"
        return self.data


def tree(folder) -> list[str]:
    """Every path under `folder` (links not followed), relative, sorted."""
    out = []
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            out.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(out)


def one_error_line(capsys, code) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def fake_stat(monkeypatch, path, kind):
    """Make os.stat report `path` as a file of type `kind` (stat.S_IFCHR, ...), leaving the
    rest of its stat result and every other path alone."""
    real = os.stat
    target = os.path.realpath(path)

    def patched(p, *args, **kwargs):
        result = real(p, *args, **kwargs)
        if isinstance(p, (str, bytes, os.PathLike)) and os.path.realpath(p) == target:
            fields = list(result)
            fields[0] = kind | 0o666
            return os.stat_result(fields)
        return result
    monkeypatch.setattr(os, "stat", patched)


def small_mlp():
    rng = np.random.default_rng(1)
    return MLP([rng.normal(size=(5, 3)), rng.normal(size=(2, 5))], [rng.normal(size=5), rng.normal(size=2)],
               activation="tanh")


def assert_same_mlp(loaded, original):
    assert len(loaded.weights) == len(original.weights)
    for a, b in zip(loaded.weights + loaded.biases, original.weights + original.biases):
        np.testing.assert_array_equal(a, b)


def umask() -> int:
    value = os.umask(0)
    os.umask(value)
    return value


# -- the writer: links ---------------------------------------------------------------------------

def test_link_is_written_through_atomically_in_the_targets_folder(tmp_path, monkeypatch):
    links, data = tmp_path / "links", tmp_path / "data"
    links.mkdir(), data.mkdir()
    (data / "real.txt").write_text("old")
    os.symlink("../data/real.txt", links / "out.txt")  # relative, as ln -s makes them
    replaced = []
    real_replace = os.replace

    def recording_replace(src, dst):
        replaced.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", recording_replace)
    inode = (data / "real.txt").stat().st_ino

    files.atomic_write(links / "out.txt", "new content\n")

    assert os.path.islink(links / "out.txt")
    assert os.readlink(links / "out.txt") == "../data/real.txt"
    assert (data / "real.txt").read_text() == "new content\n"
    assert (data / "real.txt").stat().st_ino != inode  # replaced, not rewritten in place
    assert len(replaced) == 1
    src, dst = replaced[0]
    assert os.path.dirname(src) == str(data) and dst == str(data / "real.txt")
    assert stat.S_IMODE((data / "real.txt").stat().st_mode) == 0o666 & ~umask()
    assert tree(tmp_path) == ["data", "data/real.txt", "links", "links/out.txt"]


def test_chain_of_links_is_resolved_to_its_end(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "b" / "end.bin").write_bytes(b"old")
    os.symlink(tmp_path / "b" / "end.bin", tmp_path / "b" / "middle")
    os.symlink("../b/middle", tmp_path / "a" / "first")
    os.symlink(tmp_path / "a" / "first", tmp_path / "start")
    files.atomic_write(tmp_path / "start", bytes(range(256)))
    assert (tmp_path / "b" / "end.bin").read_bytes() == bytes(range(256))
    for link in ("start", "a/first", "b/middle"):
        assert os.path.islink(tmp_path / link), link
    assert tree(tmp_path) == ["a", "a/first", "b", "b/end.bin", "b/middle", "start"]


def test_dangling_link_creates_the_file_it_names(tmp_path):
    (tmp_path / "data").mkdir()
    os.symlink("data/new.txt", tmp_path / "out.txt")
    files.atomic_write(tmp_path / "out.txt", "hello")
    assert os.path.islink(tmp_path / "out.txt")
    assert (tmp_path / "data" / "new.txt").read_text() == "hello"
    assert not (tmp_path / "data" / "new.txt").is_symlink()
    assert tree(tmp_path) == ["data", "data/new.txt", "out.txt"]


def test_dangling_link_into_a_missing_folder_fails_and_leaves_nothing(tmp_path):
    os.symlink("missing/new.txt", tmp_path / "out.txt")
    with pytest.raises(FeynmlpError, match="out.txt"):
        files.atomic_write(tmp_path / "out.txt", "hello")
    assert tree(tmp_path) == ["out.txt"] and os.path.islink(tmp_path / "out.txt")


def test_loop_of_links_is_refused(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(FeynmlpError, match="loop of symbolic links") as info:
        files.atomic_write(tmp_path / "a", "x")
    assert str(tmp_path / "a") in str(info.value) and "\n" not in str(info.value)
    assert tree(tmp_path) == ["a", "b"]
    assert os.path.islink(tmp_path / "a") and os.path.islink(tmp_path / "b")


# -- the writer: FIFOs, character devices, standard output ---------------------------------------

def test_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    payload = bytes(range(256)) * 1000  # larger than a pipe's buffer: the reader must drain it
    reader = FifoReader(fifo)
    files.atomic_write(fifo, payload)
    assert reader.result() == payload
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert tree(tmp_path) == ["pipe"]


def test_link_to_a_fifo_writes_the_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    os.symlink("pipe", tmp_path / "link")
    reader = FifoReader(fifo)
    files.atomic_write(tmp_path / "link", "through the link")
    assert reader.result() == b"through the link"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.path.islink(tmp_path / "link")
    assert tree(tmp_path) == ["link", "pipe"]


def test_a_character_device_is_written_in_place(tmp_path, monkeypatch):
    # The FIFO stands in for the device: os.stat reports it as a character device, and the
    # data must arrive at its reading end with the FIFO (the "device") still in place.
    fifo = tmp_path / "device"
    os.mkfifo(fifo)
    fake_stat(monkeypatch, fifo, stat.S_IFCHR)
    assert stat.S_ISCHR(os.stat(fifo).st_mode)
    assert files.output_target(fifo).kind == "stream"
    reader = FifoReader(fifo)
    files.atomic_write(fifo, b"to the device")
    assert reader.result() == b"to the device"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert tree(tmp_path) == ["device"]


def test_a_vanished_device_is_not_recreated_as_a_file(tmp_path, monkeypatch):
    """A device that disappears between the check and the write is an error, never a new file
    (the device branch opens without O_CREAT)."""
    gone = tmp_path / "device"
    gone.write_bytes(b"")
    fake_stat(monkeypatch, gone, stat.S_IFCHR)
    target = files.output_target(gone)
    assert target.kind == "stream"
    gone.unlink()
    monkeypatch.setattr(files, "output_target", lambda path: target)
    with pytest.raises(FeynmlpError, match="No such file") as info:
        files.atomic_write(gone, b"x")
    assert str(gone) in str(info.value)
    assert tree(tmp_path) == []


def test_dash_writes_bytes_to_standard_output(tmp_path):
    code = ("from feynmlp.files import atomic_write; import sys; print('first', flush=False); "
            "atomic_write('-', bytes(range(256))); print('last')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"first\n" + bytes(range(256)) + b"last\n"
    assert tree(tmp_path) == []  # no file named "-"


def test_write_if_changed_does_not_read_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = FifoReader(fifo, timeout=10)
    assert files.write_if_changed(fifo, "kernel text") is True
    assert reader.result() == b"kernel text"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# -- the writer: refused kinds --------------------------------------------------------------------

def test_folder_is_refused(tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "keep").write_text("x")
    os.symlink("adir", tmp_path / "dirlink")
    for name in ("adir", "dirlink"):
        with pytest.raises(FeynmlpError, match="folder") as info:
            files.atomic_write(tmp_path / name, "x")
        assert name in str(info.value) and "\n" not in str(info.value)
    assert tree(tmp_path) == ["adir", "adir/keep", "dirlink"]


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(os.fspath(path))
        with pytest.raises(FeynmlpError, match="socket") as info:
            files.atomic_write(path, "x")
        assert str(path) in str(info.value)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        server.close()
    assert tree(tmp_path) == ["s"]


def test_block_device_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "disk"
    path.write_bytes(b"precious")
    fake_stat(monkeypatch, path, stat.S_IFBLK)
    with pytest.raises(FeynmlpError, match="block device") as info:
        files.atomic_write(path, "x")
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"precious" and tree(tmp_path) == ["disk"]


@pytest.mark.parametrize("mode, kind", [
    (stat.S_IFREG, "file"), (stat.S_IFIFO, "stream"), (stat.S_IFCHR, "stream"),
    (stat.S_IFDIR, None), (stat.S_IFSOCK, None), (stat.S_IFBLK, None)])
def test_the_decision_for_each_kind_of_file(tmp_path, monkeypatch, mode, kind):
    path = tmp_path / "x"
    path.write_bytes(b"")
    fake_stat(monkeypatch, path, mode)
    if kind is None:
        with pytest.raises(FeynmlpError, match="x"):
            files.output_target(path)
    else:
        target = files.output_target(path)
        assert target.kind == kind and target.path == str(path)
    assert files.output_target("-").kind == "stdout"
    assert files.output_target(tmp_path / "new").kind == "file"


def test_regular_files_are_still_replaced_atomically(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("old")
    inode = path.stat().st_ino
    old = os.umask(0o027)
    try:
        assert files.atomic_write(path, "new") == path
    finally:
        os.umask(old)
    assert path.read_text() == "new" and path.stat().st_ino != inode
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert tree(tmp_path) == ["plain.txt"]


# -- feynmlp rules --out ---------------------------------------------------------------------------

def test_rules_out_link_writes_the_target(tmp_path, capsys):
    (tmp_path / "real.txt").write_text("old")
    os.symlink("real.txt", tmp_path / "link.txt")
    assert main(["rules", "--order", "2", "--out", str(tmp_path / "link.txt")]) == 0
    capsys.readouterr()
    assert os.path.islink(tmp_path / "link.txt")
    assert (tmp_path / "real.txt").read_text() == rules_text(2, 2)
    assert tree(tmp_path) == ["link.txt", "real.txt"]


def test_rules_png_through_a_dangling_link(tmp_path, capsys):
    (tmp_path / "figs").mkdir()
    os.symlink("figs/r.png", tmp_path / "r.png")
    assert main(["rules", "--order", "2", "--format", "png", "--out", str(tmp_path / "r.png")]) == 0
    capsys.readouterr()
    assert os.path.islink(tmp_path / "r.png")
    assert (tmp_path / "figs" / "r.png").read_bytes()[:8] == PNG_MAGIC
    assert tree(tmp_path) == ["figs", "figs/r.png", "r.png"]


@pytest.mark.parametrize("fmt", ["text", "latex", "png"])
def test_rules_out_fifo_gets_the_document(tmp_path, capsys, fmt):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    assert main(["rules", "--order", "2", "--format", fmt, "--out", str(fifo)]) == 0
    data = reader.result()
    out = capsys.readouterr().out
    if fmt == "png":
        assert data[:8] == PNG_MAGIC and len(data) > 1000
    else:
        assert main(["rules", "--order", "2", "--format", fmt]) == 0
        assert data.decode() == capsys.readouterr().out
        assert out == ""  # no "wrote ..." line on a stream: it may be the same terminal
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert tree(tmp_path) == ["pipe"]


def test_rules_png_to_standard_output(tmp_path):
    proc = subprocess.run([str(FEYNMLP), "rules", "--order", "2", "--format", "png", "--out", "-"],
                          capture_output=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout[:8] == PNG_MAGIC and proc.stdout.endswith(b"IEND\xaeB`\x82")
    assert tree(tmp_path) == []


def test_rules_out_socket_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(os.fspath(path))
        line = one_error_line(capsys, main(["rules", "--order", "2", "--out", str(path)]))
        assert str(path) in line and "socket" in line
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        server.close()


def test_rules_out_block_device_exits_2(tmp_path, capsys, monkeypatch):
    path = tmp_path / "disk"
    path.write_bytes(b"precious")
    fake_stat(monkeypatch, path, stat.S_IFBLK)
    line = one_error_line(capsys, main(["rules", "--order", "2", "--out", str(path)]))
    assert str(path) in line and "block device" in line
    assert path.read_bytes() == b"precious" and tree(tmp_path) == ["disk"]


def test_rules_out_loop_and_link_to_folder_exit_2(tmp_path, capsys):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    (tmp_path / "adir").mkdir()
    os.symlink("adir", tmp_path / "dirlink")
    line = one_error_line(capsys, main(["rules", "--order", "2", "--out", str(tmp_path / "a")]))
    assert str(tmp_path / "a") in line and "loop" in line
    line = one_error_line(capsys, main(["rules", "--order", "2", "--out", str(tmp_path / "dirlink")]))
    assert "dirlink" in line and "folder" in line
    assert tree(tmp_path) == ["a", "adir", "b", "dirlink"]


# -- feynmlp.save ------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_through_a_link(tmp_path, suffix):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / f"real{suffix}").write_bytes(b"old")
    os.symlink(f"store/real{suffix}", tmp_path / f"link{suffix}")
    mlp = small_mlp()
    feynmlp.save(mlp, tmp_path / f"link{suffix}")
    assert os.path.islink(tmp_path / f"link{suffix}")
    assert_same_mlp(feynmlp.load(tmp_path / "store" / f"real{suffix}"), mlp)
    assert tree(tmp_path) == ["link" + suffix, "store", f"store/real{suffix}"]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_to_a_fifo(tmp_path, suffix):
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    mlp = small_mlp()
    feynmlp.save(mlp, fifo)
    copy = tmp_path / "copy" / f"m{suffix}"
    copy.parent.mkdir()
    copy.write_bytes(reader.result())
    assert_same_mlp(feynmlp.load(copy), mlp)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_save_to_a_socket_is_a_model_file_error(tmp_path):
    path = tmp_path / "m.safetensors"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(os.fspath(path))
        with pytest.raises(ModelFileError, match="socket"):
            feynmlp.save(small_mlp(), path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        server.close()
    assert tree(tmp_path) == ["m.safetensors"]


# -- feynmlp born dataset --out ------------------------------------------------------------------------

DATASET_ARGS = ["born", "dataset", "--size", "12", "--grid", "6", "--seed", "4", "--no-progress"]


def _expected_dataset():
    return make_dataset(12, grid=6, seed=4)[0]


def test_dataset_through_a_link(tmp_path, capsys):
    (tmp_path / "store").mkdir()
    os.symlink("store/real.npz", tmp_path / "d.npz")
    assert main(DATASET_ARGS + ["--out", str(tmp_path / "d.npz")]) == 0
    capsys.readouterr()
    assert os.path.islink(tmp_path / "d.npz")
    arrays, _ = load_dataset(tmp_path / "store" / "real.npz")
    expected = _expected_dataset()
    for name in ("U", "a", "born"):
        np.testing.assert_array_equal(arrays[name], expected[name])
    assert tree(tmp_path) == ["d.npz", "store", "store/real.npz"]


def test_dataset_to_a_fifo(tmp_path, capsys):
    fifo = tmp_path / "d.npz"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    assert main(DATASET_ARGS + ["--out", str(fifo)]) == 0
    capsys.readouterr()
    copy = tmp_path / "copy.npz"
    copy.write_bytes(reader.result())
    arrays, _ = load_dataset(copy)
    expected = _expected_dataset()
    for name in ("U", "a", "born"):
        np.testing.assert_array_equal(arrays[name], expected[name])
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_dataset_under_proc_names_the_real_cause(capsys):
    before = set(os.listdir("/proc"))
    line = one_error_line(capsys, main(DATASET_ARGS + ["--out", "/proc/d.npz"]))
    assert "/proc" in line
    assert "No such file or directory" not in line  # /proc exists
    assert "new files" in line
    assert not {n for n in set(os.listdir("/proc")) - before if not n.isdigit()}


def test_dataset_in_a_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    line = one_error_line(capsys, main(DATASET_ARGS + ["--out", str(tmp_path / "afile" / "d.npz")]))
    assert str(tmp_path / "afile") in line and "not a folder" in line
    assert tree(tmp_path) == ["afile"]


# -- feynmlp demo --out and born reproduce --out -------------------------------------------------------

def _bad_folder(tmp_path, case):
    """(--out argument, text the error must name) for each bad output folder."""
    if case == "existing file":
        (tmp_path / "afile").write_text("keep")
        return str(tmp_path / "afile"), str(tmp_path / "afile")
    if case == "under a file":  # like /dev/null/x, with a regular file as the non-folder
        (tmp_path / "afile").write_text("keep")
        return str(tmp_path / "afile" / "x"), str(tmp_path / "afile")
    if case == "under a fifo":  # like /dev/null/x, with a FIFO standing in for the device
        os.mkfifo(tmp_path / "pipe")
        return str(tmp_path / "pipe" / "x"), str(tmp_path / "pipe")
    if case == "under /proc":
        return "/proc/feynmlp-test-out", "/proc"
    raise AssertionError(case)


CASES = ["existing file", "under a file", "under a fifo", "under /proc"]


@pytest.mark.parametrize("case", CASES)
def test_demo_bad_out_fails_at_once_with_one_line(tmp_path, capsys, monkeypatch, case):
    taylor = importlib.import_module("feynmlp.taylor")  # the module, not feynmlp.taylor the function

    def no_computation(*args, **kwargs):
        raise AssertionError("the demo computed before checking --out")
    monkeypatch.setattr(taylor, "taylor", no_computation)
    out, named = _bad_folder(tmp_path, case)
    before = tree(tmp_path)
    started = time.perf_counter()
    code = main(["demo", "--out", out])
    elapsed = time.perf_counter() - started
    line = one_error_line(capsys, code)
    assert named in line
    assert elapsed < 0.5
    assert tree(tmp_path) == before
    assert not os.path.lexists("/proc/feynmlp-test-out")


@pytest.mark.parametrize("case", CASES)
def test_reproduce_bad_out_fails_before_training(tmp_path, capsys, monkeypatch, case):
    pytest.importorskip("torch")
    from feynmlp.born import perturbation

    def no_training(*args, **kwargs):
        raise AssertionError("training started before --out was checked")
    monkeypatch.setattr(perturbation, "run_iterations", no_training)
    out, named = _bad_folder(tmp_path, case)
    before = tree(tmp_path)
    code = main(["born", "reproduce", "--preset", "tiny", "--no-progress", "--out", out])
    line = one_error_line(capsys, code)
    assert named in line
    assert tree(tmp_path) == before
    assert not os.path.lexists("/proc/feynmlp-test-out")


def test_reproduce_python_api_checks_the_folder_before_training(tmp_path, monkeypatch):
    from feynmlp.born import perturbation, report

    monkeypatch.setattr(perturbation, "run_iterations",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(FeynmlpError, match="not a folder"):
        report.reproduce("tiny", tmp_path / "afile")
    assert tree(tmp_path) == ["afile"]


@pytest.mark.parametrize("argv, named", [
    (["demo", "--out", "{tmp}/afile"], "{tmp}/afile"),
    (["demo", "--out", "/proc/feynmlp-test-out"], "/proc"),
    (["born", "reproduce", "--preset", "tiny", "--no-progress", "--out", "{tmp}/afile/x"], "{tmp}/afile"),
])
def test_console_script_bad_out(tmp_path, argv, named):
    (tmp_path / "afile").write_text("keep")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    named = named.replace("{tmp}", str(tmp_path))
    started = time.perf_counter()
    proc = subprocess.run([str(FEYNMLP)] + argv, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("feynmlp: error: ")
    assert named in lines[0]
    assert proc.stdout == ""
    assert tree(tmp_path) == ["afile"]
    assert elapsed < 10  # the demo and the training never start (the full demo takes longer)


def test_demo_good_out_through_a_link_still_writes(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "out")
    assert main(["demo", "--order", "2", "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "real")) == ["example-network.safetensors", "rules-order2.png"]
    from feynmlp.demo import example_network
    assert_same_mlp(feynmlp.load(tmp_path / "real" / "example-network.safetensors"), example_network(0))

