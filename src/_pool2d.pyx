"""Compiled 2-D pooling (max, min, average) over channels-last tensors.

Both functions follow the backend contract in :mod:`cnnext.backend`: ``x`` is a C-contiguous
``(N, H, W, C)`` float32/float64 array, ``size``/``stride`` are ``(h, w)``, ``padding`` is
``(top, bottom, left, right)`` and ``mode`` is ``"max"``, ``"min"`` or ``"avg"``. Padding never
wins max/min and is not counted by avg.

Each output row ``(n, oh)`` is reduced separably, so every inner loop runs over a whole contiguous
row of ``W * C`` values (vectorised by the compiler even for small ``C``): first down the window's
input rows into a padded row buffer, then across it with a sliding window of ``kw`` columns; the
output keeps every ``sw``-th column. Min pooling is max pooling of ``-x`` (negation is exact and
keeps NaNs). The backward pass of max/min tracks each candidate's row ``i`` and column ``j``
inside the window, so ties go to the first cell in row-major order and the first NaN wins.
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
    # x (N, H, W, C), y (N, Ho, Wo, C); window (kh, kw), stride (sh, sw), padding top/left;
    # Wp: padded columns the windows span, (Wo - 1) * sw + kw; Wr: real columns among them
    Py_ssize_t H, W, C, Ho, Wo, kh, kw, sh, sw, top, left, Wp, Wr


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


cdef inline bint _beats(floating v, floating best) noexcept nogil:
    """``v`` replaces the running maximum: it is larger, or it is a NaN and ``best`` is not.

    Both comparisons are evaluated unconditionally so that the compiler can vectorise the loop.
    """
    return (best == best) & (not v <= best)


cdef inline bint _ties(floating v, floating best) noexcept nogil:
    return (v == best) | ((v != v) & (best != best))


cdef inline void _fill_padding(floating* row, Geometry g, floating value) noexcept nogil:
    """Set the padding columns of a padded row buffer (``g.Wp * g.C`` values) to ``value``."""
    cdef Py_ssize_t t
    for t in range(g.left * g.C):
        row[t] = value
    for t in range((g.left + g.Wr) * g.C, g.Wp * g.C):
        row[t] = value


cdef inline void _reduce_rows(const floating* x, Py_ssize_t nrows, Geometry g, int mode,
                              const floating* column, floating* v, floating* key) noexcept nogil:
    """Reduce the first ``g.Wr`` columns of ``nrows`` input rows at ``x`` into the padded row ``v``.

    avg: sum. max/min: the first largest ``sign * x`` down each column. With ``key`` (backward),
    the winner's cell ``i * W + w`` is stored there (``column[t]`` holds ``w``), so comparing keys
    orders cells row-major. Padding columns hold -inf with key ``kh * W`` (losing every tie), or 0.
    """
    cdef Py_ssize_t i, t
    cdef Py_ssize_t size = g.Wr * g.C
    cdef floating sign = -1 if mode == MIN else 1
    cdef floating val, best, held, row_start
    cdef bint wins
    cdef const floating* row
    cdef floating* out = v + g.left * g.C
    cdef floating* out_key = NULL
    if mode == AVG:
        _fill_padding(v, g, 0)
        for t in range(size):
            out[t] = x[t]
        for i in range(1, nrows):
            row = x + i * g.W * g.C
            for t in range(size):
                out[t] += row[t]
        return
    _fill_padding(v, g, -INFINITY)
    for t in range(size):
        out[t] = sign * x[t]
    if key != NULL:
        out_key = key + g.left * g.C
        _fill_padding(key, g, g.kh * g.W)
        for t in range(size):
            out_key[t] = column[t]
    for i in range(1, nrows):
        row = x + i * g.W * g.C
        if key == NULL:
            for t in range(size):
                val = sign * row[t]
                best = out[t]
                out[t] = val if _beats(val, best) else best
        else:
            row_start = i * g.W  # a float, and every load unconditional: the loop vectorises
            for t in range(size):
                val = sign * row[t]
                best = out[t]
                held = out_key[t]
                wins = _beats(val, best)
                out[t] = val if wins else best
                # a select would put the add under a branch, which blocks vectorisation
                out_key[t] = held + wins * (row_start + column[t] - held)


cdef inline void _reduce_cols(const floating* v, const floating* key, Geometry g, int mode,
                              floating* m, floating* m_key) noexcept nogil:
    """Slide a ``kw``-column window along the padded row ``v``: ``m[t]`` reduces columns
    ``t, t + C, ..., t + (kw - 1) * C``. With ``key`` (max/min backward), ``m_key`` gets the
    winner's key; a tie goes to the smaller key, i.e. the first cell in row-major order."""
    cdef Py_ssize_t j, t
    cdef Py_ssize_t span = ((g.Wo - 1) * g.sw + 1) * g.C
    cdef const floating* col
    cdef const floating* col_key
    cdef floating val, best, new_key, held
    cdef bint wins
    for t in range(span):
        m[t] = v[t]
    if key != NULL:
        for t in range(span):
            m_key[t] = key[t]
    for j in range(1, g.kw):
        col = v + j * g.C
        if mode == AVG:
            for t in range(span):
                m[t] += col[t]
        elif key == NULL:
            for t in range(span):
                val = col[t]
                best = m[t]
                m[t] = val if _beats(val, best) else best
        else:
            col_key = key + j * g.C
            for t in range(span):
                val = col[t]
                best = m[t]
                new_key = col_key[t]
                held = m_key[t]
                wins = _beats(val, best) | (_ties(val, best) & (new_key < held))
                m[t] = val if wins else best
                m_key[t] = new_key if wins else held


cdef void _forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y, Geometry g,
                   int mode, floating[:, ::1] scratch, int nt) noexcept:
    cdef Py_ssize_t r, n, oh, ow, c
    cdef Span rows, cols
    cdef floating sign = -1 if mode == MIN else 1
    cdef floating count
    cdef floating* v
    cdef floating* m
    cdef floating* out
    with nogil:
        for r in prange(x.shape[0] * g.Ho, num_threads=nt, schedule="static"):
            n = r // g.Ho
            oh = r % g.Ho
            v = &scratch[omp_get_thread_num(), 0]
            m = v + g.Wp * g.C
            rows = _clip(oh, g.sh, g.kh, g.top, g.H)
            _reduce_rows(&x[n, rows.lo, 0, 0], rows.hi - rows.lo, g, mode, NULL, v, NULL)
            _reduce_cols(v, NULL, g, mode, m, NULL)
            out = &y[n, oh, 0, 0]
            for ow in range(g.Wo):
                if mode == AVG:
                    cols = _clip(ow, g.sw, g.kw, g.left, g.W)
                    count = (rows.hi - rows.lo) * (cols.hi - cols.lo)
                    for c in range(g.C):
                        out[ow * g.C + c] = m[ow * g.sw * g.C + c] / count
                else:
                    for c in range(g.C):
                        out[ow * g.C + c] = sign * m[ow * g.sw * g.C + c]


cdef inline void _backward_row(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                               floating[:, :, :, ::1] dx, Py_ssize_t n, Py_ssize_t oh,
                               Geometry g, int mode, const floating* column,
                               floating* scratch) noexcept nogil:
    """Add the gradients of output row ``(n, oh)`` into ``dx``; ``scratch`` holds 4 padded rows."""
    cdef Py_ssize_t ow, c, i, j, t
    cdef Py_ssize_t size = g.Wp * g.C
    cdef Span rows, cols
    cdef floating count
    cdef const floating* grad = &dy[n, oh, 0, 0]
    cdef floating* spread = scratch
    cdef floating* share = scratch + size
    cdef floating* target
    rows = _clip(oh, g.sh, g.kh, g.top, g.H)
    target = &dx[n, rows.lo, 0, 0]
    if mode == AVG:
        # share[ow * sw * C + c] = dy / count; spread[t] = sum_j share[t - j * C]
        memset(share, 0, size * sizeof(floating))
        for ow in range(g.Wo):
            cols = _clip(ow, g.sw, g.kw, g.left, g.W)
            count = (rows.hi - rows.lo) * (cols.hi - cols.lo)
            for c in range(g.C):
                share[ow * g.sw * g.C + c] = grad[ow * g.C + c] / count
        for t in range(size):
            spread[t] = share[t]
        for j in range(1, g.kw):
            for t in range(j * g.C, size):
                spread[t] += share[t - j * g.C]
        for i in range(rows.hi - rows.lo):
            for t in range(g.Wr * g.C):
                target[i * g.W * g.C + t] += spread[g.left * g.C + t]
        return
    cdef floating* v = scratch
    cdef floating* key = v + size
    cdef floating* m = key + size
    cdef floating* m_key = m + size
    _reduce_rows(&x[n, rows.lo, 0, 0], rows.hi - rows.lo, g, mode, column, v, key)
    _reduce_cols(v, key, g, mode, m, m_key)
    for ow in range(g.Wo):
        for c in range(g.C):
            target[<Py_ssize_t>m_key[ow * g.sw * g.C + c] * g.C + c] += grad[ow * g.C + c]


cdef void _backward_disjoint(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                             floating[:, :, :, ::1] dx, Geometry g, int mode,
                             const floating[::1] column, floating[:, ::1] scratch,
                             int nt) noexcept:
    """stride >= size: each output row owns a band of input rows; zero it, then add into it."""
    cdef Py_ssize_t r, n, oh, lo, hi
    with nogil:
        for r in prange(x.shape[0] * g.Ho, num_threads=nt, schedule="static"):
            n = r // g.Ho
            oh = r % g.Ho
            lo = 0 if oh == 0 else oh * g.sh - g.top
            hi = g.H if oh == g.Ho - 1 else (oh + 1) * g.sh - g.top
            memset(&dx[n, lo, 0, 0], 0, (hi - lo) * g.W * g.C * sizeof(floating))
            _backward_row(x, dy, dx, n, oh, g, mode, &column[0],
                              &scratch[omp_get_thread_num(), 0])


cdef void _backward_overlapping(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                                floating[:, :, :, ::1] dx, Geometry g, int mode,
                                const floating[::1] column, floating[:, ::1] scratch,
                                int nt) noexcept:
    """stride < size: windows share cells, so each thread owns whole images of the batch."""
    cdef Py_ssize_t n, oh
    with nogil:
        for n in prange(x.shape[0], num_threads=nt, schedule="static"):
            memset(&dx[n, 0, 0, 0], 0, g.H * g.W * g.C * sizeof(floating))
            for oh in range(g.Ho):
                _backward_row(x, dy, dx, n, oh, g, mode, &column[0],
                                  &scratch[omp_get_thread_num(), 0])


cdef Geometry _geometry(shape, size, stride, padding):
    cdef Geometry g
    _, g.H, g.W, g.C = shape
    g.kh, g.kw = size
    g.sh, g.sw = stride
    g.top, bottom, g.left, right = padding
    g.Ho = (g.H + g.top + bottom - g.kh) // g.sh + 1
    g.Wo = (g.W + g.left + right - g.kw) // g.sw + 1
    g.Wp = (g.Wo - 1) * g.sw + g.kw
    g.Wr = min(g.W, g.Wp - g.left)
    return g


def pool2d_forward(x, size, stride, padding, mode):
    """Pool ``x (N, H, W, C)`` into ``y (N, Ho, Wo, C)``.

    ``Ho = (H + top + bottom - size_h) // stride_h + 1`` (same for ``Wo``).
    """
    cdef Geometry g = _geometry(x.shape, size, stride, padding)
    cdef int code = _MODES[mode]
    cdef int nt = get_num_threads()
    y = np.empty((x.shape[0], g.Ho, g.Wo, g.C), dtype=x.dtype)
    scratch = np.empty((nt, 2 * g.Wp * g.C), dtype=x.dtype)
    if x.dtype == np.float32:
        _forward[float](x, y, g, code, scratch, nt)
    else:
        _forward[double](x, y, g, code, scratch, nt)
    return y


def pool2d_backward(dy, x, size, stride, padding, mode):
    """Gradient ``dx (N, H, W, C)`` of pooling ``x`` given ``dy (N, Ho, Wo, C)``.

    max/min send each output's gradient to the first extreme cell of its window (row-major);
    avg spreads it evenly over the window's real cells. Overlapping windows accumulate.
    """
    cdef Geometry g = _geometry(x.shape, size, stride, padding)
    cdef int code = _MODES[mode]
    cdef int nt = get_num_threads()
    cdef bint disjoint = g.sh >= g.kh and g.sw >= g.kw
    if x.dtype == np.float32 and (g.kh + 1) * g.W > 1 << 24:
        # cell keys (< (kh + 1) * W) would not all be exact in float32
        dx = pool2d_backward(dy.astype(np.float64), x.astype(np.float64), size, stride, padding,
                             mode)
        return dx.astype(np.float32)
    dx = np.empty_like(x)
    column = np.repeat(np.arange(g.Wr, dtype=x.dtype), g.C)  # column w of each row entry
    if column.size == 0:
        column = np.zeros(1, dtype=x.dtype)
    scratch = np.empty((nt, 4 * g.Wp * g.C), dtype=x.dtype)
    if x.dtype == np.float32:
        if disjoint:
            _backward_disjoint[float](x, dy, dx, g, code, column, scratch, nt)
        else:
            _backward_overlapping[float](x, dy, dx, g, code, column, scratch, nt)
    else:
        if disjoint:
            _backward_disjoint[double](x, dy, dx, g, code, column, scratch, nt)
        else:
            _backward_overlapping[double](x, dy, dx, g, code, column, scratch, nt)
    return dx
