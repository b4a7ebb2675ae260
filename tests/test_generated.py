"""generated/ is current, reproducible byte for byte, and trusted only when intact; the
runtime never imports the symbolic side."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

from feynmlp.codegen import generate


def test_generated_folder_is_up_to_date():
    diffs = generate.check_kernels(generate.shipped_requests(), generate.default_output_folder())
    assert not diffs, "generated/ is stale; run `feynmlp generate-kernels --all`\n" + "".join(diffs)[:4000]


def test_generation_is_deterministic_across_hash_seeds(tmp_path):
    outputs = []
    for seed in ("0", "12345"):
        folder = tmp_path / f"seed{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-m", "feynmlp", "generate-kernels", "--all", "--quiet", "--out", str(folder)],
                       check=True, env=env)
        subprocess.run([sys.executable, "-m", "feynmlp", "generate-kernels", "--order", "6", "--activation", "gelu",
                        "--quiet", "--out", str(folder)], check=True, env=env)
        outputs.append({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    assert outputs[0] == outputs[1]
    # + gelu order 6 + manifest, + the two operator rule modules and their manifest
    assert len(outputs[0]) == len(generate.shipped_requests()) + 2 + 3


def test_every_generated_file_has_header_and_manifest_entry():
    folder = generate.default_output_folder()
    manifest = json.loads((folder / "manifest.json").read_text())
    names = sorted(p.name for p in folder.glob("*_order*.py"))
    assert names == sorted(manifest["kernels"])
    for name in names:
        head = (folder / name).read_text().splitlines()[:4]
        assert "DO NOT EDIT" in head[0] and "kernel_module.py.jinja" in head[0]
        assert manifest["kernels"][name]["signature"] in head[2]
        assert head[3].startswith("# Refresh with: feynmlp generate-kernels")


def test_unchanged_files_are_not_rewritten(tmp_path):
    generate.write_kernels([("tanh", 2)], tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert generate.write_kernels([("tanh", 2)], tmp_path) == []
    assert before == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}


def test_import_leaves_sympy_and_jinja_out():
    code = textwrap.dedent("""
        import sys, numpy as np
        import feynmlp
        from feynmlp.multivariate import multivariate_series
        multivariate_series([np.ones((2, 2)), np.ones((1, 2))], [np.zeros(2), np.zeros(1)],
                                    ["tanh"], None, np.zeros((1, 2)), 3)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sympy", "jinja2"))
        print(",".join(loaded))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_edited_kernel_is_refused(tmp_path):
    # Copy the package to a scratch folder, edit one shipped kernel, and import from there.
    import feynmlp

    package = tmp_path / "feynmlp"
    shutil.copytree(os.path.dirname(feynmlp.__file__), package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for sub, source in (("codegen", "codegen"), ("generated", "generated"), ("templates", "templates")):
        target = package / sub
        if not target.exists():
            shutil.copytree(os.path.join(os.path.dirname(feynmlp.__file__), "..", source), target,
                            ignore=shutil.ignore_patterns("__pycache__"))
    kernel = package / "generated" / "tanh_order2.py"
    kernel.write_text(kernel.read_text().replace("s0 = t", "s0 = t + 1e-3"))
    code = textwrap.dedent("""
        from feynmlp.kernels import kernel_module
        from feynmlp.errors import StaleKernelError
        try:
            kernel_module("tanh", 2)
        except StaleKernelError as exc:
            print("refused:", exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONSAFEPATH=""))
    assert "refused:" in result.stdout and "tanh_order2.py" in result.stdout, result.stdout + result.stderr
    assert "feynmlp generate-kernels --order 2 --activation tanh" in result.stdout
