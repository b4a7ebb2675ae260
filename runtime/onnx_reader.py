"""Reading an MLP from an ONNX file: parsed with the `onnx` package, never executed.

In: the path of a .onnx file (untrusted). Out: the `MLP` its graph computes, or a
`ModelFileError` naming the path and, for an operation feynmlp does not read, the node's op
type and name.

The graph must be a chain on its one input, of shape (batch, n), to its one output:
- Gemm (transA = 0; alpha and beta folded into the weights), MatMul by a constant matrix
  (with the Add of the bias that follows it), as the linear layers;
- the elementwise activations of the registry: Tanh, Sigmoid, Softplus, Gelu (approximate
  "none"), Sin, Cos, Exp, Relu, LeakyRelu (alpha 0.01), Clip to [0, 6] (ReLU6) or [-1, 1]
  (Hardtanh); SiLU written as Sigmoid(x) * x; GELU written with Erf as
  0.5 * x * (1 + erf(x / sqrt(2))), the form exporters use before opset 20;
- Add, Sub, Mul, Div and Neg by constants, and the ai.onnx.ml Scaler, next to a linear layer
  (input and output scalers), folded into it (feynmlp.layer_chain);
- Identity, Dropout (inference), Cast between float and double (feynmlp computes in float64),
  Flatten(axis = 1), and Reshape to (batch, n) with n the current width.
Anything else is refused by op type and node name: LayerNormalization, Conv, control flow, a
graph that branches or has several outputs, operators of other domains.

The file is untrusted. Its bytes are parsed by protobuf (`ModelProto.FromString`), no
operator runs and onnxruntime is not used. Tensor data stored outside the file (external
data) is read only from regular files inside the model's own folder: a location that is
absolute, contains '..', or resolves (through symbolic links) outside the folder is refused,
and offset and length are checked against the file size and against the tensor's shape
before anything is read. The default-domain opset must be between MIN_OPSET and the newest
the installed onnx package knows.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .activation_names import LEAKY_SLOPE, PIECEWISE_LINEAR
from .errors import FeynmlpError, ModelFileError
from .layer_chain import Activation, Dense, Scale, build_mlp

__all__ = ["read_onnx", "MIN_OPSET", "MAX_FILE_BYTES"]

# Opset 11 (2019) is the first with Clip's bounds as inputs and Gemm's C optional, the forms
# read here; exporters of recent years write 13 to 22.
MIN_OPSET = 11
# protobuf cannot parse a message of 2 GiB or more; larger models keep their tensors outside.
MAX_FILE_BYTES = 2**31 - 1
# The largest tensor read (8 GiB of float64): a check against dims that claim absurd sizes.
MAX_TENSOR_BYTES = 2**33
_SQRT2 = math.sqrt(2.0)
# Exporters store constants such as sqrt(2) in float32: tolerance for recognising them.
_CONSTANT_RTOL = 1e-6


def _error(path: str, text: str) -> ModelFileError:
    return ModelFileError(f"{path}: {text}")


# ----------------------------------------------------------------------------------------
# Tensors, inside the file or beside it.
# ----------------------------------------------------------------------------------------

def _dtypes() -> dict[int, Any]:
    from onnx import TensorProto
    return {TensorProto.FLOAT: np.dtype("<f4"), TensorProto.DOUBLE: np.dtype("<f8"),
            TensorProto.FLOAT16: np.dtype("<f2"), TensorProto.INT64: np.dtype("<i8"),
            TensorProto.INT32: np.dtype("<i4")}


def _external_bytes(path: str, tensor: Any, nbytes: int) -> bytes:
    """The bytes of an external tensor, read only from a regular file inside the model's folder."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    name = tensor.name
    location = entries.get("location", "")
    parts = location.replace("\\", "/").split("/")
    if (not location or "\x00" in location or os.path.isabs(location) or location.startswith(("/", "\\"))
            or ".." in parts or ":" in location):
        raise _error(path, f"tensor {name!r} names its external data file {location!r}, which is not a "
                           "plain relative path inside the model's folder; refused (move the data file "
                           "beside the model and name it by its file name)")
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    target = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([folder, target]) != folder:
        raise _error(path, f"tensor {name!r}: its external data file {location!r} leads outside the "
                           f"model's folder (to {target}); refused")
    if not os.path.isfile(target):
        raise _error(path, f"tensor {name!r}: its external data file {location!r} is missing or not a "
                           "regular file")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else nbytes
    except ValueError:
        raise _error(path, f"tensor {name!r}: invalid external data offset or length "
                           f"({entries.get('offset')!r}, {entries.get('length')!r}); the file is damaged") from None
    if offset < 0 or length != nbytes:
        raise _error(path, f"tensor {name!r}: its external data has offset {offset} and length {length}, "
                           f"but its shape and type need {nbytes} bytes; the file is damaged")
    with open(target, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if offset + length > size:
            raise _error(path, f"tensor {name!r}: its external data runs to byte {offset + length}, past "
                               f"the end of {location!r} ({size} bytes); the data file is truncated")
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise _error(path, f"tensor {name!r}: read {len(data)} of {length} bytes from {location!r}")
    return data


def tensor_array(path: str, tensor: Any) -> np.ndarray:
    """A TensorProto as a NumPy array, its size checked before any data is read."""
    from onnx import TensorProto, numpy_helper

    dtype = _dtypes().get(tensor.data_type)
    if dtype is None:
        type_name = TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in \
            TensorProto.DataType.values() else str(tensor.data_type)
        raise _error(path, f"tensor {tensor.name!r} has type {type_name}; weights must be float, double "
                           "or float16 (and shapes int64): convert the model's weights to floating point")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise _error(path, f"tensor {tensor.name!r} has negative dimensions {dims}; the file is damaged")
    nbytes = math.prod(dims) * dtype.itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise _error(path, f"tensor {tensor.name!r} claims shape {dims} ({nbytes} bytes), more than "
                           f"{MAX_TENSOR_BYTES} bytes; refused")
    if tensor.HasField("segment"):
        raise _error(path, f"tensor {tensor.name!r} is segmented, which feynmlp does not read")
    if tensor.data_location == TensorProto.EXTERNAL:
        data = _external_bytes(path, tensor, nbytes)
        return np.frombuffer(data, dtype=dtype).reshape(dims).copy()
    if tensor.HasField("raw_data") and len(tensor.raw_data) != nbytes:
        raise _error(path, f"tensor {tensor.name!r} holds {len(tensor.raw_data)} bytes but its shape "
                           f"{dims} needs {nbytes}; the file is damaged")
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as exc:  # inconsistent typed fields
        raise _error(path, f"tensor {tensor.name!r} cannot be decoded ({type(exc).__name__}: {exc}); the "
                           "file is damaged") from None
    if array.shape != tuple(dims):
        raise _error(path, f"tensor {tensor.name!r} holds {array.size} values but its shape is {dims}; "
                           "the file is damaged")
    return array


# ----------------------------------------------------------------------------------------
# The graph.
# ----------------------------------------------------------------------------------------

class _Reader:
    def __init__(self, path: str, model: Any):
        self.path = path
        self.model = model
        self.graph = model.graph
        self.constants: dict[str, np.ndarray] = {}
        self.steps: list[Any] = []
        self.latest: str | None = None
        self.width: int | None = None
        self.done: set[int] = set()
        self.consumers: dict[str, list[int]] = {}
        for index, node in enumerate(self.graph.node):
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(index)

    def where(self, node: Any) -> str:
        return f"node {node.name or '(unnamed)'!r} (op {node.op_type})"

    def refuse(self, node: Any, why: str) -> ModelFileError:
        return _error(self.path, f"{self.where(node)} {why}")

    def attributes(self, node: Any) -> dict[str, Any]:
        from onnx import AttributeProto, helper
        values = {}
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                values[attribute.name] = tensor_array(self.path, attribute.t)
            elif attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                raise self.refuse(node, "has a subgraph; feynmlp reads straight-line graphs only")
            else:
                value = helper.get_attribute_value(attribute)
                values[attribute.name] = value.decode() if isinstance(value, bytes) else value
        return values

    def constant(self, node: Any, name: str) -> np.ndarray:
        if name not in self.constants:
            raise self.refuse(node, f"reads {name!r}, which is neither a constant nor the value of the "
                                    "chain of layers")
        return self.constants[name]

    def float_constant(self, node: Any, name: str, what: str) -> np.ndarray:
        value = self.constant(node, name)
        if value.dtype.kind != "f":
            raise self.refuse(node, f"has the {what} {name!r} of type {value.dtype}; weights must be "
                                    "floating point: convert the model's weights before exporting it")
        return value.astype(np.float64)

    # -- checks of the whole model ---------------------------------------------------------

    def check_model(self) -> None:
        import onnx
        newest = onnx.defs.onnx_opset_version()
        domains = {entry.domain or "ai.onnx": entry.version for entry in self.model.opset_import}
        version = domains.get("ai.onnx")
        if version is None or not MIN_OPSET <= version <= newest:
            raise _error(self.path, f"uses opset {version} of the default domain; feynmlp reads opsets "
                                    f"{MIN_OPSET} to {newest}: export the model again with a recent opset")
        for tensor in self.graph.initializer:
            self.constants[tensor.name] = tensor_array(self.path, tensor)
        inputs = [i for i in self.graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise _error(self.path, f"the graph has {len(inputs)} inputs ({names}); an MLP has one input, "
                                    "the (batch, n) tensor")
        if len(self.graph.output) != 1:
            names = ", ".join(repr(o.name) for o in self.graph.output)
            raise _error(self.path, f"the graph has {len(self.graph.output)} outputs ({names}); an MLP has "
                                    "one output (a classifier's label and probabilities: read the "
                                    "estimator with MLP.from_sklearn, or export the probability alone)")
        (graph_input,) = inputs
        shape = graph_input.type.tensor_type.shape
        if graph_input.type.tensor_type.HasField("shape"):
            dims = list(shape.dim)
            if len(dims) != 2:
                raise _error(self.path, f"the graph input {graph_input.name!r} has {len(dims)} dimensions; "
                                        "an MLP reads inputs of shape (batch, n)")
            if dims[1].HasField("dim_value"):
                self.width = int(dims[1].dim_value)
        self.latest = graph_input.name

    # -- the chain -------------------------------------------------------------------------

    def run(self) -> list[Any]:
        self.check_model()
        # Constants first, wherever they stand in the node order: the patterns below look
        # ahead at constants (sqrt 2, 1, 0.5) made by nodes after the one being read.
        for index, node in enumerate(self.graph.node):
            if (node.domain or "ai.onnx") == "ai.onnx" and all(
                    not name or name in self.constants for name in node.input):
                try:
                    self.fold_constants(node)
                except ModelFileError:
                    continue  # refused, with its name, when the main pass reaches it
                self.done.add(index)
        for index, node in enumerate(self.graph.node):
            if index in self.done:
                continue
            self.visit(index, node)
        (graph_output,) = self.graph.output
        if graph_output.name != self.latest:
            raise _error(self.path, f"the graph output {graph_output.name!r} is not the value computed by "
                                    "the chain of layers from the input")
        return self.steps

    def visit(self, index: int, node: Any) -> None:
        domain = node.domain or "ai.onnx"
        if domain not in ("ai.onnx", "ai.onnx.ml"):
            raise self.refuse(node, f"is an operator of the domain {domain!r}; feynmlp reads the standard "
                                    "operators only")
        chain = [name for name in node.input if name and name not in self.constants]
        if not chain:
            self.fold_constants(node)
            return
        for name in chain:
            if name != self.latest:
                raise self.refuse(node, f"reads {name!r}, an earlier value computed from the input, not "
                                        f"the latest one ({self.latest!r}); the graph branches (a residual "
                                        "connection?), which an MLP cannot express")
        if len(chain) > 1 and node.op_type != "Mul":
            raise self.refuse(node, "combines the value of the chain with itself; an MLP is a chain of "
                                    "layers")
        if node.op_type in ("Sigmoid", "Div", "Mul") and self.match_activation_pattern(index, node):
            return
        if len(chain) > 1:
            raise self.refuse(node, "multiplies the value of the chain with itself, which is not a layer "
                                    "of an MLP")
        users = [i for i in self.consumers.get(self.latest, []) if i not in self.done and i != index]
        if users:
            other = self.graph.node[users[0]]
            raise self.refuse(other, f"also reads {self.latest!r}, which {self.where(node)} reads; the graph "
                                     "branches (a residual connection?), which an MLP cannot express")
        for extra in list(node.output)[1:]:
            if extra and self.consumers.get(extra):
                raise self.refuse(node, f"has its second output {extra!r} read by the graph; feynmlp reads "
                                        "layers with one output")
        self.layer(node)
        self.done.add(index)
        self.latest = node.output[0]

    def fold_constants(self, node: Any) -> None:
        """A node of constants only, evaluated in float64 (Constant, arithmetic, Cast, Identity)."""
        op = node.op_type
        attributes = self.attributes(node)
        if op == "Constant":
            for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
                if key in attributes:
                    self.constants[node.output[0]] = np.asarray(attributes[key])
                    return
            raise self.refuse(node, f"has {sorted(attributes)}; feynmlp reads Constant nodes with a "
                                    "numeric value")
        values = [self.constant(node, name) for name in node.input if name]
        arithmetic = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
        with np.errstate(all="ignore"):
            if op in arithmetic and len(values) == 2:
                result = arithmetic[op](values[0].astype(np.float64), values[1].astype(np.float64))
            elif op == "Neg" and len(values) == 1:
                result = -values[0].astype(np.float64)
            elif op in ("Identity", "Cast") and len(values) == 1:
                result = values[0]
            elif op == "Sqrt" and len(values) == 1:
                result = np.sqrt(values[0].astype(np.float64))
            else:
                raise self.refuse(node, "computes with constants only, by an operation feynmlp does not "
                                        "evaluate")
        self.constants[node.output[0]] = np.asarray(result)

    # -- patterns: SiLU and the Erf form of GELU -------------------------------------------

    def single_user(self, name: str) -> Any:
        users = self.consumers.get(name, [])
        return (users[0], self.graph.node[users[0]]) if len(users) == 1 else (None, None)

    def is_constant(self, name: str, value: float) -> bool:
        array = self.constants.get(name)
        return (array is not None and array.size == 1 and array.dtype.kind == "f"
                and abs(float(array.reshape(())) - value) <= _CONSTANT_RTOL * abs(value))

    def other_input(self, node: Any, name: str) -> str | None:
        inputs = list(node.input)
        if len(inputs) != 2 or name not in inputs:
            return None
        return inputs[1] if inputs[0] == name else inputs[0]

    def match_activation_pattern(self, index: int, node: Any) -> bool:
        """SiLU = x * sigmoid(x) and GELU = 0.5 * x * (1 + erf(x / sqrt 2)): their nodes are
        consumed together and stand for one activation."""
        x = self.latest
        users = [i for i in self.consumers.get(x, []) if i not in self.done]
        if len(users) != 2:
            return False
        if node.op_type == "Sigmoid":
            s = node.output[0]
            j, mul = self.single_user(s)
            if mul is not None and mul.op_type == "Mul" and j in users and self.other_input(mul, s) == x:
                self.steps.append(Activation("silu", f"{self.where(node)} with {self.where(mul)}"))
                self.finish([index, j], mul.output[0])
                return True
            return False
        # GELU: x / sqrt2 (or x * (1/sqrt2)) -> Erf -> + 1 -> * x -> * 0.5 (the halving may come
        # first, as (x * 0.5) * (1 + erf)). Either of the two readers of x may come first.
        for first, second in ((users[0], users[1]), (users[1], users[0])):
            if index in (first, second):
                match = self.match_gelu(x, first, second)
                if match is not None:
                    nodes, out = match
                    self.steps.append(Activation(
                        "gelu", f"{self.where(self.graph.node[first])} to {self.where(self.graph.node[nodes[-1]])}"))
                    self.finish(nodes, out)
                    return True
        return False

    def match_gelu(self, x: str, j_scale: int, j_other: int) -> tuple[list[int], str] | None:
        node, other = self.graph.node[j_scale], self.graph.node[j_other]
        scale_ok = (node.op_type == "Div" and self.is_constant(self.other_input(node, x) or "", _SQRT2)) or (
            node.op_type == "Mul" and self.is_constant(self.other_input(node, x) or "", 1 / _SQRT2))
        if not scale_ok:
            return None
        j_erf, erf = self.single_user(node.output[0])
        if erf is None or erf.op_type != "Erf":
            return None
        j_add, add = self.single_user(erf.output[0])
        if add is None or add.op_type != "Add" or not self.is_constant(
                self.other_input(add, erf.output[0]) or "", 1.0):
            return None
        if other.op_type != "Mul":
            return None
        partner = self.other_input(other, x)
        if partner == add.output[0]:
            # x * (1 + erf), then * 0.5
            j_half, half = self.single_user(other.output[0])
            if half is None or half.op_type != "Mul" or not self.is_constant(
                    self.other_input(half, other.output[0]) or "", 0.5):
                return None
            return [j_scale, j_erf, j_add, j_other, j_half], half.output[0]
        if partner is not None and self.is_constant(partner, 0.5):
            # (x * 0.5) * (1 + erf)
            j_last, last = self.single_user(other.output[0])
            if last is None or last.op_type != "Mul" or self.other_input(last, other.output[0]) != add.output[0]:
                return None
            if self.single_user(add.output[0])[0] != j_last:
                return None
            return [j_scale, j_erf, j_add, j_other, j_last], last.output[0]
        return None

    def finish(self, nodes: list[int], output: str) -> None:
        self.done.update(nodes)
        self.latest = output

    # -- one layer -------------------------------------------------------------------------

    def layer(self, node: Any) -> None:
        op = node.op_type
        where = self.where(node)
        attributes = self.attributes(node)
        inputs = list(node.input)
        if node.domain == "ai.onnx.ml":
            if op != "Scaler":
                raise self.refuse(node, "is not supported; of the ai.onnx.ml operators feynmlp reads "
                                        "Scaler only")
            offset = np.asarray(attributes.get("offset", [0.0]), dtype=np.float64)
            scale = np.asarray(attributes.get("scale", [1.0]), dtype=np.float64)
            self.steps.append(Scale(scale, -offset * scale, where))
            return
        if op == "Gemm":
            if inputs[0] != self.latest or attributes.get("transA", 0):
                raise self.refuse(node, "is a Gemm whose first operand is not the layer input (or is "
                                        "transposed); feynmlp reads Gemm(x, W, b)")
            weight = self.float_constant(node, inputs[1], "weight")
            if weight.ndim != 2:
                raise self.refuse(node, f"has a weight of shape {weight.shape}; Gemm needs a matrix")
            if not attributes.get("transB", 0):
                weight = weight.T
            weight = float(attributes.get("alpha", 1.0)) * weight
            bias = None
            if len(inputs) > 2 and inputs[2]:
                c = self.float_constant(node, inputs[2], "bias")
                if c.size == 1:
                    c = np.full(weight.shape[0], c.reshape(()))
                bias = float(attributes.get("beta", 1.0)) * c
            self.dense(node, weight, bias)
            return
        if op == "MatMul":
            if inputs[0] != self.latest:
                raise self.refuse(node, "multiplies a constant by the layer input from the left; feynmlp "
                                        "reads MatMul(x, W)")
            weight = self.float_constant(node, inputs[1], "weight")
            if weight.ndim != 2:
                raise self.refuse(node, f"has a weight of shape {weight.shape}; MatMul needs a matrix")
            self.dense(node, weight.T, None)
            return
        if op in ("Add", "Sub", "Mul", "Div"):
            input_first = inputs[0] == self.latest
            other = self.constant(node, inputs[1] if input_first else inputs[0])
            if other.dtype.kind != "f":
                raise self.refuse(node, f"has a constant of type {other.dtype}; constants must be float")
            other = other.astype(np.float64)
            if op == "Add":
                self.steps.append(Scale(1.0, other, where))
            elif op == "Sub":
                self.steps.append(Scale(1.0, -other, where) if input_first else Scale(-1.0, other, where))
            elif op == "Mul":
                self.steps.append(Scale(other, 0.0, where))
            elif input_first:
                if not np.all(other != 0):
                    raise self.refuse(node, "divides by a constant with a zero entry")
                self.steps.append(Scale(1.0 / other, 0.0, where))
            else:
                raise self.refuse(node, "divides a constant by the layer input, which is not an affine map")
            return
        if op == "Neg":
            self.steps.append(Scale(-1.0, 0.0, where))
            return
        simple = {"Tanh": "tanh", "Sigmoid": "sigmoid", "Softplus": "softplus", "Sin": "sin", "Cos": "cos",
                  "Exp": "exp", "Relu": "relu"}
        if op in simple:
            self.steps.append(Activation(simple[op], where))
            return
        if op == "Gelu":
            if attributes.get("approximate", "none") != "none":
                raise self.refuse(node, f"has approximate={attributes['approximate']!r}; feynmlp reads the "
                                        "exact GELU (approximate='none') only")
            self.steps.append(Activation("gelu", where))
            return
        if op == "LeakyRelu":
            alpha = float(attributes.get("alpha", 0.01))
            if np.float32(alpha) != np.float32(LEAKY_SLOPE):
                raise self.refuse(node, f"has alpha={alpha:g}; feynmlp reads the slope {LEAKY_SLOPE} only")
            self.steps.append(Activation("leaky_relu", where))
            return
        if op == "Clip":
            bounds = [float(self.constant(node, name).reshape(())) if name else None for name in inputs[1:3]]
            bounds += [None] * (2 - len(bounds))
            for name, shape in PIECEWISE_LINEAR.items():
                upper = None if shape.upper == math.inf else shape.upper
                if not shape.slope and bounds == [shape.lower, upper]:
                    self.steps.append(Activation(name, where))
                    return
            raise self.refuse(node, f"clips to {bounds}; feynmlp reads Clip to [0, 6] (ReLU6), [-1, 1] "
                                    "(Hardtanh) or [0, none] (ReLU)")
        if op == "Identity":
            return
        if op == "Dropout":
            if len([i for i in inputs if i]) > 2 or (len(inputs) > 2 and inputs[2] and bool(
                    self.constant(node, inputs[2]).any())):
                raise self.refuse(node, "is a Dropout in training mode; export the model in evaluation mode")
            return
        if op == "Cast":
            from onnx import TensorProto
            if attributes.get("to") not in (TensorProto.FLOAT, TensorProto.DOUBLE):
                raise self.refuse(node, "casts to a type other than float or double")
            return
        if op == "Flatten":
            if attributes.get("axis", 1) != 1:
                raise self.refuse(node, f"has axis={attributes.get('axis')}; only Flatten(axis=1) keeps a "
                                        "(batch, n) input as it is")
            return
        if op == "Reshape":
            shape = [int(v) for v in self.constant(node, inputs[1]).reshape(-1)]
            width_ok = len(shape) == 2 and shape[0] in (0, -1) and (
                shape[1] == self.width or (shape[1] == -1 and shape[0] == 0))
            if not width_ok or attributes.get("allowzero", 0):
                raise self.refuse(node, f"reshapes to {shape}; feynmlp reads a Reshape that keeps (batch, "
                                        f"{self.width if self.width is not None else 'n'}) as it is")
            return
        raise self.refuse(node, "is not supported; feynmlp reads Gemm, MatMul, Add/Sub/Mul/Div/Neg by "
                                "constants, the registry's activations, Identity, Dropout, Cast, Flatten "
                                "and Reshape")

    def dense(self, node: Any, weight: np.ndarray, bias: Any) -> None:
        self.steps.append(Dense(weight, bias, self.where(node)))
        self.width = int(weight.shape[0]) if weight.ndim == 2 else None


def read_onnx(path: str | os.PathLike) -> Any:
    """The MLP stored in the ONNX file at `path` (see the module docstring).

    Raises:
        ModelFileError: a missing, damaged or oversized file, an unsafe external data path,
            an operation that is not part of an MLP (named by op type and node name), shapes
            that do not chain, non-float or non-finite weights.
    """
    path = os.fspath(path)
    try:
        import onnx
    except ImportError:
        raise ModelFileError(f"{path}: reading ONNX files needs the onnx package: pip install "
                             "'feynmlp[onnx]'") from None
    if not os.path.exists(path):
        raise _error(path, "no such file; check the path")
    if not os.path.isfile(path):
        raise _error(path, "is not a regular file; give the path of a model file")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise _error(path, f"is {size} bytes, more than an ONNX file can hold ({MAX_FILE_BYTES}); refused")
    with open(path, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf's DecodeError and the like
        raise _error(path, f"cannot be parsed as an ONNX model ({type(exc).__name__}: {exc}); the file is "
                           "damaged, truncated or of another kind") from None
    if not model.HasField("graph") or not model.graph.node:
        raise _error(path, "holds no graph; the file is damaged or of another kind")
    steps = _Reader(path, model).run()
    try:
        mlp = build_mlp(steps, path)
    except ModelFileError:
        raise
    except FeynmlpError as exc:
        raise _error(path, str(exc)) from None
    mlp.record = {"source": "onnx", "file": os.path.basename(path)}
    return mlp
