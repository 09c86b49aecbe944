"""Compiled softmax over the last axis, and the fused softmax cross-entropy of a training step.

Follows the backend contract in :mod:`cnnext.backend`. Each row is done in one place,
:func:`_softmax_row`, so the fused loss's probabilities equal :func:`softmax_forward`'s bit for
bit, as the model needs (it takes its training output from the loss and its ``predict`` output
from the activation). Per row: ``m = max(z)`` (NaN if the row holds one, as ``np.max``),
``e = exp(z - m)``, ``p = e / sum(e)`` with the sum taken left to right. The NumPy twin computes
the same expressions with NumPy's ``exp`` and summation, so the two agree to a few units in the
last place. Rows are few and short in practice (a batch of class scores), so this runs on one
thread; a single call replaces about fifteen NumPy calls of the twin.
"""
from cython cimport floating
from _typed_math cimport typed_exp, typed_log

import numpy as np

from cnnext.workspace import output


cdef floating _softmax_row(const floating* z, floating* p, Py_ssize_t K,
                           floating* total) noexcept nogil:
    """``p`` (K values, may be ``z``) = softmax of the row ``z``; returns the row maximum ``m``
    and sets ``total`` to ``sum(exp(z - m))``."""
    cdef Py_ssize_t j
    cdef floating m = z[0], s = 0
    for j in range(1, K):
        if z[j] > m or z[j] != z[j]:  # a NaN sticks: no comparison with it is true
            m = z[j]
    for j in range(K):
        p[j] = typed_exp(z[j] - m)
        s = s + p[j]
    for j in range(K):
        p[j] = p[j] / s
    total[0] = s
    return m


cdef void _softmax(const floating[:, ::1] z, floating[:, ::1] p) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating total
    for i in range(z.shape[0]):
        _softmax_row(&z[i, 0], &p[i, 0], z.shape[1], &total)


cdef double _cross_entropy_ids(const floating[:, ::1] z, const Py_ssize_t[::1] t,
                               floating scale, floating[:, ::1] p,
                               floating[:, ::1] dz) noexcept nogil:
    """Sum over rows of ``log p[t]`` from the shifted logits; ``dz = (p - onehot(t)) * scale``."""
    cdef Py_ssize_t i, j
    cdef floating m, total
    cdef double log_likelihood = 0
    for i in range(z.shape[0]):
        m = _softmax_row(&z[i, 0], &p[i, 0], z.shape[1], &total)
        log_likelihood += (z[i, t[i]] - m) - typed_log(total)
        for j in range(z.shape[1]):
            dz[i, j] = (p[i, j] - (1 if j == t[i] else 0)) * scale
    return log_likelihood


cdef double _cross_entropy_rows(const floating[:, ::1] z, const floating[:, ::1] t,
                                floating scale, floating[:, ::1] p,
                                floating[:, ::1] dz) noexcept nogil:
    """Sum over rows of ``sum(t * log p)`` from the shifted logits; ``dz = (p - t) * scale``."""
    cdef Py_ssize_t i, j
    cdef floating m, total, log_total
    cdef double log_likelihood = 0
    for i in range(z.shape[0]):
        m = _softmax_row(&z[i, 0], &p[i, 0], z.shape[1], &total)
        log_total = typed_log(total)
        for j in range(z.shape[1]):
            log_likelihood += t[i, j] * ((z[i, j] - m) - log_total)
            dz[i, j] = (p[i, j] - t[i, j]) * scale
    return log_likelihood


def softmax_forward(z, out=None):
    """``y``, the softmax of ``z`` over its last axis (written into ``out`` when given)."""
    y = output(out, z.shape, z.dtype)
    K = z.shape[z.ndim - 1]
    z2, y2 = z.reshape(-1, K), y.reshape(-1, K)
    if z.dtype == np.float32:
        _softmax[float](z2, y2)
    else:
        _softmax[double](z2, y2)
    return y


cdef Py_ssize_t _first_bad_id(const Py_ssize_t[::1] t, Py_ssize_t K) noexcept nogil:
    """The first row whose class id is not in ``[0, K)``, or -1."""
    cdef Py_ssize_t i
    for i in range(t.shape[0]):
        if not 0 <= t[i] < K:
            return i
    return -1


def softmax_cross_entropy(z, t):
    """``(loss, dz, p)`` for logits ``z (N, K)`` and class ids ``t (N,)`` or target rows
    ``t (N, K)``: ``p = softmax_forward(z)``, ``loss`` the mean over rows of ``-log p[t]`` (or
    ``-sum(t * log p)``) and ``dz = (p - onehot(t)) / N`` (or ``(p - t) / N``). A class id out of
    range raises IndexError (the kernels never read outside ``z``)."""
    n, K = z.shape
    scale = 1.0 / n
    p, dz = np.empty_like(z), np.empty_like(z)
    if t.ndim == 1:
        t = np.ascontiguousarray(t, dtype=np.intp)
        bad = _first_bad_id(t, K)
        if bad >= 0:
            raise IndexError(f"class id {t[bad]} (row {bad}) is out of range for {K} classes")
        if z.dtype == np.float32:
            log_likelihood = _cross_entropy_ids[float](z, t, scale, p, dz)
        else:
            log_likelihood = _cross_entropy_ids[double](z, t, scale, p, dz)
    else:
        t = np.ascontiguousarray(t, dtype=z.dtype)
        if z.dtype == np.float32:
            log_likelihood = _cross_entropy_rows[float](z, t, scale, p, dz)
        else:
            log_likelihood = _cross_entropy_rows[double](z, t, scale, p, dz)
    return -log_likelihood / n, dz, p
