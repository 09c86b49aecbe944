"""Compiled 2-D pooling (max, min, average) over channels-last tensors.

Both functions follow the backend contract in :mod:`cnnext.backend`: ``x`` is a C-contiguous
``(N, H, W, C)`` float32/float64 array, ``size``/``stride`` are ``(h, w)``, ``padding`` is
``(top, bottom, left, right)`` and ``mode`` is ``"max"``, ``"min"`` or ``"avg"``. Every window is
clipped to the real cells of the input: padding never wins max/min and is not counted by avg.

Kernels work one output row ``(n, oh)`` at a time with the channel loop innermost (contiguous, so
the compiler vectorises it). Min pooling is max pooling of ``-x`` (negation is exact and keeps
NaNs), so both share one code path.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.string cimport memset

import numpy as np

from _openmp cimport omp_get_thread_num
from cnnext._config import get_num_threads

_MODES = {"max": 0, "min": 1, "avg": 2}
cdef enum:
    MAX = 0
    MIN = 1
    AVG = 2


cdef struct Geometry:
    # x is (N, H, W, C), y is (N, Ho, Wo, C); window (kh, kw), stride (sh, sw), padding top/left
    Py_ssize_t H, W, C, Ho, Wo, kh, kw, sh, sw, top, left


cdef struct Span:
    Py_ssize_t lo, hi


cdef inline Span _clip(Py_ssize_t o, Py_ssize_t s, Py_ssize_t k, Py_ssize_t pad,
                       Py_ssize_t n) noexcept nogil:
    """Real-cell range [lo, hi) along one axis of the window of output index ``o``."""
    cdef Py_ssize_t start = o * s - pad
    cdef Span span
    span.lo = start if start > 0 else 0
    span.hi = start + k if start + k < n else n
    return span


cdef inline void _window_max(const floating* x, Py_ssize_t nrows, Py_ssize_t ncols,
                             Py_ssize_t row_stride, Py_ssize_t C, floating sign,
                             floating* best, Py_ssize_t* where) noexcept nogil:
    """Per channel, the largest ``sign * x`` over a window and (if ``where``) its cell offset.

    ``x`` points at the window's first real cell, rows are ``row_stride`` apart. The first
    extreme cell in row-major order wins; a NaN beats every number and is never replaced.
    """
    cdef Py_ssize_t i, j, c, offset
    cdef floating v, b
    cdef bint wins
    for c in range(C):
        best[c] = -INFINITY
    if where != NULL:
        for c in range(C):
            where[c] = 0
    for i in range(nrows):
        for j in range(ncols):
            offset = i * row_stride + j * C
            if where == NULL:
                for c in range(C):
                    v = sign * x[offset + c]
                    b = best[c]
                    best[c] = v if (b == b) & (not v <= b) else b
            else:
                for c in range(C):
                    v = sign * x[offset + c]
                    b = best[c]
                    wins = (b == b) & (not v <= b)
                    best[c] = v if wins else b
                    where[c] = offset if wins else where[c]


cdef inline void _window_sum(const floating* x, Py_ssize_t nrows, Py_ssize_t ncols,
                             Py_ssize_t row_stride, Py_ssize_t C, floating* out) noexcept nogil:
    """Per channel, the mean over a window of real cells (same layout as :func:`_window_max`)."""
    cdef Py_ssize_t i, j, c, offset
    cdef floating count = nrows * ncols
    for c in range(C):
        out[c] = 0
    for i in range(nrows):
        for j in range(ncols):
            offset = i * row_stride + j * C
            for c in range(C):
                out[c] += x[offset + c]
    for c in range(C):
        out[c] /= count


cdef void _forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y, Geometry g,
                   int mode, int nt) noexcept:
    cdef Py_ssize_t r, n, oh, ow, c
    cdef Span rows, cols
    cdef Py_ssize_t row_stride = g.W * g.C
    cdef floating sign = -1 if mode == MIN else 1
    cdef floating* out
    cdef const floating* first
    with nogil:
        for r in prange(x.shape[0] * g.Ho, num_threads=nt, schedule="static"):
            n = r // g.Ho
            oh = r % g.Ho
            rows = _clip(oh, g.sh, g.kh, g.top, g.H)
            for ow in range(g.Wo):
                cols = _clip(ow, g.sw, g.kw, g.left, g.W)
                first = &x[n, rows.lo, cols.lo, 0]
                out = &y[n, oh, ow, 0]
                if mode == AVG:
                    _window_sum(first, rows.hi - rows.lo, cols.hi - cols.lo, row_stride, g.C,
                                out)
                else:
                    _window_max(first, rows.hi - rows.lo, cols.hi - cols.lo, row_stride, g.C,
                                sign, out, NULL)
                    if mode == MIN:
                        for c in range(g.C):
                            out[c] = -out[c]


cdef inline void _backward_row(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                               floating[:, :, :, ::1] dx, Py_ssize_t n, Py_ssize_t oh,
                               Geometry g, int mode, floating* best,
                               Py_ssize_t* where) noexcept nogil:
    """Add the gradients of output row ``(n, oh)`` into ``dx``."""
    cdef Py_ssize_t ow, c, i, j, offset
    cdef Span rows, cols
    cdef Py_ssize_t row_stride = g.W * g.C
    cdef floating sign = -1 if mode == MIN else 1
    cdef floating count
    cdef const floating* grad
    cdef floating* target
    rows = _clip(oh, g.sh, g.kh, g.top, g.H)
    for ow in range(g.Wo):
        cols = _clip(ow, g.sw, g.kw, g.left, g.W)
        grad = &dy[n, oh, ow, 0]
        target = &dx[n, rows.lo, cols.lo, 0]
        if mode == AVG:
            count = (rows.hi - rows.lo) * (cols.hi - cols.lo)
            for i in range(rows.hi - rows.lo):
                for j in range(cols.hi - cols.lo):
                    offset = i * row_stride + j * g.C
                    for c in range(g.C):
                        target[offset + c] += grad[c] / count
        else:
            _window_max(&x[n, rows.lo, cols.lo, 0], rows.hi - rows.lo, cols.hi - cols.lo,
                        row_stride, g.C, sign, best, where)
            for c in range(g.C):
                target[where[c] + c] += grad[c]


cdef void _backward_disjoint(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                             floating[:, :, :, ::1] dx, Geometry g, int mode,
                             floating[:, ::1] best, Py_ssize_t[:, ::1] where,
                             int nt) noexcept:
    """stride >= size: each output row owns a band of input rows; zero it, then add into it."""
    cdef Py_ssize_t r, n, oh, lo, hi, tid
    cdef Py_ssize_t row_size = g.W * g.C
    with nogil:
        for r in prange(x.shape[0] * g.Ho, num_threads=nt, schedule="static"):
            tid = omp_get_thread_num()
            n = r // g.Ho
            oh = r % g.Ho
            lo = 0 if oh == 0 else oh * g.sh - g.top
            hi = g.H if oh == g.Ho - 1 else (oh + 1) * g.sh - g.top
            memset(&dx[n, lo, 0, 0], 0, (hi - lo) * row_size * sizeof(floating))
            _backward_row(x, dy, dx, n, oh, g, mode, &best[tid, 0], &where[tid, 0])


cdef void _backward_overlapping(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                                floating[:, :, :, ::1] dx, Geometry g, int mode,
                                floating[:, ::1] best, Py_ssize_t[:, ::1] where,
                                int nt) noexcept:
    """stride < size: windows share cells, so each thread owns whole images of the batch."""
    cdef Py_ssize_t n, oh, tid
    with nogil:
        for n in prange(x.shape[0], num_threads=nt, schedule="static"):
            tid = omp_get_thread_num()
            memset(&dx[n, 0, 0, 0], 0, g.H * g.W * g.C * sizeof(floating))
            for oh in range(g.Ho):
                _backward_row(x, dy, dx, n, oh, g, mode, &best[tid, 0], &where[tid, 0])


cdef Geometry _geometry(shape, size, stride, padding):
    cdef Geometry g
    _, g.H, g.W, g.C = shape
    g.kh, g.kw = size
    g.sh, g.sw = stride
    g.top, bottom, g.left, right = padding
    g.Ho = (g.H + g.top + bottom - g.kh) // g.sh + 1
    g.Wo = (g.W + g.left + right - g.kw) // g.sw + 1
    return g


def pool2d_forward(x, size, stride, padding, mode):
    """Pool ``x (N, H, W, C)`` into ``y (N, Ho, Wo, C)``.

    ``Ho = (H + top + bottom - size_h) // stride_h + 1`` (same for ``Wo``).
    """
    cdef Geometry g = _geometry(x.shape, size, stride, padding)
    cdef int code = _MODES[mode]
    cdef int nt = get_num_threads()
    y = np.empty((x.shape[0], g.Ho, g.Wo, g.C), dtype=x.dtype)
    if x.dtype == np.float32:
        _forward[float](x, y, g, code, nt)
    else:
        _forward[double](x, y, g, code, nt)
    return y


def pool2d_backward(dy, x, size, stride, padding, mode):
    """Gradient ``dx (N, H, W, C)`` of pooling ``x`` given ``dy (N, Ho, Wo, C)``.

    max/min send each output's gradient to the first extreme cell of its window (row-major);
    avg spreads it evenly over the window's real cells. Overlapping windows accumulate.
    """
    cdef Geometry g = _geometry(x.shape, size, stride, padding)
    cdef int code = _MODES[mode]
    cdef int nt = get_num_threads()
    dx = np.empty_like(x)
    best = np.empty((nt, g.C), dtype=x.dtype)
    where = np.empty((nt, g.C), dtype=np.intp)
    cdef bint disjoint = g.sh >= g.kh and g.sw >= g.kw
    if x.dtype == np.float32:
        if disjoint:
            _backward_disjoint[float](x, dy, dx, g, code, best, where, nt)
        else:
            _backward_overlapping[float](x, dy, dx, g, code, best, where, nt)
    else:
        if disjoint:
            _backward_disjoint[double](x, dy, dx, g, code, best, where, nt)
        else:
            _backward_overlapping[double](x, dy, dx, g, code, best, where, nt)
    return dx
