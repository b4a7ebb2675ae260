"""feynmlp.push: the forward push and the output propagators every multivariate scheme shares.

References: torch autograd on the same network in float64 (the pre-activations z(l), their
Jacobians dz(l)/dx, and g(l) = d f_o / d a(l) as the gradient of each output with respect to
each hidden layer's activations), and tanh's derivatives in closed form.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from feynmlp import push
from feynmlp.kernels import resolve_kernels
from helpers.networks import random_layers

SIZES = (4, 5, 3, 6, 2)  # three hidden layers of different widths, two outputs


def torch_layers(weights, biases, x, jacobians=True):
    """Per hidden layer: z(l) (points, width), dz(l)/dx (points, width, n_in) (if `jacobians`:
    their backward passes also flow into the activations' retained .grad), a(l), and the
    outputs, by torch in float64."""
    xs = torch.tensor(x, requires_grad=True)
    a, zs, activations = xs, [], []
    for w, b in zip(weights[:-1], biases[:-1]):
        z = a @ torch.tensor(w).T + torch.tensor(b)
        zs.append(z)
        a = torch.tanh(z)
        a.retain_grad()
        activations.append(a)
    out = a @ torch.tensor(weights[-1]).T + torch.tensor(biases[-1])
    if not jacobians:
        return zs, None, activations, out
    jacobians = [torch.stack([torch.autograd.grad(z[:, j].sum(), xs, retain_graph=True)[0] for j in range(z.shape[1])],
                             dim=1) for z in zs]
    return zs, jacobians, activations, out


def test_push_lays_the_hidden_layers_side_by_side():
    # Order 1 with stack and wide: each hidden layer's block of stack holds z(l) and dz(l)/dx,
    # and of wide tanh's s^(m)(z)/m!, m = 0, 1, 2 (order-2 kernels: the derivatives may be of a
    # higher order than the series pushed, as the top-vertex schemes use them).
    rng = np.random.default_rng(3)
    weights, biases = random_layers(rng, SIZES)
    x = rng.normal(size=(3, SIZES[0]))
    bounds = [0, *itertools.accumulate(SIZES[1:-1])]
    stack = np.full((3, 1 + SIZES[0], bounds[-1]), np.nan)
    wide = np.full((3, 3, bounds[-1]), np.nan)
    kernels = resolve_kernels(["tanh"] * 3, None, 1, derivative_order=2)
    series, _ = push.push(weights, biases, kernels, x, 1, np.arange(SIZES[0]), np.float64, stack=stack, wide=wide)
    zs, jacobians, _, out = torch_layers(weights, biases, x)
    np.testing.assert_allclose(series[:, 0, :], out.detach().numpy(), rtol=1e-13)
    for l, (z, jacobian) in enumerate(zip(zs, jacobians)):
        columns = slice(bounds[l], bounds[l + 1])
        z = z.detach().numpy()
        np.testing.assert_allclose(stack[:, 0, columns], z, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(stack[:, 1:, columns], jacobian.numpy().transpose(0, 2, 1), rtol=1e-12, atol=1e-14)
        t = np.tanh(z)
        np.testing.assert_allclose(wide[:, 0, columns], t, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(wide[:, 1, columns], 1 - t**2, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(wide[:, 2, columns], -t * (1 - t**2), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("sizes", [SIZES, (3, 7, 1), (2, 4, 4, 3)])
def test_output_propagators_are_the_gradients_with_respect_to_the_activations(sizes):
    rng = np.random.default_rng(len(sizes))
    weights, biases = random_layers(rng, sizes)
    x = rng.normal(size=(4, sizes[0]))
    bounds = np.array([0, *itertools.accumulate(sizes[1:-1])])
    wide = np.empty((4, 3, bounds[-1]))
    kernels = resolve_kernels(["tanh"] * (len(sizes) - 2), None, 0, derivative_order=2)
    push.push(weights, biases, kernels, x, 0, np.arange(sizes[0]), np.float64, wide=wide)
    propagators = np.full((sizes[-1], 4, bounds[-1]), np.nan)
    push.output_propagators(push.layers(weights, np.float64), wide, propagators)
    for o in range(sizes[-1]):
        _, _, activations, out = torch_layers(weights, biases, x, jacobians=False)
        out[:, o].sum().backward()
        for l, a in enumerate(activations):
            np.testing.assert_allclose(propagators[o, :, bounds[l]:bounds[l + 1]], a.grad.numpy(), rtol=1e-12,
                                       atol=1e-14, err_msg=f"output {o}, hidden layer {l + 1}")


def test_between_weights_are_the_matrices_one_after_the_other():
    rng = np.random.default_rng(0)
    weights, _ = random_layers(rng, SIZES)
    flat, matrices = push.between_weights(weights, np.float32)
    assert flat.dtype == np.float32 and flat.size == sum(w.size for w in weights[1:-1])
    np.testing.assert_array_equal(flat, np.concatenate([w.astype(np.float32).ravel() for w in weights[1:-1]]))
    for view, w in zip(matrices, weights[1:-1]):
        np.testing.assert_array_equal(view, w.astype(np.float32))
        assert np.shares_memory(view, flat)


def test_an_mlps_matrices_between_hidden_layers_are_read_in_place():
    # feynmlp.MLP keeps its weights one after the other in one buffer: the flat array is a view
    # of it (no copy per call), with the same numbers; separate arrays are copied.
    from feynmlp import MLP

    rng = np.random.default_rng(2)
    weights, biases = random_layers(rng, SIZES)
    mlp = MLP(weights, biases, "tanh")
    flat, _ = push.between_weights(mlp.weights, np.float64)
    assert all(np.shares_memory(flat, w) for w in mlp.weights[1:-1])
    np.testing.assert_array_equal(flat, np.concatenate([w.ravel() for w in weights[1:-1]]))
    copied, _ = push.between_weights(weights, np.float64)
    assert not any(np.shares_memory(copied, w) for w in weights)
    np.testing.assert_array_equal(copied, flat)
