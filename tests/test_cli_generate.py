"""The generate-kernels command: exit codes, one-line errors, nothing half-written."""
import pytest

from feynmlp.cli import generate_kernels_main, main


def _run(capsys, argv, entry=main):
    code = entry(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generates_into_folder(tmp_path, capsys):
    code, out, _ = _run(capsys, ["generate-kernels", "--order", "2", "--activation", "sigmoid", "--out", str(tmp_path)])
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "sigmoid_order2.py"]
    code, out, _ = _run(capsys, ["--order", "2", "--activation", "sigmoid", "--out", str(tmp_path), "--check"],
                        entry=generate_kernels_main)
    assert code == 0 and "up to date" in out


@pytest.mark.parametrize("argv,needle", [
    (["--order", "3", "--activation", "swoosh"], "'swoosh'"),
    (["--order", "0", "--activation", "tanh"], "order must be at least 1, got 0"),
    (["--order", "-2", "--activation", "tanh"], "got -2"),
    (["--order", "17", "--activation", "tanh"], "order 17 is above the largest supported order 16"),
    (["--order", "10000", "--activation", "tanh"], "order 10000"),
    (["--order", "3", "--activation", "relu"], "piecewise linear"),
    (["--order", "3"], "--activation"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    code, out, err = _run(capsys, ["generate-kernels", *argv, "--out", str(tmp_path / "k")])
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "k").exists() or not any((tmp_path / "k").iterdir())


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = _run(capsys, ["generate-kernels", "--order", "2", "--activation", "tanh",
                                 "--out", str(blocker / "sub")])
    assert code == 2 and "cannot create output folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_check_reports_stale_files_with_diff_and_refresh_command(tmp_path, capsys):
    assert main(["generate-kernels", "--order", "2", "--activation", "tanh", "--out", str(tmp_path), "-q"]) == 0
    kernel = tmp_path / "tanh_order2.py"
    kernel.write_text(kernel.read_text().replace("s0 = t", "s0 = t + 1.0"))
    code, out, _ = _run(capsys, ["generate-kernels", "--order", "2", "--activation", "tanh",
                                 "--out", str(tmp_path), "--check"])
    assert code == 1
    assert "-        s0 = t + 1.0" in out and "+        s0 = t" in out
    assert f"feynmlp generate-kernels --order 2 --activation tanh --out {tmp_path}" in out


def test_help_explains_the_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate-kernels", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "vertex" in out and "Faa di Bruno" in out and "--check" in out
