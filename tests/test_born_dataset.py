"""Labelled data sets: contents, reproducibility, safe files (no pickle, no partial files), and
the `feynmlp born dataset` command line."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from feynmlp.born import load_dataset, make_dataset, write_dataset
from feynmlp.errors import FeynmlpError


def test_make_dataset_contents():
    arrays, meta = make_dataset(300, grid=16, R=1.5, seed=2)
    U, a, born, fam = arrays["U"], arrays["a"], arrays["born"], arrays["family"]
    assert U.shape == (300, 16) and a.shape == (300,) and born.shape == (300, 3) and fam.shape == (300,)
    # independent checks of the labels: a_1 = sum c_n U_n with c from the grid alone, and
    # a_1 + a_2 + a_3 approximates a for the weak rows
    r = 1.5 * np.arange(17) / 16
    np.testing.assert_allclose(born[:, 0], U @ ((r[1:] ** 3 - r[:-1] ** 3) / 3), rtol=1e-12, atol=1e-300)
    weak = np.abs(U).max(axis=1) * 1.5 ** 2 < 0.05
    assert weak.sum() > 20
    np.testing.assert_allclose(born[weak].sum(axis=1), a[weak], rtol=1e-4)
    assert meta["grid"] == 16 and meta["R"] == 1.5 and meta["seed"] == 2 and meta["size"] == 300
    assert meta["order"] == 3 and "log-uniform" in meta["distribution"]
    assert meta["feynmlp_version"]


def test_reproducible_by_seed():
    a1, m1 = make_dataset(200, grid=8, seed=11)
    a2, m2 = make_dataset(200, grid=8, seed=11)
    a3, _ = make_dataset(200, grid=8, seed=12)
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k])
    assert m1 == m2
    assert not np.array_equal(a1["U"], a3["U"])


def test_file_round_trip_without_pickle(tmp_path):
    out = tmp_path / "data.npz"
    written = write_dataset(out, 150, grid=12, R=2.0, seed=4, order=2, repulsive=True)
    assert written == str(out)
    with np.load(out, allow_pickle=False) as npz:  # every array loads without pickle
        raw = {k: npz[k] for k in npz.files}
    assert set(raw) == {"U", "a", "born", "family", "metadata_json"}
    assert raw["metadata_json"].dtype == np.uint8
    meta = json.loads(raw["metadata_json"].tobytes().decode())
    arrays, loaded_meta = load_dataset(out)
    assert loaded_meta == meta
    for key, value in {"grid": 12, "R": 2.0, "seed": 4, "size": 150, "order": 2, "repulsive": True,
                       "format": "feynmlp.born.dataset", "format_version": 1}.items():
        assert meta[key] == value
    for key in ("distribution", "feynmlp_version", "families", "depth_range", "a_max", "units"):
        assert key in meta
    expected, _ = make_dataset(150, grid=12, R=2.0, seed=4, order=2, repulsive=True)
    for k in expected:
        np.testing.assert_array_equal(arrays[k], expected[k])
    assert sorted(os.listdir(tmp_path)) == ["data.npz"]  # no temporary files left


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=0), "size"),
    (dict(size=-5), "size"),
    (dict(grid=0), "grid"),
    (dict(order=0), "order"),
    (dict(R=0.0), "R must be"),
    (dict(families=["nope"]), "unknown potential family"),
    (dict(out="data.txt"), r"must end in \.npz"),
    (dict(out="missing/data.npz"), "does not exist"),
    (dict(out="afile/data.npz"), "does not exist"),
    (dict(out="adir.npz"), "is a folder"),
])
def test_bad_arguments_leave_no_file(tmp_path, kwargs, match):
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir.npz").mkdir()
    args = dict(out="data.npz", size=10, grid=8)
    args.update(kwargs)
    args["out"] = str(tmp_path / args["out"])
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(FeynmlpError, match=match):
        write_dataset(**args)
    assert sorted(os.listdir(tmp_path)) == before


def test_unwritable_folder_leaves_no_file(tmp_path, monkeypatch):
    # chmod cannot make a folder unwritable for root, so simulate the refusal at the probe
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(FeynmlpError, match="cannot write to the output folder .*Permission denied"):
        write_dataset(tmp_path / "data.npz", 20, grid=4)
    assert os.listdir(tmp_path) == []


def _failing_savez(error):
    real = np.savez

    def savez(file, **arrays):
        real(file, **arrays)  # a partial (here: complete) file on disk before the failure
        raise error
    return savez


def test_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", _failing_savez(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(FeynmlpError, match="disk is full"):
        write_dataset(tmp_path / "data.npz", 20, grid=4)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "data.npz"
    write_dataset(out, 20, grid=4, seed=1)
    before = out.read_bytes()
    monkeypatch.setattr(np, "savez", _failing_savez(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_dataset(out, 20, grid=4, seed=2)
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["data.npz"]


def test_load_errors(tmp_path):
    with pytest.raises(FeynmlpError, match="does not exist"):
        load_dataset(tmp_path / "none.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(FeynmlpError, match="not a feynmlp Born data set"):
        load_dataset(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FeynmlpError, match="cannot read"):
        load_dataset(tmp_path / "junk.npz")


# --- command line ---------------------------------------------------------------------------

def test_cli_writes_a_data_set(tmp_path, cli_main, capsys):
    out = tmp_path / "data.npz"
    code = cli_main(["born", "dataset", "--size", "120", "--grid", "8", "--seed", "3",
                     "--out", str(out), "--families", "square,fourier", "--order", "4"])
    assert code == 0
    arrays, meta = load_dataset(out)
    assert arrays["U"].shape == (120, 8) and arrays["born"].shape == (120, 4)
    assert set(arrays["family"]) == {"square", "fourier"}
    assert meta["seed"] == 3 and meta["grid"] == 8
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("args, word", [
    (["--size", "0"], "size"),
    (["--size", "10", "--grid", "0"], "grid"),
    (["--size", "10", "--depth-min", "0"], "depth_range"),
    (["--size", "10", "--families", "square,blob"], "blob"),
    (["--size", "10", "--out-suffix"], None),
])
def test_cli_bad_input_exit_2_one_line(tmp_path, cli_main, capsys, args, word):
    if word is None:  # an unknown option: argparse's own exit status 2
        with pytest.raises(SystemExit) as exc:
            cli_main(["born", "dataset", "--out", str(tmp_path / "d.npz")] + args)
        assert exc.value.code == 2
    else:
        code = cli_main(["born", "dataset", "--out", str(tmp_path / "d.npz")] + args)
        assert code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and word in err
    assert os.listdir(tmp_path) == []


def test_cli_bad_output_path(tmp_path, cli_main, capsys):
    code = cli_main(["born", "dataset", "--size", "10", "--out", str(tmp_path / "data.csv")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.csv" in err and ".npz" in err
    assert os.listdir(tmp_path) == []


def test_cli_without_subcommand_and_help(cli_main, capsys):
    assert cli_main(["born"]) == 2
    assert "dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["born", "dataset", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("hbar = 2 mu = 1", "log-uniform", "--depth-max", "yukawa", "allow_pickle=False"):
        assert phrase in text
    with pytest.raises(SystemExit):
        cli_main(["born", "--help"])
    text = capsys.readouterr().out
    for phrase in ("a < 0", "197.3269804", "pi^2 / (4 R^2)"):
        assert phrase in text


def test_cli_module_imports_light():
    # `feynmlp --help` imports feynmlp.born.cli; it must not pull in the numerics.
    import subprocess
    import sys
    code = ("import sys, feynmlp.born.cli; "
            "print(any(m.startswith('feynmlp.born.') and m != 'feynmlp.born.cli' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
