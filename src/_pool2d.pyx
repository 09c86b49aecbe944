"""Compiled 2-D pooling (max, min, average) over channels-last tensors.

Both functions follow the backend contract in :mod:`cnnext.backend`: ``x`` is a C-contiguous
``(N, H, W, C)`` float32/float64 array, ``size``/``stride`` are ``(h, w)``, ``padding`` is
``(top, bottom, left, right)`` and ``mode`` is ``"max"``, ``"min"`` or ``"avg"``. Padding never
wins max/min and is not counted by avg.

Each output row ``(n, oh)`` is reduced in two steps. First down the window's input rows into a
padded row buffer: one loop over the whole contiguous row of ``W * C`` values, which the compiler
vectorises even for small ``C``. Then across ``kw`` columns by sliding the window along the whole
row (long loops again), keeping every ``sw``-th column. Min pooling is max pooling of ``-x``
(negation is exact and keeps NaNs). The backward pass of max/min carries each candidate's flat
cell offset ``(i * W + w) * C + c`` as a key: ties go to the smaller key, which is the first cell
in row-major order, and the first NaN wins.

When the windows tile the input (stride equal to the size, no padding), the vector kernels of
src/_pool_simd_kernels.h handle each output row: a tile's channels in the vector lanes, every
gradient cell assigned once (no clearing, no scatter). They are compiled for several instruction
sets and picked at import time (:func:`simd_level`; ``CNNEXT_SIMD`` overrides it).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stddef cimport ptrdiff_t
from libc.string cimport memcpy, memset

import numpy as np

from _openmp cimport omp_get_thread_num
from cnnext._config import get_num_threads
from cnnext.workspace import into, output

cdef extern from "_pool_simd.h" nogil:
    const char* cnx_isa_name
    int cnx_select(const char* name)
    # output rows [r0, r1) of tiles (row r = n * Ho + oh), rows of `row` values, H per sample
    void cnx_pool_tile_rows_f(const float* x, ptrdiff_t H, ptrdiff_t row, ptrdiff_t kh,
                              ptrdiff_t kw, ptrdiff_t C, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t r0,
                              ptrdiff_t r1, int mode, int relu, float* y)
    void cnx_pool_tile_rows_d(const double* x, ptrdiff_t H, ptrdiff_t row, ptrdiff_t kh,
                              ptrdiff_t kw, ptrdiff_t C, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t r0,
                              ptrdiff_t r1, int mode, int relu, double* y)
    void cnx_pool_tile_grad_rows_f(const float* x, const float* dy, ptrdiff_t H, ptrdiff_t row,
                                   ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t C, ptrdiff_t Ho,
                                   ptrdiff_t Wo, ptrdiff_t r0, ptrdiff_t r1, int mode, int relu,
                                   float* dx)
    void cnx_pool_tile_grad_rows_d(const double* x, const double* dy, ptrdiff_t H,
                                   ptrdiff_t row, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t C,
                                   ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t r0, ptrdiff_t r1,
                                   int mode, int relu, double* dx)

include "_simd_level.pxi"

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
    """``v`` equals ``best``, counting two NaNs as equal."""
    return (v == best) | ((v != v) & (best != best))


cdef inline void _fill_padding(floating* row, Geometry g, floating value) noexcept nogil:
    """Set the padding columns of a padded row buffer (``g.Wp * g.C`` values) to ``value``."""
    cdef Py_ssize_t t
    for t in range(g.left * g.C):
        row[t] = value
    for t in range((g.left + g.Wr) * g.C, g.Wp * g.C):
        row[t] = value


cdef inline void _reduce_rows(const floating* x, Py_ssize_t nrows, Geometry g, int mode,
                              const floating* cells, floating* v, floating* key) noexcept nogil:
    """Reduce the first ``g.Wr`` columns of ``nrows`` input rows at ``x`` into the padded row ``v``.

    avg: sum. max/min: the first largest ``sign * x`` down each column. With ``key`` (backward),
    the winner's flat offset from ``x`` is stored there (``cells[t]`` is ``t``). Padding columns
    hold -inf with key ``kh * W * C`` (losing every tie), or 0 for avg.
    """
    cdef Py_ssize_t i, t
    cdef Py_ssize_t size = g.Wr * g.C
    cdef Py_ssize_t stride = g.W * g.C
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
            row = x + i * stride
            for t in range(size):
                out[t] += row[t]
        return
    _fill_padding(v, g, -INFINITY)
    if key != NULL:
        out_key = key + g.left * g.C
        _fill_padding(key, g, g.kh * stride)
    if nrows == 1:
        for t in range(size):
            out[t] = sign * x[t]
        if key != NULL:
            memcpy(out_key, cells, size * sizeof(floating))
        return
    # rows 0 and 1 in one pass, then the rest
    row = x + stride
    if key == NULL:
        for t in range(size):
            best = sign * x[t]
            val = sign * row[t]
            out[t] = val if _beats(val, best) else best
    else:
        row_start = stride
        for t in range(size):
            best = sign * x[t]
            val = sign * row[t]
            wins = _beats(val, best)
            out[t] = val if wins else best
            out_key[t] = cells[t] + wins * row_start
    for i in range(2, nrows):
        row = x + i * stride
        if key == NULL:
            for t in range(size):
                val = sign * row[t]
                best = out[t]
                out[t] = val if _beats(val, best) else best
        else:
            row_start = i * stride  # a float, and every load unconditional: the loop vectorises
            for t in range(size):
                val = sign * row[t]
                best = out[t]
                held = out_key[t]
                wins = _beats(val, best)
                out[t] = val if wins else best
                # a select would put the add under a branch, which blocks vectorisation
                out_key[t] = held + wins * (row_start + cells[t] - held)


cdef inline void _combine(floating* dst, floating* dst_key, const floating* a,
                          const floating* a_key, const floating* b, const floating* b_key,
                          Py_ssize_t n, int mode) noexcept nogil:
    """``dst = a (+) b`` over ``n`` values, ``b`` being the later column (``dst`` may be ``a``).

    avg: sum. max/min: ``b`` wins when it beats ``a``, or ties with a smaller key (an earlier row).
    Keys are used only when ``dst_key`` is not NULL.
    """
    cdef Py_ssize_t c
    cdef floating val, best, new_key, held
    cdef bint wins
    if mode == AVG:
        for c in range(n):
            dst[c] = a[c] + b[c]
    elif dst_key == NULL:
        for c in range(n):
            val = b[c]
            best = a[c]
            dst[c] = val if _beats(val, best) else best
    else:
        for c in range(n):
            val = b[c]
            best = a[c]
            new_key = b_key[c]
            held = a_key[c]
            wins = _beats(val, best) | (_ties(val, best) & (new_key < held))
            dst[c] = val if wins else best
            dst_key[c] = new_key if wins else held


cdef inline void _slide(const floating* v, const floating* key, Geometry g, int mode,
                        floating* m, floating* m_key) noexcept nogil:
    """Slide a ``kw``-column window along the padded row ``v``: ``m[t]`` reduces ``v[t]``,
    ``v[t + C]``, ..., ``v[t + (kw - 1) * C]`` (keys likewise when ``key`` is not NULL).

    Output column ``ow`` reads ``m[ow * sw * C:][:C]``. Computing every column instead of every
    ``sw``-th keeps the loops long: short per-window loops would cost more than the extra work.
    """
    cdef Py_ssize_t j
    cdef Py_ssize_t span = ((g.Wo - 1) * g.sw + 1) * g.C
    if g.kw == 1:
        memcpy(m, v, span * sizeof(floating))
        if key != NULL:
            memcpy(m_key, key, span * sizeof(floating))
        return
    _combine(m, m_key, v, key, v + g.C, key + g.C if key != NULL else NULL, span, mode)
    for j in range(2, g.kw):
        _combine(m, m_key, m, m_key, v + j * g.C, key + j * g.C if key != NULL else NULL, span,
                 mode)


cdef inline void _fill_tables(Geometry g, floating* tables) noexcept nogil:
    """``tables[:Wo * C]``: real columns in the window of each output entry (avg divisors);
    ``tables[Wo * C:][t] = t`` for ``t < Wr * C``: flat offsets within a row (backward keys)."""
    cdef Py_ssize_t ow, c, t
    cdef Span cols
    cdef floating* cells = tables + g.Wo * g.C
    for ow in range(g.Wo):
        cols = _clip(ow, g.sw, g.kw, g.left, g.W)
        for c in range(g.C):
            tables[ow * g.C + c] = cols.hi - cols.lo
    for t in range(g.Wr * g.C):
        cells[t] = t


cdef void _forward_tiles(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y, Geometry g,
                         int mode, bint relu, int nt) noexcept:
    """The windows tile the input (see :func:`_tiles`): each thread pools one block of output
    rows with the vector kernels (``relu``: and applies the ReLU)."""
    cdef Py_ssize_t rows = x.shape[0] * g.Ho, blocks = min(nt, rows), k
    with nogil:
        for k in prange(blocks, num_threads=nt, schedule="static"):
            if floating is float:
                cnx_pool_tile_rows_f(&x[0, 0, 0, 0], g.H, g.W * g.C, g.kh, g.kw, g.C, g.Ho, g.Wo,
                                     k * rows // blocks, (k + 1) * rows // blocks, mode, relu,
                                     &y[0, 0, 0, 0])
            else:
                cnx_pool_tile_rows_d(&x[0, 0, 0, 0], g.H, g.W * g.C, g.kh, g.kw, g.C, g.Ho, g.Wo,
                                     k * rows // blocks, (k + 1) * rows // blocks, mode, relu,
                                     &y[0, 0, 0, 0])


cdef void _forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y, Geometry g,
                   int mode, floating[::1] tables, floating[:, ::1] scratch,
                   int nt) noexcept:
    """Pool ``x`` into ``y`` one output row per iteration; ``scratch`` holds 2 padded rows."""
    cdef Py_ssize_t r, n, oh, ow, t
    cdef Span rows
    cdef floating nrows
    cdef floating* v
    cdef floating* m
    cdef floating* out
    cdef const floating* ncols = &tables[0]
    with nogil:
        _fill_tables(g, &tables[0])
        for r in prange(x.shape[0] * g.Ho, num_threads=nt, schedule="static"):
            n = r // g.Ho
            oh = r % g.Ho
            v = &scratch[omp_get_thread_num(), 0]
            m = v + g.Wp * g.C
            rows = _clip(oh, g.sh, g.kh, g.top, g.H)
            out = &y[n, oh, 0, 0]
            _reduce_rows(&x[n, rows.lo, 0, 0], rows.hi - rows.lo, g, mode, NULL, v, NULL)
            _slide(v, NULL, g, mode, m, NULL)
            for ow in range(g.Wo):
                memcpy(out + ow * g.C, m + ow * g.sw * g.C, g.C * sizeof(floating))
            if mode == MIN:
                for t in range(g.Wo * g.C):
                    out[t] = -out[t]
            elif mode == AVG:
                nrows = rows.hi - rows.lo
                for t in range(g.Wo * g.C):
                    out[t] /= nrows * ncols[t]


cdef inline void _backward_row(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                               floating[:, :, :, ::1] dx, Py_ssize_t n, Py_ssize_t oh,
                               Geometry g, int mode, const floating* tables,
                               floating* scratch) noexcept nogil:
    """Add the gradients of output row ``(n, oh)`` into ``dx``; ``tables`` as filled by
    :func:`_fill_tables`, ``scratch`` holds 4 padded rows."""
    cdef Py_ssize_t ow, i, j, t
    cdef Py_ssize_t size = g.Wp * g.C
    cdef Span rows
    cdef floating nrows
    cdef const floating* grad = &dy[n, oh, 0, 0]
    cdef const floating* ncols = tables
    cdef const floating* cells = tables + g.Wo * g.C
    cdef floating* target
    cdef floating* spread = scratch
    cdef floating* share = scratch + size
    rows = _clip(oh, g.sh, g.kh, g.top, g.H)
    target = &dx[n, rows.lo, 0, 0]
    if mode == AVG:
        # share: dy / count at each window's first column; spread[t] = sum_j share[t - j * C]
        nrows = rows.hi - rows.lo
        memset(share, 0, size * sizeof(floating))
        for ow in range(g.Wo):
            for t in range(ow * g.C, (ow + 1) * g.C):
                share[ow * (g.sw - 1) * g.C + t] = grad[t] / (nrows * ncols[t])
        memcpy(spread, share, size * sizeof(floating))
        for j in range(1, g.kw):
            for t in range(j * g.C, size):
                spread[t] += share[t - j * g.C]
        for i in range(rows.hi - rows.lo):
            for t in range(g.Wr * g.C):
                target[i * g.W * g.C + t] += spread[g.left * g.C + t]
        return
    cdef floating* v = scratch
    cdef floating* key = v + size
    cdef floating* best = key + size
    cdef floating* best_key = best + size
    _reduce_rows(&x[n, rows.lo, 0, 0], rows.hi - rows.lo, g, mode, cells, v, key)
    _slide(v, key, g, mode, best, best_key)
    for ow in range(g.Wo):
        for t in range(g.C):
            target[<Py_ssize_t>best_key[ow * g.sw * g.C + t]] += grad[ow * g.C + t]


cdef void _backward_disjoint(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                             floating[:, :, :, ::1] dx, Geometry g, int mode,
                             floating[::1] tables, floating[:, ::1] scratch,
                             int nt) noexcept:
    """stride >= size: each output row owns a band of input rows; zero it, then add into it."""
    cdef Py_ssize_t r, n, oh, lo, hi
    with nogil:
        _fill_tables(g, &tables[0])
        for r in prange(x.shape[0] * g.Ho, num_threads=nt, schedule="static"):
            n = r // g.Ho
            oh = r % g.Ho
            lo = 0 if oh == 0 else oh * g.sh - g.top
            hi = g.H if oh == g.Ho - 1 else (oh + 1) * g.sh - g.top
            memset(&dx[n, lo, 0, 0], 0, (hi - lo) * g.W * g.C * sizeof(floating))
            _backward_row(x, dy, dx, n, oh, g, mode, &tables[0],
                          &scratch[omp_get_thread_num(), 0])


cdef void _backward_tiles(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                          floating[:, :, :, ::1] dx, Geometry g, int mode, bint relu,
                          int nt) noexcept:
    """stride == size and no padding: the windows tile the input, so each thread assigns the
    bands of ``kh`` input rows of one block of output rows directly (vector kernels); rows and
    columns no tile covers get zeros."""
    cdef Py_ssize_t rows = x.shape[0] * g.Ho, blocks = min(nt, rows), k, r0, r1, r, n, oh, i
    cdef Py_ssize_t covered = g.Wo * g.kw * g.C, row = g.W * g.C
    with nogil:
        for k in prange(blocks, num_threads=nt, schedule="static"):
            r0 = k * rows // blocks
            r1 = (k + 1) * rows // blocks
            if floating is float:
                cnx_pool_tile_grad_rows_f(&x[0, 0, 0, 0], &dy[0, 0, 0, 0], g.H, row, g.kh, g.kw,
                                          g.C, g.Ho, g.Wo, r0, r1, mode, relu, &dx[0, 0, 0, 0])
            else:
                cnx_pool_tile_grad_rows_d(&x[0, 0, 0, 0], &dy[0, 0, 0, 0], g.H, row, g.kh, g.kw,
                                          g.C, g.Ho, g.Wo, r0, r1, mode, relu, &dx[0, 0, 0, 0])
            for r in range(r0, r1):
                n = r // g.Ho
                oh = r % g.Ho
                if covered < row:
                    for i in range(g.kh):
                        memset(&dx[n, oh * g.kh + i, 0, 0] + covered, 0,
                               (row - covered) * sizeof(floating))
                if oh == g.Ho - 1 and g.Ho * g.kh < g.H:
                    memset(&dx[n, g.Ho * g.kh, 0, 0], 0,
                           (g.H - g.Ho * g.kh) * row * sizeof(floating))


cdef void _backward_overlapping(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                                floating[:, :, :, ::1] dx, Geometry g, int mode,
                                floating[::1] tables, floating[:, ::1] scratch,
                                int nt) noexcept:
    """stride < size: windows share cells, so each thread owns whole images of the batch."""
    cdef Py_ssize_t n, oh
    with nogil:
        _fill_tables(g, &tables[0])
        for n in prange(x.shape[0], num_threads=nt, schedule="static"):
            memset(&dx[n, 0, 0, 0], 0, g.H * g.W * g.C * sizeof(floating))
            for oh in range(g.Ho):
                _backward_row(x, dy, dx, n, oh, g, mode, &tables[0],
                              &scratch[omp_get_thread_num(), 0])


cdef Geometry _geometry(shape, size, stride, padding):
    """Sizes from the contract's arguments; output sizes as in :mod:`cnnext.shapes`."""
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


cdef bint _tiles(Geometry g) noexcept:
    """The windows tile the input: stride equal to the size, none reaching into padding."""
    return (g.sh == g.kh and g.sw == g.kw and g.Ho * g.kh <= g.H - g.top
            and g.Wo * g.kw <= g.W - g.left and g.top == 0 and g.left == 0)


def pool2d_forward(x, size, stride, padding, mode, out=None, relu=False):
    """Pool ``x (N, H, W, C)`` into ``y (N, Ho, Wo, C)`` (``out`` when given); ``relu`` (max and
    min): ``relu(pool(x))``, fused into the vector kernels when the windows tile the input.

    ``Ho = (H + top + bottom - size_h) // stride_h + 1`` (same for ``Wo``).
    """
    cdef Geometry g = _geometry(x.shape, size, stride, padding)
    cdef int code = _MODES[mode]
    cdef int nt = get_num_threads()
    y = output(out, (x.shape[0], g.Ho, g.Wo, g.C), x.dtype)
    if _tiles(g):
        if x.dtype == np.float32:
            _forward_tiles[float](x, y, g, code, relu, nt)
        else:
            _forward_tiles[double](x, y, g, code, relu, nt)
        return y
    tables = np.empty((g.Wo + g.Wr) * g.C, dtype=x.dtype)
    # one row per thread; 64 spare values keep threads off each other's cache lines
    scratch = np.empty((nt, 2 * g.Wp * g.C + 64), dtype=x.dtype)
    if x.dtype == np.float32:
        _forward[float](x, y, g, code, tables, scratch, nt)
    else:
        _forward[double](x, y, g, code, tables, scratch, nt)
    if relu:  # as the ReLU kernel: -0.0 and below become +0.0, NaN stays
        np.maximum(y, 0, out=y)
    return y


def pool2d_backward(dy, x, size, stride, padding, mode, out=None, relu=False):
    """Gradient ``dx (N, H, W, C)`` of pooling ``x`` given ``dy (N, Ho, Wo, C)`` (written into
    ``out`` when given); ``relu``: of ``relu(pool(x))``, each ``dy`` first multiplied by 1 or 0 as
    its window's extreme is > 0 or not.

    max/min send each output's gradient to the first extreme cell of its window (row-major);
    avg spreads it evenly over the window's real cells. Overlapping windows accumulate.
    """
    cdef Geometry g = _geometry(x.shape, size, stride, padding)
    cdef int code = _MODES[mode]
    cdef int nt = get_num_threads()
    cdef bint disjoint = g.sh >= g.kh and g.sw >= g.kw
    cdef bint tiles = _tiles(g)
    if x.dtype == np.float32 and (g.kh + 1) * g.W * g.C > 1 << 24:
        # cell keys (< (kh + 1) * W * C) would not all be exact in float32
        dx = pool2d_backward(dy.astype(np.float64), x.astype(np.float64), size, stride, padding,
                             mode, None, relu)
        return into(out, dx.astype(np.float32))
    dx = output(out, x.shape, x.dtype)
    if tiles:
        if x.dtype == np.float32:
            _backward_tiles[float](x, dy, dx, g, code, relu, nt)
        else:
            _backward_tiles[double](x, dy, dx, g, code, relu, nt)
        return dx
    if relu:
        dy = dy * (pool2d_forward(x, size, stride, padding, mode) > 0)
    tables = np.empty((g.Wo + g.Wr) * g.C, dtype=x.dtype)
    # one row per thread; 64 spare values keep threads off each other's cache lines
    scratch = np.empty((nt, 4 * g.Wp * g.C + 64), dtype=x.dtype)
    if x.dtype == np.float32:
        if disjoint:
            _backward_disjoint[float](x, dy, dx, g, code, tables, scratch, nt)
        else:
            _backward_overlapping[float](x, dy, dx, g, code, tables, scratch, nt)
    else:
        if disjoint:
            _backward_disjoint[double](x, dy, dx, g, code, tables, scratch, nt)
        else:
            _backward_overlapping[double](x, dy, dx, g, code, tables, scratch, nt)
    return dx
