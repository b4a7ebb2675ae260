"""Printing SymPy expressions as Numba-compilable Python, with deterministic CSE.

In: SymPy expressions and the names their results should be assigned to. Out: lists of source
lines `name = expression` using only the `math` module and arithmetic, with common
subexpressions hoisted into fixed temporaries `_t0, _t1, ...`: the same input gives the same
bytes, whatever PYTHONHASHSEED is, so that generated/ is reproducible and reviewable by diff.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter


class NumbaPrinter(PythonCodePrinter):
    """Python printer for `math`-only kernels: integer powers stay powers, floats keep 17 digits."""

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        # A float literal: Numba then never mixes integer division into float kernels.
        return repr(float(expr))

    def _print_Integer(self, expr):
        return f"{int(expr)}.0"

    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.as_base_exp()
        if exponent.is_Integer and 2 <= int(exponent) <= 8:
            # Repeated products: exact, and faster than pow() in the compiled code.
            factor = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Mul"], strict=True)
            return "*".join([factor] * int(exponent))
        if exponent.is_Integer and int(exponent) == -1:
            return "1.0/" + self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Mul"], strict=True)
        return super()._print_Pow(expr, rational=rational)


def assignments(names: list[str], expressions: list[sp.Expr], temporary_prefix: str = "_t") -> list[str]:
    """Source lines computing `names[i] = expressions[i]`, sharing common subexpressions.

    CSE runs over all expressions together; its temporaries are numbered in order of first
    use, so the output is a pure function of the input expressions.
    """
    replacements, reduced = sp.cse(
        expressions, symbols=sp.numbered_symbols(temporary_prefix), optimizations="basic", order="canonical")
    printer = NumbaPrinter()
    lines = [f"{symbol} = {printer.doprint(value)}" for symbol, value in replacements]
    lines += [f"{name} = {printer.doprint(value)}" for name, value in zip(names, reduced)]
    return lines
