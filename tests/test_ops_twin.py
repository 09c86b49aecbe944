"""Compiled kernels ("cython") against the NumPy reference on randomized configurations.

Runs only when the compiled backend is built; under CI=true a missing build is a failure.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cnnext import ops
from cnnext.shapes import dilated_kernel_hw, padded_hw, resolve_padding

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["c", "fortran", "strided", "reversed"])
SEEDS = st.integers(0, 2**32 - 1)
PADDING_MODES = st.sampled_from(["same", "valid"])


def with_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``a`` in a C, Fortran, strided or negative-stride memory layout."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype=a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(a[:, ::-1])[:, ::-1]
    return a


def random_values(rng, shape, dtype, kind: str = "uniform") -> np.ndarray:
    """``uniform`` in [-1, 1); ``ties``: only -1, 0, 1; ``nan``: uniform with a few NaNs."""
    if kind == "ties":
        return rng.integers(-1, 2, size=shape).astype(dtype)
    a = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if kind == "nan":
        a.flat[rng.choice(a.size, size=max(1, a.size // 10), replace=False)] = np.nan
    return a


def each_simd_level(module) -> Iterator[str]:
    """Yields every SIMD level the CPU runs ("baseline", "avx2", "avx512"), with ``module``'s
    kernels switched to it; its level is restored afterwards. (test_build checks that CI runs
    AVX-512.)"""
    level = module.simd_level()
    try:
        for simd in ("baseline", "avx2", "avx512"):
            try:
                module.set_simd_level(simd)
            except ValueError:  # not on this CPU
                continue
            yield simd
    finally:
        module.set_simd_level(level)


def assert_twins_close(actual: np.ndarray, expected: np.ndarray, terms: int) -> None:
    """Equal up to the rounding of sums of ``terms`` products of values in [-1, 1]."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    rtol = (1e-13 if expected.dtype == np.float64 else 1e-6) * max(terms, 1)
    scale = max(1.0, float(np.nanmax(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@st.composite
def conv_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(
        st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)), PADDING_MODES)
    )
    span = dilated_kernel_hw(kernel, dilation)
    hw = (draw(st.integers(max(1, span[0] - 3), span[0] + 7)),
          draw(st.integers(max(1, span[1] - 3), span[1] + 7)))
    pad4 = resolve_padding(padding, hw, kernel, stride, dilation)
    p_h, p_w = padded_hw(hw, pad4)
    assume(p_h >= span[0] and p_w >= span[1])
    n = draw(st.integers(1, 3))
    if draw(st.booleans()):  # few channels: the direct kernel, one or two filter blocks
        c, f = draw(st.integers(1, 4)), draw(st.integers(1, 10))
    else:  # many channels: also the im2col + GEMM path (KH*KW*C >= 64 and F >= 32)
        c, f = draw(st.integers(8, 20)), draw(st.integers(30, 40))
    return {
        "x_shape": (n, *hw, c),
        "w_shape": (*kernel, c, f),
        "kwargs": {"stride": stride, "padding": padding, "dilation": dilation},
    }


@st.composite
def pool_cases(draw):
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 5), st.integers(1, 5))))
    padding = draw(
        st.one_of(
            PADDING_MODES,
            st.tuples(st.integers(0, size[0] - 1), st.integers(0, size[1] - 1)),
        )
    )
    hw = (draw(st.integers(max(1, size[0] - 2), size[0] + 7)),
          draw(st.integers(max(1, size[1] - 2), size[1] + 7)))
    pad4 = resolve_padding(padding, hw, size, stride or size, (1, 1))
    p_h, p_w = padded_hw(hw, pad4)
    assume(p_h >= size[0] and p_w >= size[1])
    n = draw(st.integers(1, 3))
    # tiling windows take vector kernels whose paths depend on C and the row length
    c = draw(st.one_of(st.integers(1, 20), st.integers(30, 40)))
    return {"x_shape": (n, *hw, c), "kwargs": {"size": size, "stride": stride, "padding": padding}}


def overlap(size, stride) -> int:
    """Most windows one input cell can belong to."""
    stride = stride or size
    return -(-size[0] // stride[0]) * -(-size[1] // stride[1])


@SETTINGS
@given(case=conv_cases(), dtype=DTYPES, layout=LAYOUTS, with_bias=st.booleans(), seed=SEEDS)
def test_conv2d_forward_matches_numpy(compiled_backend, case, dtype, layout, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = with_layout(random_values(rng, case["x_shape"], dtype), layout)
    w = with_layout(random_values(rng, case["w_shape"], dtype), layout)
    b = random_values(rng, case["w_shape"][3:], dtype) if with_bias else None
    got = ops.conv2d(x, w, b, **case["kwargs"], backend=compiled_backend)
    want = ops.conv2d(x, w, b, **case["kwargs"], backend="numpy")
    assert want.dtype == dtype
    kh, kw, c, _ = case["w_shape"]
    assert_twins_close(got, want, terms=kh * kw * c + 1)


@SETTINGS
@given(case=conv_cases(), dtype=DTYPES, layout=LAYOUTS, seed=SEEDS)
def test_conv2d_backward_matches_numpy(compiled_backend, case, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    x = with_layout(random_values(rng, case["x_shape"], dtype), layout)
    w = random_values(rng, case["w_shape"], dtype)
    y_shape = ops.conv2d(x, w, **case["kwargs"], backend="numpy").shape
    dy = with_layout(random_values(rng, y_shape, dtype), layout)
    got = ops.conv2d_backward(dy, x, w, **case["kwargs"], backend=compiled_backend)
    want = ops.conv2d_backward(dy, x, w, **case["kwargs"], backend="numpy")
    n, ho, wo, f = y_shape
    kh, kw = case["w_shape"][:2]
    assert_twins_close(got[0], want[0], terms=kh * kw * f)  # dx
    assert_twins_close(got[1], want[1], terms=n * ho * wo)  # dw
    assert_twins_close(got[2], want[2], terms=n * ho * wo)  # db
    assert [g.dtype for g in want] == [dtype] * 3


@SETTINGS
@given(
    case=pool_cases(),
    mode=st.sampled_from(["max", "min", "avg", "max+relu", "min+relu"]),
    values=st.sampled_from(["uniform", "ties", "nan"]),
    dtype=DTYPES,
    layout=LAYOUTS,
    seed=SEEDS,
)
def test_pool2d_forward_and_backward_match_numpy(
    compiled_backend, case, mode, values, dtype, layout, seed
):
    rng = np.random.default_rng(seed)
    x = with_layout(random_values(rng, case["x_shape"], dtype, values), layout)
    mode, relu = mode.split("+")[0], mode.endswith("+relu")
    kwargs = {**case["kwargs"], "mode": mode, "relu": relu}
    got = ops.pool2d(x, **kwargs, backend=compiled_backend)
    want = ops.pool2d(x, **kwargs, backend="numpy")
    assert want.dtype == dtype
    size, stride = kwargs["size"], kwargs["stride"]
    if mode == "avg":
        assert_twins_close(got, want, terms=size[0] * size[1])
    else:  # a selection: bit-identical, NaNs in the same places
        np.testing.assert_array_equal(got, want)
    dy = random_values(rng, want.shape, dtype)
    dy.flat[::3] = -0.0  # a zero gradient's sign must not depend on the backend either
    dy = with_layout(dy, layout)
    got_dx = ops.pool2d_backward(dy, x, **kwargs, backend=compiled_backend)
    want_dx = ops.pool2d_backward(dy, x, **kwargs, backend="numpy")
    assert_twins_close(got_dx, want_dx, terms=overlap(size, stride))
    zeros = (got_dx == 0) & (want_dx == 0)
    np.testing.assert_array_equal(np.signbit(got_dx[zeros]), np.signbit(want_dx[zeros]))


@SETTINGS
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 4)),
    scale=st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))),
    dtype=DTYPES,
    layout=LAYOUTS,
    seed=SEEDS,
)
def test_upsample2d_forward_and_backward_match_numpy(
    compiled_backend, shape, scale, dtype, layout, seed
):
    rng = np.random.default_rng(seed)
    x = with_layout(random_values(rng, shape, dtype), layout)
    got = ops.upsample2d(x, scale, backend=compiled_backend)
    want = ops.upsample2d(x, scale, backend="numpy")
    assert want.dtype == dtype
    np.testing.assert_array_equal(got, want)
    dy = with_layout(random_values(rng, want.shape, dtype), layout)
    got_dx = ops.upsample2d_backward(dy, scale, backend=compiled_backend)
    want_dx = ops.upsample2d_backward(dy, scale, backend="numpy")
    sh, sw = (scale, scale) if isinstance(scale, int) else scale
    assert_twins_close(got_dx, want_dx, terms=sh * sw)


@SETTINGS
@given(
    n=st.one_of(st.integers(1, 40), st.integers(100, 140)),
    d=st.one_of(st.integers(1, 40), st.integers(60, 70)),
    u=st.one_of(st.integers(1, 40), st.integers(60, 70)),
    dtype=DTYPES,
    layout=LAYOUTS,
    with_bias=st.booleans(),
    seed=SEEDS,
)
def test_dense_forward_and_backward_match_numpy(compiled_backend, n, d, u, dtype, layout,
                                                with_bias, seed):
    """Row counts below, at and above the register tiles and the thread split; column counts
    below one vector, between vectors and past several tiles (the last vector moved back)."""
    rng = np.random.default_rng(seed)
    x = random_values(rng, (n, d), dtype)
    w = random_values(rng, (d, u), dtype)
    b = random_values(rng, (u,), dtype) if with_bias else None
    dy = random_values(rng, (n, u), dtype)
    x, w, dy = (with_layout(a, layout) for a in (x, w, dy))
    got = ops.dense(x, w, b, backend=compiled_backend)
    assert_twins_close(got, ops.dense(x, w, b, backend="numpy"), terms=d + 1)
    got_grads = ops.dense_backward(dy, x, w, backend=compiled_backend)
    want_grads = ops.dense_backward(dy, x, w, backend="numpy")
    for got, want, terms in zip(got_grads, want_grads, (u, n, n)):
        assert_twins_close(got, want, terms)
    dx, dw, db = ops.dense_backward(dy, x, w, backend=compiled_backend, input_grad=False)
    assert dx is None
    np.testing.assert_array_equal(dw, got_grads[1])
    np.testing.assert_array_equal(db, got_grads[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_is_bit_identical_for_any_thread_count(compiled_backend, dtype):
    """Each output is summed by one thread in a fixed order: the same bits on 1..4 threads,
    whether the threads split the rows (150 of them) or the columns (5 rows)."""
    import cnnext
    from cnnext.backend import resolve

    kernels = resolve(compiled_backend)
    rng = np.random.default_rng(3)
    for n in (5, 150):
        x, w = random_values(rng, (n, 90), dtype), random_values(rng, (90, 75), dtype)
        b, dy = random_values(rng, (75,), dtype), random_values(rng, (n, 75), dtype)
        cnnext.set_num_threads(1)
        want = [kernels.dense_forward(x, w, b), *kernels.dense_backward(dy, x, w)]
        for threads in (2, 3, 4):
            cnnext.set_num_threads(threads)
            got = [kernels.dense_forward(x, w, b), *kernels.dense_backward(dy, x, w)]
            for g, expected in zip(got, want):
                np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("threads", [2, 3])
def test_dense_input_gradient_reads_the_whole_new_transposed_kernel(compiled_backend, threads):
    """With fewer column tiles of ``dx`` than threads, each thread computes rows of ``dx`` from
    all of ``w.T``, which one thread transposes into a buffer reused across calls: every thread
    must wait for the whole transpose, or it would read the previous call's kernel (a fresh
    ``w`` per call; a missing wait would show only when the timing allows)."""
    import cnnext

    rng = np.random.default_rng(8)
    dy = random_values(rng, (2000, 40), np.float32)
    x = random_values(rng, (2000, 24), np.float32)
    cnnext.set_num_threads(threads)
    for _ in range(30):
        w = random_values(rng, (24, 40), np.float32)
        dx, _, _ = ops.dense_backward(dy, x, w, backend=compiled_backend)
        np.testing.assert_allclose(dx, dy.astype(np.float64) @ w.T, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    dtype=DTYPES,
    layout=st.sampled_from(["c", "strided"]),
    seed=SEEDS,
)
def test_relu_forward_and_backward_match_numpy_bit_for_bit(compiled_backend, shape, dtype, layout,
                                                            seed):
    """Any shape (large ones run on several threads); NaN, infinities and signed zeros included:
    results equal the twin's exactly, sign of zero too."""
    rng = np.random.default_rng(seed)
    z = random_values(rng, shape, dtype, "nan")
    z.flat[: min(4, z.size)] = [-0.0, 0.0, np.inf, -np.inf][: min(4, z.size)]
    dy = random_values(rng, shape, dtype, "nan")
    z, dy = with_layout(z, layout), with_layout(dy, layout)
    with np.errstate(invalid="ignore"):  # the twin's 0 * inf
        pairs = [(ops.relu(z, backend=compiled_backend), ops.relu(z, backend="numpy")),
                 (ops.relu_backward(dy, z, backend=compiled_backend),
                  ops.relu_backward(dy, z, backend="numpy"))]
    for got, want in pairs:
        assert got.dtype == want.dtype == dtype and got.shape == want.shape == tuple(shape)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@SETTINGS
@given(case=pool_cases(), mode=st.sampled_from(["max", "min"]), dtype=DTYPES, seed=SEEDS)
def test_pool2d_with_relu_is_relu_of_the_pooling_bit_for_bit(backend_name, case, mode, dtype,
                                                             seed):
    """``relu=True`` equals ReLU after the pooling exactly (signs of zero, NaN from a NaN
    window), and its gradient equals ``relu_backward`` at the pooled values then the pooling's
    gradient, also for infinite and NaN ``dy``."""
    rng = np.random.default_rng(seed)
    x = random_values(rng, case["x_shape"], dtype, "ties")
    x.flat[rng.choice(x.size, size=max(1, x.size // 20), replace=False)] = np.nan
    x[x == 0] = rng.choice(np.array([0.0, -0.0], dtype), size=int((x == 0).sum()))
    kwargs = {**case["kwargs"], "mode": mode, "backend": backend_name}
    pooled = ops.pool2d(x, **kwargs)
    y = ops.pool2d(x, **kwargs, relu=True)
    want = ops.relu(pooled, backend=backend_name)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(want))
    dy = random_values(rng, y.shape, dtype)
    dy.flat[: min(3, dy.size)] = [np.inf, np.nan, -np.inf][: min(3, dy.size)]
    with np.errstate(invalid="ignore"):  # 0 * inf
        got = ops.pool2d_backward(dy, x, **kwargs, relu=True)
        want = ops.pool2d_backward(ops.relu_backward(dy, pooled, backend=backend_name), x,
                                   **kwargs)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_planar_convolution_applies_the_relu_to_every_group_of_output_channels(
        compiled_backend) -> None:
    """Pixel lanes with three groups of output channels per sample, on 2 threads: ``relu=True``
    equals the ReLU of the plain result bit for bit (each task clamps the channels it writes)."""
    from cnnext._ext import _conv2d
    rng = np.random.default_rng(12)
    x = random_values(rng, (40, 9, 15, 2), np.float32)
    w = random_values(rng, (3, 3, 2, 20), np.float32)
    bias = random_values(rng, (20,), np.float32)

    def planar(relu: bool) -> np.ndarray:
        y = np.empty((40, 7, 13, 20), dtype=np.float32)
        return _conv2d._conv_via_planes(x, (0, 0), (1, 1), (9, 15), w, bias, y, (1, 1), relu, 2)

    plain, got = planar(False), planar(True)
    assert (plain < 0).any()
    np.testing.assert_array_equal(got, np.maximum(plain, 0))
    assert not np.signbit(got).any()


# (path, x shape, w shape, stride, padding, dilation): shapes each weight-gradient driver takes
WEIGHT_GRAD_PATHS = [
    ("lanes", (10, 12, 13, 3), (3, 2, 3, 20), (2, 1), (1, 0, 0, 1), (1, 2)),
    ("planar", (10, 9, 11, 2), (3, 3, 2, 5), (1, 1), (1, 1, 0, 2), (2, 1)),
    ("spans", (10, 14, 14, 6), (5, 5, 6, 16), (1, 2), (0, 0, 1, 1), (1, 1)),
    ("spans", (10, 14, 14, 3), (2, 4, 3, 7), (1, 1), (0, 0, 0, 0), (1, 3)),
]


@pytest.mark.parametrize("path, x_shape, w_shape, stride, padding, dilation", WEIGHT_GRAD_PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [3, 19])  # fewer and more samples than the 16 partial-sum chunks
def test_every_weight_gradient_driver_matches_numpy(path, x_shape, w_shape, stride, padding,
                                                     dilation, dtype, n, compiled_backend) -> None:
    """Each direct weight-gradient driver, called directly: its folded partial sums equal the
    NumPy twin's ``(dw, db)``, and are bit-identical on 1 and 2 threads."""
    from cnnext._ext import _conv2d
    from cnnext.backend import numpy_ops

    rng = np.random.default_rng(len(path) * n)
    x = random_values(rng, (n, *x_shape[1:]), dtype)
    w = random_values(rng, w_shape, dtype)
    y_shape = numpy_ops.conv2d_forward(x, w, None, stride, padding, dilation).shape
    dy = random_values(rng, y_shape, dtype)
    _, dw_want, db_want = numpy_ops.conv2d_backward(dy, x, w, stride, padding, dilation)
    args = {"lanes": (stride, padding, dilation), "spans": (stride, padding, dilation),
            "planar": (padding, dilation)}[path]
    driver = getattr(_conv2d, f"_weight_grad_{path}")
    (dw, db), (dw1, db1) = (driver(dy, x, w, *args, threads) for threads in (2, 1))
    tol = 1e-4 if dtype == np.float32 else 1e-12  # of the largest gradient: a 1.005x error fails
    np.testing.assert_allclose(dw, dw_want, rtol=tol, atol=tol * np.abs(dw_want).max())
    np.testing.assert_allclose(db, db_want, rtol=tol, atol=tol * np.abs(db_want).max())
    assert dw.shape == w.shape and db.shape == (w.shape[3],) and dw.dtype == db.dtype == dtype
    np.testing.assert_array_equal(dw, dw1)
    np.testing.assert_array_equal(db, db1)



# (x shape, w shape, stride, padding, dilation) for the channel-lane forward: every kernel width
# the sliding block unrolls (1 to 7 columns) and one past it, output channels in one to three
# vectors and a part vector, rows of several register-block sizes, vertical stride and dilation,
# and the tap-by-tap blocks (horizontal stride or dilation 2)
LANE_FORWARD_CASES = [
    ((14, 14, 6), (5, 5, 6, 16), (1, 1), (0, 0, 0, 0), (1, 1)),  # LeNet-5's second layer
    ((7, 9, 3), (1, 1, 3, 5), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((6, 13, 2), (2, 2, 2, 40), (1, 1), (1, 0, 0, 1), (1, 1)),
    ((8, 20, 4), (3, 3, 4, 33), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((9, 11, 5), (2, 4, 5, 48), (2, 1), (0, 1, 2, 1), (1, 1)),
    ((10, 27, 3), (3, 6, 3, 17), (1, 1), (0, 0, 3, 2), (2, 1)),
    ((9, 16, 2), (7, 7, 2, 32), (1, 1), (3, 3, 3, 3), (1, 1)),
    ((8, 12, 3), (2, 8, 3, 16), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((9, 15, 4), (3, 3, 4, 20), (1, 2), (1, 1, 1, 1), (1, 1)),
    ((9, 15, 4), (3, 3, 4, 20), (1, 1), (1, 1, 1, 1), (1, 2)),
]


@pytest.mark.parametrize("x_hw_c, w_shape, stride, padding, dilation", LANE_FORWARD_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_lane_forward_matches_numpy_at_every_simd_level(
        x_hw_c, w_shape, stride, padding, dilation, dtype, compiled_backend) -> None:
    """The channel-lane forward (sliding along the rows, or tap by tap), called directly, equals
    the NumPy twin's y at every SIMD level the CPU runs; it is bit-identical on 1 and 2 threads
    (which split a sample's rows into different tasks), and its ReLU is that of its output."""
    from cnnext._ext import _conv2d
    from cnnext.backend import numpy_ops

    rng = np.random.default_rng(w_shape[1] * 100 + w_shape[3])
    x = random_values(rng, (3, *x_hw_c), dtype)
    w = random_values(rng, w_shape, dtype)
    b = random_values(rng, (w_shape[3],), dtype)
    args = (stride, padding, dilation)
    want = numpy_ops.conv2d_forward(x, w, b, *args)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for simd in each_simd_level(_conv2d):
        got, one_thread, relu = (
            _conv2d._forward_lanes(x, w, b, *args, np.empty_like(want), relu, threads)
            for relu, threads in ((False, 2), (False, 1), (True, 2)))
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max(),
                                   err_msg=simd)
        np.testing.assert_array_equal(got, one_thread, err_msg=simd)
        np.testing.assert_array_equal(relu, np.maximum(got, 0), err_msg=simd)


@pytest.mark.parametrize("x_hw_c, w_shape, stride, padding", [
    ((14, 14, 6), (5, 5, 6, 16), (1, 1), (0, 0, 0, 0)),  # channel lanes, sliding
    ((28, 28, 1), (5, 5, 1, 6), (1, 1), (2, 2, 2, 2)),  # expanded rows
    ((9, 9, 3), (3, 3, 3, 70), (2, 2), (1, 1, 1, 1)),  # channel lanes, tap by tap
])
def test_compiled_conv_takes_an_empty_batch_as_the_layers_call_it(
        x_hw_c, w_shape, stride, padding, compiled_backend) -> None:
    """The compiled backend's conv2d_forward and conv2d_backward, which layers call without the
    ops' checks, give empty outputs and zero weight and bias gradients for a batch of 0."""
    from cnnext import backend

    from cnnext.backend import numpy_ops

    kernels = backend.resolve(compiled_backend)
    x = np.zeros((0, *x_hw_c), np.float32)
    w = np.ones(w_shape, np.float32)
    args = (stride, padding, (1, 1))
    y = kernels.conv2d_forward(x, w, np.ones(w_shape[3], np.float32), *args)
    dx, dw, db = kernels.conv2d_backward(np.zeros(y.shape, np.float32), x, w, *args)
    assert y.shape == numpy_ops.conv2d_forward(x, w, None, *args).shape and y.shape[1] > 0
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (w_shape[3],)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)


# (x shape, w shape, stride, padding, dilation): shapes the sliding input gradient takes, each
# kernel height it unrolls (1 to 7 rows; spans of one to four vectors, an odd last one, a masked
# last lane), horizontal strides and dilation, padding on every side
SLIDE_CASES = [
    ((14, 14, 6), (5, 5, 6, 16), (1, 1), (0, 0, 0, 0), (1, 1)),  # LeNet-5's second layer
    ((9, 11, 3), (1, 1, 3, 4), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((8, 9, 5), (2, 3, 5, 7), (1, 2), (1, 0, 2, 1), (1, 1)),
    ((16, 16, 8), (3, 3, 8, 8), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((12, 13, 4), (4, 4, 4, 9), (1, 3), (2, 1, 0, 3), (1, 2)),
    ((16, 16, 8), (6, 6, 8, 8), (1, 1), (3, 2, 3, 2), (1, 1)),
    ((16, 15, 2), (7, 7, 2, 5), (1, 1), (3, 3, 3, 3), (1, 1)),
    ((9, 30, 9), (7, 3, 9, 12), (1, 1), (0, 0, 1, 1), (1, 2)),
]


@pytest.mark.parametrize("x_hw_c, w_shape, stride, padding, dilation", SLIDE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sliding_input_gradient_matches_numpy_and_the_row_gathering_kernel(
        x_hw_c, w_shape, stride, padding, dilation, dtype, compiled_backend) -> None:
    """The sliding input gradient (vertical stride and dilation 1, one task per sample) equals
    the NumPy twin's and the row-gathering kernel's dx at every SIMD level the CPU runs, and is
    bit-identical on 1 and 2 threads; ``conv2d_backward`` takes it for these shapes when the
    kernels unroll the kernel's height."""
    from cnnext._ext import _conv2d
    from cnnext.backend import numpy_ops

    rng = np.random.default_rng(w_shape[0] * 10 + w_shape[1])
    x = random_values(rng, (_conv2d.SLIDE_MIN_SAMPLES + 1, *x_hw_c), dtype)
    w = random_values(rng, w_shape, dtype)
    args = (stride, padding, dilation)
    dy = random_values(rng, numpy_ops.conv2d_forward(x, w, None, *args).shape, dtype)
    want = numpy_ops.conv2d_backward(dy, x, w, *args)[0]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for simd in each_simd_level(_conv2d):
        slides = w_shape[0] <= (7 if simd == "avx512" else 5)
        assert _conv2d._slides(x.shape, w.shape, *args, x.itemsize) == slides, simd
        got, one_thread, gathered = (
            driver(dy, x, w, *args, np.empty_like(x), threads)
            for driver, threads in ((_conv2d._input_grad_slide, 2),
                                    (_conv2d._input_grad_slide, 1),
                                    (_conv2d._input_grad_spans, 2)))
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max(),
                                   err_msg=simd)
        np.testing.assert_allclose(got, gathered, rtol=tol,
                                   atol=tol * np.abs(want).max(), err_msg=simd)
        np.testing.assert_array_equal(got, one_thread, err_msg=simd)




@st.composite
def sliding_cases(draw):
    """Shapes the sliding input gradient takes: vertical stride and dilation 1, at least
    SLIDE_MIN_SAMPLES samples, kernels of 1 to 7 rows, any row stride, dilation and padding."""
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    sw, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    top, bottom, left, right = (draw(st.integers(0, 3)) for _ in range(4))
    h = draw(st.integers(max(1, kh - top - bottom), kh + 6))
    w = draw(st.integers(max(1, (kw - 1) * dw + 1 - left - right), (kw - 1) * dw + 8))
    n, c, f = draw(st.integers(8, 10)), draw(st.integers(1, 12)), draw(st.integers(1, 20))
    return (n, h, w, c), (kh, kw, c, f), ((1, sw), (top, bottom, left, right), (1, dw))


@SETTINGS
@given(case=sliding_cases(), dtype=DTYPES, seed=SEEDS)
def test_sliding_input_gradient_of_random_shapes_matches_numpy(compiled_backend, case, dtype,
                                                               seed) -> None:
    from cnnext._ext import _conv2d
    from cnnext.backend import numpy_ops

    x_shape, w_shape, args = case  # args: stride, padding (top, bottom, left, right), dilation
    rng = np.random.default_rng(seed)
    x, w = random_values(rng, x_shape, dtype), random_values(rng, w_shape, dtype)
    dy = random_values(rng, numpy_ops.conv2d_forward(x, w, None, *args).shape, dtype)
    want = numpy_ops.conv2d_backward(dy, x, w, *args)[0]
    got = _conv2d._input_grad_slide(dy, x, w, *args, np.empty_like(x), 2)
    assert_twins_close(got, want, terms=w_shape[0] * w_shape[1] * w_shape[3])
    if (_conv2d._slides(x.shape, w.shape, *args, x.itemsize)  # the dispatcher takes it
            and not _conv2d._input_grad_planar_is_cheaper(x.shape, w.shape, *args,
                                                          _conv2d._lanes(dtype))):
        np.testing.assert_array_equal(_conv2d.conv2d_backward(dy, x, w, *args)[0], got)


def test_sliding_input_gradient_needs_a_batch_and_an_l2_sized_sample(compiled_backend) -> None:
    """Batches of fewer than SLIDE_MIN_SAMPLES (one task per sample would idle threads) and
    samples whose padded input gradient exceeds SLIDE_MAX_BYTES per thread (224x224x64 float32:
    about 13 MB) gather the rows instead."""
    from cnnext._ext import _conv2d

    same = ((1, 1), (1, 1, 1, 1), (1, 1))
    assert _conv2d._slides((8, 56, 56, 64), (3, 3, 64, 64), *same, 4)
    assert not _conv2d._slides((7, 56, 56, 64), (3, 3, 64, 64), *same, 4)
    assert not _conv2d._slides((8, 224, 224, 64), (3, 3, 64, 64), *same, 4)
    assert not _conv2d._slides((8, 56, 56, 64), (3, 3, 64, 64), (2, 1), (1, 1, 1, 1), (1, 1), 4)
    rows, pitch = _conv2d._slide_rows((8, 224, 224, 64), (3, 3, 64, 64), (1, 1, 1, 1), 1, 4)
    assert rows * pitch * 4 > _conv2d.SLIDE_MAX_BYTES >= 58 * (58 * 64 + 192) * 4


def softmax_logits(rng, shape, dtype) -> np.ndarray:
    """Logits of every scale (rows of small, large and huge values), a row holding a NaN and a
    row holding an infinity when there are enough rows."""
    z = random_values(rng, shape, dtype) * rng.choice([1.0, 30.0, 1e4], size=(*shape[:-1], 1))
    z = z.astype(dtype)
    rows = z.reshape(-1, shape[-1])
    if len(rows) >= 3:
        rows[1, -1], rows[2, 0] = np.nan, np.inf
    return z


@SETTINGS
@given(shape=st.lists(st.integers(1, 30), min_size=1, max_size=3), dtype=DTYPES,
       layout=st.sampled_from(["c", "strided"]), seed=SEEDS)
def test_softmax_matches_numpy(compiled_backend, shape, dtype, layout, seed):
    """Softmax over the last axis: close to the twin wherever it is finite, NaN in the same rows
    (a NaN, or an infinity minus itself), rows summing to 1."""
    z = with_layout(softmax_logits(np.random.default_rng(seed), shape, dtype), layout)
    with np.errstate(invalid="ignore"):  # the twin's inf - inf
        want = ops.softmax(z, backend="numpy")
    got = ops.softmax(z, backend=compiled_backend)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_twins_close(np.nan_to_num(got), np.nan_to_num(want), terms=shape[-1])
    finite = ~np.isnan(got).any(axis=-1)
    np.testing.assert_allclose(got.sum(axis=-1)[finite], 1.0, rtol=1e-5 * shape[-1])


@SETTINGS
@given(n=st.integers(1, 40), k=st.integers(1, 20), targets=st.sampled_from(["ids", "rows"]),
       dtype=DTYPES, seed=SEEDS)
def test_softmax_cross_entropy_matches_numpy(compiled_backend, n, k, targets, dtype, seed):
    """The fused loss of a training step, ``(loss, dz, p)``, against the twin; ``p`` must be
    the backend's softmax bit for bit (the model's training and predict outputs agree)."""
    from cnnext.backend import BACKENDS

    rng = np.random.default_rng(seed)
    z = softmax_logits(rng, (n, k), dtype)
    z[1:3] = random_values(rng, z[1:3].shape, dtype)  # finite rows only: the loss is a mean
    ids = rng.integers(0, k, n)
    t = ids if targets == "ids" else rng.dirichlet(np.ones(k), n).astype(dtype)
    got = BACKENDS[compiled_backend].softmax_cross_entropy(z, t)
    want = BACKENDS["numpy"].softmax_cross_entropy(z, t)
    assert got[0] == pytest.approx(want[0], rel=1e-5 if dtype == np.float32 else 1e-12, abs=1e-6)
    for g, w in zip(got[1:], want[1:]):
        assert_twins_close(g, w, terms=k)
    np.testing.assert_array_equal(got[2], ops.softmax(z, backend=compiled_backend))


def test_softmax_cross_entropy_rejects_class_ids_out_of_range(compiled_backend):
    from cnnext.backend import BACKENDS

    z = np.zeros((3, 4), np.float32)
    with pytest.raises(IndexError, match="class id 4 .row 2. is out of range for 4 classes"):
        BACKENDS[compiled_backend].softmax_cross_entropy(z, np.array([0, 3, 4]))
    with pytest.raises(IndexError, match="class id -1 .row 0."):
        BACKENDS[compiled_backend].softmax_cross_entropy(z, np.array([-1, 0, 0]))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_relu_on_many_threads_matches_numpy(compiled_backend, threads):
    """Arrays above the kernel's parallel threshold, split over several threads."""
    import cnnext

    rng = np.random.default_rng(threads)
    z = rng.standard_normal((7, 99, 101)).astype(np.float32)
    dy = rng.standard_normal(z.shape).astype(np.float32)
    cnnext.set_num_threads(threads)
    try:
        np.testing.assert_array_equal(ops.relu(z, backend=compiled_backend), np.maximum(z, 0))
        np.testing.assert_array_equal(ops.relu_backward(dy, z, backend=compiled_backend),
                                      dy * (z > 0))
    finally:
        cnnext.set_num_threads(None)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_pool_ties_and_nans_route_to_the_first_cell_on_both_backends(backend_name, mode):
    """A hand-checkable window: the gradient goes to the first extreme (or first NaN) cell."""
    x = np.array([[5.0, 1.0, 5.0, 1.0], [5.0, 1.0, np.nan, np.nan]]).reshape(1, 2, 4, 1)
    x = x if mode == "max" else np.where(np.isnan(x), x, -x)
    y = ops.pool2d(x, 2, mode=mode, backend=backend_name)
    expected_y = np.array([5.0, np.nan]) * (1 if mode == "max" else -1)
    np.testing.assert_array_equal(y.ravel(), expected_y)
    dx = ops.pool2d_backward(np.array([2.0, 3.0]).reshape(1, 1, 2, 1), x, 2, mode=mode,
                             backend=backend_name)
    expected_dx = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]).reshape(1, 2, 4, 1)
    np.testing.assert_array_equal(dx, expected_dx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_large_layer_matches_numpy(compiled_backend, dtype):
    """Big enough that a compiled im2col buffer holds one sample at a time."""
    rng = np.random.default_rng(8)
    x = random_values(rng, (3, 64, 64, 64), dtype)
    w = random_values(rng, (3, 3, 64, 32), dtype)
    b = random_values(rng, (32,), dtype)
    y = ops.conv2d(x, w, b, padding=1, backend=compiled_backend)
    assert_twins_close(y, ops.conv2d(x, w, b, padding=1, backend="numpy"), terms=3 * 3 * 64)
    got = ops.conv2d_backward(y, x, w, padding=1, backend=compiled_backend)
    want = ops.conv2d_backward(y, x, w, padding=1, backend="numpy")
    for g, wnt, terms in zip(got, want, [3 * 3 * 32, 3 * 64 * 64, 3 * 64 * 64]):
        assert_twins_close(g, wnt, terms=terms)


@pytest.mark.parametrize("channels", [(1, 6), (16, 32)], ids=["direct", "many-channels"])
def test_conv2d_backward_without_input_grad(backend_name, channels):
    """``input_grad=False`` returns ``dx`` None and the same ``dw``, ``db`` as the full call."""
    C, F = channels
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 9, 8, C)).astype(np.float32)
    w = rng.standard_normal((3, 3, C, F)).astype(np.float32)
    dy = rng.standard_normal((3, 9, 8, F)).astype(np.float32)
    dx, dw, db = ops.conv2d_backward(dy, x, w, padding="same", backend=backend_name)
    none, dw2, db2 = ops.conv2d_backward(dy, x, w, padding="same", backend=backend_name,
                                         input_grad=False)
    assert dx is not None and none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n, hw, kernel, filters, padding",
    [
        (20, (28, 28), (5, 5), 6, 2),  # LeNet-5's first layer, more samples than chunks
        (3, (9, 11), (3, 3), 4, (1, 0)),
        (2, (10, 10), (7, 2), 16, 0),
        (2, (6, 30), (1, 1), 1, 0),
        (1, (12, 9), (4, 3), 8, (2, 1)),
        (2, (8, 5), (3, 5), 12, (1, 2)),
    ],
)
def test_one_input_channel_conv_matches_numpy(
    compiled_backend, dtype, n, hw, kernel, filters, padding
):
    """One input channel (expanded rows on AVX-512; the forward from 8 output rows): kernel
    heights 1-7, up to 16 filters, rows whose flat length is and is not a multiple of the
    vector."""
    rng = np.random.default_rng(7)
    x = random_values(rng, (n, *hw, 1), dtype)
    w = random_values(rng, (*kernel, 1, filters), dtype)
    b = random_values(rng, (filters,), dtype)
    y = ops.conv2d(x, w, b, padding=padding, backend="numpy")
    assert_twins_close(ops.conv2d(x, w, b, padding=padding, backend=compiled_backend), y,
                       terms=kernel[0] * kernel[1] + 1)
    dy = random_values(rng, y.shape, dtype)
    got = ops.conv2d_backward(dy, x, w, padding=padding, backend=compiled_backend,
                              input_grad=False)
    want = ops.conv2d_backward(dy, x, w, padding=padding, backend="numpy")
    terms = y.shape[0] * y.shape[1] * y.shape[2]
    assert got[0] is None
    assert_twins_close(got[1], want[1], terms=terms)
    assert_twins_close(got[2], want[2], terms=terms)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 12, 13])
@pytest.mark.parametrize(
    "hw, kernel, channels, padding",
    [
        ((14, 14), (5, 5), (6, 16), 0),  # LeNet-5's second layer
        ((26, 26), (3, 3), (4, 8), 0),  # the seed write-up's "Test 4" second layer
        ((12, 10), (3, 3), (3, 4), 1),
        ((10, 9), (5, 3), (2, 2), (2, 1)),
    ],
)
def test_small_channel_conv_of_any_batch_size_matches_numpy(
    compiled_backend, dtype, n, hw, kernel, channels, padding
):
    """Few channels, batches below, at and above the kernels' blocks of 12 rows or samples
    (the input gradient's row blocks of every size)."""
    C, F = channels
    rng = np.random.default_rng(n)
    x = random_values(rng, (n, *hw, C), dtype)
    w = random_values(rng, (*kernel, C, F), dtype)
    b = random_values(rng, (F,), dtype)
    y = ops.conv2d(x, w, b, padding=padding, backend="numpy")
    assert_twins_close(ops.conv2d(x, w, b, padding=padding, backend=compiled_backend), y,
                       terms=kernel[0] * kernel[1] * C + 1)
    dy = random_values(rng, y.shape, dtype)
    got = ops.conv2d_backward(dy, x, w, padding=padding, backend=compiled_backend)
    want = ops.conv2d_backward(dy, x, w, padding=padding, backend="numpy")
    terms = y.shape[0] * y.shape[1] * y.shape[2]
    assert_twins_close(got[0], want[0], terms=kernel[0] * kernel[1] * F)
    assert_twins_close(got[1], want[1], terms=terms)
    assert_twins_close(got[2], want[2], terms=terms)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((3, 14, 14, 1), (3, 3, 1, 4), {}),  # expanded rows
        ((2, 12, 12, 4), (3, 3, 4, 8), {"padding": 1}),  # expanded rows, few channels
        ((2, 14, 14, 6), (5, 5, 6, 16), {}),  # channel lanes
        ((2, 9, 30, 2), (3, 3, 2, 1), {"padding": "same"}),  # pixel lanes
        ((2, 11, 10, 3), (3, 2, 3, 5), {"stride": 2, "dilation": (1, 2)}),
        ((2, 8, 8, 16), (3, 3, 16, 40), {"padding": 1}),  # many channels (GEMM below AVX-512)
    ],
)
def test_conv2d_relu_is_relu_of_conv2d_bit_for_bit(backend_name, x_shape, w_shape, kwargs):
    """``conv2d(..., relu=True)`` equals ``relu(conv2d(...))`` exactly on every kernel path (the
    compiled ones also at the AVX2 level), NaN kept and no -0.0."""
    rng = np.random.default_rng(11)
    x = random_values(rng, x_shape, np.float32)
    x[0, 2, 2, 0] = np.nan  # reaches a few outputs of sample 0
    w = random_values(rng, w_shape, np.float32)
    b = random_values(rng, w_shape[3:], np.float32)
    levels = [None]
    if backend_name == "cython":
        from cnnext._ext import _conv2d

        levels.append("avx2")
    for level in levels:
        previous = _conv2d.simd_level() if level else None
        if level:
            _conv2d.set_simd_level(level)
        try:
            got = ops.conv2d(x, w, b, **kwargs, backend=backend_name, relu=True)
            plain = ops.conv2d(x, w, b, **kwargs, backend=backend_name)
        finally:
            if level:
                _conv2d.set_simd_level(previous)
        np.testing.assert_array_equal(got, ops.relu(plain, backend=backend_name))
        assert np.isnan(got).any() and (got == 0).any() and not np.signbit(got[got == 0]).any()
