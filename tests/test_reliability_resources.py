"""Resources: repeated op and predict calls do not grow the resident memory; inputs whose results
would not fit in memory fail with a MemoryError naming the size instead of getting the process
killed; results never share memory with the kernels' reusable scratch buffers."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from cnnext import layers as L
from cnnext import ops
from cnnext.models import Sequential

PAGE = os.sysconf("SC_PAGE_SIZE")
LIMIT_MB = 20.0


def rss_mb() -> float:
    """Resident set size of this process in MB (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def _growth(step, calls: int, warmup: int = 300) -> tuple[float, float]:
    """RSS before and after ``calls`` calls of ``step(i)``, after ``warmup`` calls."""
    for i in range(warmup):
        step(i)
    gc.collect()
    before = rss_mb()
    for i in range(calls):
        step(i)
    gc.collect()
    return before, rss_mb()


def _op_calls(backend_name: str):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    y = ops.conv2d(x, w, b, padding="same", backend=backend_name)
    pooled = ops.pool2d(x, 2, backend=backend_name)
    return [
        lambda: ops.conv2d(x, w, b, padding="same", backend=backend_name),
        lambda: ops.conv2d_backward(y, x, w, padding="same", backend=backend_name),
        lambda: ops.pool2d(x, 2, backend=backend_name),
        lambda: ops.pool2d_backward(pooled, x, 2, mode="avg", backend=backend_name),
        lambda: ops.upsample2d(x, 2, backend=backend_name),
        lambda: ops.upsample2d_backward(x[:, :8], 2, backend=backend_name),
    ]


def test_ten_thousand_op_calls_do_not_grow_memory(backend_name):
    calls = _op_calls(backend_name)
    before, after = _growth(lambda i: calls[i % len(calls)](), 10_000)
    print(f"\n{backend_name}: 10,000 op calls, RSS {before:.1f} -> {after:.1f} MB "
          f"({after - before:+.2f} MB)")
    assert after - before < LIMIT_MB


def test_ten_thousand_predict_calls_do_not_grow_memory(backend_name):
    model = Sequential([L.Conv2D(4, 3, activation="relu", input_shape=(10, 10, 2)),
                        L.BatchNormalization(), L.MaxPool2D(2), L.Flatten(),
                        L.Dense(3, activation="softmax")], seed=0, backend=backend_name)
    x = np.random.default_rng(1).normal(size=(8, 10, 10, 2)).astype(np.float32)
    before, after = _growth(lambda i: model.predict(x[: 1 + i % 8], batch_size=4), 10_000)
    print(f"\n{backend_name}: 10,000 predict calls, RSS {before:.1f} -> {after:.1f} MB "
          f"({after - before:+.2f} MB)")
    assert after - before < LIMIT_MB


def test_results_do_not_alias_reused_buffers(backend_name):
    """A result must stay as it was when the same op runs again on other data (kernels may
    keep scratch buffers between calls)."""
    rng = np.random.default_rng(2)
    first = [call() for call in _op_calls(backend_name)]
    kept = [tuple(np.copy(a) for a in r) if isinstance(r, tuple) else np.copy(r) for r in first]
    for _ in range(2):
        for call in _op_calls(backend_name):  # new random inputs of the same shapes
            rng.normal(size=100)
            call()
    for result, copy in zip(first, kept):
        for a, c in zip(result if isinstance(result, tuple) else (result,),
                        copy if isinstance(copy, tuple) else (copy,)):
            np.testing.assert_array_equal(a, c)


ONE = np.ones((1, 1, 1, 1), np.float32)


@pytest.mark.parametrize("call", [
    lambda be: ops.conv2d(ONE, ONE, padding=10**6, backend=be),            # ~15 TiB output
    lambda be: ops.conv2d(np.ones((4, 1, 1, 1)), ONE, padding=(2 * 10**6, 10**6), backend=be),
    lambda be: ops.conv2d_backward(ONE, ONE, ONE, stride=2 * 10**6 + 1, padding=10**6,
                                   backend=be),                           # padded x: 15 TiB
    lambda be: ops.pool2d(ONE, 10**6, padding=10**6 - 1, stride=1, backend=be),
    lambda be: ops.pool2d_backward(ONE, ONE, 10**6, padding=10**6 - 1, backend=be),
    lambda be: ops.upsample2d(ONE, 10**7, backend=be),                    # 10**14 cells
], ids=["conv2d", "conv2d_f64", "conv2d_backward", "pool2d", "pool2d_backward", "upsample2d"])
def test_results_too_large_for_memory_raise_memory_error(call, backend_name):
    with pytest.raises(MemoryError, match=r"would need [0-9.e+]+ GiB, more than this machine"):
        call(backend_name)


def test_a_model_too_large_for_memory_raises_memory_error(backend_name):
    """Layers call the kernels directly; numpy's own MemoryError (naming the size) surfaces."""
    model = Sequential([L.Conv2D(1, 1, padding=10**6, input_shape=(1, 1, 1))],
                       backend=backend_name)
    with pytest.raises(MemoryError, match="TiB|GiB"):
        model.predict(np.ones((1, 1, 1, 1)))


def test_a_huge_stride_allocates_nothing_large(backend_name):
    """Regression: the compiled conv sized its padded input by stride x register block, so a
    stride of 10**6 on a 7x7 image zero-filled (and kept) gigabytes; ops.py now clamps a stride
    beyond the input, which leaves the single output row/column unchanged."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 7, 7, 4)).astype(np.float32)
    w = rng.normal(size=(2, 2, 4, 3)).astype(np.float32)
    before = rss_mb()
    y = ops.conv2d(x, w, stride=(10**6, 2), backend=backend_name)
    dy = np.ones((3, 1, 1, 3), np.float32)
    dw = ops.conv2d_backward(dy, x, w, stride=10**6 - 1, backend=backend_name)[1]
    assert rss_mb() - before < LIMIT_MB
    np.testing.assert_allclose(y, ops.conv2d(x, w, stride=(6, 2), backend="numpy"), rtol=1e-5)
    np.testing.assert_allclose(dw, ops.conv2d_backward(dy, x, w, stride=6, backend="numpy")[1],
                               rtol=1e-5)
