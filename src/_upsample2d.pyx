"""Compiled nearest-neighbour 2-D upsampling over channels-last tensors.

Follows the backend contract in :mod:`cnnext.backend`: ``x`` is a C-contiguous ``(N, H, W, C)``
float32/float64 array and ``scale`` is ``(sh, sw)``. Work is split over the ``N * H`` input rows;
each input row owns ``sh`` output rows, so threads never write the same memory.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

import numpy as np

from _openmp cimport omp_get_thread_num
from cnnext._config import get_num_threads
from cnnext.workspace import output


cdef void _forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                   Py_ssize_t sh, Py_ssize_t sw, int nt) noexcept:
    """Widen each input row into the first of its ``sh`` output rows, then copy that row down."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t r, n, h, w, j, c, i
    cdef Py_ssize_t out_row = W * sw * C
    cdef const floating* src
    cdef floating* dst
    with nogil:
        for r in prange(x.shape[0] * H, num_threads=nt, schedule="static"):
            n = r // H
            h = r % H
            src = &x[n, h, 0, 0]
            dst = &y[n, h * sh, 0, 0]
            for w in range(W):
                for j in range(sw):
                    for c in range(C):
                        dst[(w * sw + j) * C + c] = src[w * C + c]
            for i in range(1, sh):
                memcpy(dst + i * out_row, dst, out_row * sizeof(floating))


cdef void _backward(const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
                    Py_ssize_t sh, Py_ssize_t sw, floating[:, ::1] scratch, int nt) noexcept:
    """Sum each block of ``dy`` into ``dx``; ``scratch`` holds one gradient row per thread."""
    cdef Py_ssize_t H = dx.shape[1], W = dx.shape[2], C = dx.shape[3]
    cdef Py_ssize_t r, n, h, w, j, c, i, t
    cdef Py_ssize_t grad_row = W * sw * C
    cdef const floating* src
    cdef const floating* block
    cdef floating* rows
    cdef floating* dst
    with nogil:
        for r in prange(dx.shape[0] * H, num_threads=nt, schedule="static"):
            n = r // H
            h = r % H
            src = &dy[n, h * sh, 0, 0]
            dst = &dx[n, h, 0, 0]
            # sum the sh gradient rows (contiguous, vectorised), then the sw columns of each block
            rows = &scratch[omp_get_thread_num(), 0]
            memcpy(rows, src, grad_row * sizeof(floating))
            for i in range(1, sh):
                for t in range(grad_row):
                    rows[t] += src[i * grad_row + t]
            for w in range(W):
                block = rows + w * sw * C
                for c in range(C):
                    dst[w * C + c] = block[c]
                for j in range(1, sw):
                    for c in range(C):
                        dst[w * C + c] += block[j * C + c]


def upsample2d_forward(x, scale, out=None):
    """Repeat each pixel of ``x (N, H, W, C)`` into an ``sh x sw`` block: ``(N, H*sh, W*sw, C)``
    (written into ``out`` when given)."""
    cdef Py_ssize_t sh = scale[0], sw = scale[1]
    cdef int nt = get_num_threads()
    n, h, w, c = x.shape
    y = output(out, (n, h * sh, w * sw, c), x.dtype)
    if x.dtype == np.float32:
        _forward[float](x, y, sh, sw, nt)
    else:
        _forward[double](x, y, sh, sw, nt)
    return y


def upsample2d_backward(dy, scale, out=None):
    """Sum ``dy (N, H*sh, W*sw, C)`` over each ``sh x sw`` block: ``dx (N, H, W, C)`` (written
    into ``out`` when given)."""
    cdef Py_ssize_t sh = scale[0], sw = scale[1]
    cdef int nt = get_num_threads()
    n, ho, wo, c = dy.shape
    dx = output(out, (n, ho // sh, wo // sw, c), dy.dtype)
    # one row per thread; 64 spare values keep threads off each other's cache lines
    scratch = np.empty((nt, wo * c + 64), dtype=dy.dtype)
    if dy.dtype == np.float32:
        _backward[float](dy, dx, sh, sw, scratch, nt)
    else:
        _backward[double](dy, dx, sh, sw, scratch, nt)
    return dx
