"""PyTorch (CPU) as an independent reference for conv, pooling, upsampling, dense and ReLU, forward
+ backward.

cnnext is channels-last (NHWC activations, HWIO weights); PyTorch is NCHW / OIHW.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from cnnext import ops
from cnnext.shapes import resolve_padding, to_pair

if os.environ.get("CI") == "true":
    import torch  # CI installs torch: a missing torch must fail there, never skip
else:
    torch = pytest.importorskip("torch")
F = torch.nn.functional

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]


def to_torch(a: np.ndarray, axes=(0, 3, 1, 2)) -> "torch.Tensor":
    """NHWC (or HWIO with ``axes=(3, 2, 0, 1)``) array -> NCHW (OIHW) leaf tensor with grad."""
    return torch.tensor(np.ascontiguousarray(a.transpose(axes)), requires_grad=True)


def from_torch(t: "torch.Tensor", axes=(0, 2, 3, 1)) -> np.ndarray:
    """NCHW tensor -> NHWC array (``axes=(2, 3, 1, 0)`` turns OIHW into HWIO)."""
    return t.detach().numpy().transpose(axes)


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype) -> None:
    assert actual.dtype == dtype
    tol = TOLERANCE[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


CONV_CASES = [
    {"stride": 1, "padding": 0, "dilation": 1},
    {"stride": 2, "padding": 1, "dilation": 1},
    {"stride": (1, 2), "padding": (2, 1), "dilation": (2, 1)},
    {"stride": 3, "padding": 0, "dilation": 2},  # stride larger than the kernel
    {"stride": 1, "padding": "same", "dilation": 1},  # even kernel: asymmetric padding
    {"stride": 2, "padding": "same", "dilation": (1, 2)},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("kernel", [(1, 1), (2, 4), (3, 3)])
def test_conv2d_matches_torch(backend_name, dtype, case, kernel):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 10, 3)).astype(dtype)
    w = rng.standard_normal((*kernel, 3, 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    y = ops.conv2d(x, w, b, **case, backend=backend_name)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = ops.conv2d_backward(dy, x, w, **case, backend=backend_name)

    stride, dilation = to_pair(case["stride"], "stride"), to_pair(case["dilation"], "dilation")
    pad = resolve_padding(case["padding"], x.shape[1:3], kernel, stride, dilation)
    top, bottom, left, right = pad
    xt, wt = to_torch(x), to_torch(w, axes=(3, 2, 0, 1))
    bt = torch.tensor(b, requires_grad=True)
    yt = F.conv2d(F.pad(xt, (left, right, top, bottom)), wt, bt, stride=stride, dilation=dilation)
    yt.backward(torch.tensor(np.ascontiguousarray(dy.transpose(0, 3, 1, 2))))

    assert_close(y, from_torch(yt), dtype)
    assert_close(dx, from_torch(xt.grad), dtype)
    assert_close(dw, from_torch(wt.grad, axes=(2, 3, 1, 0)), dtype)
    assert_close(db, bt.grad.numpy(), dtype)


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch pads a copy itself
@pytest.mark.parametrize("kernel, dilation", [((2, 4), (1, 1)), ((3, 2), (2, 3))])
def test_same_padding_splits_like_torch(backend_name, kernel, dilation):
    """PyTorch's own padding="same" (stride 1) also puts the odd cell at the bottom/right."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 7, 8, 2))
    w = rng.standard_normal((*kernel, 2, 3))
    y = ops.conv2d(x, w, padding="same", dilation=dilation, backend=backend_name)
    yt = F.conv2d(to_torch(x), to_torch(w, axes=(3, 2, 0, 1)), padding="same", dilation=dilation)
    assert_close(y, from_torch(yt), np.float64)


POOL_CASES = [
    {"size": 2, "stride": None, "padding": 0},
    {"size": 3, "stride": 2, "padding": 1},
    {"size": (3, 2), "stride": (1, 2), "padding": (1, 0)},
    {"size": 2, "stride": 3, "padding": 0},  # stride larger than the window
]


def torch_pool(xt, mode: str, size, stride, padding):
    if mode == "max":
        return F.max_pool2d(xt, size, stride, padding)
    if mode == "min":
        return -F.max_pool2d(-xt, size, stride, padding)
    return F.avg_pool2d(xt, size, stride, padding, count_include_pad=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["max", "min", "avg"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool2d_matches_torch(backend_name, dtype, mode, case):
    rng = np.random.default_rng(4)
    x = rng.permutation(2 * 7 * 8 * 3).reshape(2, 7, 8, 3).astype(dtype) / 100  # no ties
    y = ops.pool2d(x, **case, mode=mode, backend=backend_name)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ops.pool2d_backward(dy, x, **case, mode=mode, backend=backend_name)

    size = to_pair(case["size"], "size")
    stride = size if case["stride"] is None else to_pair(case["stride"], "stride")
    xt = to_torch(x)
    yt = torch_pool(xt, mode, size, stride, to_pair(case["padding"], "padding", minimum=0))
    yt.backward(torch.tensor(np.ascontiguousarray(dy.transpose(0, 3, 1, 2))))

    assert_close(y, from_torch(yt), dtype)
    assert_close(dx, from_torch(xt.grad), dtype)


def test_max_pool_nan_propagates_like_torch(backend_name):
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    x[0, 1, 2, 0] = np.nan
    y = ops.pool2d(x, 2, backend=backend_name)
    expected = from_torch(F.max_pool2d(to_torch(x), 2))
    np.testing.assert_array_equal(y, expected)
    assert np.isnan(y[0, 0, 1, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1, 2, (2, 3), (3, 1)])
def test_upsample2d_matches_torch(backend_name, dtype, scale):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 5, 3)).astype(dtype)
    y = ops.upsample2d(x, scale, backend=backend_name)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ops.upsample2d_backward(dy, scale, backend=backend_name)

    xt = to_torch(x)
    yt = F.interpolate(xt, size=y.shape[1:3], mode="nearest")
    yt.backward(torch.tensor(np.ascontiguousarray(dy.transpose(0, 3, 1, 2))))

    assert_close(y, from_torch(yt), dtype)
    assert_close(dx, from_torch(xt.grad), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d, u", [(1, 3, 2), (7, 33, 17), (64, 400, 120), (130, 16, 40)])
def test_dense_matches_torch(backend_name, dtype, n, d, u):
    """``F.linear`` takes the weight as (U, D): ours transposed."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, u)).astype(dtype)
    b = rng.standard_normal(u).astype(dtype)
    dy = rng.standard_normal((n, u)).astype(dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w.T.copy(), b))
    yt = F.linear(xt, wt, bt)
    yt.backward(torch.tensor(dy))
    assert_close(ops.dense(x, w, b, backend=backend_name), yt.detach().numpy(), dtype)
    dx, dw, db = ops.dense_backward(dy, x, w, backend=backend_name)
    assert_close(dx, xt.grad.numpy(), dtype)
    assert_close(dw, wt.grad.numpy().T, dtype)
    assert_close(db, bt.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_matches_torch(backend_name, dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 5, 4, 2)).astype(dtype)
    x.flat[:2] = 0.0  # torch's gradient at 0 is 0, as ours
    dy = rng.standard_normal(x.shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.relu(xt)
    yt.backward(torch.tensor(dy))
    assert_close(ops.relu(x, backend=backend_name), yt.detach().numpy(), dtype)
    assert_close(ops.relu_backward(dy, x, backend=backend_name), xt.grad.numpy(), dtype)
