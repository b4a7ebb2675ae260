"""Model files: an MLP's arrays and architecture on disk, written atomically and read without pickle.

(`load` also dispatches a foreign model file by its suffix, .onnx or .keras, to its reader module.)

In: an `MLP` and a path ending in .safetensors (preferred) or .npz, plus an optional free-form
`record` dict (training hyper-parameters, provenance). Out: the file; and back, `load(path)`
gives the MLP (with `.record` set) or a `ModelFileError` that names the path, what is wrong and
what to do.

Layout (format "feynmlp-mlp", version 1). Tensors "layers.<l>.weight" (n_{l+1}, n_l) and
"layers.<l>.bias" (n_{l+1},), l = 0 .. L-1, float64. Beside them one JSON document:

    {"format": "feynmlp-mlp", "format_version": 1,
     "layer_sizes": [n_0, ..., n_L],
     "activation": <the `activation` argument, as a list if it was one>,
     "hidden_activations": [<one per hidden layer>],
     "output_activation": null or a name,
     "tensors": {"layers.0.weight": {"shape": [...], "sha256": "<hex>"}, ...},
     "record": {...}}

An activation is a canonical built-in name, or for a custom one {"expression": "x*tanh(x)",
"variable": "x"}, read back by the whitelist parser `feynmlp.codegen.safe_expression` (never
by eval or sympify). The sha256 is over each tensor's little-endian float64 bytes: safetensors
has no checksum of its own, so a flipped bit in the data would otherwise load silently.
In a .safetensors file the document is the metadata entry "feynmlp"; in a .npz file it is a
uint8 array of UTF-8 JSON under the reserved key "__feynmlp_metadata__".

Reading never unpickles (np.load(..., allow_pickle=False), safetensors.safe_open), checks
sizes against the document before loading arrays, accepts float64, float32 and float16
arrays (widened to float64) and refuses every other dtype. Writing goes to a temporary file
in the target folder that replaces the target with os.replace only once complete; a failed
write leaves no file behind. A symbolic link is written through to the file it leads to, a
FIFO or a character device in place (feynmlp.files.atomic_writer). Writing is deterministic
(sorted JSON, fixed zip timestamps).
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Any

import numpy as np

from .activation_names import canonical_name
from .errors import FeynmlpError, ModelFileError
from .files import atomic_writer, output_target
from .mlp import MLP

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SUFFIXES", "save", "load", "read_metadata"]

FORMAT_NAME = "feynmlp-mlp"
FORMAT_VERSION = 1
SUFFIXES = (".safetensors", ".npz")
SAFETENSORS_METADATA_KEY = "feynmlp"
NPZ_METADATA_KEY = "__feynmlp_metadata__"
# A metadata document larger than this is not one feynmlp wrote (records are small).
MAX_METADATA_BYTES = 16 * 2**20
# Room for the .npy header of an array member of an npz archive.
_NPY_HEADER_ALLOWANCE = 65536
_FLOAT_DTYPES_SAFETENSORS = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
# Fixed zip timestamps: the same model gives the same bytes.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)

_BUILD_FROM_ARRAYS_HINT = (
    "to use arrays written by other programs, read them yourself (safetensors.numpy.load_file "
    "or np.load) and build feynmlp.MLP(weights, biases, activation=...), with weights[l] of "
    "shape (n_out, n_in)")


def _layer_tensor_names(layer: int) -> tuple[str, str]:
    """The names of layer `layer`'s weight and bias tensors in a model file; writing, the
    metadata, the shape check and reading all take them from here so that they cannot differ."""
    return f"layers.{layer}.weight", f"layers.{layer}.bias"


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f8").tobytes()).hexdigest()


def _suffix(path: str) -> str:
    lowered = path.lower()
    for suffix in SUFFIXES:
        if lowered.endswith(suffix):
            return suffix
    raise ModelFileError(
        f"{path}: unknown model file type; the name must end in .safetensors (preferred) or .npz")


# ----------------------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------------------

def _encode_activation(activation: Any) -> Any:
    if isinstance(activation, str):
        return canonical_name(activation)
    from feynmlp.codegen.safe_expression import activation_text
    text, variable = activation_text(activation)
    return {"expression": text, "variable": variable}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set, frozenset)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON serialisable")


def _document(mlp: MLP, record: dict) -> str:
    activation = mlp.activation
    if isinstance(activation, (list, tuple)):
        encoded_activation = [_encode_activation(a) for a in activation]
    else:
        encoded_activation = _encode_activation(activation)
    hidden = [_encode_activation(a) for a in mlp.hidden_activations]
    tensors = {}
    for layer, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
        weight_name, bias_name = _layer_tensor_names(layer)
        tensors[weight_name] = {"shape": list(w.shape), "sha256": _sha256(w)}
        tensors[bias_name] = {"shape": list(b.shape), "sha256": _sha256(b)}
    from . import __version__
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "written_by": f"feynmlp {__version__}",
        "layer_sizes": list(mlp.layer_sizes),
        "activation": encoded_activation,
        "hidden_activations": hidden,
        "output_activation": mlp.output_activation,
        "tensors": tensors,
        "record": record,
    }
    try:
        return json.dumps(document, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise FeynmlpError(
            f"the record cannot be stored as JSON ({exc}); keep it to strings, numbers, booleans, "
            "None, lists and dicts with string keys (store NaN or infinity as strings)") from exc


def _npz_bytes_writer(handle: Any, tensors: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(tensors):
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_STORED
            with archive.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, tensors[name], allow_pickle=False)


def save(mlp: MLP, path: str | os.PathLike, record: dict | None = None) -> None:
    """Write `mlp` to a .safetensors (preferred) or .npz file, atomically.

    Args:
        mlp: the network.
        path: the file; its suffix chooses the format. An existing file is replaced (through
            a symbolic link, its target); a FIFO or a character device is written in place.
        record: a free-form JSON-serialisable dict stored beside the arrays (training
            hyper-parameters, data set, seed, ...). None: `mlp.record`.

    Raises:
        ModelFileError: unknown suffix, missing folder, path is a folder, a socket or a block
            device, or the write failed (the target is then left as it was and no temporary
            file remains).
        FeynmlpError: the record is not JSON-serialisable, or `mlp` is not an MLP.
        UnsupportedActivationError: a custom activation that could not be read back.
    """
    if not isinstance(mlp, MLP):
        raise FeynmlpError(f"save expects a feynmlp.MLP, got a {type(mlp).__name__}; build one with "
                           "MLP(weights, biases, ...) or MLP.from_torch(module)")
    path = os.fspath(path)
    suffix = _suffix(path)
    if record is None:
        record = mlp.record
    if not isinstance(record, dict):
        raise FeynmlpError(f"record must be a dict, got the {type(record).__name__} {record!r}")
    document = _document(mlp, record)
    if os.path.isdir(path):
        raise ModelFileError(f"{path} is a folder; give a file name ending in {suffix}")
    try:
        target = output_target(path)
    except FeynmlpError as exc:
        raise ModelFileError(str(exc)) from None
    if target.kind == "file":
        # For a symbolic link, the folder of the file it leads to.
        folder = os.path.dirname(os.path.abspath(target.path))
        if not os.path.isdir(folder):
            raise ModelFileError(f"{path}: the folder {folder} does not exist; create it first")

    tensors = {}
    for layer, (w, b) in enumerate(zip(mlp.weights, mlp.biases)):
        weight_name, bias_name = _layer_tensor_names(layer)
        tensors[weight_name] = w
        tensors[bias_name] = b
    if suffix == ".safetensors":
        import safetensors.numpy
        payload = safetensors.numpy.save(tensors, metadata={SAFETENSORS_METADATA_KEY: document})

        def write(handle: Any) -> None:
            handle.write(payload)
    else:
        tensors[NPZ_METADATA_KEY] = np.frombuffer(document.encode("utf-8"), dtype=np.uint8)

        def write(handle: Any) -> None:
            _npz_bytes_writer(handle, tensors)
    try:
        with atomic_writer(path) as handle:
            write(handle)
    except OSError as exc:
        raise ModelFileError(f"{path}: could not write the model ({exc}); check the folder and "
                             "the free space") from exc


# ----------------------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------------------

def _parse_document(path: str, text: Any) -> dict:
    if text is None:
        raise ModelFileError(
            f"{path}: not a feynmlp model file: it has no feynmlp metadata (the architecture and "
            f"activations); {_BUILD_FROM_ARRAYS_HINT}")
    try:
        document = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: the feynmlp metadata is not valid JSON ({exc}); the file "
                             "is damaged: save the model again") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ModelFileError(
            f"{path}: the metadata names the format {found!r}, not {FORMAT_NAME!r}; this is not a "
            f"feynmlp model file; {_BUILD_FROM_ARRAYS_HINT}")
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: invalid format_version {version!r}; the file is damaged")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written with format version {version}, but this feynmlp reads up to version "
            f"{FORMAT_VERSION}; upgrade feynmlp")
    sizes = document.get("layer_sizes")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)):
        raise ModelFileError(f"{path}: invalid layer_sizes {sizes!r} in the metadata; expected a "
                             "list of at least two positive integers; the file is damaged")
    hidden = document.get("hidden_activations")
    if not isinstance(hidden, list) or len(hidden) != len(sizes) - 2:
        raise ModelFileError(
            f"{path}: the metadata lists hidden_activations {hidden!r} for layer sizes {sizes} "
            f"({len(sizes) - 2} hidden layers); the file is damaged")
    if "activation" not in document:
        raise ModelFileError(f"{path}: the metadata has no 'activation' entry; the file is damaged")
    output = document.get("output_activation")
    if output is not None and not isinstance(output, str):
        raise ModelFileError(f"{path}: invalid output_activation {output!r}; the file is damaged")
    record = document.setdefault("record", {})
    if not isinstance(record, dict):
        raise ModelFileError(f"{path}: the record is a {type(record).__name__}, not a dict")
    tensors = document.setdefault("tensors", {})
    if not isinstance(tensors, dict):
        raise ModelFileError(f"{path}: invalid 'tensors' entry in the metadata; the file is damaged")
    return document


def _expected_shapes(document: dict) -> dict[str, tuple[int, ...]]:
    sizes = document["layer_sizes"]
    shapes = {}
    for layer in range(len(sizes) - 1):
        weight_name, bias_name = _layer_tensor_names(layer)
        shapes[weight_name] = (sizes[layer + 1], sizes[layer])
        shapes[bias_name] = (sizes[layer + 1],)
    return shapes


def _check_names(path: str, found: set[str], expected: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - found)
    if missing:
        raise ModelFileError(
            f"{path}: tensor(s) {', '.join(missing)} are missing for the recorded layer sizes; "
            "the file is incomplete: save the model again")
    extra = sorted(found - set(expected))
    if extra:
        raise ModelFileError(
            f"{path}: unexpected tensor(s) {', '.join(extra[:10])} for the recorded layer sizes; "
            "the file is inconsistent: save the model again")


def _check_shape(path: str, name: str, shape: tuple[int, ...], expected: tuple[int, ...],
                 sizes: list[int]) -> None:
    if tuple(shape) != expected:
        raise ModelFileError(
            f"{path}: tensor {name} has shape {tuple(shape)} but the recorded layer sizes {sizes} "
            f"require {expected}; the file is inconsistent: save the model again")


def _read_safetensors(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors import safe_open

    arrays: dict[str, np.ndarray] = {}
    with safe_open(path, framework="numpy") as handle:
        metadata = handle.metadata() or {}
        document = _parse_document(path, metadata.get(SAFETENSORS_METADATA_KEY))
        expected = _expected_shapes(document)
        _check_names(path, set(handle.keys()), expected)
        for name in sorted(expected):
            piece = handle.get_slice(name)
            dtype = piece.get_dtype()
            if dtype not in _FLOAT_DTYPES_SAFETENSORS:
                raise ModelFileError(
                    f"{path}: tensor {name} has dtype {dtype}; model tensors must be float64 "
                    "(float32 and float16 are widened); convert the weights to floating point")
            _check_shape(path, name, tuple(piece.get_shape()), expected[name], document["layer_sizes"])
            arrays[name] = np.array(handle.get_tensor(name), dtype=np.float64, copy=True)
    return document, arrays


def _read_npz(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":
        raise ModelFileError(
            f"{path}: not an .npz (zip) archive (it starts with {magic!r}); the file is damaged or "
            "not a model file written by feynmlp")
    arrays: dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as archive:
        members = {info.filename: info for info in archive.zip.infolist()}

        def member_size(name: str) -> int:
            info = members.get(name + ".npy")
            return info.file_size if info is not None else 0

        if NPZ_METADATA_KEY not in archive.files:
            _parse_document(path, None)
        if member_size(NPZ_METADATA_KEY) > MAX_METADATA_BYTES + _NPY_HEADER_ALLOWANCE:
            raise ModelFileError(f"{path}: the metadata entry is larger than "
                                 f"{MAX_METADATA_BYTES} bytes; this is not a feynmlp model file")
        raw = archive[NPZ_METADATA_KEY]
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ModelFileError(
                f"{path}: the metadata entry {NPZ_METADATA_KEY} has dtype {raw.dtype} and shape "
                f"{raw.shape}, expected a 1-D uint8 array of UTF-8 JSON; the file is damaged")
        try:
            text = raw.tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelFileError(f"{path}: the metadata is not UTF-8 ({exc}); the file is damaged") from exc
        document = _parse_document(path, text)
        expected = _expected_shapes(document)
        _check_names(path, set(archive.files) - {NPZ_METADATA_KEY}, expected)
        for name in sorted(expected):
            # Refuse a member far larger than its recorded shape before decompressing it.
            limit = 8 * int(np.prod(expected[name])) + _NPY_HEADER_ALLOWANCE
            if member_size(name) > limit:
                raise ModelFileError(
                    f"{path}: tensor {name} holds {member_size(name)} bytes, more than its recorded "
                    f"shape {expected[name]} allows; the file is inconsistent")
            array = archive[name]  # raises ValueError for object arrays: nothing is unpickled
            if array.dtype.kind != "f" or array.dtype.itemsize not in (2, 4, 8):
                raise ModelFileError(
                    f"{path}: tensor {name} has dtype {array.dtype}; model tensors must be float64 "
                    "(float32 and float16 are widened); convert the weights to floating point")
            _check_shape(path, name, array.shape, expected[name], document["layer_sizes"])
            arrays[name] = np.array(array, dtype=np.float64, order="C", copy=True)
    return document, arrays


def _decode_activation(path: str, entry: Any) -> Any:
    if isinstance(entry, str):
        return entry
    if (isinstance(entry, dict) and isinstance(entry.get("expression"), str)
            and isinstance(entry.get("variable"), str)):
        from feynmlp.codegen.safe_expression import parse_activation
        expression, _ = parse_activation(entry["expression"], variable=entry["variable"])
        return expression
    raise ModelFileError(
        f"{path}: invalid activation entry {entry!r} in the metadata; expected a name or "
        "{'expression': ..., 'variable': ...}; the file is damaged")


def _build(path: str, document: dict, arrays: dict[str, np.ndarray]) -> MLP:
    for name, info in sorted(document["tensors"].items()):
        digest = info.get("sha256") if isinstance(info, dict) else None
        if digest is not None and name in arrays and _sha256(arrays[name]) != digest:
            raise ModelFileError(
                f"{path}: tensor {name} does not match its recorded checksum; the file is "
                "corrupted: restore it from a backup or save the model again")
    n_layers = len(document["layer_sizes"]) - 1
    names = [_layer_tensor_names(layer) for layer in range(n_layers)]
    weights = [arrays[weight_name] for weight_name, _ in names]
    biases = [arrays[bias_name] for _, bias_name in names]
    stored = document["activation"]
    if isinstance(stored, list):
        activation = [_decode_activation(path, a) for a in stored]
    else:
        activation = _decode_activation(path, stored)
    mlp = MLP(weights, biases, activation=activation, output_activation=document["output_activation"])
    recorded = [_decode_activation(path, a) for a in document["hidden_activations"]]
    recorded = [canonical_name(a) if isinstance(a, str) else a for a in recorded]
    if recorded != mlp.hidden_activations:
        raise ModelFileError(
            f"{path}: the metadata's hidden_activations {document['hidden_activations']} disagree "
            f"with its activation {stored!r}; the file is inconsistent: save the model again")
    mlp.record = document["record"]
    return mlp


def _read(path: str | os.PathLike) -> tuple[str, dict, dict[str, np.ndarray]]:
    path = os.fspath(path)
    suffix = _suffix(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such file; check the path")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path} is not a regular file; give the path of a model file")
    try:
        if suffix == ".safetensors":
            document, arrays = _read_safetensors(path)
        else:
            document, arrays = _read_npz(path)
    except ModelFileError:
        raise
    except Exception as exc:
        # Whatever the parsers raise on damaged input (zip, npy, safetensors header errors).
        raise ModelFileError(
            f"{path}: cannot be read as a {suffix} model file ({type(exc).__name__}: {exc}); the "
            "file is damaged, truncated or of another kind: save the model again") from exc
    return path, document, arrays


# Files written by other programs, read by their own module (imported only when used).
FOREIGN_SUFFIXES = {".onnx": ("feynmlp.onnx_reader", "read_onnx"),
                    ".keras": ("feynmlp.keras_reader", "read_keras")}


def _foreign_reader(path: str) -> Any:
    """The reader of a model file written by another program, chosen by suffix, or None."""
    import importlib

    lowered = path.lower()
    for suffix, (module, function) in FOREIGN_SUFFIXES.items():
        if lowered.endswith(suffix):
            return getattr(importlib.import_module(module), function)
    return None


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON document stored beside the arrays (architecture, activations, record).

    The arrays are read and checked too, so a damaged file raises here as in `load`.

    Raises:
        ModelFileError: as `load`.
    """
    _, document, _ = _read(path)
    return document


def load(path: str | os.PathLike) -> MLP:
    """Read an MLP written by `save` (or `MLP.save`).

    Args:
        path: a .safetensors or .npz file written by feynmlp, or a model file of another
            program read by its own reader: .onnx (feynmlp.onnx_reader; needs the [onnx] extra),
            .keras (feynmlp.keras_reader; needs the [keras] extra).

    Returns:
        The MLP, with `.record` holding the record stored with it.

    Raises:
        ModelFileError: unknown suffix, missing file, truncated or corrupted bytes, a file not
            written by feynmlp, tensors of a non-float dtype, tensors missing or with shapes
            that disagree with the recorded architecture, non-finite weights, or a custom
            activation the whitelist parser refuses. The message names the path.
    """
    reader = _foreign_reader(os.fspath(path))
    if reader is not None:
        return reader(path)
    path, document, arrays = _read(path)
    try:
        return _build(path, document, arrays)
    except ModelFileError:
        raise
    except FeynmlpError as exc:
        raise ModelFileError(f"{path}: the stored model is invalid: {exc}") from exc
    except Exception as exc:
        raise ModelFileError(
            f"{path}: the stored model is invalid ({type(exc).__name__}: {exc}); the file is "
            "damaged: save the model again") from exc
