"""The activation registry: each activation's Taylor derivatives of any order, derived by SymPy.

In: an activation name (built-in) or a SymPy expression in one symbol (custom), and an order K.
Out: an `ActivationSpec` whose `taylor_derivatives(K)` gives s^(m)(z)/m! for m = 0..K as SymPy
expressions in the pre-activation `z` and a few "carrier" symbols (tanh(z) for tanh, the
logistic function for sigmoid/softplus/SiLU, the normal CDF and density for GELU, ...), together
with the numeric code that computes each carrier once per neuron.

Why carriers: the derivatives of most activations are polynomials in the activation's own value
(tanh' = 1 - t^2, sigma' = sigma (1 - sigma)); computing t once and evaluating polynomials is
both cheaper and numerically better than differentiating the closed form symbolically, whose
expressions grow quickly with the order. Every carrier u comes with du/dz expressed through z
and the carriers, so the derivation is the chain rule in a polynomial ring, exact at any order.

ReLU-like activations are first-order only (feynmlp.activation_names explains why, and holds
their shapes); their values and first derivatives are written as code from those shapes here,
since SymPy's Heaviside is not code.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re

import numpy as np
import sympy as sp

from ..activation_names import (BUILTIN_ACTIVATIONS, PIECEWISE_LINEAR, RELU_LIKE, PiecewiseLinear, canonical_name,
                                check_custom_expression, check_order_supported)

Z = sp.Symbol("x", real=True)  # the pre-activation; named x in the generated code
# The pre-activation clamped to [-far_out, far_out] (see ActivationSpec.decaying); named xc.
ZC = sp.Symbol("xc", real=True)


@dataclasses.dataclass(frozen=True)
class Carrier:
    """An auxiliary function u(z) computed once per neuron.

    Attributes:
        symbol: the SymPy symbol standing for u in derivative expressions.
        code: Python/Numba source computing u from the local variable `x` (math module only).
        derivative: du/dz as a SymPy expression in Z and carrier symbols.
        definition: u(z) as a SymPy expression in Z (for LaTeX and for tests).
    """

    symbol: sp.Symbol
    code: str
    derivative: sp.Expr
    definition: sp.Expr


@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    """One activation: its value through carriers, and how to differentiate it to any order.

    Attributes:
        name: identifier used in file names (`tanh`, or `custom_<hash>` for custom ones).
        value: s(z) as a SymPy expression in Z and the carrier symbols.
        carriers: carriers in dependency order (each may use earlier ones in its code).
        definition: s(z) as a plain SymPy expression in Z (what the user would write).
        max_order: highest derivative order that exists as a function (None: any order).
        first_order_code: for ReLU-like activations, hand-written (value, derivative) code.
        preamble: statements run before the carriers' code, computing locals they share (their
            names checked like a carrier's; a nested line carries its own extra indentation).
        decaying: carrier symbols whose product D vanishes far out faster than any power of z
            grows (the Gaussian density of GELU; g*h = sigma(z) sigma(-z) of SiLU), so that in
            floating point D is exactly 0 once |z| >= far_out.
        far_out: that bound (None when `decaying` is empty).
        vector_inputs: for the array form of the kernel (`taylor_derivatives_vector`), one
            float64 work row per entry, (name, ufunc, argument): the row `name` holds the NumPy
            ufunc `ufunc` of `argument`, which is `x` (the array itself), the name of an earlier
            row, or per-element arithmetic code of x (no math module), which a compiled loop
            writes into the row before the ufunc runs on it in place. Empty: the activation
            has no array form.
        vector_carriers: with vector_inputs, each carrier's code per element, reading x and the
            vector inputs' elements by their names (math module allowed).

    Why an array form: the element loop of `taylor_derivatives` calls exp or expm1 per neuron
    and point, which Numba cannot vectorise (the LLVM of PyPI's llvmlite has no vector math
    library); NumPy's ufuncs evaluate exp, log1p and tanh with SIMD instructions. The array
    form lets NumPy compute the transcendental functions and leaves a loop of arithmetic
    only, which LLVM vectorises. Measured per value at order 2, one core, 3840 to 32768
    values: tanh 3.6-4.1 ns against 7.0-9.8 ns, sigmoid 3.7 against 7.5, softplus 4.7 against
    18.7, exp 1.5 against 4.3.

    Why `decaying`: a derivative term D * z^k is 0 far out, but evaluated as written z^k
    overflows to inf there (z^2 at |z| > 1.3e154) and 0 * inf is NaN. The kernels therefore
    evaluate the polynomial factor of every term carrying D at the clamped ZC, which equals z
    wherever D is not exactly 0 and keeps the factor finite elsewhere (see `kernel_assignments`).
    """

    name: str
    value: sp.Expr
    carriers: tuple[Carrier, ...]
    definition: sp.Expr
    max_order: int | None = None
    first_order_code: tuple[str, str] | None = None
    preamble: tuple[str, ...] = ()
    decaying: tuple[sp.Symbol, ...] = ()
    far_out: float | None = None
    vector_inputs: tuple[tuple[str, str, str], ...] = ()
    vector_carriers: tuple[str, ...] = ()

    def __post_init__(self):
        assert len(self.vector_carriers) == (len(self.carriers) if self.vector_inputs else 0), \
            f"{self.name}: one vector carrier per carrier, and only with vector inputs"
        self.vector_steps()  # checks the vector inputs

    def vector_steps(self) -> tuple[list[str], list[tuple[int, str]], list[tuple[str, int, int]]]:
        """The array form as the kernel template takes it: the work rows' names; the rows a
        compiled loop fills with arithmetic of x, (row, code); the ufunc calls in order,
        (ufunc, source row or -1 for x itself, target row)."""
        names = [name for name, _, _ in self.vector_inputs]
        prepared, ufuncs = [], []
        for row, (name, ufunc, argument) in enumerate(self.vector_inputs):
            _check_local(name)
            assert isinstance(getattr(np, ufunc, None), np.ufunc), f"{self.name}: {ufunc!r} is not a NumPy ufunc"
            if argument == "x":
                source = -1
            elif argument in names[:row]:
                source = names.index(argument)
            else:
                assert not argument.isidentifier(), \
                    f"{self.name}: {name} reads {argument!r}, which is neither x nor an earlier row"
                prepared.append((row, argument))
                source = row
            ufuncs.append((ufunc, source, row))
        return names, prepared, ufuncs

    def total_derivative(self, expr: sp.Expr) -> sp.Expr:
        """d/dz of an expression in Z and the carriers (the chain rule through each carrier)."""
        result = sp.diff(expr, Z)
        for carrier in self.carriers:
            result += sp.diff(expr, carrier.symbol) * carrier.derivative
        return sp.expand(result)

    def taylor_derivatives(self, order: int) -> list[sp.Expr]:
        """[s(z), s'(z)/1!, ..., s^(order)(z)/order!] in terms of Z and the carriers."""
        if self.max_order is not None and order > self.max_order:
            check_order_supported(self.name, order)
        return list(_taylor_derivatives(self, order))

    def signature(self) -> str:
        """A stable text that changes whenever the generated code for this activation would."""
        parts = [self.name, sp.srepr(self.value), sp.srepr(self.definition)]
        for c in self.carriers:
            parts += [sp.srepr(c.symbol), c.code, sp.srepr(c.derivative)]
        if self.first_order_code:
            parts += list(self.first_order_code)
        parts += list(self.preamble)
        if self.decaying:
            parts += [sp.srepr(sp.Tuple(*self.decaying)), repr(self.far_out)]
        if self.vector_inputs:
            parts += [f"{name} = {ufunc}({argument})" for name, ufunc, argument in self.vector_inputs]
            parts += list(self.vector_carriers)
        return "\n".join(parts)

    def kernel_assignments(self, order: int) -> tuple[list[str], list[sp.Expr], list[str]]:
        """What the kernels compute: (names, expressions) for `printing.assignments`, and the
        statements that must run before them (the clamp of x, if any).

        Without decaying carriers: s_m = taylor_derivatives(order)[m]. With them, each s_m is
        split into the terms without D, kept as they are, and D * F_m(g, h, ..., ZC): F_m is
        assigned first, to _f<m> (1/m! included), and s_m = rest + _f<m> * D. Two reasons for
        the separate F_m: the polynomial is evaluated at the clamped ZC (finite far out, see the
        class docstring), and D multiplies the finished polynomial last, so that where D is
        subnormal (|z| just below far_out) it is not first multiplied by 1/m! into 0 while the
        true s_m is still a normal float.
        """
        derivatives = self.taylor_derivatives(order)
        names = [f"s{m}" for m in range(order + 1)]
        if not self.decaying:
            return names, derivatives, []
        product = sp.Mul(*self.decaying)
        factor_names, factors, values = [], [], []
        for m, derivative in enumerate(derivatives):
            kept, decaying = [], []
            for term in sp.Add.make_args(sp.expand(derivative)):
                (decaying if all(term.has(c) for c in self.decaying) else kept).append(term)
            value = sp.Add(*kept)
            if decaying:
                factor = sp.expand(sp.Add(*decaying) / product).xreplace({Z: ZC})
                if not factor.is_Atom:
                    factor_names.append(_check_local(f"_f{m}"))
                    factors.append(factor)
                    factor = sp.Symbol(factor_names[-1], real=True)
                value += factor * product
            values.append(value)
        clamp = f"{_check_local(ZC.name)} = min(max(x, {-self.far_out!r}), {self.far_out!r})"
        return factor_names + names, factors + values, [clamp]


@functools.lru_cache(maxsize=None)
def _taylor_derivatives(spec: ActivationSpec, order: int) -> tuple[sp.Expr, ...]:
    # Derivatives are built incrementally and cached: order K reuses order K-1's work.
    if order == 0:
        return (spec.value,)
    lower = _taylor_derivatives(spec, order - 1)
    raw = spec.total_derivative(lower[-1] * math.factorial(order - 1))
    return lower + (sp.expand(raw / math.factorial(order)),)


# Local names of the kernel template: a carrier must not shadow any of them.
_TEMPLATE_LOCALS = {"x", "z", "o", "r", "i", "j", "k", "w", "series", "out", "points", "width", "target",
                    "derivatives", "row"}


def _check_local(name: str) -> str:
    # Numbered names (s2, p1, c3, v2, a1, _d0, _c1) are the kernel's own locals as well.
    assert name not in _TEMPLATE_LOCALS and not re.fullmatch(r"_?[spcvad]\d+", name), f"local name {name!r} clashes"
    return name


def _carrier(name: str, code: str, derivative, definition) -> Carrier:
    return Carrier(sp.Symbol(_check_local(name), real=True), code, derivative, definition)


def _builtin(name: str) -> ActivationSpec:
    z = Z
    if name == "tanh":
        # Two carriers, t = tanh(z) and u = 1 - t^2 = sech^2(z) computed directly: every
        # derivative of order >= 1 carries a factor u, and 1 - t*t would lose all relative
        # precision once the neuron saturates (|z| > 10). Both come from one exponential,
        # ex = e^(-2|z|) and mx = 1 - ex (expm1 below |z| = 1, where 1 - ex would cancel):
        # t = sign(z) mx / (1 + ex), u = 4 ex / (1 + ex)^2, within 1e-15 of tanh and the
        # exp form of u everywhere, and 40 % faster than calling tanh and exp.
        t, u = sp.Symbol("t", real=True), sp.Symbol("u", real=True)
        preamble = (f"{_check_local('ax')} = abs(x)",
                    "if ax < 1.0:",
                    f"    {_check_local('mx')} = -math.expm1(-2.0 * ax)",
                    f"    {_check_local('ex')} = 1.0 - mx",
                    "else:",
                    "    ex = math.exp(-2.0 * ax)",
                    "    mx = 1.0 - ex")
        # The array form takes t from NumPy's tanh and u from the same exact form of e^(-2|z|).
        return ActivationSpec(name, t, (
            _carrier("t", "math.copysign(mx / (1.0 + ex), x)", u, sp.tanh(z)),
            _carrier("u", "4.0 * ex / ((1.0 + ex) * (1.0 + ex))", -2 * t * u, 1 - sp.tanh(z)**2),
        ), sp.tanh(z), preamble=preamble,
            vector_inputs=(("tv", "tanh", "x"), ("ex", "exp", "-2.0 * abs(x)")),
            vector_carriers=("tv", "4.0 * ex / ((1.0 + ex) * (1.0 + ex))"))
    if name in ("sigmoid", "softplus", "silu"):
        # g = sigma(z) and h = 1 - g = sigma(-z), each evaluated on the side where exp() cannot
        # overflow; carrying h separately keeps relative precision in saturation, where
        # 1 - g would cancel.
        g, h = sp.Symbol("g", real=True), sp.Symbol("h", real=True)
        logistic = (
            _carrier("g", "1.0 / (1.0 + math.exp(-x)) if x >= 0.0 else math.exp(x) / (1.0 + math.exp(x))",
                     g * h, 1 / (1 + sp.exp(-z))),
            _carrier("h", "math.exp(-x) / (1.0 + math.exp(-x)) if x >= 0.0 else 1.0 / (1.0 + math.exp(x))",
                     -g * h, 1 / (1 + sp.exp(z))),
        )
        # The array form: en = e^(-|z|) from NumPy, g and h from it on the same sides.
        vector = dict(vector_inputs=(("en", "exp", "-abs(x)"),),
                      vector_carriers=("1.0 / (1.0 + en) if x >= 0.0 else en / (1.0 + en)",
                                       "en / (1.0 + en) if x >= 0.0 else 1.0 / (1.0 + en)"))
        if name == "sigmoid":
            return ActivationSpec(name, g, logistic, 1 / (1 + sp.exp(-z)), **vector)
        if name == "silu":
            # Every term of s^(m), m >= 1, with a power of z carries g*h <= e^-|z|, which is
            # exactly 0 in floating point beyond |z| = 745.2 (the smallest subnormal is e^-744.4).
            return ActivationSpec(name, z * g, logistic, z / (1 + sp.exp(-z)), decaying=(g, h), far_out=800.0,
                                  **vector)
        # softplus(z) = log(1 + e^z), written so that neither branch overflows.
        sp_value = _carrier("v", "max(x, 0.0) + math.log1p(math.exp(-abs(x)))", g, sp.log(1 + sp.exp(z)))
        return ActivationSpec(name, sp_value.symbol, logistic + (sp_value,), sp.log(1 + sp.exp(z)),
                              vector_inputs=vector["vector_inputs"] + (("lp", "log1p", "en"),),
                              vector_carriers=vector["vector_carriers"] + ("max(x, 0.0) + lp",))
    if name == "gelu":
        # GELU in its exact (erf) form: z * Phi(z), Phi the standard normal CDF, phi its density.
        phi_s, cdf_s = sp.Symbol("q", real=True), sp.Symbol("c", real=True)
        density = _carrier("q", "0.3989422804014327 * math.exp(-0.5 * x * x)", -z * phi_s,
                           sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi))
        cdf = _carrier("c", "0.5 * math.erfc(-x * 0.7071067811865476)", phi_s,
                       (1 + sp.erf(z / sp.sqrt(2))) / 2)
        # Every term of s^(m) with a power of z carries the density q, which is exactly 0 in
        # floating point beyond |z| = 38.6 (e^(-z^2/2) below e^-745); q is float64 even for a
        # float32 x (the literals promote it).
        # No array form: erfc, which NumPy lacks, costs most of the element loop (measured: an
        # array form with NumPy's exp gained 10 %).
        return ActivationSpec(name, z * cdf_s, (density, cdf), z * (1 + sp.erf(z / sp.sqrt(2))) / 2,
                              decaying=(phi_s,), far_out=40.0)
    if name in ("sin", "cos"):
        sn, cs = sp.Symbol("sn", real=True), sp.Symbol("cs", real=True)
        carriers = (_carrier("sn", "math.sin(x)", cs, sp.sin(z)), _carrier("cs", "math.cos(x)", -sn, sp.cos(z)))
        # No array form: NumPy's float64 sin and cos were twice as slow as the element loop here.
        return ActivationSpec(name, sn if name == "sin" else cs, carriers, sp.sin(z) if name == "sin" else sp.cos(z))
    if name == "exp":
        e = sp.Symbol("e", real=True)
        return ActivationSpec(name, e, (_carrier("e", "math.exp(x)", e, sp.exp(z)),), sp.exp(z),
                              vector_inputs=(("ev", "exp", "x"),), vector_carriers=("ev",))
    if name == "identity":
        return ActivationSpec(name, z, (), z)
    if name in RELU_LIKE:
        return _relu_like(name)
    raise AssertionError(f"no definition for built-in activation {name!r}")  # registry out of sync


def _relu_like(name: str) -> ActivationSpec:
    value_code, derivative_code = _piecewise_linear_code(PIECEWISE_LINEAR[name])
    return ActivationSpec(name, Z, (), _piecewise_linear_definition(PIECEWISE_LINEAR[name]), max_order=1,
                          first_order_code=(value_code, derivative_code))


def _piecewise_linear_code(shape: PiecewiseLinear) -> tuple[str, str]:
    """(value, first derivative) as code in the local variable x; at a kink the derivative is
    the one PyTorch's autograd gives (0 for ReLU at 0, the slope for the leaky one). Written
    as code from the shape, since SymPy's Heaviside is not code."""
    lower, upper, slope = shape.lower, shape.upper, shape.slope
    if slope:
        assert lower == 0.0 and upper == math.inf, "a leaky kink sits at 0 and has no upper clamp"
        return f"x if x > 0.0 else {slope!r} * x", f"1.0 if x > 0.0 else {slope!r}"
    if upper == math.inf:
        return f"max(x, {lower!r})", f"1.0 if x > {lower!r} else 0.0"
    return f"min(max(x, {lower!r}), {upper!r})", f"1.0 if {lower!r} < x < {upper!r} else 0.0"


def _piecewise_linear_definition(shape: PiecewiseLinear) -> sp.Expr:
    """s(z) as SymPy writes it, the bounds and slope as exact rationals (0.01 -> 1/100)."""
    lower = sp.Rational(repr(shape.lower))
    if shape.slope:
        return sp.Piecewise((Z, Z > lower), (sp.Rational(repr(shape.slope)) * Z, True))
    clamped = sp.Max(Z, lower)
    return clamped if shape.upper == math.inf else sp.Min(clamped, sp.Rational(repr(shape.upper)))


def get_activation(activation) -> ActivationSpec:
    """The spec of a built-in activation name, or of a custom SymPy expression in one symbol."""
    if isinstance(activation, ActivationSpec):
        return activation
    if isinstance(activation, sp.Basic):
        return custom_activation(activation)
    return _builtin(canonical_name(activation))


def custom_activation(expr: sp.Expr) -> ActivationSpec:
    """A user-defined activation s(z) given as a SymPy expression in exactly one free symbol.

    Derivatives are SymPy's own `diff` of the expression (no carriers), so any smooth
    expression built from functions SymPy can print for the math module works.
    """
    check_custom_expression(expr, "activation", smooth=True)
    (free,) = expr.free_symbols
    body = expr.xreplace({free: Z})
    digest = hashlib.sha256(sp.srepr(body).encode()).hexdigest()[:12]
    return ActivationSpec(f"custom_{digest}", body, (), body)


def builtin_names() -> tuple[str, ...]:
    """Every activation with shipped kernels: the smooth ones, then the first-order-only ones."""
    return BUILTIN_ACTIVATIONS + RELU_LIKE
