"""Reading a torch module whose own `forward` is an MLP, through torch.fx.

In: an `nn.Module` (the user's own code, so tracing it runs nothing the user did not write).
Out: the `MLP` it computes, or a `FeynmlpError` naming the graph node and its source line.

torch.fx traces `forward` symbolically into a graph of nodes. The graph must be a chain on the
one input, each node consuming the value of the one before it:
- Linear layers: `nn.Linear` modules or `F.linear(x, weight, bias)` with constant tensors;
- activations: the registry's modules (feynmlp.activation_names.TORCH_MODULES, with the same
  settings checks as `MLP.from_torch` of a Sequential) or functions (`torch.tanh`,
  `F.softplus(x, beta=1)`, `x.sigmoid()`, `torch.sin`, ...);
- Identity, Dropout (read as in evaluation mode) and Flatten(start_dim=1), which leave a
  (batch, n) input unchanged;
- `+ - * /` and negation by constants (numbers, buffers, parameters) next to a Linear layer,
  folded into it (feynmlp.layer_chain): `(x - mean) / std` at the input, `y * s + m` at the
  output.
Anything else is refused: an operation torch.fx records but this list lacks (a norm layer,
a matrix product, a reshape), a node that combines two values computed from the input (a
residual connection), a second input, a forward that branches on the input (torch.fx itself
fails there; the message gives the line of the branch).
"""
from __future__ import annotations

import operator
import os
import re
from typing import Any

import numpy as np

from .activation_names import short_repr
from .errors import FeynmlpError
from .layer_chain import Activation, Dense, Scale, build_mlp

__all__ = ["read_module"]

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)\n(?P<code>[^\n]*)')


def _torch_folder() -> str:
    import torch
    return os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def _user_frame(frames: list[tuple[str, int, str]]) -> str:
    """'file.py:12 `code`' for the innermost frame outside torch's own files, or ''."""
    torch_folder = _torch_folder()
    for file, line, code in reversed(frames):
        if not os.path.abspath(file).startswith(torch_folder):
            return f"{os.path.basename(file)}:{line} `{code.strip()}`"
    return ""


def _node_where(node: Any) -> str:
    frames = [(m["file"], int(m["line"]), m["code"]) for m in _FRAME.finditer(node.stack_trace or "")]
    place = _user_frame(frames)
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"node {node.name} ({node.op} {target}" + (f" at {place})" if place else ")")


def _definition(module: Any) -> str:
    """' (defined at file.py:12)' for the module's forward, where the source can be found."""
    import inspect
    try:
        _, line = inspect.getsourcelines(type(module).forward)
        file = inspect.getsourcefile(type(module).forward)
    except (OSError, TypeError):
        return ""
    return f" (defined at {os.path.basename(file)}:{line})" if file else ""


def _module_name(module: Any) -> str:
    return f"module {type(module).__name__}"


class _Interpreter:
    """Walks the traced graph once, turning the chain on the input into layer_chain steps."""

    def __init__(self, module: Any, graph: Any):
        import torch
        import torch.nn.functional as F
        from torch import nn

        self.torch, self.nn, self.F = torch, nn, F
        self.module = module
        self.graph = graph
        self.steps: list[Any] = []
        self.values: dict[Any, Any] = {}  # node -> np.ndarray / number, for constants
        self.latest: Any = None  # the node that holds the value computed from the input
        arithmetic = {
            operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div",
            operator.neg: "neg", torch.add: "add", torch.sub: "sub", torch.mul: "mul",
            torch.div: "div", torch.neg: "neg", torch.subtract: "sub", torch.multiply: "mul",
            torch.true_divide: "div", torch.negative: "neg",
        }
        self.arithmetic_functions = arithmetic
        self.arithmetic_methods = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "neg": "neg",
                                   "__add__": "add", "__sub__": "sub", "__mul__": "mul",
                                   "__truediv__": "div", "__neg__": "neg", "subtract": "sub",
                                   "multiply": "mul", "true_divide": "div", "negative": "neg"}
        # Activation functions, as the module with the same settings: the module checks of
        # feynmlp.mlp then apply unchanged. Each entry: the argument names after the input,
        # their defaults, and the module built from them.
        self.activation_functions = {
            torch.tanh: ((), (), nn.Tanh), F.tanh: ((), (), nn.Tanh),
            torch.sigmoid: ((), (), nn.Sigmoid), F.sigmoid: ((), (), nn.Sigmoid),
            torch.special.expit: ((), (), nn.Sigmoid),
            F.silu: (("inplace",), (False,), lambda inplace: nn.SiLU()),
            F.gelu: (("approximate",), ("none",), lambda approximate: nn.GELU(approximate=approximate)),
            F.softplus: (("beta", "threshold"), (1.0, 20.0), nn.Softplus),
            torch.relu: ((), (), nn.ReLU), F.relu: (("inplace",), (False,), lambda inplace: nn.ReLU()),
            F.leaky_relu: (("negative_slope", "inplace"), (0.01, False),
                           lambda negative_slope, inplace: nn.LeakyReLU(negative_slope)),
            F.hardtanh: (("min_val", "max_val", "inplace"), (-1.0, 1.0, False),
                         lambda min_val, max_val, inplace: nn.Hardtanh(min_val, max_val)),
            F.relu6: (("inplace",), (False,), lambda inplace: nn.ReLU6()),
        }
        # The registry's smooth activations with no torch module: by name.
        self.named_functions = {torch.sin: "sin", torch.cos: "cos", torch.exp: "exp"}
        self.activation_methods = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}
        self.named_methods = {"sin": "sin", "cos": "cos", "exp": "exp"}
        self.dropouts = {F.dropout, F.alpha_dropout, torch.dropout, torch.alpha_dropout}
        self.linears = {F.linear}

    # -- helpers ---------------------------------------------------------------------------

    def refuse(self, node: Any, why: str) -> FeynmlpError:
        return FeynmlpError(f"{_module_name(self.module)}: {_node_where(node)} {why}")

    def is_input(self, value: Any) -> bool:
        return hasattr(value, "op") and value not in self.values

    def constant(self, node: Any, value: Any) -> Any:
        """A constant argument as a NumPy array or a Python number."""
        if hasattr(value, "op"):
            return self.values[value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(node, f"has the argument {short_repr(value)}, which is not a number or a "
                                    "tensor; feynmlp reads constant numbers and tensors only")
        return float(value)

    def take_input(self, node: Any, value: Any) -> None:
        """Check that `value`, an argument of `node`, is the latest value on the chain."""
        if value is not self.latest:
            raise self.refuse(node, f"uses {value.name}, an earlier value computed from the input, "
                                    f"not the latest one ({self.latest.name}); the graph branches "
                                    "(a residual connection?), which an MLP cannot express")

    def tensor_value(self, node: Any, tensor: Any, what: str) -> np.ndarray:
        torch = self.torch
        if not isinstance(tensor, torch.Tensor):
            return np.asarray(tensor)
        if tensor.is_complex() or not tensor.is_floating_point():
            raise self.refuse(node, f"reads the {what} of dtype {tensor.dtype}; weights must be "
                                    "floating point: convert them with .double()")
        if getattr(tensor, "is_meta", False) or isinstance(tensor, self.nn.parameter.UninitializedParameter):
            raise self.refuse(node, f"reads the {what}, which is not materialised; run the model once "
                                    "or load its state dict first")
        return tensor.detach().to(device="cpu", dtype=torch.float64).numpy().copy()

    def activation_module(self, node: Any, child: Any) -> None:
        from .mlp import _torch_activation_name
        name = _torch_activation_name(child, f"{_module_name(self.module)}: {_node_where(node)}")
        self.steps.append(Activation(name, _node_where(node)))

    # -- one node --------------------------------------------------------------------------

    def run(self) -> list[Any]:
        for node in self.graph.nodes:
            self.visit(node)
        return self.steps

    def visit(self, node: Any) -> None:
        if node.op == "placeholder":
            if self.latest is not None:
                raise self.refuse(node, f"is a second input of forward{_definition(self.module)}; an MLP has one input, the "
                                        "(batch, n) tensor: fix the other arguments with functools.partial "
                                        "or a wrapper module")
            self.latest = node
            return
        if node.op == "get_attr":
            value = self.module
            for part in node.target.split("."):
                value = getattr(value, part)
            self.values[node] = self.tensor_value(node, value, f"tensor {node.target}")
            return
        if node.op == "output":
            (result,) = node.args
            if result is not self.latest:
                raise self.refuse(node, f"returns {short_repr(result)}, not the value computed from the "
                                        "input by the chain of layers; forward must return one tensor")
            return
        # all_input_nodes also finds nodes inside list arguments (torch.cat([x, h])).
        inputs = [a for a in node.all_input_nodes if self.is_input(a)]
        if not inputs:
            self.fold_constants(node)
            return
        if len(inputs) > 1:
            raise self.refuse(node, "combines two values computed from the input (a residual "
                                    "connection or a product of branches); an MLP is a chain of layers")
        self.take_input(node, inputs[0])
        if node.op == "call_module":
            self.visit_module(node, self.module.get_submodule(node.target))
        elif node.op == "call_function":
            self.visit_function(node)
        elif node.op == "call_method":
            self.visit_method(node)
        else:  # pragma: no cover - torch.fx has no other node kinds
            raise self.refuse(node, "is a kind of node feynmlp does not read")
        self.latest = node

    def fold_constants(self, node: Any) -> None:
        """A node of constants only (`1 / self.std`, `self.std + 1e-8`), evaluated in float64."""
        kind = (self.arithmetic_functions.get(node.target) if node.op == "call_function"
                else self.arithmetic_methods.get(node.target) if node.op == "call_method" else None)
        if kind is None or node.kwargs:
            raise self.refuse(node, "computes with constants only, by an operation feynmlp does not "
                                    "evaluate (it evaluates + - * / and negation)")
        values = [np.asarray(self.constant(node, a), dtype=np.float64) for a in node.args]
        with np.errstate(all="ignore"):
            if kind == "neg":
                result = -values[0]
            else:
                a, b = values
                result = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[kind](a, b)
        self.values[node] = result

    def arithmetic(self, node: Any, kind: str, args: tuple) -> None:
        where = _node_where(node)
        if kind == "neg":
            self.steps.append(Scale(-1.0, 0.0, where))
            return
        if len(args) != 2:
            raise self.refuse(node, "has arguments feynmlp does not read (an alpha or rounding mode?)")
        left, right = args
        input_first = left is self.latest
        other = np.asarray(self.constant(node, right if input_first else left), dtype=np.float64)
        if kind == "add":
            self.steps.append(Scale(1.0, other, where))
        elif kind == "sub":
            self.steps.append(Scale(1.0, -other, where) if input_first else Scale(-1.0, other, where))
        elif kind == "mul":
            self.steps.append(Scale(other, 0.0, where))
        elif input_first:  # x / c
            if not np.all(other != 0):
                raise self.refuse(node, "divides by a constant with a zero entry; the network would "
                                        "not be finite")
            self.steps.append(Scale(1.0 / other, 0.0, where))
        else:
            raise self.refuse(node, "divides a constant by a value computed from the input, which is "
                                    "not an affine map")

    def visit_module(self, node: Any, child: Any) -> None:
        nn = self.nn
        kind = type(child)
        if kind in (nn.Identity, nn.Dropout, nn.AlphaDropout):
            return
        if kind is nn.Flatten:
            if child.start_dim == 1 and child.end_dim == -1:
                return
            raise self.refuse(node, "is a Flatten other than Flatten(start_dim=1, end_dim=-1), which "
                                    "would not keep a (batch, n) input as it is")
        if kind is nn.Linear:
            weight = self.tensor_value(node, child.weight, "weight")
            bias = None if child.bias is None else self.tensor_value(node, child.bias, "bias")
            self.steps.append(Dense(weight, bias, _node_where(node)))
            return
        from .activation_names import TORCH_MODULES
        if kind in {getattr(nn, name) for name in TORCH_MODULES.values()}:
            self.activation_module(node, child)
            return
        raise self.refuse(node, f"calls {short_repr(child)}, which is not supported; from_torch "
                                "accepts Linear, the activations Tanh, Sigmoid, Softplus, SiLU, GELU, "
                                "ReLU, LeakyReLU, Hardtanh, ReLU6, and Identity, Dropout and Flatten")

    def bound(self, node: Any, names: tuple, defaults: tuple) -> dict[str, Any]:
        """The settings of an activation function call: positional after the input, or keywords."""
        extra = list(node.args[1:])
        if len(extra) > len(names) or set(node.kwargs) - set(names) - {"input"}:
            raise self.refuse(node, "has arguments feynmlp does not read")
        settings = dict(zip(names, defaults))
        settings.update(zip(names, extra))
        settings.update({k: v for k, v in node.kwargs.items() if k != "input"})
        for key, value in settings.items():
            if hasattr(value, "op"):
                raise self.refuse(node, f"has its setting {key} computed in the graph; pass a constant")
        return settings

    def visit_function(self, node: Any) -> None:
        target = node.target
        if target in self.arithmetic_functions:
            self.arithmetic(node, self.arithmetic_functions[target], node.args if not node.kwargs else ())
            return
        if target in self.linears:
            args = list(node.args) + [None] * (3 - len(node.args))
            weight = node.kwargs.get("weight", args[1])
            bias = node.kwargs.get("bias", args[2])
            if node.args[0] is not self.latest or hasattr(weight, "op") and weight not in self.values:
                raise self.refuse(node, "is a linear map whose weight is computed from the input")
            weight = np.asarray(self.constant(node, weight))
            bias = None if bias is None else np.asarray(self.constant(node, bias))
            self.steps.append(Dense(weight, bias, _node_where(node)))
            return
        if target in self.activation_functions:
            names, defaults, make = self.activation_functions[target]
            self.activation_module(node, make(**self.bound(node, names, defaults)))
            return
        if target in self.named_functions:
            self.bound(node, (), ())
            self.steps.append(Activation(self.named_functions[target], _node_where(node)))
            return
        if target in self.dropouts:
            return
        if target is self.torch.flatten:
            settings = self.bound(node, ("start_dim", "end_dim"), (0, -1))
            if settings["start_dim"] == 1 and settings["end_dim"] == -1:
                return
            raise self.refuse(node, "flattens other than from dimension 1 to the end, which would not "
                                    "keep a (batch, n) input as it is")
        raise self.refuse(node, "is an operation feynmlp does not read; from_torch accepts F.linear, the "
                                "registry's activations, dropout, flatten(x, 1) and + - * / by constants "
                                "next to a linear layer")

    def visit_method(self, node: Any) -> None:
        target = node.target
        if target in self.arithmetic_methods:
            self.arithmetic(node, self.arithmetic_methods[target], node.args if not node.kwargs else ())
            return
        if target in self.activation_methods:
            self.bound(node, (), ())
            self.activation_module(node, self.activation_methods[target]())
            return
        if target in self.named_methods:
            self.bound(node, (), ())
            self.steps.append(Activation(self.named_methods[target], _node_where(node)))
            return
        if target == "flatten":
            settings = self.bound(node, ("start_dim", "end_dim"), (0, -1))
            if settings["start_dim"] == 1 and settings["end_dim"] == -1:
                return
            raise self.refuse(node, "flattens other than from dimension 1 to the end, which would not "
                                    "keep a (batch, n) input as it is")
        raise self.refuse(node, f"calls the tensor method .{target}(), which feynmlp does not read")


def _trace(module: Any) -> Any:
    import torch.fx

    class Tracer(torch.fx.Tracer):
        # Each node then carries the stack of the forward line that made it, for the messages.
        record_stack_traces = True

    try:
        return Tracer().trace(module)
    except Exception as exc:
        import traceback
        frames = [(f.filename, f.lineno, f.line or "") for f in traceback.extract_tb(exc.__traceback__)]
        place = _user_frame(frames)
        text = " ".join(str(exc).split())
        if len(text) > 160:
            text = text[:157] + "..."
        branch = "control flow" in text or isinstance(exc, torch.fx.proxy.TraceError)
        why = ("branches on the input (a data-dependent if or loop), which has no fixed chain of layers"
               if branch else f"cannot be traced by torch.fx ({type(exc).__name__}: {text})")
        raise FeynmlpError(
            f"{_module_name(module)}: forward{' at ' + place if place else ''} {why}; write forward as a "
            "fixed chain of Linear layers and activations") from None


def read_module(module: Any) -> Any:
    """The MLP that `module.forward` computes (see the module docstring for what is read).

    Raises:
        FeynmlpError: a node that is not part of an MLP, named with its source line.
        UnsupportedActivationError: an activation with unsupported settings.
    """
    graph = _trace(module)
    steps = _Interpreter(module, graph).run()
    if not any(isinstance(step, Dense) for step in steps):
        raise FeynmlpError(
            f"{_module_name(module)} ({short_repr(module)}): its forward contains no Linear layer; "
            "from_torch expects an nn.Sequential of Linear layers and activations, or a module whose "
            "forward is one")
    return build_mlp(steps, _module_name(module))
