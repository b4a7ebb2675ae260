"""Random networks for the tests.

In: a numpy Generator and the layer sizes (n_0, ..., n_L). Out: lists of weights (n_{l+1}, n_l)
and biases (n_{l+1},), or a feynmlp.MLP built from them. Both orders of drawing (all weights
first, or layer by layer) are offered because the seeded tests were written against the
networks each order draws; the same seed must keep giving the same network.
"""
from __future__ import annotations

import numpy as np

from feynmlp import MLP


def random_layers(rng: np.random.Generator, sizes, weight_scale=1.0, bias_scale=1.0, *,
                  per_fan_in: bool = False, layer_by_layer: bool = False):
    """(weights, biases) with weights N(0, 1) * weight_scale (divided by sqrt(n_l) with
    `per_fan_in`) and biases N(0, bias_scale^2).

    weight_scale: a number, or one number per layer. layer_by_layer: draw layer l's weight and
    bias before layer l+1's, instead of every weight before the first bias.
    """
    n_layers = len(sizes) - 1
    scales = list(weight_scale) if np.ndim(weight_scale) else [weight_scale] * n_layers

    def weight(layer):
        w = rng.normal(size=(sizes[layer + 1], sizes[layer])) * scales[layer]
        return w / np.sqrt(sizes[layer]) if per_fan_in else w

    def bias(layer):
        return rng.normal(scale=bias_scale, size=sizes[layer + 1])

    if layer_by_layer:
        weights, biases = [], []
        for layer in range(n_layers):
            weights.append(weight(layer))
            biases.append(bias(layer))
        return weights, biases
    weights = [weight(layer) for layer in range(n_layers)]
    return weights, [bias(layer) for layer in range(n_layers)]


def random_mlp(rng: np.random.Generator, sizes, activations, output_activation=None) -> MLP:
    """An MLP with layer sizes `sizes` = (n_0, ..., n_L) and N(0, 1/fan_in) weights.

    `activations`: one name for every hidden layer, or one per hidden layer. Weights after an
    exp layer are scaled by 0.3 so that stacked exp layers stay of order one (sigma = 0.3
    exp(sigma^2) has a stable fixed point near 0.33) instead of overflowing.
    """
    hidden = list(activations) if isinstance(activations, (list, tuple)) else [activations] * (len(sizes) - 2)
    gains = [0.3 if layer > 0 and hidden[layer - 1] == "exp" else 1.0 for layer in range(len(sizes) - 1)]
    weights, biases = random_layers(rng, sizes, gains, 0.5, per_fan_in=True, layer_by_layer=True)
    return MLP(weights, biases, activation=list(hidden), output_activation=output_activation)
