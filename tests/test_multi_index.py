"""Multi-index layout and vertex tables against brute-force enumeration."""
import itertools
import math
from collections import Counter

import numpy as np
import pytest

from feynmlp import multi_index


@pytest.mark.parametrize("n,order", [(1, 5), (2, 3), (3, 4), (4, 2), (2, 5)])
def test_vertex_tables_brute_force(n, order):
    exps = multi_index.exponents(n, order)
    column = {tuple(e): i for i, e in enumerate(exps)}
    assert len(column) == len(exps) == multi_index.count(n, order)
    tables = multi_index.vertex_tables(n, order)
    assert len(tables) == 2 * (order - 1)
    for m in range(2, order + 1):
        table, weight = tables[2 * (m - 2)], tables[2 * (m - 2) + 1]
        got = Counter()
        for row, w in zip(table, weight):
            got[tuple(int(v) for v in row)] += w
        want = Counter()
        for combo in itertools.combinations_with_replacement(range(1, len(exps)), m):
            total = sum(exps[c] for c in combo)
            if total.sum() <= order:
                mult = Counter(combo).values()
                want[(column[tuple(total)],) + combo] += math.factorial(m) / math.prod(math.factorial(v) for v in mult)
        assert got == want


def test_graded_lexicographic_order():
    exps = multi_index.exponents(2, 3)
    assert exps.tolist() == [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2], [3, 0], [2, 1], [1, 2], [0, 3]]
    assert multi_index.column_of(2, 3, exps).tolist() == list(range(10))
    with pytest.raises(ValueError):
        multi_index.column_of(2, 3, np.array([2, 2]))


@pytest.mark.parametrize("n,order", [(1, 5), (3, 4), (7, 3), (33, 2), (5, 6)])
def test_columns_are_ranked_in_closed_form(n, order):
    # Every multi-index of every degree, shuffled: its closed-form rank (binomial sums) is its
    # position in the layout, which sorted_tuples enumerates by construction.
    exps = multi_index.exponents(n, order)
    shuffled = np.random.default_rng(n).permutation(exps.shape[0])
    assert np.array_equal(multi_index.column_of(n, order, exps[shuffled]), shuffled)


@pytest.mark.parametrize("width", [0, 1, 2, 3, 5, 8, 9, 13])
def test_sorted_rows_is_a_row_sort(width):
    rows = np.random.default_rng(width).integers(0, 6, size=(200, width))
    assert np.array_equal(multi_index.sorted_rows(rows), np.sort(rows, axis=1))
