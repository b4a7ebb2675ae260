"""Tests of feynmlp.model_io: save/load round trips and the refusal of bad model files.

References: the torch module a network came from (weights and forward outputs), and files
crafted with the plain writers (safetensors.numpy.save_file, np.savez) rather than with
feynmlp's own.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import sympy
import torch
from torch import nn

from feynmlp import model_io
from feynmlp.errors import FeynmlpError, ModelFileError
from feynmlp.mlp import MLP
from feynmlp.model_io import NPZ_METADATA_KEY, SAFETENSORS_METADATA_KEY, load, read_metadata, save

SUFFIXES = [".safetensors", ".npz"]


def torch_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(),
        nn.Linear(6, 5), nn.GELU(),
        nn.Linear(5, 5, bias=False), nn.Softplus(),
        nn.Linear(5, 2), nn.Sigmoid(),
    ).double().eval()


def small_mlp():
    rng = np.random.default_rng(0)
    return MLP([rng.normal(size=(3, 2)), rng.normal(size=(1, 3))], [rng.normal(size=3), None],
               activation="tanh")


def stored(path):
    """(tensors, document) of a file, read with the plain readers, for crafting variants."""
    if path.suffix == ".safetensors":
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            document = json.loads(handle.metadata()[SAFETENSORS_METADATA_KEY])
        return tensors, document
    with np.load(path, allow_pickle=False) as archive:
        tensors = {k: archive[k] for k in archive.files if k != NPZ_METADATA_KEY}
        document = json.loads(archive[NPZ_METADATA_KEY].tobytes().decode())
    return tensors, document


def write_plain(path, tensors, document):
    """A model file written with the plain writers; document None: no feynmlp metadata."""
    if path.suffix == ".safetensors":
        metadata = None if document is None else {SAFETENSORS_METADATA_KEY: json.dumps(document)}
        safetensors.numpy.save_file(tensors, str(path), metadata=metadata)
    else:
        extra = {} if document is None else {
            NPZ_METADATA_KEY: np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)}
        with open(path, "wb") as handle:
            np.savez(handle, **tensors, **extra)


# ---------------------------------------------------------------------------------------------
# Round trips.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", SUFFIXES)
def test_torch_model_round_trips_through_save_and_load(tmp_path, suffix):
    model = torch_model()
    mlp = MLP.from_torch(model)
    path = tmp_path / f"model{suffix}"
    save(mlp, path)
    loaded = load(path)
    assert loaded.layer_sizes == (4, 6, 5, 5, 2)
    assert loaded.hidden_activations == ["tanh", "gelu", "softplus"]
    assert loaded.output_activation == "sigmoid"
    assert loaded.activation == ["tanh", "gelu", "softplus"]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for layer, linear in enumerate(linears):
        np.testing.assert_array_equal(loaded.weights[layer], linear.weight.detach().numpy())
        bias = np.zeros(linear.out_features) if linear.bias is None else linear.bias.detach().numpy()
        np.testing.assert_array_equal(loaded.biases[layer], bias)
        assert loaded.weights[layer].dtype == np.float64 and loaded.weights[layer].flags.c_contiguous
    x = torch.randn(13, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_array_equal(loaded(x.numpy()), mlp(x.numpy()))
    np.testing.assert_allclose(loaded(x.numpy()), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_custom_activation_round_trips(tmp_path, suffix):
    u = sympy.Symbol("u")
    # 0.1 + 0.2 needs 17 digits: a 15-digit printout would change the network.
    custom = u * sympy.tanh(u) + sympy.Float(0.1 + 0.2) * u ** 2 + sympy.exp(-u**2 / 2) / 3
    rng = np.random.default_rng(1)
    mlp = MLP([rng.normal(size=(4, 3)), rng.normal(size=(4, 4)), rng.normal(size=(2, 4))],
              [rng.normal(size=4), rng.normal(size=4), rng.normal(size=2)],
              activation=[custom, "silu"], output_activation="tanh")
    path = tmp_path / f"custom{suffix}"
    mlp.save(path)
    loaded = MLP.load(path)
    assert loaded.hidden_activations[1] == "silu"
    assert loaded.hidden_activations[0] == custom
    assert loaded.output_activation == "tanh"
    x = rng.normal(size=(7, 3))
    np.testing.assert_array_equal(loaded(x), mlp(x))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_single_custom_activation_and_alias_round_trip(tmp_path, suffix):
    z = sympy.Symbol("z")
    weights = [np.eye(2), np.eye(2), np.ones((1, 2))]
    expr_mlp = MLP(weights, [None] * 3, activation=z / (1 + sympy.exp(-z)))
    save(expr_mlp, tmp_path / f"a{suffix}")
    loaded = load(tmp_path / f"a{suffix}")
    assert loaded.activation == z / (1 + sympy.exp(-z))
    alias_mlp = MLP(weights, [None] * 3, activation="swish")
    save(alias_mlp, tmp_path / f"b{suffix}")
    assert load(tmp_path / f"b{suffix}").activation == "silu"


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_record_round_trips(tmp_path, suffix):
    mlp = small_mlp()
    record = {"learning_rate": np.float32(0.5), "epochs": np.int64(200), "hidden": (16, 16),
              "optimizer": {"name": "adam", "betas": [0.9, 0.999]}, "notes": "ünïcode", "seed": None}
    path = tmp_path / f"r{suffix}"
    save(mlp, path, record=record)
    loaded = load(path)
    assert loaded.record == {"learning_rate": 0.5, "epochs": 200, "hidden": [16, 16],
                             "optimizer": {"name": "adam", "betas": [0.9, 0.999]},
                             "notes": "ünïcode", "seed": None}
    assert read_metadata(path)["record"] == loaded.record
    # The loaded record is saved again by default.
    save(loaded, tmp_path / f"again{suffix}")
    assert load(tmp_path / f"again{suffix}").record == loaded.record


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_metadata_document_describes_the_architecture(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    save(small_mlp(), path)
    _, document = stored(path)
    assert document["format"] == "feynmlp-mlp" and document["format_version"] == 1
    assert document["layer_sizes"] == [2, 3, 1]
    assert document["hidden_activations"] == ["tanh"]
    assert document["output_activation"] is None


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_saving_is_deterministic_and_replaces(tmp_path, suffix):
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    save(small_mlp(), a)
    save(small_mlp(), b)
    assert a.read_bytes() == b.read_bytes()
    other = MLP([np.ones((1, 2))], [None])
    save(other, a)
    assert load(a).layer_sizes == (2, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])


def test_saved_npz_is_readable_without_pickle(tmp_path):
    path = tmp_path / "plain.npz"
    save(small_mlp(), path)
    with np.load(path, allow_pickle=False) as archive:
        assert archive["layers.0.weight"].shape == (3, 2)


# ---------------------------------------------------------------------------------------------
# Refusals when loading.
# ---------------------------------------------------------------------------------------------

def expect_model_file_error(path, *fragments):
    with pytest.raises(ModelFileError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_unknown_suffix_and_missing_file(tmp_path):
    expect_model_file_error(tmp_path / "model.pt", ".safetensors", ".npz")
    expect_model_file_error(tmp_path / "absent.safetensors", "no such file")
    (tmp_path / "folder.npz").mkdir()
    expect_model_file_error(tmp_path / "folder.npz", "not a regular file")
    with pytest.raises(ModelFileError, match=r"\.safetensors"):
        save(small_mlp(), tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("keep", [0, 5, 60, 0.5, -3])
def test_truncated_files_are_refused(tmp_path, suffix, keep):
    path = tmp_path / f"t{suffix}"
    save(small_mlp(), path)
    data = path.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    path.write_bytes(data[:size])
    expect_model_file_error(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_corrupted_bytes_are_refused(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    save(small_mlp(), path)
    data = bytearray(path.read_bytes())
    # Header region: the length prefix / zip local header.
    garbled = bytearray(data)
    garbled[0:12] = b"\xff" * 12
    path.write_bytes(bytes(garbled))
    expect_model_file_error(path)
    # Data region: one bit of one weight. safetensors has no checksum of its own.
    tensors, _ = stored_from_bytes(tmp_path, suffix, bytes(data))
    weight_bytes = tensors["layers.0.weight"].tobytes()
    offset = bytes(data).find(weight_bytes)
    assert offset > 0
    flipped = bytearray(data)
    flipped[offset + 3] ^= 0x10
    path.write_bytes(bytes(flipped))
    expect_model_file_error(path)


def stored_from_bytes(tmp_path, suffix, data):
    scratch = tmp_path / f"scratch{suffix}"
    scratch.write_bytes(data)
    return stored(scratch)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype, names", [
    (np.int64, ("I64", "int64")), (np.int32, ("I32", "int32")), (np.uint8, ("U8", "uint8")),
    (np.bool_, ("BOOL", "bool"))])
def test_non_float_tensors_are_refused(tmp_path, suffix, dtype, names):
    path = tmp_path / f"d{suffix}"
    save(small_mlp(), path)
    tensors, document = stored(path)
    tensors["layers.0.weight"] = np.ones((3, 2), dtype=dtype)
    path.unlink()
    write_plain(path, tensors, document)
    name = names[0] if suffix == ".safetensors" else names[1]
    expect_model_file_error(path, "layers.0.weight", f"dtype {name}")


def test_complex_npz_tensor_is_refused(tmp_path):
    path = tmp_path / "complex.npz"
    save(small_mlp(), path)
    tensors, document = stored(path)
    tensors["layers.1.bias"] = np.ones(1, dtype=complex)
    write_plain(path, tensors, document)
    expect_model_file_error(path, "layers.1.bias", "complex")


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_narrow_float_tensors_are_widened(tmp_path, suffix, dtype):
    rng = np.random.default_rng(2)
    narrow = [rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=(1, 3)).astype(dtype)]
    mlp = MLP(narrow, [None, None])
    path = tmp_path / f"n{suffix}"
    save(mlp, path)
    tensors, document = stored(path)
    write_plain(path, {k: v.astype(dtype) for k, v in tensors.items()}, document)
    loaded = load(path)
    np.testing.assert_array_equal(loaded.weights[0], narrow[0].astype(np.float64))
    assert loaded.weights[0].dtype == np.float64


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_files_not_written_by_feynmlp_are_refused_with_a_hint(tmp_path, suffix):
    path = tmp_path / f"foreign{suffix}"
    write_plain(path, {"weight": np.ones((2, 2)), "bias": np.zeros(2)}, None)
    expect_model_file_error(path, "not a feynmlp model file", "MLP(weights, biases")
    if suffix == ".safetensors":
        safetensors.numpy.save_file({"w": np.ones(2)}, str(path), metadata={"format": "pt"})
        expect_model_file_error(path, "not a feynmlp model file", "MLP(weights, biases")


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("change, fragments", [
    (lambda d: d.update(format="pytorch-lightning"), ["'pytorch-lightning'", "MLP(weights, biases"]),
    (lambda d: d.update(format_version=99), ["version 99", "upgrade feynmlp"]),
    (lambda d: d.update(layer_sizes=[2, 4, 1]), ["shape", "[2, 4, 1]"]),
    (lambda d: d.update(layer_sizes=[2, 3]), ["hidden_activations"]),
    (lambda d: d.update(layer_sizes="big"), ["'big'"]),
    (lambda d: d.update(hidden_activations=["sigmoid"]), ["disagree"]),
    (lambda d: d.update(activation="mish", hidden_activations=["mish"]), ["'mish'"]),
    (lambda d: d.update(activation={"expression": "__import__('os').system('touch PWNED')",
                                    "variable": "x"}), ["refused"]),
    (lambda d: d.update(output_activation=3), ["output_activation"]),
    (lambda d: d.update(record=[1, 2]), ["record"]),
    (lambda d: d.pop("activation"), ["activation"]),
])
def test_inconsistent_metadata_is_refused(tmp_path, suffix, change, fragments, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"meta{suffix}"
    save(small_mlp(), path)
    tensors, document = stored(path)
    change(document)
    write_plain(path, tensors, document)
    expect_model_file_error(path, *fragments)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_invalid_json_metadata_is_refused(tmp_path, suffix):
    path = tmp_path / f"j{suffix}"
    save(small_mlp(), path)
    tensors, _ = stored(path)
    if suffix == ".safetensors":
        safetensors.numpy.save_file(tensors, str(path), metadata={SAFETENSORS_METADATA_KEY: "{not json"})
    else:
        with open(path, "wb") as handle:
            np.savez(handle, **tensors, **{NPZ_METADATA_KEY: np.frombuffer(b"{not json", np.uint8)})
    expect_model_file_error(path, "not valid JSON")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_missing_and_extra_tensors_are_refused(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    save(small_mlp(), path)
    tensors, document = stored(path)
    del tensors["layers.1.bias"]
    write_plain(path, tensors, document)
    expect_model_file_error(path, "layers.1.bias", "missing")
    tensors["layers.1.bias"] = np.zeros(1)
    tensors["layers.2.weight"] = np.zeros((1, 1))
    write_plain(path, tensors, document)
    expect_model_file_error(path, "layers.2.weight", "unexpected")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_wrong_tensor_shape_is_refused(tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    save(small_mlp(), path)
    tensors, document = stored(path)
    tensors["layers.0.weight"] = np.ones((2, 3))  # transposed
    write_plain(path, tensors, document)
    expect_model_file_error(path, "layers.0.weight", "(2, 3)", "(3, 2)")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_nan_weights_are_refused(tmp_path, suffix):
    path = tmp_path / f"nan{suffix}"
    save(small_mlp(), path)
    tensors, document = stored(path)
    weight = tensors["layers.1.weight"].copy()
    weight[0, 1] = np.nan
    tensors["layers.1.weight"] = weight
    document.pop("tensors")  # no checksums: the finiteness check itself must catch it
    write_plain(path, tensors, document)
    expect_model_file_error(path, "layer 1 weight", "non-finite")


class Boom:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["layers.0.weight", NPZ_METADATA_KEY])
def test_npz_with_pickled_objects_is_refused_without_unpickling(tmp_path, where):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.npz"
    save(small_mlp(), path)
    tensors, document = stored(path)
    tensors[NPZ_METADATA_KEY] = np.frombuffer(json.dumps(document).encode(), dtype=np.uint8)
    payload = np.empty(1, dtype=object)
    payload[0] = Boom(str(marker))
    tensors[where] = payload
    # np.save of an object array pickles it into the zip member.
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in tensors.items():
            with archive.open(name + ".npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=True)
    expect_model_file_error(path)
    assert not marker.exists()


def test_npz_that_is_a_bare_npy_file_is_refused(tmp_path):
    path = tmp_path / "bare.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.ones(3))
    expect_model_file_error(path, "not an .npz")


def test_oversized_npz_member_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.npz"
    save(small_mlp(), path)
    tensors, document = stored(path)
    tensors["layers.0.weight"] = np.ones(100_000)  # far more bytes than shape (3, 2) allows
    write_plain(path, tensors, document)
    expect_model_file_error(path, "layers.0.weight", "bytes")


# ---------------------------------------------------------------------------------------------
# Failed saves leave nothing behind.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", SUFFIXES)
def test_save_into_a_missing_folder_fails_cleanly(tmp_path, suffix):
    path = tmp_path / "missing" / f"m{suffix}"
    with pytest.raises(ModelFileError, match="does not exist"):
        save(small_mlp(), path)
    assert not (tmp_path / "missing").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_save_onto_a_folder_fails_cleanly(tmp_path, suffix):
    path = tmp_path / f"dir{suffix}"
    path.mkdir()
    (path / "keep.txt").write_text("x")
    with pytest.raises(ModelFileError, match="is a folder"):
        save(small_mlp(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert [p.name for p in path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failure_while_replacing_leaves_no_temporary_and_keeps_the_old_file(tmp_path, suffix, monkeypatch):
    path = tmp_path / f"m{suffix}"
    save(small_mlp(), path)
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_io.os, "replace", failing_replace)
    with pytest.raises(ModelFileError, match="No space left"):
        save(MLP([np.ones((1, 2))], [None]), path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert path.read_bytes() == before


def test_failure_while_writing_leaves_no_temporary(tmp_path, monkeypatch):
    def failing_write_array(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(model_io.np.lib.format, "write_array", failing_write_array)
    with pytest.raises(RuntimeError, match="interrupted"):
        save(small_mlp(), tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_record_is_refused_before_writing(tmp_path):
    with pytest.raises(FeynmlpError, match="record"):
        save(small_mlp(), tmp_path / "m.safetensors", record={"model": object()})
    with pytest.raises(FeynmlpError, match="NaN"):
        save(small_mlp(), tmp_path / "m.safetensors", record={"loss": float("nan")})
    with pytest.raises(FeynmlpError, match="dict"):
        save(small_mlp(), tmp_path / "m.safetensors", record=[1, 2])
    with pytest.raises(FeynmlpError, match="MLP"):
        save("not a model", tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_saved_file_permissions_follow_the_umask(tmp_path):
    path = tmp_path / "perm.safetensors"
    old = os.umask(0o022)
    try:
        save(small_mlp(), path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
