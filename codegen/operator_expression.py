"""A SymPy operator expression read as multi-indices and coefficients, without evaluating text.

In: a SymPy expression that is a linear combination, with numeric coefficients, of one
undefined function u(x_0, ..., x_{n-1}) of n distinct symbols (the network's inputs, in
order) and its Derivatives, such as
    Derivative(u(t, x, y), t) + Derivative(u(t, x, y), (x, 2)) + Derivative(u(t, x, y), (y, 2)),
and the number of inputs n. Out: {multi-index tuple (length n): coefficient (float)}. Anything
else (a term with a symbol for a coefficient, a product of derivatives, a second function, a
derivative in a symbol that is not an argument, the wrong number of arguments) is a
FeynmlpError naming the term. The expression object is inspected, never printed and parsed.
"""
from __future__ import annotations

import sympy as sp

from ..errors import FeynmlpError


def terms_from_expression(expression, n_inputs: int) -> dict[tuple[int, ...], float]:
    if not isinstance(expression, sp.Basic):
        raise FeynmlpError(f"expected a SymPy expression, got {type(expression).__name__}")
    expression = sp.expand(expression)
    functions = sorted({f for f in expression.atoms(sp.core.function.AppliedUndef)}, key=sp.default_sort_key)
    if len(functions) != 1:
        named = ", ".join(str(f) for f in functions) or "none"
        raise FeynmlpError(f"the operator must act on exactly one function of the inputs, found {len(functions)} "
                           f"({named}); write it as a sum of c * Derivative(u(x0, ..., x{n_inputs - 1}), ...)")
    function = functions[0]
    arguments = function.args
    if len(arguments) != n_inputs or not all(isinstance(a, sp.Symbol) for a in arguments) \
            or len(set(arguments)) != len(arguments):
        raise FeynmlpError(f"the function {function} must take the network's {n_inputs} inputs as distinct symbols, "
                           f"one per input in order")
    position = {symbol: i for i, symbol in enumerate(arguments)}
    terms: dict[tuple[int, ...], float] = {}
    for term in sp.Add.make_args(expression):
        factors = sp.Mul.make_args(term)
        numbers = [f for f in factors if f.is_number]
        others = [f for f in factors if not f.is_number]
        coefficient = sp.Mul(*numbers)
        rest = others[0] if len(others) == 1 else sp.Mul(*others)
        if rest == function:
            alpha = [0] * n_inputs
        elif isinstance(rest, sp.Derivative) and rest.expr == function:
            alpha = [0] * n_inputs
            for symbol, count in rest.variable_count:
                if symbol not in position:
                    raise FeynmlpError(f"term {term}: differentiates in {symbol}, which is not an argument of "
                                       f"{function}")
                alpha[position[symbol]] += int(count)
        else:
            raise FeynmlpError(f"term {term} is not a number times a derivative of {function}; the operator must "
                               "be a linear combination of derivatives with numeric coefficients")
        if coefficient.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
            raise FeynmlpError(f"term {term}: the coefficient {coefficient} is not finite")
        if not coefficient.is_number or not coefficient.is_real:
            raise FeynmlpError(f"term {term}: the coefficient {coefficient} is not a real number")
        key = tuple(alpha)
        terms[key] = terms.get(key, 0.0) + float(coefficient)
    return terms
