"""Workspace reuse: model passes write their large arrays into per-layer, per-thread buffers kept
from one batch to the next, with results identical to fresh arrays; direct layer calls allocate."""
from __future__ import annotations

import contextlib
import copy
import threading
import tracemalloc

import numpy as np
import pytest

from cnnext import Sequential, layers, optimizers, presets
from cnnext.workspace import ALIGNMENT, Workspace

RNG = np.random.default_rng(5)


def test_workspace_reuses_one_buffer_per_name_and_grows_it():
    ws = Workspace()
    a = ws.array("y", (4, 5), np.float32)
    assert a.shape == (4, 5) and a.dtype == np.float32
    assert np.shares_memory(ws.array("y", (4, 5), np.float32), a)
    assert np.shares_memory(ws.array("y", (2, 3), np.float64), a)  # smaller: same buffer
    assert not np.shares_memory(ws.array("dx", (4, 5), np.float32), a)
    bigger = ws.array("y", (8, 5), np.float32)
    assert bigger.shape == (8, 5) and not np.shares_memory(bigger, a)
    again = ws.array("y", (4, 5), np.float32)  # an earlier shape, now from the grown buffer
    assert again.shape == (4, 5) and np.shares_memory(again, bigger)
    assert not np.shares_memory(again, a)
    assert ws.nbytes == bigger.nbytes + 4 * 5 * 4 + 2 * ALIGNMENT  # each with room to align
    for arr in (a, bigger, ws.array("dx", (3,), np.float64), ws.array("y", (7,), np.float32)):
        assert arr.ctypes.data % ALIGNMENT == 0
    ws.clear()
    assert ws.nbytes == 0


def _model(backend_name: str, dtype: str) -> Sequential:
    model = Sequential(seed=3, dtype=dtype, backend=backend_name, layers=[
        layers.Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 2)),
        layers.MaxPool2D(2),
        layers.UpSample2D(2),
        layers.Conv2D(3, 3, activation="tanh"),
        layers.AvgPool2D(2, strides=1),
        layers.Dropout(0.3),
        layers.Flatten(),
        layers.Dense(12, activation="leaky_relu"),
        layers.Dense(6, activation="sigmoid"),
        layers.Dense(5, activation="softmax"),
    ])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_with_workspaces_matches_fresh_arrays(backend_name, dtype, monkeypatch):
    x = RNG.standard_normal((40, 8, 8, 2))
    y = RNG.integers(0, 5, 40)
    batches = [slice(0, 16), slice(16, 32), slice(32, 39), slice(0, 16)]  # sizes change
    reused = _model(backend_name, dtype)
    losses = [reused.train_on_batch(x[s], y[s]) for s in batches]
    monkeypatch.setattr(Sequential, "_workspaces", lambda self: contextlib.nullcontext())
    fresh = _model(backend_name, dtype)
    assert [fresh.train_on_batch(x[s], y[s]) for s in batches] == losses
    for a, b in zip(reused.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(layer.workspace.nbytes == 0 for layer in fresh.layers)
    assert reused.layers[0].workspace.nbytes > 0


def _lenet5() -> Sequential:
    return presets.build_model("lenet5", schedule="constant", seed=0)


def test_lenet5_training_steps_after_the_first_allocate_no_large_buffers(backend_name):
    """The benchmark's LeNet-5 step at batch 128: activations and their gradients (up to 2.4 MB
    each) come from the workspaces, so the traced peak above the step's start stays under 1 MiB
    (it was 4.6 MiB before workspaces) and nothing is retained."""
    x = RNG.random((128, 28, 28, 1), dtype=np.float32)
    y = RNG.integers(0, 10, 128)
    model = _lenet5()
    model.train_on_batch(x, y)
    first_output = model.layers[0].preactivation
    transient, retained = [], []
    tracemalloc.start()
    try:
        for _ in range(3):
            tracemalloc.reset_peak()
            start, _ = tracemalloc.get_traced_memory()
            model.train_on_batch(x, y)
            end, peak = tracemalloc.get_traced_memory()
            transient.append(peak - start)
            retained.append(end - start)
    finally:
        tracemalloc.stop()
    if backend_name == "cython":  # the NumPy twins compute fresh arrays, then copy them
        assert max(transient) < 1 << 20
    # the first traced step replaces untraced weight gradients, so it counts as retained
    assert max(retained[1:]) < 1 << 12
    assert np.shares_memory(model.layers[0].preactivation, first_output)


def test_inference_reuses_each_threads_workspace_and_direct_calls_allocate(backend_name):
    x = RNG.random((8, 28, 28, 1), dtype=np.float32)
    model = _lenet5()
    model.train_on_batch(x, np.arange(8))
    conv = model.layers[0]
    trained = conv.preactivation
    assert not conv.use_workspace
    first = model.predict(x)
    assert np.shares_memory(conv.preactivation, trained)  # this thread's workspace again
    np.testing.assert_array_equal(model.predict(x), first)

    seen = {}

    def other_thread():
        seen["prediction"] = model.predict(x)
        seen["z"] = conv.preactivation
        seen["workspace"] = conv.workspace

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    np.testing.assert_array_equal(seen["prediction"], first)
    assert seen["workspace"] is not conv.workspace
    assert not np.shares_memory(seen["z"], trained)

    direct, again = conv(x), conv(x)
    assert not np.shares_memory(direct, again)


def test_a_copied_model_predicts_alike_with_its_own_workspaces(backend_name):
    x = RNG.random((8, 28, 28, 1), dtype=np.float32)
    model = _lenet5()
    model.train_on_batch(x, np.arange(8))
    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(twin.predict(x), model.predict(x))
    assert twin.layers[5].workspace is not model.layers[5].workspace
    assert not np.shares_memory(twin.layers[5].preactivation, model.layers[5].preactivation)
