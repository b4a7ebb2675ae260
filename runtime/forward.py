"""The forward scheme: every coefficient pushed through every layer.

In: a feynmlp.schemes.Request. Out: all coefficients up to order K of every output, including
networks with an output activation and any number of outputs; the vertex layers are the
generated kernels of order K, the affine maps one matrix product each (feynmlp.push).
"""
from __future__ import annotations

from . import memory, multi_index, push
from .schemes import ACTIVATION_FLOPS_PER_ORDER
from .kernels import resolve_kernels


class ForwardScheme:
    """Push the series of order K through every layer (feynmlp.push.push)."""

    name = "forward"

    def serves(self, request) -> bool:
        return True

    def points_per_chunk(self, request) -> int:
        return memory.points_per_chunk(request.batch, max(request.widths),
                                     multi_index.count(request.n_vars, request.order), request.itemsize)

    def table_bytes(self, request) -> int:
        return multi_index.vertex_table_bytes(request.n_vars, request.order)

    def workspace_bytes(self, request, points: int) -> int:
        """Per point: two series buffers and the composed series of the widest layer, and the
        activation's derivatives."""
        columns = multi_index.count(request.n_vars, request.order)
        return points * max(request.widths) * (3 * columns + request.order + 1) * request.itemsize

    def flops(self, request, points: int) -> int:
        """FLOPs = 2 n_1 n_0 B                                      first affine map (values)
                 + sum over hidden layers l of n_l B V              vertex layers
                 + sum over later affine maps l of 2 n_l n_(l-1) B M  one matrix product each
        with B points, M coefficients per neuron and, per neuron and point, the vertex work
            V = 10 K + (M - 1) + sum_{m=2..K} R_m (m + 2)
        (valence 1: one product per coefficient; valence m: R_m table rows, each m + 1 products
        (s^(m)/m!, weight, m coefficients) and one addition)."""
        return series_flops(request.weights[0].shape[1], request.widths, request.n_vars, request.order, points)

    def plan(self, request):
        kernels = resolve_kernels(request.hidden_activations, request.output_activation, request.order)
        if request.order > 1:
            multi_index.vertex_tables(request.n_vars, request.order)
        return request, kernels

    def expand(self, plan, points, out) -> None:
        request, kernels = plan
        series, _ = push.push(request.weights, request.biases, kernels, points, request.order, request.variables,
                              request.dtype)
        out[...] = series.transpose(0, 2, 1)


SCHEME = ForwardScheme()


def series_flops(n_in: int, widths, n_vars: int, order: int, points: int) -> int:
    """ForwardScheme.flops for layers of `widths` (hidden, then outputs) after n_in inputs."""
    columns = multi_index.count(n_vars, order)
    rows = multi_index.vertex_table_rows(n_vars, order) if order > 1 else {}
    vertex = ACTIVATION_FLOPS_PER_ORDER * order + (columns - 1) + sum(r * (m + 2) for m, r in rows.items())
    flops = 2 * widths[0] * n_in * points
    flops += sum(width * points * vertex for width in widths[:-1])
    flops += sum(2 * upper * lower * points * columns for lower, upper in zip(widths[:-1], widths[1:]))
    return flops
