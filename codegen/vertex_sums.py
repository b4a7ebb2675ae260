"""The per-layer vertex sums: Faa di Bruno's formula in Taylor-coefficient normalisation.

In: an order K. Out: for each order k <= K the terms of

    [s(z0 + p(t))]_k = sum over integer partitions lambda of k of
                       s_m * w_lambda * prod_i p_{lambda_i},      m = number of parts,

where s_m = s^(m)(z0)/m!, p_j are the Taylor coefficients of the incoming line and w_lambda is
the number of distinct orderings of the parts (m! / prod of multiplicities!). SymPy derives
the terms by expanding the composed series, so the table below is what the algebra says, not
a formula typed in; a test compares it with the combinatorial closed form.

Each term is a vertex of valence m: the m blocks of a set partition of the outgoing slots meet
at one neuron. For many variables the same terms apply with the parts replaced by multi-indices
(`feynmlp.multi_index` builds those index tables at run time); for one direction
(univariate Taylor mode) the terms are complete as they stand and are emitted as straight-line
code, factored by vertex valence and common-subexpression-eliminated.
"""
from __future__ import annotations

import dataclasses
import functools

import sympy as sp


@dataclasses.dataclass(frozen=True)
class VertexTerm:
    """One term s_m * weight * prod_i p_{parts[i]} of the order-sum(parts) vertex sum."""

    parts: tuple[int, ...]  # orders of the incoming blocks, non-increasing
    weight: int

    @property
    def valence(self) -> int:
        return len(self.parts)


def series_symbols(order: int) -> tuple[tuple[sp.Symbol, ...], tuple[sp.Symbol, ...]]:
    """(s_1..s_K, p_1..p_K): the activation's and the incoming line's Taylor coefficients."""
    s = sp.symbols(f"s1:{order + 1}", real=True)
    p = sp.symbols(f"p1:{order + 1}", real=True)
    return tuple(s), tuple(p)


@functools.lru_cache(maxsize=None)
def vertex_terms(order: int) -> tuple[tuple[VertexTerm, ...], ...]:
    """For k = 1..order, the vertex terms of the order-k coefficient (index k-1), sorted.

    Derived by expanding sum_m s_m (sum_j p_j t^j)^m to order t^order with SymPy and reading
    off each monomial s_m prod p_j as a partition of k with its integer weight.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    t = sp.Symbol("t")
    s, p = series_symbols(order)
    inner = sum(p[j - 1] * t**j for j in range(1, order + 1))
    composed = sp.expand(sum(s[m - 1] * inner**m for m in range(1, order + 1)))
    poly = sp.Poly(composed, t)
    result = []
    for k in range(1, order + 1):
        coefficient = poly.coeff_monomial(t**k)
        terms = []
        for monomial, weight in sp.Poly(coefficient, *s, *p).terms():
            s_powers, p_powers = monomial[:order], monomial[order:]
            parts = tuple(sorted((j + 1 for j, e in enumerate(p_powers) for _ in range(e)), reverse=True))
            assert sum(s_powers) == 1 and s_powers[len(parts) - 1] == 1, "malformed Faa di Bruno term"
            terms.append(VertexTerm(parts, int(weight)))
        # Canonical order: by valence, then by parts (deterministic, independent of SymPy's).
        result.append(tuple(sorted(terms, key=lambda term: (term.valence, term.parts))))
    return tuple(result)


def directional_expressions(order: int) -> list[sp.Expr]:
    """The order-k outgoing coefficient, k = 1..order, as a SymPy expression in s and p.

    Factored by vertex valence: sum_m s_m * (polynomial in p), never expanded as a whole, so
    the CSE that follows sees the shared products of incoming coefficients.
    """
    s, p = series_symbols(order)
    expressions = []
    for terms in vertex_terms(order):
        by_valence: dict[int, sp.Expr] = {}
        for term in terms:
            product = sp.Integer(term.weight) * sp.Mul(*(p[j - 1] for j in term.parts))
            by_valence[term.valence] = by_valence.get(term.valence, sp.Integer(0)) + product
        expressions.append(sp.Add(*(s[m - 1] * by_valence[m] for m in sorted(by_valence))))
    return expressions


def valences(order: int) -> tuple[int, ...]:
    """The vertex valences m >= 2 that occur up to `order` (one index table each)."""
    return tuple(range(2, order + 1))
