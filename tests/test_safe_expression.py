"""Tests of the whitelist parser for custom activations (feynmlp.codegen.safe_expression).

References are SymPy expressions built by hand and plain math evaluated numerically; hostile
payloads are checked to be refused and to have had no effect (a marker file stays absent).
"""
from __future__ import annotations

import ast
import builtins
import inspect
import math

import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feynmlp.codegen import safe_expression
from feynmlp.codegen.safe_expression import (
    MAX_DEPTH,
    MAX_TEXT_LENGTH,
    activation_text,
    parse_activation,
)
from feynmlp.errors import FeynmlpError, UnsupportedActivationError

x, z, t = sympy.symbols("x z t")

VALID = [
    ("x*tanh(x)", x * sympy.tanh(x), x),
    ("log(1 + exp(z))", sympy.log(1 + sympy.exp(z)), z),
    ("z/(1+exp(-z))", z / (1 + sympy.exp(-z)), z),
    ("sigmoid(x)", 1 / (1 + sympy.exp(-x)), x),
    ("softplus(t)", sympy.log(sympy.exp(t) + 1), t),
    ("x*(1 + erf(x/sqrt(2)))/2", x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2, x),
    ("-x**2 + +3*x - 1/3", -x**2 + 3 * x - sympy.Rational(1, 3), x),
    ("2**-1*x", x / 2, x),
    ("x**(1/3)", x ** sympy.Rational(1, 3), x),
    ("0.25*sin(x) + cos(x) - tan(x)", sympy.Float(0.25) * sympy.sin(x) + sympy.cos(x) - sympy.tan(x), x),
    ("sinh(x)*cosh(x) + atan(x) + asinh(x)", sympy.sinh(x) * sympy.cosh(x) + sympy.atan(x) + sympy.asinh(x), x),
    ("erfc(x) + pi*x + E", sympy.erfc(x) + sympy.pi * x + sympy.E, x),
    ("exp(-x**2/2)", sympy.exp(-x**2 / 2), x),
    ("sqrt(1 + x**2)", sympy.sqrt(1 + x**2), x),
    ("  (x)  ", x, x),
    ("1e-3*x + 1_000*x", sympy.Float(1e-3) * x + 1000 * x, x),
]


@pytest.mark.parametrize("text, expected, symbol", VALID, ids=[v[0] for v in VALID])
def test_valid_expressions_match_sympy_built_by_hand(text, expected, symbol):
    expr, sym = parse_activation(text)
    assert sym == symbol
    assert expr.free_symbols == {symbol}
    assert expr == expected or sympy.simplify(expr - expected) == 0
    # And numerically, against the same formula evaluated by SymPy at a few points.
    for value in (0.3, 0.7, 1.9):
        assert complex(expr.subs(sym, value).evalf()) == pytest.approx(
            complex(expected.subs(symbol, value).evalf()), rel=1e-13, abs=1e-13)


def test_values_against_math_module():
    # An independent reference: the same activations written with Python's math module.
    cases = {
        "x*tanh(x)": lambda v: v * math.tanh(v),
        "log(1 + exp(x))": lambda v: math.log1p(math.exp(v)),
        "sigmoid(x)": lambda v: 1 / (1 + math.exp(-v)),
        "x*(1 + erf(x/sqrt(2)))/2": lambda v: v * (1 + math.erf(v / math.sqrt(2))) / 2,
    }
    for text, reference in cases.items():
        expr, sym = parse_activation(text)
        f = sympy.lambdify(sym, expr, "math")
        for v in (-2.5, -0.1, 0.0, 0.4, 3.0):
            assert f(v) == pytest.approx(reference(v), rel=1e-14, abs=1e-15)


def test_named_variable():
    expr, sym = parse_activation("u*exp(u)", variable="u")
    assert sym == sympy.Symbol("u") and expr == sym * sympy.exp(sym)
    with pytest.raises(UnsupportedActivationError, match="'y'"):
        parse_activation("x*y", variable="x")
    with pytest.raises(UnsupportedActivationError, match="does not depend on 'x'"):
        parse_activation("2*pi", variable="x")


@pytest.mark.parametrize("name", ["__x__", "exp", "pi", "E", "1x", "lambda", "", "x y"])
def test_reserved_or_invalid_variable_names_are_refused(name):
    with pytest.raises(UnsupportedActivationError, match="variable name"):
        parse_activation("x", variable=name)


def _payloads(marker: str) -> list[str]:
    return [
        f"__import__('os').system('touch {marker}')",
        "__import__('os')",
        "().__class__.__bases__",
        "().__class__.__bases__[0].__subclasses__()",
        "lambda: 1",
        "(lambda: 1)()",
        "x.real",
        "x[0]",
        "[x for x in y]",
        "{x for x in y}",
        "(x for x in y)",
        "\"abc\"",
        "'x'*3",
        f"open('{marker}', 'w')",
        f"exec('open(\"{marker}\", \"w\")')",
        "eval('1')",
        "exp(x, y=1)",
        "exp(*x)",
        "exp(x, x)",
        "exp()",
        "x if x else 1",
        "x < 1",
        "x and 1",
        "(x := 1)",
        "[x]",
        "(x, x)",
        "{1: x}",
        "f'{x}'",
        "b'x'",
        "x @ x",
        "x // 2",
        "x % 2",
        "~x",
        "not x",
        "True + x",
        "None",
        "1j*x",
        "abs(x)",
        "max(x, 0)",
        "foo(x)",
        "exp",
        "x + y",
        "2",
        "pi",
        "x - x",
        "1/0 + x",
        "1e999*x",
        "9**9**9*x",
        # Constants SymPy would evaluate at ruinous cost, or that are not real.
        "sin(9.0**9**9)*x",
        "tan(exp(exp(exp(100)))) + x",
        "sqrt(2)**(9**40)*x",
        "(2/3)**99999999*x",
        "exp(1e308)*x",
        "log(-2)*x",
        "sqrt(-1)*x",
        "x" * 100_000,
        "(" * 10_000 + "x" + ")" * 10_000,
        "(" * 300 + "x" + ")" * 300,
        "-" * (MAX_DEPTH + 5) + "x",
        "exp(" * (MAX_DEPTH + 5) + "x" + ")" * (MAX_DEPTH + 5),
        "x\x00",
        "x;\nimport os",
        "import os",
        "x = 1",
        "",
        "   ",
        "123456789012345678901234567890123456789012345678901234567890*x",
    ]


def test_hostile_payloads_are_refused_and_nothing_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    # If anything were evaluated, these would notice too.
    calls = []
    monkeypatch.setattr(builtins, "eval", lambda *a, **k: calls.append(("eval", a)))
    monkeypatch.setattr(builtins, "exec", lambda *a, **k: calls.append(("exec", a)))
    for payload in _payloads(str(marker)):
        with pytest.raises(UnsupportedActivationError) as info:
            parse_activation(payload)
            pytest.fail(f"accepted {payload!r}")
        assert isinstance(info.value, FeynmlpError)
        assert "refused" in str(info.value) or "variable" in str(info.value)
        assert not marker.exists(), payload
    assert calls == []


@pytest.mark.parametrize("payload, reason", [
    ("x.real", "attribute access"),
    ("x[0]", "subscripting"),
    ("lambda: 1", "a lambda"),
    ("[x for x in y]", "a comprehension"),
    ("\"abc\"", "literal 'abc'"),
    ("exp(x, y=1)", "keyword argument"),
    ("__import__('os')", "dunder name '__import__'"),
    ("foo(x)", "unknown function 'foo'"),
    ("abs(x)", "not differentiable"),
    ("x + y", "exactly one variable"),
    ("x" * 100_000, "100000 characters"),
    ("-" * (MAX_DEPTH + 5) + "x", "nested more than"),
    ("9**9**9*x", "exponent larger than"),
    ("10**2000*x", "bits"),
    ("sqrt(2)**(9**40)*x", "exponent larger than"),
    ("tan(exp(exp(exp(100)))) + x", "does not fit in a float64"),
    ("log(-2)*x", "not a real number"),
    ("1/0 + x", "infinite or undefined"),
])
def test_refusals_say_why(payload, reason):
    with pytest.raises(UnsupportedActivationError, match=None) as info:
        parse_activation(payload)
    assert reason in str(info.value)


def test_non_string_input_is_refused():
    with pytest.raises(UnsupportedActivationError, match="string"):
        parse_activation(sympy.Symbol("x"))  # type: ignore[arg-type]


def test_moderate_nesting_and_length_are_accepted():
    text = "exp(" * 10 + "x" + ")" * 10
    expr, sym = parse_activation(text)
    expected = sym
    for _ in range(10):
        expected = sympy.exp(expected)
    assert expr == expected
    long_text = "+".join(["x"] * (MAX_TEXT_LENGTH // 4))
    assert len(long_text) <= MAX_TEXT_LENGTH
    expr, sym = parse_activation(long_text)
    assert expr == (MAX_TEXT_LENGTH // 4) * sym


def test_module_never_calls_eval_like_functions():
    # Static check of the source: the parser builds SymPy objects from AST nodes only.
    tree = ast.parse(inspect.getsource(safe_expression))
    forbidden = {"eval", "exec", "sympify", "parse_expr", "S", "compile", "__import__", "getattr"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            assert name not in forbidden, f"safe_expression calls {name} at line {node.lineno}"


# ---------------------------------------------------------------------------------------------
# activation_text: the inverse used when writing model files.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("expr", [
    x * sympy.tanh(x),
    1 / (1 + sympy.exp(-x)),
    sympy.Float(0.1234567890123456789) * z + sympy.Float(-1.5e-7) * z**2,
    x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2,
    x ** sympy.Rational(-1, 2) + sympy.pi * x,
    sympy.Float(1e300) * sympy.sin(x) + sympy.Float(5e-324) * x,
])
def test_activation_text_round_trips_exactly(expr):
    text, variable = activation_text(expr)
    parsed, symbol = parse_activation(text, variable=variable)
    assert symbol.name == variable
    assert parsed == expr.xreplace({next(iter(expr.free_symbols)): symbol})


def test_activation_text_keeps_every_float_bit():
    value = 0.1 + 0.2  # 0.30000000000000004: 15 printed digits would lose it
    text, variable = activation_text(sympy.Float(value) * x)
    parsed, symbol = parse_activation(text, variable)
    assert float(parsed.coeff(symbol)) == value


@pytest.mark.parametrize("expr, reason", [
    (sympy.Abs(x), "not differentiable"),
    (sympy.I * x, "'I'"),
    (sympy.Heaviside(x), "unknown function 'Heaviside'"),
    (sympy.Symbol("exp") * 2, "reserved"),
    (x * z, "exactly one free symbol"),
])
def test_activation_text_refuses_what_cannot_be_read_back(expr, reason):
    with pytest.raises(UnsupportedActivationError) as info:
        activation_text(expr)
    assert reason in str(info.value)


# ---------------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------------

_ALPHABET = "xyz0123456789.+-*/() _eEpi,[]'\"=<>:lambdaexpsqrtanh"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=_ALPHABET, max_size=40))
def test_any_text_gives_an_expression_or_a_clean_refusal(text):
    try:
        expr, sym = parse_activation(text)
    except UnsupportedActivationError:
        return
    assert isinstance(expr, sympy.Expr) and expr.free_symbols == {sym}


_leaves = st.one_of(
    st.just(x),
    st.integers(-9, 9).map(sympy.Integer),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False).map(sympy.Float),
    st.sampled_from([sympy.pi, sympy.E, sympy.Rational(1, 3)]),
)
_unary = [sympy.exp, sympy.log, sympy.sqrt, sympy.sin, sympy.cos, sympy.tan, sympy.tanh, sympy.sinh,
          sympy.cosh, sympy.atan, sympy.asinh, sympy.erf, sympy.erfc]


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(_unary), children).map(lambda p: p[0](p[1])),
        st.tuples(children, children).map(lambda p: p[0] + p[1]),
        st.tuples(children, children).map(lambda p: p[0] * p[1]),
        st.tuples(children, children).map(lambda p: p[0] - p[1]),
        st.tuples(children, st.integers(-3, 3)).map(lambda p: p[0] ** p[1]),
    )


def _has_nonreal_constant(expr):
    """Whether a constant subterm of expr evaluates to something other than a real number."""
    return any(not sub.free_symbols and not isinstance(sub.evalf(20), sympy.Number)
               for sub in sympy.preorder_traversal(expr) if isinstance(sub, sympy.Expr))


def test_nonreal_constant_filter():
    assert _has_nonreal_constant(x + sympy.sqrt(sympy.E - 3))
    assert not _has_nonreal_constant(x + sympy.sqrt(3 - sympy.E))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_leaves, _extend, max_leaves=8))
def test_printed_expressions_round_trip(expr):
    if (not isinstance(expr, sympy.Expr) or expr.free_symbols != {x}
            or expr.has(sympy.I, sympy.nan, sympy.zoo, sympy.oo, -sympy.oo)
            or any(abs(float(n)) > 1e300 for n in expr.atoms(sympy.Number))
            # Products of floats may leave float64's exponent range (subnormals): such a
            # constant is no double, and activation_text rightly refuses it.
            or any(sympy.Float(float(f)) != f for f in expr.atoms(sympy.Float))
            # A constant such as sqrt(E - 3) is no real number, and the parser refuses it.
            or _has_nonreal_constant(expr)):
        return
    text, variable = activation_text(expr)
    parsed, symbol = parse_activation(text, variable)
    assert parsed == expr.xreplace({x: symbol}) or sympy.simplify(parsed - expr) == 0
