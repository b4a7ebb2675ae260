"""The value of every diagram of one partial derivative, straight from the diagram rules.

In: an MLP as weight matrices W(l) (shape (n_l, n_{l-1}), the torch.nn.Linear convention) and
bias vectors b(l), l = 1..L; per-hidden-layer activation derivative functions; an expansion
point x; and the ordered input indices (i_1, ..., i_k) of d^k f / dx_{i_1} ... dx_{i_k}.
Out: the propagators and vertices of docs/mathematics.md at that point, and a list of
(Diagram, value over outputs) whose sum is the derivative.

This is the readable, diagram-by-diagram view (for inspection, teaching and tests), not the
fast path: the kernels in feynmlp.generated resum the same diagrams layer by layer. NumPy only.

Conventions:

- Layers are numbered 0 (input), 1..L-1 (hidden, activation s_l), L (output). The network is
  f(x) = z(L) with a linear output. An output activation s_L is supported by treating it as
  one more vertex layer (`output_derivatives`): the network is extended by an identity layer,
  so its diagrams have depth L instead of L-1.
- `derivatives[l-1](z, m_max)` belongs to hidden layer l and returns an array of shape
  (m_max + 1,) + z.shape holding the raw derivatives s_l^(0..m_max)(z) (not divided by
  factorials). A single callable is used for every hidden layer.
- Leaf j of a diagram's tree is the j-th index i_j.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import FeynmlpError

__all__ = [
    "DerivativeFunction",
    "NetworkPoint",
    "network_point",
    "propagator",
    "input_propagators",
    "vertex",
    "diagram_value",
    "diagram_values",
    "derivative_from_diagrams",
]

DerivativeFunction = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True, eq=False)
class NetworkPoint:
    """An MLP evaluated at one point: everything the diagram rules need.

    Attributes:
        weights: W(1)..W(L) as float64 arrays (index l-1 holds W(l)).
        z: pre-activations z(1)..z(L) at the point (index l-1 holds z(l)).
        activation_derivatives: for hidden layers l = 1..L-1 (index l-1), the array
            s_l^(m)(z(l)_a) of shape (max_order + 1, n_l).
        max_order: the highest activation derivative computed.
    """

    weights: tuple[np.ndarray, ...]
    z: tuple[np.ndarray, ...]
    activation_derivatives: tuple[np.ndarray, ...]
    max_order: int

    @property
    def n_layers(self) -> int:
        """L, the number of affine maps (the output layer's number)."""
        return len(self.weights)

    @property
    def depth(self) -> int:
        """H = L - 1, the number of hidden (vertex) layers."""
        return len(self.weights) - 1

    @property
    def widths(self) -> tuple[int, ...]:
        """n_0 (inputs), n_1, ..., n_L (outputs)."""
        return (self.weights[0].shape[1],) + tuple(w.shape[0] for w in self.weights)

    def propagator(self, to_layer: int, from_layer: int) -> np.ndarray:
        """P(to_layer, from_layer); see the module-level `propagator`."""
        return _propagator_cached(self, to_layer, from_layer)

    def vertex(self, layer: int, valence: int) -> np.ndarray:
        """Gamma(layer)_{a, valence} = s_layer^(valence)(z(layer)_a) over the neurons a."""
        L = self.n_layers
        if not 1 <= layer <= L - 1:
            raise FeynmlpError(f"vertices live on hidden layers 1..{L - 1}, got layer {layer}")
        if not 0 <= valence <= self.max_order:
            raise FeynmlpError(
                f"valence {valence} is outside the derivatives computed (0..{self.max_order}); "
                "build the NetworkPoint with a larger max_order")
        return self.activation_derivatives[layer - 1][valence]


def _as_float_array(value, what: str, ndim: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise FeynmlpError(f"{what} must be a {ndim}-dimensional array, got shape {arr.shape}")
    return arr


def network_point(weights: Sequence, biases: Sequence | None, derivatives, x,
                  max_order: int, output_derivatives: DerivativeFunction | None = None
                  ) -> NetworkPoint:
    """Run the network forward at x and tabulate activation derivatives up to `max_order`.

    Args:
        weights: W(1)..W(L), W(l) of shape (n_l, n_{l-1}).
        biases: b(1)..b(L) of shape (n_l,), or None for all zeros (an entry may be None).
        derivatives: one callable per hidden layer (L - 1 of them), or a single callable for
            all; `d(z, m_max)` returns s^(0..m_max)(z) stacked on a new first axis.
        x: the expansion point, shape (n_0,).
        max_order: highest derivative of the activations needed (the derivative order k).
        output_derivatives: the output activation's derivative function, or None for a
            linear output. If given, the output activation becomes hidden layer L of a network
            extended by an identity layer L + 1.

    Returns:
        The `NetworkPoint`.
    """
    if len(weights) == 0:
        raise FeynmlpError("an MLP needs at least one weight matrix, got none")
    ws = [_as_float_array(w, f"weight W({l + 1})", 2) for l, w in enumerate(weights)]
    if biases is None:
        biases = [None] * len(ws)
    if len(biases) != len(ws):
        raise FeynmlpError(f"got {len(ws)} weight matrices but {len(biases)} bias vectors; "
                           "give one bias per layer (or None)")
    bs = []
    for l, (w, b) in enumerate(zip(ws, biases), start=1):
        if b is None:
            bs.append(np.zeros(w.shape[0]))
            continue
        b = _as_float_array(b, f"bias b({l})", 1)
        if b.shape != (w.shape[0],):
            raise FeynmlpError(f"bias b({l}) has shape {b.shape}, expected ({w.shape[0]},) to "
                               f"match W({l}) of shape {w.shape}")
        bs.append(b)
    for l in range(1, len(ws)):
        if ws[l].shape[1] != ws[l - 1].shape[0]:
            raise FeynmlpError(f"W({l + 1}) has shape {ws[l].shape} but layer {l} has "
                               f"{ws[l - 1].shape[0]} neurons; W(l) must be (n_l, n_(l-1))")
    x = _as_float_array(x, "the expansion point x", 1)
    if x.shape != (ws[0].shape[1],):
        raise FeynmlpError(f"x has shape {x.shape}, expected ({ws[0].shape[1]},) for W(1) of "
                           f"shape {ws[0].shape}")
    if output_derivatives is not None:
        n_out = ws[-1].shape[0]
        ws.append(np.eye(n_out))
        bs.append(np.zeros(n_out))
    n_hidden = len(ws) - 1
    if callable(derivatives):
        derivs = [derivatives] * (len(weights) - 1)
    else:
        derivs = list(derivatives)
        if len(derivs) != len(weights) - 1:
            raise FeynmlpError(f"got {len(derivs)} activation derivative functions for "
                               f"{len(weights) - 1} hidden layers; give one per hidden layer")
    if output_derivatives is not None:
        derivs.append(output_derivatives)
    max_order = max(int(max_order), 1)

    zs: list[np.ndarray] = []
    table: list[np.ndarray] = []
    a = x
    for l in range(1, len(ws) + 1):
        z = ws[l - 1] @ a + bs[l - 1]
        zs.append(z)
        if l <= n_hidden:
            s = np.asarray(derivs[l - 1](z, max_order), dtype=np.float64)
            if s.shape != (max_order + 1,) + z.shape:
                raise FeynmlpError(
                    f"the derivative function of hidden layer {l} returned shape {s.shape}, "
                    f"expected {(max_order + 1,) + z.shape} = (m_max + 1,) + z.shape")
            table.append(np.ascontiguousarray(s))
            a = s[0]
    return NetworkPoint(tuple(ws), tuple(zs), tuple(table), max_order)


def _propagator_cached(point: NetworkPoint, to_layer: int, from_layer: int) -> np.ndarray:
    # Each propagator is computed once per point; the cache lives in the instance's __dict__
    # (the dataclass is frozen against accidental edits, not against memoisation).
    cache = point.__dict__.setdefault("_propagators", {})
    key = (to_layer, from_layer)
    if key not in cache:
        cache[key] = _propagator(point, to_layer, from_layer)
    return cache[key]


def _propagator(point: NetworkPoint, to_layer: int, from_layer: int) -> np.ndarray:
    L = point.n_layers
    if not (0 <= from_layer < to_layer <= L):
        raise FeynmlpError(f"a propagator runs from a lower to a higher layer within 0..{L}, "
                           f"got P({to_layer},{from_layer})")
    # P(l+1, l) = W(l+1); P(l', l) = W(l') diag(s'_{l'-1}) P(l'-1, l).
    p = point.weights[from_layer]
    for layer in range(from_layer + 2, to_layer + 1):
        s1 = point.activation_derivatives[layer - 2][1]
        p = np.einsum("cb,b,ba->ca", point.weights[layer - 1], s1, p)
    return p


def propagator(point: NetworkPoint, to_layer: int, from_layer: int) -> np.ndarray:
    """The propagator P(to_layer, from_layer) of docs/mathematics.md, 'Propagators and vertices'.

    P(l', l)[b, a] = dz(l')_b / da(l)_a for l >= 1 (internal, or output when l' = L), and
    P(l, 0)[a, i] = dz(l)_a / dx_i (input propagator; P(L, 0) is the Jacobian). It is the
    product W(l') S1(l'-1) W(l'-1) ... S1(l+1) W(l+1) with S1(m) = diag(s_m'(z(m))).

    Returns:
        An array of shape (n_to, n_from).
    """
    return point.propagator(to_layer, from_layer)


def input_propagators(point: NetworkPoint) -> list[np.ndarray]:
    """[P(1,0), ..., P(L,0)]: how each layer's pre-activations move with the inputs."""
    return [point.propagator(l, 0) for l in range(1, point.n_layers + 1)]


def vertex(point: NetworkPoint, layer: int, valence: int) -> np.ndarray:
    """Gamma(layer)_{a, valence} = s_layer^(valence)(z(layer)_a), a vector over the neurons a."""
    return point.vertex(layer, valence)


def diagram_value(point: NetworkPoint, diagram, indices: Sequence[int]) -> np.ndarray:
    """The value of one diagram for d^k f / dx_{indices[0]} ... dx_{indices[k-1]}.

    Contracts the tree bottom-up: a vertex at (l, a) with children c carries the vector
    v_a = Gamma(l)_{a,m} prod_c [P(l, l_c) v_c]_a, a leaf j contributing the column
    P(l, 0)[:, i_j]; the root is carried to the outputs by P(L, l_root).

    Args:
        point: the network at the expansion point (`network_point`).
        diagram: a `feynmlp.codegen.diagrams.Diagram` whose layers lie in 1..point.depth.
        indices: the input indices (i_1, ..., i_k), k = the diagram's order.

    Returns:
        The diagram's value over the outputs, shape (n_L,).
    """
    tree, layers = diagram.tree, diagram.layers
    if len(indices) != tree.order:
        raise FeynmlpError(f"the diagram {tree} has order {tree.order} but {len(indices)} "
                           f"indices were given: {tuple(indices)}")
    L = point.n_layers
    if tree.is_leaf:
        return point.propagator(L, 0)[:, indices[tree.label - 1]].copy()
    where = dict(zip(tree.internal_nodes, layers))
    if any(not 1 <= l <= L - 1 for l in layers):
        raise FeynmlpError(f"diagram {diagram} places a vertex outside the hidden layers "
                           f"1..{L - 1} of this network")

    def carry(t, layer: int) -> np.ndarray:
        # The child t's contribution at the neurons of `layer`.
        if t.is_leaf:
            return point.propagator(layer, 0)[:, indices[t.label - 1]]
        return np.einsum("ba,a->b", point.propagator(layer, where[t]), value(t))

    def value(t) -> np.ndarray:
        layer = where[t]
        v = point.vertex(layer, t.valence).copy()
        for c in t.children:
            v *= carry(c, layer)
        return v

    return carry(tree, L)


def _check_indices(indices, n_in: int) -> tuple[int, ...]:
    try:
        idx = tuple(int(i) for i in indices)
    except TypeError:
        raise FeynmlpError(f"indices must be a sequence of input indices, got {indices!r}") from None
    if not idx:
        raise FeynmlpError("indices must name at least one input (order >= 1), got ()")
    bad = [i for i in idx if not 0 <= i < n_in]
    if bad:
        raise FeynmlpError(f"input indices {bad} are out of range for {n_in} inputs (0..{n_in - 1})")
    return idx


def diagram_values(weights: Sequence, biases: Sequence | None, derivatives, x,
                   indices: Sequence[int], *,
                   output_derivatives: DerivativeFunction | None = None) -> list:
    """Every diagram of d^k f / dx_{i_1} ... dx_{i_k} at x, with its value.

    Args:
        weights: W(1)..W(L), W(l) of shape (n_l, n_{l-1}) (torch.nn.Linear convention).
        biases: b(1)..b(L), or None.
        derivatives: per hidden layer, `d(z, m_max) -> s^(0..m_max)(z)` of shape
            (m_max + 1,) + z.shape (raw derivatives); or one callable for all layers.
        x: the expansion point, shape (n_in,).
        indices: (i_1, ..., i_k), 0-based input indices; repeats allowed (d^2/dx_0^2 is (0, 0)).
        output_derivatives: optional output activation (see the module docstring).

    Returns:
        A list of (Diagram, value of shape (n_out,)) in the canonical diagram order; the values
        add up to the derivative. For k = 1 the one diagram is the full propagator.
    """
    from .codegen.diagrams import diagrams  # pure Python; loads no SymPy

    ws = list(weights)
    if not ws:
        raise FeynmlpError("an MLP needs at least one weight matrix, got none")
    n_in = np.shape(ws[0])[1]
    idx = _check_indices(indices, n_in)
    point = network_point(ws, biases, derivatives, x, len(idx), output_derivatives)
    return [(d, diagram_value(point, d, idx)) for d in diagrams(len(idx), point.depth)]


def derivative_from_diagrams(weights: Sequence, biases: Sequence | None, derivatives, x,
                             indices: Sequence[int], *,
                             output_derivatives: DerivativeFunction | None = None) -> np.ndarray:
    """d^k f / dx_{i_1} ... dx_{i_k} at x as the sum of its diagrams, shape (n_out,)."""
    terms = diagram_values(weights, biases, derivatives, x, indices,
                           output_derivatives=output_derivatives)
    n_out = np.shape(weights[-1])[0]
    total = np.zeros(n_out)
    for _, v in terms:
        total += v
    return total
