"""MLP.from_equinox and MLP.from_flax (feynmlp.jax_readers) against JAX itself.

Forward values against the model's own call (1e-12, in float64: x64 is switched on here),
gradients and Hessians of the feynmlp expansion against jax.jacobian and jax.hessian of the
model; refusals name the layer.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
eqx = pytest.importorskip("equinox")
pytest.importorskip("flax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import flax.linen as linen  # noqa: E402
from flax import nnx  # noqa: E402

import feynmlp  # noqa: E402
from feynmlp import MLP  # noqa: E402
from feynmlp.errors import FeynmlpError  # noqa: E402
from helpers.torch_reference import assert_relative_close  # noqa: E402

F64 = jnp.float64
KEYS = jax.random.split(jax.random.PRNGKey(0), 8)
X = np.random.default_rng(4).normal(size=(6, 3))
EXACT_GELU = functools.partial(jax.nn.gelu, approximate=False)


def _check(mlp, function, order=2):
    """Values of `function` (one input vector -> output vector) and its derivatives."""
    want = np.asarray(jax.vmap(function)(jnp.asarray(X)))
    np.testing.assert_allclose(mlp(X), want, rtol=1e-12, atol=1e-12)
    point = X[2]
    expansion = feynmlp.taylor(mlp, point, order)
    assert_relative_close(expansion.derivative_tensor(1), np.asarray(jax.jacobian(function)(jnp.asarray(point))),
                          what="gradient")
    if order >= 2:
        assert_relative_close(expansion.derivative_tensor(2), np.asarray(jax.hessian(function)(jnp.asarray(point))),
                              what="hessian")


def test_equinox_mlp():
    model = eqx.nn.MLP(3, 2, 5, 2, activation=jax.nn.silu, final_activation=jax.nn.sigmoid, dtype=F64,
                       key=KEYS[0])
    mlp = MLP.from_equinox(model)
    assert mlp.hidden_activations == ["silu", "silu"] and mlp.output_activation == "sigmoid"
    _check(mlp, model)


def test_equinox_sequential():
    model = eqx.nn.Sequential([
        eqx.nn.Linear(3, 4, dtype=F64, key=KEYS[1]), eqx.nn.Lambda(EXACT_GELU), eqx.nn.Identity(),
        eqx.nn.Linear(4, 4, dtype=F64, key=KEYS[2]), eqx.nn.Lambda(jnp.sin), eqx.nn.Dropout(0.1, inference=True),
        eqx.nn.Sequential([eqx.nn.Linear(4, 2, dtype=F64, key=KEYS[3])]),
    ])
    mlp = MLP.from_equinox(model)
    assert mlp.hidden_activations == ["gelu", "sin"] and mlp.output_activation is None
    _check(mlp, model)


def test_nnx_sequential():
    model = nnx.Sequential(nnx.Linear(3, 4, param_dtype=F64, rngs=nnx.Rngs(1)), jax.nn.softplus,
                           nnx.Linear(4, 2, param_dtype=F64, rngs=nnx.Rngs(2)), jax.nn.tanh)
    mlp = MLP.from_flax(model)
    assert mlp.hidden_activations == ["softplus"] and mlp.output_activation == "tanh"
    _check(mlp, lambda v: model(v[None, :])[0])


def test_linen_parameter_tree_in_numeric_layer_order():
    # Eleven layers: Dense_10 must come after Dense_9, not after Dense_1.
    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            for width in (3, 4, 2, 3, 4, 2, 3, 4, 2, 3):
                x = jnp.tanh(linen.Dense(width, param_dtype=F64)(x))
            return linen.Dense(2, param_dtype=F64)(x)

    net = Net()
    params = net.init(KEYS[4], jnp.ones((1, 3), dtype=F64))
    mlp = MLP.from_flax(params, activation="tanh")
    assert mlp.layer_sizes == (3, 3, 4, 2, 3, 4, 2, 3, 4, 2, 3, 2)
    _check(mlp, lambda v: net.apply(params, v[None, :])[0])


def test_relu_network_is_first_order():
    model = eqx.nn.MLP(3, 1, 4, 1, key=KEYS[5], dtype=F64)  # Equinox's default activation is ReLU
    mlp = MLP.from_equinox(model)
    assert mlp.hidden_activations == ["relu"]
    _check(mlp, model, order=1)


class Scaled(eqx.Module):
    """A module with its own __call__: read through its jaxpr (feynmlp.jax_trace)."""

    a: eqx.nn.Linear
    b: eqx.nn.Linear
    c: eqx.nn.Linear
    mean: jax.Array

    def __call__(self, x):
        x = (x - self.mean) / 2.0
        h = jax.nn.silu(self.a(x))
        h = jax.nn.gelu(self.b(h), approximate=False)  # written out with erfc: an elementwise region
        return jax.nn.sigmoid(self.c(h) * 3.0 + 1.0)


def test_equinox_module_with_its_own_call():
    model = Scaled(eqx.nn.Linear(3, 4, dtype=F64, key=KEYS[1]), eqx.nn.Linear(4, 4, dtype=F64, key=KEYS[2]),
                   eqx.nn.Linear(4, 2, dtype=F64, key=KEYS[3]), jnp.array([0.5, -1.0, 2.0]))
    mlp = MLP.from_equinox(model)
    assert mlp.hidden_activations == ["silu", "gelu"] and mlp.output_activation == "sigmoid"
    _check(mlp, model)


class OwnNNX(nnx.Module):
    def __init__(self):
        self.first = nnx.Linear(3, 5, param_dtype=F64, rngs=nnx.Rngs(3))
        self.last = nnx.Linear(5, 1, param_dtype=F64, rngs=nnx.Rngs(4))

    def __call__(self, x):
        return self.last(jax.nn.softplus(self.first(x)))


def test_nnx_module_with_its_own_call():
    model = OwnNNX()
    mlp = MLP.from_flax(model)
    assert mlp.hidden_activations == ["softplus"]
    _check(mlp, model)


class Residual(eqx.Module):
    layer: eqx.nn.Linear

    def __call__(self, x):
        return x + jnp.tanh(self.layer(x))


class TanhGelu(Residual):
    def __call__(self, x):
        return jax.nn.gelu(self.layer(x))


class Leaky(Residual):
    def __call__(self, x):
        return jax.nn.leaky_relu(self.layer(x), 0.2)


class NoLinear(eqx.Module):
    scale: jax.Array

    def __call__(self, x):
        return x * self.scale


def _linen_params(kernel):
    return {"params": {"Dense_0": {"kernel": kernel, "bias": jnp.zeros(2)}}}


REFUSED = [
    ("tanh gelu", lambda: MLP.from_equinox(eqx.nn.MLP(3, 1, 4, 1, activation=jax.nn.gelu, key=KEYS[6])),
     ["MLP activation", "approximate=False"]),
    ("leaky slope", lambda: MLP.from_equinox(eqx.nn.Sequential([
        eqx.nn.Linear(3, 3, key=KEYS[6]), eqx.nn.Lambda(functools.partial(jax.nn.leaky_relu, negative_slope=0.2)),
        eqx.nn.Linear(3, 1, key=KEYS[7])])), ["Sequential.layers[1]", "negative_slope=0.2"]),
    ("unknown activation", lambda: MLP.from_equinox(eqx.nn.MLP(3, 1, 4, 1, activation=jax.nn.elu, key=KEYS[6])),
     ["MLP activation", "not one feynmlp knows"]),
    ("residual", lambda: MLP.from_equinox(Residual(eqx.nn.Linear(3, 3, key=KEYS[6]))),
     ["Equinox module Residual", "operation add at test_jax_readers.py", "residual"]),
    ("traced tanh gelu", lambda: MLP.from_equinox(TanhGelu(eqx.nn.Linear(3, 3, key=KEYS[6]))),
     ["Equinox module TanhGelu", "test_jax_readers.py", "none of the registry's activations"]),
    ("traced leaky slope", lambda: MLP.from_equinox(Leaky(eqx.nn.Linear(3, 3, key=KEYS[6]))),
     ["Equinox module Leaky", "none of the registry's activations"]),
    ("no linear", lambda: MLP.from_equinox(NoLinear(jnp.ones(3))), ["NoLinear", "no Linear layer"]),
    ("linen without activation", lambda: MLP.from_flax(_linen_params(jnp.ones((3, 2)))), ["activation='tanh'"]),
    ("linen module", lambda: MLP.from_flax(linen.Dense(3), activation="tanh"), ["linen module Dense", "parameter tree"]),
    ("integer kernel", lambda: MLP.from_flax(_linen_params(jnp.ones((3, 2), dtype=jnp.int32)), activation="tanh"),
     ["linen layer 'Dense_0'", "int32", "floating point"]),
    ("nan kernel", lambda: MLP.from_flax(_linen_params(jnp.full((3, 2), jnp.nan)), activation="tanh"),
     ["linen layer 'Dense_0'", "non-finite"]),
    ("shapes", lambda: MLP.from_equinox(eqx.nn.Sequential([eqx.nn.Linear(3, 4, key=KEYS[6]),
                                                             eqx.nn.Linear(5, 1, key=KEYS[7])])),
     ["Sequential.layers[1]", "expects 5 inputs", "do not chain"]),
]


@pytest.mark.parametrize("case, call, fragments", REFUSED, ids=[c[0] for c in REFUSED])
def test_refusals_name_the_layer(case, call, fragments):
    with pytest.raises(FeynmlpError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) <= 500, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
