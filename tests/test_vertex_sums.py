"""Faa di Bruno vertex sums against the combinatorial closed form and SymPy's series."""
import math
from collections import Counter

import pytest
import sympy as sp
from sympy.utilities.iterables import partitions

from feynmlp.codegen.vertex_sums import directional_expressions, series_symbols, vertex_terms


@pytest.mark.parametrize("order", [1, 2, 3, 5, 8])
def test_terms_are_integer_partitions_with_ordering_weights(order):
    terms = vertex_terms(order)
    for k, level in enumerate(terms, start=1):
        expected = {}
        for p in partitions(k):
            parts = tuple(sorted((size for size, mult in p.items() for _ in range(mult)), reverse=True))
            m = len(parts)
            expected[parts] = math.factorial(m) // math.prod(math.factorial(c) for c in Counter(parts).values())
        assert {t.parts: t.weight for t in level} == expected
        assert len(level) == len(expected)


def test_directional_expressions_compose_series():
    # Compose exp-like generic series: s(z0 + p(t)) with s_m arbitrary, compare with SymPy series.
    order = 5
    s, p = series_symbols(order)
    t, u = sp.symbols("t u")
    outer = sum(s[m - 1] * u**m for m in range(1, order + 1))
    inner = sum(p[j - 1] * t**j for j in range(1, order + 1))
    composed = sp.expand(sp.series(outer.subs(u, inner), t, 0, order + 1).removeO())
    for k, expr in enumerate(directional_expressions(order), start=1):
        assert sp.expand(expr - composed.coeff(t, k)) == 0
