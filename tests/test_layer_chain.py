"""feynmlp.layer_chain: the one mapping every model reader uses, against a brute-force loop.

The steps are applied one by one in NumPy here (scalings, affine layers, activations from the
registry) and compared with the folded MLP; each misplaced step is refused by its name; the
readers' activation tables name only the registry's activations.
"""
from __future__ import annotations

import numpy as np
import pytest

from feynmlp.activation_names import BUILTIN_ACTIVATIONS, NUMPY_FUNCTIONS, RELU_LIKE
from feynmlp.errors import FeynmlpError
from feynmlp.layer_chain import Activation, Dense, Scale, build_mlp

RNG = np.random.default_rng(31)


def _apply(steps, x):
    """The steps applied literally, one at a time."""
    for step in steps:
        if isinstance(step, Scale):
            x = np.asarray(step.scale) * x + np.asarray(step.shift)
        elif isinstance(step, Dense):
            x = x @ np.asarray(step.weight).T + (0 if step.bias is None else np.asarray(step.bias))
        else:
            x = NUMPY_FUNCTIONS[step.name](x)
    return x


def test_scalings_fold_into_the_neighbouring_layers():
    steps = [
        Scale(1.0, -RNG.normal(size=3), "center"),
        Scale(1 / RNG.uniform(0.5, 2, size=3), 0.0, "scale"),
        Dense(RNG.normal(size=(4, 3)), RNG.normal(size=4), "dense 0"),
        Scale(2.0, 0.5, "after dense 0"),
        Activation("tanh", "act 0"),
        Scale(RNG.normal(size=4), RNG.normal(size=4), "before dense 1"),
        Dense(RNG.normal(size=(5, 4)), None, "dense 1"),
        Dense(RNG.normal(size=(2, 5)), RNG.normal(size=2), "dense 2"),
        Scale(np.array([[3.0, -1.0]]), np.array([0.25, 4.0]), "output scale"),
        Activation("sigmoid", "output"),
    ]
    mlp = build_mlp(steps, "test")
    assert mlp.layer_sizes == (3, 4, 5, 2)
    assert mlp.hidden_activations == ["tanh", "identity"] and mlp.output_activation == "sigmoid"
    x = RNG.normal(size=(9, 3)) * 3
    np.testing.assert_allclose(mlp(x), _apply(steps, x), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("steps, fragments", [
    ([Dense(np.ones((2, 3)), None, "d0"), Activation("tanh", "a0"), Scale(2.0, 0.0, "s"), Activation("sin", "a1"),
      Dense(np.ones((1, 2)), None, "d1")], ["s:", "between two activations"]),
    ([Dense(np.ones((2, 3)), None, "d0"), Activation("sigmoid", "out"), Scale(2.0, 1.0, "s")],
     ["s:", "after the output activation sigmoid"]),
    ([Activation("tanh", "a"), Dense(np.ones((2, 3)), None, "d")], ["a:", "before the first linear layer"]),
    ([Dense(np.ones((2, 3)), None, "d0"), Activation("tanh", "a0"), Activation("sin", "a1")],
     ["a1 directly follows the activation at a0"]),
    ([Scale(1.0, 2.0, "s")], ["src contains no linear layer"]),
    ([Scale(1.0, np.ones(4), "s"), Dense(np.ones((2, 3)), None, "d")], ["s:", "shape (4,)", "3 features"]),
    ([Dense(np.ones((2, 3)), None, "d0"), Dense(np.ones((1, 4)), None, "d1")], ["d1:", "expects 4 inputs",
                                                                               "do not chain"]),
    ([Dense(np.ones((2, 3), dtype=np.int32), None, "d0")], ["d0:", "int32", "floating point"]),
    ([Dense(np.ones((2, 3)), np.array([1.0, np.inf]), "d0")], ["d0:", "bias has 1 non-finite entry"]),
    ([Scale(np.array([1.0, np.nan, 1.0]), 0.0, "s"), Dense(np.ones((2, 3)), None, "d0")], ["s:", "scale",
                                                                                          "non-finite"]),
    ([Dense(np.ones((2, 3)), np.ones(3), "d0")], ["d0:", "bias has shape (3,)"]),
])
def test_misplaced_or_bad_steps_are_refused_by_name(steps, fragments):
    with pytest.raises(FeynmlpError) as info:
        build_mlp(steps, "src")
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_reader_tables_name_registry_activations_only():
    from feynmlp import keras_reader, sklearn_reader

    known = set(BUILTIN_ACTIVATIONS) | set(RELU_LIKE)
    for table in (keras_reader.ACTIVATIONS, sklearn_reader.ACTIVATIONS):
        assert set(table.values()) <= known, table
