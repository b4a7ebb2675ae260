"""The codegen hash follows what the kernels compute, not the text around it.

In: a scratch copy of the installed package (runtime, codegen, generated, templates) with one
kind of edit applied to its sources. Out: checks, in a fresh interpreter importing the copy,
that
- edits that cannot change a kernel's text (docstrings, comments, argparse help, the messages
  of raise/assert, template comments, registry code no kernel reads, the command line) leave the codegen hash as it is, the shipped kernels
  loadable and `generate-kernels --check` content;
- edits that change a kernel's text (a constant of a derivative, the template, the leaky slope
  of the activation registry) change the hash
  and are caught three ways: `generate-kernels --check` exits 1, the check of
  tests/test_generated.py (`generate.check_kernels` over every shipped kernel) reports a diff,
  and the runtime refuses the shipped kernel with StaleKernelError.
The reference in every case is what the unedited installation says (its hash, its files).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import feynmlp
from feynmlp.kernel_signature import codegen_hash

_SUBPACKAGES = ("codegen", "generated", "templates")


def _copy_package(tmp_path: Path) -> Path:
    """tmp_path/feynmlp: the installed package with its sub-packages, no bytecode."""
    runtime = Path(feynmlp.__file__).parent
    package = tmp_path / "feynmlp"
    shutil.copytree(runtime, package, ignore=shutil.ignore_patterns("__pycache__"))
    for sub in _SUBPACKAGES:
        if not (package / sub).exists():
            shutil.copytree(runtime.parent / sub, package / sub, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def _edit(package: Path, old: str, new: str) -> Path:
    """Replace the one occurrence of `old` in the copy's sources; returns the edited file."""
    found = [p for p in sorted(package.rglob("*")) if p.is_file() and p.suffix in (".py", ".jinja")
             and "generated" not in p.parts and old in p.read_text()]
    assert len(found) == 1, f"{old!r} found in {found}"
    text = found[0].read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {found[0]}"
    found[0].write_text(text.replace(old, new))
    return found[0]


def _run_in_copy(tmp_path: Path, code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONSAFEPATH="", PYTHONDONTWRITEBYTECODE="1",
               FEYNMLP_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


_PROBE = """
    import contextlib, io, json
    import numpy as np
    import feynmlp
    from feynmlp.cli import main
    from feynmlp.codegen import generate
    from feynmlp.errors import StaleKernelError
    from feynmlp.kernel_signature import codegen_hash
    from feynmlp.kernels import kernel_module

    report = {"file": feynmlp.__file__, "hash": codegen_hash()}
    try:
        module = kernel_module("%(activation)s", %(order)d)
        out = np.empty((1, %(order)d + 1))
        module.taylor_derivatives(np.array([0.5]), out)
        report["values"] = out[0].tolist()
    except StaleKernelError as exc:
        report["stale"] = str(exc)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        report["check_status"] = main(["generate-kernels", "--order", "%(order)d", "--activation", "%(activation)s",
                                       "--check", "--quiet"])
    report["check_output"] = printed.getvalue()[-2000:]
    diffs = generate.check_kernels(generate.shipped_requests(), generate.default_output_folder())
    report["stale_files"] = sorted(d.splitlines()[0].split()[1] for d in diffs)
    print(json.dumps(report))
"""

# Edits that no generated kernel can see: (old text, new text), found in exactly one source.
_TEXT_ONLY_EDITS = [
    # a module docstring and a function docstring of the derivation
    ("In: an activation name (built-in) or a SymPy expression", "In: an activation's name or a SymPy expression"),
    ('"""Derive, print and render the kernel module of one (activation, order)."""',
     '"""Derive, print and render one kernel module (an edited docstring)."""'),
    # a comment beside kernel-shaping code
    ("# Canonical order: by valence, then by parts", "# Canonical order (edited comment): by valence, then parts"),
    # argparse help text of the generator's command line
    ('help="print nothing on success"', 'help="print nothing when all goes well"'),
    # error messages: of the activation names, of the derivation, of an assert
    ("so order {order} Taylor coefficients", "so the order-{order} Taylor coefficients"),
    ('f"no definition for built-in activation {name!r}"', 'f"built-in activation {name!r} has no definition"'),
    ('f"local name {name!r} clashes"', 'f"the local name {name!r} clashes with the template"'),
    # a template comment
    ("One kernel module per (activation, order)", "One generated kernel module per (activation, order)"),
    # code of the activation registry that no kernel reads: a NumPy function of MLP(x), a limit
    # of error messages
    ("return np.logaddexp(0.0, z)", "return np.logaddexp(z, 0.0)"),
    ("REPR_LIMIT = 80\n", "REPR_LIMIT = 100\n"),
    # code of the generator's command line
    ('print(f"generate-kernels: {len(requests)} kernel(s) in {folder} are up to date")',
     'print(f"generate-kernels: all {len(requests)} kernel(s) in {folder} are current")'),
]


def test_text_only_edits_keep_the_hash_and_the_shipped_kernels(tmp_path):
    package = _copy_package(tmp_path)
    for old, new in _TEXT_ONLY_EDITS:
        _edit(package, old, new)
    report = _run_in_copy(tmp_path, _PROBE % {"activation": "tanh", "order": 2})
    assert report["file"].startswith(str(package))
    assert report["hash"] == codegen_hash()
    assert "stale" not in report, report["stale"]
    t = float(__import__("numpy").tanh(0.5))
    # s0 = tanh, s1 = 1 - t^2, s2 = (-2 t (1 - t^2)) / 2
    assert report["values"] == pytest.approx([t, 1 - t * t, -t * (1 - t * t)], rel=1e-14)
    assert report["check_status"] == 0, report["check_output"]
    assert report["stale_files"] == []


# Edits that change generated text: (old, new, an activation and order whose kernel changes).
_KERNEL_EDITS = {
    "derivative constant": ("0.3989422804014327 * math.exp(-0.5 * x * x)", "0.3989422804014328 * math.exp(-0.5 * x * x)",
                            "gelu", 2),
    "template": ("        x = z[i]\n{% for line in derivative_lines %}", "        x = 1.0 * z[i]\n{% for line in derivative_lines %}",
                 "tanh", 2),
    "registry value": ("LEAKY_SLOPE = 0.01\n", "LEAKY_SLOPE = 0.02\n", "leaky_relu", 1),
}


@pytest.mark.parametrize("kind", sorted(_KERNEL_EDITS))
def test_kernel_shaping_edits_are_caught(tmp_path, kind):
    old, new, activation, order = _KERNEL_EDITS[kind]
    package = _copy_package(tmp_path)
    _edit(package, old, new)
    report = _run_in_copy(tmp_path, _PROBE % {"activation": activation, "order": order})
    assert report["file"].startswith(str(package))
    assert report["hash"] != codegen_hash()
    # the runtime
    assert "generate-kernels --all" in report.get("stale", ""), report
    # generate-kernels --check
    assert report["check_status"] == 1
    assert f"{activation}_order{order}.py" in report["check_output"]
    # the check of tests/test_generated.py
    assert any(name.endswith(f"{activation}_order{order}.py") for name in report["stale_files"])
    assert any(name.endswith("manifest.json") for name in report["stale_files"])


def test_normalised_python_ignores_messages_and_keeps_code():
    from feynmlp.kernel_signature import normalised_source

    base = textwrap.dedent('''\
        """Module doc."""
        import argparse, logging
        log = logging.getLogger("x")
        def f(x, parser):
            """Function doc."""
            # a comment
            assert x > 0, "x must be positive"
            parser.add_argument("--k", type=int, help="the order")
            log.debug("value %s", x)
            if x > 9:
                raise ValueError(f"too large: {x}")
            return 0.5 * x
    ''')
    reworded = (base.replace("Module doc.", "Other doc.").replace("Function doc.", "Changed.")
                .replace("# a comment", "# another comment").replace("must be positive", "is negative")
                .replace("the order", "expansion order").replace("value %s", "x = %s")
                .replace("too large: {x}", "{x} is too large"))
    assert normalised_source("m.py", reworded.encode()) == normalised_source("m.py", base.encode())
    for changed in (base.replace("0.5 * x", "0.25 * x"), base.replace("x > 9", "x > 8"),
                    base.replace("ValueError", "TypeError"), base.replace("type=int", "type=float"),
                    base.replace("x > 0, ", "x >= 0, ")):
        assert normalised_source("m.py", changed.encode()) != normalised_source("m.py", base.encode())


def test_normalised_template_ignores_comments_only():
    from feynmlp.kernel_signature import normalised_source

    base = "{# about the template #}\nx = {{ a }}\n"
    assert normalised_source("t.jinja", base.replace("about", "on").encode()) == normalised_source("t.jinja", base.encode())
    assert normalised_source("t.jinja", base.replace("x =", "y =").encode()) != normalised_source("t.jinja", base.encode())
