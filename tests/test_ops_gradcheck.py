"""Every backward against central finite differences of its forward, in float64, on each backend.

The loss is ``L = sum(forward(...) * r)`` with a fixed random ``r``, so ``dL/dinput`` is the
backward applied to ``r``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from cnnext import ops

STEP = 1e-6
MAX_REL_ERROR = 1e-6


def numerical_gradient(loss: Callable[[], float], a: np.ndarray) -> np.ndarray:
    """Central differences of ``loss()`` with respect to every element of ``a`` (changed in place
    and restored)."""
    grad = np.zeros_like(a)
    flat = a.reshape(-1)  # a view: a is C-contiguous
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + STEP
        up = loss()
        flat[i] = original - STEP
        down = loss()
        flat[i] = original
        grad.flat[i] = (up - down) / (2 * STEP)
    return grad


def assert_gradient(analytic: np.ndarray, numeric: np.ndarray) -> None:
    scale = max(float(np.abs(numeric).max()), 1e-3)
    error = float(np.abs(analytic - numeric).max()) / scale
    assert error < MAX_REL_ERROR, f"relative gradient error {error:.2e}"


def distinct_values(rng, shape) -> np.ndarray:
    """Values in [-1, 1] at least ``2 / size`` apart, so no max/min tie flips under a small step."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) / size * 2.0 - 1.0).astype(np.float64)


CONV_CASES = [
    {"stride": 1, "padding": 0, "dilation": 1},
    {"stride": (2, 1), "padding": (1, 2), "dilation": 1},
    {"stride": 2, "padding": "same", "dilation": (1, 2)},
    {"stride": (1, 3), "padding": "valid", "dilation": 2},
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradients(backend_name, case):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 6, 7, 3))
    w = rng.uniform(-1, 1, (3, 2, 3, 2))
    b = rng.uniform(-1, 1, 2)
    r = rng.uniform(-1, 1, ops.conv2d(x, w, b, **case, backend=backend_name).shape)

    def loss() -> float:
        return float(np.sum(ops.conv2d(x, w, b, **case, backend=backend_name) * r))

    dx, dw, db = ops.conv2d_backward(r, x, w, **case, backend=backend_name)
    assert_gradient(dx, numerical_gradient(loss, x))
    assert_gradient(dw, numerical_gradient(loss, w))
    assert_gradient(db, numerical_gradient(loss, b))


POOL_CASES = [
    {"size": 2},
    {"size": 3, "stride": 2, "padding": 1},
    {"size": (2, 3), "stride": (1, 2), "padding": "same"},
    {"size": (3, 2), "stride": (3, 1), "padding": (2, 0)},
]


@pytest.mark.parametrize("mode", ["max", "min", "avg"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool2d_gradients(backend_name, mode, case):
    rng = np.random.default_rng(1)
    x = distinct_values(rng, (2, 5, 6, 2))
    r = rng.uniform(-1, 1, ops.pool2d(x, **case, mode=mode, backend=backend_name).shape)

    def loss() -> float:
        return float(np.sum(ops.pool2d(x, **case, mode=mode, backend=backend_name) * r))

    dx = ops.pool2d_backward(r, x, **case, mode=mode, backend=backend_name)
    assert_gradient(dx, numerical_gradient(loss, x))


@pytest.mark.parametrize("scale", [1, 2, (3, 2)])
def test_upsample2d_gradient(backend_name, scale):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, 3, 4, 2))
    r = rng.uniform(-1, 1, ops.upsample2d(x, scale, backend=backend_name).shape)

    def loss() -> float:
        return float(np.sum(ops.upsample2d(x, scale, backend=backend_name) * r))

    dx = ops.upsample2d_backward(r, scale, backend=backend_name)
    assert_gradient(dx, numerical_gradient(loss, x))


@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_gradients(backend_name, with_bias):
    rng = np.random.default_rng(5)
    x, w = rng.uniform(-1, 1, (5, 19)), rng.uniform(-1, 1, (19, 21))
    b = rng.uniform(-1, 1, 21) if with_bias else None
    r = rng.uniform(-1, 1, (5, 21))

    def loss() -> float:
        return float(np.sum(ops.dense(x, w, b, backend=backend_name) * r))

    dx, dw, db = ops.dense_backward(r, x, w, backend=backend_name)
    assert_gradient(dx, numerical_gradient(loss, x))
    assert_gradient(dw, numerical_gradient(loss, w))
    if with_bias:
        assert_gradient(db, numerical_gradient(loss, b))


def test_relu_gradient(backend_name):
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (2, 3, 4, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink at 0
    r = rng.uniform(-1, 1, x.shape)

    def loss() -> float:
        return float(np.sum(ops.relu(x, backend=backend_name) * r))

    assert_gradient(ops.relu_backward(r, x, backend=backend_name), numerical_gradient(loss, x))
