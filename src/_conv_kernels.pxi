# Convolution drivers, included by _conv2d.pyx: OpenMP loops over typed memoryviews (fused
# float32/float64) that call the vector micro-kernels of _conv_simd.h, plus im2col/col2im for the
# GEMM path. Kept in one file so that SIMD build variants can compile the same code with other
# target flags.
#
# Layout: activations (N, H, W, C), weights (KH, KW, C, F), everything C-contiguous. Direct
# kernels read a zero-padded input and weights packed to (KH, KW, C, Fp), Fp a multiple of the
# vector lanes. A kernel row's taps (kw, c) are addressed through `toff`: toff[t] is the element
# offset of tap t = kw * C + c from a window's first cell, zero-padded to a multiple of CNX_RB.
from cython cimport floating
from cython.parallel cimport prange
from libc.stddef cimport ptrdiff_t
from libc.string cimport memcpy, memset

from _openmp cimport omp_get_thread_num

cdef extern from "_conv_simd.h" nogil:
    ctypedef struct cnx_table_f:
        int lanes  # elements per vector
        int vbytes  # bytes per vector
        int rb  # register block of the channel-lane kernels (pixels or taps)
        int qb  # vectors per block of the pixel-lane kernels
        int (*block_items)(int nf, ptrdiff_t n)  # register-block size for nf vectors, n items
        int slide_kh  # the tallest kernel of cnx_input_grad_slide
    ctypedef struct cnx_table_d:
        int lanes
    cnx_table_f cnx_f  # the selected kernels (see cnx_select)
    cnx_table_d cnx_d
    const char* cnx_isa_name
    int cnx_select(const char* name)
    void cnx_direct_rows_f(const float* x, ptrdiff_t row_step, ptrdiff_t nrows,
                           ptrdiff_t kh_step, ptrdiff_t KH, ptrdiff_t pix, const Py_ssize_t* toff,
                           ptrdiff_t ntaps, const float* w, ptrdiff_t Fp, const float* bias,
                           float* y, ptrdiff_t Wo, ptrdiff_t F, ptrdiff_t C)
    void cnx_direct_rows_d(const double* x, ptrdiff_t row_step, ptrdiff_t nrows,
                           ptrdiff_t kh_step, ptrdiff_t KH, ptrdiff_t pix, const Py_ssize_t* toff,
                           ptrdiff_t ntaps, const double* w, ptrdiff_t Fp, const double* bias,
                           double* y, ptrdiff_t Wo, ptrdiff_t F, ptrdiff_t C)
    void cnx_weight_grad_f(const float* x, ptrdiff_t row_step, ptrdiff_t pix,
                           const Py_ssize_t* toff, ptrdiff_t ntaps, const float* dy, ptrdiff_t Ho,
                           ptrdiff_t Wo, ptrdiff_t Fp, float* dw)
    void cnx_weight_grad_d(const double* x, ptrdiff_t row_step, ptrdiff_t pix,
                           const Py_ssize_t* toff, ptrdiff_t ntaps, const double* dy,
                           ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t Fp, double* dw)
    void cnx_planar_conv_f(const float* inp, ptrdiff_t plane, ptrdiff_t Cin,
                           const Py_ssize_t* qoff, ptrdiff_t ntaps, const float* w,
                           ptrdiff_t Cout, ptrdiff_t co, ptrdiff_t nco, float* out,
                           ptrdiff_t oplane, ptrdiff_t nq, ptrdiff_t pitch, ptrdiff_t KH,
                           ptrdiff_t dh, ptrdiff_t dw)
    void cnx_planar_conv_d(const double* inp, ptrdiff_t plane, ptrdiff_t Cin,
                           const Py_ssize_t* qoff, ptrdiff_t ntaps, const double* w,
                           ptrdiff_t Cout, ptrdiff_t co, ptrdiff_t nco, double* out,
                           ptrdiff_t oplane, ptrdiff_t nq, ptrdiff_t pitch, ptrdiff_t KH,
                           ptrdiff_t dh, ptrdiff_t dw)
    void cnx_planar_weight_grad_f(const float* inp, ptrdiff_t plane, ptrdiff_t Cin,
                                  const Py_ssize_t* qoff, ptrdiff_t ntaps, const float* dy,
                                  ptrdiff_t nq, ptrdiff_t nf, float* dw, float* db)
    void cnx_planar_weight_grad_d(const double* inp, ptrdiff_t plane, ptrdiff_t Cin,
                                  const Py_ssize_t* qoff, ptrdiff_t ntaps, const double* dy,
                                  ptrdiff_t nq, ptrdiff_t nf, double* dw, double* db)
    void cnx_span_weight_grad_f(const float* x, ptrdiff_t x_step, ptrdiff_t row_step,
                                ptrdiff_t pix, const float* dy, ptrdiff_t ns, ptrdiff_t Ho,
                                ptrdiff_t Wo, ptrdiff_t F, ptrdiff_t span, float* dwt,
                                ptrdiff_t ldw)
    void cnx_channel_sums_f(const float* dy, ptrdiff_t npix, ptrdiff_t F, float* db)
    void cnx_span_weight_grad_d(const double* x, ptrdiff_t x_step, ptrdiff_t row_step,
                                ptrdiff_t pix, const double* dy, ptrdiff_t ns, ptrdiff_t Ho,
                                ptrdiff_t Wo, ptrdiff_t F, ptrdiff_t span, double* dwt,
                                ptrdiff_t ldw)
    void cnx_channel_sums_d(const double* dy, ptrdiff_t npix, ptrdiff_t F, double* db)
    void cnx_input_grad_rows_f(const float** dy_rows, ptrdiff_t nk, const Py_ssize_t* khs,
                               float** dx_rows, ptrdiff_t nr, ptrdiff_t Wo, ptrdiff_t F,
                               const float* wt, ptrdiff_t Sp, ptrdiff_t span, ptrdiff_t pix)
    void cnx_input_grad_rows_d(const double** dy_rows, ptrdiff_t nk, const Py_ssize_t* khs,
                               double** dx_rows, ptrdiff_t nr, ptrdiff_t Wo, ptrdiff_t F,
                               const double* wt, ptrdiff_t Sp, ptrdiff_t span, ptrdiff_t pix)
    void cnx_input_grad_slide_f(const float* dy, ptrdiff_t dy_row, ptrdiff_t Ho, ptrdiff_t Wo,
                                ptrdiff_t F, const float* wt, ptrdiff_t KH, ptrdiff_t Sp,
                                ptrdiff_t span, ptrdiff_t pix, float* dx, ptrdiff_t pitch)
    void cnx_input_grad_slide_d(const double* dy, ptrdiff_t dy_row, ptrdiff_t Ho, ptrdiff_t Wo,
                                ptrdiff_t F, const double* wt, ptrdiff_t KH, ptrdiff_t Sp,
                                ptrdiff_t span, ptrdiff_t pix, double* dx, ptrdiff_t pitch)
    bint cnx_has_expanded()  # the expanded-row kernels below exist (AVX-512)
    void cnx_expanded_conv_f(const float* x, ptrdiff_t row_step, ptrdiff_t C, ptrdiff_t KH,
                             ptrdiff_t KW, ptrdiff_t F, const float* wt, const float* bt,
                             float* y, ptrdiff_t Ho, ptrdiff_t Wo)
    void cnx_expanded_conv_d(const double* x, ptrdiff_t row_step, ptrdiff_t C, ptrdiff_t KH,
                             ptrdiff_t KW, ptrdiff_t F, const double* wt, const double* bt,
                             double* y, ptrdiff_t Ho, ptrdiff_t Wo)
    void cnx_expanded_weight_grad_f(const float* x, ptrdiff_t row_step, ptrdiff_t C,
                                    ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t F, const float* dy,
                                    ptrdiff_t Ho, ptrdiff_t Wo, float* dwacc, float* dbacc)
    void cnx_expanded_weight_grad_d(const double* x, ptrdiff_t row_step, ptrdiff_t C,
                                    ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t F, const double* dy,
                                    ptrdiff_t Ho, ptrdiff_t Wo, double* dwacc, double* dbacc)


cdef inline Py_ssize_t _imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline floating _relu(floating v) noexcept nogil:
    """``max(v, 0)`` as the ReLU op computes it (a NaN stays, -0.0 becomes 0.0)."""
    return 0 if v <= 0 else v


cdef inline void _relu_in_place(floating* v, Py_ssize_t n) noexcept nogil:
    """``v[:n] = max(v[:n], 0)`` (see :func:`_relu`)."""
    cdef Py_ssize_t i
    for i in range(n):
        v[i] = _relu(v[i])


# output channels per task of the planar convolution: each input vector it loads feeds them all
cdef enum:
    PLANAR_GROUP = 8


cdef inline void _direct_rows(const floating* x, Py_ssize_t row_step, Py_ssize_t nrows,
                              Py_ssize_t kh_step, Py_ssize_t KH, Py_ssize_t pix,
                              const Py_ssize_t* toff, Py_ssize_t ntaps, const floating* w,
                              Py_ssize_t Fp, const floating* bias, floating* y, Py_ssize_t Wo,
                              Py_ssize_t F, Py_ssize_t C) noexcept nogil:
    if floating is float:
        cnx_direct_rows_f(x, row_step, nrows, kh_step, KH, pix, toff, ntaps, w, Fp, bias, y, Wo,
                          F, C)
    else:
        cnx_direct_rows_d(x, row_step, nrows, kh_step, KH, pix, toff, ntaps, w, Fp, bias, y, Wo,
                          F, C)


cdef inline void _weight_grad_sample(const floating* x, Py_ssize_t row_step, Py_ssize_t pix,
                                     const Py_ssize_t* toff, Py_ssize_t ntaps,
                                     const floating* dy, Py_ssize_t Ho, Py_ssize_t Wo,
                                     Py_ssize_t Fp, floating* dw) noexcept nogil:
    if floating is float:
        cnx_weight_grad_f(x, row_step, pix, toff, ntaps, dy, Ho, Wo, Fp, dw)
    else:
        cnx_weight_grad_d(x, row_step, pix, toff, ntaps, dy, Ho, Wo, Fp, dw)


cdef inline void _input_grad_block(const floating* dy, Py_ssize_t Ho, Py_ssize_t Wo,
                                   Py_ssize_t F, const floating* wt, Py_ssize_t Sp,
                                   Py_ssize_t span, const Py_ssize_t* khs, Py_ssize_t nk,
                                   const Py_ssize_t* block, Py_ssize_t nr, Py_ssize_t rb,
                                   Py_ssize_t sh, Py_ssize_t pix, Py_ssize_t dh, Py_ssize_t top,
                                   Py_ssize_t left, const floating** dy_rows, floating* buf,
                                   Py_ssize_t pitch, floating* dx, Py_ssize_t H, Py_ssize_t W,
                                   Py_ssize_t C) noexcept nogil:
    """Input-gradient rows ``block (rb, 2)`` (sample, row; the first ``nr`` are stored), all
    reached through the kernel rows ``khs[:nk]``: gathered into the padded rows
    ``buf (nr, pitch)``, then cropped into ``dx (N, H, W, C)``."""
    cdef floating* dx_rows[16]  # nr <= rb <= 16 (the register block)
    cdef Py_ssize_t r, j, n, ih
    memset(buf, 0, nr * pitch * sizeof(floating))
    for r in range(rb):
        n = block[2 * r]
        ih = block[2 * r + 1]
        for j in range(nk):
            dy_rows[r * nk + j] = dy + (n * Ho + (ih + top - khs[j] * dh) // sh) * Wo * F
    for r in range(nr):
        dx_rows[r] = buf + r * pitch
    if floating is float:
        cnx_input_grad_rows_f(dy_rows, nk, khs, dx_rows, nr, Wo, F, wt, Sp, span, pix)
    else:
        cnx_input_grad_rows_d(dy_rows, nk, khs, dx_rows, nr, Wo, F, wt, Sp, span, pix)
    for r in range(nr):
        memcpy(dx + (block[2 * r] * H + block[2 * r + 1]) * W * C, buf + r * pitch + left * C,
               W * C * sizeof(floating))


cdef inline void _planar_planes(const floating* inp, Py_ssize_t plane, Py_ssize_t Cin,
                                const Py_ssize_t* qoff, Py_ssize_t ntaps, const floating* w,
                                Py_ssize_t Cout, Py_ssize_t co, Py_ssize_t nco, floating* out,
                                Py_ssize_t oplane, Py_ssize_t nq, Py_ssize_t pitch, Py_ssize_t KH,
                                Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    if floating is float:
        cnx_planar_conv_f(inp, plane, Cin, qoff, ntaps, w, Cout, co, nco, out, oplane, nq, pitch,
                          KH, dh, dw)
    else:
        cnx_planar_conv_d(inp, plane, Cin, qoff, ntaps, w, Cout, co, nco, out, oplane, nq, pitch,
                          KH, dh, dw)


cdef inline void _planar_weight_grad_sample(const floating* inp, Py_ssize_t plane,
                                            Py_ssize_t Cin, const Py_ssize_t* qoff,
                                            Py_ssize_t ntaps, const floating* dy, Py_ssize_t nq,
                                            Py_ssize_t nf, floating* dw,
                                            floating* db) noexcept nogil:
    if floating is float:
        cnx_planar_weight_grad_f(inp, plane, Cin, qoff, ntaps, dy, nq, nf, dw, db)
    else:
        cnx_planar_weight_grad_d(inp, plane, Cin, qoff, ntaps, dy, nq, nf, dw, db)


def _direct_conv(const floating[:, :, :, ::1] xpad, const floating[:, :, :, ::1] wpk,
                 const floating[::1] bias, const Py_ssize_t[::1] toff,
                 floating[:, :, :, ::1] y, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh,
                 Py_ssize_t rows, bint relu, int nt):
    """``y (N, Ho, Wo, F)`` = convolution of the padded input ``xpad (N, Hp, Wp, C)`` with
    ``wpk (KH, KW, C, Fp)`` plus ``bias (Fp,)`` (then ReLU with ``relu``); one task per ``rows``
    output rows of a sample. ``xpad`` must hold whole register blocks of windows along each
    row."""
    cdef Py_ssize_t N = y.shape[0], Ho = y.shape[1], Wo = y.shape[2], F = y.shape[3]
    cdef Py_ssize_t Wp = xpad.shape[2], C = xpad.shape[3]
    cdef Py_ssize_t KH = wpk.shape[0], ntaps = wpk.shape[1] * wpk.shape[2], Fp = wpk.shape[3]
    cdef Py_ssize_t tasks = (Ho + rows - 1) // rows  # per sample
    cdef Py_ssize_t item, n, oh, nr
    if N == 0:
        return
    for item in prange(N * tasks, nogil=True, num_threads=nt, schedule="static"):
        n = item // tasks
        oh = item % tasks * rows
        nr = _imin(rows, Ho - oh)
        _direct_rows(&xpad[n, oh * sh, 0, 0], sh * Wp * C, nr, dh * Wp * C, KH, sw * C,
                     &toff[0], ntaps, &wpk[0, 0, 0, 0], Fp, &bias[0], &y[n, oh, 0, 0], Wo, F, C)
        if relu:
            _relu_in_place(&y[n, oh, 0, 0], nr * Wo * F)


cdef inline void _bias_grad(const floating* dy, Py_ssize_t npix, Py_ssize_t F,
                            floating* db) noexcept nogil:
    """``db (F,) += sum_p dy[p, :]`` over ``npix`` pixels, in pixel order."""
    if floating is float:
        cnx_channel_sums_f(dy, npix, F, db)
    else:
        cnx_channel_sums_d(dy, npix, F, db)


cdef void _fold_chunks(floating* parts, Py_ssize_t K, Py_ssize_t M, const Py_ssize_t* index,
                       Py_ssize_t n, Py_ssize_t m, floating* out) noexcept nogil:
    """Adds the K chunks of ``parts (K, M)`` into chunk 0, in chunk order, then gathers
    ``out[i] = sum_{j < m} parts[0, index[i * m + j]]`` for ``i < n`` (in order of j; a single
    term is copied). ``index`` NULL: ``out[i] = parts[0, i]``. No chunks (K = 0): zeros."""
    cdef Py_ssize_t k, q, i, j
    cdef floating s
    if K == 0:
        memset(out, 0, n * sizeof(floating))
        return
    for k in range(1, K):
        for q in range(M):
            parts[q] += parts[k * M + q]
    for i in range(n):
        if index == NULL:
            out[i] = parts[i]
        elif m == 1:
            out[i] = parts[index[i]]
        else:
            s = 0
            for j in range(m):
                s = s + parts[index[i * m + j]]
            out[i] = s


def _direct_weight_grad(const floating[:, :, :, ::1] xpad, const floating[:, :, :, ::1] dyp,
                        const Py_ssize_t[::1] toff, floating[:, :, :, ::1] dwc,
                        floating[:, ::1] dbc, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh,
                        const Py_ssize_t[:, ::1] dw_index, floating[:, :, :, ::1] dw,
                        floating[::1] db, int nt):
    """Weight and bias gradients ``dw (KH, KW, C, F)`` and ``db (F,)``: per-chunk partial sums
    ``dwc[k] (KH, ntaps, Fp)`` and ``dbc[k] (Fp,)`` over chunk k of the batch (chunk k holds
    samples ``[k*N//K, (k+1)*N//K)``), each cleared by the task that fills it, then folded (see
    :func:`_fold_chunks`; ``dw_index`` from :func:`_lane_fold_index`). One task per (chunk, kernel
    row), so the result does not depend on the thread count."""
    cdef Py_ssize_t N = dyp.shape[0], Ho = dyp.shape[1], Wo = dyp.shape[2], Fp = dyp.shape[3]
    cdef Py_ssize_t Wp = xpad.shape[2], C = xpad.shape[3]
    cdef Py_ssize_t K = dwc.shape[0], KH = dwc.shape[1], ntaps = dwc.shape[2]
    cdef Py_ssize_t item, k, kh, n
    for item in prange(K * KH, nogil=True, num_threads=nt, schedule="static"):
        k = item // KH
        kh = item % KH
        memset(&dwc[k, kh, 0, 0], 0, ntaps * Fp * sizeof(floating))
        if kh == 0:
            memset(&dbc[k, 0], 0, Fp * sizeof(floating))
        for n in range(k * N // K, (k + 1) * N // K):
            _weight_grad_sample(&xpad[n, kh * dh, 0, 0], sh * Wp * C, sw * C, &toff[0], ntaps,
                                &dyp[n, 0, 0, 0], Ho, Wo, Fp, &dwc[k, kh, 0, 0])
            if kh == 0:
                _bias_grad(&dyp[n, 0, 0, 0], Ho * Wo, Fp, &dbc[k, 0])
    _fold_chunks(&dwc[0, 0, 0, 0], K, KH * ntaps * Fp, &dw_index[0, 0], dw_index.shape[0], 1,
                 &dw[0, 0, 0, 0])
    _fold_chunks(&dbc[0, 0], K, Fp, NULL, dw.shape[3], 1, &db[0])


def _span_weight_grad(const floating[:, :, :, ::1] xpad, const floating[:, :, :, ::1] dy,
                      Py_ssize_t span, floating[:, :, :, ::1] dwc, floating[:, ::1] dbc,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh,
                      const Py_ssize_t[:, ::1] dw_index, floating[:, :, :, ::1] dw,
                      floating[::1] db, int nt):
    """Weight and bias gradients ``dw (KH, KW, C, F)`` and ``db (F,)`` with a kernel row's span
    of input cells and channels in the lanes (see cnx_span_weight_grad), from the padded input
    ``xpad (N, Hp, Wp, C)`` and ``dy (N, Ho, Wo, F)``: per-chunk partial sums ``dwc[k, kh]
    (F, ldw)`` and ``dbc[k] (F,)`` over chunk k of the batch (samples ``[k*N//K, (k+1)*N//K)``),
    then folded (see :func:`_fold_chunks`; ``dw_index`` from :func:`_span_fold_index`). One task
    per (chunk, kernel row), so the result does not depend on the thread count."""
    cdef Py_ssize_t N = dy.shape[0], Ho = dy.shape[1], Wo = dy.shape[2], F = dy.shape[3]
    cdef Py_ssize_t Hp = xpad.shape[1], WpC = xpad.shape[2] * xpad.shape[3]
    cdef Py_ssize_t K = dwc.shape[0], KH = dwc.shape[1], ldw = dwc.shape[3]
    cdef Py_ssize_t item, k, kh, n0, n1
    for item in prange(K * KH, nogil=True, num_threads=nt, schedule="static"):
        k = item // KH
        kh = item % KH
        n0 = k * N // K
        n1 = (k + 1) * N // K
        if floating is float:
            cnx_span_weight_grad_f(&xpad[n0, kh * dh, 0, 0], Hp * WpC, sh * WpC,
                                   sw * xpad.shape[3], &dy[n0, 0, 0, 0], n1 - n0, Ho, Wo, F,
                                   span, &dwc[k, kh, 0, 0], ldw)
        else:
            cnx_span_weight_grad_d(&xpad[n0, kh * dh, 0, 0], Hp * WpC, sh * WpC,
                                   sw * xpad.shape[3], &dy[n0, 0, 0, 0], n1 - n0, Ho, Wo, F,
                                   span, &dwc[k, kh, 0, 0], ldw)
        if kh == 0:
            memset(&dbc[k, 0], 0, F * sizeof(floating))
            _bias_grad(&dy[n0, 0, 0, 0], (n1 - n0) * Ho * Wo, F, &dbc[k, 0])
    _fold_chunks(&dwc[0, 0, 0, 0], K, KH * F * ldw, &dw_index[0, 0], dw_index.shape[0],
                 dw_index.shape[1], &dw[0, 0, 0, 0])
    _fold_chunks(&dbc[0, 0], K, F, NULL, F, 1, &db[0])


def _planar_conv(const floating[:, :, :, ::1] src, Py_ssize_t rows, Py_ssize_t pitch,
                 Py_ssize_t r0, Py_ssize_t c0, Py_ssize_t sr, Py_ssize_t sc,
                 const Py_ssize_t[::1] qoff, const floating[:, :, ::1] w,
                 const floating[::1] bias, floating[:, :, :, ::1] y, Py_ssize_t KH, Py_ssize_t dh,
                 Py_ssize_t dw, floating[:, :, ::1] planes, Py_ssize_t[::1] loaded,
                 floating[:, :, ::1] out, bint relu, int nt):
    """Stride-1 convolution with pixels in vector lanes: ``src (N, A, B, Cin)`` placed in channel
    planes of ``(rows, pitch)`` cells (as by :func:`_sample_to_planes`), convolved with
    ``w (T, Cin, Cout)`` at the tap offsets ``qoff (T,)`` (``T = KH * KW`` taps ``(kh, kw)`` at
    ``kh * dh * pitch + kw * dw``), plus ``bias (Cout,)`` (then ReLU with ``relu``), into
    ``y (N, Ho, Wo, Cout)``.
    One task per (sample, group of up to PLANAR_GROUP output channels). Each thread places its
    sample in its planes ``planes[thread] (Cin, PL)`` (zeroed by the caller; ``loaded[thread]``
    is the sample they hold, -1 at first), and the group's output planes go to its buffer
    ``out[thread] (PLANAR_GROUP, PO)`` (see cnx_planar_conv for the sizes), then into ``y``:
    everything a task touches stays in cache."""
    cdef Py_ssize_t N = src.shape[0], Cin = planes.shape[1], PL = planes.shape[2]
    cdef Py_ssize_t ntaps = w.shape[0], Cout = w.shape[2], PO = out.shape[2]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2]
    cdef Py_ssize_t groups = (Cout + PLANAR_GROUP - 1) // PLANAR_GROUP
    cdef Py_ssize_t item, n, co, nco, i, j, c, tid
    cdef floating* buf
    cdef floating* d
    cdef floating v
    if N == 0:
        return
    for item in prange(N * groups, nogil=True, num_threads=nt, schedule="static"):
        n = item // groups
        co = item % groups * PLANAR_GROUP
        nco = _imin(PLANAR_GROUP, Cout - co)
        tid = omp_get_thread_num()
        if loaded[tid] != n:  # every sample writes the same cells: the rest stays zero
            _sample_to_planes(&src[n, 0, 0, 0], src.shape[1], src.shape[2], Cin,
                              &planes[tid, 0, 0], PL, rows, pitch, r0, c0, sr, sc)
            loaded[tid] = n
        buf = &out[tid, 0, 0]
        _planar_planes(&planes[tid, 0, 0], PL, Cin, &qoff[0], ntaps, &w[0, 0, 0], Cout, co, nco,
                       buf, PO, Ho * pitch, pitch, KH, dh, dw)
        for i in range(Ho):
            d = &y[n, i, 0, co]
            for c in range(nco):  # contiguous reads along each plane row
                for j in range(Wo):
                    v = buf[c * PO + i * pitch + j] + bias[co + c]
                    d[j * Cout + c] = _relu(v) if relu else v  # only this task's channels


cdef inline floating* _bordered_sample(const floating[:, :, :, ::1] x, Py_ssize_t n,
                                       Py_ssize_t top, Py_ssize_t left, floating* padded,
                                       Py_ssize_t pitch) noexcept nogil:
    """Sample ``n`` of ``x (N, H, W, C)`` copied into the zero-bordered rows of ``pitch`` cells of
    ``padded`` at ``(top, left)``; returns ``padded``."""
    cdef Py_ssize_t W = x.shape[2], C = x.shape[3], i
    for i in range(x.shape[1]):
        memcpy(padded + ((top + i) * pitch + left) * C, &x[n, i, 0, 0], W * C * sizeof(floating))
    return padded


def _expanded_conv(const floating[:, :, :, ::1] x, Py_ssize_t top, Py_ssize_t left,
                   const floating[:, :, ::1] wt, const floating[:, ::1] bt,
                   floating[:, :, :, ::1] y, Py_ssize_t KH, Py_ssize_t KW,
                   floating[:, ::1] padded, Py_ssize_t pitch, bint relu, int nt):
    """Convolution of ``x (N, H, W, C)`` into ``y (N, Ho, Wo, F)`` by expanded rows, with weights
    ``wt (F, C * KH * KW, L)`` and bias ``bt (F, L)`` by residue (see :func:`_by_residue`), then
    ReLU with ``relu``; ``x`` and ``padded`` as for :func:`_expanded_weight_grad`. One task per
    sample."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[3]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], F = y.shape[3]
    cdef Py_ssize_t n
    cdef floating* xb
    for n in prange(N, nogil=True, num_threads=nt, schedule="static"):
        xb = _bordered_sample(x, n, top, left, &padded[omp_get_thread_num(), 0], pitch)
        if floating is float:
            cnx_expanded_conv_f(xb, pitch * C, C, KH, KW, F, &wt[0, 0, 0], &bt[0, 0],
                                &y[n, 0, 0, 0], Ho, Wo)
        else:
            cnx_expanded_conv_d(xb, pitch * C, C, KH, KW, F, &wt[0, 0, 0], &bt[0, 0],
                                &y[n, 0, 0, 0], Ho, Wo)
        if relu:
            _relu_in_place(&y[n, 0, 0, 0], Ho * Wo * F)


def _expanded_weight_grad(const floating[:, :, :, ::1] x, Py_ssize_t top, Py_ssize_t left,
                          const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dwacc,
                          floating[:, :, ::1] dbacc, Py_ssize_t KH, Py_ssize_t KW,
                          floating[:, ::1] padded, Py_ssize_t pitch,
                          const Py_ssize_t[:, ::1] dw_index, floating[:, :, :, ::1] dw,
                          const Py_ssize_t[:, ::1] db_index, floating[::1] db, int nt):
    """Weight and bias gradients ``dw (KH, KW, C, F)`` and ``db (F,)`` by expanded rows: per-chunk
    partial sums by residue, ``dwacc[k] (F, C * KH * KW, L)`` and ``dbacc[k] (F, L)`` over chunk
    k of the batch (each cleared by the task that fills it; see cnx_expanded_weight_grad), then
    folded (see :func:`_fold_chunks`; the indices from :func:`_residue_fold_index`). Each sample
    of ``x (N, H, W, C)`` is copied at ``(top, left)`` into its thread's zero-bordered
    ``padded[thread]``: rows of ``pitch`` cells, and a vector of slack."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[3], K = dwacc.shape[0]
    cdef Py_ssize_t Ho = dy.shape[1], Wo = dy.shape[2], F = dy.shape[3]
    cdef Py_ssize_t k, n, tid
    cdef floating* xb
    for k in prange(K, nogil=True, num_threads=nt, schedule="static"):
        tid = omp_get_thread_num()
        memset(&dwacc[k, 0, 0, 0], 0, F * dwacc.shape[2] * dwacc.shape[3] * sizeof(floating))
        memset(&dbacc[k, 0, 0], 0, F * dbacc.shape[2] * sizeof(floating))
        for n in range(k * N // K, (k + 1) * N // K):
            xb = _bordered_sample(x, n, top, left, &padded[tid, 0], pitch)
            if floating is float:
                cnx_expanded_weight_grad_f(xb, pitch * C, C, KH, KW, F, &dy[n, 0, 0, 0], Ho, Wo,
                                           &dwacc[k, 0, 0, 0], &dbacc[k, 0, 0])
            else:
                cnx_expanded_weight_grad_d(xb, pitch * C, C, KH, KW, F, &dy[n, 0, 0, 0], Ho, Wo,
                                           &dwacc[k, 0, 0, 0], &dbacc[k, 0, 0])
    _fold_chunks(&dwacc[0, 0, 0, 0], K, F * dwacc.shape[2] * dwacc.shape[3], &dw_index[0, 0],
                 dw_index.shape[0], dw_index.shape[1], &dw[0, 0, 0, 0])
    _fold_chunks(&dbacc[0, 0, 0], K, F * dbacc.shape[2], &db_index[0, 0], F, db_index.shape[1],
                 &db[0])


def _by_residue(const floating[:, ::1] v, floating[:, :, ::1] out):
    """``out[p, t, l] = v[t, (p + l) % F]`` for ``v (T, F)`` and ``out (F, T, L)``: values laid
    out by lane residue (see cnx_expanded_conv)."""
    cdef Py_ssize_t F = out.shape[0], T = out.shape[1], L = out.shape[2], p, t, l, f
    for p in range(F):
        for t in range(T):
            f = p
            for l in range(L):
                out[p, t, l] = v[t, f]
                f = 0 if f + 1 == F else f + 1


def _planar_weight_grad(const floating[:, :, :, ::1] x, Py_ssize_t rows, Py_ssize_t pitch,
                        Py_ssize_t top, Py_ssize_t left, const floating[:, :, :, ::1] dy,
                        const Py_ssize_t[::1] qoff, floating[:, :, :, ::1] dwc,
                        floating[:, ::1] dbc, floating[:, :, ::1] planes,
                        floating[:, :, ::1] dy_planes, const Py_ssize_t[:, ::1] dw_index,
                        floating[:, :, :, ::1] dw, floating[::1] db, int nt):
    """Weight and bias gradients ``dw (KH, KW, Cin, F)`` and ``db (F,)`` over channel planes
    (stride 1): per-chunk partial sums ``dwc[k] (F, ntaps, Cin)`` and ``dbc[k] (F,)`` over chunk k
    of the batch (zero-initialised), then folded (see :func:`_fold_chunks`; ``dw_index`` from
    :func:`_planar_fold_index`), from ``x (N, H, W, Cin)`` placed at ``(top, left)`` in planes of
    ``(rows, pitch)`` cells and ``dy (N, Ho, Wo, F)`` in planes of rows ``pitch`` apart. One task
    per chunk (all output channels, so each
    loaded input vector feeds several of them). Each sample goes into the thread's planes
    ``planes[thread] (Cin, PL)`` and ``dy_planes[thread] (F, nq)`` (zeroed by the caller; every
    sample writes the same cells) just before use, so they are still in cache."""
    cdef Py_ssize_t N = x.shape[0], Cin = planes.shape[1], PL = planes.shape[2]
    cdef Py_ssize_t K = dwc.shape[0], F = dwc.shape[1], ntaps = dwc.shape[2]
    cdef Py_ssize_t Ho = dy.shape[1], Wo = dy.shape[2], nq = dy_planes.shape[2]
    cdef Py_ssize_t k, n, tid
    for k in prange(K, nogil=True, num_threads=nt, schedule="static"):
        tid = omp_get_thread_num()
        for n in range(k * N // K, (k + 1) * N // K):
            _sample_to_planes(&x[n, 0, 0, 0], x.shape[1], x.shape[2], Cin, &planes[tid, 0, 0],
                              PL, rows, pitch, top, left, 1, 1)
            _sample_to_planes(&dy[n, 0, 0, 0], Ho, Wo, F, &dy_planes[tid, 0, 0], nq, Ho, pitch,
                              0, 0, 1, 1)
            _planar_weight_grad_sample(&planes[tid, 0, 0], PL, Cin, &qoff[0], ntaps,
                                       &dy_planes[tid, 0, 0], nq, F, &dwc[k, 0, 0, 0],
                                       &dbc[k, 0])
    _fold_chunks(&dwc[0, 0, 0, 0], K, F * ntaps * Cin, &dw_index[0, 0], dw_index.shape[0], 1,
                 &dw[0, 0, 0, 0])
    _fold_chunks(&dbc[0, 0], K, F, NULL, F, 1, &db[0])


cdef inline void _row_to_planes(const floating* s, Py_ssize_t C, floating* d, Py_ssize_t PL,
                                Py_ssize_t row, Py_ssize_t c0, Py_ssize_t sc, Py_ssize_t j0,
                                Py_ssize_t j1) noexcept nogil:
    """``d[c * PL + row + c0 + j*sc] = s[j * C + c]`` for ``j`` in ``[j0, j1)``: one row of a
    ``(.., C)`` source into the plane row starting at ``row`` of ``C`` planes ``PL`` apart."""
    cdef Py_ssize_t c, j
    cdef floating* plane_row
    if C == 1 and sc == 1:
        if j1 > j0:
            memcpy(d + row + c0 + j0, s + j0, (j1 - j0) * sizeof(floating))
        return
    for c in range(C):  # along each plane row
        plane_row = d + c * PL + row + c0
        if sc == 1:
            for j in range(j0, j1):
                plane_row[j] = s[j * C + c]
        else:
            for j in range(j0, j1):
                plane_row[j * sc] = s[j * C + c]


cdef inline void _sample_to_planes(const floating* s, Py_ssize_t A, Py_ssize_t B, Py_ssize_t C,
                                   floating* d, Py_ssize_t PL, Py_ssize_t rows, Py_ssize_t pitch,
                                   Py_ssize_t r0, Py_ssize_t c0, Py_ssize_t sr,
                                   Py_ssize_t sc) noexcept nogil:
    """``d[c * PL + (r0 + i*sr) * pitch + c0 + j*sc] = s[(i * B + j) * C + c]`` for one
    ``(A, B, C)`` sample, wherever that cell lies inside the ``(rows, pitch)`` plane; other
    cells are left alone."""
    cdef Py_ssize_t i, r
    # the columns j that land inside the plane: 0 <= c0 + j*sc < pitch
    cdef Py_ssize_t j0 = 0 if c0 >= 0 else (-c0 + sc - 1) // sc
    cdef Py_ssize_t j1 = _imin(B, (pitch - c0 + sc - 1) // sc) if pitch > c0 else 0
    for i in range(A):
        r = r0 + i * sr
        if 0 <= r < rows:
            _row_to_planes(s + i * B * C, C, d, PL, r * pitch, c0, sc, j0, j1)


cdef void _span_weights(const floating[:, :, :, ::1] w, Py_ssize_t dw,
                        floating[:, :, ::1] wt) noexcept nogil:
    """``wt (KH, F, Sp)``: ``wt[kh, f, kw*dw*C + c] = w[kh, kw, c, f]``, zero elsewhere, so that
    the first ``span`` values of a row are a kernel row's cells and channels."""
    cdef Py_ssize_t C = w.shape[2], F = w.shape[3], kh, kw, c, f
    memset(&wt[0, 0, 0], 0, wt.shape[0] * F * wt.shape[2] * sizeof(floating))
    for kh in range(w.shape[0]):
        for kw in range(w.shape[1]):
            for c in range(C):
                for f in range(F):
                    wt[kh, f, kw * dw * C + c] = w[kh, kw, c, f]


def _span_input_grad(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                     Py_ssize_t dw, floating[:, :, ::1] wt, Py_ssize_t span,
                     const Py_ssize_t[:, ::1] khs, const Py_ssize_t[::1] nks,
                     const Py_ssize_t[:, :, ::1] blocks, const Py_ssize_t[::1] sizes,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t top,
                     Py_ssize_t left, Py_ssize_t[:, ::1] dy_rows, floating[:, :, ::1] bufs,
                     floating[:, :, :, ::1] dx, int nt):
    """Input gradient ``dx (N, H, W, C)`` of ``dy (N, Ho, Wo, F)`` through the kernel
    ``w (KH, KW, C, F)`` (dilation ``dw`` along a row), first laid out in ``wt`` by
    :func:`_span_weights`. Input row ``ih``
    is reached through the kernel rows ``khs[ih, :nks[ih]]``; each task computes the first
    ``sizes[k]`` rows ``(n, ih)`` of ``blocks[k] (rb, 2)``, all reached alike, in its thread's
    padded rows ``bufs[thread] (rb, pitch)`` (``dy_rows[thread]`` holds the addresses of the
    output-gradient rows they use), and crops them into ``dx``."""
    cdef Py_ssize_t H = dx.shape[1], W = dx.shape[2], C = dx.shape[3]
    cdef Py_ssize_t Ho = dy.shape[1], Wo = dy.shape[2], F = dy.shape[3], Sp = wt.shape[2]
    cdef Py_ssize_t rb = bufs.shape[1], pitch = bufs.shape[2]
    cdef Py_ssize_t k, tid, ih
    _span_weights(w, dw, wt)
    for k in prange(blocks.shape[0], nogil=True, num_threads=nt, schedule="static"):
        tid = omp_get_thread_num()
        ih = blocks[k, 0, 1]
        _input_grad_block(&dy[0, 0, 0, 0], Ho, Wo, F, &wt[0, 0, 0], Sp, span, &khs[ih, 0],
                          nks[ih], &blocks[k, 0, 0], sizes[k], rb, sh, sw * C, dh, top, left,
                          <const floating**> <void*> &dy_rows[tid, 0], &bufs[tid, 0, 0], pitch,
                          &dx[0, 0, 0, 0], H, W, C)


def _slide_input_grad(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                      Py_ssize_t dw, floating[:, :, ::1] wt, Py_ssize_t span, Py_ssize_t sw,
                      Py_ssize_t top, Py_ssize_t left, floating[:, :, ::1] bufs,
                      floating[:, :, :, ::1] dx, int nt):
    """Input gradient ``dx (N, H, W, C)`` of ``dy (N, Ho, Wo, F)`` through the kernel
    ``w (KH, KW, C, F)`` at vertical stride and dilation 1 (dilation ``dw`` along a row), laid
    out in ``wt`` by :func:`_span_weights`, sliding down the rows (see cnx_input_grad_slide).
    One task per sample: its padded input gradient ``bufs[thread] (H + top + bottom, pitch)``
    is zeroed, filled, then cropped into ``dx``."""
    cdef Py_ssize_t N = dx.shape[0], H = dx.shape[1], W = dx.shape[2], C = dx.shape[3]
    cdef Py_ssize_t Ho = dy.shape[1], Wo = dy.shape[2], F = dy.shape[3], Sp = wt.shape[2]
    cdef Py_ssize_t rows = bufs.shape[1], pitch = bufs.shape[2]
    cdef Py_ssize_t n, tid, ih
    cdef floating* buf
    _span_weights(w, dw, wt)
    for n in prange(N, nogil=True, num_threads=nt, schedule="static"):
        tid = omp_get_thread_num()
        buf = &bufs[tid, 0, 0]
        memset(buf, 0, rows * pitch * sizeof(floating))
        if floating is float:
            cnx_input_grad_slide_f(&dy[n, 0, 0, 0], Wo * F, Ho, Wo, F, &wt[0, 0, 0],
                                   w.shape[0], Sp, span, sw * C, buf, pitch)
        else:
            cnx_input_grad_slide_d(&dy[n, 0, 0, 0], Wo * F, Ho, Wo, F, &wt[0, 0, 0],
                                   w.shape[0], Sp, span, sw * C, buf, pitch)
        for ih in range(H):
            memcpy(&dx[n, ih, 0, 0], buf + (ih + top) * pitch + left * C,
                   W * C * sizeof(floating))


def _place(const floating[:, :, :, :] src, floating[:, :, :, ::1] dst, Py_ssize_t r0,
           Py_ssize_t c0, Py_ssize_t sr, Py_ssize_t sc, int nt):
    """``dst[n, r0 + i*sr, c0 + j*sc, :C] = src[n, i, j, :]`` wherever that cell exists in
    ``dst``; other cells are left alone. Pads (sr = sc = 1), crops (negative r0, c0) or
    zero-interleaves ``src``, whose last axis must be contiguous."""
    cdef Py_ssize_t N = src.shape[0], A = src.shape[1], B = src.shape[2], C = src.shape[3]
    cdef Py_ssize_t A2 = dst.shape[1], B2 = dst.shape[2]
    cdef Py_ssize_t item, n, i, j, r, col
    if N == 0:
        return
    for item in prange(N * A, nogil=True, num_threads=nt, schedule="static"):
        n = item // A
        i = item % A
        r = r0 + i * sr
        if r < 0 or r >= A2:
            continue
        if sc == 1 and dst.shape[3] == C and src.strides[2] == C * sizeof(floating):
            # the row's cells are contiguous in both: one copy
            j = -c0 if c0 < 0 else 0
            col = _imin(B, B2 - c0)
            if col > j:
                memcpy(&dst[n, r, c0 + j, 0], &src[n, i, j, 0], (col - j) * C * sizeof(floating))
            continue
        for j in range(B):
            col = c0 + j * sc
            if 0 <= col < B2:
                memcpy(&dst[n, r, col, 0], &src[n, i, j, 0], C * sizeof(floating))


cdef inline void _im2col_row(const floating* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                             Py_ssize_t ih0, Py_ssize_t iw0, Py_ssize_t Wo, Py_ssize_t KH,
                             Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                             floating* cols) noexcept nogil:
    """Rows ``cols (Wo, KH*KW*C)`` of the windows of one output row; window ``ow`` starts at
    input cell ``(ih0, iw0 + ow*sw)`` (may lie in the zero padding)."""
    cdef Py_ssize_t ow, kh, kw, ih, iw
    cdef floating* dst = cols
    for ow in range(Wo):
        for kh in range(KH):
            ih = ih0 + kh * dh
            if ih < 0 or ih >= H:
                memset(dst, 0, KW * C * sizeof(floating))
                dst += KW * C
                continue
            for kw in range(KW):
                iw = iw0 + ow * sw + kw * dw
                if 0 <= iw < W:
                    memcpy(dst, &x[(ih * W + iw) * C], C * sizeof(floating))
                else:
                    memset(dst, 0, C * sizeof(floating))
                dst += C


def _im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols, Py_ssize_t n0,
            Py_ssize_t n1, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t KH, Py_ssize_t KW,
            Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left, Py_ssize_t dh,
            Py_ssize_t dw, int nt):
    """Windows of samples ``[n0, n1)`` into ``cols ((n1-n0)*Ho*Wo, KH*KW*C)``."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2], C = x.shape[3], K = cols.shape[1]
    cdef Py_ssize_t item, n, oh
    for item in prange((n1 - n0) * Ho, nogil=True, num_threads=nt, schedule="static"):
        n = item // Ho
        oh = item % Ho
        _im2col_row(&x[n0 + n, 0, 0, 0], H, W, C, oh * sh - top, -left, Wo, KH, KW, sw, dh, dw,
                    &cols[item * Wo, 0])


cdef inline void _col2im_row(const floating* dcols, Py_ssize_t ih, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t C, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t KH,
                             Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top,
                             Py_ssize_t left, Py_ssize_t dh, Py_ssize_t dw,
                             floating* dx) noexcept nogil:
    """Input-gradient row ``dx (W, C)`` at input row ``ih``: the sum of every window column of
    ``dcols (Ho*Wo, KH*KW*C)`` (one sample) that reads a cell of that row."""
    cdef Py_ssize_t K = KH * KW * C
    cdef Py_ssize_t kh, kw, oh, ow, iw, c, t
    cdef const floating* src
    cdef floating* dst
    memset(dx, 0, W * C * sizeof(floating))
    for kh in range(KH):
        t = ih + top - kh * dh
        if t < 0 or t % sh != 0 or t // sh >= Ho:
            continue
        oh = t // sh
        for ow in range(Wo):
            for kw in range(KW):
                iw = ow * sw - left + kw * dw
                if 0 <= iw < W:
                    src = dcols + (oh * Wo + ow) * K + (kh * KW + kw) * C
                    dst = dx + iw * C
                    for c in range(C):
                        dst[c] += src[c]


def _col2im(const floating[:, ::1] dcols, floating[:, :, :, ::1] dx, Py_ssize_t n0,
            Py_ssize_t n1, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t KH, Py_ssize_t KW,
            Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left, Py_ssize_t dh,
            Py_ssize_t dw, int nt):
    """``dx[n0:n1]`` from the window gradients ``dcols ((n1-n0)*Ho*Wo, KH*KW*C)``; one task
    per input row, each writing only its own row."""
    cdef Py_ssize_t H = dx.shape[1], W = dx.shape[2], C = dx.shape[3]
    cdef Py_ssize_t item, n, ih
    for item in prange((n1 - n0) * H, nogil=True, num_threads=nt, schedule="static"):
        n = item // H
        ih = item % H
        _col2im_row(&dcols[n * Ho * Wo, 0], ih, H, W, C, Ho, Wo, KH, KW, sh, sw, top, left, dh,
                    dw, &dx[n0 + n, ih, 0, 0])


def _column_sums(const floating[:, ::1] a, floating[:, ::1] parts, int nt):
    """``parts[k] = a[k*M//K : (k+1)*M//K].sum(0)`` for each of the K chunks (fixed split)."""
    cdef Py_ssize_t M = a.shape[0], F = a.shape[1], K = parts.shape[0]
    cdef Py_ssize_t k, m, f
    for k in prange(K, nogil=True, num_threads=nt, schedule="static"):
        for f in range(F):
            parts[k, f] = 0
        for m in range(k * M // K, (k + 1) * M // K):
            for f in range(F):
                parts[k, f] += a[m, f]
