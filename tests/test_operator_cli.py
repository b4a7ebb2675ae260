"""`feynmlp rules --operator`: the collapsed rules as text, LaTeX and PNG; bad use exits 2."""
from __future__ import annotations

import re

import pytest

from feynmlp.cli import main


def test_text_lists_the_rules_and_every_labelled_tree(capsys):
    assert main(["rules", "--operator", "biharmonic"]) == 0
    text = capsys.readouterr().out
    assert "B' = " in text and "L3' = " in text and "H' = " in text
    counts = [int(n) for n in re.findall(r"\sx(\d+)\s", text)]
    assert sum(counts) == 26  # the labelled trees with four leaves (Schroeder's fourth problem)
    assert main(["rules", "--operator", "laplacian"]) == 0
    text = capsys.readouterr().out
    assert "lap' = jj*s2 + lap*s1" in text and "(i,i)" in text


def test_latex_and_png_files(tmp_path):
    tex, png = tmp_path / "b.tex", tmp_path / "b.png"
    assert main(["rules", "--operator", "biharmonic", "--format", "latex", "--out", str(tex)]) == 0
    document = tex.read_text()
    assert document.startswith("\\documentclass") and "\\begin{align*}" in document and "\\end{document}" in document
    assert main(["rules", "--operator", "laplacian", "--format", "png", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["rules", "--operator", "laplacian", "--order", "2"], "fixes the order; drop --order"),
    (["rules"], "give --order K"),
])
def test_bad_use_exits_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
