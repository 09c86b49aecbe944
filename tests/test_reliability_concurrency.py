"""Thread safety: many Python threads using ONE model (or the ops) at once get exactly the results
of serial calls. The compiled kernels release the GIL, so their threads really overlap; a tiny
interpreter switch interval makes the pure-Python parts interleave as often as possible."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from cnnext import layers as L
from cnnext import ops
from cnnext.models import Sequential

THREADS = 8
ROUNDS = 6


@pytest.fixture
def busy_switching():
    """Switch between Python threads every microsecond during the test."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _run_threads(work, n: int = THREADS) -> list:
    """Run ``work(i)`` in ``n`` threads started together; return their results, re-raising the
    first exception any of them hit."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def _model(backend: str) -> Sequential:
    """Every inference-relevant layer, BatchNormalization with non-trivial moving statistics."""
    model = Sequential([
        L.Conv2D(6, 3, padding="same", activation="relu", input_shape=(12, 12, 3)),
        L.BatchNormalization(),
        L.MaxPool2D(2),
        L.Conv2D(8, 3, activation="tanh"),
        L.AvgPool2D(2, padding="same"),
        L.UpSample2D(2),
        L.Dropout(0.3),
        L.Flatten(),
        L.Dense(5, activation="softmax"),
    ], seed=1, backend=backend)
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(0.5, 0.3, w.shape).astype(w.dtype) + (w.ndim == 1)
                       for w in model.get_weights()])
    return model


def test_threads_predicting_on_one_model_match_serial_calls(backend_name, busy_switching):
    model = _model(backend_name)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 12, 12, 3)).astype(np.float32) for n in (1, 3, 7, 16, 5, 2)]
    expected = [model.predict(x, batch_size=4) for x in batches]

    def work(i: int) -> list[np.ndarray]:
        order = [(i + k) % len(batches) for k in range(len(batches))] * ROUNDS
        return [(k, model.predict(batches[k], batch_size=4)) for k in order]

    for outputs in _run_threads(work):
        for k, out in outputs:
            np.testing.assert_array_equal(out, expected[k])


def test_threads_calling_ops_with_different_shapes_match_serial_calls(backend_name,
                                                                       busy_switching):
    rng = np.random.default_rng(1)

    def case(i: int):
        """A different op and geometry per thread."""
        n, h, w, c = 1 + i % 3, 5 + i, 9 - i % 4, 1 + i % 4
        x = rng.normal(size=(n, h, w, c))
        kernel = rng.normal(size=(1 + i % 3, 2, c, 3))
        calls = [
            lambda: ops.conv2d(x, kernel, stride=1 + i % 2, padding="same", backend=backend_name),
            lambda: ops.conv2d_backward(
                np.ones((n, h - i % 3, w - 1, 3)), x, kernel, backend=backend_name),
            lambda: ops.pool2d(x, 2, stride=1, mode=("max", "min", "avg")[i % 3],
                               backend=backend_name),
            lambda: ops.pool2d_backward(np.ones((n, h // 2, w // 2, c)), x, 2,
                                        mode=("max", "min", "avg")[i % 3], backend=backend_name),
            lambda: ops.upsample2d(x, (1 + i % 2, 2), backend=backend_name),
            lambda: ops.upsample2d_backward(
                np.ones((n, 2 * h, 3 * w, c)), (2, 3), backend=backend_name),
        ]
        return calls[i % len(calls)]

    cases = [case(i) for i in range(THREADS)]
    expected = [call() for call in cases]

    def work(i: int) -> list:
        return [cases[(i + k) % THREADS]() for k in range(THREADS * 3)]

    for i, outputs in enumerate(_run_threads(work)):
        for k, out in enumerate(outputs):
            want = expected[(i + k) % THREADS]
            for got, ref in zip(out if isinstance(out, tuple) else (out,),
                                want if isinstance(want, tuple) else (want,)):
                np.testing.assert_array_equal(got, ref)


class _SwitchingBatchNorm(L.BatchNormalization):
    """Storing ``_xhat`` hands the GIL to another thread: the window in which the old code read
    back another thread's batch (CPython 3.11 has no switch point there on its own)."""

    @property
    def _xhat(self):
        return self.__dict__.get("_xhat_value")

    @_xhat.setter
    def _xhat(self, value) -> None:
        self.__dict__["_xhat_value"] = value
        time.sleep(0)


def test_batchnorm_inference_keeps_each_threads_batch(busy_switching):
    """BatchNormalization.forward used to store its normalised batch in ``self._xhat`` and read it
    back; a thread switch in between handed one thread another thread's batch."""
    layer = _SwitchingBatchNorm()
    layer.build((4,))
    layer.set_weights([np.full(4, 2.0, np.float32), np.ones(4, np.float32),
                       np.full(4, 0.5, np.float32), np.full(4, 3.0, np.float32)])
    inputs = [np.full((200 + 37 * i, 4), float(i), np.float32) for i in range(THREADS)]
    expected = [layer.forward(x, training=False) for x in inputs]

    def work(i: int) -> list[np.ndarray]:
        return [layer.forward(inputs[i], training=False) for _ in range(300)]

    for i, outputs in enumerate(_run_threads(work)):
        for out in outputs:
            np.testing.assert_array_equal(out, expected[i])
