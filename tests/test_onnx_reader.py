"""feynmlp.load of .onnx files (feynmlp.onnx_reader): parsed with the onnx package, never run.

References: the torch module or scikit-learn estimator that was exported (forward values to
1e-12, derivatives against torch.func), and for hand-built graphs the ONNX definition of each
operator written out in NumPy here. Refusals: op type and node name; unsafe external data;
damaged files.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from scipy.special import erf  # noqa: E402

import feynmlp  # noqa: E402
from feynmlp.errors import ModelFileError  # noqa: E402

RNG = np.random.default_rng(11)
W1, B1 = RNG.normal(size=(4, 3)), RNG.normal(size=4)
W2, B2 = RNG.normal(size=(2, 4)), RNG.normal(size=2)
X = RNG.normal(size=(6, 3)) * 2


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _const(name, value, dtype=np.float64):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _save(model, path):
    path = str(path)
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())
    return path


def _model(nodes, initializers, opset=17, output="y", input_name="x", n_inputs=3, domains=()):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(input_name, TensorProto.DOUBLE, ["batch", n_inputs])],
        [helper.make_tensor_value_info(output, TensorProto.DOUBLE, None)],
        initializer=initializers)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets)


def _two_layers(middle, middle_out, pre=(), pre_out="x", post=(), post_in="h2", extra_init=()):
    """x -> pre -> Gemm(W1, b1) [h1] -> middle -> Gemm(W2ᵀ, b2, transB=0) [h2] -> post -> y."""
    nodes = list(pre) + [helper.make_node("Gemm", [pre_out, "W1", "b1"], ["h1"], name="gemm1", transB=1)]
    nodes += list(middle)
    nodes += [helper.make_node("Gemm", [middle_out, "W2t", "b2"], ["h2" if post else "y"], name="gemm2")]
    nodes += list(post)
    inits = [_const("W1", W1), _const("b1", B1), _const("W2t", W2.T), _const("b2", B2)] + list(extra_init)
    return nodes, inits


# Each case: the nodes between the two Gemms (reading h1, writing a) and the activation in NumPy.
ACTIVATIONS = {
    "Tanh": ([helper.make_node("Tanh", ["h1"], ["a"], name="act")], np.tanh, [], "tanh"),
    "Sigmoid": ([helper.make_node("Sigmoid", ["h1"], ["a"], name="act")], _sigmoid, [], "sigmoid"),
    "Softplus": ([helper.make_node("Softplus", ["h1"], ["a"], name="act")], lambda z: np.log1p(np.exp(z)),
                 [], "softplus"),
    "Sin": ([helper.make_node("Sin", ["h1"], ["a"], name="act")], np.sin, [], "sin"),
    "Cos": ([helper.make_node("Cos", ["h1"], ["a"], name="act")], np.cos, [], "cos"),
    "Exp": ([helper.make_node("Exp", ["h1"], ["a"], name="act")], np.exp, [], "exp"),
    "Relu": ([helper.make_node("Relu", ["h1"], ["a"], name="act")], lambda z: np.maximum(z, 0), [], "relu"),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["h1"], ["a"], name="act", alpha=0.01)],
                  lambda z: np.where(z > 0, z, 0.01 * z), [], "leaky_relu"),
    "Gelu": ([helper.make_node("Gelu", ["h1"], ["a"], name="act")],
             lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))), [], "gelu"),
    "Clip06": ([helper.make_node("Clip", ["h1", "lo", "hi"], ["a"], name="act")], lambda z: np.clip(z, 0, 6),
               [_const("lo", 0.0), _const("hi", 6.0)], "relu6"),
    "Clip11": ([helper.make_node("Clip", ["h1", "lo", "hi"], ["a"], name="act")], lambda z: np.clip(z, -1, 1),
               [_const("lo", -1.0), _const("hi", 1.0)], "hardtanh"),
    "SiLU": ([helper.make_node("Sigmoid", ["h1"], ["s"], name="sig"),
              helper.make_node("Mul", ["s", "h1"], ["a"], name="mul")], lambda z: z * _sigmoid(z), [], "silu"),
    "ErfGelu": ([helper.make_node("Div", ["h1", "sqrt2"], ["d"], name="div"),
                 helper.make_node("Erf", ["d"], ["e"], name="erf"),
                 helper.make_node("Add", ["e", "one"], ["p"], name="add"),
                 helper.make_node("Mul", ["h1", "p"], ["m"], name="mul"),
                 helper.make_node("Mul", ["m", "half"], ["a"], name="half")],
                lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),
                [_const("sqrt2", np.float32(math.sqrt(2)), np.float32), _const("one", 1.0), _const("half", 0.5)],
                "gelu"),
    "ErfGeluHalfFirst": ([helper.make_node("Mul", ["h1", "half"], ["m"], name="half"),
                          helper.make_node("Mul", ["h1", "rsqrt2"], ["d"], name="scale"),
                          helper.make_node("Erf", ["d"], ["e"], name="erf"),
                          helper.make_node("Add", ["one", "e"], ["p"], name="add"),
                          helper.make_node("Mul", ["m", "p"], ["a"], name="mul")],
                         lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),
                         [_const("rsqrt2", 1 / math.sqrt(2)), _const("one", 1.0), _const("half", 0.5)], "gelu"),
}


@pytest.mark.parametrize("case", list(ACTIVATIONS))
def test_hand_built_activation_graphs(tmp_path, case):
    middle, function, extra, name = ACTIVATIONS[case]
    nodes, inits = _two_layers(middle, "a", extra_init=extra)
    path = _save(_model(nodes, inits), tmp_path / "m.onnx")
    mlp = feynmlp.load(path)
    assert mlp.hidden_activations == [name]
    want = function(X @ W1.T + B1) @ W2.T + B2
    np.testing.assert_allclose(mlp(X), want, rtol=1e-12, atol=1e-12)


MEAN, STD = RNG.normal(size=3), RNG.uniform(0.5, 2, size=3)
Y_SCALE, Y_SHIFT = np.array([3.0, -0.5]), np.array([0.25, 7.0])

SCALERS = {
    # (nodes before gemm1 reading x and writing u, nodes after gemm2 reading h2 writing y,
    #  initializers, NumPy of the input map, NumPy of the output map)
    "sub-div/mul-add": (
        [helper.make_node("Sub", ["x", "mean"], ["c"], name="center"),
         helper.make_node("Div", ["c", "std"], ["u"], name="scale")],
        [helper.make_node("Mul", ["h2", "ys"], ["t"], name="yscale"),
         helper.make_node("Add", ["t", "ym"], ["y"], name="yshift")],
        [_const("mean", MEAN), _const("std", STD), _const("ys", Y_SCALE), _const("ym", Y_SHIFT)],
        lambda x: (x - MEAN) / STD, lambda y: y * Y_SCALE + Y_SHIFT),
    "neg-identity-flatten/sub-reversed": (
        [helper.make_node("Neg", ["x"], ["n"], name="neg"),
         helper.make_node("Identity", ["n"], ["i"], name="ident"),
         helper.make_node("Flatten", ["i"], ["u"], name="flat", axis=1)],
        [helper.make_node("Sub", ["ym", "h2"], ["r"], name="reverse"),
         helper.make_node("Reshape", ["r", "shape"], ["y"], name="reshape")],
        [_const("ym", Y_SHIFT), _const("shape", [-1, 2], np.int64)],
        lambda x: -x, lambda y: Y_SHIFT - y),
    "ml-scaler/cast": (
        [helper.make_node("Scaler", ["x"], ["sc"], name="scaler", domain="ai.onnx.ml",
                          offset=MEAN.tolist(), scale=(1 / STD).tolist()),
         helper.make_node("Cast", ["sc"], ["u"], name="cast", to=TensorProto.DOUBLE)],
        [helper.make_node("Dropout", ["h2"], ["y"], name="drop")],
        # The attributes are float32: the reference uses the rounded values the file holds.
        [], lambda x: (x - MEAN.astype(np.float32)) * (1 / STD).astype(np.float32), lambda y: y),
}


@pytest.mark.parametrize("case", list(SCALERS))
def test_hand_built_scaler_graphs_are_folded(tmp_path, case):
    pre, post, inits_extra, f_in, f_out = SCALERS[case]
    middle = [helper.make_node("Tanh", ["h1"], ["a"], name="act")]
    nodes, inits = _two_layers(middle, "a", pre=pre, pre_out="u", post=post, extra_init=inits_extra)
    model = _model(nodes, inits, domains=("ai.onnx.ml",) if "ml" in case else ())
    mlp = feynmlp.load(_save(model, tmp_path / "m.onnx"))
    assert mlp.layer_sizes == (3, 4, 2)
    want = f_out(np.tanh(f_in(X) @ W1.T + B1) @ W2.T + B2)
    np.testing.assert_allclose(mlp(X), want, rtol=1e-12, atol=1e-12)


def test_matmul_add_gemm_alpha_beta(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "A"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "c"], ["h"], name="bias"),
             helper.make_node("Sigmoid", ["h"], ["a"], name="act"),
             helper.make_node("Gemm", ["a", "W2", "b2"], ["y"], name="g", transB=1, alpha=0.5, beta=2.0)]
    inits = [_const("A", W1.T), _const("c", B1[None, :]), _const("W2", W2), _const("b2", B2)]
    mlp = feynmlp.load(_save(_model(nodes, inits, opset=21), tmp_path / "m.onnx"))
    want = 0.5 * (_sigmoid(X @ W1.T + B1) @ W2.T) + 2.0 * B2
    np.testing.assert_allclose(mlp(X), want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------
# Refusals.
# ----------------------------------------------------------------------------------------

def _refusal(tmp_path, model, *fragments, name="m.onnx"):
    path = _save(model, tmp_path / name)
    with pytest.raises(ModelFileError) as info:
        feynmlp.load(path)
    message = str(info.value)
    assert "\n" not in message and path in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_layer_normalization_is_refused_by_op_and_name(tmp_path):
    middle = [helper.make_node("LayerNormalization", ["h1", "gamma", "beta"], ["a"], name="ln_1", axis=-1)]
    nodes, inits = _two_layers(middle, "a", extra_init=[_const("gamma", np.ones(4)), _const("beta", np.zeros(4))])
    _refusal(tmp_path, _model(nodes, inits), "'ln_1'", "LayerNormalization", "not supported")


REFUSED_GRAPHS = {
    "residual": ([helper.make_node("Tanh", ["h1"], ["t"], name="act"),
                  helper.make_node("Add", ["t", "h1"], ["a"], name="skip")], [], ["'skip'", "Add"]),
    "square": ([helper.make_node("Mul", ["h1", "h1"], ["a"], name="sq")], [], ["'sq'", "Mul"]),
    "tanh gelu": ([helper.make_node("Gelu", ["h1"], ["a"], name="g", approximate="tanh")], [],
                  ["'g'", "approximate='tanh'"]),
    "leaky slope": ([helper.make_node("LeakyRelu", ["h1"], ["a"], name="lr", alpha=0.2)], [], ["'lr'", "alpha=0.2"]),
    "clip": ([helper.make_node("Clip", ["h1", "lo", "hi"], ["a"], name="c")], [_const("lo", -2.0), _const("hi", 2.0)],
             ["'c'", "[-2.0, 2.0]"]),
    "two activations": ([helper.make_node("Tanh", ["h1"], ["t"], name="t1"),
                         helper.make_node("Tanh", ["t"], ["a"], name="t2")], [], ["'t2'", "'t1'", "at most one"]),
    "wrong erf constant": ([helper.make_node("Div", ["h1", "two"], ["d"], name="div"),
                            helper.make_node("Erf", ["d"], ["e"], name="erf"),
                            helper.make_node("Add", ["e", "one"], ["p"], name="add"),
                            helper.make_node("Mul", ["h1", "p"], ["m"], name="mul"),
                            helper.make_node("Mul", ["m", "half"], ["a"], name="half")],
                           [_const("two", 2.0), _const("one", 1.0), _const("half", 0.5)], ["'mul'", "branches"]),
    "custom domain": ([helper.make_node("Swish", ["h1"], ["a"], name="sw", domain="com.example")], [],
                      ["'sw'", "com.example"]),
}


@pytest.mark.parametrize("case", list(REFUSED_GRAPHS))
def test_other_graphs_are_refused_by_op_and_name(tmp_path, case):
    middle, extra, fragments = REFUSED_GRAPHS[case]
    nodes, inits = _two_layers(middle, "a", extra_init=extra)
    _refusal(tmp_path, _model(nodes, inits), *fragments)


def test_graph_level_refusals(tmp_path):
    nodes, inits = _two_layers([helper.make_node("Tanh", ["h1"], ["a"], name="act")], "a")
    _refusal(tmp_path, _model(nodes, inits, opset=9), "opset 9")
    model = _model(nodes, inits)
    model.graph.input.append(helper.make_tensor_value_info("z", TensorProto.DOUBLE, ["batch", 3]))
    _refusal(tmp_path, model, "2 inputs", "'z'")
    model = _model(nodes, inits)
    model.graph.output.append(helper.make_tensor_value_info("h1", TensorProto.DOUBLE, None))
    _refusal(tmp_path, model, "2 outputs")


def test_bad_weights_are_refused_naming_the_layer(tmp_path):
    middle = [helper.make_node("Tanh", ["h1"], ["a"], name="act")]
    nodes, inits = _two_layers(middle, "a")
    inits[2] = _const("W2t", np.ones((5, 2)))  # 5 inputs after a layer of 4 outputs
    _refusal(tmp_path, _model(nodes, inits), "'gemm2'", "expects 5 inputs", "do not chain")
    nodes, inits = _two_layers(middle, "a")
    inits[0] = _const("W1", np.ones((4, 3)), np.int64)
    _refusal(tmp_path, _model(nodes, inits), "'gemm1'", "int64", "floating point")
    nodes, inits = _two_layers(middle, "a")
    bad = W2.T.copy()
    bad[1, 1] = np.nan
    inits[2] = _const("W2t", bad)
    _refusal(tmp_path, _model(nodes, inits), "'gemm2'", "non-finite")
    nodes, inits = _two_layers(middle, "a")
    inits[0] = _const("W1", np.ones((4, 3)), np.uint64)
    _refusal(tmp_path, _model(nodes, inits), "'W1'", "UINT64")


def test_damaged_files(tmp_path):
    nodes, inits = _two_layers([helper.make_node("Tanh", ["h1"], ["a"], name="act")], "a")
    data = _model(nodes, inits).SerializeToString()
    for name, payload in (("truncated.onnx", data[: len(data) // 2]), ("noise.onnx", os.urandom(300)),
                          ("empty.onnx", b"")):
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(ModelFileError) as info:
            feynmlp.load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    # raw bytes that disagree with the dims
    model = _model(nodes, inits)
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-8]
    _refusal(tmp_path, model, "'W1'", "damaged")


# ----------------------------------------------------------------------------------------
# External data.
# ----------------------------------------------------------------------------------------

def _external_model(location, offset=0, length=None):
    nodes, inits = _two_layers([helper.make_node("Tanh", ["h1"], ["a"], name="act")], "a")
    tensor = inits[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("double_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset), "length": str(W1.nbytes if length is None else length)}
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return _model(nodes, inits)


def test_external_data_inside_the_folder_is_read(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16 + W1.astype("<f8").tobytes())
    path = _save(_external_model("weights.bin", offset=16), tmp_path / "m.onnx")
    mlp = feynmlp.load(path)
    np.testing.assert_array_equal(mlp.weights[0], W1)


def test_external_data_escapes_are_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(W1.astype("<f8").tobytes())
    os.symlink(secret, folder / "link.bin")
    _refusal(folder, _external_model("../secret.bin"), "'W1'", "'../secret.bin'", "refused")
    _refusal(folder, _external_model(str(secret)), "'W1'", "refused")
    _refusal(folder, _external_model("link.bin"), "'W1'", "outside the model's folder")
    (folder / "short.bin").write_bytes(W1.astype("<f8").tobytes()[:40])
    _refusal(folder, _external_model("short.bin"), "'W1'", "truncated")
    (folder / "w.bin").write_bytes(W1.astype("<f8").tobytes())
    _refusal(folder, _external_model("w.bin", length=8), "'W1'", "length 8")
    _refusal(folder, _external_model("absent.bin"), "'W1'", "missing")


# ----------------------------------------------------------------------------------------
# Files from exporters.
# ----------------------------------------------------------------------------------------

def test_torch_onnx_export_files_match_the_module(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    from helpers.torch_reference import assert_relative_close, torch_derivative_tensors

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(4, 2)
            self.register_buffer("mean", torch.randn(3))
            self.register_buffer("std", torch.rand(3) + 0.5)

        def forward(self, x):
            x = (x - self.mean) / self.std
            return self.c(nn.functional.gelu(self.b(nn.functional.silu(self.a(x))))) * 2.0 + 1.0

    torch.manual_seed(3)
    module = Net().eval()
    reference = Net().double().eval()
    reference.load_state_dict(module.state_dict())
    x = torch.randn(6, 3, dtype=torch.float64)
    for opset in (13, 20):
        path = tmp_path / f"net{opset}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter needs only the onnx package (the default one also needs
            # onnxscript); both write the same operators for this network.
            torch.onnx.export(module, (x.float(),), str(path), dynamo=False, opset_version=opset,
                              input_names=["x"], dynamic_axes={"x": {0: "batch"}})
        mlp = feynmlp.load(path)
        assert mlp.hidden_activations == ["silu", "gelu"], opset
        with torch.no_grad():
            np.testing.assert_allclose(mlp(x.numpy()), reference(x).numpy(), rtol=1e-12, atol=1e-12)
    point = np.array([0.2, -0.4, 0.9])
    expansion = feynmlp.taylor(mlp, point, 2)
    want = torch_derivative_tensors(lambda t: reference(t[None, :])[0], point, 2)
    for k in range(3):
        assert_relative_close(expansion.derivative_tensor(k), want[k], what=f"order {k}")


@pytest.mark.parametrize("activation", ["tanh", "logistic", "identity", "relu"])
def test_skl2onnx_files_match_the_estimator(tmp_path, activation):
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
    y = np.sin(x[:, 0]) + 0.1 * x[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = make_pipeline(StandardScaler(), MinMaxScaler(), MLPRegressor(
            hidden_layer_sizes=(6, 5), activation=activation, max_iter=60, random_state=0)).fit(x, y)
    path = _save(to_onnx(estimator, x[:1].astype(np.float64)), tmp_path / "est.onnx")
    mlp = feynmlp.load(path)
    assert mlp.layer_sizes == (3, 6, 5, 1)
    np.testing.assert_allclose(mlp(x)[:, 0], estimator.predict(x), rtol=1e-12, atol=1e-12)


def test_skl2onnx_classifier_file_is_refused_with_the_fix(tmp_path):
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x = np.random.default_rng(2).normal(size=(30, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = MLPClassifier(hidden_layer_sizes=(3,), max_iter=20).fit(x, x[:, 0] > 0)
    _refusal(tmp_path, to_onnx(estimator, x[:1]), "2 outputs", "from_sklearn")
