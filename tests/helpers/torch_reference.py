"""The torch reference: a feynmlp.MLP's function written in torch float64, differentiated by
nested torch.func.jacfwd, and the relative-error check the tests compare with.

In: an MLP (weights, biases, activation names; custom SymPy activations through `custom`), a
point, a direction, an order. Out: dense derivative tensors d^k f_o / dx_i1 ... dx_ik, shapes
(n_out,) + (n,)*k, or the coefficients of t -> f(x + v t). Nothing of feynmlp's expansion code
runs here; feynmlp.taylor is called only by check_against_torch, which compares it with them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import jacfwd, jvp
from torch.nn import functional as F

import feynmlp
from feynmlp import MLP

RTOL = 1e-9
# The floor of the norm in the relative error: when every reference entry is 0 (a linear
# network's higher derivatives), feynmlp must return 0 too, up to this absolute amount.
TINY = 1e-300

BUILTIN = ("tanh", "sigmoid", "softplus", "silu", "gelu", "sin", "cos", "exp", "identity")

TORCH_ACTIVATIONS = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    # The exact log(1 + e^z) (feynmlp's softplus); F.softplus linearises above z = 20.
    "softplus": lambda z: torch.logaddexp(torch.zeros_like(z), z),
    "silu": F.silu,
    "gelu": lambda z: F.gelu(z, approximate="none"),
    "sin": torch.sin,
    "cos": torch.cos,
    "exp": torch.exp,
    "identity": lambda z: z,
    "relu": F.relu,
}


def torch_network(mlp: MLP, custom=None):
    """The function x (n_in,) -> f(x) (n_out,) of `mlp`, written in torch float64.

    `custom` maps a hidden layer's SymPy activation (by its string) to a torch function.
    """
    custom = custom or {}
    weights = [torch.as_tensor(w, dtype=torch.float64) for w in mlp.weights]
    biases = [torch.as_tensor(b, dtype=torch.float64) for b in mlp.biases]
    functions = [TORCH_ACTIVATIONS[a] if isinstance(a, str) else custom[str(a)] for a in mlp.hidden_activations]
    output = TORCH_ACTIVATIONS[mlp.output_activation] if mlp.output_activation is not None else None

    def f(x):
        z = weights[0] @ x + biases[0]
        for layer in range(1, len(weights)):
            z = weights[layer] @ functions[layer - 1](z) + biases[layer]
        return output(z) if output is not None else z

    return f


def torch_derivative_tensors(f, x, order: int) -> list[np.ndarray]:
    """[f(x), Df(x), ..., D^order f(x)]: nested torch.func.jacfwd, shapes (n_out,) + (n,)*k."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    tensors, g = [], f
    for k in range(order + 1):
        tensors.append(g(x).detach().numpy())
        g = jacfwd(g)
    return tensors


def torch_directional_coefficients(f, x, v, order: int) -> np.ndarray:
    """Coefficients of t -> f(x + v t) up to t^order, (n_out, order + 1): nested jacfwd in t,
    the k-th derivative divided by k!."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    v = torch.as_tensor(np.asarray(v, dtype=np.float64))
    g = lambda t: f(x + t * v)  # noqa: E731 - the function torch differentiates
    t0 = torch.tensor(0.0, dtype=torch.float64)
    coefficients = []
    for k in range(order + 1):
        coefficients.append(g(t0).detach().numpy() / math.factorial(k))
        g = jacfwd(g)
    return np.stack(coefficients, axis=-1)


def torch_directional_series(f, x, v, order: int) -> np.ndarray:
    """(n_out, order + 1): d^k/dt^k f(x + t v) / k! at t = 0, by nesting torch.func.jvp."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    v = torch.as_tensor(np.asarray(v, dtype=np.float64))

    def along_v(g):
        return lambda y: jvp(g, (y,), (v,))[1]

    series, g = [], f
    for k in range(order + 1):
        series.append(g(x).detach().numpy() / math.factorial(k))
        g = along_v(g)
    return np.stack(series, axis=-1)


def torch_index_derivative(ws, bs, x, acts, idx) -> np.ndarray:
    """(n_out,) d^k f_o / dx_idx[0] ... dx_idx[k-1] at x, by repeated torch.autograd.grad, for
    raw weights and biases and one activation name per hidden layer (tanh, sigmoid, sin, or
    softplus as torch.nn.functional.softplus); linear output."""
    fn = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "sin": torch.sin,
          "softplus": torch.nn.functional.softplus}
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    a = xt
    for l, (w, b) in enumerate(zip(ws, bs)):
        z = torch.tensor(w) @ a + torch.tensor(b)
        a = fn[acts[l]](z) if l < len(ws) - 1 else z
    out = []
    for o in range(a.shape[0]):
        g = a[o]
        for i in idx:
            g = torch.autograd.grad(g, xt, create_graph=True)[0][i]
        out.append(g.item())
    return np.array(out)


def assert_relative_close(got, want, rtol: float = RTOL, what: str = "") -> None:
    """max |got - want| <= rtol * max(max |want|, TINY), with matching shapes."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values {got}"
    scale = max(float(np.max(np.abs(want), initial=0.0)), TINY)
    error = float(np.max(np.abs(got - want), initial=0.0))
    assert error <= rtol * scale, (f"{what}: max |got - want| = {error:.3e} > {rtol:g} * {scale:.3e} "
                                   f"(relative {error / scale:.3e})")


def check_against_torch(mlp: MLP, x, order: int, custom=None, wrt=None, scheme="auto") -> feynmlp.TaylorExpansion:
    """feynmlp.taylor(mlp, x, order) against nested jacfwd, every derivative order 0..order."""
    expansion = feynmlp.taylor(mlp, x, order, wrt=wrt, scheme=scheme)
    f = torch_network(mlp, custom)
    points = np.atleast_2d(x)
    for p, point in enumerate(points):
        reference = torch_derivative_tensors(f, point, order)
        for k in range(order + 1):
            want = reference[k]
            if wrt is not None:
                want = want[(slice(None),) + np.ix_(*[list(wrt)] * k)] if k else want
            got = expansion.derivative_tensor(k)
            got = got if np.ndim(x) == 1 else got[p]
            assert_relative_close(got, want, what=f"{mlp!r} ({scheme}) at point {p}, derivative order {k} of {order}")
    return expansion
