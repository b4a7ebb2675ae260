"""The written rules (codegen/latex_rules.py, diagram_drawing.py) and `feynmlp rules` (rules.py).

- The printed formulas are correct: the plain-text terms of order 3 (every layer placement
  written out) are parsed back, evaluated with propagators built here from their definition,
  and summed; the sum equals PyTorch autograd's third derivative.
- The term counts printed as polynomials in H equal the closed forms of docs/mathematics.md.
- The LaTeX documents compile with pdflatex (skipped only where pdflatex is missing).
- The PNG is a real PNG of non-trivial size.
- The command's exit codes and messages, and atomic writes (nothing left on failure).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from feynmlp.cli import main
from feynmlp.codegen import latex_rules, rules
from feynmlp.codegen.diagrams import diagrams, trees
from feynmlp.codegen.latex_rules import (
    placement_polynomial,
    rules_latex,
    rules_text,
    tikz_diagram,
)

# -- the printed formulas evaluate to the derivative ---------------------------------------

_FACTOR = re.compile(r"(P)\((\d+),(\d+)\)\[(\w),(\w+)\]|(G)\((\d+)\)\[(\w),(\d+)\]")


def _evaluate_text_term(term: str, P, s, idx) -> np.ndarray:
    """Evaluate 'P(3,2)[o,b] G(2)[b,2] P(2,0)[b,i1] ...' by einsum over the neuron letters."""
    operands, subscripts = [], []
    for m in _FACTOR.finditer(term):
        if m.group(1):
            to, frm, row, col = int(m.group(2)), int(m.group(3)), m.group(4), m.group(5)
            mat = P(to, frm)
            if col.startswith("i"):
                operands.append(mat[:, idx[int(col[1:]) - 1]])
                subscripts.append(row)
            else:
                operands.append(mat)
                subscripts.append(row + col)
        else:
            layer, letter, m_ = int(m.group(7)), m.group(8), int(m.group(9))
            operands.append(s[layer, m_])
            subscripts.append(letter)
    assert operands, term
    return np.einsum(",".join(subscripts) + "->o", *operands)


def _network(seed=4):
    rng = np.random.default_rng(seed)
    sizes = (3, 4, 3, 2)  # two hidden layers: the default depth of the rules
    ws = [rng.normal(scale=0.9, size=(sizes[i + 1], sizes[i])) for i in range(3)]
    bs = [rng.normal(scale=0.3, size=(sizes[i + 1],)) for i in range(3)]
    x = rng.normal(scale=0.5, size=3)
    return ws, bs, x


def test_printed_order_three_terms_sum_to_the_derivative():
    torch = pytest.importorskip("torch")
    ws, bs, x = _network()
    # tanh derivatives by hand: t' = 1 - t^2, t'' = -2 t t', t''' = -2 t'^2 - 2 t t''
    zs, a = [], x
    for l in range(3):
        z = ws[l] @ a + bs[l]
        zs.append(z)
        a = np.tanh(z)
    s = {}
    for l in (1, 2):
        t = np.tanh(zs[l - 1])
        d1 = 1 - t**2
        d2 = -2 * t * d1
        s[l, 1], s[l, 2], s[l, 3] = d1, d2, -2 * d1**2 - 2 * t * d2

    def P(to, frm):
        mat = ws[frm]
        for k in range(frm + 1, to):
            mat = ws[k] @ np.diag(s[k, 1]) @ mat
        return mat

    idx = (2, 0, 2)
    text = rules_text(3, 2, expand_layers=True)
    placed = [line.split("]  ", 1)[1] for line in text.splitlines() if line.startswith("    [l_")]
    assert len(placed) == 2 + 3  # H + 3 H (H - 1) / 2 at H = 2
    total = sum(_evaluate_text_term(t, P, s, idx) for t in placed)

    xt = torch.tensor(x, requires_grad=True)
    h = xt
    for l in range(3):
        h = torch.tensor(ws[l]) @ h + torch.tensor(bs[l])
        if l < 2:
            h = torch.tanh(h)
    expect = []
    for o in range(2):
        g = h[o]
        for i in idx:
            g = torch.autograd.grad(g, xt, create_graph=True)[0][i]
        expect.append(g.item())
    np.testing.assert_allclose(total, expect, rtol=1e-10)


def test_text_lists_every_tree_and_the_design_formula():
    text = rules_text(3, 2)
    for t in trees(3):
        assert f"D_{t}" in text
    assert ("sum_{1<=l_a<l_b<=2} P(3,l_b)[o,b] G(l_b)[b,2] P(l_b,l_a)[b,a] G(l_a)[a,2] "
            "P(l_a,0)[a,i1] P(l_a,0)[a,i2] P(l_b,0)[b,i3]") in text
    assert "sum_{l_a=1..2} P(3,l_a)[o,a] G(l_a)[a,3] P(l_a,0)[a,i1] P(l_a,0)[a,i2] P(l_a,0)[a,i3]" in text
    assert "5 terms" in text
    one = rules_text(1, 3)
    assert "D_1, 1 placement" in one and "= P(4,0)[o,i1]" in one


def test_latex_formula_strings():
    doc = rules_latex(2, 2)
    assert r"\sum_{l_a=1}^{2}\, P^{(3,l_a)}_{oa}\,\Gamma^{(l_a)}_{a,2}\,P^{(l_a,0)}_{a i_{1}}" in doc
    assert r"\frac{\partial^{2} f_o}{\partial x_{i_{1}}\,\partial x_{i_{2}}}" in doc


@pytest.mark.parametrize("k,closed_form", [
    (1, lambda H: 1),
    (2, lambda H: H),
    (3, lambda H: H + 3 * H * (H - 1) / 2),
])
def test_term_polynomials_match_design(k, closed_form):
    import sympy
    H = sympy.Symbol("H")
    total = sum(placement_polynomial(t) for t in trees(k))
    assert sympy.simplify(total - closed_form(H)) == 0


def test_placement_polynomials_match_enumeration():
    import sympy
    H = sympy.Symbol("H")
    for t in trees(4):
        poly = placement_polynomial(t)
        for h in range(1, 6):
            assert poly.subs(H, h) == sum(1 for d in diagrams(4, h) if d.tree == t)


def test_tikz_places_every_vertex_by_hand():
    code = tikz_diagram(trees(4)[-1])
    assert r"\begin{feynman}" in code and r"\diagram*" in code
    vertices = [line for line in code.splitlines() if line.startswith(r"\vertex")]
    assert len(vertices) == 4 + 3 + 1  # leaves, vertices, output
    assert all(" at (" in v for v in vertices)
    assert "layered layout" not in code and "spring" not in code


def test_shape_listing_from_order_five():
    text = rules_text(5, 2)
    assert "Listed by shape (12 shapes)" in text
    assert text.count("\nD_") == 12
    assert "236 labelled trees" in text
    assert rules_text(4, 2, by_shape=True).count("\nD_") == 5
    assert rules_text(5, 2, by_shape=False).count("\nD_") == 236


def test_expanding_too_many_terms_is_refused():
    from feynmlp import FeynmlpError
    with pytest.raises(FeynmlpError, match="--expand-layers"):
        rules_text(6, 8, by_shape=False, expand_layers=True)


# -- pdflatex --------------------------------------------------------------------------------

def _compile(tmp_path, name, source):
    (tmp_path / f"{name}.tex").write_text(source)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = proc.stdout[-3000:]
    assert proc.returncode == 0, log
    pdf = tmp_path / f"{name}.pdf"
    assert pdf.exists() and pdf.read_bytes()[:5] == b"%PDF-"
    return proc.stdout


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.parametrize("k,kwargs", [
    (1, {}),
    (2, {}),
    (3, dict(expand_layers=True)),
    (5, {}),
], ids=["order1", "order2", "order3-expanded", "order5-by-shape"])
def test_latex_document_compiles(tmp_path, k, kwargs):
    log = _compile(tmp_path, f"rules{k}", rules_latex(k, 3 if k == 3 else 2, **kwargs))
    assert "Overfull" not in log


# -- the command -----------------------------------------------------------------------------

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("order,needle", [("0", "at least 1"), ("-2", "at least 1"),
                                          ("8", "above the maximum 7")])
def test_bad_order_exits_2_with_one_line(capsys, order, needle):
    assert main(["rules", "--order", order]) == 2
    line = _one_error_line(capsys)
    assert needle in line and "--order" in line


def test_bad_depth_exits_2(capsys):
    assert main(["rules", "--order", "2", "--depth", "0"]) == 2
    assert "--depth" in _one_error_line(capsys)


def test_text_to_stdout(capsys):
    assert main(["rules", "--order", "2"]) == 0
    out = capsys.readouterr().out
    assert "D_(1,2)" in out and "G(l_a)[a,2]" in out


def test_latex_and_text_files(tmp_path, capsys):
    tex = tmp_path / "r.tex"
    assert main(["rules", "--order", "3", "--format", "latex", "--out", str(tex)]) == 0
    assert tex.read_text().startswith("% Generated by feynmlp")
    assert str(tex) in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["r.tex"]


def test_png_is_written(tmp_path):
    from PIL import Image
    png = tmp_path / "o3.png"
    assert main(["rules", "--order", "3", "--format", "png", "--out", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        w, h = im.size
        assert w > 300 and h > 200
        # not a blank canvas
        assert sum(1 for count in im.convert("L").histogram() if count) > 10


def test_png_default_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["rules", "--order", "2", "--format", "png"]) == 0
    assert os.listdir(tmp_path) == ["feynmlp-rules-order2.png"]


def test_missing_folder_exits_2_and_writes_nothing(tmp_path, capsys):
    target = tmp_path / "missing" / "r.tex"
    assert main(["rules", "--order", "2", "--format", "latex", "--out", str(target)]) == 2
    assert "does not exist" in _one_error_line(capsys)
    assert os.listdir(tmp_path) == []


def test_unwritable_folder_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:
            # root ignores permission bits: refuse the folder as a non-root user would see it
            real_access = os.access
            monkeypatch.setattr(rules.os, "access",
                                lambda p, m: False if os.path.abspath(p) == str(folder)
                                else real_access(p, m))
        code = main(["rules", "--order", "3", "--format", "png", "--out", str(folder / "o.png")])
        assert code == 2
        line = _one_error_line(capsys)
        assert "not writable" in line and str(folder) in line
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o755)


def test_failed_temporary_file_exits_2(tmp_path, capsys, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    from feynmlp import files  # every writer of feynmlp creates its temporary there
    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    assert main(["rules", "--order", "2", "--format", "latex", "--out", str(tmp_path / "r.tex")]) == 2
    assert "Permission denied" in _one_error_line(capsys)
    assert os.listdir(tmp_path) == []


def test_failure_mid_write_leaves_old_file_and_no_temporary(tmp_path, capsys, monkeypatch):
    from feynmlp.codegen import diagram_drawing
    target = tmp_path / "o.png"
    target.write_bytes(b"old")

    def half_write(entries, fh, title=""):
        fh.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(diagram_drawing, "write_png_grid", half_write)
    assert main(["rules", "--order", "2", "--format", "png", "--out", str(target)]) == 2
    assert "No space left" in _one_error_line(capsys)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["o.png"]


def test_help_explains_the_pieces(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rules", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("propagator", "vertex", "Jacobian", "latex", "png", "pdflatex", "--depth",
                 "--expand-layers", "shape"):
        assert word in out


def test_rules_module_imports_light():
    code = ("import sys, feynmlp.codegen.rules; "
            "print(*[m in sys.modules for m in ('sympy', 'matplotlib', 'jinja2')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_latex_rules_constants_are_consistent():
    assert latex_rules.SHAPE_LISTING_FROM_ORDER == 5
    assert rules.MAX_ORDER == 7


def test_output_is_independent_of_hash_seed():
    code = ("import sys; from feynmlp.codegen.latex_rules import rules_latex, rules_text; "
            "sys.stdout.write(rules_latex(4, 2, by_shape=True) + rules_text(3, 3, expand_layers=True))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert outs[0] == outs[1] and len(outs[0]) > 1000
