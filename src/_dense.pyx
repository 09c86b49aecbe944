"""Compiled dense (fully connected) ops: ``y = x @ w + b`` and its gradients.

Both functions follow the backend contract in :mod:`cnnext.backend`: ``x (N, D)``, ``w (D, U)``,
``b (U,)`` or None, C-contiguous, one float dtype (float32 or float64).

The three matrix products (``x @ w``, ``x.T @ dy``, ``dy @ w.T``) run on the vector micro-kernel
of src/_dense_simd_kernels.h (register tiles of rows times two vectors of columns), compiled for
several instruction sets and picked at import time (:func:`simd_level`; ``CNNEXT_SIMD``
overrides it). ``x.T`` is read in place; ``w.T`` is copied once per backward call, in blocks of
one vector by one vector transposed in registers. The OpenMP threads split the rows of a product,
or its columns when there are too few rows. Each output value is summed by one thread in a fixed
order, so results do not depend on the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stddef cimport ptrdiff_t

import numpy as np

from cnnext._config import threads_for
from cnnext.workspace import output, scratch

cdef extern from "_dense_simd.h" nogil:
    ctypedef struct cnx_gemm_table_f:
        int lanes  # elements per vector
        int rows  # rows of a register tile at most
    ctypedef struct cnx_gemm_table_d:
        int lanes
        int rows
    cnx_gemm_table_f cnx_dense_f  # the selected kernels (see cnx_select)
    cnx_gemm_table_d cnx_dense_d
    const char* cnx_isa_name
    int cnx_select(const char* name)
    # columns [n0, n1) of c (m, ldc) = bias + a (m, K) b (K, ldb); a[i, p] at a[i*ars + p*acs]
    void cnx_gemm_f(const float* a, ptrdiff_t ars, ptrdiff_t acs, ptrdiff_t m, ptrdiff_t K,
                    const float* b, ptrdiff_t ldb, const float* bias, float* c, ptrdiff_t ldc,
                    ptrdiff_t n0, ptrdiff_t n1)
    void cnx_gemm_d(const double* a, ptrdiff_t ars, ptrdiff_t acs, ptrdiff_t m, ptrdiff_t K,
                    const double* b, ptrdiff_t ldb, const double* bias, double* c,
                    ptrdiff_t ldc, ptrdiff_t n0, ptrdiff_t n1)
    # wt (U, ldt) = w (D, U).T in its first D columns
    void cnx_transpose_f(const float* w, ptrdiff_t D, ptrdiff_t U, float* wt, ptrdiff_t ldt)
    void cnx_transpose_d(const double* w, ptrdiff_t D, ptrdiff_t U, double* wt, ptrdiff_t ldt)

include "_simd_level.pxi"

# below this many multiply-adds a product runs on one thread
PARALLEL_MIN = 1 << 16


cdef inline ptrdiff_t _width(bint single) noexcept nogil:
    """Columns of a register tile: two vectors."""
    return 2 * (cnx_dense_f.lanes if single else cnx_dense_d.lanes)


cdef inline ptrdiff_t _tile_bound(ptrdiff_t n, ptrdiff_t width, int t, int nt) noexcept nogil:
    """Where thread ``t``'s range of whole column tiles starts (``t = nt``: ``n``)."""
    cdef ptrdiff_t tiles = (n + width - 1) // width
    return min(n, tiles * t // nt * width)


cdef void _gemm(const floating* a, ptrdiff_t ars, ptrdiff_t acs, ptrdiff_t m, ptrdiff_t K,
                const floating* b, ptrdiff_t ldb, const floating* bias, floating* c, ptrdiff_t n,
                int t, int nt, bint by_rows) noexcept nogil:
    """Thread ``t``'s share of ``c (m, n) = bias + a b`` (see cnx_gemm_<f|d>): rows
    ``[m t / nt, m (t + 1) / nt)`` when ``by_rows``, else a range of whole column tiles."""
    cdef ptrdiff_t width = _width(floating is float), lo = 0, hi = n
    if by_rows:
        lo, hi = m * t // nt, m * (t + 1) // nt
        a, c, m = a + lo * ars, c + lo * n, hi - lo
        lo, hi = 0, n
    else:
        lo, hi = _tile_bound(n, width, t, nt), _tile_bound(n, width, t + 1, nt)
    if floating is float:
        cnx_gemm_f(a, ars, acs, m, K, b, ldb, bias, c, n, lo, hi)
    else:
        cnx_gemm_d(a, ars, acs, m, K, b, ldb, bias, c, n, lo, hi)


def _threads(ptrdiff_t m, ptrdiff_t n, ptrdiff_t K) -> tuple[int, bool]:
    """``(threads, by_rows)`` for a product of ``m * n * K`` multiply-adds: rows are split
    unless there are fewer than a register tile per thread and more than one column tile."""
    nt = threads_for(m * n * K, PARALLEL_MIN)
    return nt, m >= nt * cnx_dense_f.rows or n <= _width(True)


def _product(const floating[:, ::1] a, bint a_transposed, const floating[:, ::1] b,
             const floating[::1] bias, floating[:, ::1] c):
    """``c (m, n) = bias + A @ b`` with ``A = a.T`` when ``a_transposed``, else ``a``; ``b``
    (K, ldb) and ``bias`` (ldb,) or None have ldb >= max(n, lanes) readable columns."""
    cdef ptrdiff_t m = c.shape[0], n = c.shape[1], K = b.shape[0]
    cdef ptrdiff_t ars = 1 if a_transposed else a.shape[1]
    cdef ptrdiff_t acs = a.shape[1] if a_transposed else 1
    cdef const floating* bp = &bias[0] if bias is not None else NULL
    cdef int t, nt
    cdef bint by_rows
    nt, by_rows = _threads(m, n, K)
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static"):
        _gemm(&a[0, 0], ars, acs, m, K, &b[0, 0], b.shape[1], bp, &c[0, 0], n, t, nt, by_rows)


def _product_transposed(const floating[:, ::1] a, const floating[:, ::1] w, floating[:, ::1] wt,
                        floating[:, ::1] c):
    """``c (m, D) = a (m, U) @ w.T`` for ``w (D, U)``, with ``w.T`` first written into ``wt``
    (U, >= max(D, lanes)) by the same threads. Thread t transposes the rows of ``w`` for column
    tile range t of ``c`` and then computes that range (mostly reading what it wrote), or, with
    too few column tiles, a range of rows (reading all of ``wt``): two parallel loops, so every
    thread waits for the whole transpose."""
    cdef ptrdiff_t m = c.shape[0], D = w.shape[0], U = w.shape[1], width = _width(floating is float)
    cdef ptrdiff_t lo, hi
    cdef int t, nt
    cdef bint by_rows
    nt = _threads(m, D, U)[0]
    by_rows = (D + width - 1) // width < nt
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static"):
        lo, hi = _tile_bound(D, width, t, nt), _tile_bound(D, width, t + 1, nt)
        if floating is float:
            cnx_transpose_f(&w[0, 0] + lo * U, hi - lo, U, &wt[0, 0] + lo, wt.shape[1])
        else:
            cnx_transpose_d(&w[0, 0] + lo * U, hi - lo, U, &wt[0, 0] + lo, wt.shape[1])
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static"):
        _gemm(&a[0, 0], U, 1, m, U, &wt[0, 0], wt.shape[1], NULL, &c[0, 0], D, t, nt, by_rows)


def _column_sums(const floating[:, ::1] dy, floating[::1] db):
    """``db = dy.sum(axis=0)``, rows added in order."""
    cdef ptrdiff_t i, j
    with nogil:
        db[:] = 0
        for i in range(dy.shape[0]):
            for j in range(dy.shape[1]):
                db[j] += dy[i, j]


def _lanes(dtype) -> int:
    return cnx_dense_f.lanes if dtype == np.float32 else cnx_dense_d.lanes


def _readable(v, name: str):
    """``v (K, n)`` or ``(n,)``, or a zero-padded scratch copy ``(K, lanes)`` or ``(lanes,)``
    when ``n`` is under one vector: every kernel load reads a whole vector of columns."""
    L = _lanes(v.dtype)
    if v.shape[v.ndim - 1] >= L:
        return v
    padded = scratch(name, v.shape[: v.ndim - 1] + (L,), v.dtype, zero=True)
    padded[..., : v.shape[v.ndim - 1]] = v
    return padded


def dense_forward(x, w, b, out=None):
    """``y (N, U) = x (N, D) @ w (D, U) + b (U,)`` (no bias when ``b`` is None), written into
    ``out`` when given."""
    y = output(out, (x.shape[0], w.shape[1]), x.dtype)
    bias = None if b is None else _readable(b, "dense_bias")
    _product(x, False, _readable(w, "dense_w"), bias, y)
    return y


def dense_backward(dy, x, w, input_grad=True, out=None):
    """Gradients ``(dx (N, D), dw (D, U), db (U,))`` of :func:`dense_forward` given
    ``dy (N, U)``; ``dx`` is None when ``input_grad`` is False, else written into ``out`` when
    given."""
    D, U = w.shape
    dw = np.empty((D, U), dtype=x.dtype)
    _product(x, True, _readable(dy, "dense_dy"), None, dw)
    db = np.empty(U, dtype=x.dtype)
    _column_sums(dy, db)
    if not input_grad:
        return None, dw, db
    dx = output(out, x.shape, x.dtype)
    wt = scratch("dense_wt", (U, max(D, _lanes(w.dtype))), w.dtype, zero=D < _lanes(w.dtype))
    _product_transposed(dy, w, wt, dx)
    return dx, dw, db
