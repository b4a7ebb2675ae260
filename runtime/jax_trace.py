"""Reading a JAX module with its own `__call__` (Equinox or Flax NNX) through its jaxpr.

In: an Equinox or NNX module of the user's own class, built from eqx.nn.Linear / nnx.Linear
layers and activations, whose call maps one input vector to one output vector. Out: the
`MLP` it computes, or a `FeynmlpError` naming the operation and its source line.

The module is traced with `jax.make_jaxpr` on a float64 vector (x64 switched on for the
trace only), trying as the input width each Linear layer's in_features in the order the
module holds them. The jaxpr is then read equation by equation as a chain on the input:
- `dot_general` of the chain vector with a constant matrix: a linear layer;
- `add`, `sub`, `mul`, `div`, `neg` with a constant (scalar or vector) on a value used once:
  a scaling, folded into the neighbouring linear layer (feynmlp.layer_chain);
- an elementwise region: equations of elementwise primitives only (and calls whose bodies
  are such), with scalar constants only, from the chain value to the one value that leaves
  the region. Its function is evaluated at 161 points of [-8, 8] and must equal one of the
  registry's activations (feynmlp.activation_names.NUMPY_FUNCTIONS) to 1e-12 relative:
  `jax.nn.gelu(x, approximate=False)` written out with erfc is then read as "gelu", and a
  tanh-approximate GELU or a leaky ReLU of another slope, matching none, is refused;
- `convert_element_type` to a float type and `copy` leave the value as it is; calls (jit)
  of other bodies are read through.
Constant-only equations are evaluated with JAX itself (they are the module's own weights).
Anything else on the chain is refused with the primitive's name and source line.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from .activation_names import NUMPY_FUNCTIONS, short_repr
from .errors import FeynmlpError
from .layer_chain import Activation, Dense, Scale, build_mlp

__all__ = ["read_traced", "identify_elementwise"]

# Primitives that act entry by entry (with scalar constants, the same function on each entry).
ELEMENTWISE = {
    "add", "sub", "mul", "div", "neg", "tanh", "logistic", "exp", "exp2", "log", "log1p", "expm1",
    "erf", "erfc", "erf_inv", "sin", "cos", "tan", "sqrt", "rsqrt", "cbrt", "integer_pow", "pow",
    "max", "min", "abs", "sign", "select_n", "ge", "gt", "lt", "le", "eq", "ne", "convert_element_type",
    "copy", "copy_p", "square", "logaddexp", "stop_gradient", "and", "or", "not", "clamp", "nextafter",
}
CALLS = {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
         "custom_vjp_call_jaxpr", "remat", "checkpoint"}
SCALE_PRIMITIVES = {"add", "sub", "mul", "div", "neg"}
TEST_POINTS = np.linspace(-8.0, 8.0, 161)
MATCH_RTOL = 1e-12


@contextlib.contextmanager
def _x64():
    import jax
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(True):
            yield
    else:  # pragma: no cover - older JAX
        from jax.experimental import enable_x64
        with enable_x64():
            yield


def _place(eqn: Any) -> str:
    try:
        from jax._src import source_info_util
        text = source_info_util.summarize(eqn.source_info)
    except Exception:  # a private API: the messages do without it
        return ""
    head, _, function = text.partition(" ")
    return f"{os.path.basename(head)} {function}".strip()


def _where(eqn: Any) -> str:
    place = _place(eqn)
    return f"operation {eqn.primitive.name}" + (f" at {place}" if place else "")


def _sub_jaxpr(eqn: Any) -> Any:
    """The body of a call equation (a ClosedJaxpr or Jaxpr), or None."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        body = eqn.params.get(key)
        if body is not None:
            return body
    return None


def _is_elementwise(eqn: Any) -> bool:
    name = eqn.primitive.name
    if name in ELEMENTWISE:
        return True
    if name in CALLS:
        body = _sub_jaxpr(eqn)
        if body is None:
            return False
        inner = getattr(body, "jaxpr", body)
        return all(_is_elementwise(e) for e in inner.eqns)
    return False


def identify_elementwise(function: Any) -> str | None:
    """The registry activation equal to `function` (NumPy vector -> vector) at TEST_POINTS."""
    values = np.asarray(function(TEST_POINTS), dtype=np.float64)
    if values.shape != TEST_POINTS.shape or not np.all(np.isfinite(values)):
        return None
    for name, reference in NUMPY_FUNCTIONS.items():
        want = reference(TEST_POINTS)
        if np.all(np.abs(values - want) <= MATCH_RTOL * (1.0 + np.abs(want))):
            return name
    return None


class _Reader:
    def __init__(self, owner: str):
        self.owner = owner
        self.steps: list[Any] = []

    def refuse(self, eqn: Any, why: str) -> FeynmlpError:
        return FeynmlpError(f"{self.owner}: {_where(eqn)} {why}")

    # -- values ----------------------------------------------------------------------------

    @staticmethod
    def literal(var: Any) -> bool:
        return type(var).__name__ == "Literal"

    def read(self, env: dict, var: Any) -> Any:
        if self.literal(var):
            return np.asarray(var.val)
        return env[var]

    def run(self, jaxpr: Any, consts: list[Any], chain_in: Any) -> Any:
        """Interpret `jaxpr` with its one non-constant input the chain; returns its output value."""
        env: dict[Any, Any] = {}
        for var, value in zip(jaxpr.constvars, consts):
            env[var] = np.asarray(value)
        (x,) = jaxpr.invars
        env[x] = chain_in
        uses: dict[Any, int] = {}
        for eqn in jaxpr.eqns:
            for var in eqn.invars:
                if not self.literal(var):
                    uses[var] = uses.get(var, 0) + 1
        for var in jaxpr.outvars:
            if not self.literal(var):
                uses[var] = uses.get(var, 0) + 1
        eqns = list(jaxpr.eqns)
        index = 0
        while index < len(eqns):
            index = self.step(eqns, index, env, uses)
        (out,) = jaxpr.outvars
        return self.read(env, out)

    def is_chain(self, value: Any) -> bool:
        return isinstance(value, _Chain)

    def step(self, eqns: list[Any], index: int, env: dict, uses: dict) -> int:
        eqn = eqns[index]
        values = [self.read(env, v) for v in eqn.invars]
        chained = [v for v in values if self.is_chain(v)]
        if not chained:
            self.fold(eqn, values, env)
            return index + 1
        chain = chained[0]
        if any(v is not chain for v in chained):
            raise self.refuse(eqn, "combines two different values computed from the input (a residual "
                                   "connection?); an MLP is a chain of layers")
        name = eqn.primitive.name
        chain_var = next(v for v, value in zip(eqn.invars, values) if value is chain)
        single_use = uses.get(chain_var, 0) == 1 and len(chained) == 1
        if name == "dot_general":
            self.dense(eqn, values, chain)
            env[eqn.outvars[0]] = _Chain()
            return index + 1
        if name in SCALE_PRIMITIVES and single_use:
            self.scale(eqn, values, chain)
            env[eqn.outvars[0]] = _Chain()
            return index + 1
        if name in ("convert_element_type", "copy", "copy_p") and single_use:
            env[eqn.outvars[0]] = chain
            return index + 1
        if _is_elementwise(eqn) or uses.get(chain_var, 0) > 1:
            return self.region(eqns, index, env, uses, chain_var)
        if name in CALLS and _sub_jaxpr(eqn) is not None and len(chained) == 1:
            body = _sub_jaxpr(eqn)
            inner = getattr(body, "jaxpr", body)
            consts = list(getattr(body, "consts", []))
            if len(inner.invars) != len(values) or sum(self.is_chain(v) for v in values) != 1:
                raise self.refuse(eqn, "is a call feynmlp cannot read through")
            # Constant arguments become constants of the body.
            inner_env_consts = consts + [v for v in values if not self.is_chain(v)]
            chain_position = next(i for i, v in enumerate(values) if self.is_chain(v))
            result = self.run_call(inner, inner_env_consts, chain_position, values)
            env[eqn.outvars[0]] = result
            return index + 1
        raise self.refuse(eqn, "on the value computed from the input is not read (feynmlp reads linear "
                               "layers, scalings by constants and the registry's activations)")

    def run_call(self, inner: Any, consts: list[Any], chain_position: int, values: list[Any]) -> Any:
        from types import SimpleNamespace
        invars = list(inner.invars)
        chain_var = invars[chain_position]
        constvars = list(inner.constvars) + [v for i, v in enumerate(invars) if i != chain_position]
        proxy = SimpleNamespace(constvars=constvars, invars=[chain_var], eqns=inner.eqns, outvars=inner.outvars)
        if len(inner.outvars) != 1:
            raise FeynmlpError(f"{self.owner}: a call with {len(inner.outvars)} results is not read")
        return self.run(proxy, consts, values[chain_position])

    # -- constants -------------------------------------------------------------------------

    def fold(self, eqn: Any, values: list[Any], env: dict) -> None:
        """An equation of constants only, evaluated by JAX (the module's own weights)."""
        import jax.numpy as jnp
        try:
            with _x64():
                result = eqn.primitive.bind(*[jnp.asarray(v) for v in values], **eqn.params)
        except Exception as exc:
            raise self.refuse(eqn, f"computes with constants only and cannot be evaluated "
                                   f"({type(exc).__name__}: {short_repr(str(exc))})") from None
        if eqn.primitive.multiple_results:
            for var, value in zip(eqn.outvars, result):
                env[var] = np.asarray(value)
        else:
            env[eqn.outvars[0]] = np.asarray(result)

    # -- layers ----------------------------------------------------------------------------

    def dense(self, eqn: Any, values: list[Any], chain: Any) -> None:
        (contract_l, contract_r), (batch_l, batch_r) = eqn.params["dimension_numbers"]
        if batch_l or batch_r:
            raise self.refuse(eqn, "has batch dimensions; feynmlp reads a matrix times the input vector")
        chain_left = self.is_chain(values[0])
        matrix = np.asarray(values[1] if chain_left else values[0])
        contracted = (contract_r if chain_left else contract_l)
        if matrix.ndim != 2 or len(contracted) != 1:
            raise self.refuse(eqn, f"multiplies the input by a constant of shape {matrix.shape}; a linear "
                                   "layer's weight is a matrix")
        weight = matrix if contracted[0] == 1 else matrix.T
        self.steps.append(Dense(weight, None, _where(eqn)))

    def scale(self, eqn: Any, values: list[Any], chain: Any) -> None:
        name = eqn.primitive.name
        where = _where(eqn)
        if name == "neg":
            self.steps.append(Scale(-1.0, 0.0, where))
            return
        input_first = self.is_chain(values[0])
        other = np.asarray(values[1] if input_first else values[0])
        if other.dtype.kind not in "fiu":
            raise self.refuse(eqn, f"has a constant of dtype {other.dtype}")
        other = other.astype(np.float64)
        if name == "add":
            self.steps.append(Scale(1.0, other, where))
        elif name == "sub":
            self.steps.append(Scale(1.0, -other, where) if input_first else Scale(-1.0, other, where))
        elif name == "mul":
            self.steps.append(Scale(other, 0.0, where))
        elif input_first and np.all(other != 0):
            self.steps.append(Scale(1.0 / other, 0.0, where))
        else:
            raise self.refuse(eqn, "divides by the input or by zero, which is not an affine map")

    def region(self, eqns: list[Any], start: int, env: dict, uses: dict, chain_var: Any) -> int:
        """The elementwise equations from `chain_var` to the one value leaving them: an activation."""
        members = {chain_var}
        taken: list[Any] = []
        index = start
        while index < len(eqns):
            eqn = eqns[index]
            touches = [v for v in eqn.invars if not self.literal(v) and v in members]
            if not touches:
                values = [self.read(env, v) for v in eqn.invars]
                if any(self.is_chain(v) for v in values):
                    break
                self.fold(eqn, values, env)
                index += 1
                continue
            others = [self.read(env, v) for v in eqn.invars if self.literal(v) or v not in members]
            if not _is_elementwise(eqn) or any(self.is_chain(v) or np.size(v) != 1 for v in others):
                break
            taken.append(eqn)
            members.update(eqn.outvars)
            index += 1
        # The values of the region read after it (by later equations or as the result).
        inside = {}
        for eqn in taken:
            for var in eqn.invars:
                if not self.literal(var) and var in members:
                    inside[var] = inside.get(var, 0) + 1
        leaving = [v for v in members if uses.get(v, 0) > inside.get(v, 0)]
        first = eqns[start]
        if not taken:
            raise self.refuse(first, "reads the value computed from the input in a way feynmlp does not read")
        if len(leaving) != 1 or leaving[0] is chain_var:
            raise self.refuse(first, "starts elementwise operations whose results leave them more than once "
                                     "(or together with their input): the graph branches, which an MLP "
                                     "cannot express")
        (out,) = leaving
        shape = tuple(getattr(getattr(chain_var, "aval", None), "shape", ()) or ())
        name = identify_elementwise(lambda t: self.evaluate_in_shape(taken, chain_var, out, env, t, shape))
        where = f"{_where(first)} to {_where(taken[-1])}"
        if name is None:
            raise self.refuse(first, f"starts an elementwise function (to {_where(taken[-1])}) that equals none "
                                     "of the registry's activations at 161 points of [-8, 8]; use tanh, "
                                     "sigmoid, softplus, silu, exact gelu, sin, cos, exp or a ReLU-like one")
        if name != "identity":
            self.steps.append(Activation(name, where))
        env[out] = _Chain()
        return index

    def evaluate_in_shape(self, taken: list[Any], chain_var: Any, out: Any, env: dict, points: np.ndarray,
                          shape: tuple[int, ...]) -> np.ndarray:
        """The region at `points`, fed in arrays of the chain value's own shape (the calls in it
        were traced for that shape)."""
        size = int(np.prod(shape)) if shape else 1
        padded = np.concatenate([points, np.zeros((-len(points)) % size)])
        results = [self.evaluate_region(taken, chain_var, out, env, chunk.reshape(shape)).reshape(-1)
                   for chunk in padded.reshape(-1, size)]
        return np.concatenate(results)[:len(points)]

    def evaluate_region(self, taken: list[Any], chain_var: Any, out: Any, env: dict, points: np.ndarray) -> Any:
        import jax.numpy as jnp
        local = {chain_var: None}
        with _x64():
            local[chain_var] = jnp.asarray(points, dtype=jnp.float64)
            for eqn in taken:
                args = []
                for var in eqn.invars:
                    if self.literal(var):
                        args.append(jnp.asarray(var.val))
                    elif var in local:
                        args.append(local[var])
                    else:
                        args.append(jnp.asarray(np.asarray(env[var]).reshape(())))
                result = eqn.primitive.bind(*args, **eqn.params)
                if eqn.primitive.multiple_results:
                    for var, value in zip(eqn.outvars, result):
                        local[var] = value
                else:
                    local[eqn.outvars[0]] = result
            return np.asarray(local[out], dtype=np.float64)


class _Chain:
    """The value computed from the input at one point of the chain."""


def read_traced(module: Any, widths: list[int], kind: str) -> Any:
    """The MLP that `module(x)` computes for a vector x (see the module docstring).

    Args:
        module: the callable module.
        widths: candidate input widths (the in_features of its Linear layers, in order).
        kind: "Equinox" or "Flax", for the messages.
    """
    import jax
    import jax.numpy as jnp

    owner = f"{kind} module {type(module).__name__}"
    if not widths:
        raise FeynmlpError(f"{owner} ({short_repr(module)}) holds no Linear layer; an MLP needs at least one")
    failures = []
    closed = None
    for width in dict.fromkeys(widths):
        try:
            with _x64():
                closed = jax.make_jaxpr(lambda v: module(v))(jnp.zeros(width, dtype=jnp.float64))
            break
        except Exception as exc:
            failures.append(f"{width}: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
    if closed is None:
        raise FeynmlpError(f"{owner}: calling it on a vector of each Linear input width failed ("
                           f"{'; '.join(failures)[:300]}); its call must map one input vector to one output vector")
    jaxpr = closed.jaxpr
    if len(jaxpr.invars) != 1 or len(jaxpr.outvars) != 1:
        raise FeynmlpError(f"{owner}: its call has {len(jaxpr.invars)} inputs and {len(jaxpr.outvars)} outputs; "
                           "an MLP has one of each")
    reader = _Reader(owner)
    result = reader.run(jaxpr, list(closed.consts), _Chain())
    if not isinstance(result, _Chain):
        raise FeynmlpError(f"{owner}: its output does not depend on its input")
    return build_mlp(reader.steps, owner)
