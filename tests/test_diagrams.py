"""Enumeration of the diagram trees and their layer placements (codegen/diagrams.py).

References are independent of the enumeration: OEIS A000311 (labelled series-reduced rooted
trees), A000669 (their unlabelled shapes), the closed forms H, H + 3H(H-1)/2 in docs/mathematics.md,
and a brute-force filter over all layer tuples.
"""
from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

import feynmlp
from feynmlp import FeynmlpError
from feynmlp.codegen.diagrams import (
    Diagram,
    Tree,
    count_placements,
    count_trees,
    diagrams,
    leaf,
    node,
    placements,
    tree_shapes,
    trees,
)

A000311 = {1: 1, 2: 1, 3: 4, 4: 26, 5: 236, 6: 2752}
A000669 = {1: 1, 2: 1, 3: 2, 4: 5, 5: 12, 6: 33, 7: 90}


@pytest.mark.parametrize("k", sorted(A000311))
def test_tree_counts_match_oeis(k):
    assert len(trees(k)) == A000311[k]
    assert count_trees(k) == A000311[k]


def test_count_trees_beyond_listing():
    # A000311(7..9)
    assert [count_trees(k) for k in (7, 8, 9)] == [39208, 660032, 12818912]


@pytest.mark.parametrize("k", range(1, 7))
def test_trees_are_well_formed_and_distinct(k):
    ts = trees(k)
    assert len(set(ts)) == len(ts)
    assert len({str(t) for t in ts}) == len(ts)
    for t in ts:
        assert t.leaves == tuple(range(1, k + 1))
        assert t.order == k
        for v in t.internal_nodes:
            assert v.valence >= 2
            assert not v.is_leaf
            # canonical child order: by smallest leaf
            firsts = [c.leaves[0] for c in v.children]
            assert firsts == sorted(firsts)
        # leaves + vertices - 1 edges inside the tree, each leaf and non-root vertex has a parent
        n_edges = sum(v.valence for v in t.internal_nodes)
        assert n_edges == k + len(t.internal_nodes) - 1
    # the canonical order is the sort order
    assert list(ts) == sorted(ts, key=Tree.sort_key)


def test_order_one_is_the_bare_propagator():
    (t,) = trees(1)
    assert t.is_leaf and t.label == 1 and str(t) == "1"
    assert t.internal_nodes == ()
    (d,) = diagrams(1, 3)
    assert d.layers == ()


def test_order_three_trees_in_design_order():
    assert [str(t) for t in trees(3)] == ["(1,2,3)", "((1,2),3)", "((1,3),2)", "(1,(2,3))"]


def test_str_and_structure_of_a_tree():
    t = node(node(leaf(3), leaf(1)), leaf(2))
    assert str(t) == "((1,3),2)"
    assert t.valence == 2
    assert [str(v) for v in t.internal_nodes] == ["(1,3)", "((1,3),2)"]
    assert t.shape == "((*,*),*)"
    assert t in trees(3)


@pytest.mark.parametrize("k", range(1, 7))
def test_shapes_cover_the_labelled_trees(k):
    shapes = tree_shapes(k)
    assert len(shapes) == A000669[k]
    by_shape: dict[tuple, int] = {}
    for t in trees(k):
        by_shape[t.shape_key] = by_shape.get(t.shape_key, 0) + 1
    assert {rep.shape_key: n for rep, n in shapes} == by_shape
    assert sum(n for _, n in shapes) == A000311[k]


def test_shapes_of_order_seven_without_listing():
    shapes = tree_shapes(7)
    assert len(shapes) == A000669[7]
    assert sum(n for _, n in shapes) == 39208


@pytest.mark.parametrize("H", [1, 2, 3, 4])
def test_placement_counts_order_two_and_three(H):
    assert len(diagrams(2, H)) == H
    assert len(diagrams(3, H)) == H + 3 * H * (H - 1) // 2


@pytest.mark.parametrize("k,H", [(3, 3), (4, 2), (4, 3), (5, 3)])
def test_placements_match_brute_force(k, H):
    for t in trees(k):
        nodes = t.internal_nodes
        parent = {c: v for v in nodes for c in v.children if not c.is_leaf}
        expect = []
        for layers in itertools.product(range(1, H + 1), repeat=len(nodes)):
            where = dict(zip(nodes, layers))
            if all(where[c] < where[p] for c, p in parent.items()):
                expect.append(layers)
        assert list(placements(t, H)) == expect
        assert count_placements(t, H) == len(expect)


def test_diagram_structure():
    ds = diagrams(3, 2)
    assert all(isinstance(d, Diagram) for d in ds)
    assert [str(d) for d in ds] == ["(1,2,3)@1", "(1,2,3)@2", "((1,2)@1,3)@2",
                                    "((1,3)@1,2)@2", "(1,(2,3)@1)@2"]
    d = ds[2]
    inner, root = d.tree.internal_nodes
    assert d.layer_of(inner) == 1 and d.layer_of(root) == 2
    # no hidden layers: only the linear term survives
    assert diagrams(2, 0) == ()
    assert len(diagrams(1, 0)) == 1


def test_depth_none_returns_trees():
    assert feynmlp.diagrams(4) == trees(4)
    assert feynmlp.diagrams(3, 2) == diagrams(3, 2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_bad_order_is_refused(bad):
    with pytest.raises(FeynmlpError, match="order"):
        diagrams(bad)


def test_too_large_order_is_refused_with_a_pointer():
    with pytest.raises(FeynmlpError, match="tree_shapes"):
        trees(9)


def test_bad_depth_is_refused():
    with pytest.raises(FeynmlpError, match="depth"):
        diagrams(2, -1)


def test_enumeration_loads_no_sympy_or_jinja():
    code = ("import sys, feynmlp; feynmlp.diagrams(4, 2); "
            "print('sympy' in sys.modules, 'jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
