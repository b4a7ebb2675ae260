"""The kernel cache of feynmlp.kernels under concurrency, damage and unusable folders.

In: kernels that are not shipped (tanh at order 5, a custom SymPy activation), generated into
a fresh FEYNMLP_CACHE_DIR per test (the loader memoises modules per folder, so a fresh folder
always goes to disk). Out: checks that
- several processes generating the same missing kernel at once all succeed, exactly one of
  them generates it, and the folder ends with one .py and one .sha256 and no temporary files;
- a damaged entry (truncated, edited, missing or garbage sidecar, a kernel of another
  signature, even with a sidecar matching the damaged bytes) is regenerated and never run:
  each damaged file would create a marker file if executed, and the marker never appears;
- an unwritable or everyone-writable cache folder falls back to a private temporary folder
  with a RuntimeWarning, and a hostile temporary folder (someone else's, or a symlink) is not
  used; no usable folder at all is a FeynmlpError;
- a generation that fails at any point (derivation, writing the module, writing its sidecar,
  an interrupt) leaves neither file behind, and the next call succeeds.
The reference for a valid entry is the generator's own rendering (`render_kernel`), which the
tests in test_generated.py check against SymPy.
"""
from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from feynmlp import files, kernels
from feynmlp.errors import FeynmlpError
from feynmlp.kernel_signature import file_digest

ACTIVATION, ORDER = "tanh", 5  # not shipped (shipped orders are 1-4): always goes to the cache


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty kernel cache; returns its kernels folder."""
    monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "kernels"


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """tempfile.gettempdir() redirected to a folder of this test (the fallback goes there)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="module")
def reference_text() -> str:
    from feynmlp.codegen.generate import render_kernel

    return render_kernel(ACTIVATION, ORDER).text


def entry_files(folder: Path) -> list[str]:
    """Everything in the kernels folder except Numba's cache and the lock folder."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in ("__pycache__", kernels.LOCK_FOLDER))


def assert_valid_entry(folder: Path, reference_text: str) -> Path:
    path = kernels.cached_kernel_path(ACTIVATION, ORDER)
    assert path.parent == folder
    assert entry_files(folder) == [path.name, path.stem + ".sha256"]
    data = path.read_bytes()
    assert data == reference_text.encode()
    assert (folder / (path.stem + ".sha256")).read_text().strip() == file_digest(data)
    return path


# ----------------------------------------------------------------------------- concurrency

_WORKER = r"""
import logging, os, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from feynmlp import kernels
from feynmlp.codegen import generate  # import SymPy before the start line, so all race the lock
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
deadline = time.time() + 120
while not os.path.exists(go):
    if time.time() > deadline:
        sys.exit("never started")
    time.sleep(0.005)
module = kernels.kernel_module(sys.argv[3], int(sys.argv[4]))
print(module.__file__, module.ORDER)
"""


@pytest.mark.slow
def test_concurrent_processes_generate_one_valid_entry(cache, tmp_path, reference_text):
    workers = 6
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONHASHSEED="0")
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path / f"ready{i}"), str(go), ACTIVATION,
                               str(ORDER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(workers)]
    try:
        deadline = time.time() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(workers)):
            assert time.time() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    paths = {out.split()[0] for out, _ in results}
    assert len(paths) == 1 and all(out.split()[1] == str(ORDER) for out, _ in results)
    # The lock let exactly one process generate; the others waited and found a valid entry.
    assert sum(err.count("generating kernel") for _, err in results) == 1
    assert not any("regenerating" in err for _, err in results)
    path = assert_valid_entry(cache, reference_text)
    assert paths == {str(path)}


# ----------------------------------------------------------------------------- damaged entries

def _marker_line(marker: Path) -> str:
    return f"import pathlib; pathlib.Path({str(marker)!r}).write_text('imported')\n"


def _damage(kind: str, text: str, marker: Path) -> tuple[bytes, bytes | None]:
    """(module bytes, sidecar bytes or None) of one kind of damaged entry; all would mark if run."""
    good = text.encode()
    good_sidecar = (file_digest(good) + "\n").encode()
    if kind == "truncated":
        cut = good[: len(good) // 2]
        return cut.rsplit(b"\n", 1)[0] + b"\n" + _marker_line(marker).encode(), good_sidecar
    if kind == "edited":
        return _marker_line(marker).encode() + good, good_sidecar
    if kind == "edited, sidecar updated, signature kept out":
        bad = _marker_line(marker).encode() + good.replace(b'SIGNATURE = "', b'SIGNATURE = "0')
        return bad, (file_digest(bad) + "\n").encode()
    if kind == "another kernel with its own sidecar":
        shipped = (Path(kernels.__file__).parent.parent / "generated" / "tanh_order4.py")
        other = _marker_line(marker).encode() + (shipped.read_bytes() if shipped.exists() else good.replace(
            b'SIGNATURE = "', b'SIGNATURE = "1'))
        return other, (file_digest(other) + "\n").encode()
    if kind == "missing sidecar":
        return _marker_line(marker).encode() + good, None
    if kind == "garbage sidecar":
        return _marker_line(marker).encode() + good, b"\xff\xfe not a digest \x00"
    if kind == "empty":
        return b"", good_sidecar
    raise AssertionError(kind)


DAMAGE = ["truncated", "edited", "edited, sidecar updated, signature kept out",
          "another kernel with its own sidecar", "missing sidecar", "garbage sidecar", "empty"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_entry_is_regenerated_never_imported(kind, cache, tmp_path, reference_text, caplog):
    path = kernels.cached_kernel_path(ACTIVATION, ORDER)
    sidecar = path.with_suffix(".sha256")
    marker = tmp_path / "marker"
    data, sidecar_data = _damage(kind, reference_text, marker)
    path.write_bytes(data)
    if sidecar_data is not None:
        sidecar.write_bytes(sidecar_data)
    with caplog.at_level(logging.INFO, logger="feynmlp"):
        module = kernels.kernel_module(ACTIVATION, ORDER)
    assert not marker.exists(), f"a damaged cached kernel ({kind}) was executed"
    assert module.ORDER == ORDER and module.__file__ == str(path)
    assert_valid_entry(cache, reference_text)
    assert any("regenerating" in r.getMessage() and path.name in r.getMessage() for r in caplog.records)


def test_valid_entry_is_reused_and_computes_tanh_derivatives(cache, reference_text, caplog):
    with caplog.at_level(logging.INFO, logger="feynmlp"):
        module = kernels.kernel_module(ACTIVATION, ORDER)
    assert sum("generating kernel" in r.getMessage() for r in caplog.records) == 1
    # No byte other than the verified ones runs: no .pyc is written (or ever read).
    assert not list(cache.rglob("*.pyc"))
    # A second folder holding a copy of the entry: found valid, not regenerated.
    other = cache.parent.parent / "copy"
    (other / "kernels").mkdir(parents=True)
    path = assert_valid_entry(cache, reference_text)
    for name in (path.name, path.stem + ".sha256"):
        (other / "kernels" / name).write_bytes((cache / name).read_bytes())
    os.environ["FEYNMLP_CACHE_DIR"] = str(other)  # restored by the fixture's monkeypatch
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="feynmlp"):
        copy = kernels.kernel_module(ACTIVATION, ORDER)
    assert copy.__file__ == str(other / "kernels" / path.name)
    assert not any("generat" in r.getMessage() for r in caplog.records)
    # tanh^(m)(0)/m!: 0, 1, 0, -1/3, 0, 2/15 (the Taylor series of tanh).
    out = np.empty((1, ORDER + 1))
    copy.taylor_derivatives(np.zeros(1), out)
    np.testing.assert_allclose(out[0], [0, 1, 0, -1 / 3, 0, 2 / 15], atol=1e-15)
    assert module.SIGNATURE == copy.SIGNATURE


def test_custom_sympy_activation_is_cached_and_verified(cache, tmp_path):
    import sympy as sp

    x = sp.Symbol("x")
    activation = x * sp.tanh(x) + sp.Rational(1, 3) * x
    path = kernels.cached_kernel_path(activation, 2)
    marker = tmp_path / "marker"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_marker_line(marker))  # no sidecar
    module = kernels.kernel_module(activation, 2)
    assert not marker.exists()
    assert module.__file__ == str(path) and module.ORDER == 2
    assert path.with_suffix(".sha256").read_text().strip() == file_digest(path.read_bytes())
    # s(z) = z tanh z + z/3 at z = 0.5: value, s', s''/2 against SymPy.
    out = np.empty((1, 3))
    module.taylor_derivatives(np.array([0.5]), out)
    expected = [float(sp.diff(activation, x, m).subs(x, 0.5)) / [1, 1, 2][m] for m in range(3)]
    np.testing.assert_allclose(out[0], expected, rtol=1e-14)


# ----------------------------------------------------------------------------- unusable folders

def test_cache_under_a_regular_file_falls_back_with_a_warning(tmp_path, monkeypatch, private_tmp, reference_text):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="not writable"):
        module = kernels.kernel_module(ACTIVATION, ORDER)
    fallback = private_tmp / f"feynmlp-{kernels._user_tag()}" / "kernels"
    assert Path(module.__file__).parent == fallback
    assert_valid_entry(fallback, reference_text)
    assert blocker.read_text() == "not a folder"


def test_read_only_cache_falls_back_with_a_warning(tmp_path, monkeypatch, private_tmp):
    # Tests may run as root, which chmod does not stop: refuse writes to the folder instead.
    read_only = tmp_path / "read-only"
    monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(read_only))
    original = tempfile.NamedTemporaryFile

    def refusing(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == read_only / "kernels":
            raise PermissionError(13, "Permission denied")
        return original(*args, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refusing)
    with pytest.warns(RuntimeWarning, match="Permission denied"):
        module = kernels.kernel_module(ACTIVATION, ORDER)
    assert Path(module.__file__).is_relative_to(private_tmp)
    assert entry_files(read_only / "kernels") == []


def _plant(folder: Path, marker: Path, text: str) -> None:
    """A kernel that would mark if run, with a matching sidecar and the right signature line:
    only where it lies can tell it from a genuine entry."""
    name = kernels.cached_kernel_path(ACTIVATION, ORDER).name
    evil = (_marker_line(marker) + text).encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(evil)
    (folder / name).with_suffix(".sha256").write_text(file_digest(evil) + "\n")


def test_cache_writable_by_everyone_is_not_used(tmp_path, monkeypatch, private_tmp, reference_text):
    marker = tmp_path / "marker"
    shared = tmp_path / "shared"
    _plant(shared / "kernels", marker, reference_text)
    os.chmod(shared / "kernels", 0o777)
    monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(shared))
    with pytest.warns(RuntimeWarning, match="writable by every user"):
        module = kernels.kernel_module(ACTIVATION, ORDER)
    assert not marker.exists()
    assert Path(module.__file__).is_relative_to(private_tmp)


@pytest.mark.parametrize("hostile", ["world-writable", "symlink"])
def test_hostile_temporary_folder_is_not_used(hostile, tmp_path, monkeypatch, private_tmp, reference_text):
    """On a shared /tmp another user may create feynmlp-<uid> first and plant kernels in it."""
    marker = tmp_path / "marker"
    planted = tmp_path / "planted"
    _plant(planted / "kernels", marker, reference_text)
    predictable = private_tmp / f"feynmlp-{kernels._user_tag()}"
    if hostile == "symlink":
        predictable.symlink_to(planted, target_is_directory=True)
    else:
        _plant(predictable / "kernels", marker, reference_text)
        os.chmod(predictable, 0o777)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="not writable"):
        module = kernels.kernel_module(ACTIVATION, ORDER)
    assert not marker.exists()
    folder = Path(module.__file__).parent
    assert folder.parent.parent == private_tmp and folder.parent.name.startswith(f"feynmlp-{kernels._user_tag()}-")
    assert_valid_entry(folder, reference_text)


def test_no_usable_folder_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))
    with pytest.raises(FeynmlpError, match="no writable folder.*FEYNMLP_CACHE_DIR"):
        kernels.kernel_module(ACTIVATION, ORDER)


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    for name in ("one", "two"):
        monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(tmp_path / name))
        assert kernels.cache_folder() == tmp_path / name / "kernels"
        assert Path(kernels.kernel_module(ACTIVATION, ORDER).__file__).parent == tmp_path / name / "kernels"


# ----------------------------------------------------------------------------- failed generation

def _fail_render(*args, **kwargs):
    raise RuntimeError("derivation failed")


@pytest.mark.parametrize("stage", ["derivation", "module write", "sidecar write", "interrupt during install"])
def test_failed_generation_leaves_nothing_behind(stage, cache, monkeypatch, reference_text):
    from feynmlp.codegen import generate

    with monkeypatch.context() as patch:
        if stage == "derivation":
            patch.setattr(generate, "render_kernel", _fail_render)
            expected = RuntimeError
        elif stage in ("module write", "sidecar write"):
            original = files.atomic_write
            suffix = ".py" if stage == "module write" else ".sha256"

            def failing(path, data):
                if str(path).endswith(suffix):
                    raise FeynmlpError(f"cannot write {path}: No space left on device")
                return original(path, data)

            patch.setattr(files, "atomic_write", failing)
            expected = FeynmlpError
        else:
            original_replace = os.replace

            def interrupted(src, dst):
                if str(dst).endswith(".sha256"):
                    raise KeyboardInterrupt
                return original_replace(src, dst)

            patch.setattr(os, "replace", interrupted)
            expected = KeyboardInterrupt
        with pytest.raises(expected):
            kernels.kernel_module(ACTIVATION, ORDER)
        assert entry_files(cache) == [], f"{stage} left files behind"
        assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]
    # The failure is not remembered: the next call generates the kernel.
    module = kernels.kernel_module(ACTIVATION, ORDER)
    assert module.ORDER == ORDER
    assert_valid_entry(cache, reference_text)


def test_waiting_for_a_stuck_generator_times_out_clearly(cache, monkeypatch):
    path = kernels.cached_kernel_path(ACTIVATION, ORDER)
    lock = cache / kernels.LOCK_FOLDER / (path.stem + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\n"
         "with FileLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(kernels, "LOCK_TIMEOUT_S", 0.3)
        with pytest.raises(FeynmlpError, match="waited .* another process"):
            kernels.kernel_module(ACTIVATION, ORDER)
        assert entry_files(cache) == []
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("mode", [0o777, 0o1777])
def test_cache_in_a_folder_everyone_may_write_needs_the_sticky_bit(mode, tmp_path, monkeypatch, private_tmp,
                                                                   reference_text):
    """FEYNMLP_CACHE_DIR writable by everyone: without the sticky bit anyone may replace its
    kernels folder with one of their own, so it is not used; with it (as /tmp) it is."""
    import warnings

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    monkeypatch.setenv("FEYNMLP_CACHE_DIR", str(shared))
    if mode & stat.S_ISVTX:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            module = kernels.kernel_module(ACTIVATION, ORDER)
        assert Path(module.__file__).parent == shared / "kernels"
    else:
        with pytest.warns(RuntimeWarning, match="without the sticky bit"):
            module = kernels.kernel_module(ACTIVATION, ORDER)
        assert Path(module.__file__).is_relative_to(private_tmp)
