"""feynmlp.schemes.choose_scheme: which scheme scheme="auto" runs, by the network's shape.

The rules, from its docstring: everything pushed forward for order 1, an output activation or
one variable; otherwise the topmost vertex up to a number of outputs m that depends on the
order K: m <= 64 at K = 2 (where it was measured faster up to m = 64), and at K >= 3 a bound
that stays at or below the measured crossover (m = 16 at K = 3) and never grows with K. The
bounds below are written out by hand from that rule: 16 // (K - 1), at least 4.
"""
from __future__ import annotations

import numpy as np
import pytest

import feynmlp
from feynmlp import hessian, schemes, top_vertex
from feynmlp.schemes import choose_scheme
from helpers.networks import random_mlp

# The largest number of outputs still given the topmost vertex, per order K.
LIMITS = {2: 64, 3: 8, 4: 5, 5: 4, 6: 4, 7: 4, 9: 4}


@pytest.mark.parametrize("outputs", [1, 2, 64, 1000])
@pytest.mark.parametrize("n_vars", [1, 2, 32])
def test_order_one_is_pushed_forward(outputs, n_vars):
    assert choose_scheme(outputs, 1, False, n_vars) == "forward"


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("outputs", [1, 4, 100])
def test_an_output_activation_is_pushed_forward(order, outputs):
    # The contraction needs a linear output layer: its propagators are the last weights.
    assert choose_scheme(outputs, order, True, 8) == "forward"


@pytest.mark.parametrize("order", [2, 3, 6])
def test_one_variable_is_pushed_forward_and_two_take_the_top_vertex(order):
    assert choose_scheme(1, order, False, 1) == "forward"
    assert choose_scheme(1, order, False, 2) == "top-vertex"


@pytest.mark.parametrize("order,limit", sorted(LIMITS.items()))
def test_the_bound_on_outputs_per_order(order, limit):
    assert choose_scheme(limit, order, False, 3) == "top-vertex"
    assert choose_scheme(limit + 1, order, False, 3) == "forward"
    assert choose_scheme(1, order, False, 3) == "top-vertex"
    assert choose_scheme(10 * limit, order, False, 3) == "forward"


def test_the_bounds_stay_below_the_measured_crossover_and_never_grow_with_the_order():
    def largest_top_vertex(order):
        return max(m for m in range(1, 200) if choose_scheme(m, order, False, 4) == "top-vertex")

    bounds = [largest_top_vertex(order) for order in range(3, 12)]
    assert bounds[0] <= 16
    assert all(later <= earlier for earlier, later in zip(bounds, bounds[1:]))
    assert min(bounds) >= 4


@pytest.mark.parametrize("outputs,order,picked", [(3, 2, "top-vertex"), (65, 2, "forward"),
                                                  (3, 3, "top-vertex"), (9, 3, "forward")])
def test_auto_runs_the_scheme_the_picker_names(monkeypatch, outputs, order, picked):
    # feynmlp.taylor(scheme="auto") asks the picker with the network's shape and runs its
    # answer: order 2 by the topmost vertex is feynmlp.hessian, order >= 3 the contraction.
    asked, hessians, contractions = [], [], []
    real_choose, real_expand, real_contract = schemes.choose_scheme, hessian.SCHEME.expand, top_vertex.contract

    def spy_choose(*args):
        asked.append(args)
        return real_choose(*args)

    def spy_expand(*args, **kwargs):
        hessians.append(1)
        return real_expand(*args, **kwargs)

    def spy_contract(*args, **kwargs):
        contractions.append(1)
        return real_contract(*args, **kwargs)

    # feynmlp.schemes.choose asks the picker through its own module's name for it.
    monkeypatch.setattr(schemes, "choose_scheme", spy_choose)
    monkeypatch.setattr(hessian.SCHEME, "expand", spy_expand)
    monkeypatch.setattr(top_vertex, "contract", spy_contract)
    rng = np.random.default_rng(outputs + order)
    mlp = random_mlp(rng, (3, 4, outputs), ["tanh"])
    points = rng.normal(size=(2, 3))
    auto = feynmlp.taylor(mlp, points, order)
    assert asked == [(outputs, order, False, 3)]
    ran_top_vertex = bool(hessians) if order == 2 else bool(contractions)
    assert ran_top_vertex == (picked == "top-vertex")
    explicit = feynmlp.taylor(mlp, points, order, scheme=picked)
    assert np.array_equal(auto.coefficients, explicit.coefficients)
