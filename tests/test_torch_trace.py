"""MLP.from_torch of modules with their own forward (feynmlp.torch_trace, through torch.fx).

Forward values against the module itself (1e-12); gradients and Hessians of the feynmlp
expansion against torch.func on the module; every refusal names the node and its line.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import feynmlp  # noqa: E402
from feynmlp import MLP  # noqa: E402
from feynmlp.errors import FeynmlpError, UnsupportedActivationError  # noqa: E402
from helpers.torch_reference import assert_relative_close, torch_derivative_tensors  # noqa: E402


class Scaled(nn.Module):
    """An input scaler and an output scaling around three layers, in the common styles."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 5)
        self.w2 = nn.Parameter(torch.randn(4, 5))
        self.b2 = nn.Parameter(torch.randn(4))
        self.last = nn.Linear(4, 2)
        self.register_buffer("mean", torch.randn(3))
        self.register_buffer("std", torch.rand(3) + 0.5)
        self.register_buffer("y_scale", torch.tensor([2.0, -0.5]))
        self.drop = nn.Dropout(0.2)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = (x - self.mean) / (self.std + 1e-3)
        h = torch.tanh(self.first(x))
        h = self.drop(h)
        h = F.softplus(F.linear(h, self.w2, self.b2))
        y = self.last(h) * self.y_scale + 0.25
        return y


class Functions(nn.Module):
    """Activations as torch functions and tensor methods."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3),
                                     nn.Linear(3, 1)])

    def forward(self, x):
        x = -x
        h = F.gelu(self.layers[0](x))
        h = F.silu(self.layers[1](h))
        h = self.layers[2](h).sigmoid()
        h = torch.sin(self.layers[3](h))
        return 1.0 - self.layers[4](h)


def _check_forward(module, mlp, n_inputs, seed=0):
    x = torch.randn(7, n_inputs, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(mlp(x.numpy()), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, n_inputs, hidden, output", [
    (Scaled, 3, ["tanh", "softplus"], None),
    (Functions, 2, ["gelu", "silu", "sigmoid", "sin"], None),
])
def test_traced_modules_match_torch_values_gradients_and_hessians(make, n_inputs, hidden, output):
    torch.manual_seed(1)
    module = make().double().eval()
    mlp = MLP.from_torch(module)
    assert mlp.hidden_activations == hidden and mlp.output_activation == output
    _check_forward(module, mlp, n_inputs)
    x = np.linspace(-0.6, 0.8, n_inputs)
    expansion = feynmlp.taylor(mlp, x, 2)
    want = torch_derivative_tensors(lambda t: module(t[None, :])[0], x, 2)
    for k in range(3):
        assert_relative_close(expansion.derivative_tensor(k), want[k], what=f"order {k}")


def test_float32_module_and_output_activation():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 3), nn.Linear(3, 1)

        def forward(self, x):
            return torch.sigmoid(self.b(F.relu(self.a(x))))

    torch.manual_seed(2)
    module = Net()
    mlp = MLP.from_torch(module)
    assert mlp.hidden_activations == ["relu"] and mlp.output_activation == "sigmoid"
    np.testing.assert_array_equal(mlp.weights[0], module.a.weight.detach().numpy().astype(np.float64))
    _check_forward(module.double(), mlp, 2)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)

    def forward(self, x):
        return x + self.a(x)


class Normed(Residual):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(3)

    def forward(self, x):
        return self.norm(self.a(x))


class Branching(Residual):
    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return torch.tanh(self.a(x))


class TwoInputs(Residual):
    def forward(self, x, y):
        return self.a(x)


class MatMul(Residual):
    def __init__(self):
        super().__init__()
        self.register_buffer("m", torch.ones(3, 2))

    def forward(self, x):
        return x @ self.m


class ScaleBetweenActivations(Residual):
    def forward(self, x):
        return torch.tanh(2.0 * torch.tanh(self.a(x)))


class ScaleAfterOutput(Residual):
    def forward(self, x):
        return torch.sigmoid(self.a(x)) * 3.0


class IntegerBuffer(Residual):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([1, 2, 3]))

    def forward(self, x):
        return self.a(x - self.shift)


class NonFinite(Residual):
    def __init__(self):
        super().__init__()
        self.register_buffer("std", torch.tensor([1.0, float("inf"), 1.0]))

    def forward(self, x):
        return self.a(x * self.std)


class Mismatch(Residual):
    def __init__(self):
        super().__init__()
        self.b = nn.Linear(4, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class WrongScaler(Residual):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(5))

    def forward(self, x):
        return self.a(x - self.mean)


class TanhGelu(Residual):
    def forward(self, x):
        return F.gelu(self.a(x), approximate="tanh")


class Concatenated(Residual):
    def forward(self, x):
        return self.a(torch.cat([x, x], dim=1)[:, :3])


class NoLinear(Residual):
    def forward(self, x):
        return x


REFUSED = [
    (Residual, FeynmlpError, ["module Residual", "node add", "x + self.a(x)", "residual"]),
    (Normed, FeynmlpError, ["node norm", "LayerNorm", "self.norm(self.a(x))"]),
    (Branching, FeynmlpError, ["module Branching", "if x.sum() > 0:", "branches on the input"]),
    (TwoInputs, FeynmlpError, ["node y", "second input", "test_torch_trace.py:"]),
    (MatMul, FeynmlpError, ["node matmul", "x @ self.m", "does not read"]),
    (ScaleBetweenActivations, FeynmlpError, ["node mul", "between two activations"]),
    (ScaleAfterOutput, FeynmlpError, ["node mul", "after the output activation"]),
    (IntegerBuffer, FeynmlpError, ["shift", "torch.int64", "floating point"]),
    (NonFinite, FeynmlpError, ["node mul", "non-finite"]),
    (Mismatch, FeynmlpError, ["node b", "expects 4 inputs", "outputs 3", "do not chain"]),
    (WrongScaler, FeynmlpError, ["node sub", "shape (5,)", "3 features"]),
    (TanhGelu, UnsupportedActivationError, ["node gelu", "approximate='tanh'"]),
    (Concatenated, FeynmlpError, ["node cat", "torch.cat([x, x], dim=1)", "does not read"]),
    (NoLinear, FeynmlpError, ["module NoLinear", "no Linear", "nn.Sequential"]),
]


@pytest.mark.parametrize("make, error, fragments", REFUSED, ids=[c[0].__name__ for c in REFUSED])
def test_refusals_name_the_node_and_its_line(make, error, fragments):
    with pytest.raises(error) as info:
        MLP.from_torch(make())
    message = str(info.value)
    assert "\n" not in message and len(message) <= 500, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_sequential_keeps_its_layer_by_layer_reading():
    # A Sequential is read by its layers, so a custom submodule is refused by its index
    # even where tracing would see through it.
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(FeynmlpError, match="layer 1"):
        MLP.from_torch(nn.Sequential(nn.Linear(3, 3), Custom()))
