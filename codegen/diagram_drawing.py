"""Where the pieces of a diagram go on the page, and a PNG grid of the diagrams of one order.

In: `Tree`s from feynmlp.codegen.diagrams. Out: `DiagramLayout` (named points and edges, the
one geometry both the TikZ-Feynman code in latex_rules and the matplotlib figure use), and
`write_png_grid`, a grid of drawn diagrams with their labels.

Geometry: leaves (the derivative indices i_1..i_k) sit on the bottom row, left to right in
the tree's drawing order (`Tree.display_children`); a vertex sits at its height (1 + the
height of its tallest child) above the midpoint of its outermost children; the output f_o
sits one row above the root. Edges point from the inputs towards the output: leaf -> vertex
is an input propagator, vertex -> vertex an internal propagator, root -> output the output
propagator; for k = 1 the single edge leaf -> output is the full propagator (the Jacobian).

matplotlib is imported inside `write_png_grid` only, and through its object-oriented Agg
canvas, so the global backend of the caller is never switched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .diagrams import Tree

__all__ = ["DiagramLayout", "layout", "vertex_names", "write_png_grid"]

# Neuron letters of the vertices, in drawing post-order (f is the network, o the output,
# i the inputs, l the layers: none of them are used).
_LETTERS = "abcdeghjkmnpqrstuvwxyz"


def vertex_names(tree: Tree) -> dict[Tree, str]:
    """The neuron letter of every vertex: a, b, c, ... in post-order over the drawing order.

    Children get earlier letters than their parent, so in ((1,2),3) the inner vertex is a and
    the root b, as in the order-3 formula of docs/mathematics.md, 'Trees and placements'.
    """
    names: dict[Tree, str] = {}

    def visit(t: Tree) -> None:
        if t.is_leaf:
            return
        for c in t.display_children:
            visit(c)
        if len(names) >= len(_LETTERS):
            raise ValueError(f"tree {tree} has more vertices than neuron letters ({len(_LETTERS)})")
        names[t] = _LETTERS[len(names)]
    visit(tree)
    return names


@dataclass(frozen=True)
class DiagramLayout:
    """Coordinates of one diagram (unit grid: one column per leaf, one row per height).

    Attributes:
        points: name -> (x, y). Names: "i1".."ik" (leaves, by label), the neuron letters of
            the vertices ("a", "b", ...), and "out".
        kinds: name -> "leaf" | "vertex" | "output".
        edges: (lower name, upper name, propagator kind) with kind one of "input",
            "internal", "output", "full".
        vertex_letters: Tree node -> neuron letter, for the vertices.
    """

    points: dict[str, tuple[float, float]]
    kinds: dict[str, str]
    edges: tuple[tuple[str, str, str], ...]
    vertex_letters: dict[Tree, str]

    @property
    def width(self) -> float:
        xs = [p[0] for p in self.points.values()]
        return max(xs) - min(xs)

    @property
    def height(self) -> float:
        return self.points["out"][1]


def layout(tree: Tree) -> DiagramLayout:
    """Place the leaves, vertices and output of `tree` (see the module docstring)."""
    letters = vertex_names(tree)
    points: dict[str, tuple[float, float]] = {}
    kinds: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    column = [0]

    def name(t: Tree) -> str:
        return f"i{t.label}" if t.is_leaf else letters[t]

    def place(t: Tree) -> tuple[float, float]:
        if t.is_leaf:
            xy = (float(column[0]), 0.0)
            column[0] += 1
            points[name(t)] = xy
            kinds[name(t)] = "leaf"
            return xy
        child_xy = [place(c) for c in t.display_children]
        xy = ((child_xy[0][0] + child_xy[-1][0]) / 2.0, float(t.height))
        points[name(t)] = xy
        kinds[name(t)] = "vertex"
        for c in t.display_children:
            edges.append((name(c), name(t), "input" if c.is_leaf else "internal"))
        return xy

    root_xy = place(tree)
    points["out"] = (root_xy[0], root_xy[1] + 1.0)
    kinds["out"] = "output"
    edges.append((name(tree), "out", "full" if tree.is_leaf else "output"))
    return DiagramLayout(points, kinds, tuple(edges), letters)


def write_png_grid(entries: Sequence[tuple[Tree, str]], path, title: str = "",
                   columns: int | None = None, dpi: int = 110) -> None:
    """Draw each tree with its caption in a grid and save it as a PNG.

    Args:
        entries: (tree, caption) pairs, drawn left to right, top to bottom.
        path: a file path or a binary file object.
        title: the figure title.
        columns: panels per row (default: about square, at most 8).
        dpi: resolution.
    """
    import math

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(entries), 1)
    cols = columns or min(8, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    panel = 2.1
    width = max(cols * panel, 6.0)  # room for the title and the legend
    # Bands for the title (top) and the legend (bottom), in inches, and tight_layout fits the
    # panels between them with the title left out of its own reckoning: its estimate of the
    # room a title needs, a fraction of the figure, fell short for tall grids (order 7's
    # 12 rows ran into the title).
    title_band, legend_band = (0.45 if title else 0.0), 0.3
    height = rows * panel + title_band + legend_band
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=11, y=1.0 - 0.1 / height, va="top").set_in_layout(False)
    colour = {"input": "#1f5fa8", "internal": "#333333", "output": "#b03a2e", "full": "#b03a2e"}
    for pos, (tree, caption) in enumerate(entries):
        ax = fig.add_subplot(rows, cols, pos + 1)
        lay = layout(tree)
        parent_x = {lo: lay.points[hi][0] for lo, hi, _ in lay.edges}
        for lo, hi, kind in lay.edges:
            (x0, y0), (x1, y1) = lay.points[lo], lay.points[hi]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="-|>", color=colour[kind], lw=1.3,
                                        shrinkA=4, shrinkB=4, mutation_scale=9))
        for nm, (x, y) in lay.points.items():
            kind = lay.kinds[nm]
            if kind == "vertex":
                ax.plot([x], [y], "o", color="black", ms=5)
                # the letter goes above the vertex, on the side away from the line to its parent
                right = parent_x[nm] < x - 1e-9
                ax.text(x + (0.12 if right else -0.12), y + 0.06, nm, fontsize=7, va="bottom",
                        ha="left" if right else "right", color="#555555")
            elif kind == "leaf":
                ax.text(x, y - 0.12, f"$i_{{{nm[1:]}}}$", fontsize=9, ha="center", va="top")
            else:
                ax.text(x, y + 0.1, "$f_o$", fontsize=9, ha="center", va="bottom")
        xs = [p[0] for p in lay.points.values()]
        # Centred under the caption; a single leaf (order 1) still gets a panel 2.2 units wide.
        centre, half = (min(xs) + max(xs)) / 2, max((max(xs) - min(xs)) / 2 + 0.7, 1.1)
        ax.set_xlim(centre - half, centre + half)
        ax.set_ylim(-0.8, lay.height + 0.6)
        ax.set_title(caption, fontsize=8)
        ax.set_axis_off()
    fig.tight_layout(rect=(0, legend_band / height, 1, 1 - title_band / height))
    fig.text(0.5, 0.005, "blue: input propagator   black: internal propagator   "
             "red: output propagator   dot: vertex (neuron letter)",
             ha="center", va="bottom", fontsize=8, color="#444444")
    fig.savefig(path, format="png", dpi=dpi)
