"""Enumeration of the Feynman-like diagrams of an MLP derivative (docs/mathematics.md).

In: an order k (the number of input derivatives) and, optionally, a depth H (the number of
hidden layers). Out: the labelled rooted trees with k leaves whose internal nodes all have at
least two children (`Tree`), and, for a depth, every placement of their internal nodes on the
hidden layers 1..H with layers strictly increasing from child to parent (`Diagram`).

A leaf with label j stands for the j-th derivative index i_j of d^k f / dx_{i_1} ... dx_{i_k};
an internal node with m children is a vertex Gamma_m; every edge is a propagator; the root is
joined to the output by the output propagator. The single bare leaf (k = 1) is the full
propagator P(L,0), the Jacobian.

Canonical forms and order (so that every listing is deterministic):

- the children of a node are sorted by their smallest leaf label, so each labelled tree has
  exactly one representation, printed like "((1,2),3)";
- `trees(k)` is sorted by number of vertices (the single-vertex "contact" tree first), then by
  unlabelled shape, then by the leaf labels read left to right in drawing order
  (`Tree.display_children`: larger subtrees left), which lists the order-3 trees as
  (1,2,3), ((1,2),3), ((1,3),2), (1,(2,3)) -- the order of docs/mathematics.md's order-3 formula;
- `Diagram.layers` is aligned with `Tree.internal_nodes`, which lists the vertices in
  post-order (children before parents, so the root comes last); placements of one tree are in
  lexicographic order of that tuple.

Pure Python: importing this module loads neither SymPy nor Jinja2 (`import feynmlp` uses it).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Iterator

from ..errors import FeynmlpError, ResourceLimitError

__all__ = [
    "Tree",
    "Diagram",
    "leaf",
    "node",
    "trees",
    "tree_shapes",
    "placements",
    "count_placements",
    "diagrams",
    "count_trees",
    "MAX_ENUMERATED_ORDER",
]

# Labelled trees grow faster than k! (A000311: 39208 at k = 7, 660032 at k = 8, 12.8 million
# at k = 9). Order 7 lists in a few seconds; order 8 would take about a minute and gigabytes
# of Python objects, so `trees` refuses and points at `tree_shapes`.
MAX_ENUMERATED_ORDER = 7


@dataclass(frozen=True, eq=True)
class Tree:
    """A node of a labelled rooted tree: a leaf (`label` set, no children) or a vertex.

    Attributes:
        children: the subtrees, sorted by their smallest leaf label (empty for a leaf).
        label: the leaf label j (meaning the derivative index i_j), or None for a vertex.
    """

    children: tuple["Tree", ...] = ()
    label: int | None = None
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.label is None) == (not self.children):
            raise ValueError("a Tree node is either a leaf with a label or a vertex with children")
        object.__setattr__(self, "_hash", hash((self.label, self.children)))

    def __hash__(self) -> int:
        return self._hash

    # -- structure -------------------------------------------------------------------------
    @property
    def is_leaf(self) -> bool:
        return self.label is not None

    @property
    def valence(self) -> int:
        """Number of children: m of the vertex Gamma_m (0 for a leaf)."""
        return len(self.children)

    @functools.cached_property
    def leaves(self) -> tuple[int, ...]:
        """The leaf labels of this subtree, in ascending order."""
        if self.is_leaf:
            return (self.label,)
        return tuple(sorted(x for c in self.children for x in c.leaves))

    @property
    def order(self) -> int:
        """Number of leaves: the derivative order k this tree contributes to."""
        return len(self.leaves)

    @functools.cached_property
    def internal_nodes(self) -> tuple["Tree", ...]:
        """The vertices of this subtree in post-order (children before parents; root last)."""
        if self.is_leaf:
            return ()
        out: list[Tree] = []
        for c in self.children:
            out.extend(c.internal_nodes)
        out.append(self)
        return tuple(out)

    @functools.cached_property
    def height(self) -> int:
        """0 for a leaf, else 1 + the largest height of a child."""
        return 0 if self.is_leaf else 1 + max(c.height for c in self.children)

    def parent_index(self) -> tuple[int | None, ...]:
        """For each entry of `internal_nodes`, the index of its parent there (None for the root)."""
        nodes = self.internal_nodes
        pos = {n: i for i, n in enumerate(nodes)}
        parent: list[int | None] = [None] * len(nodes)
        for i, n in enumerate(nodes):
            for c in n.children:
                if not c.is_leaf:
                    parent[pos[c]] = i
        return tuple(parent)

    # -- shape -----------------------------------------------------------------------------
    @functools.cached_property
    def shape_key(self) -> tuple:
        """A nested tuple that is equal for two trees iff they differ only by relabelling."""
        if self.is_leaf:
            return ()
        return tuple(sorted((c.shape_key for c in self.children), key=_shape_sort_key))

    @property
    def shape(self) -> str:
        """The unlabelled shape in drawing order, '*' for each leaf, e.g. "((*,*),*)"."""
        return _shape_str(self.shape_key)

    def automorphisms(self) -> int:
        """Size of the automorphism group of the unlabelled shape (leaf permutations that fix it)."""
        return _automorphisms(self.shape_key)

    def labellings(self) -> int:
        """How many distinct labelled trees share this tree's shape: k! / |Aut|."""
        return math.factorial(self.order) // self.automorphisms()

    # -- printing and order ----------------------------------------------------------------
    def __str__(self) -> str:
        if self.is_leaf:
            return str(self.label)
        return "(" + ",".join(str(c) for c in self.children) + ")"

    def __repr__(self) -> str:
        return f"Tree({self})"

    @functools.cached_property
    def display_children(self) -> tuple["Tree", ...]:
        """The children in drawing order: larger subtrees to the left, ties by smallest label.

        Every tree of one shape is drawn (and its formula written) the same way; only the
        labels at the leaves change.
        """
        return tuple(sorted(self.children,
                            key=lambda c: (_neg_key(_shape_sort_key(c.shape_key)), c.leaves[0])))

    @functools.cached_property
    def display_leaves(self) -> tuple[int, ...]:
        """The leaf labels left to right in drawing order."""
        if self.is_leaf:
            return (self.label,)
        return tuple(x for c in self.display_children for x in c.display_leaves)

    def sort_key(self) -> tuple:
        """The canonical listing order: vertex count, then shape, then labels left to right."""
        return (len(self.internal_nodes), _shape_sort_key(self.shape_key), self.display_leaves)


def leaf(label: int) -> Tree:
    """The leaf for derivative index i_label."""
    return Tree(label=int(label))


def node(*children: Tree) -> Tree:
    """A vertex over `children` (at least two), in canonical child order."""
    if len(children) < 2:
        raise ValueError("a vertex needs at least two children (valence-1 factors live in propagators)")
    return Tree(children=tuple(sorted(children, key=lambda c: c.leaves[0])))


class _neg_key:
    """Reverses the order of a sort key (for descending sorts inside a compound key)."""

    __slots__ = ("key",)

    def __init__(self, key) -> None:
        self.key = key

    def __lt__(self, other: "_neg_key") -> bool:
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _neg_key) and other.key == self.key


def _shape_sort_key(key: tuple) -> tuple:
    # Leaves first, then fewer leaves, then recursively by children.
    return (_shape_leaves(key), tuple(_shape_sort_key(c) for c in key))


@functools.lru_cache(maxsize=None)
def _shape_leaves(key: tuple) -> int:
    return 1 if not key else sum(_shape_leaves(c) for c in key)


def _shape_str(key: tuple) -> str:
    if not key:
        return "*"
    # drawing order: larger subtrees first
    return "(" + ",".join(_shape_str(c) for c in reversed(key)) + ")"


@functools.lru_cache(maxsize=None)
def _automorphisms(key: tuple) -> int:
    if not key:
        return 1
    out = 1
    for c in key:
        out *= _automorphisms(c)
    # Identical sibling subtrees can be permuted among themselves.
    counts: dict[tuple, int] = {}
    for c in key:
        counts[c] = counts.get(c, 0) + 1
    for n in counts.values():
        out *= math.factorial(n)
    return out


# -- enumeration --------------------------------------------------------------------------

def _check_order(order, maximum: int | None = None) -> int:
    if isinstance(order, bool) or not isinstance(order, int):
        raise FeynmlpError(f"order must be a positive integer, got {order!r}")
    if order < 1:
        raise FeynmlpError(f"order must be at least 1 (the first derivative), got {order}")
    if maximum is not None and order > maximum:
        raise ResourceLimitError(
            f"order {order} has {count_trees(order)} labelled trees, too many to list as Python "
            f"objects (the limit is order {maximum}); use tree_shapes({order}) for the unlabelled "
            "shapes with their numbers of labellings")
    return order


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise FeynmlpError(f"depth (number of hidden layers) must be an integer >= 0, got {depth!r}")
    return depth


def _set_partitions(items: tuple[int, ...]) -> Iterator[list[tuple[int, ...]]]:
    """All set partitions of `items`, each a list of blocks sorted by first element."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        # `first` is the smallest element, so it joins an existing block at the front or
        # opens a new block that sorts first.
        yield [(first,)] + part
        for i in range(len(part)):
            yield part[:i] + [(first,) + part[i]] + part[i + 1:]


@functools.lru_cache(maxsize=None)
def _trees_on(labels: tuple[int, ...]) -> tuple[Tree, ...]:
    if len(labels) == 1:
        return (leaf(labels[0]),)
    out: list[Tree] = []
    for part in _set_partitions(labels):
        if len(part) < 2:
            continue
        blocks = sorted(part, key=lambda b: b[0])
        subtrees = [_trees_on(b) for b in blocks]
        for combo in _product(subtrees):
            # Blocks are already sorted by smallest label: build the node without re-sorting.
            out.append(Tree(children=combo))
    return tuple(out)


def _product(lists: list[tuple[Tree, ...]]) -> Iterator[tuple[Tree, ...]]:
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for tail in _product(lists[1:]):
            yield (head,) + tail


@functools.lru_cache(maxsize=None)
def trees(order: int) -> tuple[Tree, ...]:
    """Every labelled rooted tree with leaves 1..order and all vertices of valence >= 2.

    Args:
        order: the derivative order k >= 1 (at most MAX_ENUMERATED_ORDER).

    Returns:
        The trees in canonical order; len is A000311(k): 1, 1, 4, 26, 236, 2752, ...
    """
    order = _check_order(order, MAX_ENUMERATED_ORDER)
    return tuple(sorted(_trees_on(tuple(range(1, order + 1))), key=Tree.sort_key))


def count_trees(order: int) -> int:
    """A000311(order), counted without listing: the number of labelled trees of that order."""
    if order < 1:
        return 0
    # r(n): trees on n labelled leaves. F(n): forests on n labelled leaves (a set partition
    # into >= 1 blocks, each carrying a tree), F(0) = 1. Splitting off the block that holds
    # leaf 1 (size s): F(n) = sum_s C(n-1, s-1) r(s) F(n-s). A tree with n >= 2 leaves is a
    # vertex over a forest of >= 2 blocks, i.e. the s < n part G of that sum; so r(n) = G and
    # F(n) = G + r(n) = 2 G.
    r = [0, 1]
    forests = [1, 1]
    for n in range(2, order + 1):
        g = sum(math.comb(n - 1, s - 1) * r[s] * forests[n - s] for s in range(1, n))
        r.append(g)
        forests.append(2 * g)
    return r[order]


@functools.lru_cache(maxsize=None)
def _shapes_of_size(n: int) -> tuple[tuple, ...]:
    """Unlabelled shape keys with n leaves (A000669: 1, 1, 2, 5, 12, 33, 90, ...)."""
    if n == 1:
        return ((),)
    out = set()
    for parts in _integer_partitions(n, n - 1):
        if len(parts) < 2:
            continue
        for combo in _multiset_choices(parts):
            out.add(tuple(sorted(combo, key=_shape_sort_key)))
    return tuple(sorted(out, key=_shape_sort_key))


def _integer_partitions(n: int, largest: int) -> Iterator[tuple[int, ...]]:
    if n == 0:
        yield ()
        return
    for first in range(min(n, largest), 0, -1):
        for rest in _integer_partitions(n - first, first):
            yield (first,) + rest


def _multiset_choices(parts: tuple[int, ...]) -> Iterator[tuple[tuple, ...]]:
    """Multisets of shapes, one of size parts[i] for each i (parts non-increasing)."""
    if not parts:
        yield ()
        return
    size = parts[0]
    same = 1
    while same < len(parts) and parts[same] == size:
        same += 1
    options = _shapes_of_size(size)
    for idx in _combinations_with_replacement(len(options), same):
        for rest in _multiset_choices(parts[same:]):
            yield tuple(options[i] for i in idx) + rest


def _combinations_with_replacement(n: int, r: int) -> Iterator[tuple[int, ...]]:
    import itertools
    return itertools.combinations_with_replacement(range(n), r)


def _label_shape(key: tuple, start: int) -> tuple[Tree, int]:
    if not key:
        return leaf(start), start + 1
    kids = []
    for c in reversed(key):  # drawing order: larger subtrees first
        t, start = _label_shape(c, start)
        kids.append(t)
    return node(*kids), start


def tree_shapes(order: int) -> tuple[tuple[Tree, int], ...]:
    """The unlabelled tree shapes of one order, each with a representative and its labellings.

    The representative is the first tree of its shape in `trees(order)`: leaves 1..k read
    left to right in drawing order.
    The numbers of labellings (k! / automorphisms) add up to A000311(k). Works for any order
    (no labelled enumeration); orders above about 12 have thousands of shapes.

    Returns:
        Tuples (representative Tree, number of labelled trees of that shape), in the canonical
        order (vertex count, then shape).
    """
    order = _check_order(order)
    reps = [_label_shape(key, 1)[0] for key in _shapes_of_size(order)]
    reps.sort(key=Tree.sort_key)
    return tuple((t, t.labellings()) for t in reps)


# -- layer placements ---------------------------------------------------------------------

@dataclass(frozen=True)
class Diagram:
    """One term of the diagram sum: a tree and the hidden layer of each of its vertices.

    Attributes:
        tree: the labelled tree.
        layers: the hidden layer (1..H) of each vertex, aligned with `tree.internal_nodes`
            (post-order, root last); strictly increasing from child to parent. Empty for the
            bare propagator (k = 1).
    """

    tree: Tree
    layers: tuple[int, ...]

    def layer_of(self, vertex: Tree) -> int:
        """The hidden layer of one vertex of `tree`."""
        return self.layers[self.tree.internal_nodes.index(vertex)]

    @property
    def order(self) -> int:
        return self.tree.order

    def __str__(self) -> str:
        where = dict(zip(self.tree.internal_nodes, self.layers))

        def fmt(t: Tree) -> str:
            if t.is_leaf:
                return str(t.label)
            return "(" + ",".join(fmt(c) for c in t.children) + f")@{where[t]}"
        return fmt(self.tree)


def placements(tree: Tree, depth: int) -> tuple[tuple[int, ...], ...]:
    """Every assignment of hidden layers 1..depth to the vertices of `tree`, child < parent.

    Returns:
        Layer tuples aligned with `tree.internal_nodes`, in lexicographic order.
    """
    depth = _check_depth(depth)
    nodes = tree.internal_nodes
    if not nodes:
        return ((),)
    parent = tree.parent_index()
    n = len(nodes)
    out: list[tuple[int, ...]] = []
    layers = [0] * n

    # Assign from the root down (reverse post-order visits each parent before its children);
    # a vertex's layer is at most its parent's layer minus one.
    order_ = list(range(n - 1, -1, -1))

    def assign(pos: int) -> None:
        if pos == n:
            out.append(tuple(layers))
            return
        i = order_[pos]
        top = depth if parent[i] is None else layers[parent[i]] - 1
        # Leave room below for the longest chain of vertices under this one.
        low = nodes[i].height
        for layer in range(low, top + 1):
            layers[i] = layer
            assign(pos + 1)
    assign(0)
    out.sort()
    return tuple(out)


def count_placements(tree: Tree, depth: int) -> int:
    """The number of layer placements of `tree` on `depth` hidden layers, without listing them."""
    depth = _check_depth(depth)
    if tree.is_leaf:
        return 1

    @functools.lru_cache(maxsize=None)
    def ways(t: Tree, top: int) -> int:
        # placements of subtree t with its root on a layer <= top
        total = 0
        for layer in range(1, top + 1):
            prod = 1
            for c in t.children:
                if not c.is_leaf:
                    prod *= ways(c, layer - 1)
                    if not prod:
                        break
            total += prod
        return total
    return ways(tree, depth)


def diagrams(order: int, depth: int | None = None):
    """The diagrams of d^k f / dx_{i_1} ... dx_{i_k}.

    Args:
        order: k >= 1.
        depth: the number H of hidden layers, or None.

    Returns:
        With depth None: the tuple of labelled trees (`trees(order)`). With a depth: the
        tuple of `Diagram(tree, layers)` over every tree and every placement of its vertices
        on hidden layers 1..H, trees in canonical order and placements lexicographic. For
        k = 2 there are H of them, for k = 3 H + 3 H (H - 1) / 2.
    """
    ts = trees(order)
    if depth is None:
        return ts
    depth = _check_depth(depth)
    return tuple(Diagram(t, p) for t in ts for p in placements(t, depth))
