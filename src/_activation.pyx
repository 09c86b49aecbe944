"""Compiled element-wise ReLU and its gradient.

Follows the backend contract in :mod:`cnnext.backend`: C-contiguous float32/float64 arrays of any
shape, treated as flat. Results equal the NumPy twin's bit for bit: ``max(z, 0)`` keeps a NaN and
turns ``-0.0`` into ``0.0`` (as ``np.maximum(z, 0)``), and the gradient is ``dy * (z > 0)`` (so a
NaN or infinite ``dy`` where ``z <= 0`` still gives NaN, as the product does). Arrays below
``PARALLEL_MIN`` values run on one thread.
"""
from cython cimport floating
from cython.parallel cimport prange

import numpy as np

from cnnext._config import threads_for
from cnnext.workspace import output

# below this many values, starting the thread team costs more than it saves
PARALLEL_MIN = 1 << 15


cdef void _forward(const floating[::1] z, floating[::1] y, int nt) noexcept nogil:
    cdef Py_ssize_t i
    for i in prange(z.shape[0], num_threads=nt, schedule="static"):
        y[i] = 0 if z[i] <= 0 else z[i]


cdef void _backward(const floating[::1] dy, const floating[::1] z, floating[::1] dz,
                    int nt) noexcept nogil:
    cdef Py_ssize_t i
    for i in prange(z.shape[0], num_threads=nt, schedule="static"):
        dz[i] = dy[i] * (1 if z[i] > 0 else 0)


def relu_forward(z, out=None):
    """``y = max(z, 0)``, same shape as ``z`` (written into ``out`` when given)."""
    y = output(out, z.shape, z.dtype)
    nt = threads_for(z.size, PARALLEL_MIN)
    if z.dtype == np.float32:
        _forward[float](z.reshape(-1), y.reshape(-1), nt)
    else:
        _forward[double](z.reshape(-1), y.reshape(-1), nt)
    return y


def relu_backward(dy, z, out=None):
    """``dz = dy * (z > 0)`` for ``dy`` and ``z`` of one shape (written into ``out`` when given)."""
    dz = output(out, dy.shape, dy.dtype)
    nt = threads_for(z.size, PARALLEL_MIN)
    if dy.dtype == np.float32:
        _backward[float](dy.reshape(-1), z.reshape(-1), dz.reshape(-1), nt)
    else:
        _backward[double](dy.reshape(-1), z.reshape(-1), dz.reshape(-1), nt)
    return dz
