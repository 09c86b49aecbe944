# libm at the precision of a fused ``floating`` argument: the float versions (``sqrtf``...) for
# float, so float32 kernels round as NumPy's float32 ufuncs do rather than going through double.
from cython cimport floating
from libc.math cimport exp, expf, fabs, fabsf, log, logf, sqrt, sqrtf


cdef inline floating typed_sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating typed_fabs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating typed_exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating typed_log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)
