"""The activation registry (feynmlp.activation_names) is the one place activations are known.

In: the registry's tables, torch's activation modules and autograd (the independent reference),
and a scratch copy of the package with one registry value changed. Out: checks that
- every NumPy function of MLP(x), and the first-order kernels of the piecewise-linear ones,
  equal torch's module (values and autograd derivatives) on a grid;
- every reader agrees with the registry: the code generator's names, from_torch's accepted
  modules and their settings, the Born toolkit's training activations;
- changing the leaky slope in the registry alone changes MLP(x), from_torch, the generated
  kernel and the codegen hash together (so no reader keeps a copy of it);
- a malformed custom expression gets the same refusal from MLP(...) and from the generator;
- importing the registry loads neither SymPy, Jinja2 nor torch.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from feynmlp import MLP, activation_names as registry
from feynmlp.codegen.activations import builtin_names, custom_activation, get_activation
from feynmlp.errors import UnsupportedActivationError
from feynmlp.kernels import kernel_module

torch = pytest.importorskip("torch")

GRID = np.concatenate([np.linspace(-8.0, 8.0, 161) + 0.013, [-700.0, -30.0, 30.0, 700.0]])


def _torch_module(name):
    return getattr(torch.nn, registry.TORCH_MODULES[name])()


@pytest.mark.parametrize("name", sorted(registry.TORCH_MODULES))
def test_numpy_functions_equal_torch_modules(name):
    want = _torch_module(name)(torch.tensor(GRID, dtype=torch.float64)).numpy()
    # GELU: both sides compute 1 + erf(z / sqrt(2)), which cancels for z < 0, each rounding its own way.
    atol = 1e-15 if name == "gelu" else 1e-300
    np.testing.assert_allclose(registry.NUMPY_FUNCTIONS[name](GRID), want, rtol=1e-14, atol=atol)


@pytest.mark.parametrize("name, reference", [("sin", np.sin), ("cos", np.cos), ("exp", np.exp),
                                             ("identity", lambda z: z)])
def test_numpy_functions_without_torch_module(name, reference):
    grid = GRID[np.abs(GRID) < 100]
    np.testing.assert_array_equal(registry.NUMPY_FUNCTIONS[name](grid), reference(grid))


@pytest.mark.parametrize("name", registry.RELU_LIKE)
def test_piecewise_linear_kernels_equal_torch_value_and_derivative(name):
    z = torch.tensor(GRID, dtype=torch.float64, requires_grad=True)
    value = _torch_module(name)(z)
    (derivative,) = torch.autograd.grad(value.sum(), z)
    out = np.empty((GRID.size, 2))
    kernel_module(name, 1).taylor_derivatives(GRID, out)
    np.testing.assert_array_equal(out[:, 0], value.detach().numpy())
    np.testing.assert_array_equal(out[:, 1], derivative.numpy())
    # and the symbolic definition the generator records for it
    definition = sp.lambdify(sp.Symbol("x", real=True), get_activation(name).definition, "math")
    np.testing.assert_allclose([definition(z) for z in GRID], value.detach().numpy(), rtol=1e-15)


def test_every_reader_lists_the_registry_names():
    assert builtin_names() == registry.BUILTIN_ACTIVATIONS + registry.RELU_LIKE
    assert set(registry.NUMPY_FUNCTIONS) == set(builtin_names())
    assert set(registry.TORCH_MODULES) <= set(builtin_names())
    assert set(registry.PIECEWISE_LINEAR) == set(registry.RELU_LIKE)
    for alias, name in registry.ALIASES.items():
        assert registry.canonical_name(alias.upper()) == name
    from feynmlp.born.training import TrainConfig

    for name in registry.TORCH_MODULES:
        if name in registry.RELU_LIKE:
            with pytest.raises(Exception, match="smooth"):
                TrainConfig(activation=name)
        else:
            assert TrainConfig(activation=name).activation == name


@pytest.mark.parametrize("name", sorted(registry.TORCH_MODULES))
def test_from_torch_reads_every_registry_module(name):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), _torch_module(name), torch.nn.Linear(3, 1)).double()
    mlp = MLP.from_torch(net)
    assert mlp.hidden_activations == [name]
    x = np.random.default_rng(1).normal(size=(7, 2)) * 3
    np.testing.assert_allclose(mlp(x), net(torch.tensor(x)).detach().numpy(), rtol=1e-13, atol=1e-15)


def test_from_torch_refuses_other_settings_by_the_registry_values():
    for module, text in ((torch.nn.LeakyReLU(0.2), "negative_slope=0.2"),
                         (torch.nn.Hardtanh(-2.0, 2.0), "Hardtanh(-1, 1)")):
        with pytest.raises(UnsupportedActivationError, match=text.replace("(", r"\(").replace(")", r"\)")):
            MLP.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), module, torch.nn.Linear(2, 1)))


_x, _y = sp.symbols("x y")


@pytest.mark.parametrize("expr, words", [
    (_x * _y, ["exactly one free symbol", "x, y"]),
    (sp.Function("f")(_x), ["undefined function", "f(x)"]),
    (sp.I * _x, ["imaginary unit", "I*x"]),
    (sp.zoo * _x, ["infinite or undefined"]),
])
def test_custom_expressions_are_refused_alike_by_mlp_and_generator(expr, words):
    messages = []
    for build in (lambda: MLP([np.ones((2, 2)), np.ones((1, 2))], [None, None], activation=expr),
                  lambda: custom_activation(expr)):
        with pytest.raises(UnsupportedActivationError) as info:
            build()
        messages.append(str(info.value))
        for word in words:
            assert word in messages[-1]
    assert messages[0].split(": ", 1)[1] == messages[1].split(": ", 1)[1]


def test_generator_alone_refuses_non_smooth_expressions():
    # MLP(x) of a piecewise custom activation is defined; its Taylor coefficients are not.
    mlp = MLP([np.ones((2, 2)), np.ones((1, 2))], [None, None], activation=sp.Max(_x, 0))
    np.testing.assert_allclose(mlp(np.array([[1.0, -3.0]])), [[0.0]])
    with pytest.raises(UnsupportedActivationError, match="not smooth"):
        custom_activation(sp.Max(_x, 0))


def test_registry_import_is_light():
    code = textwrap.dedent("""
        import sys
        from feynmlp import activation_names as r
        r.canonical_name("swish"); r.NUMPY_FUNCTIONS["leaky_relu"](__import__("numpy").ones(2))
        import feynmlp.born.training
        print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("sympy", "jinja2", "torch"))))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_leaky_slope_lives_in_the_registry_only(tmp_path):
    import feynmlp

    runtime = Path(feynmlp.__file__).parent
    package = tmp_path / "feynmlp"
    shutil.copytree(runtime, package, ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("codegen", "generated", "templates"):
        if not (package / sub).exists():
            shutil.copytree(runtime.parent / sub, package / sub, ignore=shutil.ignore_patterns("__pycache__"))
    source = package / "activation_names.py"
    assert source.read_text().count("LEAKY_SLOPE = 0.01\n") == 1
    source.write_text(source.read_text().replace("LEAKY_SLOPE = 0.01\n", "LEAKY_SLOPE = 0.25\n"))
    code = textwrap.dedent("""
        import json
        import numpy as np
        import torch
        from feynmlp import MLP
        from feynmlp.codegen.generate import render_kernel
        from feynmlp.errors import StaleKernelError, UnsupportedActivationError
        from feynmlp.kernel_signature import codegen_hash
        from feynmlp.kernels import kernel_module

        report = {"hash": codegen_hash()}
        net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.LeakyReLU(0.25), torch.nn.Linear(1, 1)).double()
        with torch.no_grad():
            net[0].weight.fill_(1.0); net[0].bias.fill_(0.0); net[2].weight.fill_(1.0); net[2].bias.fill_(0.0)
        report["mlp"] = MLP.from_torch(net)(np.array([[-2.0]])).tolist()
        try:
            MLP.from_torch(torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.LeakyReLU(), torch.nn.Linear(1, 1)))
        except UnsupportedActivationError as exc:
            report["default_slope_refused"] = str(exc)
        text = render_kernel("leaky_relu", 1).text
        report["kernel_lines"] = [line.strip() for line in text.splitlines() if line.strip().startswith("s")][:2]
        try:
            kernel_module("leaky_relu", 1)
        except StaleKernelError as exc:
            report["stale"] = str(exc)
        print(json.dumps(report))
    """)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}", PYTHONSAFEPATH="", PYTHONDONTWRITEBYTECODE="1",
               FEYNMLP_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    from feynmlp.kernel_signature import codegen_hash

    assert report["hash"] != codegen_hash()
    assert report["mlp"] == [[-0.5]]  # 0.25 * -2
    assert "LeakyReLU(negative_slope=0.01)" in report["default_slope_refused"]
    assert report["kernel_lines"] == ["s0 = x if x > 0.0 else 0.25 * x", "s1 = 1.0 if x > 0.0 else 0.25"]
    assert "generate-kernels --all" in report["stale"]
