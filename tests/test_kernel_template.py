"""The kernel template carries nothing a kernel does not use.

In: every shipped kernel module in generated/ (read as source, and imported). Out: checks that
- each module imports only what its code refers to (numba's njit, and math where it calls it);
- compose_multivariate takes exactly its arrays (series, derivatives, out and one index table
  and weight vector per valence), and its result for a one-variable network layer equals the
  Faa di Bruno composition written out by hand in this test.
"""
from __future__ import annotations

import ast
import importlib
import inspect

import numpy as np
import pytest

from feynmlp.codegen import generate


def _shipped_files():
    folder = generate.default_output_folder()
    return sorted(folder.glob("*_order*.py"))


def test_every_import_of_a_kernel_is_used():
    files = _shipped_files()
    assert len(files) == len(generate.shipped_requests())
    for path in files:
        tree = ast.parse(path.read_text())
        imported = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update({alias.asname or alias.name: alias.name for alias in node.names})
            elif isinstance(node, ast.ImportFrom):
                imported.update({alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names})
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        unused = sorted(name for name in imported if name not in used)
        assert not unused, f"{path.name} imports {unused} without using them"
        # numpy and numba.carray for the array form of the activation derivatives (and its C
        # callbacks), where the activation has one.
        assert "numba.njit" in imported.values(), path.name
        assert set(imported.values()) <= {"math", "numba.njit", "numba.carray", "numpy"}, path.name


@pytest.mark.parametrize("order", [2, 3, 4])
def test_compose_multivariate_takes_its_arrays_only(order):
    module = importlib.import_module(f"feynmlp.generated.tanh_order{order}")
    parameters = list(inspect.signature(module.compose_multivariate.py_func).parameters)
    tables = [name for m in range(2, order + 1) for name in (f"table{m}", f"weight{m}")]
    assert parameters == ["series", "derivatives", "out", *tables]


def test_compose_multivariate_one_variable_against_faa_di_bruno():
    # One variable, order 3: multi-indices 0, 1, 2, 3 are rows 0..3 (row j holds the coefficient
    # of h^j). The tables below list, for each target row, the source rows of each vertex term
    # and its weight (the number of orderings of the parts), as feynmlp.multi_index builds them.
    module = importlib.import_module("feynmlp.generated.sin_order3")
    rng = np.random.default_rng(3)
    points, neurons = 5, 4
    series = rng.normal(size=(points, 4, neurons))
    z0 = series[:, 0, :]
    derivatives = np.stack([np.sin(z0), np.cos(z0), -np.sin(z0) / 2, -np.cos(z0) / 6], axis=1)
    table2 = np.array([[2, 1, 1], [3, 1, 2]], dtype=np.int64)
    weight2 = np.array([1.0, 2.0])
    table3 = np.array([[3, 1, 1, 1]], dtype=np.int64)
    weight3 = np.array([1.0])
    out = np.empty_like(series)
    module.compose_multivariate(series, derivatives, out, table2, weight2, table3, weight3)
    p1, p2, p3 = series[:, 1, :], series[:, 2, :], series[:, 3, :]
    s1, s2, s3 = np.cos(z0), -np.sin(z0) / 2, -np.cos(z0) / 6
    # [sin(z0 + p1 t + p2 t^2 + p3 t^3)]_k for k = 0..3, expanded by hand.
    want = np.stack([np.sin(z0), s1 * p1, s1 * p2 + s2 * p1 ** 2, s1 * p3 + 2 * s2 * p1 * p2 + s3 * p1 ** 3], axis=1)
    np.testing.assert_allclose(out, want, rtol=1e-14, atol=1e-15)
    # and the same numbers through math.sin of the shifted argument, by finite differences
    t = 1e-3
    shifted = np.sin(z0 + p1 * t + p2 * t ** 2 + p3 * t ** 3)
    series_value = want[:, 0] + want[:, 1] * t + want[:, 2] * t ** 2 + want[:, 3] * t ** 3
    np.testing.assert_allclose(series_value, shifted, rtol=0, atol=1e-8)  # the t^4 remainder
