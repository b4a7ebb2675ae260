"""feynmlp.laplacian and feynmlp.biharmonic against torch.func, and their rules against SymPy.

References, independent of feynmlp's expansion code:
- torch: the network in float64 (helpers.torch_reference.torch_network), its dense Hessian and
  fourth-derivative tensors by nested torch.func.jacfwd, contracted with the operator (the
  trace over the differentiated inputs; sum_ij of d4f/dx_i dx_i dx_j dx_j); agreement to a
  relative 1e-10 (max |got - want| <= 1e-10 max |want|, per case).
- SymPy: the collapsed per-neuron rules of feynmlp.codegen.operator_rules against `diff` of
  s(z(x)) for an undefined s and a polynomial z in two and three variables.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

import feynmlp
from feynmlp.codegen import operator_rules
from helpers.networks import random_mlp
from helpers.torch_reference import assert_relative_close, torch_derivative_tensors, torch_network

RTOL = 1e-10


def reference(mlp, points, wrt=None, custom=None):
    """(laplacian, biharmonic) of every point, (batch, n_out) each, from torch's tensors."""
    f = torch_network(mlp, custom)
    variables = list(range(mlp.n_inputs)) if wrt is None else list(wrt)
    laplacians, biharmonics = [], []
    for x in points:
        tensors = torch_derivative_tensors(f, x, 4)
        hessian = tensors[2][:, variables][:, :, variables]
        fourth = tensors[4][:, variables][:, :, variables][:, :, :, variables][:, :, :, :, variables]
        laplacians.append(np.einsum("oii->o", hessian))
        biharmonics.append(np.einsum("oiijj->o", fourth))
    return np.array(laplacians), np.array(biharmonics)


CASES = [
    # (layer sizes, hidden activations, output activation, wrt)
    ((3, 5, 1), "tanh", None, None),
    ((4, 6, 5, 2), "tanh", None, None),
    ((4, 6, 5, 2), "sigmoid", None, [0, 2]),
    ((3, 4, 4, 4, 3), ["softplus", "silu", "gelu"], None, None),
    ((5, 6, 3), "sin", None, [4, 1]),
    ((3, 5, 4, 1), "cos", "sigmoid", None),
    ((2, 3, 3, 3), ["exp", "tanh"], None, [1]),
    ((4, 7, 2), "gelu", "tanh", [0, 1, 3]),
    ((3, 6, 5, 2), "silu", "softplus", [2, 0]),
    ((3, 4, 2), "identity", None, None),
    ((4, 3), "tanh", None, None),  # no hidden layer: both operators vanish
]


@pytest.mark.parametrize("sizes, activations, output, wrt", CASES)
def test_against_torch(sizes, activations, output, wrt):
    rng = np.random.default_rng(len(sizes) * 10 + sizes[0])
    mlp = random_mlp(rng, sizes, activations, output)
    points = rng.normal(size=(3, sizes[0]))
    want_lap, want_bih = reference(mlp, points, wrt)
    assert_relative_close(feynmlp.laplacian(mlp, points, wrt=wrt), want_lap, RTOL, "laplacian")
    assert_relative_close(feynmlp.biharmonic(mlp, points, wrt=wrt), want_bih, RTOL, "biharmonic")


def test_single_point_shape_and_custom_activation():
    x = sp.Symbol("x")
    rng = np.random.default_rng(3)
    mlp = random_mlp(rng, (3, 5, 4, 2), [x * sp.tanh(x), "tanh"])
    custom = {str(x * sp.tanh(x)): lambda z: z * torch.tanh(z)}
    point = rng.normal(size=3)
    want_lap, want_bih = reference(mlp, point[None], custom=custom)
    lap, bih = feynmlp.laplacian(mlp, point), feynmlp.biharmonic(mlp, point)
    assert lap.shape == bih.shape == (2,)
    assert_relative_close(lap, want_lap[0], RTOL, "laplacian")
    assert_relative_close(bih, want_bih[0], RTOL, "biharmonic")


def test_many_points_and_float32():
    rng = np.random.default_rng(5)
    mlp = random_mlp(rng, (6, 8, 8, 1), "tanh")
    points = rng.normal(size=(40, 6))
    want_lap, want_bih = reference(mlp, points[:5])
    lap = feynmlp.laplacian(mlp, points)
    assert lap.shape == (40, 1)
    assert_relative_close(lap[:5], want_lap, RTOL, "laplacian")
    assert_relative_close(feynmlp.biharmonic(mlp, points)[:5], want_bih, RTOL, "biharmonic")
    single = feynmlp.laplacian(mlp, points, dtype=np.float32)
    assert single.dtype == np.float32
    assert_relative_close(single[:5], want_lap, 1e-4, "float32 laplacian")


@pytest.mark.parametrize("activations, output", [("tanh", None), (["sigmoid", "exp"], "tanh"), ("gelu", None)])
def test_blocks_of_many_points_in_both_kernel_paths(monkeypatch, activations, output):
    # Blocks of 16 points: the first, a middle and the last point of a batch that splits into
    # uneven blocks over the threads, against torch. Activations with an array form take the
    # fused float64 kernels (rules.push_network); GELU, and float32, the NumPy path.
    from feynmlp import operators
    from feynmlp.kernels import resolve_kernels

    rng = np.random.default_rng(21)
    mlp = random_mlp(rng, (4, 7, 6, 2), activations, output)
    kernels = resolve_kernels(mlp.hidden_activations, mlp.output_activation, 2)
    fused = operators._array_forms("laplacian", kernels, np.float64, 3) is not None
    assert fused == (activations != "gelu")
    monkeypatch.setattr(operators, "_BLOCK_BYTES", 16 * 5 * 7 * 8)  # 5 rows of the widest layer, 7
    monkeypatch.setattr(operators, "_LEAST_BLOCK_POINTS", 1)
    monkeypatch.setattr(operators, "_FUSED_BLOCK_BYTES", 16 * 5 * 7 * 8)
    points = rng.normal(size=(203, 4))
    picked = [0, 101, 202]
    want_lap, _ = reference(mlp, points[picked], wrt=[3, 1, 0])
    got = feynmlp.laplacian(mlp, points, wrt=[3, 1, 0])
    assert_relative_close(got[picked], want_lap, RTOL, "laplacian")
    assert_relative_close(feynmlp.laplacian(mlp, points, wrt=[3, 1, 0], dtype=np.float32)[picked], want_lap, 1e-4,
                          "float32 laplacian")


def test_fused_blocks_are_shared_by_whichever_threads_run(monkeypatch):
    # The fused kernels' threads take blocks from one counter: with the pool thread held busy
    # by other work, the calling thread takes every block itself and returns without waiting
    # for the pool; with it free, the two share them. Both give torch's numbers.
    import threading

    from feynmlp import operators, threads

    rng = np.random.default_rng(23)
    mlp = random_mlp(rng, (4, 7, 6, 2), "tanh")
    monkeypatch.setattr(operators, "_FUSED_BLOCK_BYTES", 16 * 6 * 7 * 8)  # blocks of 16 points
    points = rng.normal(size=(203, 4))
    picked = [0, 101, 202]
    want_lap, _ = reference(mlp, points[picked])
    # Two threads even where the process may run on one core: they then take turns.
    monkeypatch.setattr(threads, "count", lambda: 2)
    release = threading.Event()
    holding = threads._pool(1).submit(release.wait, 300)
    done = {}
    caller = threading.Thread(target=lambda: done.setdefault("lap", feynmlp.laplacian(mlp, points)))
    caller.start()
    caller.join(timeout=60)
    finished_while_held = not caller.is_alive()
    release.set()
    holding.result()
    caller.join()
    assert finished_while_held, "the call waited for a busy pool thread"
    assert_relative_close(done["lap"][picked], want_lap, RTOL, "laplacian, pool busy")
    assert_relative_close(feynmlp.laplacian(mlp, points)[picked], want_lap, RTOL, "laplacian, pool free")


def test_points_in_any_memory_layout():
    # The fused kernels address the points' elements in flat order: strided and Fortran-ordered
    # points must give the Laplacian of the same points.
    rng = np.random.default_rng(5)
    mlp = random_mlp(rng, (4, 6, 5, 2), "tanh")
    strided = rng.normal(size=(7, 8))[:, ::2]
    want_lap, _ = reference(mlp, np.ascontiguousarray(strided))
    for points in (strided, np.asfortranarray(strided)):
        assert_relative_close(feynmlp.laplacian(mlp, points), want_lap, RTOL, "laplacian")


def test_against_the_all_coefficients_path():
    # The Laplacian is sum_i 2 c_{2 e_i} of feynmlp.taylor's order-2 coefficients.
    rng = np.random.default_rng(8)
    mlp = random_mlp(rng, (5, 9, 9, 3), "softplus")
    points = rng.normal(size=(4, 5))
    expansion = feynmlp.taylor(mlp, points, 2)
    want = np.einsum("boii->bo", expansion.hessian)
    assert_relative_close(feynmlp.laplacian(mlp, points), want, RTOL, "laplacian")


# ----------------------------------------------------------------------------- the rules

def _carried_by_diff(z, xs):
    """The quantities each neuron carries, computed from a concrete z by `diff`."""
    d = len(xs)
    J = [sp.diff(z, a) for a in xs]
    H = [[sp.diff(z, a, b) for b in xs] for a in xs]
    lap = sum(H[i][i] for i in range(d))
    L3 = [sum(sp.diff(z, xs[i], xs[i], a) for i in range(d)) for a in xs]
    B = sum(sp.diff(z, xs[i], xs[i], xs[j], xs[j]) for i in range(d) for j in range(d))
    return J, H, lap, L3, B


@pytest.mark.parametrize("d", [2, 3])
def test_collapsed_rules_against_sympy_diff(d):
    xs = sp.symbols(f"x0:{d}")
    rng = np.random.default_rng(d)
    # A polynomial with nonzero derivatives of every order up to 4 in every variable.
    monomials = [sp.Integer(1)] + list(xs) + [a * b for a in xs for b in xs] + [a**3 * b for a in xs for b in xs] \
        + [a**2 * b**2 for a in xs for b in xs]
    z = sum(sp.Rational(int(c), 7) * m for c, m in zip(rng.integers(-9, 10, size=len(monomials)), monomials))
    s = sp.Function("s")
    u = s(z)
    J, H, lap, L3, B = _carried_by_diff(z, xs)
    Ju, Hu, lapu, L3u, Bu = _carried_by_diff(u, xs)
    w = sp.Symbol("w")
    derivs = {operator_rules.derivative_symbols(4)[m]: sp.diff(s(w), w, m).subs(w, z) if m else s(z)
              for m in range(5)}
    jj = sum(j * j for j in J)
    hj = [sum(H[a][b] * J[b] for b in range(d)) for a in range(d)]
    values = {"jj": jj, "lap": lap, "jl3": sum(J[a] * L3[a] for a in range(d)),
              "hf": sum(H[a][b] ** 2 for a in range(d) for b in range(d)),
              "jhj": sum(J[a] * hj[a] for a in range(d)), "B": B}

    def evaluate(expression, a=0, b=0):
        local = dict(values, J_a=J[a], J_b=J[b], H_ab=H[a][b], L3_a=L3[a], hj_a=hj[a])
        mapping = {operator_rules.SYMBOLS[k]: v for k, v in local.items()}
        mapping.update(derivs)
        return expression.xreplace(mapping)

    point = {x: sp.Rational(k + 2, 5) for k, x in enumerate(xs)}

    def same(got, want):
        # s and its derivatives stay symbolic; the polynomial is evaluated at a rational point.
        difference = sp.expand((got - want).subs(point).doit())
        assert difference == 0, difference

    lap_rules = operator_rules.rules("laplacian")
    same(evaluate(lap_rules["lap"]), lapu)
    bi = operator_rules.rules("biharmonic")
    same(evaluate(bi["B"]), Bu)
    for a in range(d):
        same(evaluate(bi["J"], a), Ju[a])
        same(evaluate(bi["L3"], a), L3u[a])
        for b in range(d):
            same(evaluate(bi["H"], a, b), Hu[a][b])


def test_rule_terms_count_every_set_partition():
    # Bell numbers: 2 slots have 2 set partitions, 3 have 5, 4 have 15.
    for slots, bell in (("ii", 2), ("iia", 5), ("iijj", 15)):
        total = sum(sum(by_key.values()) for by_key in operator_rules.collapsed_terms(slots).values())
        assert total == bell


def test_shipped_operator_kernels_are_current():
    from feynmlp.codegen import generate, operator_generate

    diffs = operator_generate.check_operators(generate.default_output_folder())
    assert not diffs, "generated/ operator kernels are stale; run `feynmlp generate-kernels --all`\n" + "".join(diffs)


def test_edited_operator_kernel_is_refused(tmp_path):
    # A copy of the package with one rule kernel edited: loading it must fail, naming the file.
    import os
    import shutil
    import subprocess
    import sys
    import textwrap

    root = os.path.dirname(feynmlp.__file__)
    package = tmp_path / "feynmlp"
    shutil.copytree(root, package, ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("codegen", "generated", "templates"):
        if not (package / sub).exists():
            shutil.copytree(os.path.join(root, "..", sub), package / sub, ignore=shutil.ignore_patterns("__pycache__"))
    kernel = package / "generated" / "laplacian_operator.py"
    kernel.write_text(kernel.read_text().replace("lap_new = jj_k*s2 + lap_k*s1", "lap_new = jj_k*s2"))
    code = textwrap.dedent("""
        import numpy as np
        import feynmlp
        mlp = feynmlp.MLP([np.ones((2, 2)), np.ones((1, 2))], [np.zeros(2), np.zeros(1)], "tanh")
        try:
            print(feynmlp.laplacian(mlp, np.zeros(2)))
        except feynmlp.StaleKernelError as exc:
            print("refused:", exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONSAFEPATH=""))
    assert "refused:" in result.stdout and "laplacian_operator.py" in result.stdout, result.stdout + result.stderr
    assert "feynmlp generate-kernels --all" in result.stdout


def test_laplacian_against_folx():
    # folx's forward Laplacian (JAX, float64) is a third, independent implementation.
    import jax
    import jax.numpy as jnp
    from folx import forward_laplacian

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(11)
    mlp = random_mlp(rng, (6, 9, 8, 3), ["tanh", "gelu"])
    weights = [jnp.asarray(w) for w in mlp.weights]
    biases = [jnp.asarray(b) for b in mlp.biases]

    def f(x):
        h = jnp.tanh(weights[0] @ x + biases[0])
        h = jax.nn.gelu(weights[1] @ h + biases[1], approximate=False)
        return weights[2] @ h + biases[2]

    points = rng.normal(size=(5, 6))
    want = np.asarray(jax.vmap(forward_laplacian(f))(jnp.asarray(points)).laplacian)
    assert_relative_close(feynmlp.laplacian(mlp, points), want, RTOL, "laplacian against folx")


def test_bad_input_is_refused_as_in_taylor():
    mlp = random_mlp(np.random.default_rng(0), (3, 4, 1), "tanh")
    with pytest.raises(feynmlp.FeynmlpError, match=r"wrt holds input indices \[5\] outside 0..2"):
        feynmlp.laplacian(mlp, np.zeros(3), wrt=[5])
    with pytest.raises(feynmlp.FeynmlpError, match=r"x must have shape \(3,\) or \(batch, 3\)"):
        feynmlp.biharmonic(mlp, np.zeros(4))
    with pytest.raises(feynmlp.FeynmlpError, match="wrt holds repeated indices"):
        feynmlp.biharmonic(mlp, np.zeros(3), wrt=[1, 1])


def test_overflow_is_reported_or_propagated():
    # exp of exp of a large pre-activation overflows float64; the error names the operator.
    mlp = feynmlp.MLP([np.full((1, 1), 30.0), np.ones((1, 1)), np.ones((1, 1))], [np.zeros(1)] * 3, ["exp", "exp"])
    with pytest.raises(feynmlp.FeynmlpError, match="laplacian value"):
        feynmlp.laplacian(mlp, np.ones(1))
    assert not np.isfinite(feynmlp.laplacian(mlp, np.ones(1), nonfinite="propagate")).all()


def test_requests_beyond_the_memory_budget_are_refused(monkeypatch):
    mlp = random_mlp(np.random.default_rng(0), (8, 16, 1), "tanh")
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", "0.001")  # 1 MiB
    with pytest.raises(feynmlp.ResourceLimitError, match="the biharmonic in 8 variables for 20000 point"):
        feynmlp.biharmonic(mlp, np.zeros((20000, 8)))
    with pytest.raises(feynmlp.ResourceLimitError, match="an operator of order 3"):
        feynmlp.operator(mlp, np.zeros((20000, 8)), {(3, 0, 0, 0, 0, 0, 0, 0): 1.0})


def test_generate_kernels_check_covers_the_operator_kernels(tmp_path, capsys):
    from feynmlp.cli import generate_kernels_main

    assert generate_kernels_main(["--all", "--quiet", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "biharmonic_operator.py").exists() and (tmp_path / "operator_manifest.json").exists()
    assert generate_kernels_main(["--all", "--check", "--quiet", "--out", str(tmp_path)]) == 0
    kernel = tmp_path / "biharmonic_operator.py"
    kernel.write_text(kernel.read_text().replace("B_new = B*s1", "B_new = B*s1 + 1.0"))
    capsys.readouterr()
    assert generate_kernels_main(["--all", "--check", "--quiet", "--out", str(tmp_path)]) == 1
    assert "biharmonic_operator.py" in capsys.readouterr().out


def test_operators_leave_sympy_and_jinja_out():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys, numpy as np
        import feynmlp
        mlp = feynmlp.MLP([np.ones((2, 2)), np.ones((1, 2))], [np.zeros(2), np.zeros(1)], "tanh")
        feynmlp.laplacian(mlp, np.zeros(2)); feynmlp.biharmonic(mlp, np.zeros(2))
        feynmlp.operator(mlp, np.zeros(2), {(1, 2): 1.0}); feynmlp.operator(mlp, np.zeros(2), {(1, 1): 1.0})
        print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("sympy", "jinja2"))))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
