"""Multi-indices of a truncated multivariate Taylor series, and the vertex index tables.

In: the number of variables n and the order K. Out:
- the multi-indices alpha with 0 <= |alpha| <= K, graded then lexicographic in their sorted
  variable tuples (for n = 2: 1, x0, x1, x0^2, x0 x1, x1^2, ...), as exponent vectors or as
  sorted variable tuples;
- for each vertex valence m >= 2, the table of Faa di Bruno terms in many variables: every
  multiset {alpha_1, ..., alpha_m} of nonzero multi-indices with |alpha_1 + ... + alpha_m| <= K,
  as a row (column of the sum, columns of the alphas) with the number of distinct orderings of
  the alphas as its weight. The generated kernels loop over these rows (the loop over input
  multi-indices stays a runtime loop, docs/mathematics.md, 'Vertex sums').

Everything is vectorised NumPy: tables of millions of rows build in well under a second.
"""
from __future__ import annotations

import functools
import math

import numpy as np


def count(n: int, order: int) -> int:
    """Number of multi-indices in n variables with |alpha| <= order: C(n + order, order)."""
    return math.comb(n + order, order)


def count_of_order(n: int, k: int) -> int:
    """Number of multi-indices in n variables with |alpha| == k."""
    return math.comb(n + k - 1, k)


@functools.lru_cache(maxsize=64)
def sorted_tuples(n: int, k: int) -> np.ndarray:
    """All nondecreasing tuples (i_1 <= ... <= i_k) over range(n), lexicographic, shape (C, k)."""
    rows = np.zeros((1, 0), dtype=np.int64)
    for _ in range(k):
        last = rows[:, -1] if rows.shape[1] else np.zeros(rows.shape[0], dtype=np.int64)
        counts = n - last
        parent = np.repeat(np.arange(rows.shape[0]), counts)
        # For each parent, the appended index runs last, last + 1, ..., n - 1.
        starts = np.cumsum(counts) - counts
        appended = np.arange(parent.size) - np.repeat(starts, counts) + last[parent]
        rows = np.concatenate([rows[parent], appended[:, None]], axis=1)
    rows.setflags(write=False)
    return rows


@functools.lru_cache(maxsize=16)
def layout(n: int, order: int):
    """(offsets, order_of_column, padded): where each order starts, each column's order, and
    each column's sorted tuple padded to length `order` with the sentinel n."""
    offsets = np.cumsum([0] + [count_of_order(n, k) for k in range(order + 1)])
    order_of_column = np.repeat(np.arange(order + 1), np.diff(offsets))
    padded = np.full((offsets[-1], max(order, 1)), n, dtype=np.int64)
    for k in range(1, order + 1):
        padded[offsets[k]:offsets[k + 1], :k] = sorted_tuples(n, k)
    return offsets, order_of_column, padded


@functools.lru_cache(maxsize=16)
def exponents(n: int, order: int) -> np.ndarray:
    """All multi-indices up to `order` as exponent vectors, shape (M, n), in column order (read-only)."""
    offsets, _, padded = layout(n, order)
    result = np.zeros((offsets[-1], n), dtype=np.int64)
    for k in range(1, order + 1):
        block = result[offsets[k]:offsets[k + 1]]
        rows = np.arange(block.shape[0])
        for column in range(k):
            # A sorted tuple names each variable once per power: count them one slot at a time.
            block[rows, padded[offsets[k]:offsets[k + 1], column]] += 1
    result.setflags(write=False)
    return result


def column_of(n: int, order: int, exponent_vectors: np.ndarray) -> np.ndarray:
    """Column index of each exponent vector (shape (..., n)) in the graded layout."""
    exponent_vectors = np.asarray(exponent_vectors, dtype=np.int64)
    flat = exponent_vectors.reshape(-1, n)
    degrees = flat.sum(axis=1)
    if np.any(flat < 0) or np.any(degrees > order):
        raise ValueError(f"multi-indices must be nonnegative with |alpha| <= {order}")
    tuples = np.full((flat.shape[0], max(order, 1)), n, dtype=np.int64)
    for r, row in enumerate(flat):
        variables = np.repeat(np.arange(n), row)
        tuples[r, :variables.size] = variables
    return _columns_of_tuples(n, order, tuples, degrees).reshape(exponent_vectors.shape[:-1])


def _columns_of_tuples(n: int, order: int, tuples: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Column of each sorted tuple (its first `degrees` entries) in the graded layout, ranked in
    closed form: choosing the value v at position p (m = k - p positions after it) skips the
    C(n - v + m - 1, m) nondecreasing tuples that continue a smaller value, and summed over v
    from the previous position's value a to this one's b that telescopes (hockey stick) to
    C(n - a + m, m + 1) - C(n - b + m, m + 1)."""
    offsets, _, _ = layout(n, order)
    binomial = _binomials(n, order)
    degrees = np.asarray(degrees, dtype=np.int64)
    uniform = degrees.size == 0 or bool((degrees == degrees[0]).all())
    columns = offsets[degrees].astype(np.int64)
    previous = np.zeros(tuples.shape[0], dtype=np.int64)
    for p in range(1, int(degrees.max(initial=0)) + 1):
        value = np.minimum(tuples[:, p - 1], n)  # past a tuple's degree: the sentinel n, unused
        if uniform:  # one column of the table for every row (the common case: plans, targets)
            after = int(degrees[0]) - p
            table = binomial[:, after + 1]
            columns += table[n - previous + after] - table[n - value + after]
        else:
            after = np.maximum(degrees - p, 0)
            flat = binomial.reshape(-1)
            width = binomial.shape[1]
            step = flat[(n - previous + after) * width + after + 1] - flat[(n - value + after) * width + after + 1]
            columns += np.where(degrees >= p, step, 0)
        previous = value
    return columns


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    """Each row of an integer array sorted. Up to 8 columns by an odd-even transposition
    network over whole columns (a few vectorised minimum/maximum passes; np.sort(axis=1) sorts
    every short row on its own, three times slower at 4 columns); wider rows by np.sort, since
    the network's passes grow with the square of the width."""
    if rows.shape[1] > 8:
        return np.sort(rows, axis=1)
    columns = [np.ascontiguousarray(rows[:, j]) for j in range(rows.shape[1])]
    for sweep in range(len(columns)):
        for i in range(sweep % 2, len(columns) - 1, 2):
            columns[i], columns[i + 1] = np.minimum(columns[i], columns[i + 1]), np.maximum(columns[i], columns[i + 1])
    return np.stack(columns, axis=1) if columns else rows.copy()


@functools.lru_cache(maxsize=16)
def _binomials(n: int, order: int) -> np.ndarray:
    """C(x, y) for x <= n + order, y <= order + 1, as int64. The ranks read from it are below
    the layout's size C(n + order, order), which fits; larger entries, which no layout that fits
    in memory can reach, are clamped rather than overflow."""
    top = np.iinfo(np.int64).max
    return np.array([[min(math.comb(x, y), top) for y in range(order + 2)] for x in range(n + order + 1)],
                    dtype=np.int64)


def vertex_table_rows(n: int, order: int) -> dict[int, int]:
    """Rows of each valence-m vertex table, counted without building it (for memory checks).

    Counts multisets of nonzero multi-indices by their number m and total order s, one
    order d of the parts at a time (a multiset of t parts of order d: C(C(n+d-1, d) + t - 1, t)).
    """
    ways = [[0] * (order + 1) for _ in range(order + 1)]  # ways[m][s]
    ways[0][0] = 1
    for d in range(1, order + 1):
        kinds = count_of_order(n, d)
        updated = [row[:] for row in ways]
        for m in range(order + 1):
            for s in range(order + 1):
                if not ways[m][s]:
                    continue
                for t in range(1, (order - s) // d + 1):
                    if m + t > order:
                        break
                    updated[m + t][s + t * d] += ways[m][s] * math.comb(kinds + t - 1, t)
        ways = updated
    return {m: sum(ways[m]) for m in range(2, order + 1)}


def vertex_table_bytes(n: int, order: int) -> int:
    """Peak bytes of building the vertex tables (int64 members, targets and merge work)."""
    return sum(rows * 8 * (m + 2 + 2 * m * order) for m, rows in vertex_table_rows(n, order).items())


@functools.lru_cache(maxsize=16)
def vertex_tables(n: int, order: int) -> tuple[np.ndarray, ...]:
    """(table2, weight2, table3, weight3, ..., tableK, weightK) for the generated kernels.

    table_m has shape (rows, m + 1): the target column, then the m source columns in
    nondecreasing order; weight_m (float64) the number of distinct orderings of the sources.
    """
    offsets, order_of_column, padded = layout(n, order)
    # end_of_order[c] = first column of order > c, so "columns j >= a with order <= c" is a range.
    end_of_order = offsets[1:]
    result = []
    for m in range(2, order + 1):
        # Grow canonical tuples a_1 <= a_2 <= ... <= a_m of nonzero columns, keeping room for
        # the remaining parts (each of order >= 1) under the total order.
        members = np.arange(1, end_of_order[order - (m - 1)], dtype=np.int64)[:, None]
        total = order_of_column[members[:, 0]]
        for j in range(1, m):
            remaining = m - 1 - j
            cap = order - total - remaining
            stop = end_of_order[cap]
            last = members[:, -1]
            counts = np.maximum(stop - last, 0)
            parent = np.repeat(np.arange(members.shape[0]), counts)
            starts = np.cumsum(counts) - counts
            appended = np.arange(parent.size, dtype=np.int64) - np.repeat(starts, counts) + last[parent]
            members = np.concatenate([members[parent], appended[:, None]], axis=1)
            total = total[parent] + order_of_column[appended]
        # Target: merge the sources' variable tuples and look the sorted result up.
        merged = sorted_rows(padded[members].reshape(members.shape[0], -1))[:, :order]
        targets = _columns_of_tuples(n, order, merged, total)
        weights = _distinct_orderings(members)
        table = np.concatenate([targets[:, None], members], axis=1)
        result += [np.ascontiguousarray(table), weights]
    for array in result:
        array.setflags(write=False)
    return tuple(result)


def _distinct_orderings(members: np.ndarray) -> np.ndarray:
    """m! / prod(multiplicity!) for each row of sorted members."""
    m = members.shape[1]
    weights = np.full(members.shape[0], float(math.factorial(m)))
    run = np.ones(members.shape[0])
    for j in range(1, m):
        same = members[:, j] == members[:, j - 1]
        run = np.where(same, run + 1, 1.0)
        weights /= np.where(same, run, 1.0)
    return weights


@functools.lru_cache(maxsize=16)
def parents(n: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(parent, variable), one entry per column: the monomial of column c is the monomial of
    column parent[c] (one degree lower) times the variable variable[c], so that all monomials
    at a point build degree by degree with one gather-multiply per degree. Column 0 (the
    constant) has parent 0 and the sentinel variable n. Read-only intp arrays."""
    offsets, _, padded = layout(n, order)
    parent = np.zeros(offsets[-1], dtype=np.intp)
    variable = np.full(offsets[-1], n, dtype=np.intp)
    for k in range(1, order + 1):
        # In lexicographic order the sorted k-tuples come in runs that share their first k - 1
        # entries, one run per (k-1)-tuple in its own order, of length n - (its last entry).
        lower = padded[offsets[k - 1]:offsets[k]]
        runs = n - lower[:, k - 2] if k > 1 else np.array([n])
        parent[offsets[k]:offsets[k + 1]] = np.repeat(np.arange(offsets[k - 1], offsets[k]), runs)
        variable[offsets[k]:offsets[k + 1]] = padded[offsets[k]:offsets[k + 1], k - 1]
    parent.setflags(write=False)
    variable.setflags(write=False)
    return parent, variable


@functools.lru_cache(maxsize=16)
def factorials(n: int, order: int) -> np.ndarray:
    """alpha! = prod_i alpha_i! for each column, as float64 (exact: at most order! <= 16!),
    from the runs of equal variables in the sorted tuples (no (M, n) exponent table)."""
    _, _, padded = layout(n, order)
    result = np.ones(padded.shape[0])
    run = np.ones(padded.shape[0])
    for j in range(1, padded.shape[1]):
        same = (padded[:, j] == padded[:, j - 1]) & (padded[:, j] < n)
        run = np.where(same, run + 1, 1.0)
        result *= np.where(same, run, 1.0)
    result.setflags(write=False)
    return result


@functools.lru_cache(maxsize=16)
def insertions(n: int, order: int, k: int) -> np.ndarray:
    """Shape (C(n + k - 2, k - 1), n), for 1 <= k <= order: entry [c, v] is the column (in the
    graded layout) of the degree-k monomial x_v times the degree-(k-1) monomial of column
    offsets[k - 1] + c. Chained from degree 0, it maps every index tuple (i_1, ..., i_k) to its
    column with one gather per degree, without sorting the n^k tuples. Read-only intp array."""
    if not 1 <= k <= order:
        raise ValueError(f"k must be between 1 and {order}, got {k}")
    offsets, _, padded = layout(n, order)
    lower = padded[offsets[k - 1]:offsets[k], :k - 1]
    rows = np.concatenate([np.repeat(lower, n, axis=0), np.tile(np.arange(n), lower.shape[0])[:, None]], axis=1)
    merged = sorted_rows(rows)
    result = _columns_of_tuples(n, order, merged, np.full(merged.shape[0], k)).astype(np.intp)
    result = result.reshape(lower.shape[0], n)
    result.setflags(write=False)
    return result
