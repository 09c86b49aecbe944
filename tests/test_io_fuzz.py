"""Randomly damaged model files: load_model either raises ModelFileError or returns a working model
(the exact original, when the damage did not go through the checksum)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from cnnext import model_file
from cnnext import layers as L
from cnnext.io import ModelFileError, load_model
from cnnext.model_file import HEADER_KEY
from cnnext.models import Sequential

X = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype(np.float32)
JSON_VALUES = [None, True, False, 0, -1, 1, 2.5, -1e308, 1e308, float("nan"), "", "x", "same",
               [], [1], [0, 0], [1, 2, 3], {}, {"a": 1}, 10**30, [10**6, 10**6], "relu",
               {"name": "leaky_relu", "alpha": "x"}]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    model = Sequential([L.Conv2D(3, 3, activation="relu", input_shape=(8, 8, 2)),
                        L.BatchNormalization(), L.MaxPool2D(2), L.Dropout(0.2), L.UpSample2D(2),
                        L.Flatten(), L.Dense(4, activation="softmax")], seed=0)
    model.compile("adam", "categorical_crossentropy", ["accuracy"])
    model.fit(X, np.eye(4)[[0, 1, 2]], epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("fuzz") / "model.npz"
    model.save(path)
    return path, path.read_bytes(), model.predict(X)


def _outcome(path):
    try:
        return load_model(path)
    except ModelFileError:
        return None


def test_random_byte_damage(original, tmp_path):
    path, data, expected = original
    rng = random.Random(1)
    target, detected = tmp_path / "damaged.npz", 0
    for _ in range(300):
        damaged = bytearray(data)
        how = rng.choice(["flip", "truncate", "insert", "zero"])
        at = rng.randrange(len(data))
        if how == "flip":
            damaged[at] ^= 1 << rng.randrange(8)
        elif how == "truncate":
            del damaged[at:]
        elif how == "insert":
            damaged[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            damaged[at:at + 16] = bytes(len(damaged[at:at + 16]))
        target.write_bytes(bytes(damaged))
        model = _outcome(target)
        if model is None:
            detected += 1
        else:  # damage outside anything that matters (e.g. zip timestamps): the exact original
            np.testing.assert_array_equal(model.predict(X), expected)
    assert detected > 250, detected


def _paths(obj, prefix=()):
    """Every key/index path inside a JSON value."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def test_random_header_values_with_valid_checksum(original, tmp_path):
    """Even a header re-signed after tampering (valid SHA-256) never gets past with a crash."""
    path, _, _ = original
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    base = json.loads(arrays.pop(HEADER_KEY).tobytes())
    targets = [p for p in _paths(base) if p[0] in ("model_config", "compile_config", "rng_states", "arrays")]
    rng = random.Random(2)
    target, refused = tmp_path / "tampered.npz", 0
    for _ in range(300):
        header = json.loads(json.dumps(base))
        *parents, last = rng.choice(targets)
        node = header
        for key in parents:
            node = node[key]
        node[last] = rng.choice(JSON_VALUES)
        try:  # re-sign, unless the arrays list itself is now unusable
            header["sha256"] = model_file.checksum(header, arrays)
        except (TypeError, KeyError, AttributeError):
            pass
        with open(target, "wb") as f:
            np.savez(f, **arrays, **{HEADER_KEY: np.frombuffer(json.dumps(header).encode(), np.uint8)})
        model = _outcome(target)
        if model is None:
            refused += 1
        else:  # a harmless change (a name, a rate): the model works
            assert model.predict(X).shape == (3, 4)
    assert refused > 150, refused
