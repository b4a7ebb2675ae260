"""Tests of feynmlp.mlp.MLP: construction, validation, from_torch and the NumPy forward pass.

The reference for every forward pass is PyTorch (float64): either the torch module itself or
the same affine maps and activations written with torch.nn.functional.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import sympy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from feynmlp.errors import FeynmlpError, UnsupportedActivationError
from feynmlp.mlp import MLP

TORCH_FUNCTIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "silu": F.silu,
    "gelu": F.gelu,
    "sin": torch.sin,
    "cos": torch.cos,
    "exp": torch.exp,
    "identity": lambda z: z,
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "hardtanh": F.hardtanh,
    "relu6": F.relu6,
}

TORCH_MODULES = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "hardtanh": nn.Hardtanh,
    "relu6": nn.ReLU6,
}


def torch_reference(weights, biases, activations, output_activation, x):
    """The network of docs/mathematics.md, 'The network', evaluated with torch, float64."""
    z = torch.as_tensor(x, dtype=torch.float64)
    for layer, (w, b) in enumerate(zip(weights, biases)):
        if layer > 0:
            z = activations[layer - 1](z)
        z = z @ torch.as_tensor(w, dtype=torch.float64).T + torch.as_tensor(b, dtype=torch.float64)
    if output_activation is not None:
        z = TORCH_FUNCTIONS[output_activation](z)
    return z.numpy()


def random_network(rng, sizes, scale=0.7):
    weights = [rng.normal(scale=scale / np.sqrt(n_in), size=(n_out, n_in))
               for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    biases = [rng.normal(scale=0.3, size=n_out) for n_out in sizes[1:]]
    return weights, biases


# ---------------------------------------------------------------------------------------------
# Import hygiene.
# ---------------------------------------------------------------------------------------------

def test_importing_the_runtime_leaves_sympy_and_torch_out():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import feynmlp, feynmlp.mlp, feynmlp.model_io
        mlp = feynmlp.mlp.MLP([np.ones((2, 3)), np.ones((1, 2))], [None, None], activation="tanh")
        mlp(np.zeros(3))
        loaded = [m for m in ("sympy", "torch", "jinja2") if m in sys.modules]
        assert not loaded, loaded
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# Forward pass against torch.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TORCH_FUNCTIONS))
def test_forward_matches_torch_functional_for_each_builtin(name):
    rng = np.random.default_rng(1)
    sizes = (4, 7, 6, 3)
    weights, biases = random_network(rng, sizes)
    mlp = MLP(weights, biases, activation=name)
    x = rng.normal(size=(11, 4))
    expected = torch_reference(weights, biases, [TORCH_FUNCTIONS[name]] * 2, None, x)
    np.testing.assert_allclose(mlp(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mlp(x[3]), expected[3], rtol=1e-12, atol=1e-12)
    assert mlp(x).shape == (11, 3) and mlp(x[3]).shape == (3,)


def test_forward_matches_a_torch_sequential_with_mixed_activations():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 8), nn.Tanh(),
        nn.Linear(8, 8), nn.Sigmoid(),
        nn.Linear(8, 7), nn.Softplus(),
        nn.Linear(7, 6), nn.SiLU(),
        nn.Linear(6, 6), nn.GELU(),
        nn.Linear(6, 2),
    ).double()
    mlp = MLP.from_torch(model)
    assert mlp.hidden_activations == ["tanh", "sigmoid", "softplus", "silu", "gelu"]
    assert mlp.layer_sizes == (5, 8, 8, 7, 6, 6, 2)
    x = torch.randn(20, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(mlp(x.numpy()), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    names=st.lists(st.sampled_from(sorted(TORCH_MODULES)), min_size=4, max_size=4),
    output=st.sampled_from([None, "tanh", "sigmoid"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_forward_matches_torch_on_random_architectures(sizes, names, output, seed):
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index > 0:
            layers.append(TORCH_MODULES[names[index - 1]]())
        linear = nn.Linear(n_in, n_out).double()
        with torch.no_grad():
            # Scaled so that pre-activations stay far below 20, where torch's Softplus
            # switches to its linearisation and feynmlp keeps the exact log(1 + e^z).
            linear.weight.copy_(torch.randn(n_out, n_in, generator=generator, dtype=torch.float64)
                                * 0.5 / n_in ** 0.5)
            linear.bias.copy_(torch.randn(n_out, generator=generator, dtype=torch.float64))
        layers.append(linear)
    if output is not None:
        layers.append(TORCH_MODULES[output]())
    model = nn.Sequential(*layers)
    mlp = MLP.from_torch(model)
    assert mlp.depth == len(sizes) - 2
    assert mlp.output_activation == output
    x = torch.randn(9, sizes[0], generator=generator, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(mlp(x.numpy()), expected, rtol=1e-12, atol=1e-12)


def test_custom_sympy_activation_forward_matches_torch():
    u = sympy.Symbol("u")
    rng = np.random.default_rng(2)
    weights, biases = random_network(rng, (3, 5, 5, 2))
    custom = u * sympy.tanh(u) + u * (1 + sympy.erf(u / sympy.sqrt(2))) / 4
    mlp = MLP(weights, biases, activation=[custom, "sin"])
    assert mlp.hidden_activations == [custom, "sin"]
    x = rng.normal(size=(6, 3))
    reference = [lambda z: z * torch.tanh(z) + z * (1 + torch.erf(z / np.sqrt(2))) / 4, torch.sin]
    np.testing.assert_allclose(mlp(x), torch_reference(weights, biases, reference, None, x),
                               rtol=1e-12, atol=1e-12)


def test_output_activation_is_applied_and_identity_means_none():
    rng = np.random.default_rng(3)
    weights, biases = random_network(rng, (2, 4, 3))
    x = rng.normal(size=(5, 2))
    mlp = MLP(weights, biases, activation="tanh", output_activation="Logistic")
    assert mlp.output_activation == "sigmoid"
    expected = torch_reference(weights, biases, [torch.tanh], "sigmoid", x)
    np.testing.assert_allclose(mlp(x), expected, rtol=1e-12, atol=1e-12)
    assert MLP(weights, biases, output_activation="linear").output_activation is None


def test_sigmoid_family_is_stable_for_large_preactivations():
    weights = [np.array([[800.0], [-800.0]]), np.array([[1.0, 1.0]])]
    biases = [np.zeros(2), np.zeros(1)]
    x = np.array([[1.0], [-1.0], [0.0]])
    for name in ("sigmoid", "silu", "softplus"):
        mlp = MLP(weights, biases, activation=name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = mlp(x)
        assert np.all(np.isfinite(result))
        if name != "softplus":  # torch linearises softplus above 20: compared elsewhere
            expected = torch_reference(weights, biases, [TORCH_FUNCTIONS[name]], None, x)
            np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(MLP(weights, biases, activation="softplus")(x)[:, 0], [800.0, 800.0, 2 * np.log(2)],
                               rtol=1e-15)


def test_single_layer_network_is_affine():
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    b = np.array([0.5, -0.5, 1.0])
    mlp = MLP([w], [b], activation="tanh")
    assert mlp.depth == 0 and mlp.hidden_activations == [] and mlp.layer_sizes == (2, 3)
    np.testing.assert_array_equal(mlp(np.array([1.0, -1.0])), [-0.5, -1.5, 0.0])


# ---------------------------------------------------------------------------------------------
# Attributes.
# ---------------------------------------------------------------------------------------------

def test_attributes_are_float64_copies_and_describe_the_network():
    w0 = np.arange(6, dtype=np.float32).reshape(2, 3)
    w1 = [[1, 2]]  # an int list is fine: converted
    activation = ["Swish"]
    mlp = MLP([w0, w1], [np.ones(2), None], activation=activation)
    assert mlp.layer_sizes == (3, 2, 1)
    assert (mlp.n_inputs, mlp.n_outputs, mlp.depth) == (3, 1, 1)
    assert mlp.activation == ["Swish"] and mlp.activation is not activation
    assert mlp.hidden_activations == ["silu"]
    assert mlp.output_activation is None
    for array in mlp.weights + mlp.biases:
        assert array.dtype == np.float64 and array.flags.c_contiguous
    np.testing.assert_array_equal(mlp.biases[1], [0.0])
    w0[0, 0] = 99.0
    assert mlp.weights[0][0, 0] == 0.0
    assert mlp.record == {}
    text = repr(mlp)
    assert "(3, 2, 1)" in text and "silu" in text


def test_activation_is_kept_exactly_as_given():
    x = sympy.Symbol("x")
    expr = x * sympy.tanh(x)
    w = [np.ones((2, 2))] * 3
    assert MLP(w, [None] * 3, activation="TANH").activation == "TANH"
    assert MLP(w, [None] * 3, activation=expr).activation is expr
    mixed = MLP(w, [None] * 3, activation=("gelu", expr))
    assert mixed.activation == ("gelu", expr)
    assert mixed.hidden_activations == ["gelu", expr]
    assert "x*tanh(x)" in repr(mixed)


def test_torch_tensors_with_grad_are_accepted():
    w = torch.randn(3, 2, requires_grad=True)
    mlp = MLP([w], [None])
    np.testing.assert_array_equal(mlp.weights[0], w.detach().double().numpy())


def test_relu_networks_are_first_order_only():
    mlp = MLP([np.ones((2, 2)), np.ones((1, 2))], [None, None], activation="relu")
    assert mlp.is_relu_like
    mlp.check_order_supported(1)
    with pytest.raises(UnsupportedActivationError, match="piecewise linear"):
        mlp.check_order_supported(2)
    MLP([np.ones((2, 2)), np.ones((1, 2))], [None, None]).check_order_supported(5)


# ---------------------------------------------------------------------------------------------
# Validation: one FeynmlpError naming the bad value.
# ---------------------------------------------------------------------------------------------

def _nan_weight():
    w = np.ones((4, 3))
    w[1, 2] = np.nan
    w[3, 0] = np.nan
    return w


x_sym, y_sym = sympy.symbols("x y")

INVALID = [
    ("mismatched shapes", dict(weights=[np.ones((4, 3)), np.ones((2, 5))], biases=[None, None]),
     ["layer 1", "(2, 5)", "(4, 3)"]),
    ("bias length", dict(weights=[np.ones((4, 3))], biases=[np.ones(3)]),
     ["layer 0 bias", "(3,)", "length 4"]),
    ("bias 2-D", dict(weights=[np.ones((4, 3))], biases=[np.ones((4, 1))]), ["(4, 1)"]),
    ("bias count", dict(weights=[np.ones((4, 3)), np.ones((1, 4))], biases=[None]),
     ["2 weight matrices", "1 bias"]),
    ("activation count", dict(weights=[np.ones((4, 3)), np.ones((4, 4)), np.ones((1, 4))],
                              biases=[None] * 3, activation=["tanh"]),
     ["1 activations", "2 hidden layer"]),
    ("1-D weight", dict(weights=[np.ones(3)], biases=[None]), ["(3,)", "2-D"]),
    ("3-D weight", dict(weights=[np.ones((2, 2, 2))], biases=[None]), ["(2, 2, 2)"]),
    ("empty weight", dict(weights=[np.ones((0, 3))], biases=[None]), ["(0, 3)"]),
    ("NaN weights", dict(weights=[np.ones((3, 2)), _nan_weight()], biases=[None, None]),
     ["layer 1 weight", "2 non-finite"]),
    ("inf bias", dict(weights=[np.ones((4, 3))], biases=[np.array([0, np.inf, 0, 0])]),
     ["layer 0 bias", "1 non-finite"]),
    ("complex weight", dict(weights=[np.ones((2, 2), dtype=complex)], biases=[None]), ["complex"]),
    ("string weight", dict(weights=[np.array([["a"]])], biases=[None]), ["<U1"]),
    ("weights not a list", dict(weights=np.ones((2, 2)), biases=[None]), ["ndarray"]),
    ("no layers", dict(weights=[], biases=[]), ["at least one layer"]),
    ("unknown name", dict(weights=[np.ones((2, 2)), np.ones((1, 2))], biases=[None, None],
                          activation="swishy"), ["'swishy'"]),
    ("unknown name in list", dict(weights=[np.ones((2, 2)), np.ones((1, 2))], biases=[None, None],
                                  activation=["mish"]), ["'mish'"]),
    ("constant expression", dict(weights=[np.ones((2, 2)), np.ones((1, 2))], biases=[None, None],
                                 activation=sympy.Integer(2)), ["exactly one free symbol", "none"]),
    ("two symbols", dict(weights=[np.ones((2, 2)), np.ones((1, 2))], biases=[None, None],
                         activation=x_sym * y_sym), ["exactly one free symbol", "x, y"]),
    ("undefined function", dict(weights=[np.ones((2, 2)), np.ones((1, 2))], biases=[None, None],
                                activation=sympy.Function("f")(x_sym)), ["undefined function", "f(x)"]),
    ("complex expression", dict(weights=[np.ones((2, 2)), np.ones((1, 2))], biases=[None, None],
                                activation=sympy.I * x_sym), ["imaginary unit", "I*x"]),
    ("infinite expression", dict(weights=[np.ones((2, 2)), np.ones((1, 2))], biases=[None, None],
                                 activation=sympy.zoo * x_sym), ["infinite or undefined"]),
    ("not an activation", dict(weights=[np.ones((2, 2)), np.ones((1, 2))], biases=[None, None],
                               activation=3.5), ["float", "3.5"]),
    ("bad output activation", dict(weights=[np.ones((2, 2))], biases=[None],
                                   output_activation="softmax"), ["'softmax'"]),
]


@pytest.mark.parametrize("case, kwargs, fragments", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_networks_are_refused_with_the_offending_value(case, kwargs, fragments):
    with pytest.raises(FeynmlpError) as info:
        MLP(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_unknown_names_raise_unsupported_activation_error():
    with pytest.raises(UnsupportedActivationError):
        MLP([np.ones((2, 2)), np.ones((1, 2))], [None, None], activation="swishy")


@pytest.mark.parametrize("x, fragment", [
    (np.ones(4), "(4,)"), (np.ones((2, 2, 3)), "(2, 2, 3)"), (np.ones(3, dtype=complex), "complex"),
])
def test_forward_refuses_inputs_of_the_wrong_shape(x, fragment):
    mlp = MLP([np.ones((2, 3))], [None])
    with pytest.raises(FeynmlpError) as info:
        mlp(x)
    assert fragment in str(info.value)


# ---------------------------------------------------------------------------------------------
# from_torch.
# ---------------------------------------------------------------------------------------------

def test_from_torch_flattens_skips_and_fills_in():
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(3, 4, bias=False),
        nn.Sequential(nn.Tanh(), nn.Dropout(0.5), nn.Identity()),
        nn.Linear(4, 5),
        nn.Linear(5, 2),  # no activation between: identity
        nn.Sequential(nn.Sigmoid()),
    ).double().eval()
    mlp = MLP.from_torch(model)
    assert mlp.hidden_activations == ["tanh", "identity"]
    assert mlp.output_activation == "sigmoid"
    np.testing.assert_array_equal(mlp.biases[0], np.zeros(4))
    np.testing.assert_array_equal(mlp.weights[1], model[3].weight.detach().numpy())
    x = torch.randn(8, 3, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(mlp(x.numpy()), expected, rtol=1e-12, atol=1e-12)


def test_from_torch_single_linear_and_float32_weights():
    linear = nn.Linear(3, 2)  # float32
    mlp = MLP.from_torch(linear)
    assert mlp.depth == 0
    np.testing.assert_array_equal(mlp.weights[0], linear.weight.detach().numpy().astype(np.float64))
    assert mlp.weights[0].dtype == np.float64


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "hardtanh", "relu6"])
def test_from_torch_maps_relu_like_modules(name):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(2, 6), TORCH_MODULES[name](), nn.Linear(6, 1)).double()
    mlp = MLP.from_torch(model)
    assert mlp.hidden_activations == [name]
    x = torch.randn(10, 2, dtype=torch.float64) * 4
    with torch.no_grad():
        np.testing.assert_allclose(mlp(x.numpy()), model(x).numpy(), rtol=1e-12, atol=1e-12)


class Custom(nn.Module):
    def forward(self, x):
        return x


class MyTanh(nn.Tanh):
    def forward(self, x):
        return 2 * torch.tanh(x)


REFUSED = [
    ("conv", nn.Sequential(nn.Linear(3, 3), nn.Conv1d(1, 1, 3)), ["layer 1", "Conv1d"]),
    ("batchnorm", nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)),
     ["layer 1", "BatchNorm1d"]),
    ("layernorm", nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Sequential(nn.LayerNorm(3))),
     ["layer 2.0", "LayerNorm"]),
    ("custom module", nn.Sequential(nn.Linear(3, 3), Custom()), ["layer 1", "Custom()"]),
    ("subclassed activation", nn.Sequential(nn.Linear(3, 3), MyTanh(), nn.Linear(3, 1)),
     ["layer 1", "MyTanh()"]),
    ("gelu tanh", nn.Sequential(nn.Linear(3, 3), nn.GELU(approximate="tanh"), nn.Linear(3, 1)),
     ["layer 1", "approximate='tanh'"]),
    ("softplus beta", nn.Sequential(nn.Linear(3, 3), nn.Softplus(beta=2.0), nn.Linear(3, 1)),
     ["layer 1", "beta=2.0"]),
    ("softplus threshold", nn.Sequential(nn.Linear(3, 3), nn.Softplus(threshold=5.0), nn.Linear(3, 1)),
     ["layer 1", "threshold=5.0"]),
    ("leaky slope", nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU(0.2), nn.Linear(3, 1)),
     ["negative_slope=0.2"]),
    ("hardtanh range", nn.Sequential(nn.Linear(3, 3), nn.Hardtanh(-2.0, 2.0), nn.Linear(3, 1)),
     ["min_val=-2.0"]),
    ("activation first", nn.Sequential(nn.Tanh(), nn.Linear(3, 1)), ["layer 0", "before the first Linear"]),
    ("two activations", nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Sigmoid(), nn.Linear(3, 1)),
     ["layer 2 (Sigmoid())", "layer 1 (Tanh())"]),
    ("no linear", nn.Sequential(nn.Identity()), ["no Linear"]),
    ("shape mismatch", nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(5, 1)),
     ["layer 2", "expects 5 inputs", "outputs 4"]),
    ("flatten start 0", nn.Sequential(nn.Flatten(0), nn.Linear(3, 1)), ["layer 0", "Flatten"]),
    ("not a sequential", nn.Conv1d(1, 1, 3), ["Conv1d"]),
    ("module list", nn.ModuleList([nn.Linear(2, 2)]), ["ModuleList"]),
]


@pytest.mark.parametrize("case, module, fragments", REFUSED, ids=[c[0] for c in REFUSED])
def test_from_torch_refuses_unsupported_layers_naming_them(case, module, fragments):
    with pytest.raises(FeynmlpError) as info:
        MLP.from_torch(module)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
