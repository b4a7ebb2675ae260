"""feynmlp.codegen.printing: SymPy expressions printed as Numba-compilable Python.

Exact-string tests, as SymPy's own printers have: each expected line is written by hand here
from the printer's rules (floats as 17-digit literals, integers and rationals as float
literals, integer powers 2..8 as repeated products, x**-1 as a division, functions from
`math`, common subexpressions hoisted into numbered temporaries in order of first use).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import sympy as sp

from feynmlp.codegen.printing import NumbaPrinter, assignments

x, y, z = sp.symbols("x y z")


@pytest.mark.parametrize("expr,text", [
    # Numbers: every literal is a float, so Numba never mixes integer arithmetic into a kernel.
    (sp.Integer(2), "2.0"),
    (sp.Integer(-7), "-7.0"),
    (sp.Rational(1, 3), "0.3333333333333333"),
    (sp.Rational(-5, 4), "-1.25"),
    (sp.Float(0.1), "0.1"),
    (sp.Float(1) / 3, "0.3333333333333333"),
    (sp.Float(2.5e-300), "2.5e-300"),
    # Integer powers 2..8: repeated products, the base in parentheses when it needs them.
    (x**2, "x*x"),
    (x**3, "x*x*x"),
    (x**8, "x*x*x*x*x*x*x*x"),
    ((x + 1)**2, "(x + 1.0)*(x + 1.0)"),
    ((x + y)**3, "(x + y)*(x + y)*(x + y)"),
    (x**2 * y, "x*x*y"),
    (4 * x**2, "4.0*x*x"),
    # x**-1: a division; other powers: **, the exponent a float literal.
    (1 / x, "1.0/x"),
    (1 / (x + y), "1.0/(x + y)"),
    (x**9, "x**9.0"),
    (x**-2, "x**(-2.0)"),
    (x**sp.Rational(1, 3), "x**(0.3333333333333333)"),
    (x**y, "x**y"),
    (sp.sqrt(x), "math.sqrt(x)"),
    (1 / sp.sqrt(x), "1.0/math.sqrt(x)"),
    # Rational coefficients of products: one float literal (in parentheses, a Rational having
    # the precedence of a product), so x/3 is one multiplication.
    (x / 3, "(0.3333333333333333)*x"),
    (sp.Rational(2, 3) * x, "(0.6666666666666666)*x"),
    (sp.Float(0.25) * x * y, "0.25*x*y"),
    (-x, "-x"),
    (x - y, "x - y"),
    (x * y + 1, "x*y + 1.0"),
    # Functions: from the math module, fully qualified.
    (sp.sin(x), "math.sin(x)"),
    (sp.tanh(x), "math.tanh(x)"),
    (sp.exp(-x), "math.exp(-x)"),
    (sp.log(x), "math.log(x)"),
    (sp.erf(x / sp.sqrt(2)), "math.erf((0.5)*math.sqrt(2.0)*x)"),
    (sp.cos(x)**2, "math.cos(x)*math.cos(x)"),
])
def test_expressions(expr, text):
    assert NumbaPrinter().doprint(expr) == text


def test_assignments_without_common_subexpressions():
    assert assignments(["a", "b"], [x + y, x * y]) == ["a = x + y", "b = x*y"]


def test_assignments_hoist_a_subexpression_shared_by_two_results():
    assert assignments(["a", "b"], [sp.sin(x) * sp.cos(x), sp.sin(x) + 1]) == [
        "_t0 = math.sin(x)",
        "a = _t0*math.cos(x)",
        "b = _t0 + 1.0",
    ]


def test_assignments_number_temporaries_in_order_of_first_use_with_the_given_prefix():
    expressions = [sp.exp(x + y) * (x + y)**2, sp.exp(x + y) + z]
    assert assignments(["r0", "r1"], expressions, temporary_prefix="s") == [
        "s0 = x + y",
        "s1 = math.exp(s0)",
        "r0 = s0*s0*s1",
        "r1 = s1 + z",
    ]


def test_assignments_are_the_same_bytes_whatever_the_hash_seed():
    # The generated kernels are compared byte for byte with a fresh generation: set iteration
    # order inside SymPy must not reach the output.
    program = (
        "import sympy as sp\n"
        "from feynmlp.codegen.printing import assignments\n"
        "x, y, z = sp.symbols('x y z')\n"
        "print('|'.join(assignments(['a', 'b'], [sp.sin(x + y)*sp.cos(z) + (x + y)**2, "
        "sp.cos(z)*sp.exp(x + y)])))\n")
    expected = "_t0 = x + y|_t1 = math.cos(z)|a = _t0*_t0 + _t1*math.sin(_t0)|b = _t1*math.exp(_t0)"
    for seed in ("0", "1", "12345"):
        run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                             env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == expected, f"PYTHONHASHSEED={seed}"
