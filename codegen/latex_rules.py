"""The diagram rules of one order written out: a standalone LaTeX document, or plain text.

In: an order k, a depth H (number of hidden layers; the output layer is L = H + 1), and how
to list the diagrams. Out: `rules_latex(...)`, a complete LaTeX document rendered through
templates/rules.tex.jinja (definitions of propagators and vertices, the rules, and every
diagram drawn with TikZ-Feynman beside its formula), and `rules_text(...)`, the same content
as plain text for a terminal.

Each labelled tree T gives one formula D_T: the product of its propagators and vertices, summed
over the hidden layers of its vertices (layers strictly increasing from child to parent, all
in 1..H) and over repeated neuron indices; the derivative is the sum of D_T over all trees.
With `expand_layers` every layer placement is also written as its own term with numbers in
place of the layer variables.

Listing. Up to order 4 (at most 26 trees) every labelled tree is drawn and written out. From
order 5 on (236, 2752, 39208 trees) the document lists one representative per unlabelled
shape (12, 33, 90 shapes) with its number of labellings: the other trees of the shape follow
by permuting the labels i_1..i_k, and all of them are named when there are at most
`LIST_LABELLINGS_MAX` of them. `by_shape` forces either listing.

All mathematics happens here (SymPy is used only to print each tree's number of layer
placements as a polynomial in H); the template only arranges the strings. TikZ-Feynman code
places every vertex at explicit coordinates (diagram_drawing.layout), so the document compiles
with plain pdflatex (no LuaLaTeX graph drawing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import FeynmlpError
from .diagram_drawing import layout, vertex_names
from .diagrams import (
    Tree,
    count_placements,
    count_trees,
    placements,
    tree_shapes,
    trees,
)

__all__ = [
    "Factor",
    "TreeTerm",
    "tree_term",
    "placement_polynomial",
    "rules_latex",
    "rules_text",
    "tikz_diagram",
    "SHAPE_LISTING_FROM_ORDER",
    "LIST_LABELLINGS_MAX",
    "MAX_EXPANDED_TERMS",
]

# From this order on, diagrams are listed by unlabelled shape (see the module docstring).
SHAPE_LISTING_FROM_ORDER = 5
# A shape's labelled trees are named one by one when there are at most this many.
LIST_LABELLINGS_MAX = 60
# `expand_layers` writes one line per (tree, placement); beyond this the listing is refused.
MAX_EXPANDED_TERMS = 400
# Factors per printed line of a LaTeX formula.
_FACTORS_PER_LINE = 6


@dataclass(frozen=True)
class Factor:
    """One propagator or vertex of a term.

    Attributes:
        kind: "propagator" or "vertex".
        upper: the propagator's target layer, or the vertex's layer (a layer variable name
            such as "a" for l_a, or a layer number).
        lower: the propagator's source layer (0 = the inputs); None for a vertex.
        row: the target neuron letter ("o" = output component), or the vertex's neuron.
        col: the source neuron letter, or the leaf label j (int, meaning i_j); the valence m
            for a vertex.
    """

    kind: str
    upper: str | int
    lower: str | int | None
    row: str
    col: str | int


@dataclass(frozen=True)
class TreeTerm:
    """The formula of one tree: vertices with their layers, layer constraints and factors.

    Attributes:
        tree: the labelled tree.
        letters: the neuron letter of each vertex, in post-order (children first).
        constraints: (child letter, parent letter) pairs: l_child < l_parent.
        factors: the propagators and vertices, read from the output down, in drawing order.
        layers: None for the symbolic form (layer l_x for vertex x), or the layer of each
            vertex (aligned with `letters`) for one placement.
    """

    tree: Tree
    letters: tuple[str, ...]
    constraints: tuple[tuple[str, str], ...]
    factors: tuple[Factor, ...]
    layers: tuple[int, ...] | None = None


def tree_term(tree: Tree, depth: int, layers: Sequence[int] | None = None) -> TreeTerm:
    """Build the formula of `tree` for a network with `depth` hidden layers.

    Args:
        tree: a labelled tree.
        depth: H; the output layer is L = H + 1.
        layers: optional placement, aligned with `tree.internal_nodes` (as in `Diagram`).
    """
    names = vertex_names(tree)
    order_ = list(names)  # post-order over drawing order
    letters = tuple(names[v] for v in order_)
    if layers is not None:
        by_node = dict(zip(tree.internal_nodes, layers))
        layer_of = {names[v]: by_node[v] for v in order_}
    else:
        layer_of = {names[v]: names[v] for v in order_}
    L = depth + 1
    factors: list[Factor] = []
    constraints: list[tuple[str, str]] = []

    def visit(t: Tree) -> None:
        me = names[t]
        factors.append(Factor("vertex", layer_of[me], None, me, t.valence))
        leaves = []
        for c in t.display_children:
            if c.is_leaf:
                leaves.append(c)
                continue
            child = names[c]
            constraints.append((child, me))
            factors.append(Factor("propagator", layer_of[me], layer_of[child], me, child))
            visit(c)
        for c in leaves:
            factors.append(Factor("propagator", layer_of[me], 0, me, c.label))

    if tree.is_leaf:
        factors.append(Factor("propagator", L, 0, "o", tree.label))
    else:
        root = names[tree]
        factors.append(Factor("propagator", L, layer_of[root], "o", root))
        visit(tree)
    return TreeTerm(tree, letters, tuple(sorted(constraints, key=lambda p: (p[1], p[0]))),
                    tuple(factors), None if layers is None else tuple(layer_of[x] for x in letters))


# -- printing one term --------------------------------------------------------------------

def _latex_layer(value) -> str:
    return f"l_{value}" if isinstance(value, str) else str(value)


def _text_layer(value) -> str:
    return f"l_{value}" if isinstance(value, str) else str(value)


def latex_factor(f: Factor) -> str:
    """P^{(l_b,l_a)}_{ba}, P^{(l_a,0)}_{a i_1}, \\Gamma^{(l_a)}_{a,2}, ..."""
    if f.kind == "vertex":
        return rf"\Gamma^{{({_latex_layer(f.upper)})}}_{{{f.row},{f.col}}}"
    col = f"i_{{{f.col}}}" if isinstance(f.col, int) else f.col
    sep = " " if isinstance(f.col, int) else ""
    return rf"P^{{({_latex_layer(f.upper)},{_latex_layer(f.lower)})}}_{{{f.row}{sep}{col}}}"


def text_factor(f: Factor) -> str:
    """P(l_b,l_a)[b,a], P(l_a,0)[a,i1], G(l_a)[a,2], ..."""
    if f.kind == "vertex":
        return f"G({_text_layer(f.upper)})[{f.row},{f.col}]"
    col = f"i{f.col}" if isinstance(f.col, int) else f.col
    return f"P({_text_layer(f.upper)},{_text_layer(f.lower)})[{f.row},{col}]"


def _constraint_groups(term: TreeTerm) -> list[tuple[list[str], str]]:
    groups: dict[str, list[str]] = {}
    for child, parent in term.constraints:
        groups.setdefault(parent, []).append(child)
    return [(children, parent) for parent, children in sorted(groups.items())]


def _is_chain(term: TreeTerm) -> bool:
    return all(len(children) == 1 for children, _ in _constraint_groups(term))


def latex_layer_sum(term: TreeTerm, depth: int) -> str:
    """The sum over the vertices' layers, e.g. \\sum_{1 \\le l_a < l_b \\le 2}."""
    if term.layers is not None or not term.letters:
        return ""
    ls = [f"l_{x}" for x in term.letters]
    if len(ls) == 1:
        return rf"\sum_{{{ls[0]}=1}}^{{{depth}}}"
    if _is_chain(term):
        # post-order of a chain is bottom-up: l_a < l_b < ...
        return rf"\sum_{{1 \le {' < '.join(ls)} \le {depth}}}"
    cons = r",\ ".join(f"{', '.join('l_' + c for c in children)} < l_{parent}"
                       for children, parent in _constraint_groups(term))
    return rf"\sum_{{\substack{{1 \le {', '.join(ls)} \le {depth} \\ {cons}}}}}"


def text_layer_sum(term: TreeTerm, depth: int) -> str:
    """The same sum in plain text, e.g. sum_{1<=l_a<l_b<=2}."""
    if term.layers is not None or not term.letters:
        return ""
    ls = [f"l_{x}" for x in term.letters]
    if len(ls) == 1:
        return f"sum_{{{ls[0]}=1..{depth}}}"
    if _is_chain(term):
        return f"sum_{{1<={'<'.join(ls)}<={depth}}}"
    cons = "; ".join(f"{','.join('l_' + c for c in children)}<l_{parent}"
                     for children, parent in _constraint_groups(term))
    return f"sum_{{1<={','.join(ls)}<={depth}; {cons}}}"


def latex_term_lines(term: TreeTerm, depth: int) -> list[str]:
    """The term as LaTeX lines (layer sum and first factors first), for an aligned block."""
    factors = [latex_factor(f) for f in term.factors]
    prefix = latex_layer_sum(term, depth)
    # A two-row layer sum (\substack) or a long chain is wide: fewer factors share its line.
    wide = r"\substack" in prefix or len(term.letters) >= 4
    first = _FACTORS_PER_LINE - (2 if wide else 0)
    chunks = [factors[:first]]
    for start in range(first, len(factors), _FACTORS_PER_LINE):
        chunks.append(factors[start:start + _FACTORS_PER_LINE])
    lines = [r"\,".join(c) for c in chunks if c]
    if prefix:
        lines[0] = prefix + r"\, " + lines[0]
    return lines


def text_term(term: TreeTerm, depth: int) -> str:
    prefix = text_layer_sum(term, depth)
    body = " ".join(text_factor(f) for f in term.factors)
    return f"{prefix} {body}" if prefix else body


def latex_derivative(order: int) -> str:
    """\\frac{\\partial^{k} f_o}{\\partial x_{i_1} ... \\partial x_{i_k}}."""
    den = r"\,".join(rf"\partial x_{{i_{{{j}}}}}" for j in range(1, order + 1))
    num = r"\partial f_o" if order == 1 else rf"\partial^{{{order}}} f_o"
    return rf"\frac{{{num}}}{{{den}}}"


def text_derivative(order: int) -> str:
    den = " ".join(f"dx_i{j}" for j in range(1, order + 1))
    return f"d^{order} f_o / {den}" if order > 1 else f"d f_o / {den}"


# -- counting layer placements ------------------------------------------------------------

def placement_polynomial(tree: Tree):
    """The number of layer placements of `tree` as a SymPy polynomial in H.

    The strictly order-preserving maps from the n vertices into 1..H are counted by a
    polynomial of degree n in H; it is interpolated from the exact counts at H = 0..n.
    """
    import sympy

    H = sympy.Symbol("H")
    n = len(tree.internal_nodes)
    if n == 0:
        return sympy.Integer(1)
    points = [(h, count_placements(tree, h)) for h in range(n + 1)]
    return sympy.factor(sympy.expand(sympy.interpolate(points, H)))


def _order_polynomial(order: int):
    import sympy

    total = sum((n * placement_polynomial(t) for t, n in tree_shapes(order)), sympy.Integer(0))
    return sympy.factor(sympy.expand(total))


# -- TikZ-Feynman -------------------------------------------------------------------------

def _num(v: float) -> str:
    return f"{v:g}"


def tikz_diagram(tree: Tree, x_unit: float | None = None, y_unit: float = 0.95) -> str:
    """TikZ-Feynman code drawing `tree`, every vertex at explicit coordinates (pdflatex-safe).

    The column width (x_unit, cm) shrinks with the number of leaves so that the picture fits
    the document's picture column (about 4 cm).
    """
    lay = layout(tree)
    if x_unit is None:
        x_unit = min(0.75, 3.6 / max(tree.order - 1, 1))
    lines = [rf"\begin{{tikzpicture}}[x={_num(x_unit)}cm, y={_num(y_unit)}cm, baseline=(current bounding box.center)]",
             r"\begin{feynman}"]

    def node_name(name: str) -> str:
        return {"leaf": "in", "vertex": "v", "output": ""}[lay.kinds[name]] + name

    for name, (x, y) in lay.points.items():
        kind = lay.kinds[name]
        at = f"at ({_num(x)},{_num(y)})"
        if kind == "leaf":
            lines.append(rf"\vertex ({node_name(name)}) {at} {{\(i_{{{name[1:]}}}\)}};")
        elif kind == "vertex":
            lines.append(rf"\vertex[dot, label={{[font=\scriptsize]right:\({name}\)}}] "
                         rf"({node_name(name)}) {at} {{}};")
        else:
            lines.append(rf"\vertex ({node_name(name)}) {at} {{\(f_o\)}};")
    lines.append(r"\diagram* {")
    for lo, hi, _kind in lay.edges:
        lines.append(f"  ({node_name(lo)}) -- [fermion] ({node_name(hi)}),")
    lines.append("};")
    lines.append(r"\end{feynman}")
    lines.append(r"\end{tikzpicture}")
    return "\n".join(lines)


# -- the whole listing --------------------------------------------------------------------

def _check(order, depth) -> tuple[int, int]:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise FeynmlpError(f"order must be a positive integer, got {order!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise FeynmlpError(f"depth (number of hidden layers) must be an integer >= 1, got {depth!r}")
    return order, depth


def _entries(order: int, depth: int, by_shape: bool | None, expand_layers: bool) -> tuple[bool, list[dict]]:
    grouped = order >= SHAPE_LISTING_FROM_ORDER if by_shape is None else bool(by_shape)
    if grouped:
        reps = list(tree_shapes(order))
    else:
        reps = [(t, 1) for t in trees(order)]
    if expand_layers:
        n_terms = sum(count_placements(t, depth) for t, _ in reps)
        if n_terms > MAX_EXPANDED_TERMS:
            raise FeynmlpError(
                f"expanding every layer placement of order {order} on {depth} hidden layers "
                f"would write {n_terms} terms (the limit is {MAX_EXPANDED_TERMS}); leave out "
                "--expand-layers (the layer sums stay symbolic), or lower --depth or --order")
    by_rep: dict[tuple, list[Tree]] = {}
    if grouped and order <= 6:  # order 7 has 39208 trees: too slow to list for naming
        for t in trees(order):
            by_rep.setdefault(t.shape_key, []).append(t)
    out = []
    for t, n_lab in reps:
        term = tree_term(t, depth)
        entry = {
            "tree": t,
            "term": term,
            "labellings": n_lab,
            "placements": count_placements(t, depth),
            "expanded": ([tree_term(t, depth, p) for p in placements(t, depth)]
                         if expand_layers else []),
            "others": [],
        }
        if grouped:
            members = by_rep.get(t.shape_key, [])
            if 1 < len(members) <= LIST_LABELLINGS_MAX:
                entry["others"] = [str(m) for m in members if m != t]
        out.append(entry)
    return grouped, out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _placements_note(n: int, depth: int, height: int, latex: bool) -> str:
    h = f"$H = {depth}$" if latex else f"H = {depth}"
    note = f"that is {n} for {h}"
    if n == 0:
        note += f" (this tree vanishes: it needs at least {height} hidden layers)"
    return note


def rules_latex(order: int, depth: int = 2, *, by_shape: bool | None = None,
                expand_layers: bool = False) -> str:
    """A standalone LaTeX document with the rules and every diagram of one order.

    Args:
        order: k >= 1 (the command caps it; this function works up to order 7).
        depth: H >= 1 hidden layers; the output layer is L = H + 1.
        by_shape: list one representative per unlabelled shape (True), every labelled tree
            (False), or decide by order (None: shapes from order SHAPE_LISTING_FROM_ORDER).
        expand_layers: also write each layer placement as its own term.

    Returns:
        The document, ending in a newline; compiles with pdflatex (needs tikz-feynman).
    """
    import sympy

    from .templating import render

    order, depth = _check(order, depth)
    grouped, entries = _entries(order, depth, by_shape, expand_layers)
    items = []
    for e in entries:
        t, term = e["tree"], e["term"]
        items.append({
            "label": str(t),
            "shape": t.shape,
            "tikz": tikz_diagram(t),
            "lines": latex_term_lines(term, depth),
            "labellings": e["labellings"],
            "placements": e["placements"],
            "placements_note": _placements_note(e["placements"], depth, t.height, latex=True),
            "placement_polynomial": sympy.latex(placement_polynomial(t)),
            "expanded": [{"layers": ", ".join(f"l_{x} = {v}" for x, v in zip(x_.letters, x_.layers)),
                          "lines": latex_term_lines(x_, depth)} for x_ in e["expanded"]],
            "others": e["others"],
        })
    total_poly = _order_polynomial(order)
    H = sympy.Symbol("H")
    return render(
        "rules.tex.jinja",
        order=order,
        depth=depth,
        output_layer=depth + 1,
        grouped=grouped,
        derivative=latex_derivative(order),
        n_trees=count_trees(order),
        n_shapes=len(tree_shapes(order)),
        n_terms=int(total_poly.subs(H, depth)),
        terms_polynomial=sympy.latex(total_poly),
        items=items,
        shape_from_order=SHAPE_LISTING_FROM_ORDER,
        list_labellings_max=LIST_LABELLINGS_MAX,
    )


def rules_text(order: int, depth: int = 2, *, by_shape: bool | None = None,
               expand_layers: bool = False) -> str:
    """The rules and every diagram of one order as plain text (see `rules_latex`)."""
    order, depth = _check(order, depth)
    grouped, entries = _entries(order, depth, by_shape, expand_layers)
    L = depth + 1
    n_terms = sum(e["labellings"] * e["placements"] for e in entries)
    out = [
        f"Feynman-like rules of an MLP: order {order}, {depth} hidden layers (output layer L = {L})",
        "",
        "Network: z(1) = W(1) x + b(1); a(l) = s_l(z(l)); z(l+1) = W(l+1) a(l) + b(l+1); "
        f"f = z({L}).",
        "Propagators (products of weights and first derivatives S1(l) = diag(s_l'(z(l)))):",
        "  P(l',l)[b,a] = dz(l')_b/da(l)_a = [W(l') S1(l'-1) W(l'-1) ... S1(l+1) W(l+1)]_ba,"
        "  P(l+1,l) = W(l+1)",
        "  input  P(l,0)[a,i] = dz(l)_a/dx_i,   P(1,0) = W(1)",
        f"  output P({L},l)[o,a] = df_o/da(l)_a,  full P({L},0) = the Jacobian df/dx",
        "Vertices (higher derivatives of the activation at neuron a of hidden layer l):",
        "  G(l)[a,m] = s_l^(m)(z(l)_a),  m >= 2 children",
        "Rules: draw every rooted tree with leaves i1..ik and vertices of >= 2 children;",
        f"  place the vertices on hidden layers 1..{depth}, increasing towards the root;",
        "  multiply a propagator per edge and a vertex per node; sum over layers and over",
        "  repeated neuron indices (a, b, ...). No symmetry factors: the leaves are labelled.",
        "",
        f"{text_derivative(order)} = sum over the {_plural(count_trees(order), 'labelled tree')} "
        f"T of D_T ({_plural(n_terms, 'term')} with layer placements on {depth} hidden layers)",
    ]
    if grouped:
        out.append(f"Listed by shape ({len(entries)} shapes): the formula of one representative; "
                   "the other trees of a shape permute the labels i1..ik.")
    out.append("")
    for e in entries:
        t, term = e["tree"], e["term"]
        head = f"D_{t}"
        if grouped:
            head += f"   shape {t.shape}, {e['labellings']} labelling(s)"
        head += f", {e['placements']} placement(s)"
        if e["placements"] == 0:
            head += f" (vanishes: needs at least {t.height} hidden layers)"
        out.append(head)
        out.append(f"  = {text_term(term, depth)}")
        for x_ in e["expanded"]:
            where = ", ".join(f"l_{x}={v}" for x, v in zip(x_.letters, x_.layers))
            out.append(f"    [{where}]  {text_term(x_, depth)}")
        if e["others"]:
            out.append(f"  other labellings: {' '.join(e['others'])}")
    return "\n".join(out) + "\n"
