"""A whitelist parser that turns the text of a custom activation into a SymPy expression.

In: a string such as "x*tanh(x)", "log(1 + exp(z))" or "z/(1+exp(-z))" (from a model file, a
command line or a config), optionally the name of its variable. Out: the SymPy expression and
its symbol, or `UnsupportedActivationError` naming what was refused.

Model files come from anywhere, so their text is never given to eval, sympify or parse_expr
(all of which execute Python). Instead Python's `ast` module parses the text (parsing runs
nothing), every node is checked against a short whitelist, and the SymPy expression is built
from the nodes directly: one variable, int and float literals, unary + and -, binary + - * /
and **, parentheses, the constants pi and E, and calls by bare name of the functions in
FUNCTIONS. Size is bounded before and during the build (text length, nesting depth, integer
digits, exact powers, and every constant subexpression kept real and within float64's range
as it is built) so that hostile text cannot exhaust time or memory in SymPy's eager evaluation.

`activation_text` goes the other way, for writing a model file: the text of an expression
that this parser reads back to the same expression, floats included bit for bit.
"""
from __future__ import annotations

import ast
import keyword
import math
import warnings
from typing import Callable

import sympy
from sympy.printing.str import StrPrinter

from feynmlp.errors import UnsupportedActivationError

__all__ = ["FUNCTIONS", "CONSTANTS", "MAX_TEXT_LENGTH", "MAX_DEPTH", "parse_activation",
           "activation_text"]

MAX_TEXT_LENGTH = 1000
MAX_DEPTH = 50
# Integer literals longer than this are no activation's constant, and huge ones make SymPy's
# exact arithmetic (perfect-power tests in sqrt, ...) slow.
MAX_INTEGER_DIGITS = 50
# Exact powers of rationals are evaluated eagerly by SymPy: 9**9**9 would need about 1.2e9
# bits. Anything beyond this many bits is refused before SymPy computes it (a result must fit
# in a float64 anyway, which needs at most 1024 bits, plus room for exact fractions).
MAX_EXACT_POWER_BITS = 4096
# A constant raised to a constant power: larger exponents only make numbers SymPy evaluates
# exactly and slowly, and no activation needs them.
MAX_CONSTANT_EXPONENT = 4096

# One-argument functions, each applied to the already built SymPy argument.
FUNCTIONS: dict[str, Callable[[sympy.Expr], sympy.Expr]] = {
    "exp": sympy.exp,
    "log": sympy.log,
    "sqrt": sympy.sqrt,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "tanh": sympy.tanh,
    "sinh": sympy.sinh,
    "cosh": sympy.cosh,
    "atan": sympy.atan,
    "asinh": sympy.asinh,
    "erf": sympy.erf,
    "erfc": sympy.erfc,
    "sigmoid": lambda a: 1 / (1 + sympy.exp(-a)),
    "softplus": lambda a: sympy.log(1 + sympy.exp(a)),
}

CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "E": sympy.E}

# Names users will try that are refused on purpose, with the reason.
_REFUSED_FUNCTIONS = {
    "abs": "abs is not differentiable at 0, so the network would have no Taylor expansion there",
    "Abs": "Abs is not differentiable at 0, so the network would have no Taylor expansion there",
    "max": "max is not smooth; for ReLU-like networks use the built-in names (first order only)",
    "min": "min is not smooth; for ReLU-like networks use the built-in names (first order only)",
    "relu": "relu is piecewise linear; use the built-in activation name 'relu' (first order only)",
}

_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
_UNARY = (ast.UAdd, ast.USub)
# Every node type that may appear at all; anything else is refused before a name is looked at.
_ALLOWED_NODES = (ast.Expression, ast.Constant, ast.Name, ast.Load, ast.UnaryOp, ast.BinOp, ast.Call,
                  *_BINARY, *_UNARY)


def _refuse(text: str, reason: str) -> UnsupportedActivationError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return UnsupportedActivationError(
        f"custom activation {shown!r} refused: {reason}. Allowed: one variable, numbers, + - * / **, "
        f"parentheses, pi, E and the functions {', '.join(sorted(FUNCTIONS))}")


def _where(node: ast.AST) -> str:
    if not hasattr(node, "col_offset"):
        return ""
    return f" at column {node.col_offset + 1}"


def _check_variable_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise UnsupportedActivationError(
            f"variable name {name!r} is not a Python identifier; use a name such as 'x' or 'z'")
    if name.startswith("__") or name in FUNCTIONS or name in CONSTANTS:
        raise UnsupportedActivationError(
            f"variable name {name!r} is reserved (dunder names, function names and the constants "
            "pi and E); use a name such as 'x' or 'z'")


def _operator_family(node: ast.AST) -> int | None:
    """1 for + and -, 2 for * and /, None otherwise: chains of one family are not nesting."""
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, (ast.Add, ast.Sub)):
            return 1
        if isinstance(node.op, (ast.Mult, ast.Div)):
            return 2
    return None


def _depth(tree: ast.AST) -> int:
    """Nesting depth of the tree, without recursion (the tree may be deeper than Python's stack).

    The left operand of a + - chain (or a * / chain) counts at its parent's level: a polynomial
    with many terms, "x + x**2/2 + x**3/6 + ...", is long but not nested, and `_build` walks
    such chains iteratively.
    """
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        family = _operator_family(node)
        if family is not None and _operator_family(node.left) == family:
            stack.append((node.left, depth))
            stack.append((node.right, depth + 1))
            continue
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _exact_power_bits(base: sympy.Expr, exponent: sympy.Expr) -> float:
    """Bits SymPy would need to evaluate base**exponent exactly (0 when it stays symbolic)."""
    if not (isinstance(base, sympy.Rational) and isinstance(exponent, sympy.Rational)):
        return 0.0
    if base in (0, 1, -1):
        return 0.0
    bits = max(abs(base.p).bit_length(), abs(base.q).bit_length())
    return bits * abs(exponent.p) / exponent.q


def parse_activation(text: str, variable: str | None = None) -> tuple[sympy.Expr, sympy.Symbol]:
    """The SymPy expression of a custom activation written as text, built without eval.

    Args:
        text: the expression, e.g. "x*tanh(x)". At most MAX_TEXT_LENGTH characters and
            MAX_DEPTH levels of nesting.
        variable: the name of the input variable. None: the text must use exactly one name
            that is neither a function nor a constant, and that name is the variable.

    Returns:
        (expression, symbol): the expression and its one free symbol, a plain sympy.Symbol.

    Raises:
        UnsupportedActivationError: anything outside the whitelist (attributes, subscripts,
            lambdas, comprehensions, keyword arguments, strings, dunder names, unknown
            functions, a second variable), text that is too long or too deeply nested,
            numbers that are too large, and expressions that are constant or not finite.
    """
    if not isinstance(text, str):
        raise UnsupportedActivationError(
            f"a custom activation must be given as a string, got the {type(text).__name__} {text!r}")
    if len(text) > MAX_TEXT_LENGTH:
        raise _refuse(text, f"the text has {len(text)} characters, more than the limit of "
                            f"{MAX_TEXT_LENGTH}")
    if variable is not None:
        _check_variable_name(variable)
    try:
        with warnings.catch_warnings():
            # Python warns about odd literals such as "1if"; the whitelist decides, not Python.
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise _refuse(text, f"it is not a valid expression ({exc.msg})") from None
    except ValueError as exc:  # null bytes, on some Python versions
        raise _refuse(text, f"it is not a valid expression ({exc})") from None
    except (RecursionError, MemoryError):
        raise _refuse(text, "it is nested too deeply to parse") from None
    depth = _depth(tree)
    if depth > MAX_DEPTH:
        raise _refuse(text, f"it is nested more than {MAX_DEPTH} levels deep")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise _refuse(text, f"{_node_description(node)}{_where(node)} is not allowed")
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise _refuse(text, f"the dunder name {node.id!r}{_where(node)} is not allowed")
        if isinstance(node, ast.Constant) and (
                isinstance(node.value, bool) or not isinstance(node.value, (int, float))):
            raise _refuse(text, f"the literal {_short(repr(node.value))}{_where(node)} is not a real number")

    names = _variable_names(text, tree)
    if variable is None:
        if len(names) != 1:
            raise _refuse(text, "it must use exactly one variable, but uses "
                                + (", ".join(repr(n) for n in sorted(names)) or "none"))
        variable = names.pop()
        _check_variable_name(variable)
    else:
        others = names - {variable}
        if others:
            raise _refuse(text, f"its variable is {variable!r} but it also uses "
                                f"{', '.join(repr(n) for n in sorted(others))}")

    symbol = sympy.Symbol(variable)
    try:
        expr = _build(text, tree.body, variable, symbol)
    except UnsupportedActivationError:
        raise
    except (RecursionError, MemoryError, OverflowError):
        raise _refuse(text, "it is too large to build") from None

    if not isinstance(expr, sympy.Expr) or expr.free_symbols != {symbol}:
        raise _refuse(text, f"it simplifies to {_short(expr)}, which does not depend on {variable!r}")
    if expr.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        raise _refuse(text, f"it simplifies to {_short(expr)}, which contains an infinite or undefined "
                            "constant (a division by zero?)")
    for number in expr.atoms(sympy.Number):
        if not _fits_float64(number):
            raise _refuse(text, f"the constant {_short(number)} does not fit in a float64")
    if expr.has(sympy.I):
        raise _refuse(text, f"it simplifies to {_short(expr)}, which is not real")
    return expr, symbol


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _variable_names(text: str, tree: ast.Expression) -> set[str]:
    """Every bare name that is neither called as a function nor a constant; checks all nodes."""
    names: set[str] = set()
    called: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(id(node.func))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise _refuse(text, f"the dunder name {node.id!r}{_where(node)} is not allowed")
            if id(node) in called:
                continue
            if node.id in FUNCTIONS:
                raise _refuse(text, f"the function {node.id!r}{_where(node)} must be called, "
                                    f"as in {node.id}(x)")
            if node.id not in CONSTANTS:
                names.add(node.id)
    return names


def _build(text: str, node: ast.AST, variable: str, symbol: sympy.Symbol) -> sympy.Expr:
    """The SymPy expression of one whitelisted node, with every constant kept in float64's range."""
    return _checked(text, node, _build_node(text, node, variable, symbol))


def _checked(text: str, node: ast.AST, value: sympy.Expr) -> sympy.Expr:
    """`value`, after making sure that, if constant, it is a real number within float64's range.

    SymPy evaluates constants eagerly, and the cost of the next step grows with their size:
    sin(9.0**9**9) reduces its argument modulo 2 pi to a billion bits, tan(exp(exp(exp(100))))
    never returns. Refusing every constant that leaves float64's range as soon as it appears,
    bottom up, means each evaluation here and in SymPy works on numbers below 1.8e308, which
    is cheap.
    """
    if not isinstance(value, sympy.Expr) or value.free_symbols:
        return value
    number = value if isinstance(value, sympy.Number) else value.evalf(20)
    if number.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        raise _refuse(text, f"the constant {_short(value)}{_where(node)} is infinite or undefined "
                            "(a division by zero?)")
    if not isinstance(number, sympy.Number):
        raise _refuse(text, f"the constant {_short(value)}{_where(node)} is not a real number")
    if not _fits_float64(number):
        raise _refuse(text, f"the constant {_short(value)}{_where(node)} does not fit in a float64")
    return value


def _fits_float64(number: sympy.Number) -> bool:
    try:
        return math.isfinite(float(number))
    except (OverflowError, TypeError, ValueError):
        return False


def _build_node(text: str, node: ast.AST, variable: str, symbol: sympy.Symbol) -> sympy.Expr:
    """The SymPy expression of one whitelisted node (depth already bounded by MAX_DEPTH)."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _refuse(text, f"the literal {value!r}{_where(node)} is not a real number")
        if isinstance(value, int):
            if len(str(abs(value))) > MAX_INTEGER_DIGITS:
                raise _refuse(text, f"the integer{_where(node)} has more than "
                                    f"{MAX_INTEGER_DIGITS} digits")
            return sympy.Integer(value)
        if not math.isfinite(value):
            raise _refuse(text, f"the number{_where(node)} overflows a float64")
        return sympy.Float(value)
    if isinstance(node, ast.Name):
        if node.id == variable:
            return symbol
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise _refuse(text, f"unknown name {node.id!r}{_where(node)}")
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, _UNARY):
            raise _refuse(text, f"the operator {type(node.op).__name__}{_where(node)} is not allowed")
        operand = _build(text, node.operand, variable, symbol)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        if not isinstance(node.op, _BINARY):
            raise _refuse(text, f"the operator {type(node.op).__name__}{_where(node)} is not allowed")
        family = _operator_family(node)
        if family is not None:
            # Walk down the left spine of a long + - (or * /) chain without recursion.
            spine = [node]
            while _operator_family(spine[-1].left) == family:
                spine.append(spine[-1].left)
            result = _build(text, spine[-1].left, variable, symbol)
            for link in reversed(spine):
                right = _build(text, link.right, variable, symbol)
                if isinstance(link.op, ast.Add):
                    result = result + right
                elif isinstance(link.op, ast.Sub):
                    result = result - right
                elif isinstance(link.op, ast.Mult):
                    result = result * right
                else:
                    result = result / right
                result = _checked(text, link, result)
            return result
        left = _build(text, node.left, variable, symbol)
        right = _build(text, node.right, variable, symbol)
        if (not left.free_symbols and not right.free_symbols
                and abs(float(right.evalf(20))) > MAX_CONSTANT_EXPONENT):
            # SymPy would evaluate sqrt(2)**(9**40) as an exact power of two: refuse first.
            raise _refuse(text, f"the constant power{_where(node)} has an exponent larger than "
                                f"{MAX_CONSTANT_EXPONENT}")
        if _exact_power_bits(left, right) > MAX_EXACT_POWER_BITS:
            raise _refuse(text, f"the power{_where(node)} would be an exact number with more than "
                                f"{MAX_EXACT_POWER_BITS} bits")
        return left ** right
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _refuse(text, f"only functions called by bare name are allowed{_where(node)}")
        name = node.func.id
        if name.startswith("__"):
            raise _refuse(text, f"the dunder name {name!r}{_where(node)} is not allowed")
        if name in _REFUSED_FUNCTIONS:
            raise _refuse(text, _REFUSED_FUNCTIONS[name])
        if name not in FUNCTIONS:
            raise _refuse(text, f"unknown function {name!r}{_where(node)}")
        if node.keywords:
            raise _refuse(text, f"keyword arguments in the call of {name}{_where(node)} are not allowed")
        if len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise _refuse(text, f"{name}{_where(node)} takes exactly one argument, got "
                                f"{len(node.args)}")
        return FUNCTIONS[name](_build(text, node.args[0], variable, symbol))
    raise _refuse(text, f"{_node_description(node)}{_where(node)} is not allowed")


def _node_description(node: ast.AST) -> str:
    descriptions = {
        ast.Attribute: "attribute access", ast.Subscript: "subscripting", ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
        ast.Compare: "a comparison", ast.BoolOp: "a boolean operator", ast.IfExp: "a conditional",
        ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
        ast.JoinedStr: "an f-string", ast.NamedExpr: "an assignment expression",
        ast.Await: "await", ast.keyword: "a keyword argument", ast.Starred: "a starred expression", ast.Slice: "a slice",
    }
    return descriptions.get(type(node), f"the syntax {type(node).__name__}")


class _ExactFloatPrinter(StrPrinter):
    """str() of an expression, except that double-precision floats print all their digits."""

    def _print_Float(self, expr: sympy.Float) -> str:
        # StrPrinter prints 15 significant digits, which does not round-trip a float64;
        # repr(float) gives the shortest text that does.
        if expr._prec <= 53:
            return repr(float(expr))
        return super()._print_Float(expr)


def activation_text(expr: sympy.Expr) -> tuple[str, str]:
    """Text and variable name from which `parse_activation` rebuilds `expr` exactly.

    Args:
        expr: a SymPy expression with exactly one free symbol.

    Returns:
        (text, variable): `parse_activation(text, variable)` gives back `expr` (with a plain
        Symbol of the same name: assumptions such as real=True are not kept).

    Raises:
        UnsupportedActivationError: the expression uses something the parser does not accept
            (a function outside FUNCTIONS, the imaginary unit, a symbol named like a function,
            a float of more than double precision, ...), so a file holding it could not be
            read back.
    """
    symbols = sorted(expr.free_symbols, key=lambda s: s.name) if isinstance(expr, sympy.Basic) else []
    if len(symbols) != 1:
        raise UnsupportedActivationError(
            f"custom activation {expr} must have exactly one free symbol to be stored, found "
            f"{len(symbols)}")
    (symbol,) = symbols
    text = _ExactFloatPrinter().doprint(expr)
    try:
        parsed, parsed_symbol = parse_activation(text, variable=symbol.name)
    except UnsupportedActivationError as exc:
        raise UnsupportedActivationError(
            f"custom activation {expr} cannot be stored, because its text would not be read back: "
            f"{exc}") from None
    original = expr.xreplace({symbol: parsed_symbol})
    if parsed != original and sympy.simplify(parsed - original) != 0:
        raise UnsupportedActivationError(
            f"custom activation {expr} cannot be stored: its text {text!r} reads back as {parsed}; "
            "use double-precision floats or exact rationals in the expression")
    return text, symbol.name
