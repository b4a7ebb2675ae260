"""`feynmlp convert SOURCE OUT` (feynmlp.convert): foreign model files to feynmlp's format.

The converted file is read back and compared with the source's own reading and with the
network written out in NumPy; bad inputs give one line on stderr, exit status 2 and no file.
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import feynmlp  # noqa: E402
from feynmlp.cli import main  # noqa: E402

RNG = np.random.default_rng(13)
W1, B1, W2, B2 = RNG.normal(size=(4, 3)), RNG.normal(size=4), RNG.normal(size=(2, 4)), RNG.normal(size=2)
MEAN = RNG.normal(size=3)


def _onnx_file(path):
    nodes = [helper.make_node("Sub", ["x", "mean"], ["u"], name="center"),
             helper.make_node("Gemm", ["u", "W1", "b1"], ["h"], name="dense_1", transB=1),
             helper.make_node("Softplus", ["h"], ["a"], name="act"),
             helper.make_node("Gemm", ["a", "W2", "b2"], ["z"], name="dense_2", transB=1),
             helper.make_node("Sigmoid", ["z"], ["y"], name="out")]
    inits = [numpy_helper.from_array(v, n) for n, v in
             (("mean", MEAN), ("W1", W1), ("b1", B1), ("W2", W2), ("b2", B2))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["b", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], initializer=inits)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def test_convert_writes_the_model_and_prints_its_layers(tmp_path, capsys):
    source, out = _onnx_file(tmp_path / "model.onnx"), tmp_path / "model.safetensors"
    assert main(["convert", str(source), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layer sizes 3 -> 4 -> 2" in printed
    assert "layer 0: linear 3 -> 4, then softplus" in printed
    assert "layer 1: linear 4 -> 2, then sigmoid" in printed
    mlp = feynmlp.load(out)
    assert mlp.record["converted_from"] == "model.onnx"
    x = RNG.normal(size=(5, 3))
    a = np.log1p(np.exp((x - MEAN) @ W1.T + B1))
    np.testing.assert_allclose(mlp(x), 1 / (1 + np.exp(-(a @ W2.T + B2))), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, payload, out, fragment", [
    ("model.pt", b"\x80\x04pickle", "m.safetensors", "never loads"),
    ("model.onnx", b"\x00\x01damaged", "m.safetensors", "cannot be parsed"),
    ("model.onnx", None, "m.json", "must end in .safetensors"),
    ("model.txt", b"hello", "m.safetensors", "unknown model file type"),
])
def test_bad_inputs_give_one_line_and_no_file(tmp_path, capsys, name, payload, out, fragment):
    source = tmp_path / name
    if payload is None:
        _onnx_file(source)
    else:
        source.write_bytes(payload)
    assert main(["convert", str(source), str(tmp_path / out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
