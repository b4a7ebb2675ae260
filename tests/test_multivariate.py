"""feynmlp.multivariate and feynmlp.schemes.choose: the one path every scheme runs behind.

References: the coefficients of the forward scheme (every order pushed through every layer,
none of the top-vertex code) and torch (tests/helpers/torch_reference.py); the scheme each
request gets is written out by hand from the rules in feynmlp.schemes.
"""
from __future__ import annotations

import numpy as np
import pytest

import feynmlp
from feynmlp import forward, hessian, schemes, top_vertex
from feynmlp.errors import FeynmlpError
from feynmlp.multivariate import multivariate_series
from helpers.networks import random_layers, random_mlp
from helpers.torch_reference import check_against_torch


def request(sizes, order, output_activation=None, variables=None):
    weights, biases = random_layers(np.random.default_rng(0), sizes)
    variables = np.arange(sizes[0]) if variables is None else np.asarray(variables)
    return schemes.Request(tuple(weights), tuple(biases), ("tanh",) * (len(sizes) - 2), output_activation, order,
                           variables, np.dtype(np.float64), 5)


@pytest.mark.parametrize("sizes, order, asked, expected", [
    ((3, 4, 2), 2, "top-vertex", hessian.SCHEME),
    ((3, 4, 2), 3, "top-vertex", top_vertex.SCHEME),
    ((3, 4, 2), 5, "auto", top_vertex.SCHEME),
    ((3, 4, 2), 1, "top-vertex", forward.SCHEME),   # no vertex at order 1: the same pass
    ((3, 2), 3, "top-vertex", forward.SCHEME),      # no hidden layer: no vertex either
    ((3, 4, 2), 3, "forward", forward.SCHEME),
    ((3, 4, 70), 2, "auto", forward.SCHEME),         # more than 64 outputs at K = 2
    ((1, 4, 2), 3, "auto", forward.SCHEME),          # one variable
])
def test_each_request_gets_one_scheme_object(sizes, order, asked, expected):
    chosen = schemes.choose(request(sizes, order), asked)
    assert chosen is expected
    assert chosen.serves(request(sizes, order)) or expected is forward.SCHEME


def test_the_scheme_is_checked_where_it_is_picked():
    with pytest.raises(FeynmlpError, match="scheme must be one of auto, forward, top-vertex, got 'fastest'"):
        schemes.choose(request((3, 4, 2), 2), "fastest")
    with pytest.raises(FeynmlpError, match="needs a linear output layer"):
        schemes.choose(request((3, 4, 2), 2, output_activation="sigmoid"), "top-vertex")
    mlp = random_mlp(np.random.default_rng(1), (3, 4, 2), ["tanh"])
    with pytest.raises(FeynmlpError, match="got 'fastest'"):
        feynmlp.taylor(mlp, np.zeros(3), 2, scheme="fastest")


@pytest.mark.parametrize("order", [2, 3, 4])
def test_every_scheme_gives_the_same_coefficients_in_blocks_of_points(monkeypatch, order):
    # Blocks of 3 points (the memory budget's chunks), split again between two threads: the
    # blocks of each scheme must add up to the whole.
    rng = np.random.default_rng(order)
    weights, biases = random_layers(rng, (4, 6, 5, 2))
    points = rng.normal(size=(7, 4))
    for scheme in (hessian.SCHEME, top_vertex.SCHEME, forward.SCHEME):
        monkeypatch.setattr(type(scheme), "points_per_chunk", lambda self, request: 3)
    results = {name: multivariate_series(weights, biases, ["tanh", "sin"], None, points, order, wrt=[0, 2, 3],
                                         scheme=name) for name in ("forward", "top-vertex")}
    np.testing.assert_allclose(results["top-vertex"], results["forward"], rtol=1e-12,
                               atol=1e-13 * np.abs(results["forward"]).max())
    mlp = feynmlp.MLP(weights, biases, ["tanh", "sin"])
    check_against_torch(mlp, points, order, wrt=[0, 2, 3], scheme="top-vertex")
