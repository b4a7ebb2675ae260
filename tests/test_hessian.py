"""feynmlp.hessian: the order-2 coefficients of a network with a linear output, by the topmost
vertex (scheme="top-vertex" at order 2).

The references are torch's: torch.func.hessian of the network written in torch float64 (one
Hessian per output and point), and nested jacfwd through helpers.torch_reference. Layer 1's
part of the Hessians is either one product for all points or a part of each point's
contraction (hessian._SHARED_FIRST_LAYER_POINTS_PER_VARIABLE picks); both are run here, on
networks of one to three hidden layers and several widths, in float64 and float32.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import feynmlp
from feynmlp import hessian, multi_index
from helpers.networks import random_mlp
from helpers.torch_reference import assert_relative_close, check_against_torch, torch_network

# Threshold values that force each way of computing layer 1's part: 0 points per variable (one
# product for all points, always) or 1e9 (never: part of each point's contraction).
SHARED, PER_POINT = 0.0, 1e9


def torch_hessians(mlp, points) -> np.ndarray:
    """(points, outputs, n, n) d^2 f_o / dx_i dx_j by torch.func.hessian, float64."""
    f = torch_network(mlp)
    return np.stack([torch.func.hessian(f)(torch.as_tensor(p, dtype=torch.float64)).numpy()
                     for p in np.asarray(points, dtype=np.float64)])


def order_two_coefficients(hessians: np.ndarray, n: int) -> np.ndarray:
    """The coefficients d^alpha f / alpha! of |alpha| = 2 in feynmlp.multi_index order, from dense
    Hessians: H_ij for i < j, H_ii / 2 on the diagonal."""
    exponents = multi_index.exponents(n, 2)
    second = exponents[exponents.sum(axis=1) == 2]
    columns = []
    for alpha in second:
        i, j = np.repeat(np.arange(n), alpha)
        columns.append(hessians[..., i, j] / (2.0 if i == j else 1.0))
    return np.stack(columns, axis=-1)


NETWORKS = [
    ((4, 6, 3), ["tanh"]),
    ((5, 9, 2), ["softplus"]),
    ((3, 8, 5, 2), ["sigmoid", "gelu"]),
    ((6, 4, 11, 7, 1), ["sin", "silu", "tanh"]),
    ((2, 16, 16, 16, 3), ["gelu", "tanh", "cos"]),
]


@pytest.mark.parametrize("first_layer", [SHARED, PER_POINT], ids=["shared-first-layer", "per-point-first-layer"])
@pytest.mark.parametrize("sizes,activations", NETWORKS, ids=lambda v: "-".join(map(str, v)))
def test_order_two_coefficients_against_torch_hessian(monkeypatch, first_layer, sizes, activations):
    monkeypatch.setattr(hessian, "_SHARED_FIRST_LAYER_POINTS_PER_VARIABLE", first_layer)
    rng = np.random.default_rng(sum(sizes))
    mlp = random_mlp(rng, sizes, activations)
    points = rng.normal(size=(6, sizes[0]))
    expansion = feynmlp.taylor(mlp, points, 2, scheme="top-vertex")
    want = order_two_coefficients(torch_hessians(mlp, points), sizes[0])
    n = sizes[0]
    assert_relative_close(expansion.coefficients[:, :, 1 + n:], want, rtol=1e-9, what=f"{sizes}, order 2")
    assert_relative_close(expansion.hessian, torch_hessians(mlp, points), rtol=1e-9, what=f"{sizes}, Hessian")


@pytest.mark.parametrize("first_layer", [SHARED, PER_POINT], ids=["shared-first-layer", "per-point-first-layer"])
def test_order_two_wrt_a_subset_against_torch_hessian(monkeypatch, first_layer):
    # The variables are columns of W1 picked out in any order; the Hessian is the sub-block.
    monkeypatch.setattr(hessian, "_SHARED_FIRST_LAYER_POINTS_PER_VARIABLE", first_layer)
    rng = np.random.default_rng(17)
    mlp = random_mlp(rng, (6, 7, 5, 2), ["tanh", "softplus"])
    points = rng.normal(size=(4, 6))
    wrt = [4, 0, 3]
    expansion = feynmlp.taylor(mlp, points, 2, wrt=wrt, scheme="top-vertex")
    want = torch_hessians(mlp, points)[:, :, wrt][:, :, :, wrt]
    assert_relative_close(expansion.coefficients[:, :, 1 + 3:], order_two_coefficients(want, 3), rtol=1e-9)


@pytest.mark.parametrize("first_layer", [SHARED, PER_POINT], ids=["shared-first-layer", "per-point-first-layer"])
@pytest.mark.parametrize("sizes,activations", NETWORKS[2:], ids=lambda v: "-".join(map(str, v)))
def test_order_two_in_float32_against_torch_hessian(monkeypatch, first_layer, sizes, activations):
    # float32 runs the same kernels with single-precision BLAS (sgemm): a few float32 roundings
    # per product, far inside 1e-4 of the largest entry.
    monkeypatch.setattr(hessian, "_SHARED_FIRST_LAYER_POINTS_PER_VARIABLE", first_layer)
    rng = np.random.default_rng(sum(sizes) + 1)
    mlp = random_mlp(rng, sizes, activations)
    points = rng.normal(size=(5, sizes[0]))
    expansion = feynmlp.taylor(mlp, points, 2, scheme="top-vertex", dtype=np.float32)
    assert expansion.coefficients.dtype == np.float32
    want = order_two_coefficients(torch_hessians(mlp, points), sizes[0])
    assert_relative_close(expansion.coefficients[:, :, 1 + sizes[0]:].astype(np.float64), want, rtol=1e-4,
                          what=f"{sizes}, float32")


@pytest.mark.parametrize("shared_first_layer", [0.0, 1e9])
@pytest.mark.parametrize("sub_block_bytes", [1, 2040])
def test_order_two_by_the_top_vertex_in_sub_blocks_of_points(monkeypatch, sub_block_bytes, shared_first_layer):
    # feynmlp.hessian builds and contracts the Jacobians a few points at a time: here one point
    # at a time, then 3 (5 variables x 17 neurons x 8 bytes = 680 per point; 5 with the three
    # wrt variables), so that the blocks of both threads end in a remainder; three outputs and
    # hidden layers of different widths share each product. Layer 1's part is one product for
    # all points (threshold 0), or part of each point's contraction (threshold 1e9).
    monkeypatch.setattr(hessian, "_SUB_BLOCK_BYTES", sub_block_bytes)
    monkeypatch.setattr(hessian, "_SHARED_FIRST_LAYER_POINTS_PER_VARIABLE", shared_first_layer)
    rng = np.random.default_rng(41)
    mlp = random_mlp(rng, (5, 7, 4, 6, 3), ["tanh", "gelu", "sin"])
    points = rng.normal(size=(7, 5))
    check_against_torch(mlp, points, 2, scheme="top-vertex")
    check_against_torch(mlp, points, 2, wrt=[1, 2, 4], scheme="top-vertex")


@pytest.mark.parametrize("shared_first_layer", [0.0, 1e9])
def test_order_two_by_the_top_vertex_with_one_hidden_layer(monkeypatch, shared_first_layer):
    # With one hidden layer the Hessians are layer 1's part alone: the one product for all
    # points (feynmlp.hessian: w(1) @ pairs; no per-point contraction runs), or without it
    # the per-point contraction of layer 1 alone.
    monkeypatch.setattr(hessian, "_SHARED_FIRST_LAYER_POINTS_PER_VARIABLE", shared_first_layer)
    rng = np.random.default_rng(43)
    mlp = random_mlp(rng, (6, 9, 4), ["softplus"])
    points = rng.normal(size=(5, 6))
    check_against_torch(mlp, points, 2, scheme="top-vertex")
    check_against_torch(mlp, points, 2, wrt=[0, 3, 5], scheme="top-vertex")


def test_order_two_by_the_top_vertex_in_float32():
    # float32 runs the same kernel with single-precision BLAS (sgemm).
    rng = np.random.default_rng(42)
    mlp = random_mlp(rng, (6, 20, 20, 3), ["tanh", "silu"])
    points = rng.normal(size=(5, 6))
    e64 = check_against_torch(mlp, points, 2, scheme="top-vertex")
    e32 = feynmlp.taylor(mlp, points, 2, scheme="top-vertex", dtype=np.float32)
    assert e32.coefficients.dtype == np.float32
    assert_relative_close(e32.coefficients.astype(np.float64), e64.coefficients, rtol=1e-5, what="float32")


def test_a_kept_plan_follows_the_weights_it_was_made_from():
    # The order-2 scheme keeps the plans of recent requests that hold only views of an MLP's
    # weights. Changing a weight in place, or replacing a weight or a bias array, must give the
    # coefficients of the changed network (torch on a fresh copy is the reference).
    rng = np.random.default_rng(44)
    mlp = random_mlp(rng, (4, 6, 5, 2), ["tanh", "sin"])
    x = rng.normal(size=(1, 4))
    check_against_torch(mlp, x, 2, scheme="top-vertex")
    mlp.weights[1][...] *= 1.5                     # in place, in the MLP's own buffer
    check_against_torch(mlp, x, 2, scheme="top-vertex")
    mlp.weights[0][0, 0] += 0.25                   # the first layer's D(1), in place
    check_against_torch(mlp, x, 2, scheme="top-vertex")
    mlp.biases[0] = mlp.biases[0] + 0.5            # a new bias array
    check_against_torch(mlp, x, 2, scheme="top-vertex")
    mlp.weights[2] = mlp.weights[2] * -1.0         # a new output weight array
    check_against_torch(mlp, x, 2, scheme="top-vertex")
    fresh = feynmlp.MLP([w.copy() for w in mlp.weights], [b.copy() for b in mlp.biases], ["tanh", "sin"])
    np.testing.assert_array_equal(feynmlp.taylor(mlp, x, 2).coefficients, feynmlp.taylor(fresh, x, 2).coefficients)
