"""Reading JAX networks as an `MLP`: Equinox modules and Flax (NNX modules, linen parameters).

In (the library's own containers read by their structure; a module of the user's own class
traced, see below):
- `read_equinox(model)`: an `equinox.nn.MLP` (scan=False, vector input and output), an
  `equinox.nn.Linear`, or an `equinox.nn.Sequential` of `Linear` layers, `Lambda(activation)`
  layers, `Identity`, `Dropout` (read as in inference) and nested Sequentials or MLPs;
- `read_flax(model, activation, output_activation)`: an `nnx.Linear`, or an `nnx.Sequential`
  of `nnx.Linear` layers, activation functions, `nnx.Dropout` (read as in inference) and
  nested Sequentials; or a linen parameter tree ({'params': {'Dense_0': {'kernel', 'bias'},
  ...}}, layers in the order of their trailing numbers, or of the tree where names have
  none), which holds no activations, so these are given explicitly.
Out: the `MLP` (feynmlp.layer_chain), or a `FeynmlpError` naming the layer.

Activations are recognised by identity among JAX's own functions (jax.nn.tanh,
jax.nn.sigmoid, jax.nn.silu, jax.nn.softplus, jax.nn.gelu with approximate=False, jnp.sin,
jnp.cos, jnp.exp, and the ReLU-like jax.nn.relu, jax.nn.leaky_relu (slope 0.01),
jax.nn.hard_tanh, jax.nn.relu6), or a functools.partial of one with settings that match the
registry. jax.nn.gelu's default is the tanh approximation, a different function from the
exact GELU feynmlp expands, and is refused.

A module of the user's own class (an eqx.Module or nnx.Module with its own __call__) is read
through its jaxpr instead (feynmlp.jax_trace); a custom module nested inside a Sequential is
refused, naming it.

JAX, Equinox and Flax are imported only inside these functions.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .activation_names import LEAKY_SLOPE, canonical_name, short_repr
from .errors import FeynmlpError
from .layer_chain import Activation, Dense, build_mlp

__all__ = ["read_equinox", "read_flax", "jax_activation_name"]


def _known_functions() -> dict[Any, str]:
    import jax
    import jax.numpy as jnp

    return {jax.nn.tanh: "tanh", jnp.tanh: "tanh", jax.nn.sigmoid: "sigmoid", jax.nn.silu: "silu",
            jax.nn.softplus: "softplus", jnp.sin: "sin", jnp.cos: "cos", jnp.exp: "exp",
            jax.nn.relu: "relu", jax.nn.leaky_relu: "leaky_relu", jax.nn.hard_tanh: "hardtanh",
            jax.nn.relu6: "relu6", jax.nn.gelu: "gelu"}


def _identity_functions() -> set[Any]:
    found = set()
    try:
        from equinox.nn import _mlp
        found.add(getattr(_mlp, "_identity", None))
    except ImportError:
        pass
    import jax
    identity = getattr(jax.nn, "identity", None)
    if identity is not None:
        found.add(identity)
    found.discard(None)
    return found


def jax_activation_name(function: Any, where: str) -> str:
    """The registry name of a JAX activation function, or a refusal naming it."""
    if function in _identity_functions():
        return "identity"
    settings: dict[str, Any] = {}
    base = function
    if isinstance(function, functools.partial):
        if function.args:
            raise FeynmlpError(f"{where}: the activation {short_repr(function)} fixes positional arguments; "
                               "give settings by keyword")
        base, settings = function.func, dict(function.keywords)
    name = _known_functions().get(base) if _hashable(base) else None
    if name is None:
        raise FeynmlpError(
            f"{where}: the activation {short_repr(function)} is not one feynmlp knows; use jax.nn.tanh, "
            "sigmoid, silu, softplus, gelu(approximate=False), jnp.sin/cos/exp, or relu, leaky_relu, "
            "hard_tanh, relu6 (first order only)")
    allowed = {"gelu": {"approximate": False}, "leaky_relu": {"negative_slope": LEAKY_SLOPE}}.get(name, {})
    if name == "gelu" and settings.get("approximate", True) is not False:
        raise FeynmlpError(
            f"{where}: jax.nn.gelu approximates GELU with tanh unless approximate=False; feynmlp expands the "
            "exact GELU: use functools.partial(jax.nn.gelu, approximate=False) and retrain")
    for key, value in settings.items():
        if key not in allowed or value != allowed[key]:
            raise FeynmlpError(f"{where}: the activation {short_repr(function)} sets {key}={value!r}; feynmlp "
                               f"reads {name} with {allowed or 'its default settings'} only")
    return name


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _array(value: Any) -> np.ndarray:
    """A JAX array (or a Flax variable holding one) as NumPy, without copying through Python."""
    if hasattr(value, "get_value"):
        value = value.get_value()
    elif hasattr(value, "value") and not isinstance(value, np.ndarray):
        value = value.value
    return np.asarray(value)


# ----------------------------------------------------------------------------------------
# Equinox.
# ----------------------------------------------------------------------------------------

def _equinox_steps(module: Any, where: str, steps: list[Any]) -> None:
    import equinox as eqx

    kind = type(module)
    if kind is eqx.nn.Linear:
        if module.in_features == "scalar" or module.out_features == "scalar":
            raise FeynmlpError(f"{where}: a Linear with a scalar input or output; use in_features=1 / "
                               "out_features=1, whose vectors feynmlp reads")
        steps.append(Dense(_array(module.weight), None if module.bias is None else _array(module.bias), where))
        return
    if kind is eqx.nn.MLP:
        if getattr(module, "scan", False):
            raise FeynmlpError(f"{where}: an MLP built with scan=True stacks its hidden layers; build it "
                               "with scan=False")
        hidden = jax_activation_name(module.activation, f"{where} activation")
        final = jax_activation_name(module.final_activation, f"{where} final_activation")
        for index, layer in enumerate(module.layers):
            if index:
                steps.append(Activation(hidden, f"{where} activation after layer {index - 1}"))
            _equinox_steps(layer, f"{where} layer {index}", steps)
        if final != "identity":
            steps.append(Activation(final, f"{where} final_activation"))
        return
    if kind is eqx.nn.Sequential:
        for index, layer in enumerate(module.layers):
            _equinox_steps(layer, f"{where}.layers[{index}]", steps)
        return
    if kind is eqx.nn.Lambda:
        name = jax_activation_name(module.fn, where)
        if name != "identity":
            steps.append(Activation(name, where))
        return
    if kind in (eqx.nn.Identity, eqx.nn.Dropout):
        return
    raise FeynmlpError(
        f"{where}: {kind.__name__} ({short_repr(module)}) is not read; from_equinox reads eqx.nn.MLP, "
        "eqx.nn.Linear and eqx.nn.Sequential of Linear, Lambda(activation), Identity and Dropout "
        "(a module with its own __call__: write its layers as an eqx.nn.Sequential)")


def _EQUINOX_STRUCTURAL() -> tuple[type, ...]:
    import equinox as eqx
    return (eqx.nn.Linear, eqx.nn.MLP, eqx.nn.Sequential, eqx.nn.Lambda, eqx.nn.Identity, eqx.nn.Dropout)


def read_equinox(model: Any) -> Any:
    """The MLP of an Equinox model (see the module docstring)."""
    try:
        import equinox  # noqa: F401
    except ImportError:
        raise FeynmlpError("from_equinox needs equinox: pip install 'feynmlp[jax]'") from None
    import equinox as eqx
    import jax

    if isinstance(model, eqx.Module) and type(model) not in _EQUINOX_STRUCTURAL() and callable(model):
        # The user's own module: its __call__ says what it computes, read through its jaxpr.
        from .jax_trace import read_traced
        layers = jax.tree_util.tree_leaves(model, is_leaf=lambda leaf: isinstance(leaf, eqx.nn.Linear))
        widths = [leaf.in_features for leaf in layers
                  if isinstance(leaf, eqx.nn.Linear) and isinstance(leaf.in_features, int)]
        mlp = read_traced(model, widths, "Equinox")
        mlp.record = {"source": "equinox", "model": type(model).__name__}
        return mlp
    steps: list[Any] = []
    _equinox_steps(model, type(model).__name__, steps)
    mlp = build_mlp(steps, f"the Equinox {type(model).__name__}")
    mlp.record = {"source": "equinox", "model": type(model).__name__}
    return mlp


# ----------------------------------------------------------------------------------------
# Flax.
# ----------------------------------------------------------------------------------------

def _nnx_steps(module: Any, where: str, steps: list[Any]) -> None:
    from flax import nnx

    kind = type(module)
    if kind is nnx.Linear:
        # nnx.Linear computes x @ kernel + bias, kernel of shape (in, out).
        kernel = _array(module.kernel)
        if kernel.ndim != 2:
            raise FeynmlpError(f"{where}: the kernel has shape {kernel.shape}; expected (in, out)")
        bias = None if module.bias is None else _array(module.bias)
        steps.append(Dense(kernel.T, bias, where))
        return
    if kind is nnx.Sequential:
        for index, layer in enumerate(module.layers):
            _nnx_steps(layer, f"{where}.layers[{index}]", steps)
        return
    if kind is nnx.Dropout:
        return
    if isinstance(module, nnx.Module):
        raise FeynmlpError(
            f"{where}: {kind.__name__} ({short_repr(module)}) is not read; from_flax reads nnx.Linear and "
            "nnx.Sequential of nnx.Linear, activation functions and nnx.Dropout (a module with its own "
            "__call__: write its layers as an nnx.Sequential)")
    name = jax_activation_name(module, where)
    if name != "identity":
        steps.append(Activation(name, where))


def _layer_order(names: list[str]) -> list[str]:
    """Linen's automatic names (Dense_0, Dense_1, ..., Dense_10) in numeric order."""
    def number(name: str) -> int | None:
        head, _, tail = name.rpartition("_")
        return int(tail) if head and tail.isdigit() else None
    if all(number(name) is not None for name in names):
        return sorted(names, key=number)
    return names


def _linen_steps(params: Any, activation: Any, output_activation: Any) -> list[Any]:
    from collections.abc import Mapping

    if isinstance(params, Mapping) and list(params) == ["params"]:
        params = params["params"]
    if not isinstance(params, Mapping) or not params:
        raise FeynmlpError(f"from_flax: expected a linen parameter tree {{'params': {{'Dense_0': {{'kernel': "
                           f"..., 'bias': ...}}, ...}}}}, got {short_repr(params)}")
    if activation is None:
        raise FeynmlpError("from_flax: a linen parameter tree holds no activations; pass activation='tanh' "
                           "(or the JAX function) and output_activation if the model has one")
    names = _layer_order(list(params))
    hidden = _name_of(activation, "from_flax activation")
    steps: list[Any] = []
    for index, name in enumerate(names):
        layer = params[name]
        where = f"linen layer {name!r}"
        if not isinstance(layer, Mapping) or "kernel" not in layer or set(layer) - {"kernel", "bias"}:
            found = sorted(layer) if isinstance(layer, Mapping) else type(layer).__name__
            raise FeynmlpError(f"{where} holds {found}; from_flax reads Dense layers ({{'kernel', 'bias'}}) only")
        kernel = _array(layer["kernel"])
        if kernel.ndim != 2:
            raise FeynmlpError(f"{where}: the kernel has shape {kernel.shape}; a Dense kernel is (in, out)")
        if index:
            steps.append(Activation(hidden, f"activation before {where}"))
        bias = layer.get("bias")
        steps.append(Dense(kernel.T, None if bias is None else _array(bias), where))
    if output_activation is not None:
        name = _name_of(output_activation, "from_flax output_activation")
        if name != "identity":
            steps.append(Activation(name, "output_activation"))
    return steps


def _name_of(activation: Any, where: str) -> str:
    return canonical_name(activation) if isinstance(activation, str) else jax_activation_name(activation, where)


def read_flax(model: Any, activation: Any = None, output_activation: Any = None) -> Any:
    """The MLP of a Flax NNX module or a linen parameter tree (see the module docstring)."""
    try:
        from flax import nnx
    except ImportError:
        raise FeynmlpError("from_flax needs flax: pip install 'feynmlp[jax]'") from None
    if isinstance(model, nnx.Module):
        if activation is not None or output_activation is not None:
            raise FeynmlpError("from_flax: an NNX module carries its activations; pass activation only with "
                               "a linen parameter tree")
        if type(model) not in (nnx.Linear, nnx.Sequential, nnx.Dropout) and callable(model):
            # The user's own module: read through its jaxpr.
            from .jax_trace import read_traced
            widths = [node.in_features for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Linear)]
            mlp = read_traced(model, widths, "Flax")
            mlp.record = {"source": "flax", "model": type(model).__name__}
            return mlp
        steps: list[Any] = []
        _nnx_steps(model, type(model).__name__, steps)
        source = f"the Flax {type(model).__name__}"
    else:
        try:
            import flax.linen as linen
            if isinstance(model, linen.Module):
                raise FeynmlpError(
                    f"from_flax: got the linen module {type(model).__name__}, which holds no parameters; pass "
                    "its parameter tree (model.init(...) or the trained params) with activation=...")
        except ImportError:  # pragma: no cover - linen ships with flax
            pass
        steps = _linen_steps(model, activation, output_activation)
        source = "the linen parameter tree"
    mlp = build_mlp(steps, source)
    mlp.record = {"source": "flax"}
    return mlp
