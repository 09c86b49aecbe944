"""Public functional ops, channels-last: validate every argument, then call a backend's kernel.

Shapes: activations ``x (N, H, W, C)``, conv weights ``w (KH, KW, C, F)``, bias ``b (F,)``,
outputs ``y (N, Ho, Wo, F)`` (``F = C`` for pooling); the dense ops take ``x (N, D)``,
``w (D, U)``, ``b (U,)`` and give ``y (N, U)``. ``stride``, ``dilation``, ``size`` and
``scale`` are an int or an ``(h, w)`` pair of positive ints. ``padding`` is an int, an ``(ph, pw)``
pair, ``"valid"`` or ``"same"``; ``"same"`` follows TensorFlow/Keras: the output has
``ceil(H / stride)`` rows and an odd padding total puts the extra row at the bottom and the extra
column at the right (see :mod:`cnnext.shapes`). Output size per axis:
``Ho = (H + top + bottom - dilation * (KH - 1) - 1) // stride + 1``.

Dtypes: float32 and float64 arrays pass through unchanged. bool, integer, unsigned and float16
arrays are converted to float32. Complex, object, string, datetime and extended-precision
(``longdouble``) arrays raise TypeError. When the float inputs of one call differ (``x`` float32,
``w`` float64, say) all of them are promoted to the wider dtype, which is also the output dtype.
Any array-like is accepted (lists too); non-contiguous, Fortran-ordered, read-only and broadcast
arrays work (they are copied to C order when needed; inputs are never modified).

Values are not checked: NaN and inf propagate as the arithmetic dictates. An empty batch
(``N = 0``) returns correctly shaped empty results (zero weight/bias gradients for
:func:`conv2d_backward`); every other dimension must be at least 1.

``out``: every op can write its result (``dx`` for the backward ops) into a given array instead
of a new one, and returns it; ``out`` must have exactly the result's shape and dtype, be
C-contiguous and writeable, and share no memory with the inputs.

``backend``: ``"numpy"``, ``"cython"`` or None for the current default (see :mod:`cnnext.backend`).
Bad arguments raise ValueError (bad shapes or values) or TypeError (bad types) naming the offending
shapes and values.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np

from . import backend as _backend
from ._config import physical_memory
from .workspace import into
from .shapes import (
    Pair,
    Padding4,
    PaddingSpec,
    clamped_stride,
    conv_output_hw,
    dilated_kernel_hw,
    padded_hw,
    resolve_padding,
    to_pair,
    upsample_output_hw,
)

POOL_MODES = ("max", "min", "avg")
_LAYOUTS = {"x": "(N, H, W, C)", "w": "(KH, KW, C, F)", "b": "(F,)", "dy": "(N, Ho, Wo, channels)"}


# --- argument checks ----------------------------------------------------------------------------


def _array(op: str, name: str, a, ndim: int | None, layout: str | None = None) -> np.ndarray:
    """``a`` as an ndarray of ``ndim`` dims (None: any; ``layout`` names them when it is not the
    conv layout of ``name``) and dtype float32/float64 (maybe not contiguous)."""
    if type(a) is not np.ndarray:
        try:
            a = np.asarray(a)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{op}: {name} is not a rectangular array: {exc}") from None
    if a.dtype.char not in "fd":
        if a.dtype.kind not in "biu" and a.dtype.char != "e":
            raise TypeError(
                f"{op}: {name} has dtype {a.dtype}; expected float32 or float64 "
                "(bool, integer and float16 arrays are converted to float32)"
            )
        a = a.astype(np.float32)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(
            f"{op}: {name} must be {ndim}-D {layout or _LAYOUTS[name]}, got {name}.shape={a.shape}"
        )
    return a


def _nonempty(op: str, name: str, shape: tuple, first: int) -> None:
    """Reject a zero-size dimension at index ``first`` or later."""
    if 0 in shape[first:]:
        batch = "; only the batch size N may be 0" if first == 1 else ""
        raise ValueError(f"{op}: {name}.shape={shape} has an empty dimension{batch}")


def _contiguous(*arrays: np.ndarray | None) -> list[np.ndarray | None]:
    """C-contiguous copies (only where needed) in the widest float dtype among ``arrays``."""
    dtype = np.float32
    for a in arrays:
        if a is not None and a.dtype.char == "d":
            dtype = np.float64
    return [None if a is None else np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def _pair(op: str, value, name: str, minimum: int = 1) -> Pair:
    """:func:`cnnext.shapes.to_pair` with the op name in the error message."""
    try:
        return to_pair(value, name, minimum)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{op}: {exc}") from None


def _padding(op: str, padding, in_hw: Pair, kernel_hw: Pair, stride: Pair, dilation: Pair):
    """:func:`cnnext.shapes.resolve_padding` with the op name in the error message."""
    try:
        return resolve_padding(padding, in_hw, kernel_hw, stride, dilation)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{op}: {exc}") from None


@functools.lru_cache(maxsize=256)
def _check_memory(op: str, dtype: np.dtype, *shapes: tuple) -> None:
    """MemoryError, before allocating, when the arrays of ``shapes`` exceed physical memory
    (cached: the shapes are ints, from the checked geometry)."""
    needed = sum(math.prod(shape) for shape in shapes) * np.dtype(dtype).itemsize
    limit = physical_memory()
    if limit is not None and needed > limit:
        raise MemoryError(
            f"{op}: arrays of shapes {', '.join(map(str, shapes))} ({np.dtype(dtype)}) would "
            f"need {needed / 2**30:.4g} GiB, more than this machine's {limit / 2**30:.4g} GiB "
            "of memory"
        )


def _no_samples(op: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """The zeros of an empty batch's result ``shape (0, ...)``; ValueError when numpy cannot make
    an array of that shape (its other dimensions' bytes reach 2**63, say by a huge scale)."""
    if math.prod(shape[1:]) * np.dtype(dtype).itemsize > np.iinfo(np.intp).max:
        raise ValueError(f"{op}: the result's shape {shape} is too large for a numpy array, "
                         "even with no samples")
    return np.zeros(shape, dtype=dtype)


def _padded_shape(x_shape: tuple, padding: Padding4) -> tuple:
    return (x_shape[0], *padded_hw(x_shape[1:3], padding), x_shape[3])


def _check_fits(op: str, x_shape: tuple, padding: Padding4, span: Pair, what: str) -> None:
    """The (dilated) window must fit in the padded input."""
    p_h, p_w = padded_hw(x_shape[1:3], padding)
    if span[0] > p_h or span[1] > p_w:
        raise ValueError(
            f"{op}: {what} spans {span[0]}x{span[1]} cells, larger than the padded input "
            f"{p_h}x{p_w} (x.shape={x_shape}, padding (top, bottom, left, right)={padding})"
        )


def _check_dy(op: str, dy_shape: tuple, expected: tuple, context: Callable[[], str]) -> None:
    """ValueError unless ``dy_shape == expected``; ``context()`` describes the call (formatted
    only for the error, off the hot path)."""
    if dy_shape != expected:
        raise ValueError(
            f"{op}: dy.shape={dy_shape} does not match the forward output shape {expected} "
            f"({context()})"
        )


def _out(op: str, out, shape: tuple, dtype: np.dtype, *inputs: np.ndarray | None):
    """``out`` checked (None passes): an ndarray of exactly ``shape`` and ``dtype``, C-contiguous,
    writeable and sharing no memory with ``inputs``."""
    if out is None:
        return None
    if type(out) is not np.ndarray:
        raise TypeError(f"{op}: out must be a numpy.ndarray or None, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(
            f"{op}: out.shape={out.shape} and out.dtype={out.dtype} must be the result's "
            f"shape {tuple(shape)} and dtype {np.dtype(dtype)}"
        )
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"{op}: out must be C-contiguous and writeable")
    if any(a is not None and np.may_share_memory(out, a) for a in inputs):
        raise ValueError(f"{op}: out shares memory with an input")
    return out


def _cache_key_safe(*values) -> bool:
    """Every value None, an int, a str or a tuple of ints, by exact type, so that equal values
    mean equal arguments: ``True == 1`` and ``2.0 == 2`` hash alike, so a bool or a float (which
    the checks refuse) must never be looked up in a cache of accepted arguments."""
    for value in values:
        if type(value) is tuple:
            if not all(type(v) is int for v in value):
                return False
        elif value is not None and type(value) not in (int, str):
            return False
    return True


def _conv_geometry(op: str, x_shape, w_shape, stride, padding, dilation):
    """Validate conv shapes and hyper-parameters; return normalised
    ``(stride, padding4, dilation, (N, Ho, Wo, F))`` (cached for plain int/str/tuple
    arguments: a call after the first with the same shapes costs a dictionary lookup)."""
    if _cache_key_safe(stride, padding, dilation):
        return _checked_conv_geometry(op, x_shape, w_shape, stride, padding, dilation)
    return _checked_conv_geometry.__wrapped__(op, x_shape, w_shape, stride, padding, dilation)


@functools.lru_cache(maxsize=256)
def _checked_conv_geometry(op: str, x_shape, w_shape, stride, padding, dilation):
    """:func:`_conv_geometry` without the cache key check."""
    _nonempty(op, "x", x_shape, 1)
    _nonempty(op, "w", w_shape, 0)
    if x_shape[3] != w_shape[2]:
        raise ValueError(
            f"{op}: x has {x_shape[3]} channels (x.shape={x_shape}) but w expects "
            f"{w_shape[2]} (w.shape={w_shape})"
        )
    stride = _pair(op, stride, "stride")
    dilation = _pair(op, dilation, "dilation")
    kernel_hw = w_shape[:2]
    pad = _padding(op, padding, x_shape[1:3], kernel_hw, stride, dilation)
    span = dilated_kernel_hw(kernel_hw, dilation)
    _check_fits(op, x_shape, pad, span, f"the kernel (w.shape={w_shape}, dilation={dilation})")
    stride = clamped_stride(x_shape[1:3], pad, span, stride)
    out_hw = conv_output_hw(x_shape[1:3], kernel_hw, stride, pad, dilation)
    return stride, pad, dilation, (x_shape[0], *out_hw, w_shape[3])


def _flag(op: str, name: str, value) -> bool:
    """A bool argument (``relu``, ``input_grad``): TypeError for anything else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool; received {name}={value!r}")
    return bool(value)


def _pool_geometry(op: str, x_shape, size, stride, padding, mode, relu=False):
    """Validate pooling arguments; return normalised
    ``(size, stride, padding4, (N, Ho, Wo, C))`` (cached like :func:`_conv_geometry`; ``relu``
    only when a bool, since ``1 == True``)."""
    if type(relu) is bool and _cache_key_safe(size, stride, padding, mode):
        return _checked_pool_geometry(op, x_shape, size, stride, padding, mode, relu)
    return _checked_pool_geometry.__wrapped__(op, x_shape, size, stride, padding, mode, relu)


@functools.lru_cache(maxsize=256)
def _checked_pool_geometry(op: str, x_shape, size, stride, padding, mode, relu):
    """:func:`_pool_geometry` without the cache key check."""
    _nonempty(op, "x", x_shape, 1)
    if not isinstance(mode, str) or mode not in POOL_MODES:
        raise ValueError(f"{op}: mode must be 'max', 'min' or 'avg'; received mode={mode!r}")
    if _flag(op, "relu", relu) and mode == "avg":
        raise ValueError(f"{op}: relu=True needs mode 'max' or 'min' (it commutes with them); "
                         "received mode='avg'")
    size = _pair(op, size, "size")
    stride = size if stride is None else _pair(op, stride, "stride")
    pad = _padding(op, padding, x_shape[1:3], size, stride, (1, 1))
    top, bottom, left, right = pad
    if max(top, bottom) >= size[0] or max(left, right) >= size[1]:
        raise ValueError(
            f"{op}: padding (top, bottom, left, right)={pad} must be smaller than the pool "
            f"size={size} on every side (a window would hold only padding)"
        )
    _check_fits(op, x_shape, pad, size, f"the pool window (size={size})")
    out_hw = conv_output_hw(x_shape[1:3], size, stride, pad)
    return size, stride, pad, (x_shape[0], *out_hw, x_shape[3])


# --- convolution --------------------------------------------------------------------------------


def conv2d(
    x,
    w,
    b=None,
    stride: int | Pair = 1,
    padding: PaddingSpec = 0,
    dilation: int | Pair = 1,
    backend: str | None = None,
    out: np.ndarray | None = None,
    relu: bool = False,
) -> np.ndarray:
    """2-D cross-correlation (what deep-learning libraries call convolution) with zero padding.

    ``x (N, H, W, C)``, ``w (KH, KW, C, F)``, optional ``b (F,)``; returns ``y (N, Ho, Wo, F)``
    with ``y[n, i, j, f] = b[f] + sum x_pad[n, i*sh + kh*dh, j*sw + kw*dw, c] * w[kh, kw, c, f]``.
    ``relu=True`` returns ``relu(y)``, equal to :func:`relu` of the plain result, with the ReLU
    applied to each part of ``y`` while it is still in cache (for inference).
    """
    kernels = _backend.resolve(backend)
    relu = _flag("conv2d", "relu", relu)
    x = _array("conv2d", "x", x, 4)
    w = _array("conv2d", "w", w, 4)
    geometry = _conv_geometry("conv2d", x.shape, w.shape, stride, padding, dilation)
    stride, pad, dilation, y_shape = geometry
    if b is not None:
        b = _array("conv2d", "b", b, 1)
        if b.shape != (w.shape[3],):
            raise ValueError(
                f"conv2d: b.shape={b.shape} does not match the {w.shape[3]} filters of "
                f"w (w.shape={w.shape}); expected b.shape={(w.shape[3],)}"
            )
    x, w, b = _contiguous(x, w, b)
    out = _out("conv2d", out, y_shape, x.dtype, x, w, b)
    _check_memory("conv2d", x.dtype, y_shape, _padded_shape(x.shape, pad))
    if y_shape[0] == 0:
        return into(out, _no_samples("conv2d", y_shape, x.dtype))
    return kernels.conv2d_forward(x, w, b, stride, pad, dilation, out, relu)


def conv2d_backward(
    dy,
    x,
    w,
    stride: int | Pair = 1,
    padding: PaddingSpec = 0,
    dilation: int | Pair = 1,
    backend: str | None = None,
    input_grad: bool = True,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d` given ``dy (N, Ho, Wo, F)``: ``(dx (N, H, W, C),
    dw (KH, KW, C, F), db (F,))``. Pass the same ``x``, ``w`` and hyper-parameters as forward.
    ``input_grad=False`` skips ``dx`` (returned as None), e.g. for a network's first layer;
    ``out`` then must be None."""
    op = "conv2d_backward"
    kernels = _backend.resolve(backend)
    x = _array(op, "x", x, 4)
    w = _array(op, "w", w, 4)
    dy = _array(op, "dy", dy, 4)
    stride, pad, dilation, y_shape = _conv_geometry(op, x.shape, w.shape, stride, padding, dilation)
    _check_dy(op, dy.shape, y_shape, lambda: f"x.shape={x.shape}, w.shape={w.shape}, "
              f"stride={stride}, padding={pad}, dilation={dilation}")
    dy, x, w = _contiguous(dy, x, w)
    input_grad = _flag(op, "input_grad", input_grad)
    if out is not None and not input_grad:
        raise ValueError(f"{op}: out is given but input_grad=False computes no dx")
    out = _out(op, out, x.shape, x.dtype, dy, x, w)
    _check_memory(op, x.dtype, _padded_shape(x.shape, pad))
    if x.shape[0] == 0:
        dx = into(out, np.zeros_like(x)) if input_grad else None
        return dx, np.zeros_like(w), np.zeros(w.shape[3], dtype=w.dtype)
    return kernels.conv2d_backward(dy, x, w, stride, pad, dilation, input_grad, out)


# --- pooling ------------------------------------------------------------------------------------


def pool2d(
    x,
    size: int | Pair,
    stride: int | Pair | None = None,
    padding: PaddingSpec = 0,
    mode: str = "max",
    backend: str | None = None,
    out: np.ndarray | None = None,
    relu: bool = False,
) -> np.ndarray:
    """Max, min or average pooling of ``x (N, H, W, C)`` over ``size`` windows; returns
    ``y (N, Ho, Wo, C)``.

    ``stride`` defaults to ``size``. Padding cells never win max/min and are not counted by
    ``"avg"``, which divides by the number of real cells in each window; every padding side must
    be smaller than the window. A NaN in a window makes its max/min NaN. ``relu=True`` (max and
    min) returns ``relu(pool(x))`` in one pass, equal to :func:`relu` of the pooled output.
    """
    kernels = _backend.resolve(backend)
    x = _array("pool2d", "x", x, 4)
    size, stride, pad, y_shape = _pool_geometry("pool2d", x.shape, size, stride, padding, mode,
                                                relu)
    (x,) = _contiguous(x)
    out = _out("pool2d", out, y_shape, x.dtype, x)
    _check_memory("pool2d", x.dtype, y_shape, _padded_shape(x.shape, pad))
    if y_shape[0] == 0:
        return into(out, _no_samples("pool2d", y_shape, x.dtype))
    return kernels.pool2d_forward(x, size, stride, pad, mode, out, bool(relu))


def pool2d_backward(
    dy,
    x,
    size: int | Pair,
    stride: int | Pair | None = None,
    padding: PaddingSpec = 0,
    mode: str = "max",
    backend: str | None = None,
    out: np.ndarray | None = None,
    relu: bool = False,
) -> np.ndarray:
    """Gradient ``dx (N, H, W, C)`` of :func:`pool2d` given ``dy (N, Ho, Wo, C)``.

    ``"max"``/``"min"`` route each output's gradient to the FIRST extreme cell of its window in
    row-major order (top row first, left to right), i.e. the cell the forward pass picked: ties go
    to the earliest cell and, in a window holding NaN, to its first NaN. ``"avg"`` spreads it
    evenly over the window's real cells. Overlapping windows accumulate. ``relu=True``: the
    gradient of ``pool2d(..., relu=True)``, i.e. ``dy`` through :func:`relu_backward` at the
    pooled values first.
    """
    op = "pool2d_backward"
    kernels = _backend.resolve(backend)
    x = _array(op, "x", x, 4)
    dy = _array(op, "dy", dy, 4)
    size, stride, pad, y_shape = _pool_geometry(op, x.shape, size, stride, padding, mode, relu)
    _check_dy(op, dy.shape, y_shape,
              lambda: f"x.shape={x.shape}, size={size}, stride={stride}, padding={pad}")
    dy, x = _contiguous(dy, x)
    out = _out(op, out, x.shape, x.dtype, dy, x)
    _check_memory(op, x.dtype, _padded_shape(x.shape, pad))
    if x.shape[0] == 0:
        return into(out, np.zeros_like(x))
    return kernels.pool2d_backward(dy, x, size, stride, pad, mode, out, bool(relu))


# --- nearest-neighbour upsampling ---------------------------------------------------------------


def upsample2d(x, scale: int | Pair, backend: str | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """Nearest-neighbour upsampling: every cell of ``x (N, H, W, C)`` becomes an ``sh x sw``
    block; returns ``(N, H*sh, W*sw, C)``."""
    kernels = _backend.resolve(backend)
    x = _array("upsample2d", "x", x, 4)
    _nonempty("upsample2d", "x", x.shape, 1)
    scale = _pair("upsample2d", scale, "scale")
    (x,) = _contiguous(x)
    y_shape = (x.shape[0], *upsample_output_hw(x.shape[1:3], scale), x.shape[3])
    out = _out("upsample2d", out, y_shape, x.dtype, x)
    _check_memory("upsample2d", x.dtype, y_shape)
    if x.shape[0] == 0:
        return into(out, _no_samples("upsample2d", y_shape, x.dtype))
    return kernels.upsample2d_forward(x, scale, out)


def upsample2d_backward(dy, scale: int | Pair, backend: str | None = None,
                        out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`upsample2d`: sums each ``sh x sw`` block of ``dy (N, H*sh, W*sw, C)``
    into ``dx (N, H, W, C)``."""
    op = "upsample2d_backward"
    kernels = _backend.resolve(backend)
    dy = _array(op, "dy", dy, 4)
    _nonempty(op, "dy", dy.shape, 1)
    scale = _pair(op, scale, "scale")
    if dy.shape[1] % scale[0] or dy.shape[2] % scale[1]:
        raise ValueError(
            f"{op}: dy.shape={dy.shape} is not a multiple of scale={scale} along H and W"
        )
    (dy,) = _contiguous(dy)
    n, h, w, c = dy.shape
    dx_shape = (n, h // scale[0], w // scale[1], c)
    out = _out(op, out, dx_shape, dy.dtype, dy)
    if n == 0:
        return into(out, np.zeros(dx_shape, dtype=dy.dtype))
    return kernels.upsample2d_backward(dy, scale, out)


# --- dense (fully connected) --------------------------------------------------------------------

_DENSE_LAYOUTS = {"x": "(N, D)", "w": "(D, U)", "b": "(U,)", "dy": "(N, U)"}


def _dense_arrays(op: str, **arrays) -> dict[str, np.ndarray]:
    """The dense op's arrays validated (a None ``b`` passes): 2-D ``x (N, D)``, ``w (D, U)`` and
    ``dy (N, U)`` of matching sizes and 1-D ``b (U,)``, none empty but N."""
    checked = {name: None if a is None and name == "b" else
               _array(op, name, a, 1 if name == "b" else 2, _DENSE_LAYOUTS[name])
               for name, a in arrays.items()}
    x, w = checked["x"], checked["w"]
    _nonempty(op, "x", x.shape, 1)
    _nonempty(op, "w", w.shape, 0)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"{op}: x has {x.shape[1]} features (x.shape={x.shape}) but w expects "
                         f"{w.shape[0]} (w.shape={w.shape})")
    b = checked.get("b")
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"{op}: b.shape={b.shape} does not match the {w.shape[1]} units of w "
                         f"(w.shape={w.shape}); expected b.shape={(w.shape[1],)}")
    dy = checked.get("dy")
    if dy is not None:
        _check_dy(op, dy.shape, (x.shape[0], w.shape[1]),
                  lambda: f"x.shape={x.shape}, w.shape={w.shape}")
    return checked


def dense(x, w, b=None, backend: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Fully connected layer: ``x (N, D) @ w (D, U) + b (U,)`` (no bias when ``b`` is None);
    returns ``y (N, U)``."""
    kernels = _backend.resolve(backend)
    x, w, b = _contiguous(*_dense_arrays("dense", x=x, w=w, b=b).values())
    y_shape = (x.shape[0], w.shape[1])
    out = _out("dense", out, y_shape, x.dtype, x, w, b)
    _check_memory("dense", x.dtype, y_shape)
    if x.shape[0] == 0:
        return into(out, np.zeros(y_shape, dtype=x.dtype))
    return kernels.dense_forward(x, w, b, out)


def dense_backward(
    dy,
    x,
    w,
    backend: str | None = None,
    input_grad: bool = True,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`dense` given ``dy (N, U)``: ``(dx (N, D), dw (D, U), db (U,))``.
    ``input_grad=False`` skips ``dx`` (returned as None); ``out`` then must be None."""
    op = "dense_backward"
    kernels = _backend.resolve(backend)
    dy, x, w = _contiguous(*_dense_arrays(op, dy=dy, x=x, w=w).values())
    input_grad = _flag(op, "input_grad", input_grad)
    if out is not None and not input_grad:
        raise ValueError(f"{op}: out is given but input_grad=False computes no dx")
    out = _out(op, out, x.shape, x.dtype, dy, x, w)
    _check_memory(op, x.dtype, x.shape, w.shape)
    if x.shape[0] == 0:
        dx = into(out, np.zeros_like(x)) if input_grad else None
        return dx, np.zeros_like(w), np.zeros(w.shape[1], dtype=w.dtype)
    return kernels.dense_backward(dy, x, w, input_grad, out)


# --- ReLU ---------------------------------------------------------------------------------------


def _flat(out: np.ndarray | None) -> np.ndarray | None:
    return None if out is None else out.reshape(-1)


def relu(x, backend: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """``max(x, 0)`` element-wise, for ``x`` of any shape."""
    kernels = _backend.resolve(backend)
    x = _array("relu", "x", x, None)
    (flat,) = _contiguous(x.reshape(-1))
    out = _out("relu", out, x.shape, flat.dtype, flat)
    y = kernels.relu_forward(flat, _flat(out))
    return y.reshape(x.shape) if out is None else out


def relu_backward(dy, x, backend: str | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`relu`: ``dy * (x > 0)``, for ``dy`` and ``x`` of one shape."""
    op = "relu_backward"
    kernels = _backend.resolve(backend)
    dy, x = _array(op, "dy", dy, None), _array(op, "x", x, None)
    if dy.shape != x.shape:
        raise ValueError(f"{op}: dy.shape={dy.shape} must equal x.shape={x.shape}")
    flat_dy, flat_x = _contiguous(dy.reshape(-1), x.reshape(-1))
    out = _out(op, out, x.shape, flat_x.dtype, flat_dy, flat_x)
    dz = kernels.relu_backward(flat_dy, flat_x, _flat(out))
    return dz.reshape(x.shape) if out is None else out


# --- softmax ------------------------------------------------------------------------------------


def softmax(x, backend: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis of ``x`` (any shape with at least one value per row):
    ``exp(x - max) / sum(exp(x - max))`` row by row."""
    kernels = _backend.resolve(backend)
    x = _array("softmax", "x", x, None)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"softmax: x needs a last axis of at least one value, got "
                         f"x.shape={x.shape}")
    (x,) = _contiguous(x)
    return kernels.softmax_forward(x, _out("softmax", out, x.shape, x.dtype, x))
