# distutils: extra_compile_args = -fno-math-errno -ffp-contract=off
"""Compiled optimizer updates: one fused pass over a parameter, its gradient and its slots.

Follows the backend contract in :mod:`cnnext.backend`: C-contiguous arrays of one float dtype and
one shape, treated as flat, updated in place. Each value goes through the same operations, in the
same order and precision, as in the NumPy twin (the coefficients are rounded to the arrays' dtype
first, as NumPy does with Python floats), so results are equal bit for bit: the module is compiled
without contracting multiply-adds (``-ffp-contract=off``, whatever the build's other flags) and
with ``-fno-math-errno``, which lets the loops use vector square roots and divisions (a scalar loop
also took about four times as long as the twin once Adam's moments decayed into subnormal
numbers). The twin makes four to ten passes over memory per parameter; these make one. Slot
values below the smallest normal number are stored as zero, as in the twin (see
:mod:`cnnext.optimizers`). Arrays below ``PARALLEL_MIN`` values run on one thread.
"""
import math

from cython cimport floating
from cython.parallel cimport prange
from libc.float cimport DBL_MIN, FLT_MIN

from _typed_math cimport typed_fabs, typed_sqrt

from cnnext._config import threads_for

# below this many values, starting the thread team costs more than it saves
PARALLEL_MIN = 1 << 15


cdef inline floating _flushed(floating x) noexcept nogil:
    """``x``, or 0 where ``|x|`` is below the smallest normal number of its precision (a NaN
    stays): the value stored in an optimizer slot."""
    cdef floating smallest = FLT_MIN if floating is float else DBL_MIN
    return 0 if typed_fabs(x) < smallest else x


cdef void _sgd(floating[::1] p, const floating[::1] g, floating[::1] b, floating lr,
               floating mu, floating wd, bint has_buf, bint nesterov, int nt) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, bi
    for i in prange(p.shape[0], num_threads=nt, schedule="static"):
        gi = g[i]
        if wd != 0:
            gi = gi + wd * p[i]
        if has_buf:
            bi = _flushed(mu * b[i] + gi)
            b[i] = bi
            gi = gi + mu * bi if nesterov else bi
        p[i] = p[i] - lr * gi


cdef void _adam(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
                floating step, floating b1, floating c1, floating b2, floating c2,
                floating unbias2, floating eps, floating wd, floating decay,
                int nt) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi, pi
    for i in prange(p.shape[0], num_threads=nt, schedule="static"):
        pi = p[i]
        gi = g[i]
        if decay != 1:
            pi = pi * decay
        if wd != 0:
            gi = gi + wd * pi
        mi = _flushed(b1 * m[i] + c1 * gi)
        vi = _flushed(b2 * v[i] + c2 * (gi * gi))
        m[i] = mi
        v[i] = vi
        p[i] = pi - step * (mi / (typed_sqrt(vi) * unbias2 + eps))


cdef void _rmsprop(floating[::1] p, const floating[::1] g, floating[::1] sq, floating[::1] avg,
                   floating[::1] b, floating lr, floating rho, floating c, floating mu,
                   floating eps, floating wd, bint centered, bint has_buf,
                   int nt) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, si, ai, di, bi
    for i in prange(p.shape[0], num_threads=nt, schedule="static"):
        gi = g[i]
        if wd != 0:
            gi = gi + wd * p[i]
        si = _flushed(rho * sq[i] + c * (gi * gi))
        sq[i] = si
        if centered:
            ai = _flushed(rho * avg[i] + c * gi)
            avg[i] = ai
            di = typed_sqrt(si - ai * ai) + eps
        else:
            di = typed_sqrt(si) + eps
        if has_buf:
            bi = _flushed(mu * b[i] + gi / di)
            b[i] = bi
            p[i] = p[i] - lr * bi
        else:
            p[i] = p[i] - lr * (gi / di)


def _flat(a):
    return None if a is None else a.reshape(-1)


def sgd_update(param, grad, buf, lr, momentum, nesterov, weight_decay):
    """In place: ``g = grad + weight_decay * param``; with a momentum buffer ``buf`` (None
    without momentum) ``buf = momentum * buf + g`` and ``g = g + momentum * buf`` (Nesterov) or
    ``buf``; ``param -= lr * g``."""
    p, g, b = param.reshape(-1), grad.reshape(-1), _flat(buf)
    nt = threads_for(param.size, PARALLEL_MIN)
    if p.dtype.char == "f":
        _sgd[float](p, g, p if b is None else b, lr, momentum, weight_decay, b is not None,
                    nesterov, nt)
    else:
        _sgd[double](p, g, p if b is None else b, lr, momentum, weight_decay, b is not None,
                     nesterov, nt)


def adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, weight_decay, decoupled, t):
    """In place, update ``t`` (from 1): ``param *= 1 - lr * weight_decay`` when ``decoupled``,
    else ``g = grad + weight_decay * param``; ``m = beta_1 m + (1 - beta_1) g``,
    ``v = beta_2 v + (1 - beta_2) g^2``;
    ``param -= lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)``."""
    decay, wd = (1.0 - lr * weight_decay, 0.0) if decoupled else (1.0, weight_decay)
    args = (lr / (1.0 - beta_1 ** t), beta_1, 1.0 - beta_1, beta_2, 1.0 - beta_2,
            1.0 / math.sqrt(1.0 - beta_2 ** t), epsilon, wd, decay,
            threads_for(param.size, PARALLEL_MIN))
    p, g, m, v = param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1)
    if p.dtype.char == "f":
        _adam[float](p, g, m, v, *args)
    else:
        _adam[double](p, g, m, v, *args)


def rmsprop_update(param, grad, square_avg, grad_avg, buf, lr, rho, momentum, epsilon,
                   weight_decay):
    """In place: ``g = grad + weight_decay * param``; ``s = rho s + (1 - rho) g^2``;
    ``a = sqrt(s - c^2) + epsilon`` with ``c = rho c + (1 - rho) g`` when ``grad_avg`` is given
    (centered), else ``sqrt(s) + epsilon``; with a momentum buffer ``buf``
    ``buf = momentum buf + g / a`` and ``param -= lr * buf``, else ``param -= lr * g / a``."""
    p, g, s = param.reshape(-1), grad.reshape(-1), square_avg.reshape(-1)
    c, b, nt = _flat(grad_avg), _flat(buf), threads_for(param.size, PARALLEL_MIN)
    args = (lr, rho, 1.0 - rho, momentum, epsilon, weight_decay, c is not None, b is not None, nt)
    if p.dtype.char == "f":
        _rmsprop[float](p, g, s, s if c is None else c, p if b is None else b, *args)
    else:
        _rmsprop[double](p, g, s, s if c is None else c, p if b is None else b, *args)
