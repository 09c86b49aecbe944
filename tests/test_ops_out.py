"""``out=``: every op writes into a given array (bit for bit what it returns without one) and
returns that array; a wrong ``out`` is rejected with a message naming what is wrong."""
from __future__ import annotations

import numpy as np
import pytest

from cnnext import ops

RNG = np.random.default_rng(11)


def _case(name: str, n: int, dtype) -> tuple:
    """``(op, positional args, keyword args, index of the result in the op's return value)``."""
    x = RNG.standard_normal((n, 9, 8, 3)).astype(dtype)
    w = RNG.standard_normal((3, 2, 3, 5)).astype(dtype)
    b = RNG.standard_normal(5).astype(dtype)
    if name == "conv2d":
        return ops.conv2d, (x, w, b), {"stride": (2, 1), "padding": 1}, None
    if name == "conv2d_backward":
        dy = RNG.standard_normal((n, 5, 9, 5)).astype(dtype)
        return ops.conv2d_backward, (dy, x, w), {"stride": (2, 1), "padding": 1}, 0
    if name in ("pool2d", "pool2d_backward"):
        kwargs = {"size": 3, "stride": 2, "padding": 1, "mode": "max"}
        if name == "pool2d":
            return ops.pool2d, (x,), kwargs, None
        return ops.pool2d_backward, (RNG.standard_normal((n, 5, 4, 3)).astype(dtype), x), kwargs, None
    if name == "upsample2d":
        return ops.upsample2d, (x, (2, 3)), {}, None
    if name == "upsample2d_backward":
        return ops.upsample2d_backward, (x, (3, 2)), {}, None
    if name in ("dense", "dense_backward"):
        flat, kernel = x.reshape(n, 9 * 8 * 3), RNG.standard_normal((9 * 8 * 3, 7)).astype(dtype)
        if name == "dense":
            return ops.dense, (flat, kernel, RNG.standard_normal(7).astype(dtype)), {}, None
        return ops.dense_backward, (RNG.standard_normal((n, 7)).astype(dtype), flat, kernel), {}, 0
    if name == "relu":
        return ops.relu, (x,), {}, None
    return ops.relu_backward, (RNG.standard_normal(x.shape).astype(dtype), x), {}, None


OPS = ["conv2d", "conv2d_backward", "pool2d", "pool2d_backward", "upsample2d",
       "upsample2d_backward", "dense", "dense_backward", "relu", "relu_backward"]


def _result(value, index):
    return value if index is None else value[index]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_receives_the_result_and_is_returned(backend_name, name, n, dtype):
    op, args, kwargs, index = _case(name, n, dtype)
    expected = _result(op(*args, backend=backend_name, **kwargs), index)
    out = np.full_like(expected, np.nan)  # stale contents must not leak into the result
    got = op(*args, backend=backend_name, out=out, **kwargs)
    assert _result(got, index) is out
    np.testing.assert_array_equal(out, expected)
    if index is not None:  # the weight and bias gradients do not depend on out
        for fresh, with_out in zip(op(*args, backend=backend_name, **kwargs)[1:], got[1:]):
            np.testing.assert_array_equal(with_out, fresh)


@pytest.mark.parametrize("name", OPS)
def test_wrong_out_is_rejected(backend_name, name):
    op, args, kwargs, index = _case(name, 2, np.float32)
    good = _result(op(*args, backend=backend_name, **kwargs), index)

    def call(out):
        return op(*args, backend=backend_name, out=out, **kwargs)

    with pytest.raises(TypeError, match=f"{name}: out must be a numpy.ndarray"):
        call(good.tolist())
    with pytest.raises(ValueError, match=r"out.shape=.* must be the result's shape"):
        call(np.empty(good.shape[:-1] + (good.shape[-1] + 1,), np.float32))
    with pytest.raises(ValueError, match="out.dtype=float64"):
        call(np.empty(good.shape, np.float64))
    with pytest.raises(ValueError, match="C-contiguous and writeable"):
        call(np.empty(good.shape[::-1], np.float32).T)
    read_only = np.empty(good.shape, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="C-contiguous and writeable"):
        call(read_only)


@pytest.mark.parametrize("name", ["conv2d", "pool2d", "upsample2d", "dense", "relu",
                                  "relu_backward"])
def test_out_sharing_memory_with_an_input_is_rejected(backend_name, name):
    op, args, kwargs, _ = _case(name, 2, np.float32)
    x = args[-1] if name == "relu_backward" else args[0]
    size = _result(op(*args, backend=backend_name, **kwargs), None).size
    big = np.zeros(max(size, x.size), np.float32)
    big[: x.size] = x.reshape(-1)
    x_in_big = big[: x.size].reshape(x.shape)
    args = (*args[:-1], x_in_big) if name == "relu_backward" else (x_in_big, *args[1:])
    out = big[:size].reshape(_result(op(*args, backend=backend_name, **kwargs), None).shape)
    with pytest.raises(ValueError, match=f"{name}: out shares memory with an input"):
        op(*args, backend=backend_name, out=out, **kwargs)


@pytest.mark.parametrize("name", ["conv2d_backward", "dense_backward"])
def test_backward_out_needs_the_input_gradient(backend_name, name):
    op, args, kwargs, _ = _case(name, 2, np.float32)
    out = np.empty(args[1].shape, np.float32)
    with pytest.raises(ValueError, match="input_grad=False computes no dx"):
        op(*args, backend=backend_name, input_grad=False, out=out, **kwargs)
