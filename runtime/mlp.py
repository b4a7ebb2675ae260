"""The network feynmlp expands: a multilayer perceptron held as plain float64 arrays.

In: weight matrices W(l) of shape (n_l, n_{l-1}) (as torch.nn.Linear stores them), bias
vectors b(l), and the activations (built-in names, or SymPy expressions in one symbol for a
custom activation); or a torch module via `MLP.from_torch` (a Sequential, or a module traced
by feynmlp.torch_trace); or a file via `MLP.load`.
Out: an `MLP` that validates all of it once, exposes the architecture (`layer_sizes`,
`hidden_activations`, `output_activation`, ...) to the Taylor-coefficient code, and evaluates
the network with NumPy (`mlp(x)`) so that results can be checked against a plain forward pass.

The network is the one of docs/mathematics.md, 'The network':

    z(1) = W(1) x + b(1),   a(l) = s_l(z(l)),   z(l+1) = W(l+1) a(l) + b(l+1),   f(x) = z(L)

optionally followed by one output activation. This module never imports SymPy or torch at
import time: a SymPy expression is recognised only when the caller has already imported SymPy,
and torch is imported inside `from_torch`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from .activation_names import (NUMPY_FUNCTIONS, PIECEWISE_LINEAR, RELU_LIKE, TORCH_MODULES, canonical_name,
                               check_custom_expression, check_order_supported)
from .activation_names import short_repr as _short_repr
from .errors import FeynmlpError, UnsupportedActivationError
from .kernels import is_sympy_expression, is_sympy_instance

__all__ = ["MLP"]


# ----------------------------------------------------------------------------------------
# Recognising and checking activations (the registry, feynmlp.activation_names, knows them).
# ----------------------------------------------------------------------------------------

def _is_lambda(value: Any) -> bool:
    return is_sympy_instance(value, "Lambda", "sympy.core.function")


def _lambda_body(function: Any, where: str) -> Any:
    """The body of a one-argument sympy.Lambda, as an expression in its argument.

    A Lambda binds its argument, so it has no free symbols of its own: its body in its
    variable is the activation, the form every other custom activation has.
    """
    signature = function.signature
    if len(signature) != 1 or not getattr(signature[0], "is_Symbol", False):
        arguments = ", ".join(str(v) for v in function.variables)
        raise UnsupportedActivationError(
            f"{where}: the activation {_short_repr(function)} is a Lambda of {len(function.variables)} "
            f"arguments ({arguments}); an activation is a function of one argument, the neuron's "
            "pre-activation: write sympy.Lambda(x, <expression in x>)")
    (variable,) = signature
    body = function.expr
    others = sorted(s.name for s in body.free_symbols if s != variable)
    if variable not in body.free_symbols:
        raise UnsupportedActivationError(
            f"{where}: the activation {_short_repr(function)} does not depend on its argument "
            f"{variable} (its body is {_short_repr(body)}); an activation must be a function of its "
            "one argument")
    if others:
        raise UnsupportedActivationError(
            f"{where}: the activation {_short_repr(function)} has the free symbol(s) "
            f"{', '.join(others)} besides its argument {variable}; substitute a number for each")
    return body


def _without_lambdas(activation: Any) -> Any:
    """`activation` with each sympy.Lambda replaced by its body (already checked)."""
    if isinstance(activation, list):
        return [a.expr if _is_lambda(a) else a for a in activation]
    if isinstance(activation, tuple) and any(_is_lambda(a) for a in activation):
        return tuple(a.expr if _is_lambda(a) else a for a in activation)
    return activation.expr if _is_lambda(activation) else activation


def _normalise_one(value: Any, where: str) -> Any:
    """A canonical built-in name, or a validated SymPy expression (a Lambda's body)."""
    if isinstance(value, str):
        return canonical_name(value)
    if _is_lambda(value):
        value = _lambda_body(value, where)
    if is_sympy_expression(value):
        return check_custom_expression(value, where)
    raise UnsupportedActivationError(
        f"{where}: an activation must be a built-in name such as 'tanh' or a SymPy expression in "
        f"one symbol, got the {type(value).__name__} {_short_repr(value)}")


def _describe(activation: Any) -> str:
    return activation if isinstance(activation, str) else str(activation)


def tensor_as_numpy(value: Any, what: str) -> Any:
    """A torch tensor as a NumPy array (detached from autograd, on the CPU); anything else as is.

    Recognised by its methods, so that torch is imported only by whoever made the tensor (it
    may require grad or live on a GPU).
    """
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        try:
            return value.detach().cpu().numpy()
        except (TypeError, RuntimeError) as exc:  # dtypes NumPy lacks, such as bfloat16
            raise FeynmlpError(f"{what} is a torch tensor of dtype {value.dtype} that NumPy cannot hold ({exc}); "
                               "convert it with .double()") from None
    return value


def _as_float64_array(value: Any, what: str) -> np.ndarray:
    """A contiguous float64 copy of `value`, refusing what float64 cannot hold faithfully."""
    value = tensor_as_numpy(value, what)
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise FeynmlpError(f"{what} cannot be read as an array ({exc}); pass a NumPy array") from exc
    if array.dtype.kind in "cOSUVMm":
        raise FeynmlpError(
            f"{what} has dtype {array.dtype}; weights and biases must be real numbers "
            "(float or int arrays); convert them with np.asarray(..., dtype=np.float64)")
    return np.array(array, dtype=np.float64, order="C", copy=True)


# ----------------------------------------------------------------------------------------
# The network.
# ----------------------------------------------------------------------------------------

class MLP:
    """A validated multilayer perceptron with float64 storage.

    Args:
        weights: L >= 1 matrices; weights[l] has shape (n_{l+1}, n_l), as torch.nn.Linear
            stores them. Any array-like of real numbers (also torch tensors); copied to
            contiguous float64.
        biases: L vectors; biases[l] has length n_{l+1}. An entry None (or biases=None) means
            a zero bias.
        activation: the hidden-layer activation: one built-in name for every hidden layer
            ("tanh", "sigmoid", "softplus", "silu", "gelu", "sin", "cos", "exp", "identity",
            aliases such as "swish"; the ReLU-like names are accepted for first order only),
            a SymPy expression in exactly one symbol for a custom activation (or a one-argument
            sympy.Lambda, which stands for its body in its variable), or a list with one of
            those per hidden layer (names and expressions may be mixed).
        output_activation: None (a linear output) or a built-in name applied to z(L).
            "identity" is stored as None.

    Attributes:
        weights, biases: lists of contiguous float64 arrays (copies of the input).
        activation: the `activation` argument as given (a list is copied), each sympy.Lambda
            replaced by its body, so that a saved model stores the expression.
        hidden_activations: one entry per hidden layer: a canonical built-in name, or the
            SymPy expression.
        output_activation: None or a canonical built-in name.
        layer_sizes: (n_0, n_1, ..., n_L).
        n_inputs, n_outputs: n_0 and n_L.
        depth: the number of hidden layers, L - 1.
        record: a free-form dict saved with the model (hyper-parameters, provenance); empty
            unless set by the caller or read back by `load`.

    Raises:
        FeynmlpError: inconsistent shapes, non-finite entries, or unusable arrays.
        UnsupportedActivationError: unknown activation names, malformed custom expressions, or
            a list of activations of the wrong length.
    """

    def __init__(self, weights: Sequence[Any], biases: Sequence[Any] | None,
                 activation: Any = "tanh", output_activation: str | None = None):
        if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
            raise FeynmlpError(
                f"weights must be a list with one matrix per layer, got a {type(weights).__name__}; "
                "for a single layer pass [W]")
        if len(weights) == 0:
            raise FeynmlpError("weights is empty; an MLP needs at least one layer (L >= 1)")
        n_layers = len(weights)
        if biases is None:
            biases = [None] * n_layers
        if isinstance(biases, np.ndarray) or not isinstance(biases, (list, tuple)):
            raise FeynmlpError(
                f"biases must be a list with one vector per layer (or None for zero biases), got a "
                f"{type(biases).__name__}")
        if len(biases) != n_layers:
            raise FeynmlpError(
                f"got {n_layers} weight matrices but {len(biases)} bias vectors; pass one bias "
                "per layer (None for a zero bias)")

        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        sizes: list[int] = []
        for index, (w, b) in enumerate(zip(weights, biases)):
            w = _as_float64_array(w, f"layer {index} weight")
            if w.ndim != 2:
                raise FeynmlpError(
                    f"layer {index} weight has shape {w.shape} ({w.ndim}-D); each weight must be a "
                    "2-D matrix of shape (n_out, n_in), as torch.nn.Linear stores it")
            if 0 in w.shape:
                raise FeynmlpError(
                    f"layer {index} weight has shape {w.shape}; every layer needs at least one "
                    "input and one output")
            if index == 0:
                sizes.append(w.shape[1])
            elif w.shape[1] != sizes[-1]:
                raise FeynmlpError(
                    f"layer {index} weight has shape {w.shape}, so it expects {w.shape[1]} inputs, "
                    f"but layer {index - 1} weight has shape {self.weights[-1].shape} and outputs "
                    f"{sizes[-1]}; each weight must be (n_out, n_in) with n_in equal to the "
                    "previous layer's n_out")
            if b is None:
                b = np.zeros(w.shape[0])
            b = _as_float64_array(b, f"layer {index} bias")
            if b.shape != (w.shape[0],):
                raise FeynmlpError(
                    f"layer {index} bias has shape {b.shape} but its weight has shape {w.shape}; "
                    f"the bias must be a vector of length {w.shape[0]}")
            for name, array in (("weight", w), ("bias", b)):
                bad = int(array.size - np.count_nonzero(np.isfinite(array)))
                if bad:
                    raise FeynmlpError(
                        f"layer {index} {name} has {bad} non-finite entr{'y' if bad == 1 else 'ies'} "
                        f"(NaN or infinite) out of {array.size}; the network must be finite "
                        "(did training diverge?)")
            self.weights.append(w)
            self.biases.append(b)
            sizes.append(w.shape[0])

        # All weights in one buffer, one matrix after the other: the expansions read the
        # matrices between hidden layers as one flat array (feynmlp.push.between_weights),
        # which this layout gives without a copy per call.
        storage = np.empty(sum(w.size for w in self.weights))
        offset = 0
        for index, w in enumerate(self.weights):
            view = storage[offset:offset + w.size].reshape(w.shape)
            view[...] = w
            self.weights[index] = view
            offset += w.size

        self.layer_sizes: tuple[int, ...] = tuple(int(n) for n in sizes)
        self.depth: int = n_layers - 1
        self.n_inputs: int = self.layer_sizes[0]
        self.n_outputs: int = self.layer_sizes[-1]

        self.hidden_activations: list[Any] = self._hidden_activations(activation)
        self.activation = _without_lambdas(activation)
        self.output_activation: str | None = None
        if output_activation is not None:
            if not isinstance(output_activation, str):
                raise UnsupportedActivationError(
                    f"output_activation must be None or a built-in name such as 'sigmoid', got "
                    f"the {type(output_activation).__name__} {_short_repr(output_activation)}")
            name = canonical_name(output_activation)
            self.output_activation = None if name == "identity" else name
        self.record: dict[str, Any] = {}
        self._custom_functions: dict[int, Callable[[np.ndarray], np.ndarray]] = {}

    def _hidden_activations(self, activation: Any) -> list[Any]:
        if isinstance(activation, (list, tuple)):
            if len(activation) != self.depth:
                raise UnsupportedActivationError(
                    f"got {len(activation)} activations {_short_repr([_describe(a) for a in activation])} for "
                    f"{self.depth} hidden layer(s) (layer sizes {self.layer_sizes}); pass one "
                    "activation per hidden layer, or a single name for all of them")
            return [_normalise_one(a, f"activation of hidden layer {i + 1}")
                    for i, a in enumerate(activation)]
        single = _normalise_one(activation, "activation")
        return [single] * self.depth

    # ------------------------------------------------------------------------------------
    # Construction from other representations.
    # ------------------------------------------------------------------------------------

    @classmethod
    def from_torch(cls, module: Any) -> "MLP":
        """Build an MLP from a torch.nn.Sequential of Linear layers and activations, or from
        any module of the user's own class whose forward computes an MLP.

        A module of the user's own class (not one of torch.nn's) is traced with torch.fx and
        read node by node (feynmlp.torch_trace): Linear modules or F.linear, the activations
        below as modules or functions (torch.tanh, F.softplus, x.sigmoid(), torch.sin, ...),
        Identity, Dropout, Flatten, and + - * / by constant tensors next to a Linear layer,
        folded into it (an input scaler (x - mean) / std, an output scaling y * s + m). Any
        other node (a residual add, a norm layer, a second input, a branch on the input) is
        refused, naming the node and its line in forward.

        A Sequential is read layer by layer, as follows.
        Nested Sequentials are flattened. The model is read as in evaluation mode: Dropout
        (and AlphaDropout) layers are skipped, as are Identity and the default Flatten
        (start_dim=1, which leaves a (batch, n) input unchanged). Weights are copied to
        float64; a Linear without bias gets a zero bias.

        Activations: Tanh, Sigmoid, SiLU, GELU(approximate='none'), Softplus(beta=1) and the
        ReLU-like ReLU, LeakyReLU(negative_slope=0.01), Hardtanh(-1, 1) and ReLU6 (these have
        Taylor coefficients of first order only). torch's Softplus returns x itself where
        x > threshold (default 20); feynmlp uses the exact log(1 + e^x), which differs there
        by log(1 + e^-x) < 2.1e-9, so thresholds below 20 are refused. Module types are matched
        exactly, so a subclass with its own forward is refused rather than misread.

        Layout: Linear layers with at most one activation between two of them. Two Linear
        layers with nothing between them get the "identity" hidden activation: the weights
        stay exactly torch's (no matrix is multiplied out) and the network computes the same
        function. An activation after the last Linear becomes `output_activation`. Anything
        else (an activation before the first Linear, two activations in a row, Conv, norm
        layers, custom modules) is refused with the index and repr of the offending layer.

        Raises:
            FeynmlpError: the module is not a supported Sequential.
            UnsupportedActivationError: an activation module with unsupported settings.
        """
        import torch
        from torch import nn

        if isinstance(module, nn.Linear):
            module = nn.Sequential(module)
        if isinstance(module, nn.Module) and not type(module).__module__.startswith("torch."):
            # The user's own module: its forward says what it computes, read through torch.fx.
            from .torch_trace import read_module
            return read_module(module)
        if not isinstance(module, nn.Sequential):
            raise FeynmlpError(_not_a_sequential(module))

        layers: list[tuple[str, Any]] = []

        def flatten(seq: Any, prefix: str) -> None:
            for name, child in seq.named_children():
                path = f"{prefix}{name}"
                if isinstance(child, nn.Sequential):
                    flatten(child, path + ".")
                else:
                    layers.append((path, child))

        flatten(module, "")

        def where(path: str, child: Any) -> str:
            return f"layer {path} ({_short_repr(child)})"

        weights: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        hidden: list[str] = []
        pending: tuple[str, Any, str] | None = None  # activation seen after the latest Linear
        for path, child in layers:
            kind = type(child)
            if kind in (nn.Identity, nn.Dropout, nn.AlphaDropout):
                continue
            if kind is nn.Flatten:
                if child.start_dim == 1 and child.end_dim == -1:
                    continue
                raise FeynmlpError(
                    f"{where(path, child)}: only Flatten(start_dim=1, end_dim=-1) is supported (it "
                    "leaves a (batch, n) input unchanged); remove this layer or flatten the input "
                    "before the network")
            if kind is nn.Linear:
                if getattr(child.weight, "is_meta", False) or isinstance(
                        child.weight, nn.parameter.UninitializedParameter):
                    raise FeynmlpError(
                        f"{where(path, child)} has no materialised weights; run the model once or "
                        "load its state dict first")
                if child.weight.is_complex():
                    raise FeynmlpError(
                        f"{where(path, child)} has complex weights ({child.weight.dtype}); feynmlp "
                        "expands real networks only")
                w = child.weight.detach().to(device="cpu", dtype=torch.float64).numpy()
                if weights and w.shape[1] != weights[-1].shape[0]:
                    raise FeynmlpError(
                        f"{where(path, child)} expects {w.shape[1]} inputs but the previous Linear "
                        f"outputs {weights[-1].shape[0]}; the Sequential would fail in torch too")
                if weights:
                    hidden.append(pending[2] if pending is not None else "identity")
                pending = None
                weights.append(w.copy())
                if child.bias is None:
                    biases.append(np.zeros(w.shape[0]))
                else:
                    biases.append(child.bias.detach().to(device="cpu", dtype=torch.float64).numpy().copy())
                continue
            name = _torch_activation_name(child, where(path, child))
            if not weights:
                raise FeynmlpError(
                    f"{where(path, child)} comes before the first Linear layer; feynmlp's network "
                    "starts with an affine map W(1) x + b(1), so apply this function to the inputs "
                    "before calling the network")
            if pending is not None:
                raise FeynmlpError(
                    f"{where(path, child)} directly follows the activation at {where(pending[0], pending[1])}; "
                    "feynmlp allows at most one activation between two Linear layers (write their "
                    "composition as one custom SymPy activation with MLP(...) instead)")
            pending = (path, child, name)

        if not weights:
            raise FeynmlpError(
                f"the Sequential {_short_repr(module)} contains no Linear layer; an MLP needs at least one")
        output = pending[2] if pending is not None else None
        return cls(weights, biases, activation=list(hidden), output_activation=output)

    @classmethod
    def from_sklearn(cls, estimator: Any) -> "MLP":
        """Build an MLP from a fitted scikit-learn MLPRegressor, binary MLPClassifier (its
        output is predict_proba[:, 1]), or a Pipeline of StandardScaler / MinMaxScaler /
        MaxAbsScaler steps ending in one, the scalers folded into the first layer. Live objects
        only: a pickled estimator is never loaded (see feynmlp.sklearn_reader)."""
        from .sklearn_reader import read_estimator
        return read_estimator(estimator)

    @classmethod
    def from_equinox(cls, model: Any) -> "MLP":
        """Build an MLP from an equinox.nn.MLP, Linear, or Sequential of Linear and
        Lambda(activation) layers (see feynmlp.jax_readers)."""
        from .jax_readers import read_equinox
        return read_equinox(model)

    @classmethod
    def from_flax(cls, model: Any, activation: Any = None, output_activation: Any = None) -> "MLP":
        """Build an MLP from a Flax NNX module (nnx.Linear, nnx.Sequential of nnx.Linear and
        activation functions), or from a linen parameter tree of Dense layers with the
        activation given explicitly (see feynmlp.jax_readers)."""
        from .jax_readers import read_flax
        return read_flax(model, activation=activation, output_activation=output_activation)

    @classmethod
    def load(cls, path: Any) -> "MLP":
        """Read an MLP written by `save` (see `feynmlp.model_io.load`)."""
        from .model_io import load
        return load(path)

    def save(self, path: Any, record: dict | None = None) -> None:
        """Write this MLP to a .safetensors or .npz file (see `feynmlp.model_io.save`)."""
        from .model_io import save
        save(self, path, record=record)

    # ------------------------------------------------------------------------------------
    # Evaluation and inspection.
    # ------------------------------------------------------------------------------------

    def check_order_supported(self, order: int) -> None:
        """Refuse an expansion order that a ReLU-like activation of this network cannot give."""
        for name in self.hidden_activations + [self.output_activation]:
            if isinstance(name, str):
                check_order_supported(name, order)

    @property
    def is_relu_like(self) -> bool:
        """True when some activation is piecewise linear (first-order coefficients only)."""
        return any(isinstance(a, str) and a in RELU_LIKE
                   for a in self.hidden_activations + [self.output_activation])

    def _activation_function(self, layer: int, activation: Any) -> Callable[[np.ndarray], np.ndarray]:
        if isinstance(activation, str):
            return NUMPY_FUNCTIONS[activation]
        function = self._custom_functions.get(layer)
        if function is None:
            import sympy
            (symbol,) = activation.free_symbols
            try:
                compiled = sympy.lambdify(symbol, activation, modules=["scipy", "numpy"])
            except Exception as exc:
                raise UnsupportedActivationError(
                    f"custom activation {activation} of hidden layer {layer} cannot be evaluated "
                    f"numerically ({exc}); write it with elementary functions") from exc

            def function(z: np.ndarray, _compiled=compiled) -> np.ndarray:
                return np.broadcast_to(np.asarray(_compiled(z), dtype=np.float64), z.shape)

            self._custom_functions[layer] = function
        return function

    def __getstate__(self) -> dict[str, Any]:
        # The NumPy functions of custom activations come from sympy.lambdify, which cannot be
        # pickled; they are only a cache (rebuilt from the expressions on the next call), so a
        # pickled MLP (multiprocessing, Dask) carries the expressions and not the functions.
        state = self.__dict__.copy()
        state["_custom_functions"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_custom_functions", {})

    def __call__(self, x: Any) -> np.ndarray:
        """The network's output for one input (n_inputs,) or a batch (batch, n_inputs).

        Returns a float64 array of shape (n_outputs,) or (batch, n_outputs).
        """
        x = np.asarray(tensor_as_numpy(x, "input"))
        if x.dtype.kind in "cOSUVMm":
            raise FeynmlpError(f"input has dtype {x.dtype}; pass real numbers")
        x = x.astype(np.float64, copy=False)
        if x.ndim not in (1, 2) or x.shape[-1] != self.n_inputs:
            raise FeynmlpError(
                f"input has shape {x.shape}; this MLP takes ({self.n_inputs},) or "
                f"(batch, {self.n_inputs})")
        z = x @ self.weights[0].T + self.biases[0]
        for layer in range(1, self.depth + 1):
            a = self._activation_function(layer, self.hidden_activations[layer - 1])(z)
            z = a @ self.weights[layer].T + self.biases[layer]
        if self.output_activation is not None:
            z = NUMPY_FUNCTIONS[self.output_activation](z)
        return z

    def __repr__(self) -> str:
        hidden = "[" + ", ".join(repr(_describe(a)) for a in self.hidden_activations) + "]"
        return (f"MLP(layer_sizes={self.layer_sizes}, hidden_activations={hidden}, "
                f"output_activation={self.output_activation!r})")


def _not_a_sequential(module: Any) -> str:
    """The refusal of a from_torch argument that is not an nn.Sequential: what it is, and the fix."""
    from collections.abc import Mapping

    import torch
    from torch import nn

    expects = ("from_torch expects a torch.nn.Sequential of Linear layers and activations, or a module "
               "of your own whose forward is one")
    alternative = "or build feynmlp.MLP(weights, biases, activation=...) from the arrays"
    kind = type(module).__name__
    if isinstance(module, Mapping):
        tensors = sum(isinstance(v, torch.Tensor) for v in module.values())
        keys = ", ".join(_short_repr(k)[:40] for k in list(module)[:3]) + (", ..." if len(module) > 3 else "")
        if tensors:
            return (f"{expects}, got a state_dict ({kind} of {tensors} tensors, keys {keys}), which holds "
                    "the weights but not the layers and activations; build the module, call "
                    f"module.load_state_dict(state_dict) and pass the module, {alternative}")
        return f"{expects}, got a {kind} of {len(module)} entries (keys {keys}); pass the module, {alternative}"
    if isinstance(module, (nn.ModuleList, list, tuple)):
        return (f"{expects}, got a {kind} of {len(module)} entries ({_short_repr(module)}); wrap the "
                f"layers in nn.Sequential(*layers), {alternative}")
    if isinstance(module, nn.Module):
        return (f"{expects}, got {kind} ({_short_repr(module)}), which is not an nn.Sequential; write "
                f"its layers as an nn.Sequential (load_state_dict carries the weights over), {alternative}")
    return f"{expects}, got a {kind} ({_short_repr(module)}); wrap the layers in nn.Sequential, {alternative}"


def _torch_activation_name(child: Any, where: str) -> str:
    """The built-in name of a supported torch activation module, or a clear refusal."""
    from torch import nn

    # The exact class: ReLU6 is a subclass of Hardtanh, and a subclass may change the function.
    name = {getattr(nn, module): name for name, module in TORCH_MODULES.items()}.get(type(child))
    if name is None:
        raise FeynmlpError(
            f"{where} is not supported; from_torch accepts Linear, Tanh, Sigmoid, Softplus, SiLU, "
            "GELU, ReLU, LeakyReLU, Hardtanh, ReLU6, Identity, Dropout and Flatten; for other "
            "architectures build MLP(weights, biases, activation=...) from the arrays yourself")
    if name == "softplus":
        if child.beta != 1:
            raise UnsupportedActivationError(
                f"{where}: Softplus with beta={child.beta} is not supported, only beta=1; rescale "
                "the neighbouring weights (softplus(beta*z)/beta) or use a custom SymPy activation "
                "log(1 + exp(beta*x))/beta with MLP(...)")
        if child.threshold < 20:
            raise UnsupportedActivationError(
                f"{where}: Softplus with threshold={child.threshold} linearises where x > "
                f"{child.threshold}, which differs from log(1 + e^x) by up to "
                f"{math.log1p(math.exp(-child.threshold)):.2g}; use threshold >= 20 (the default)")
    if name == "gelu":
        if child.approximate != "none":
            raise UnsupportedActivationError(
                f"{where}: GELU(approximate={child.approximate!r}) is not supported, only the exact "
                "GELU(approximate='none') = x (1 + erf(x/sqrt(2)))/2; retrain with the exact GELU "
                "or pass the tanh approximation as a custom SymPy activation with MLP(...)")
    if name == "leaky_relu":
        slope = PIECEWISE_LINEAR[name].slope
        if child.negative_slope != slope:
            raise UnsupportedActivationError(
                f"{where}: LeakyReLU(negative_slope={child.negative_slope}) is not supported, only "
                f"the default slope {slope}")
    if name == "hardtanh":
        shape = PIECEWISE_LINEAR[name]
        if child.min_val != shape.lower or child.max_val != shape.upper:
            raise UnsupportedActivationError(
                f"{where}: Hardtanh(min_val={child.min_val}, max_val={child.max_val}) is not "
                f"supported, only Hardtanh({shape.lower:g}, {shape.upper:g}) and ReLU6")
    return name
