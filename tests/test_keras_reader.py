"""feynmlp.load of Keras 3 .keras files (feynmlp.keras_reader): JSON and HDF5 only, no Keras.

A file saved by Keras itself (in a subprocess with the JAX backend, float64) against the
model's own outputs (1e-12); hand-written archives for each refusal: Lambda layers, custom
objects, Functional models, damaged files, weights that disagree with the config.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import feynmlp  # noqa: E402
from feynmlp.errors import ModelFileError  # noqa: E402

RNG = np.random.default_rng(21)


def test_file_saved_by_keras_matches_the_model(tmp_path):
    import importlib.util
    if importlib.util.find_spec("keras") is None:  # imported in the subprocess, with its backend set
        pytest.skip("keras is not installed")
    script = textwrap.dedent("""
        import sys, numpy as np, keras
        folder = sys.argv[1]
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((3,), dtype="float64"),
            keras.layers.Dense(5, activation="silu", dtype="float64"),
            keras.layers.Dropout(0.2, dtype="float64"),
            keras.layers.Dense(4, dtype="float64", name="Hidden Two"),
            keras.layers.Activation("gelu", dtype="float64"),
            keras.layers.Dense(2, activation="sigmoid", dtype="float64"),
        ])
        x = np.random.default_rng(1).normal(size=(6, 3))
        np.save(folder + "/x.npy", x)
        np.save(folder + "/y.npy", keras.ops.convert_to_numpy(model(x)))
        model.save(folder + "/model.keras")
    """)
    # float64 throughout: JAX with x64. (Not tanh: Keras 3.15's keras.ops.tanh evaluates a
    # float64 tensor in float32, dtypes.result_type("float64", float) being float32.)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    mlp = feynmlp.load(tmp_path / "model.keras")
    assert mlp.hidden_activations == ["silu", "gelu"] and mlp.output_activation == "sigmoid"
    x, y = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(mlp(x), y, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Hand-written archives.
# ----------------------------------------------------------------------------------------

def _dense(name, units, activation="linear", **extra):
    return {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
            "config": {"name": name, "units": units, "activation": activation, "use_bias": True, **extra}}


def _config(layers, kind="Sequential"):
    head = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
            "config": {"name": "input_layer", "batch_shape": [None, 3]}}
    return {"module": "keras", "class_name": kind, "config": {"name": "m", "layers": [head] + layers}}


def _weights(arrays):
    """model.weights.h5 bytes: layers/<name>/vars/<i>, as Keras writes them."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        for name, values in arrays.items():
            group = handle.create_group(f"layers/{name}/vars")
            group.attrs["name"] = name
            for index, value in enumerate(values):
                group.create_dataset(str(index), data=value)
    return buffer.getvalue()


def _archive(path, config, weights, config_text=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3"}))
        archive.writestr("config.json", config_text if config_text is not None else json.dumps(config))
        archive.writestr("model.weights.h5", weights)
    return str(path)


W1, B1 = RNG.normal(size=(3, 4)), RNG.normal(size=4)  # Keras kernels are (in, out)
W2, B2 = RNG.normal(size=(4, 1)), RNG.normal(size=1)
GOOD_WEIGHTS = {"d1": [W1, B1], "d2": [W2, B2]}


def test_hand_written_archive_is_read_with_the_kernels_transposed(tmp_path):
    path = _archive(tmp_path / "m.keras", _config([_dense("d1", 4, "swish"), _dense("d2", 1)]), _weights(GOOD_WEIGHTS))
    mlp = feynmlp.load(path)
    x = RNG.normal(size=(5, 3))
    z = x @ W1 + B1
    np.testing.assert_allclose(mlp(x), (z / (1 + np.exp(-z))) @ W2 + B2, rtol=1e-12, atol=1e-12)


def _refused(tmp_path, config, weights, *fragments, config_text=None):
    path = _archive(tmp_path / "m.keras", config, weights, config_text)
    with pytest.raises(ModelFileError) as info:
        feynmlp.load(path)
    message = str(info.value)
    assert "\n" not in message and path in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


LAMBDA = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
          "config": {"name": "code", "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAAA"}}}}
CUSTOM = {"module": "my_package.layers", "class_name": "MyDense", "registered_name": "Custom>MyDense",
          "config": {"name": "mine", "units": 4}}


@pytest.mark.parametrize("layers, weights, fragments", [
    ([_dense("d1", 4, "tanh"), LAMBDA, _dense("d2", 1)], GOOD_WEIGHTS, ["'code' (Lambda)", "Python code"]),
    ([CUSTOM, _dense("d2", 1)], GOOD_WEIGHTS, ["'mine' (MyDense)", "custom object"]),
    ([_dense("d1", 4, {"module": "my", "class_name": "Mish", "config": {}}), _dense("d2", 1)], GOOD_WEIGHTS,
     ["'d1' (Dense)", "'Mish'", "serialised object"]),
    ([_dense("d1", 4, "leaky_relu"), _dense("d2", 1)], GOOD_WEIGHTS, ["'d1'", "'leaky_relu'"]),
    ([_dense("d1", 4, "tanh"), {"module": "keras.layers", "class_name": "BatchNormalization",
                                "registered_name": None, "config": {"name": "bn"}}, _dense("d2", 1)],
     GOOD_WEIGHTS, ["'bn' (BatchNormalization)", "not supported"]),
    ([_dense("d1", 4, "tanh"), _dense("d2", 1)], {"d1": [W1, B1], "d2": [np.ones((5, 1)), B2]},
     ["'d2' (Dense)", "shape (5, 1)", "(4, 1)"]),
    ([_dense("d1", 4, "tanh"), _dense("d2", 1)], {"d1": [W1.astype(np.int64), B1], "d2": [W2, B2]},
     ["'d1' (Dense)", "int64", "floating point"]),
    ([_dense("d1", 4, "tanh"), _dense("d2", 1)], {"d1": [W1, np.full(4, np.nan)], "d2": [W2, B2]},
     ["'d1' (Dense)", "non-finite"]),
    ([_dense("d1", 4, "tanh"), _dense("d2", 1)], {"d1": [W1, B1]}, ["'d2' (Dense)", "missing"]),
])
def test_refusals_name_the_layer(tmp_path, layers, weights, fragments):
    _refused(tmp_path, _config(layers), _weights(weights), *fragments)


def test_model_level_refusals(tmp_path):
    weights = _weights(GOOD_WEIGHTS)
    _refused(tmp_path, _config([_dense("d1", 4), _dense("d2", 1)], kind="Functional"), weights,
             "'Functional'", "Sequential models only")
    _refused(tmp_path, None, weights, "not valid JSON", config_text="{not json")
    path = tmp_path / "noise.keras"
    path.write_bytes(os.urandom(200))
    with pytest.raises(ModelFileError, match="zip"):
        feynmlp.load(path)
    _refused(tmp_path, _config([_dense("d1", 4), _dense("d2", 1)]), b"not hdf5 at all", "model.weights.h5",
             "damaged")
