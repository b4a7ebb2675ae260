"""`feynmlp convert SOURCE OUT`: a model file of another program as a feynmlp model file.

In: SOURCE, a file that `feynmlp.load` reads (.onnx, .keras, or feynmlp's own .safetensors
/ .npz), and OUT, a path ending in .safetensors (preferred) or .npz. Out: OUT written
atomically (nothing is left behind on failure), and on stdout the architecture found: the
layer sizes, each layer's activation, the output activation. Exit status 0, or 2 with one
line on stderr naming the bad value.

Pickle-based files (.pt, .pth, .pkl, .joblib) are refused: loading one runs code named in the
file. Their models are read in Python, from the live object: MLP.from_torch(module),
MLP.from_sklearn(estimator).
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from .errors import FeynmlpError, ModelFileError

CLI_DESCRIPTION = """\
Read a model file written by another program and write it as a feynmlp model file
(.safetensors or .npz), printing the architecture found.

SOURCE may be an ONNX file (.onnx; needs the [onnx] extra), a Keras 3 file (.keras; needs the
[keras] extra), or a feynmlp .safetensors / .npz file. Anything that is not a multilayer
perceptron of supported activations is refused, naming the layer. Pickled models (.pt, .pth,
.pkl, .joblib) are never loaded, because unpickling runs code: read those in Python with
MLP.from_torch / MLP.from_sklearn and call mlp.save(...).
"""

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".joblib", ".ckpt", ".bin")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="the model file to read (.onnx, .keras, .safetensors, .npz)")
    parser.add_argument("output", metavar="OUT", help="the feynmlp model file to write (.safetensors or .npz)")


def describe(mlp: Any) -> list[str]:
    """The architecture of `mlp`, one line per layer."""
    sizes = mlp.layer_sizes
    lines = [f"layer sizes {' -> '.join(str(n) for n in sizes)}"]
    for layer in range(len(sizes) - 1):
        if layer < mlp.depth:
            activation = mlp.hidden_activations[layer]
            after = activation if isinstance(activation, str) else f"custom {activation}"
        else:
            after = mlp.output_activation or "linear output"
        lines.append(f"  layer {layer}: linear {sizes[layer]} -> {sizes[layer + 1]}, then {after}")
    return lines


def run(args: argparse.Namespace) -> int:
    from .model_io import SUFFIXES, load

    source, output = os.fspath(args.source), os.fspath(args.output)
    if source.lower().endswith(PICKLE_SUFFIXES):
        raise ModelFileError(
            f"{source}: a pickle-based file, which feynmlp never loads (unpickling runs code named in the "
            "file); load it yourself in Python if you trust it and use MLP.from_torch(module) or "
            "MLP.from_sklearn(estimator), then mlp.save(...)")
    if not output.lower().endswith(SUFFIXES):
        raise FeynmlpError(f"{output}: the output must end in .safetensors (preferred) or .npz")
    if os.path.exists(output) and os.path.exists(source) and os.path.samefile(source, output):
        raise FeynmlpError(f"{output} is the source file itself; give another output path")
    mlp = load(source)
    record = dict(mlp.record)
    record.setdefault("converted_from", os.path.basename(source))
    mlp.save(output, record=record)
    print(f"read {source}")
    for line in describe(mlp):
        print(line)
    print(f"wrote {output}")
    return 0
