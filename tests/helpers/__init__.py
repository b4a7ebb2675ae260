"""Helpers shared by the tests, imported as the package `helpers` (pyproject.toml's
[tool.pytest.ini_options] puts tests/ on the import path).

- helpers.networks: random networks (weights, biases, feynmlp.MLP) from a seeded generator.
- helpers.torch_reference: the networks written in torch float64, their derivative tensors and
  directional series by nested torch.func.jacfwd, and the relative-error assertion.
- helpers.symbolic_reference: the networks written out in SymPy and differentiated by `diff`.

The references use nothing of feynmlp but the weights and activation names of the network.
"""
