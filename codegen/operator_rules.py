"""Collapsed per-neuron rules of the Laplacian and the biharmonic, derived with SymPy.

In: an operator name ("laplacian" or "biharmonic"). Out: for each quantity a neuron carries
through the network, the rule that gives it after the activation s from the quantities
before it, as a SymPy expression in the raw derivatives s1..s4 = s^(m)(z) and a small set of
named contractions of the carried quantities. Everything is a derivative of one pre-activation
z with respect to the inputs, not a Taylor coefficient:

    J_a  = dz/dx_a                   H_ab = d2z/dx_a dx_b          lap = sum_i H_ii
    L3_a = sum_i d3z/dx_i dx_i dx_a  B    = sum_ij d4z/dx_i^2 dx_j^2

and the contractions jj = |J|^2, jl3 = J.L3, hf = |H|_F^2, jhj = J^T H J, hj_a = (H J)_a. The
Laplacian's kernel weighs its sum, jj = sum_a w_a J_a^2 and lap = sum_a w_a d2z/dv_a^2 over
directions v_a: the same rule, by linearity, for any second-order operator written in the
eigenbasis of its matrix (w = its eigenvalues).

Derivation: the derivative of s(z(x)) along a list of index slots is Faa di Bruno's formula,
sum over the set partitions pi of the slots of s^(|pi|) * prod over blocks of d_block z. The
operator repeats an index on paired slots (i, i for the Laplacian; i, i, j, j for the
biharmonic) and sums it; a carried quantity may also have free slots (a, b). Each partition is
therefore a product of derivative tensors of z, contracted over the paired indices. Those
products are brought to a canonical form (summed index names exchanged, blocks sorted) and
counted, so that e.g. the three pairings of i, i, j, j that split into two blocks collapse to
lap^2 + 2 |H|_F^2. The counts are exact integers from the enumeration; SymPy holds the result
and prints it. `CONTRACTIONS` names each canonical product in the carried quantities; a
product it does not name is an error, so a rule can never silently lose a term.
"""
from __future__ import annotations

import functools
import itertools

import sympy as sp

# The operators with collapsed rules, their derivative order, and the quantities each neuron
# carries: (name, index slots). Repeated letters i, j are summed; a, b are free.
OPERATORS = {
    "laplacian": (2, (("J", "a"), ("lap", "ii"))),
    "biharmonic": (4, (("J", "a"), ("H", "ab"), ("L3", "iia"), ("B", "iijj"))),
}
SUMMED = "ij"

_S = sp.symbols("s0:5", real=True)
_NAMES = ("J_a", "J_b", "H_ab", "L3_a", "lap", "B", "jj", "jl3", "hf", "jhj", "hj_a")
SYMBOLS = {name: sp.Symbol(name, real=True) for name in _NAMES}

# Canonical contraction (sorted tuple of sorted block labels) -> expression in SYMBOLS.
_c = SYMBOLS
CONTRACTIONS = {
    ("a",): _c["J_a"],
    ("ii",): _c["lap"],
    ("i", "i"): _c["jj"],
    ("ab",): _c["H_ab"],
    ("a", "b"): _c["J_a"] * _c["J_b"],
    ("aii",): _c["L3_a"],
    ("a", "ii"): _c["J_a"] * _c["lap"],
    ("ai", "i"): _c["hj_a"],
    ("a", "i", "i"): _c["J_a"] * _c["jj"],
    ("iijj",): _c["B"],
    ("i", "ijj"): _c["jl3"],
    ("ii", "jj"): _c["lap"] ** 2,
    ("ij", "ij"): _c["hf"],
    ("i", "i", "jj"): _c["jj"] * _c["lap"],
    ("i", "ij", "j"): _c["jhj"],
    ("i", "i", "j", "j"): _c["jj"] ** 2,
}
del _c


def derivative_symbols(order: int) -> tuple[sp.Symbol, ...]:
    """s0..s_order: the activation and its raw derivatives at the pre-activation."""
    return _S[:order + 1]


def set_partitions(items: tuple):
    """Every set partition of `items` (a tuple), each as a tuple of blocks (tuples)."""
    if not items:
        yield ()
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        yield ((first,),) + partition
        for k in range(len(partition)):
            yield partition[:k] + ((first,) + partition[k],) + partition[k + 1:]


def canonical(blocks) -> tuple[str, ...]:
    """The canonical name of a product of derivative tensors, one per block of slot labels:
    the least of the sorted forms over every renaming of the summed indices."""
    labels = sorted({ch for block in blocks for ch in block if ch in SUMMED})
    forms = []
    for renamed in itertools.permutations(labels):
        mapping = dict(zip(labels, renamed))
        forms.append(tuple(sorted("".join(sorted(mapping.get(ch, ch) for ch in block)) for block in blocks)))
    return min(forms)


@functools.lru_cache(maxsize=None)
def collapsed_terms(slots: str) -> dict[int, dict[tuple[str, ...], int]]:
    """{valence m: {canonical contraction: number of set partitions}} for d_slots s(z)."""
    terms: dict[int, dict[tuple[str, ...], int]] = {}
    for partition in set_partitions(tuple(slots)):
        key = canonical(partition)
        by_key = terms.setdefault(len(partition), {})
        by_key[key] = by_key.get(key, 0) + 1
    return terms


def rule(slots: str) -> sp.Expr:
    """The carried quantity with index slots `slots` after the activation, collapsed."""
    total = sp.Integer(0)
    for valence, by_key in sorted(collapsed_terms(slots).items()):
        inner = sp.Integer(0)
        for key, count in sorted(by_key.items()):
            if key not in CONTRACTIONS:
                raise ValueError(f"contraction {key} of the rule for slots {slots!r} has no name in CONTRACTIONS")
            inner += sp.Integer(count) * CONTRACTIONS[key]
        total += _S[valence] * inner
    return total


def rules(operator: str) -> dict[str, sp.Expr]:
    """{carried quantity: its collapsed rule} of `operator`, in carrying order."""
    if operator not in OPERATORS:
        raise ValueError(f"no collapsed rules for operator {operator!r}; known: {', '.join(OPERATORS)}")
    _, carried = OPERATORS[operator]
    return {name: rule(slots) for name, slots in carried}


def operator_order(operator: str) -> int:
    return OPERATORS[operator][0]


def rule_text(operator: str) -> list[str]:
    """One line per carried quantity: `name' = rule`, in SymPy's plain printing."""
    return [f"{name}' = {sp.sstr(expression, order='grlex')}" for name, expression in rules(operator).items()]


def rule_latex(operator: str) -> list[str]:
    """One LaTeX line per carried quantity."""
    names = {"J_a": "J_a", "J_b": "J_b", "H_ab": "H_{ab}", "L3_a": "L^{(3)}_a", "lap": r"\Delta z", "B": r"\Delta^2 z",
             "jj": r"|J|^2", "jl3": r"J\cdot L^{(3)}", "hf": r"\|H\|_F^2", "jhj": r"J^\top H J",
             "hj_a": r"(HJ)_a"}
    symbol_names = {SYMBOLS[k]: v for k, v in names.items()}
    symbol_names.update({_S[m]: f"s^{{({m})}}" if m > 2 else ("s'" if m == 1 else "s''") for m in range(1, 5)})
    heads = {"J": "J_a'", "H": "H_{ab}'", "L3": "L^{(3)\\prime}_a", "lap": r"\Delta z'", "B": r"\Delta^2 z'"}
    return [f"{heads[name]} = {sp.latex(expression, symbol_names=symbol_names, order='grlex')}"
            for name, expression in rules(operator).items()]
