"""What `feynmlp rules --operator NAME` shows: the collapsed rules of an operator and its diagrams.

In: an operator with collapsed rules ("laplacian", "biharmonic"). Out: plain text, a standalone
LaTeX document, or the (tree, caption) panels of a PNG grid. The rules are those of
feynmlp.codegen.operator_rules (the ones the shipped kernels carry); the diagrams are the
labelled trees of the operator's order with the leaves named by the paired indices (leaves 1, 2
-> i; 3, 4 -> j) and grouped into classes that the sum over i (and j) makes equal.
"""
from __future__ import annotations

from . import operator_rules

CARRIED = {
    "laplacian": ["  J_a = dz/dx_a, lap = sum_i d2z/dx_i^2; jj = |J|^2."],
    "biharmonic": ["  J_a = dz/dx_a, H_ab = d2z/dx_a dx_b, lap = sum_i H_ii,",
                   "  L3_a = sum_i d3z/dx_i dx_i dx_a, B = sum_ij d4z/dx_i^2 dx_j^2;",
                   "  jj = |J|^2, hj_a = (H J)_a, jhj = J^T H J, hf = |H|_F^2, jl3 = J.L3."],
}
DEFINITIONS = [
    "Affine map z' = W a + b: every carried quantity is mapped by W (the bias only shifts the value).",
    "Start (first layer): J = the columns of W(1) of the differentiated inputs, everything else 0.",
    "Activation a = s(z), with s1..s4 the derivatives s^(m)(z) (Faa di Bruno, collapsed over the",
    "paired indices):",
]
LABELS = {"laplacian": "ii", "biharmonic": "iijj"}
TITLES = {"laplacian": "the Laplacian sum_i d2f/dx_i^2", "biharmonic": "the biharmonic sum_ij d4f/dx_i^2 dx_j^2"}


def _parse(text: str, labels: str):
    """A tree's text form, e.g. '(1,(2,4),3)', as nested tuples with leaf k named labels[k-1]."""
    position = 0

    def node():
        nonlocal position
        if text[position] == "(":
            position += 1
            children = [node()]
            while text[position] == ",":
                position += 1
                children.append(node())
            position += 1  # ")"
            return tuple(children)
        start = position
        while position < len(text) and text[position].isdigit():
            position += 1
        return labels[int(text[start:position]) - 1]

    return node()


def _canonical(tree, swap: dict) -> str:
    if isinstance(tree, str):
        return swap.get(tree, tree)
    return "(" + ",".join(sorted(_canonical(child, swap) for child in tree)) + ")"


def diagram_classes(operator: str):
    """[(class text, number of labelled trees, a representative Tree)], in a fixed order."""
    from .diagrams import trees

    labels = LABELS[operator]
    classes: dict[str, list] = {}
    for tree in trees(len(labels)):
        parsed = _parse(str(tree), labels)
        key = min(_canonical(parsed, {}), _canonical(parsed, {"i": "j", "j": "i"}))
        classes.setdefault(key, []).append(tree)
    return [(key, len(members), members[0]) for key, members in sorted(classes.items(), key=lambda kv: (-len(kv[1]), kv[0]))]


def rules_text(operator: str) -> str:
    order = operator_rules.operator_order(operator)
    lines = [f"Collapsed rules of {TITLES[operator]} (order {order})", "",
             "Each neuron carries derivatives of its pre-activation z with respect to the inputs x",
             "(sums over i, j run over the differentiated inputs):"]
    lines += CARRIED[operator] + DEFINITIONS
    lines += ["  " + line for line in operator_rules.rule_text(operator)]
    if operator == "biharmonic":
        lines.append("  (lap = tr H is read off H, not carried)")
    if operator == "laplacian":
        lines += ["", "The same sum from the top vertex: sum_l sum_b g_lb s''(z_lb) |D_l,b|^2, with D_l = dz_l/dx and",
                  "g_l = df/da_l (one backward pass); layer 1's D_1 = W(1) is the same for every point."]
    lines.append("")
    classes = diagram_classes(operator)
    total = sum(count for _, count, _ in classes)
    lines.append(f"Diagrams: the labelled trees of order {order} ({total}) with leaves {', '.join(LABELS[operator])} "
                 f"(summed), in classes ({len(classes)}):")
    for key, count, tree in classes:
        lines.append(f"  {key:<22} x{count}   e.g. {tree}")
    return "\n".join(lines) + "\n"


def rules_latex(operator: str) -> str:
    order = operator_rules.operator_order(operator)
    body = [r"\documentclass{article}", r"\usepackage{amsmath}", r"\begin{document}",
            rf"\section*{{Collapsed rules of the {operator} (order {order})}}",
            r"Each neuron carries derivatives of its pre-activation $z$: $J_a = \partial z/\partial x_a$, "
            r"$H_{ab} = \partial^2 z/\partial x_a \partial x_b$, $\Delta z = \sum_i H_{ii}$, "
            r"$L^{(3)}_a = \sum_i \partial^3 z/\partial x_i^2 \partial x_a$, "
            r"$\Delta^2 z = \sum_{ij} \partial^4 z/\partial x_i^2 \partial x_j^2$. "
            r"An affine map acts on each of them linearly; the activation $s$ gives",
            r"\begin{align*}"]
    body.append(" \\\\\n".join(line.replace(" = ", " &= ", 1) for line in operator_rules.rule_latex(operator)))
    body += [r"\end{align*}", r"\subsection*{Diagrams}",
             rf"The labelled trees of order {order} with leaves $" + ",".join(LABELS[operator]) + r"$, grouped:",
             r"\begin{itemize}"]
    for key, count, tree in diagram_classes(operator):
        body.append(rf"\item \texttt{{{key}}} $\times {count}$ (e.g.\ \texttt{{{tree}}})")
    body += [r"\end{itemize}", r"\end{document}"]
    return "\n".join(body) + "\n"


def png_entries(operator: str):
    """(representative tree, caption) per class, and the figure title."""
    classes = diagram_classes(operator)
    entries = [(tree, f"{key} x{count}") for key, count, tree in classes]
    title = f"{operator}: leaves {','.join(LABELS[operator])} summed; {sum(c for _, c, _ in classes)} trees"
    return entries, title
