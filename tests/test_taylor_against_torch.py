"""Taylor coefficients of feynmlp.taylor against PyTorch's forward-mode autodiff (float64).

The reference is independent of feynmlp's kernels: the same weights are run through torch in
float64 and differentiated k times by nesting torch.func.jacfwd, which gives the dense k-th
derivative tensor d^k f_o / dx_i1 ... dx_ik; `TaylorExpansion.derivative_tensor(k)` must agree
with it to a relative error of 1e-9 per derivative order (max |got - want| <= 1e-9 max |want|).

Covered: every built-in smooth activation at orders 1..5, mixed per-layer activations, output
activations, networks without hidden layers and of width one, wide layers at low orders, one
point and batches of points, both schemes of `taylor` (everything pushed forward, or the
highest order by the topmost vertex), and a hypothesis property test over random
architectures, activations, orders, schemes and points. Sizes are kept small (n_in^k Jacobian
entries per order); most of the file's minute and a half of CPU time is Numba compiling the
order-5 kernels, once per activation.

The reference (torch_network, nested jacfwd, assert_relative_close, check_against_torch) is
tests/helpers/torch_reference.py, shared with the other test files.
Order 2 by the topmost vertex (feynmlp.hessian) has its own file, tests/test_hessian.py, and
the contraction of orders >= 3 (feynmlp.top_vertex) tests/test_top_vertex.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from feynmlp import MLP
from helpers.networks import random_mlp
from helpers.torch_reference import BUILTIN, TORCH_ACTIVATIONS, check_against_torch

# ----------------------------------------------------------------------------- fixed cases

# A linear output admits both schemes of feynmlp.taylor: every order pushed forward through
# the layers, or orders < K forward and order K by the topmost vertex ("auto" picks by shape).
SCHEMES = ("forward", "top-vertex")


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("activation", BUILTIN)
def test_each_builtin_activation_orders_1_to_4(activation, scheme):
    # The shipped kernels of orders 1..4, each order expanded on its own (its own kernel).
    rng = np.random.default_rng(BUILTIN.index(activation))
    mlp = random_mlp(rng, (3, 7, 5, 2), activation)
    x = rng.normal(size=3)
    for order in (1, 2, 3, 4):
        check_against_torch(mlp, x, order, scheme=scheme)


@pytest.mark.parametrize("activation", BUILTIN)
def test_each_builtin_activation_order_5(activation):
    # Order 5 is generated on demand into the kernel cache; two inputs keep 2^5 Jacobian entries.
    rng = np.random.default_rng(5)
    mlp = random_mlp(rng, (2, 6, 4, 2), activation, output_activation=None)
    x = rng.normal(size=2)
    for scheme in SCHEMES:
        check_against_torch(mlp, x, 5, scheme=scheme)


@pytest.mark.parametrize("output_activation", BUILTIN)
def test_output_activation_orders_1_to_4(output_activation):
    rng = np.random.default_rng(11)
    mlp = random_mlp(rng, (3, 6, 2), ["tanh"], output_activation=output_activation)
    assert mlp.output_activation == (None if output_activation == "identity" else output_activation)
    check_against_torch(mlp, rng.normal(size=3), 4)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_mixed_activations_four_hidden_layers_linear_output(scheme):
    rng = np.random.default_rng(30)
    mlp = random_mlp(rng, (4, 8, 6, 7, 5, 3), ["exp", "gelu", "cos", "sigmoid"])
    x = rng.normal(size=4)
    for order in (1, 2, 3, 4):
        check_against_torch(mlp, x, order, scheme=scheme)
    check_against_torch(mlp, rng.normal(size=(3, 4)), 4, scheme=scheme)


def test_mixed_activations_four_hidden_layers_with_output_activation():
    rng = np.random.default_rng(3)
    mlp = random_mlp(rng, (3, 8, 6, 7, 5, 3), ["gelu", "sin", "softplus", "silu"], output_activation="sigmoid")
    x = rng.normal(size=3)
    for order in (1, 2, 3, 4):
        check_against_torch(mlp, x, order)


def test_mixed_activations_order_5_with_output_activation():
    rng = np.random.default_rng(4)
    mlp = random_mlp(rng, (2, 5, 4, 3, 2), ["tanh", "exp", "cos"], output_activation="tanh")
    check_against_torch(mlp, rng.normal(size=2), 5)


def test_every_activation_in_one_network():
    # Nine hidden layers, one of each built-in activation, at order 3.
    rng = np.random.default_rng(9)
    mlp = random_mlp(rng, (2,) + (4,) * 9 + (2,), list(BUILTIN), output_activation="softplus")
    check_against_torch(mlp, rng.normal(size=2), 3)


def test_wide_layers_many_inputs_low_orders():
    rng = np.random.default_rng(12)
    mlp = random_mlp(rng, (12, 40, 40, 3), ["tanh", "silu"])
    x = rng.normal(size=12)
    for scheme in SCHEMES:
        check_against_torch(mlp, x, 2, scheme=scheme)
        check_against_torch(mlp, x, 3, scheme=scheme)


def test_width_one_everywhere():
    rng = np.random.default_rng(1)
    mlp = random_mlp(rng, (1, 1, 1, 1, 1, 1), ["tanh", "sigmoid", "gelu", "sin"], output_activation="exp")
    check_against_torch(mlp, rng.normal(size=1), 5)
    mlp = random_mlp(rng, (1, 1, 1, 1, 1), ["tanh", "sigmoid", "gelu"])
    for scheme in SCHEMES:
        check_against_torch(mlp, rng.normal(size=1), 5, scheme=scheme)


def test_network_without_hidden_layers():
    # f = W x + b: exactly affine, so every derivative of order >= 2 must be exactly zero ...
    rng = np.random.default_rng(2)
    mlp = random_mlp(rng, (4, 3), [])
    for scheme in SCHEMES:
        expansion = check_against_torch(mlp, rng.normal(size=4), 4, scheme=scheme)
        assert not np.any(expansion.coefficients[:, 1 + 4:])
    # ... unless an output activation makes it a single vertex layer.
    mlp = random_mlp(rng, (4, 3), [], output_activation="tanh")
    check_against_torch(mlp, rng.normal(size=4), 4)


def test_identity_layers_give_exact_zeros_above_first_order():
    rng = np.random.default_rng(6)
    mlp = random_mlp(rng, (3, 5, 4, 2), "identity")
    for scheme in SCHEMES:
        expansion = check_against_torch(mlp, rng.normal(size=3), 4, scheme=scheme)
        assert not np.any(expansion.coefficients[:, 1 + 3:])


def test_batch_of_points():
    rng = np.random.default_rng(8)
    mlp = random_mlp(rng, (3, 6, 5, 2), ["softplus", "gelu"], output_activation="sin")
    check_against_torch(mlp, rng.normal(size=(4, 3)), 4)


def test_large_preactivations():
    # Pre-activations of +-15: the saturated tails, where sigmoid and tanh derivatives are tiny.
    rng = np.random.default_rng(13)
    mlp = random_mlp(rng, (2, 4, 3, 1), ["sigmoid", "softplus"])
    mlp.weights[0] *= 15.0
    for scheme in SCHEMES:
        check_against_torch(mlp, rng.normal(size=2), 4, scheme=scheme)


def test_relu_first_order():
    # ReLU networks have first-order coefficients only; those are the Jacobian.
    rng = np.random.default_rng(14)
    mlp = random_mlp(rng, (3, 6, 2), ["relu"])
    check_against_torch(mlp, rng.normal(size=3), 1)


# ----------------------------------------------------------------------------- property test

# In float64 the derivatives of tanh (polynomials in t = tanh z, all with the factor 1 - t^2)
# and of the sigmoid family (factor s (1 - s)) keep only an absolute accuracy of about 1e-16
# once the neuron saturates: their relative error is about 1e-16 / s'(z), 5e-8 at |z| = 10
# and 100 % near |z| = 18 for tanh, in torch's autodiff as in feynmlp's kernels. When every
# path runs through such a neuron (a saturated output activation, a width-one layer) the
# reference itself is then wrong in the 1e-9 digit, so random networks keep the
# pre-activations of these activations within |z| <= 7 (relative error < 1e-10 there).
# test_large_preactivations covers saturated neurons beside unsaturated ones.
SATURATING = {"tanh", "sigmoid", "softplus", "silu"}
SATURATION_LIMIT = 7.0


def vertex_preactivations(mlp: MLP, x):
    """[(activation, z)] for every vertex layer (hidden layers, then the output activation)."""
    z = np.atleast_2d(x) @ mlp.weights[0].T + mlp.biases[0]
    layers = []
    for layer in range(1, len(mlp.weights)):
        activation = mlp.hidden_activations[layer - 1]
        layers.append((activation, z))
        z = torch_activation_numpy(activation, z) @ mlp.weights[layer].T + mlp.biases[layer]
    if mlp.output_activation is not None:
        layers.append((mlp.output_activation, z))
    return layers


def torch_activation_numpy(activation, z):
    return TORCH_ACTIVATIONS[activation](torch.as_tensor(z)).numpy()


def well_conditioned(mlp: MLP, x) -> bool:
    """No saturating activation sees |z| > SATURATION_LIMIT, and every value is finite."""
    for activation, z in vertex_preactivations(mlp, x):
        if not np.all(np.isfinite(z)):
            return False
        if activation in SATURATING and np.max(np.abs(z)) > SATURATION_LIMIT:
            return False
    return True

# Largest input width per order, so that n^k Jacobian entries stay in the low thousands.
MAX_INPUTS = {1: 12, 2: 12, 3: 8, 4: 5, 5: 3}


@st.composite
def networks(draw):
    order = draw(st.integers(1, 5))
    depth = draw(st.integers(1, 4))
    n_in = draw(st.integers(1, MAX_INPUTS[order]))
    widths = draw(st.lists(st.integers(1, 40 if order <= 2 else 12), min_size=depth, max_size=depth))
    n_out = draw(st.integers(1, 3))
    activations = draw(st.lists(st.sampled_from(BUILTIN), min_size=depth, max_size=depth))
    output = draw(st.sampled_from((None,) + BUILTIN))
    batch = draw(st.sampled_from((None, 1, 2)))
    scheme = draw(st.sampled_from(("auto", "forward") + (("top-vertex",) if output is None else ())))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.floats(0.0, 2.0))
    rng = np.random.default_rng(seed)
    mlp = random_mlp(rng, (n_in, *widths, n_out), activations, output_activation=output)
    x = scale * rng.normal(size=(n_in,) if batch is None else (batch, n_in))
    assume(well_conditioned(mlp, x))
    return mlp, x, order, scheme


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_random_networks_match_torch(case):
    mlp, x, order, scheme = case
    check_against_torch(mlp, x, order, scheme=scheme)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(), st.data())
def test_random_networks_wrt_subset_match_torch(case, data):
    mlp, x, order, scheme = case
    n = mlp.n_inputs
    wrt = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    check_against_torch(mlp, x, order, wrt=wrt, scheme=scheme)
