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

    Derived by composing the series with SymPy: the t^k coefficient of (sum_j p_j t^j)^m is
    built up one factor at a time, truncated at t^order (expanding the whole composition at
    once takes minutes at order 8), and each monomial s_m prod p_j is read off as a partition
    of k with its integer weight.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    _, p = series_symbols(order)
    # power[k] = t^k coefficient of the current power of the inner series, as a Poly in p.
    first = [sp.Poly(0, *p)] + [sp.Poly(p[j - 1], *p) for j in range(1, order + 1)]
    power = list(first)
    by_order: list[list[VertexTerm]] = [[] for _ in range(order + 1)]
    for m in range(1, order + 1):
        if m > 1:
            power = [sp.Poly(0, *p)] * m + [
                sum((power[k - j] * first[j] for j in range(1, k - m + 2)), sp.Poly(0, *p))
                for k in range(m, order + 1)]
        for k in range(m, order + 1):
            for monomial, weight in power[k].terms():
                parts = tuple(sorted((j + 1 for j, e in enumerate(monomial) for _ in range(e)), reverse=True))
                assert len(parts) == m and sum(parts) == k, "malformed Faa di Bruno term"
                by_order[k].append(VertexTerm(parts, int(weight)))
    result = []
    for k in range(1, order + 1):
        # Canonical order: by valence, then by parts (deterministic, independent of SymPy's).
        result.append(tuple(sorted(by_order[k], key=lambda term: (term.valence, term.parts))))
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
