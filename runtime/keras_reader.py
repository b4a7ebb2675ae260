"""Reading a Keras 3 `.keras` file as an `MLP`, without Keras and without running its code.

In: the path of a .keras file (untrusted): a zip archive holding `config.json` (the model's
architecture as JSON) and `model.weights.h5` (the weights, HDF5). Out: the `MLP`, or a
`ModelFileError` naming the path and the layer.

Read: a `Sequential` model of `InputLayer`, `Dense` layers with a known activation (by
name: linear, tanh, sigmoid, softplus, silu/swish, gelu, exponential, and relu or relu6
for first order only), `Activation` layers of those names, `Dropout` (inference) and
`Flatten` of a (batch, n) input. Refused by class name: `Lambda` layers (they hold Python
code), any layer or activation that is a custom or registered object (a dict in the config
instead of a name), every other layer, and Functional or subclassed models.

Nothing is deserialised as Python: the config is parsed with `json`, the weights with
`h5py` (the HDF5 C library), and Keras itself is never imported, so a Lambda's bytecode or
a custom class in the file cannot run. Zip members are checked by their declared sizes
before they are read (zipfile stops at the declared size, and checks the CRC), and each
weight's dtype and shape are checked against the config before its data is read. HDF5 is a
binary format parsed by C code; as for any such parser, read files from sources you trust.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

from .errors import FeynmlpError, ModelFileError
from .layer_chain import Activation, Dense, build_mlp

__all__ = ["read_keras", "ACTIVATIONS"]

# Keras activation names -> the registry's. Keras's leaky_relu defaults to a slope of 0.2,
# not the registry's 0.01, and is left out; its "gelu" is the exact one (approximate=False).
ACTIVATIONS = {"linear": "identity", "tanh": "tanh", "sigmoid": "sigmoid", "softplus": "softplus",
               "silu": "silu", "swish": "silu", "gelu": "gelu", "exponential": "exp", "relu": "relu",
               "relu6": "relu6"}
MAX_CONFIG_BYTES = 16 * 2**20
MAX_WEIGHTS_BYTES = 2**31
_IGNORED = ("InputLayer", "Dropout", "Flatten")


def _error(path: str, text: str) -> ModelFileError:
    return ModelFileError(f"{path}: {text}")


def _member(path: str, archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _error(path, f"has no {name}; this is not a Keras 3 .keras file (an older .h5 or "
                           "SavedModel? save it again with Keras 3: model.save('model.keras'))") from None
    if info.file_size > limit:
        raise _error(path, f"its {name} declares {info.file_size} bytes, more than {limit}; refused")
    return archive.read(info)


def _activation(path: str, value: Any, where: str) -> str:
    if isinstance(value, str) and value in ACTIVATIONS:
        return ACTIVATIONS[value]
    if isinstance(value, dict):
        raise _error(path, f"{where}: its activation is a serialised object "
                           f"({value.get('class_name', '?')!r}), a custom or configured activation feynmlp "
                           "does not read; use a built-in activation by name")
    raise _error(path, f"{where}: activation {value!r} is not supported; feynmlp reads "
                       f"{', '.join(ACTIVATIONS)}")


def _layer_groups(handle: Any) -> dict[str, Any]:
    """The weight groups under layers/, by the layer name Keras stores in each `vars` group."""
    groups = {}
    layers = handle.get("layers")
    if layers is None:
        return groups
    for key in layers:
        group = layers[key]
        variables = group.get("vars") if hasattr(group, "get") else None
        if variables is None:
            continue
        name = variables.attrs.get("name", key)
        groups[name.decode() if isinstance(name, bytes) else str(name)] = variables
        groups.setdefault(f"#path:{key}", variables)
    return groups


def _dataset(path: str, variables: Any, index: int, shape: tuple[int, ...], where: str, what: str) -> Any:
    import numpy as np

    dataset = variables.get(str(index)) if variables is not None else None
    if dataset is None or not hasattr(dataset, "shape"):
        raise _error(path, f"{where}: its {what} is missing from model.weights.h5; the file is damaged")
    if dataset.dtype.kind != "f":
        raise _error(path, f"{where}: its {what} has dtype {dataset.dtype}; weights must be floating point")
    if tuple(dataset.shape) != shape:
        raise _error(path, f"{where}: its {what} has shape {tuple(dataset.shape)} but the config needs {shape}; "
                           "the shapes do not chain or the file is damaged")
    return np.array(dataset[()], dtype=np.float64)


def _steps(path: str, config: Any, handle: Any) -> list[Any]:
    if not isinstance(config, dict) or config.get("class_name") != "Sequential":
        found = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise _error(path, f"holds a {found!r} model; feynmlp reads Keras Sequential models only (a Functional "
                           "or subclassed model's wiring is code or a graph it does not read)")
    layers = (config.get("config") or {}).get("layers")
    if not isinstance(layers, list):
        raise _error(path, "its config lists no layers; the file is damaged")
    groups = _layer_groups(handle)
    counters: dict[str, int] = {}
    width = None
    steps: list[Any] = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise _error(path, f"layer {index} of the config is malformed; the file is damaged")
        kind = layer.get("class_name")
        settings = layer["config"]
        name = settings.get("name", f"#{index}")
        where = f"layer {index} {name!r} ({kind})"
        module = str(layer.get("module") or "")
        if layer.get("registered_name") not in (None, kind) or not module.startswith("keras"):
            raise _error(path, f"{where} is a custom object (module {module!r}, registered as "
                               f"{layer.get('registered_name')!r}); feynmlp reads Keras's own layers only")
        if kind == "Lambda":
            raise _error(path, f"{where} holds Python code, which feynmlp never loads; write it as built-in "
                               "layers")
        # The weights group of this layer: by its name, else by Keras's class-based path.
        snake = "".join("_" + c.lower() if c.isupper() else c for c in str(kind)).lstrip("_")
        count = counters.get(snake)
        counters[snake] = 0 if count is None else count + 1
        key = snake if count is None else f"{snake}_{count + 1}"
        variables = groups.get(name, groups.get(f"#path:{key}"))
        if kind == "InputLayer":
            shape = settings.get("batch_shape") or settings.get("batch_input_shape")
            if isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int):
                width = shape[1]
            elif shape is not None:
                raise _error(path, f"{where} has the input shape {shape}; feynmlp reads inputs of shape (batch, n)")
            continue
        if kind in _IGNORED:
            continue
        if kind == "Activation":
            steps.append(Activation(_activation(path, settings.get("activation"), where), where))
            continue
        if kind != "Dense":
            raise _error(path, f"{where} is not supported; feynmlp reads InputLayer, Dense, Activation, "
                               "Dropout and Flatten")
        units = settings.get("units")
        if not isinstance(units, int) or units < 1:
            raise _error(path, f"{where}: invalid units {units!r}; the file is damaged")
        n_in = width
        if n_in is None:
            kernel = variables.get("0") if variables is not None else None
            n_in = int(kernel.shape[0]) if kernel is not None and len(kernel.shape) == 2 else None
        if n_in is None:
            raise _error(path, f"{where}: its input width is unknown; the file is damaged")
        activation = _activation(path, settings.get("activation", "linear"), where)
        kernel = _dataset(path, variables, 0, (n_in, units), where, "kernel")
        bias = _dataset(path, variables, 1, (units,), where, "bias") if settings.get("use_bias", True) else None
        steps.append(Dense(kernel.T, bias, where))
        if activation != "identity":
            steps.append(Activation(activation, where))
        width = units
    return steps


def read_keras(path: str | os.PathLike) -> Any:
    """The MLP stored in a Keras 3 .keras file (see the module docstring).

    Raises:
        ModelFileError: a missing or damaged file, a model or layer that is not read (named),
            weights whose dtype or shape disagree with the config, non-finite weights.
    """
    path = os.fspath(path)
    try:
        import h5py
    except ImportError:
        raise ModelFileError(f"{path}: reading .keras files needs h5py: pip install 'feynmlp[keras]'") from None
    if not os.path.exists(path):
        raise _error(path, "no such file; check the path")
    if not os.path.isfile(path):
        raise _error(path, "is not a regular file; give the path of a model file")
    try:
        with zipfile.ZipFile(path) as archive:
            config_bytes = _member(path, archive, "config.json", MAX_CONFIG_BYTES)
            weights_bytes = _member(path, archive, "model.weights.h5", MAX_WEIGHTS_BYTES)
    except ModelFileError:
        raise
    except Exception as exc:  # not a zip, truncated, CRC mismatch
        raise _error(path, f"cannot be read as a .keras (zip) archive ({type(exc).__name__}: {exc}); the file "
                           "is damaged or of another kind") from None
    try:
        config = json.loads(config_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _error(path, f"its config.json is not valid JSON ({exc}); the file is damaged") from None
    try:
        with h5py.File(io.BytesIO(weights_bytes), "r") as handle:
            steps = _steps(path, config, handle)
    except ModelFileError:
        raise
    except Exception as exc:  # HDF5 errors on damaged data
        raise _error(path, f"its model.weights.h5 cannot be read ({type(exc).__name__}: {exc}); the file is "
                           "damaged") from None
    try:
        mlp = build_mlp(steps, path)
    except FeynmlpError as exc:
        raise _error(path, str(exc)) from None
    mlp.record = {"source": "keras", "file": os.path.basename(path)}
    return mlp
