"""load_model on damaged, foreign, tampered and hostile files: always ModelFileError, nothing run."""
from __future__ import annotations

import json
import math
import os
import pickle
import zipfile

import numpy as np
import pytest

from cnnext import initializers, model_file
from cnnext import layers as L
from cnnext.io import ModelFileError, load_model, save_model
from cnnext.model_file import HEADER_KEY
from cnnext.models import Sequential


@pytest.fixture
def saved(tmp_path):
    model = Sequential([L.Conv2D(3, 3, activation="relu", input_shape=(8, 8, 2)), L.MaxPool2D(2),
                        L.Flatten(), L.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 2)).astype(np.float32)
    model.fit(x, np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]], epochs=1, batch_size=3, verbose=0)
    path = tmp_path / "model.npz"
    save_model(model, path)
    return path


def _contents(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(arrays.pop(HEADER_KEY).tobytes())
    return header, arrays


def _rewrite(path, header, arrays, fix_checksum=True):
    """Write a well-formed archive (valid zip CRCs), optionally with a matching SHA-256."""
    if fix_checksum:
        header["sha256"] = model_file.checksum(header, arrays)
    out = dict(arrays)
    out[HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **out)


def _load_fails(path, match):
    with pytest.raises(ModelFileError, match=match):
        load_model(path)


def test_intact_file_loads(saved):
    _, arrays = _contents(saved)
    model = load_model(saved)
    np.testing.assert_array_equal(model.layers[0].params["kernel"],
                                  arrays["layers/0/params/kernel"])
    np.testing.assert_array_equal(model.layers[3].params["bias"], arrays["layers/3/params/bias"])


@pytest.mark.parametrize("keep", [0, 10, 0.5, -22, -1])
def test_truncated_file(saved, keep):
    data = saved.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    saved.write_bytes(data[:n])
    _load_fails(saved, "not a cnnext model file|damaged|corrupted")


def _member_offset(path, member):
    """File offset of the first data byte of an (uncompressed) zip member."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
    return info.header_offset + 30 + int(name_len) + int(extra_len), info.file_size


@pytest.mark.parametrize("member", ["layers/0/params/kernel.npy", "layers/3/params/bias.npy",
                                    HEADER_KEY + ".npy"])
def test_bit_flip_anywhere_is_detected(saved, member):
    start, size = _member_offset(saved, member)
    data = bytearray(saved.read_bytes())
    data[start + size - 3] ^= 0x10
    saved.write_bytes(bytes(data))
    _load_fails(saved, "corrupted|damaged|header")


def test_changed_weights_with_valid_zip_fail_the_checksum(saved):
    header, arrays = _contents(saved)
    arrays["layers/0/params/kernel"] = arrays["layers/0/params/kernel"].copy()
    arrays["layers/0/params/kernel"].flat[5] = np.nextafter(arrays["layers/0/params/kernel"].flat[5],
                                                            np.float32(np.inf))
    _rewrite(saved, header, arrays, fix_checksum=False)
    _load_fails(saved, "SHA-256 checksum mismatch")


def test_changed_optimizer_state_fails_the_checksum(saved):
    header, arrays = _contents(saved)
    name = next(e["name"] for e in header["arrays"] if e["kind"] == "optimizer" and arrays[e["name"]].size)
    arrays[name] = arrays[name] + 1
    _rewrite(saved, header, arrays, fix_checksum=False)
    _load_fails(saved, "SHA-256 checksum mismatch")


def test_tampered_header_fails_the_checksum(saved):
    header, arrays = _contents(saved)
    header["model_config"]["layers"][0]["config"]["activation"] = "tanh"
    _rewrite(saved, header, arrays, fix_checksum=False)
    _load_fails(saved, "SHA-256 checksum mismatch")


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(50)


@pytest.mark.parametrize("content", [b"", PNG, bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8)),
                                     b'{"format": "cnnext-model"}'], ids=["empty", "png", "random", "json"])
def test_foreign_files(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    _load_fails(path, "not a cnnext model file")


def test_plain_npz_and_npy_are_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", weights=np.ones(3))
    _load_fails(tmp_path / "plain.npz", "no '__header__' entry")
    np.save(tmp_path / "plain.npy", np.ones(3))
    _load_fails(tmp_path / "plain.npy", "not a cnnext model file")


def test_other_zip_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    _load_fails(tmp_path / "x.zip", "no '__header__' entry")


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_object_array_weight_is_refused_and_not_executed(saved, tmp_path):
    marker = tmp_path / "pwned"
    header, arrays = _contents(saved)
    arrays["layers/0/params/kernel"] = np.array([_Payload(marker)], dtype=object)
    _rewrite(saved, header, arrays, fix_checksum=False)
    _load_fails(saved, "refusing array 'layers/0/params/kernel'.*pickle")
    assert not marker.exists()


def test_object_array_header_is_refused_and_not_executed(saved, tmp_path):
    marker = tmp_path / "pwned"
    _, arrays = _contents(saved)
    arrays[HEADER_KEY] = np.array([_Payload(marker)], dtype=object)
    with open(saved, "wb") as f:
        np.savez(f, **arrays)
    _load_fails(saved, "refusing array '__header__'")
    assert not marker.exists()


def test_raw_pickle_file_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    _load_fails(path, "not a cnnext model file")
    assert not marker.exists()


def test_extra_member_is_refused(saved):
    header, arrays = _contents(saved)
    arrays["smuggled"] = np.zeros(2)
    _rewrite(saved, header, arrays)
    _load_fails(saved, r"unexpected: \['smuggled.npy'\]")


def test_missing_member_is_refused(saved):
    header, arrays = _contents(saved)
    del arrays["layers/3/params/bias"]
    with open(saved, "wb") as f:
        np.savez(f, **arrays, **{HEADER_KEY: np.frombuffer(json.dumps(header).encode(), np.uint8)})
    _load_fails(saved, r"missing: \['layers/3/params/bias.npy'\]")


@pytest.mark.parametrize("edit, match", [
    (lambda h: h.update(format="something-else"), "not a cnnext model file"),
    (lambda h: h.update(format_version=99), "format_version 99"),
    (lambda h: h.update(format_version=True), "format_version True"),
    (lambda h: h.update(format_version=1.0), "format_version 1.0"),
    (lambda h: h.pop("model_config"), "model_config must be an object"),
    (lambda h: h["model_config"].update(layers={}), "layers must be a non-empty list"),
    (lambda h: h["model_config"]["layers"][0].pop("class_name"), r"layers\[0\] must be"),
    (lambda h: h.update(compile_config=[1]), "compile_config must be an object or null"),
    (lambda h: h["arrays"][0].update(shape=[3, -1]), "non-negative ints"),
    (lambda h: h["arrays"][0].update(dtype="|O"), "not a numeric dtype"),
    (lambda h: h["arrays"][0].update(dtype="nonsense"), "dtype"),
    (lambda h: h["arrays"][0].update(layer=17), "must index model_config.layers"),
    (lambda h: h["arrays"][0].update(kind="grads"), "kind must be one of"),
    (lambda h: h.update(sha256=5), "sha256 must be a string"),
], ids=["format", "version", "version-bool", "version-float", "no-config", "layers-type", "class-name", "compile",
        "shape", "object-dtype", "bad-dtype", "layer-index", "kind", "sha-type"])
def test_malformed_header(saved, edit, match):
    header, arrays = _contents(saved)
    edit(header)
    _rewrite(saved, header, arrays, fix_checksum=False)
    _load_fails(saved, match)


def test_model_name_that_is_not_a_string_is_refused(saved):
    header, arrays = _contents(saved)
    header["model_config"]["name"] = ["a", "list"]
    _rewrite(saved, header, arrays, fix_checksum=True)
    _load_fails(saved, "model name must be a non-empty string")


def test_header_that_is_not_json(saved):
    _, arrays = _contents(saved)
    with open(saved, "wb") as f:
        np.savez(f, **arrays, **{HEADER_KEY: np.frombuffer(b"\xff{not json", np.uint8)})
    _load_fails(saved, "not valid UTF-8 JSON")


def test_unknown_layer_class(saved):
    header, arrays = _contents(saved)
    header["model_config"]["layers"][1]["class_name"] = "os.system"
    _rewrite(saved, header, arrays)
    _load_fails(saved, "unknown layer class 'os.system'")


def test_invalid_layer_config(saved):
    header, arrays = _contents(saved)
    header["model_config"]["layers"][0]["config"]["filters"] = -3
    _rewrite(saved, header, arrays)
    _load_fails(saved, "invalid model_config")


def test_weights_that_do_not_fit_the_architecture(saved):
    header, arrays = _contents(saved)
    header["model_config"]["layers"][3]["config"]["units"] = 5
    _rewrite(saved, header, arrays)
    _load_fails(saved, r"layers/3/params/kernel.*shape \[\d+, 4\].*expects shape \[\d+, 5\]")


def test_consistently_reshaped_weight_is_refused(saved):
    header, arrays = _contents(saved)
    entry = next(e for e in header["arrays"] if e["name"] == "layers/3/params/bias")
    arrays["layers/3/params/bias"] = np.zeros(7, np.float32)
    entry["shape"] = [7]
    _rewrite(saved, header, arrays)
    _load_fails(saved, "layers/3/params/bias")


def test_wrong_dtype_weight_is_refused(saved):
    header, arrays = _contents(saved)
    entry = next(e for e in header["arrays"] if e["name"] == "layers/3/params/bias")
    arrays["layers/3/params/bias"] = arrays["layers/3/params/bias"].astype(np.float64)
    entry["dtype"] = "<f8"
    _rewrite(saved, header, arrays)
    _load_fails(saved, "layers/3/params/bias.*float64|<f8")


def test_missing_layer_weight_entry(saved):
    header, arrays = _contents(saved)
    header["arrays"] = [e for e in header["arrays"] if e["name"] != "layers/3/params/bias"]
    del arrays["layers/3/params/bias"]
    _rewrite(saved, header, arrays)
    _load_fails(saved, "layer 3 .*bias")


def test_invalid_compile_config(saved):
    header, arrays = _contents(saved)
    header["compile_config"]["loss"] = "no_such_loss"
    _rewrite(saved, header, arrays)
    _load_fails(saved, "invalid compile_config")


def test_header_over_the_size_limit(saved, monkeypatch):
    monkeypatch.setattr(model_file, "MAX_HEADER_BYTES", 100)
    _load_fails(saved, "header of \\d+ bytes exceeds the 100 byte limit")


def test_header_of_the_wrong_array_type(saved):
    header, arrays = _contents(saved)
    text = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(saved, "wb") as f:
        np.savez(f, **arrays, **{HEADER_KEY: text.reshape(1, -1)})
    _load_fails(saved, r"array '__header__' is \|u1\[1, \d+\], expected \|u1\[n\]")


def test_deeply_nested_header(saved):
    _, arrays = _contents(saved)
    with open(saved, "wb") as f:
        np.savez(f, **arrays, **{HEADER_KEY: np.frombuffer(b"[" * 200_000 + b"]" * 200_000, np.uint8)})
    _load_fails(saved, "not valid UTF-8 JSON")


def test_shape_claims_beyond_the_stored_bytes(saved):
    """A header promising a huge array backed by a few bytes is refused before any allocation."""
    header, arrays = _contents(saved)
    entry = next(e for e in header["arrays"] if e["name"] == "layers/3/params/bias")
    entry["shape"] = [10**12]
    _rewrite(saved, header, arrays)
    _load_fails(saved, "'layers/3/params/bias' stores \\d+ bytes, which does not fit its header "
                       "shape \\[1000000000000\\]")


def test_npy_preamble_disagreeing_with_header(saved):
    header, arrays = _contents(saved)
    arrays["layers/3/params/bias"] = arrays["layers/3/params/bias"].reshape(2, 2)
    _rewrite(saved, header, arrays, fix_checksum=False)
    _load_fails(saved, r"'layers/3/params/bias' is <f4\[2, 2\], expected <f4\[4\]")


def test_huge_layer_is_refused_from_its_shapes_before_anything_is_allocated(saved, monkeypatch):
    header, arrays = _contents(saved)
    header["model_config"]["layers"][3]["config"]["units"] = 10**13
    _rewrite(saved, header, arrays)
    monkeypatch.setattr(L.Layer, "create_weights", lambda *args: pytest.fail("weights allocated"))
    _load_fails(saved, r"'layers/3/params/kernel' has shape \[27, 4\] .*expects shape "
                       r"\[27, 10000000000000\]")


def test_tiny_file_declaring_a_huge_layer_without_arrays(tmp_path):
    """A ~1 KB file declaring a 100000 x 100000 Dense (40 GB) is refused at once."""
    path = tmp_path / "big.npz"
    save_model(Sequential([L.Dense(2, input_shape=(4,))]), path)
    header, _ = _contents(path)
    header["model_config"]["input_shape"] = [100_000]
    header["model_config"]["layers"][0]["config"].update(input_shape=[100_000], units=100_000)
    header["arrays"] = []
    _rewrite(path, header, {})
    _load_fails(path, r"layer 0 \('dense', Dense\) expects params \['kernel', 'bias'\] but the "
                      r"file has \[\]")


def test_model_too_large_to_build(saved, monkeypatch):
    def out_of_memory(shape, rng, dtype):
        raise MemoryError

    monkeypatch.setitem(initializers.INITIALIZERS, "glorot_uniform", out_of_memory)
    _load_fails(saved, "too large to build")


def test_big_endian_weight_names_its_byte_order(saved):
    header, arrays = _contents(saved)
    entry = next(e for e in header["arrays"] if e["name"] == "layers/3/params/bias")
    arrays["layers/3/params/bias"] = arrays["layers/3/params/bias"].astype(">f4")
    entry["dtype"] = ">f4"
    _rewrite(saved, header, arrays)
    _load_fails(saved, r"'layers/3/params/bias' has shape \[4\] dtype >f4 but layer 3 \('dense'\) "
                       r"expects shape \[4\] dtype float32")


def test_config_boolean_given_as_a_string(saved):
    header, arrays = _contents(saved)
    header["model_config"]["layers"][0]["config"]["trainable"] = "no"
    _rewrite(saved, header, arrays)
    _load_fails(saved, "invalid model_config: trainable must be True or False; "
                       "received trainable='no'")


@pytest.mark.parametrize("key, value, match", [
    ("learning_rate", math.inf, "learning_rate must be a finite number >= 0"),
    ("weight_decay", math.inf, "weight_decay must be a finite number >= 0"),
    ("beta_1", 1.0, r"beta_1 must be in \[0, 1\)"),
    ("epsilon", math.inf, "epsilon must be a finite number >= 0"),
])
def test_optimizer_hyper_parameter_out_of_range(saved, key, value, match):
    header, arrays = _contents(saved)
    header["compile_config"]["optimizer"]["config"][key] = value
    _rewrite(saved, header, arrays)
    _load_fails(saved, "invalid compile_config: .*" + match)


def _rename_optimizer_entry(header, arrays, old_key, new_key, value=None):
    entry = next(e for e in header["arrays"] if e["kind"] == "optimizer" and e["key"] == old_key)
    array = arrays.pop(entry["name"]) if value is None else value
    arrays.pop(entry["name"], None)
    entry.update(key=new_key, name=f"optimizer/{new_key}", shape=list(array.shape), dtype=array.dtype.str)
    arrays[entry["name"]] = array


def test_optimizer_state_for_unknown_parameter(saved):
    header, arrays = _contents(saved)
    _rename_optimizer_entry(header, arrays, "m:dense.bias", "m:ghost.bias")
    _rewrite(saved, header, arrays)
    _load_fails(saved, r"optimizer state 'm:ghost.bias' .* parameter 'ghost.bias' \(no such parameter\)")


def test_optimizer_state_of_wrong_shape(saved):
    header, arrays = _contents(saved)
    _rename_optimizer_entry(header, arrays, "v:dense.bias", "v:dense.bias", np.zeros(9, np.float32))
    _rewrite(saved, header, arrays)
    _load_fails(saved, r"optimizer state 'v:dense.bias' \(shape \[9\] .*parameter 'dense.bias' with shape \[4\]")


def test_optimizer_iterations_must_be_a_scalar_int(saved):
    header, arrays = _contents(saved)
    _rename_optimizer_entry(header, arrays, "iterations", "iterations", np.array([1.5]))
    _rewrite(saved, header, arrays)
    _load_fails(saved, "optimizer state 'iterations' .* does not match a scalar integer")


def test_negative_optimizer_iterations(saved):
    header, arrays = _contents(saved)
    _rename_optimizer_entry(header, arrays, "iterations", "iterations", np.array(-1))
    _rewrite(saved, header, arrays)
    _load_fails(saved, "invalid optimizer state: optimizer state 'iterations' must be an integer "
                       ">= 0")


def test_optimizer_state_without_compile_config(saved):
    header, arrays = _contents(saved)
    header["compile_config"] = None
    _rewrite(saved, header, arrays)
    _load_fails(saved, "optimizer state is stored but compile_config is null")
