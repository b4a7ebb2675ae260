"""Packaging: the wheel carries one namespace (feynmlp) with its kernels and templates, and its
console scripts work from a fresh virtual environment; CI runs the README's test command."""
import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True)
    (path,) = out.glob("feynmlp-*.whl")
    return path


def test_wheel_has_one_namespace_with_kernels_and_templates(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"feynmlp"}, top
    for required in ("feynmlp/__init__.py", "feynmlp/codegen/generate.py", "feynmlp/generated/tanh_order3.py",
                     "feynmlp/generated/manifest.json", "feynmlp/generated/operator_manifest.json",
                     "feynmlp/generated/laplacian_operator.py", "feynmlp/templates/operator_module.py.jinja",
                     "feynmlp/templates/kernel_module.py.jinja",
                     "feynmlp/born/__init__.py"):
        assert required in names, required


def test_console_scripts_from_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    # Dependencies come from the test environment's site-packages (a plain path entry: its
    # .pth files, including the editable install of this checkout, are not processed).
    child_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    Path(child_site, "parent_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["FEYNMLP_CACHE_DIR"] = str(tmp_path / "cache")
    where = subprocess.run([str(python), "-c", "import feynmlp; print(feynmlp.__file__)"], cwd=tmp_path,
                           check=True, capture_output=True, text=True, env=env).stdout.strip()
    assert where.startswith(str(env_dir)), where
    result = subprocess.run([str(bin_dir / "generate-kernels"), "--order", "2", "--activation", "sin",
                             "--out", str(tmp_path / "k")], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k" / "sin_order2.py").is_file()
    check = subprocess.run([str(bin_dir / "feynmlp"), "generate-kernels", "--all", "--check", "-q"], cwd=tmp_path,
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr
    demo = subprocess.run([str(bin_dir / "feynmlp"), "demo", "--order", "2"], cwd=tmp_path, capture_output=True,
                          text=True, env=env)
    assert demo.returncode == 0, demo.stderr
    assert "sum of all diagrams" in demo.stdout


def _readme_command(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```(?:bash|sh)?\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = _readme_command("Run the tests")
    ci = (REPO / ".ci" / "run").read_text()
    assert command in ci.splitlines(), f"README's test command {command!r} is not a line of .ci/run"
