"""save_model / load_model: exact round trips for every layer type, resumable training, atomicity."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import cnnext
from cnnext import layers as L
from cnnext.io import ModelFileError, load_model, save_model
from cnnext.models import Sequential

INPUT_SHAPE = (9, 8, 3)


def _randomise(model: Sequential, seed: int = 0) -> None:
    """Give every weight and state entry non-trivial values (biases, BN stats included)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        for w in weights:
            w[...] = rng.uniform(0.5, 1.5, w.shape) * rng.choice([-1, 1], w.shape)
        state_keys = list(layer.params) + list(layer.state)
        for key, w in zip(state_keys, weights):
            if "var" in key:
                w[...] = np.abs(w)
        layer.set_weights(weights)


LAYER_STACKS = {
    "conv_valid": lambda: [L.Conv2D(4, 3, input_shape=INPUT_SHAPE)],
    "conv_same_relu": lambda: [L.Conv2D(4, 3, padding="same", activation="relu", input_shape=INPUT_SHAPE)],
    "conv_stride_pad_dilation": lambda: [
        L.Conv2D(5, (3, 2), strides=(2, 1), padding=(1, 2), dilation_rate=(2, 1), input_shape=INPUT_SHAPE)],
    "conv_no_bias_int_padding": lambda: [
        L.Conv2D(2, 2, padding=1, use_bias=False, activation="tanh", input_shape=INPUT_SHAPE)],
    "maxpool": lambda: [L.Conv2D(3, 2, input_shape=INPUT_SHAPE), L.MaxPool2D(2)],
    "minpool_same": lambda: [L.Conv2D(3, 2, input_shape=INPUT_SHAPE), L.MinPool2D(3, strides=2, padding="same")],
    "avgpool_strided": lambda: [L.Conv2D(3, 2, input_shape=INPUT_SHAPE), L.AvgPool2D((2, 3), strides=(1, 2))],
    "pool2d_kind": lambda: [L.Pool2D(3, strides=1, padding=1, kind="min", input_shape=INPUT_SHAPE)],
    "upsample": lambda: [L.Conv2D(2, 3, input_shape=INPUT_SHAPE), L.UpSample2D((2, 3))],
    "flatten_dense_softmax": lambda: [L.Flatten(input_shape=INPUT_SHAPE), L.Dense(7, activation="softmax")],
    "dense_no_bias_dropout": lambda: [
        L.Flatten(input_shape=INPUT_SHAPE), L.Dense(6, use_bias=False), L.Dropout(0.3), L.Dense(3)],
    "batchnorm_conv": lambda: [L.Conv2D(4, 3, input_shape=INPUT_SHAPE), L.BatchNormalization()],
    "batchnorm_dense": lambda: [
        L.Flatten(input_shape=INPUT_SHAPE), L.Dense(5), L.BatchNormalization(momentum=0.8, epsilon=1e-2)],
    "activation_layers": lambda: [
        L.Conv2D(3, 3, input_shape=INPUT_SHAPE), L.Activation("leaky_relu"), L.Flatten(),
        L.Dense(4), L.Activation("sigmoid")],
}


def test_every_layer_class_is_round_tripped():
    used = {type(layer) for make in LAYER_STACKS.values() for layer in make()}
    assert set(L.LAYER_CLASSES.values()) <= used


def _predict_equal(a: Sequential, b: Sequential, x: np.ndarray) -> None:
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


@pytest.mark.parametrize("stack", sorted(LAYER_STACKS))
def test_round_trip_every_layer_type(tmp_path, stack):
    model = Sequential(LAYER_STACKS[stack]())
    _randomise(model)
    path = tmp_path / "model.cnx"
    assert save_model(model, path) == str(path)
    loaded = load_model(path)
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    assert loaded.get_config() == model.get_config()
    for w_loaded, w in zip(loaded.get_weights(), model.get_weights()):
        assert w_loaded.dtype == w.dtype
        np.testing.assert_array_equal(w_loaded, w)
    x = np.random.default_rng(1).normal(size=(5, *INPUT_SHAPE)).astype(np.float32)
    _predict_equal(model, loaded, x)


def test_float64_round_trip(tmp_path):
    model = Sequential([L.Conv2D(3, 3, input_shape=INPUT_SHAPE), L.BatchNormalization(), L.Flatten(),
                        L.Dense(4)], dtype="float64")
    _randomise(model)
    save_model(model, tmp_path / "m64.npz")
    loaded = load_model(tmp_path / "m64.npz")
    assert all(w.dtype == np.float64 for w in loaded.get_weights())
    x = np.random.default_rng(2).normal(size=(3, *INPUT_SHAPE))
    _predict_equal(model, loaded, x)


def test_model_save_method_and_package_exports(tmp_path):
    model = Sequential([L.Flatten(input_shape=INPUT_SHAPE), L.Dense(2)])
    model.save(tmp_path / "m.npz")
    assert cnnext.load_model is load_model
    assert cnnext.save_model is save_model
    assert cnnext.ModelFileError is ModelFileError
    _predict_equal(model, cnnext.load_model(tmp_path / "m.npz"), np.ones((1, *INPUT_SHAPE), np.float32))


def test_missing_directory_is_named(tmp_path):
    model = Sequential([L.Flatten(input_shape=INPUT_SHAPE), L.Dense(2)])
    with pytest.raises(FileNotFoundError, match="directory '.*nowhere' does not exist"):
        save_model(model, tmp_path / "nowhere" / "m.npz")
    assert not os.path.exists(tmp_path / "nowhere")


def test_directory_as_target_is_named_and_kept(tmp_path):
    model = Sequential([L.Flatten(input_shape=INPUT_SHAPE), L.Dense(2)])
    target = tmp_path / "m.npz"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot write '.*m\.npz': it is a directory"):
        save_model(model, target)
    assert target.is_dir() and os.listdir(tmp_path) == ["m.npz"]  # no temporary file left


def test_unbuilt_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not built"):
        save_model(Sequential([L.Dense(3)]), tmp_path / "m.npz")


def _classifier(optimizer) -> Sequential:
    model = Sequential([
        L.Conv2D(4, 3, padding="same", activation="relu", input_shape=INPUT_SHAPE),
        L.BatchNormalization(), L.MaxPool2D(2), L.Flatten(), L.Dropout(0.25),
        L.Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("optimizer", [
    cnnext.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    cnnext.optimizers.Adam(learning_rate=0.01),
    cnnext.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1),
    cnnext.optimizers.RMSprop(learning_rate=0.01),
    cnnext.optimizers.SGD(cnnext.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)),
], ids=["SGD-nesterov", "Adam", "AdamW", "RMSprop", "SGD-exponential-decay"])
def test_training_continues_identically_after_load(tmp_path, optimizer):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, *INPUT_SHAPE)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]
    model = _classifier(optimizer)
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    save_model(model, tmp_path / "ckpt.npz")
    loaded = load_model(tmp_path / "ckpt.npz")
    assert loaded.compile_config() == model.compile_config()
    state, loaded_state = model.optimizer.get_state(), loaded.optimizer.get_state()
    assert sorted(state) == sorted(loaded_state)
    for key in state:
        np.testing.assert_array_equal(loaded_state[key], state[key])
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    for w_loaded, w in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(w_loaded, w)
    assert not np.array_equal(model.get_weights()[0], load_model(tmp_path / "ckpt.npz").get_weights()[0])


def test_resume_from_checkpoint_equals_uninterrupted_training(tmp_path):
    """ModelCheckpoint files hold everything training needs: 2 epochs + checkpoint + 2 more epochs
    from the loaded file give exactly the weights of 4 uninterrupted epochs."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(24, *INPUT_SHAPE)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    runs = [_classifier(cnnext.optimizers.Adam(0.01)) for _ in range(2)]  # same seed: same model
    checkpoint = cnnext.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.npz"))
    runs[0].fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[checkpoint])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1.npz", "ckpt-2.npz"]
    resumed = load_model(tmp_path / "ckpt-2.npz")
    resumed.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    runs[1].fit(x, y, epochs=4, batch_size=8, shuffle=False, verbose=0)
    for w_resumed, w in zip(resumed.get_weights(), runs[1].get_weights()):
        np.testing.assert_array_equal(w_resumed, w)


def test_saved_file_has_ordinary_permissions(tmp_path):
    model = Sequential([L.Flatten(input_shape=INPUT_SHAPE), L.Dense(2)])
    old = os.umask(0o027)
    try:
        save_model(model, tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------------------------- atomicity
def _two_versions(tmp_path):
    model = Sequential([L.Flatten(input_shape=INPUT_SHAPE), L.Dense(5)])
    _randomise(model, seed=0)
    path = tmp_path / "model.npz"
    save_model(model, path)
    before = path.read_bytes()
    _randomise(model, seed=1)
    return model, path, before


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    model, path, before = _two_versions(tmp_path)

    def write_half_then_fail(f, arrays):
        f.write(b"PK\x03\x04 partial archive")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cnnext.io, "_write_archive", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]
    load_model(path)


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    model, path, before = _two_versions(tmp_path)

    def interrupt(f, arrays):
        f.write(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnext.io, "_write_archive", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def test_checkpoint_survives_a_failed_later_save(tmp_path, monkeypatch):
    """ModelCheckpoint overwriting one file: when the epoch-2 save fails, epoch 1's file is intact."""
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(8, *INPUT_SHAPE)).astype(np.float32), rng.integers(0, 3, 8)
    model = _classifier(cnnext.optimizers.Adam(0.01))
    real_write, calls = cnnext.io._write_archive, []

    def fail_second(f, arrays):
        calls.append(1)
        if len(calls) == 2:
            real_write(f, {k: v for k, v in list(arrays.items())[:2]})  # part of the archive
            raise OSError("disk full (simulated)")
        real_write(f, arrays)

    monkeypatch.setattr(cnnext.io, "_write_archive", fail_second)
    path = tmp_path / "ckpt.npz"
    saved_weights = []

    class RecordWeights(cnnext.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved_weights.append(self.model.get_weights())

    callbacks = [cnnext.callbacks.ModelCheckpoint(str(path)), RecordWeights()]
    with pytest.raises(OSError, match="disk full"):
        model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0, callbacks=callbacks)
    assert len(saved_weights) == 1 and os.listdir(tmp_path) == ["ckpt.npz"]
    for w_file, w in zip(load_model(path).get_weights(), saved_weights[0]):
        np.testing.assert_array_equal(w_file, w)


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from cnnext import layers as L
    from cnnext.io import save_model
    from cnnext.models import Sequential

    path, ref_a, ref_b = sys.argv[1:]
    model = Sequential([L.Flatten(input_shape=(32, 32, 3)), L.Dense(256)])
    a = model.get_weights()
    b = [w + 1 for w in a]
    save_model(model, ref_a)
    model.set_weights(b)
    save_model(model, ref_b)
    print("ready", flush=True)
    i = 0
    while True:
        model.set_weights(a if i % 2 else b)
        save_model(model, path)
        i += 1
""")


def test_writer_killed_mid_save_never_leaves_a_broken_file(tmp_path):
    """SIGKILL a process that saves in a loop (at random moments, until three kills have landed
    inside a save): the file always loads as one complete version."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    path, ref_a, ref_b = (tmp_path / n for n in ("model.npz", "a.npz", "b.npz"))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnext.__file__)))
    rng = np.random.default_rng(4)
    interrupted_saves = kills = checked = 0
    while interrupted_saves < 3 and kills < 20:
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(ref_a), str(ref_b)],
                                stdout=subprocess.PIPE, env=env, cwd=tmp_path)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        kills += 1
        temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        interrupted_saves += bool(temps)
        for name in temps:  # what a killed writer leaves behind; never the target file
            os.unlink(tmp_path / name)
        if not path.exists():
            continue  # killed before the first save completed
        weights = load_model(path).get_weights()
        versions = [load_model(ref).get_weights() for ref in (ref_a, ref_b)]
        assert any(all(np.array_equal(w, v) for w, v in zip(weights, ver)) for ver in versions)
        checked += 1
    assert interrupted_saves > 0, "no kill landed inside a save; the test proved nothing"
    assert checked > 0, "the target file never existed: nothing was verified"
