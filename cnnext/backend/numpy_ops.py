"""The NumPy backend: readable reference implementations of the kernels.

Written to be read and trusted, not to be fast: forward passes pad the input, take every window
as a strided view (``sliding_window_view``) and reduce it; backward passes loop over the
``KH * KW`` kernel taps only and add each tap's contribution into a padded input gradient.

Arguments arrive validated by :mod:`cnnext.ops`: C-contiguous float32/float64 arrays of one dtype,
``x (N, H, W, C)`` (``(N, D)`` for the dense ops) with ``N >= 1``,
``stride``/``dilation``/``size``/``scale`` as ``(h, w)`` int pairs and ``padding`` as
``(top, bottom, left, right)``. Every output keeps the input dtype.
Each op computes a new array and copies it into ``out`` when that is given (only the compiled
kernels and numpy's matrix products write in place). The optimizer updates are the exception: they
change the parameter and its slots in place, and take arrays of any strides from
:mod:`cnnext.optimizers`.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..shapes import Pair, Padding4, conv_output_hw, dilated_kernel_hw, padded_hw
from ..workspace import into


def _pad(x: np.ndarray, padding: Padding4) -> np.ndarray:
    """Zero-pad the spatial axes of ``(N, H, W, C)`` by ``(top, bottom, left, right)``."""
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _crop(x_padded: np.ndarray, padding: Padding4) -> np.ndarray:
    """Undo :func:`_pad`."""
    top, bottom, left, right = padding
    h, w = x_padded.shape[1] - bottom, x_padded.shape[2] - right
    return x_padded[:, top:h, left:w, :]


def _windows(
    x_padded: np.ndarray, kernel_hw: Pair, stride: Pair, dilation: Pair, out_hw: Pair
) -> np.ndarray:
    """View of every window: ``(N, Ho, Wo, C, KH, KW)`` (no copy)."""
    span = dilated_kernel_hw(kernel_hw, dilation)
    view = sliding_window_view(x_padded, span, axis=(1, 2))  # (N, H', W', C, span_h, span_w)
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return view[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, :, ::dh, ::dw]


def _tap(x_padded: np.ndarray, i: int, j: int, stride: Pair, dilation: Pair, out_hw: Pair):
    """View ``(N, Ho, Wo, C)`` of the cells that kernel tap ``(i, j)`` reads for every output."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    rows = slice(i * dh, i * dh + (ho - 1) * sh + 1, sh)
    cols = slice(j * dw, j * dw + (wo - 1) * sw + 1, sw)
    return x_padded[:, rows, cols, :]


# --- convolution --------------------------------------------------------------------------------


def conv2d_forward(x, w, b, stride: Pair, padding: Padding4, dilation: Pair,
                   out=None, relu: bool = False) -> np.ndarray:
    """``y[n, i, j, f] = b[f] + sum_{kh, kw, c} x_padded[n, i*sh + kh*dh, j*sw + kw*dw, c] *
    w[kh, kw, c, f]`` with zero padding; ``y (N, Ho, Wo, F)``; ``relu``: ``max(y, 0)``."""
    kernel_hw = w.shape[:2]
    out_hw = conv_output_hw(x.shape[1:3], kernel_hw, stride, padding, dilation)
    windows = _windows(_pad(x, padding), kernel_hw, stride, dilation, out_hw)
    y = np.tensordot(windows, w, axes=([4, 5, 3], [0, 1, 2]))  # (N, Ho, Wo, F)
    if b is not None:
        y += b
    return into(out, np.maximum(y, 0) if relu else y)


def conv2d_backward(dy, x, w, stride: Pair, padding: Padding4, dilation: Pair,
                    input_grad: bool = True, out=None):
    """Gradients ``(dx (N, H, W, C), dw (KH, KW, C, F), db (F,))`` of :func:`conv2d_forward`
    given ``dy (N, Ho, Wo, F)``; ``dx`` is None when ``input_grad`` is False."""
    kh, kw = w.shape[:2]
    out_hw = dy.shape[1:3]
    x_padded = _pad(x, padding)
    windows = _windows(x_padded, (kh, kw), stride, dilation, out_hw)
    dw = np.tensordot(windows, dy, axes=([0, 1, 2], [0, 1, 2]))  # (C, KH, KW, F)
    dw = np.ascontiguousarray(dw.transpose(1, 2, 0, 3))
    db = dy.sum(axis=(0, 1, 2))
    if not input_grad:
        return None, dw, db
    dx_padded = np.zeros_like(x_padded)
    for i in range(kh):
        for j in range(kw):
            _tap(dx_padded, i, j, stride, dilation, out_hw)[...] += dy @ w[i, j].T
    return into(out, np.ascontiguousarray(_crop(dx_padded, padding))), dw, db


# --- pooling ------------------------------------------------------------------------------------


def _real_cells(in_hw: Pair, size: Pair, stride: Pair, padding: Padding4, out_hw: Pair):
    """Boolean ``(Ho, Wo, KH*KW)``: which cells of each window lie inside the input."""
    inside = _pad(np.ones((1, *in_hw, 1), dtype=bool), padding)
    return _windows(inside, size, stride, (1, 1), out_hw)[0, :, :, 0].reshape(*out_hw, -1)


def _pool_setup(x, size: Pair, stride: Pair, padding: Padding4):
    """Flattened windows ``(N, Ho, Wo, C, KH*KW)`` and the real-cell mask ``(Ho, Wo, 1, KH*KW)``."""
    out_hw = conv_output_hw(x.shape[1:3], size, stride, padding)
    windows = _windows(_pad(x, padding), size, stride, (1, 1), out_hw)
    windows = windows.reshape(*windows.shape[:4], -1)
    real = _real_cells(x.shape[1:3], size, stride, padding, out_hw)[:, :, None, :]
    return windows, real


def _winners(windows: np.ndarray, real: np.ndarray, mode: str) -> np.ndarray:
    """Index (row-major within the window) of the first real cell holding the window's max
    (``mode="max"``) or min (``"min"``); when a window holds a NaN, its first NaN wins.
    Shape ``(N, Ho, Wo, C)``."""
    keys = windows if mode == "max" else -windows
    best = np.where(real, keys, -np.inf).max(axis=-1, keepdims=True)  # NaN if any NaN
    hits = real & ((keys == best) | np.isnan(keys))
    return hits.argmax(axis=-1)  # first True


def _avg_divisor(real: np.ndarray, dtype) -> np.ndarray:
    """Number of real cells per window, ``(Ho, Wo, 1)`` in ``dtype``."""
    return real.sum(axis=-1).astype(dtype)


def pool2d_forward(x, size: Pair, stride: Pair, padding: Padding4, mode: str,
                   out=None, relu: bool = False) -> np.ndarray:
    """Max, min or average over each window; ``y (N, Ho, Wo, C)``; ``relu`` (max and min):
    :func:`relu_forward` of that.

    Padding cells never win max/min and are not counted by avg (avg divides by the number of real
    cells in the window). A NaN in a window makes its max/min NaN.
    """
    windows, real = _pool_setup(x, size, stride, padding)
    if mode == "avg":
        return into(out, windows.sum(axis=-1) / _avg_divisor(real, x.dtype))  # padding: zeros
    winner = _winners(windows, real, mode)
    y = np.take_along_axis(windows, winner[..., None], axis=-1)[..., 0]
    return relu_forward(y, out) if relu else into(out, y)


def pool2d_backward(dy, x, size: Pair, stride: Pair, padding: Padding4, mode: str,
                    out=None, relu: bool = False) -> np.ndarray:
    """Gradient ``dx (N, H, W, C)`` of :func:`pool2d_forward` given ``dy (N, Ho, Wo, C)``.

    max/min send each output's gradient to the first extreme cell of its window (row-major);
    avg spreads it evenly over the real cells. Overlapping windows accumulate. With ``relu`` the
    gradient first goes through :func:`relu_backward` at the pooled values.
    """
    if relu:
        dy = relu_backward(dy, pool2d_forward(x, size, stride, padding, mode))
    kh, kw = size
    out_hw = dy.shape[1:3]
    windows, real = _pool_setup(x, size, stride, padding)
    n, h, w, c = x.shape
    dx_padded = np.zeros((n, *padded_hw((h, w), padding), c), dtype=x.dtype)
    if mode == "avg":
        share = dy / _avg_divisor(real, x.dtype)  # padding cells get a share too; cropped below
        for i in range(kh):
            for j in range(kw):
                _tap(dx_padded, i, j, stride, (1, 1), out_hw)[...] += share
    else:
        winner = _winners(windows, real, mode)
        for i in range(kh):
            for j in range(kw):
                _tap(dx_padded, i, j, stride, (1, 1), out_hw)[...] += np.where(
                    winner == i * kw + j, dy, 0
                )
    return into(out, np.ascontiguousarray(_crop(dx_padded, padding)))


# --- nearest-neighbour upsampling ---------------------------------------------------------------


def upsample2d_forward(x, scale: Pair, out=None) -> np.ndarray:
    """Repeat every cell ``sh`` times down and ``sw`` times across: ``(N, H*sh, W*sw, C)``."""
    return into(out, np.repeat(np.repeat(x, scale[0], axis=1), scale[1], axis=2))


def upsample2d_backward(dy, scale: Pair, out=None) -> np.ndarray:
    """Sum each ``sh x sw`` block of ``dy (N, H*sh, W*sw, C)``: ``dx (N, H, W, C)``."""
    n, h_out, w_out, c = dy.shape
    sh, sw = scale
    return into(out, dy.reshape(n, h_out // sh, sh, w_out // sw, sw, c).sum(axis=(2, 4)))


# --- dense (fully connected) --------------------------------------------------------------------


def dense_forward(x, w, b, out=None) -> np.ndarray:
    """``y = x @ w + b`` for ``x (N, D)``, ``w (D, U)``, ``b (U,)`` or None: ``y (N, U)``
    (numpy's matrix product writes into ``out`` directly)."""
    y = np.matmul(x, w, out=out)
    if b is not None:
        y += b
    return y


def dense_backward(dy, x, w, input_grad: bool = True, out=None):
    """``(dx, dw, db) = (dy @ w.T, x.T @ dy, dy.sum(axis=0))`` given ``dy (N, U)``; ``dx`` is None
    when ``input_grad`` is False."""
    dx = np.matmul(dy, w.T, out=out) if input_grad else None
    return dx, x.T @ dy, dy.sum(axis=0)


# --- ReLU ---------------------------------------------------------------------------------------


def relu_forward(z, out=None) -> np.ndarray:
    """``max(z, 0)`` element-wise (a NaN stays NaN)."""
    return into(out, np.maximum(z, 0))


def relu_backward(dy, z, out=None) -> np.ndarray:
    """``dy * (z > 0)``: the gradient passes where the input was positive."""
    return into(out, dy * (z > 0))


def softmax_forward(z, out=None) -> np.ndarray:
    """Softmax over the last axis: ``exp(z - max) / sum(exp(z - max))`` per row (a row holding a
    NaN, or an infinity and another value that does not cancel, gives NaN)."""
    e = np.subtract(z, z.max(axis=-1, keepdims=True), out=out)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_cross_entropy(z, t) -> tuple[float, np.ndarray, np.ndarray]:
    """``(loss, dz, p)`` for logits ``z (N, K)``: ``p`` the softmax of each row (exactly
    :func:`softmax_forward`), ``loss`` the mean over rows of ``-log p[t]`` (class ids ``t (N,)``)
    or of ``-sum(t * log p)`` (target rows ``t (N, K)``), from the shifted logits (no log of a
    rounded ``p``), and ``dz = (p - onehot(t)) / N`` (or ``(p - t) / N``)."""
    m = len(z)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    p = e / total
    grad = p.copy()
    if t.ndim == 1:  # log_softmax at the targets only
        rows = np.arange(m)
        loss = -float((shifted[rows, t] - np.log(total[:, 0])).sum()) / m
        grad[rows, t] -= 1.0
    else:
        loss = -float(np.vdot(t, shifted - np.log(total))) / m
        grad -= t
    grad *= 1.0 / m
    return loss, grad, p


# --- optimizer updates (in place; the arrays may have any shape and strides) -------------------


def _flush_subnormal(slot: np.ndarray) -> None:
    """In place: 0 where ``|slot|`` is below the dtype's smallest normal number (NaN stays), so
    that decaying optimizer state reaches zero instead of sticking at subnormal values, which
    slow every later operation on them about a hundredfold."""
    slot[np.abs(slot) < np.finfo(slot.dtype).tiny] = 0


def _decays(param: np.ndarray, weight_decay: float) -> bool:
    """Whether ``weight_decay`` is nonzero in ``param``'s dtype (a decay that rounds to 0 there is
    skipped, as the compiled kernels do, rather than turning an infinite parameter into NaN)."""
    return bool(param.dtype.type(weight_decay))


def sgd_update(param, grad, buf, lr: float, momentum: float, nesterov: bool,
               weight_decay: float) -> None:
    """``g = grad + weight_decay * param``; with a momentum buffer ``buf`` (None without
    momentum) ``buf = momentum * buf + g`` and ``g = g + momentum * buf`` (Nesterov) or ``buf``;
    ``param -= lr * g``."""
    if _decays(param, weight_decay):
        grad = grad + weight_decay * param
    if buf is not None:
        buf *= momentum
        buf += grad
        _flush_subnormal(buf)
        grad = grad + momentum * buf if nesterov else buf
    param -= lr * grad


def adam_update(param, grad, m, v, lr: float, beta_1: float, beta_2: float, epsilon: float,
                weight_decay: float, decoupled: bool, t: int) -> None:
    """Update ``t`` (from 1): ``param *= 1 - lr * weight_decay`` when ``decoupled``, else
    ``g = grad + weight_decay * param``; ``m = beta_1 m + (1 - beta_1) g``,
    ``v = beta_2 v + (1 - beta_2) g^2``;
    ``param -= lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)``."""
    if _decays(param, weight_decay):
        if decoupled:
            param *= 1.0 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    m *= beta_1
    m += (1.0 - beta_1) * grad
    _flush_subnormal(m)
    v *= beta_2
    v += (1.0 - beta_2) * (grad * grad)
    _flush_subnormal(v)
    denom = np.sqrt(v)
    denom *= 1.0 / math.sqrt(1.0 - beta_2 ** t)
    denom += epsilon
    param -= (lr / (1.0 - beta_1 ** t)) * (m / denom)


def rmsprop_update(param, grad, square_avg, grad_avg, buf, lr: float, rho: float,
                   momentum: float, epsilon: float, weight_decay: float) -> None:
    """``g = grad + weight_decay * param``; ``s = rho s + (1 - rho) g^2``;
    ``a = sqrt(s - c^2) + epsilon`` with ``c = rho c + (1 - rho) g`` when ``grad_avg`` is given
    (centered), else ``sqrt(s) + epsilon``; with a momentum buffer ``buf``
    ``buf = momentum buf + g / a`` and ``param -= lr * buf``, else ``param -= lr * g / a``."""
    if _decays(param, weight_decay):
        grad = grad + weight_decay * param
    square_avg *= rho
    square_avg += (1.0 - rho) * (grad * grad)
    _flush_subnormal(square_avg)
    if grad_avg is not None:
        grad_avg *= rho
        grad_avg += (1.0 - rho) * grad
        _flush_subnormal(grad_avg)
        avg = np.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg += epsilon
    if buf is not None:
        buf *= momentum
        buf += grad / avg
        _flush_subnormal(buf)
        param -= lr * buf
    else:
        param -= lr * (grad / avg)
