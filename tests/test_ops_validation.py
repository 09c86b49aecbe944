"""Bad input gets a clear ValueError/TypeError; odd but valid input (layouts, dtypes, N=0) works;
the backend is chosen by argument, setter, context manager or environment variable."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import cnnext
from cnnext import backend, ops

REPO_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(cnnext.__file__)))
RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 8, 8, 3))
W = RNG.standard_normal((3, 3, 3, 4))
B = RNG.standard_normal(4)


def raises(exc_type, *fragments: str):
    """pytest.raises that also checks the message contains every fragment verbatim."""
    lookaheads = "".join(f"(?=.*{re.escape(fragment)})" for fragment in fragments)
    return pytest.raises(exc_type, match="(?s)" + lookaheads)


# --- ndim, dtype, shapes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda: ops.conv2d(X[0], W), ["conv2d", "x must be 4-D", "x.shape=(8, 8, 3)"]),
        (lambda: ops.conv2d(X, W[0]), ["conv2d", "w must be 4-D", "w.shape=(3, 3, 4)"]),
        (lambda: ops.conv2d(X, W, B[None]), ["conv2d", "b must be 1-D", "b.shape=(1, 4)"]),
        (lambda: ops.conv2d_backward(X[0], X, W), ["conv2d_backward", "dy must be 4-D"]),
        (lambda: ops.pool2d(X[0], 2), ["pool2d", "x must be 4-D", "x.shape=(8, 8, 3)"]),
        (lambda: ops.pool2d_backward(X[0], X, 2), ["pool2d_backward", "dy.shape=(8, 8, 3)"]),
        (lambda: ops.upsample2d(X[..., None], 2), ["upsample2d", "x.shape=(2, 8, 8, 3, 1)"]),
        (lambda: ops.upsample2d_backward(X[0], 2), ["upsample2d_backward", "dy must be 4-D"]),
    ],
)
def test_wrong_ndim(call, fragments):
    with raises(ValueError, *fragments):
        call()


@pytest.mark.parametrize("dtype", [np.complex128, object, "U3", np.longdouble, "datetime64[s]"])
def test_unsupported_dtypes_are_rejected(dtype):
    with raises(TypeError, "conv2d", "x has dtype", str(np.dtype(dtype))):
        ops.conv2d(np.zeros((1, 4, 4, 3), dtype=dtype), W)
    with raises(TypeError, "upsample2d", "x has dtype"):
        ops.upsample2d(np.zeros((1, 4, 4, 3), dtype=dtype), 2)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint8, bool, np.float16])
def test_bool_integer_and_float16_inputs_become_float32(backend_name, dtype):
    x = (RNG.integers(0, 2, size=(2, 5, 5, 3))).astype(dtype)
    w = RNG.integers(-2, 3, size=(2, 2, 3, 2)).astype(np.float32)
    y = ops.conv2d(x, w, backend=backend_name)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ops.conv2d(x.astype(np.float32), w, backend=backend_name))
    assert ops.pool2d(x, 2, backend=backend_name).dtype == np.float32
    assert ops.upsample2d(x, 2, backend=backend_name).dtype == np.float32


def test_mixed_float_dtypes_promote_to_the_wider(backend_name):
    x32, w64 = X.astype(np.float32), W
    assert ops.conv2d(x32, w64, backend=backend_name).dtype == np.float64
    assert ops.conv2d(x32, W.astype(np.float32), B, backend=backend_name).dtype == np.float64
    dy32 = np.ones((2, 6, 6, 4), np.float32)
    dx, dw, db = ops.conv2d_backward(dy32, x32, w64, backend=backend_name)
    assert (dx.dtype, dw.dtype, db.dtype) == (np.float64,) * 3
    dy64 = np.ones((2, 4, 4, 3))
    assert ops.pool2d_backward(dy64, x32, 2, backend=backend_name).dtype == np.float64
    assert ops.pool2d(x32, 2, backend=backend_name).dtype == np.float32


XD, WD = RNG.standard_normal((4, 6)), RNG.standard_normal((6, 5))


@pytest.mark.parametrize(
    "call, exc_type, fragments",
    [
        (lambda: ops.dense(XD[0], WD), ValueError, ["dense", "x must be 2-D (N, D)", "(6,)"]),
        (lambda: ops.dense(XD, WD[None]), ValueError, ["w must be 2-D (D, U)", "(1, 6, 5)"]),
        (lambda: ops.dense(XD, WD, WD), ValueError, ["b must be 1-D (U,)", "b.shape=(6, 5)"]),
        (lambda: ops.dense(XD, WD.T), ValueError,
         ["dense: x has 6 features (x.shape=(4, 6)) but w expects 5 (w.shape=(5, 6))"]),
        (lambda: ops.dense(XD, WD, np.zeros(4)), ValueError,
         ["b.shape=(4,)", "5 units", "expected b.shape=(5,)"]),
        (lambda: ops.dense(XD[:, :0], WD[:0]), ValueError, ["x.shape=(4, 0)", "empty dimension"]),
        (lambda: ops.dense(XD, WD[:, :0]), ValueError, ["w.shape=(6, 0)", "empty dimension"]),
        (lambda: ops.dense(XD.astype(complex), WD), TypeError, ["dense", "x has dtype complex128"]),
        (lambda: ops.dense_backward(np.zeros((4, 4)), XD, WD), ValueError,
         ["dense_backward", "dy.shape=(4, 4)", "forward output shape (4, 5)", "w.shape=(6, 5)"]),
        (lambda: ops.dense_backward(np.zeros(20), XD, WD), ValueError, ["dy must be 2-D (N, U)"]),
        (lambda: ops.dense(None, WD), TypeError, ["dense: x has dtype object"]),
        (lambda: ops.dense_backward(None, XD, WD), TypeError, ["dense_backward: dy has dtype"]),
        (lambda: ops.dense_backward(np.zeros((4, 5)), XD, None), TypeError, ["w has dtype"]),
    ],
)
def test_bad_dense_arguments(call, exc_type, fragments):
    with raises(exc_type, *fragments):
        call()


def test_dense_accepts_any_layout_dtype_and_an_empty_batch(backend_name):
    y = ops.dense(XD.T.copy().T, WD[::-1][::-1], backend=backend_name)  # Fortran x
    np.testing.assert_allclose(y, XD @ WD, rtol=1e-12)
    assert ops.dense(XD.astype(np.int8), WD.astype(np.float32), backend=backend_name).dtype \
        == np.float32
    dx, dw, db = ops.dense_backward(np.zeros((0, 5)), XD[:0], WD, backend=backend_name)
    assert dx.shape == (0, 6) and not dw.any() and dw.shape == (6, 5) and db.shape == (5,)


def test_fused_relu_is_a_bool_and_pools_only_by_max_or_min():
    with raises(ValueError, "pool2d: relu=True needs mode 'max' or 'min'", "mode='avg'"):
        ops.pool2d(X, 2, mode="avg", relu=True)
    with raises(ValueError, "pool2d_backward: relu=True needs mode"):
        ops.pool2d_backward(np.zeros((2, 4, 4, 3)), X, 2, mode="avg", relu=True)
    with raises(TypeError, "pool2d: relu must be a bool", "relu='yes'"):
        ops.pool2d(X, 2, relu="yes")
    with raises(TypeError, "conv2d: relu must be a bool", "relu=1"):
        ops.conv2d(X, np.zeros((3, 3, 3, 2)), relu=1)


@pytest.mark.parametrize("flag", ["False", None, 2.5, np.array([1, 0])])
def test_input_grad_is_a_bool(flag):
    y = np.zeros((2, 6, 6, 2))
    with raises(TypeError, "conv2d_backward: input_grad must be a bool"):
        ops.conv2d_backward(y, X, np.zeros((3, 3, 3, 2)), input_grad=flag)
    with raises(TypeError, "dense_backward: input_grad must be a bool"):
        ops.dense_backward(np.zeros((4, 5)), XD, WD, input_grad=flag)


def test_channel_mismatch_names_both_shapes():
    w = np.zeros((3, 3, 4, 8))
    expected = (
        "conv2d: x has 3 channels (x.shape=(2, 8, 8, 3)) but w expects 4 (w.shape=(3, 3, 4, 8))"
    )
    with raises(ValueError, expected):
        ops.conv2d(X, w)
    with raises(ValueError, "conv2d_backward: x has 3 channels"):
        ops.conv2d_backward(np.zeros((2, 6, 6, 8)), X, w)


def test_bias_shape_mismatch():
    with raises(ValueError, "conv2d", "b.shape=(3,)", "4 filters", "w.shape=(3, 3, 3, 4)"):
        ops.conv2d(X, W, B[:3])


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda: ops.conv2d(X, np.zeros((9, 2, 3, 1))), ["spans 9x2", "padded input 8x8"]),
        (lambda: ops.conv2d(X, W, dilation=4), ["spans 9x9", "dilation=(4, 4)", "8x8"]),
        (lambda: ops.conv2d(X[:, :4], W, dilation=(2, 1), padding=(0, 3)), ["spans 5x3", "4x14"]),
        (lambda: ops.pool2d(X, 9), ["pool2d", "size=(9, 9)", "padded input 8x8"]),
        (lambda: ops.pool2d(X, (3, 9), padding=(0, 0)), ["pool window", "spans 3x9"]),
    ],
)
def test_window_larger_than_padded_input(call, fragments):
    with raises(ValueError, *fragments):
        call()


def test_padding_can_make_a_kernel_fit():
    y = ops.conv2d(X[:, :2, :2], W, padding=1)
    assert y.shape == (2, 2, 2, 4)


@pytest.mark.parametrize(
    "kwargs, exc_type, fragment",
    [
        ({"stride": 0}, ValueError, "stride=0"),
        ({"stride": (1, -2)}, ValueError, "stride=(1, -2)"),
        ({"stride": True}, TypeError, "stride=True"),
        ({"stride": 1.5}, TypeError, "stride=1.5"),
        ({"stride": (1, 2, 3)}, TypeError, "stride=(1, 2, 3)"),
        ({"dilation": 0}, ValueError, "dilation=0"),
        ({"dilation": (2, "1")}, TypeError, "dilation=(2, '1')"),
        ({"padding": -1}, ValueError, "padding=-1"),
        ({"padding": (0, -2)}, ValueError, "padding=(0, -2)"),
        ({"padding": "full"}, ValueError, "padding='full'"),
        ({"padding": 0.5}, TypeError, "padding=0.5"),
        ({"padding": None}, TypeError, "padding=None"),
    ],
)
def test_bad_conv_hyper_parameters(kwargs, exc_type, fragment):
    with raises(exc_type, "conv2d: ", fragment):
        ops.conv2d(X, W, **kwargs)
    with raises(exc_type, "conv2d_backward: ", fragment):
        ops.conv2d_backward(np.zeros((2, 6, 6, 4)), X, W, **kwargs)


@pytest.mark.parametrize("good, bad", [
    ({"stride": 1}, {"stride": True}),
    ({"stride": (1, 1)}, {"stride": (True, 1)}),
    ({"stride": 2}, {"stride": 2.0}),
    ({"padding": 1}, {"padding": 1.0}),
    ({"padding": (1, 0)}, {"padding": (1, False)}),
    ({"dilation": 1}, {"dilation": np.float64(1.0)}),
])
def test_bool_and_float_arguments_are_refused_after_equal_valid_ones(good, bad):
    """The ops cache the geometry of valid arguments; ``True == 1`` and ``2.0 == 2`` must not
    find an entry there."""
    dy = np.zeros(ops.conv2d(X, W, **good).shape)
    ops.conv2d_backward(dy, X, W, **good)
    with raises(TypeError, "conv2d: "):
        ops.conv2d(X, W, **bad)
    with raises(TypeError, "conv2d_backward: "):
        ops.conv2d_backward(dy, X, W, **bad)
    def pool_args(kwargs: dict) -> dict:  # pooling has no dilation: try the value as its size
        return {"size": 2} | {"size" if k == "dilation" else k: v for k, v in kwargs.items()}

    ops.pool2d(X, **pool_args(good))
    with raises(TypeError, "pool2d: "):
        ops.pool2d(X, **pool_args(bad))
    ops.pool2d(X, 2, relu=True)
    with raises(TypeError, "pool2d: relu must be a bool"):
        ops.pool2d(X, 2, relu=1)
    with raises(ValueError, "pool2d: mode must be"):  # the mode is checked first, as always
        ops.pool2d(X, 2, mode="mx", relu=1)


@pytest.mark.parametrize(
    "kwargs, exc_type, fragment",
    [
        ({"size": 0}, ValueError, "size=0"),
        ({"size": (2, -1)}, ValueError, "size=(2, -1)"),
        ({"size": 2, "stride": 0}, ValueError, "stride=0"),
        ({"size": 2, "stride": False}, TypeError, "stride=False"),
        ({"size": 2, "padding": -1}, ValueError, "padding=-1"),
        ({"size": 2, "padding": 2}, ValueError, "(2, 2, 2, 2) must be smaller than the pool size"),
        ({"size": (3, 2), "padding": (1, 2)}, ValueError, "(1, 1, 2, 2) must be smaller"),
        ({"size": 2, "mode": "mean"}, ValueError, "mode='mean'"),
        ({"size": 2, "mode": None}, ValueError, "mode=None"),
        ({"size": 2, "mode": np.array("max")}, ValueError, "mode=array('max'"),
    ],
)
def test_bad_pool_arguments(kwargs, exc_type, fragment):
    with raises(exc_type, "pool2d: ", fragment):
        ops.pool2d(X, **kwargs)
    with raises(exc_type, "pool2d_backward: ", fragment):
        ops.pool2d_backward(np.zeros((2, 4, 4, 3)), X, **kwargs)


@pytest.mark.parametrize(
    "scale, exc_type", [(0, ValueError), ((2, 0), ValueError), (2.0, TypeError)]
)
def test_bad_upsample_scale(scale, exc_type):
    with raises(exc_type, "upsample2d: ", f"scale={scale!r}"):
        ops.upsample2d(X, scale)
    with raises(exc_type, "upsample2d_backward: ", f"scale={scale!r}"):
        ops.upsample2d_backward(X, scale)


def test_wrong_dy_shapes():
    with raises(ValueError, "conv2d_backward", "dy.shape=(2, 6, 6, 3)", "(2, 6, 6, 4)"):
        ops.conv2d_backward(np.zeros((2, 6, 6, 3)), X, W)
    with raises(ValueError, "dy.shape=(2, 6, 6, 4)", "(2, 3, 3, 4)", "stride=(2, 2)"):
        ops.conv2d_backward(np.zeros((2, 6, 6, 4)), X, W, stride=2)
    with raises(ValueError, "pool2d_backward", "dy.shape=(2, 4, 4, 3)", "(2, 2, 2, 3)",
                "size=(4, 4)"):
        ops.pool2d_backward(np.zeros((2, 4, 4, 3)), X, 4)
    with raises(ValueError, "upsample2d_backward", "dy.shape=(2, 8, 8, 3)", "scale=(3, 2)"):
        ops.upsample2d_backward(X, (3, 2))


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: ops.conv2d(np.zeros((1, 0, 4, 3)), W), "x.shape=(1, 0, 4, 3)"),
        (lambda: ops.conv2d(X, np.zeros((3, 3, 3, 0))), "w.shape=(3, 3, 3, 0)"),
        (lambda: ops.pool2d(np.zeros((1, 4, 4, 0)), 2), "x.shape=(1, 4, 4, 0)"),
        (lambda: ops.upsample2d(np.zeros((1, 4, 0, 1)), 2), "x.shape=(1, 4, 0, 1)"),
    ],
)
def test_empty_non_batch_dimensions_are_rejected(call, fragment):
    with raises(ValueError, fragment, "empty dimension"):
        call()


def test_unknown_backend_name():
    with raises(ValueError, "unknown backend 'torch'"):
        ops.conv2d(X, W, backend="torch")
    with raises(ValueError, "unknown backend 'gpu'"):
        cnnext.set_backend("gpu")


# --- valid but unusual input --------------------------------------------------------------------


def layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    """The values of ``a`` as Fortran, strided, negative-stride, read-only and broadcast arrays."""
    wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1]))
    wide[..., ::2] = a
    read_only = a.copy()
    read_only.flags.writeable = False
    return {
        "fortran": np.asfortranarray(a),
        "strided": wide[..., ::2],
        "reversed": np.ascontiguousarray(a[:, ::-1])[:, ::-1],
        "read_only": read_only,
        "big_endian": a.astype(">f8"),
        "list": a.tolist(),
    }


@pytest.mark.parametrize(
    "layout", ["fortran", "strided", "reversed", "read_only", "big_endian", "list"]
)
def test_any_memory_layout_gives_the_same_results(backend_name, layout):
    x, w = layouts(X)[layout], layouts(W)[layout]
    conv = {"stride": 2, "padding": "same"}
    y = ops.conv2d(X, W, B, **conv, backend=backend_name)
    np.testing.assert_array_equal(ops.conv2d(x, w, B, **conv, backend=backend_name), y)
    dy = layouts(y)[layout]
    for got, want in zip(ops.conv2d_backward(dy, x, w, **conv, backend=backend_name),
                         ops.conv2d_backward(y, X, W, **conv, backend=backend_name)):
        np.testing.assert_array_equal(got, want)
    p = ops.pool2d(X, 3, 2, 1, backend=backend_name)
    np.testing.assert_array_equal(ops.pool2d(x, 3, 2, 1, backend=backend_name), p)
    dp = layouts(p)[layout]
    np.testing.assert_array_equal(ops.pool2d_backward(dp, x, 3, 2, 1, backend=backend_name),
                                  ops.pool2d_backward(p, X, 3, 2, 1, backend=backend_name))
    np.testing.assert_array_equal(ops.upsample2d(x, 2, backend=backend_name),
                                  ops.upsample2d(X, 2, backend=backend_name))
    np.testing.assert_array_equal(ops.upsample2d_backward(x, 2, backend=backend_name),
                                  ops.upsample2d_backward(X, 2, backend=backend_name))


def test_broadcast_inputs_work_and_are_not_written(backend_name):
    x = np.broadcast_to(np.arange(3.0), (2, 6, 6, 3))
    w = np.broadcast_to(np.ones((1, 1, 1, 2)), (2, 2, 3, 2))
    y = ops.conv2d(x, w, backend=backend_name)
    np.testing.assert_array_equal(y, np.full((2, 5, 5, 2), 4 * 3.0))
    dx, dw, db = ops.conv2d_backward(np.broadcast_to(1.0, y.shape), x, w, backend=backend_name)
    np.testing.assert_array_equal(db, [50.0, 50.0])
    assert ops.pool2d(x, 2, mode="avg", backend=backend_name)[0, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert ops.upsample2d(x, 2, backend=backend_name).shape == (2, 12, 12, 3)


def test_inputs_are_not_modified(backend_name):
    x, w, b = X.copy(), W.copy(), B.copy()
    y = ops.conv2d(x, w, b, padding=1, backend=backend_name)
    dy = y.copy()
    ops.conv2d_backward(dy, x, w, padding=1, backend=backend_name)
    ops.pool2d_backward(ops.pool2d(x, 2, backend=backend_name), x, 2, backend=backend_name)
    ops.upsample2d_backward(dy, 2, backend=backend_name)
    for got, want in [(x, X), (w, W), (b, B), (dy, y)]:
        np.testing.assert_array_equal(got, want)


def test_non_finite_values_pass_through(backend_name):
    x = X.copy()
    x[0, 0, 0, 0] = np.inf
    x[1, 4, 4, 1] = np.nan
    y = ops.conv2d(x, np.ones((1, 1, 3, 1)), backend=backend_name)
    assert y[0, 0, 0, 0] == np.inf and np.isnan(y[1, 4, 4, 0])
    assert np.isfinite(y).sum() == y.size - 2
    assert np.isnan(ops.pool2d(x, 2, mode="avg", backend=backend_name)[1, 2, 2, 1])


@pytest.fixture
def kernel_calls(monkeypatch) -> list[tuple[str, str]]:
    """Records ``(backend, kernel)`` for every kernel call of every available backend."""
    calls = []

    def spy(name, op, real):
        def record(*args):
            calls.append((name, op))
            return real(*args)
        return record

    for name, table in list(backend.BACKENDS.items()):
        spied = {op: spy(name, op, getattr(table, op)) for op in backend.OP_NAMES}
        monkeypatch.setitem(backend.BACKENDS, name, SimpleNamespace(**spied))
    return calls


def test_empty_batch_returns_empty_results_without_calling_kernels(backend_name, kernel_calls):
    x = np.zeros((0, 7, 6, 3), dtype=np.float32)
    y = ops.conv2d(x, W.astype(np.float32), B, stride=2, padding="same", backend=backend_name)
    assert (y.shape, y.dtype) == ((0, 4, 3, 4), np.float64)
    dx, dw, db = ops.conv2d_backward(y, x, W, stride=2, padding="same", backend=backend_name)
    assert (dx.shape, dw.shape, db.shape) == (x.shape, W.shape, (4,))
    assert not dw.any() and not db.any()
    p = ops.pool2d(x, 3, 2, 1, backend=backend_name)
    assert (p.shape, p.dtype) == ((0, 4, 3, 3), np.float32)
    assert ops.pool2d_backward(p, x, 3, 2, 1, backend=backend_name).shape == x.shape
    u = ops.upsample2d(x, (2, 3), backend=backend_name)
    assert u.shape == (0, 14, 18, 3)
    assert ops.upsample2d_backward(u, (2, 3), backend=backend_name).shape == x.shape
    assert kernel_calls == []


def test_an_empty_batch_result_numpy_cannot_make_is_a_clear_error(backend_name):
    """(0, 2**31 - 1, 2**31 - 1, 1) float32 holds no values, but numpy refuses the shape."""
    x = np.zeros((0, 1, 1, 1), dtype=np.float32)
    big = 2**31 - 1
    for call, op in [
        (lambda: ops.upsample2d(x, big, backend=backend_name), "upsample2d"),
        (lambda: ops.conv2d(x, np.ones((1, 1, 1, 1)), padding=big // 2, backend=backend_name),
         "conv2d"),
        (lambda: ops.pool2d(x, big, 1, padding=big - 1, backend=backend_name), "pool2d"),
    ]:
        with raises(ValueError, f"{op}: the result's shape (0, ", "too large for a numpy array"):
            call()


# --- backend selection --------------------------------------------------------------------------


def test_backend_argument_selects_the_kernels(backend_name, kernel_calls):
    ops.conv2d(X, W, backend=backend_name)
    ops.pool2d(X, 2, backend=backend_name)
    assert kernel_calls == [(backend_name, "conv2d_forward"), (backend_name, "pool2d_forward")]


def test_set_backend_changes_the_default(backend_name, kernel_calls):
    cnnext.set_backend(backend_name)
    assert cnnext.get_backend() == backend_name
    ops.upsample2d(X, 2)
    assert kernel_calls == [(backend_name, "upsample2d_forward")]


def test_use_backend_switches_temporarily(backend_name, kernel_calls):
    before = cnnext.get_backend()
    with cnnext.use_backend(backend_name):
        ops.pool2d(X, 2)
    assert cnnext.get_backend() == before
    assert kernel_calls == [(backend_name, "pool2d_forward")]


def test_backend_argument_overrides_the_default(kernel_calls):
    others = [name for name in backend.available_backends() if name != "numpy"]
    with cnnext.use_backend("numpy"):
        for name in others:
            ops.conv2d(X, W, backend=name)
        ops.conv2d(X, W)
    expected = [(name, "conv2d_forward") for name in [*others, "numpy"]]
    assert kernel_calls == expected


def run_python(code: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CNNEXT_BACKEND"}
    env.update(env_vars)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_PARENT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_cnnext_backend_environment_variable():
    code = "import cnnext; print(cnnext.get_backend())"
    for name in backend.available_backends():
        result = run_python(code, CNNEXT_BACKEND=name.upper())
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == name
    # An unknown name warns and keeps the default (tests/test_backend_env.py has the details).
    result = run_python(code, CNNEXT_BACKEND="bogus")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in backend.available_backends()
    assert "unknown backend 'bogus'" in result.stderr


def test_relu_validates_its_arrays():
    with raises(ValueError, "relu_backward", "dy.shape=(2, 3)", "x.shape=(3, 2)"):
        ops.relu_backward(np.ones((2, 3)), np.ones((3, 2)))
    with raises(TypeError, "relu: x has dtype complex128"):
        ops.relu(np.ones(3, dtype=complex))
    with raises(ValueError, "relu: x is not a rectangular array"):
        ops.relu([[1.0], [1.0, 2.0]])
    assert ops.relu(np.array([-1, 2], dtype=np.int8)).dtype == np.float32  # converted
    assert ops.relu(np.float64(-3.0)).shape == ()  # any rank, scalars too


def test_softmax_validates_its_array():
    with raises(ValueError, "softmax", "last axis of at least one value", "x.shape=(2, 0)"):
        ops.softmax(np.ones((2, 0)))
    with raises(ValueError, "softmax", "x.shape=()"):
        ops.softmax(np.float32(1.0))
    with raises(TypeError, "softmax", "dtype complex128"):
        ops.softmax(np.ones((2, 3), dtype=complex))
    with raises(ValueError, "softmax: out.shape=(3,)"):
        ops.softmax(np.ones((2, 3)), out=np.empty(3))
