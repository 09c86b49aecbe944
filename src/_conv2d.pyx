"""Compiled 2-D convolution over channels-last tensors (forward and backward).

Both functions follow the backend contract in :mod:`cnnext.backend`: ``x (N, H, W, C)``,
``w (KH, KW, C, F)``, ``b (F,)`` or None, C-contiguous, one float dtype (float32 or float64);
``stride`` and ``dilation`` are ``(h, w)``, ``padding`` is ``(top, bottom, left, right)`` (zeros).

Algorithms, chosen per call from the shapes:

* Direct kernels (src/_conv_simd_kernels.h), compiled for several instruction sets and picked at
  import time (:func:`simd_level`; the ``CNNEXT_SIMD`` environment variable overrides it):
  - channel lanes: output channels in the vector lanes, a register block of output pixels
    (forward) or kernel taps (weight gradient) accumulated by outer products. At horizontal
    stride and dilation 1 the forward slides along the input row: each input value, broadcast
    once, meets the weights of every kernel column in registers;
  - pixel lanes (stride 1, few channels): channel planes with consecutive pixels in the lanes
    (also the input gradient of few input channels, as a transposed convolution);
  - kernel-row spans (few input channels): a kernel row's span of input cells and channels in
    the lanes. The weight gradient broadcasts each output-gradient value over the span of its
    window. The input gradient either slides down the rows (vertical stride and dilation 1, a
    batch of at least SLIDE_MIN_SAMPLES: each output-gradient value times every kernel row's
    span of weights, held in registers, added to the input rows below it) or sums, per input
    row, over the kernel rows that reach it, each output pixel's gradient times the kernel row's
    span of weights;
  - expanded rows (AVX-512, few input channels, at most one vector of output channels, stride
    1): an output row's flat (pixel, channel) values in the lanes and each input value repeated
    per output channel by a lane permute, so outputs and output gradients are used as they lie
    (forward and weight gradient).
  A small cost model (vector multiply-adds) picks the kernels per direction.
* GEMM, for many channels (``KH*KW*C >= 64`` and ``F >= 32``) when the kernels have no AVX-512:
  im2col of a chunk of samples into a reused buffer, one matrix product through numpy's BLAS,
  col2im for the input gradient.

Weight and bias gradients are summed per fixed batch chunk (the split depends on the shapes only)
and the chunks are added in order, so the direct kernels give bit-identical results for any
thread count (the GEMM path inherits BLAS's rounding, which may vary with its thread count).
"""
import functools

import numpy as np

from cnnext._config import blas_held_to_one_thread, get_num_threads
from cnnext.workspace import ALIGNMENT, output, scratch

include "_conv_kernels.pxi"
include "_simd_level.pxi"

# Forward tasks: a sample's output rows in as few tasks as leave each thread this many.
TASKS_PER_THREAD = 4
# Direct-kernel weight-gradient partial sums: this many batch chunks at most.
WEIGHT_GRAD_CHUNKS = 16
# GEMM path: an im2col buffer holds at most this many elements (but always one whole sample).
GEMM_TILE_ELEMENTS = 1 << 22
# While BLAS is held to one thread, the direct kernels' threads beat it up to this many bytes of
# weights per thread (measured with AVX2 on 2 threads: 64->64 3x3 1.8x faster, 128->128 1.3x,
# 128->256 even, 256->256 1.6x slower; their weights are 147 KB to 2.4 MB in float32).
DIRECT_WEIGHT_BYTES_PER_THREAD = 1 << 19


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _output_hw(x_shape, w_shape, stride, padding, dilation) -> tuple[int, int]:
    (_, H, W, _), (KH, KW, _, _) = x_shape, w_shape
    top, bottom, left, right = padding
    Ho = (H + top + bottom - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    Wo = (W + left + right - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    return Ho, Wo


def _use_gemm(w) -> bool:
    """Many channels: im2col + BLAS, unless the direct kernels have AVX-512-wide vectors (then
    they outrun numpy's BLAS), or unless BLAS is held to one thread (in a model's passes, see
    :func:`cnnext._config.single_threaded_blas`) while the kernels have several threads, for
    weights of up to DIRECT_WEIGHT_BYTES_PER_THREAD per thread."""
    KH, KW, C, F = w.shape
    if cnx_f.vbytes >= 64 or KH * KW * C < 64 or F < 32:
        return False
    nt = get_num_threads()
    return (nt == 1 or not blas_held_to_one_thread()
            or w.nbytes > nt * DIRECT_WEIGHT_BYTES_PER_THREAD)


def _lanes(dtype) -> int:
    """Vector lanes of the direct kernels for ``dtype``: packed channel counts are multiples."""
    return cnx_f.lanes if dtype == np.float32 else cnx_d.lanes


@functools.lru_cache(maxsize=64)
def _tap_offsets(KW: int, C: int, dw: int, rb: int) -> np.ndarray:
    """``toff[kw*C + c] = kw*dw*C + c``, zero-padded to a multiple of the register block ``rb``
    (read-only: shared by every call with these arguments)."""
    toff = np.zeros(_round_up(KW * C, rb), dtype=np.intp)
    toff[: KW * C] = (np.arange(KW)[:, None] * dw * C + np.arange(C)).ravel()
    return _read_only(toff)


def _pad_channels(w, n: int):
    """Kernel ``w (KH, KW, C, F)`` zero-padded to ``(KH, KW, C, n)`` on a cache-line boundary,
    so that no vector of weights straddles two lines (``w`` itself if it needs neither)."""
    KH, KW, C, F = w.shape
    if F == n and w.ctypes.data % ALIGNMENT == 0:
        return w
    out = scratch("wpk", (KH, KW, C, n), w.dtype)
    out[..., F:] = 0
    out[..., :F] = w
    return out


def _block_windows(Wo: int, Fp: int, L: int) -> int:
    """Windows per output row that the forward kernel's register blocks read (at least ``Wo``):
    blocks of two channel vectors while ``2 * L`` channels remain, then of one."""
    nfs = ([2] if Fp >= 2 * L else []) + ([1] if Fp % (2 * L) else [])
    return max(_round_up(Wo, cnx_f.block_items(nf, Wo)) for nf in nfs)


def _padded_input(x, padding, windows, KW, sw, dw, nt) -> np.ndarray:
    """``x`` zero-padded, with enough columns for ``windows`` windows per row (``x`` itself when
    it needs neither)."""
    N, H, W, C = x.shape
    top, bottom, left, right = padding
    Wp = max(W + left + right, (windows - 1) * sw + (KW - 1) * dw + 1)
    if top == bottom == left == 0 and Wp == W:
        return x
    xpad = scratch("xpad", (N, H + top + bottom, Wp, C), x.dtype)
    xpad[:, :top] = 0
    xpad[:, top + H :] = 0
    xpad[:, top : top + H, :left] = 0
    xpad[:, top : top + H, left + W :] = 0
    _place(x, xpad, top, left, 1, 1, nt)
    return xpad


def conv2d_forward(x, w, b, stride, padding, dilation, out=None, relu=False):
    """``y (N, Ho, Wo, F)`` with ``y[n, i, j, f] = b[f] + sum_{kh, kw, c}
    x_padded[n, i*sh + kh*dh, j*sw + kw*dw, c] * w[kh, kw, c, f]`` (written into ``out`` when
    given); ``relu``: ``max(y, 0)``, applied to each part of ``y`` as soon as it is computed."""
    Ho, Wo = _output_hw(x.shape, w.shape, stride, padding, dilation)
    y = output(out, (x.shape[0], Ho, Wo, w.shape[3]), x.dtype)
    if _use_gemm(w):
        return _forward_gemm(x, w, b, stride, padding, dilation, y, relu)
    return _forward_direct(x, w, b, stride, padding, dilation, y, relu)


def conv2d_backward(dy, x, w, stride, padding, dilation, input_grad=True, out=None):
    """Gradients ``(dx (N, H, W, C), dw (KH, KW, C, F), db (F,))`` of :func:`conv2d_forward`
    given ``dy (N, Ho, Wo, F)``; ``dx`` is None when ``input_grad`` is False, else written into
    ``out`` when given."""
    dx = output(out, x.shape, x.dtype) if input_grad else None
    if _use_gemm(w):
        return _backward_gemm(dy, x, w, stride, padding, dilation, dx)
    return _backward_direct(dy, x, w, stride, padding, dilation, dx)


def _forward_direct(x, w, b, stride, padding, dilation, y, relu):
    """Output channels in vector lanes, or pixels in lanes (stride 1), or expanded rows (few
    channels, stride 1), whichever the cost model finds cheapest (:func:`_forward_path`)."""
    _, H, W, _ = x.shape
    F = w.shape[3]
    (top, bottom, left, right) = padding
    L = _lanes(x.dtype)
    path = _forward_path(x.shape, w.shape, stride, padding, dilation, L)
    if path == "expanded":
        return _forward_expanded(x, w, b, padding, y, relu)
    if path == "planar":
        bias = np.zeros(F, dtype=x.dtype) if b is None else b
        return _conv_via_planes(x, (top, left), (1, 1), (H + top + bottom, W + left + right),
                                w, bias, y, dilation, relu, get_num_threads())
    return _forward_lanes(x, w, b, stride, padding, dilation, y, relu, get_num_threads())


def _forward_lanes(x, w, b, stride, padding, dilation, y, relu, nt):
    """``y`` with output channels in vector lanes: register blocks of output pixels, filled tap
    by tap or (at horizontal stride and dilation 1) sliding along the input rows; one kernel call
    per task of :func:`_rows_per_task` rows."""
    N, _, _, C = x.shape
    _, KW, _, F = w.shape
    _, Ho, Wo, _ = y.shape
    L = _lanes(x.dtype)
    Fp = _round_up(F, L)
    xpad = _padded_input(x, padding, _block_windows(Wo, Fp, L), KW, stride[1], dilation[1], nt)
    bias = b
    if b is None or F != Fp:
        bias = np.zeros(Fp, dtype=x.dtype)
        if b is not None:
            bias[:F] = b
    toff = _tap_offsets(KW, C, dilation[1], cnx_f.rb)
    _direct_conv(xpad, _pad_channels(w, Fp), bias, toff, y, stride[0], stride[1], dilation[0],
                 _rows_per_task(N, Ho, nt), relu, nt)
    return y


def _rows_per_task(N: int, Ho: int, nt: int) -> int:
    """Output rows per forward task: a whole sample where the batch gives every thread
    TASKS_PER_THREAD tasks, else a share of its rows (each kernel call has a fixed cost); at
    least 1, also for an empty batch or output."""
    shares = max(1, min(Ho, -(-TASKS_PER_THREAD * nt // max(N, 1))))
    return max(1, -(-Ho // shares))


@functools.lru_cache(maxsize=256)
def _forward_path(x_shape, w_shape, stride, padding, dilation, L: int) -> str:
    """``"expanded"``, ``"planar"`` (pixels in lanes) or ``"lanes"`` (output channels in lanes):
    the cheapest direct forward kernel by the cost model (cached per shape)."""
    N, H, W, C = x_shape
    KH, KW, _, F = w_shape
    top, bottom, left, right = padding
    Ho, Wo = _output_hw(x_shape, w_shape, stride, padding, dilation)
    taps = KH * KW * C
    channel = _cost_channel_lanes(Ho, Wo, taps, F, L)
    pixel = _cost_pixel_lanes(Ho, W + left + right, taps, F, L) if stride == (1, 1) else channel
    if (Ho >= EXPANDED_ROWS and _use_expanded(w_shape, Wo, stride, dilation, L)
            and _cost_expanded(Ho, Wo, KH, KW * C, F, L) < min(channel, pixel)):
        return "expanded"
    return "planar" if pixel < channel else "lanes"


def _backward_direct(dy, x, w, stride, padding, dilation, dx):
    """``(dx, dw, db)``; the input gradient is written into ``dx`` unless that is None."""
    nt = get_num_threads()
    dw, db = _weight_grad_direct(dy, x, w, stride, padding, dilation, nt)
    if dx is not None:
        _input_grad_direct(dy, x, w, stride, padding, dilation, dx, nt)
    return dx, dw, db


def _weight_grad_direct(dy, x, w, stride, padding, dilation, nt):
    """``(dw, db)`` from per-chunk partial sums over the batch, added in chunk order; output
    channels in vector lanes, or pixels in lanes (stride 1), or kernel-row spans (few input
    channels), or expanded rows (few channels, stride 1), by the cost model
    (:func:`_weight_grad_path`)."""
    path = _weight_grad_path(x.shape, w.shape, stride, padding, dilation, _lanes(x.dtype))
    if path == "expanded":
        return _weight_grad_expanded(dy, x, w, padding, nt)
    if path == "planar":
        dw, db = _weight_grad_planar(dy, x, w, padding, dilation, nt)
        if _all_finite(dw):
            return dw, db
        # a NaN or infinity in x, times the zeros past each output-gradient row, would be NaN in
        # taps that never read it: the channel-lane kernel multiplies only what the forward did
        path = "lanes"
    if path == "spans":
        return _weight_grad_spans(dy, x, w, stride, padding, dilation, nt)
    return _weight_grad_lanes(dy, x, w, stride, padding, dilation, nt)


@functools.lru_cache(maxsize=256)
def _weight_grad_path(x_shape, w_shape, stride, padding, dilation, L: int) -> str:
    """``"expanded"``, ``"planar"``, ``"spans"`` or ``"lanes"``: the cheapest weight-gradient
    kernel by the cost model (cached per shape)."""
    N, H, W, C = x_shape
    KH, KW, _, F = w_shape
    top, bottom, left, right = padding
    Ho, Wo = _output_hw(x_shape, w_shape, stride, padding, dilation)
    pitch = W + left + right
    span = ((KW - 1) * dilation[1] + 1) * C
    channel_lanes = _cost_wgrad_channel_lanes(Ho, Wo, KH, KW * C, F, L)
    planar = channel_lanes
    if stride == (1, 1):
        planar = _cost_wgrad_pixel_lanes(Ho, pitch, KH * KW, C, F, L)
    spans = _cost_wgrad_spans(Ho, Wo, KH, span, F, L) if span >= L else channel_lanes
    if (_use_expanded(w_shape, Wo, stride, dilation, L)
            and _cost_wgrad_expanded(Ho, Wo, KH, KW * C, F, L) < min(channel_lanes, planar, spans)):
        return "expanded"
    if planar < channel_lanes:
        return "planar"
    return "spans" if span >= L and spans <= channel_lanes else "lanes"


def _weight_grad_lanes(dy, x, w, stride, padding, dilation, nt):
    """``(dw, db)`` with output channels in vector lanes: per-chunk partial sums over the batch,
    added in chunk order."""
    N, _, _, C = x.shape
    KH, KW, _, F = w.shape
    _, Ho, Wo, _ = dy.shape
    Fp = _round_up(F, _lanes(x.dtype))
    xpad = _padded_input(x, padding, Wo, KW, stride[1], dilation[1], nt)
    dyp = dy
    if Fp != F:
        dyp = scratch("dyp", (N, Ho, Wo, Fp), x.dtype, zero=True)
        _place(dy, dyp, 0, 0, 1, 1, nt)
    chunks = min(N, WEIGHT_GRAD_CHUNKS)
    dwc = scratch("dwc", (chunks, KH, KW * C, Fp), x.dtype)
    dbc = scratch("dbc", (chunks, Fp), x.dtype)
    toff = _tap_offsets(KW, C, dilation[1], cnx_f.rb)
    dw, db = np.empty(w.shape, dtype=x.dtype), np.empty(F, dtype=x.dtype)
    _direct_weight_grad(xpad, dyp, toff, dwc, dbc, stride[0], stride[1], dilation[0],
                        _lane_fold_index(KH * KW * C, F, Fp), dw, db, nt)
    return dw, db


@functools.lru_cache(maxsize=64)
def _lane_fold_index(taps: int, F: int, Fp: int) -> np.ndarray:
    """``(taps * F, 1)``: where ``dw[tap, f]`` lies in a chunk ``(taps, Fp)`` of partial sums."""
    return _read_only((np.arange(taps)[:, None] * Fp + np.arange(F)).reshape(-1, 1))


def _read_only(array: np.ndarray) -> np.ndarray:
    """``array`` made read-only: a cached plan array is shared by every call with its shapes."""
    array.flags.writeable = False
    return array


def _weight_grad_spans(dy, x, w, stride, padding, dilation, nt):
    """``(dw, db)`` from per-chunk partial sums over the batch, added in chunk order, with a kernel
    row's (kw, c) span in vector lanes and output channels broadcast (few input channels)."""
    N, H, W, C = x.shape
    KH, KW, _, F = w.shape
    _, Ho, Wo, _ = dy.shape
    L, dil_w = _lanes(x.dtype), dilation[1]
    span = ((KW - 1) * dil_w + 1) * C
    nvec = -(-span // L)
    xpad = _padded_input(x, padding, Wo, KW, stride[1], dil_w, nt)
    chunks = min(N, WEIGHT_GRAD_CHUNKS)
    dwc = scratch("dwc", (chunks, KH, F, nvec * L), x.dtype)
    dbc = scratch("dbc", (chunks, F), x.dtype)
    dw, db = np.empty(w.shape, dtype=x.dtype), np.empty(F, dtype=x.dtype)
    _span_weight_grad(xpad, dy, span, dwc, dbc, stride[0], stride[1], dilation[0],
                      _span_fold_index(KH, KW, C, F, L, dil_w), dw, db, nt)
    return dw, db


@functools.lru_cache(maxsize=64)
def _span_fold_index(KH: int, KW: int, C: int, F: int, L: int, dil_w: int) -> np.ndarray:
    """``(KH * KW * C * F, 1)``: where ``dw[kh, kw, c, f]`` lies in a chunk ``(KH, F, nvec * L)``
    of :func:`_span_weight_grad`'s partial sums, whose vector v holds a kernel row's span of
    cells from ``min(v * L, span - L)`` (the last vector wins the cells it shares)."""
    span = ((KW - 1) * dil_w + 1) * C
    nvec = -(-span // L)
    cell = (np.arange(KW)[:, None] * dil_w * C + np.arange(C)).ravel()
    column = np.where(cell >= span - L, (nvec - 1) * L + cell - (span - L), cell)
    row = np.arange(KH)[:, None, None] * F + np.arange(F)
    return _read_only((row * nvec * L + column[:, None]).reshape(-1, 1))


def _weight_grad_planar(dy, x, w, padding, dilation, nt):
    """``(dw, db)`` with pixels in vector lanes (stride 1, few output channels): per chunk of the
    batch, dot products of the input planes at each tap offset with the output-gradient planes."""
    N, H, W, C = x.shape
    KH, KW, _, F = w.shape
    _, Ho, Wo, _ = dy.shape
    (top, bottom, left, right), (dh, dw) = padding, dilation
    rows, pitch = H + top + bottom, W + left + right
    taps = (np.arange(KH)[:, None] * dh * pitch + np.arange(KW) * dw).ravel()
    qoff = np.zeros(_round_up(KH * KW, cnx_f.rb), dtype=np.intp)
    qoff[: KH * KW] = taps
    nq = _round_up(Ho * pitch, _lanes(x.dtype))
    # each thread's planes of one sample: its input, and its output gradient (zero past Ho rows)
    planes = scratch("planes", (nt, C, max(rows * pitch, nq + int(taps.max()))), x.dtype,
                      zero=True)
    dy_planes = scratch("dy_planes", (nt, F, nq), x.dtype, zero=True)
    chunks = min(N, WEIGHT_GRAD_CHUNKS)
    dwc = scratch("dwc", (chunks, F, KH * KW, C), x.dtype, zero=True)
    dbc = scratch("dbc", (chunks, F), x.dtype, zero=True)
    dw_, db = np.empty(w.shape, dtype=x.dtype), np.empty(F, dtype=x.dtype)
    _planar_weight_grad(x, rows, pitch, top, left, dy, qoff, dwc, dbc, planes, dy_planes,
                        _planar_fold_index(KH * KW * C, F), dw_, db, nt)
    return dw_, db


@functools.lru_cache(maxsize=64)
def _planar_fold_index(taps: int, F: int) -> np.ndarray:
    """``(taps * F, 1)``: where ``dw[tap, f]`` lies in a chunk ``(F, taps)`` of partial sums."""
    return _read_only(np.arange(F * taps).reshape(F, taps).T.reshape(-1, 1))


# The expanded-row forward computes blocks of this many output rows (CNX_ROWS of the AVX-512
# kernels, src/_conv_simd_kernels.h).
EXPANDED_ROWS = 8


def _use_expanded(w_shape, Wo: int, stride, dilation, L: int) -> bool:
    """The expanded-row kernels apply: at most one vector of output channels, few input channels
    (a vector's input pixels times C fit one vector), stride and dilation 1, kernel height at
    most 7 (src/_conv_simd_kernels.h)."""
    KH, KW, C, F = w_shape
    return (cnx_has_expanded() and F <= L and Wo * F >= L and KH <= 7
            and stride == (1, 1) and dilation == (1, 1) and _vector_pixels(F, L) * C <= L)


@functools.lru_cache(maxsize=64)
def _vector_pixels(F: int, L: int) -> int:
    """Most output pixels that one vector of an output row's flat (pixel, channel) values
    touches (vectors start at multiples of ``L``)."""
    return max((t + L - 1) // F - t // F + 1 for t in range(0, F * L, L))


def _bordered_buffers(x, padding, nt):
    """``(padded, pitch)``: each thread's zero-bordered input sample, rows of ``pitch`` cells,
    with the vector of slack that the expanded-row kernels read."""
    _, H, W, C = x.shape
    top, bottom, left, right = padding
    rows, pitch = H + top + bottom, W + left + right
    return scratch("padded", (nt, rows * pitch * C + _lanes(x.dtype)), x.dtype, zero=True), pitch


def _forward_expanded(x, w, b, padding, y, relu=False):
    KH, KW, C, F = w.shape
    L, nt = _lanes(x.dtype), get_num_threads()
    wt = scratch("expanded_wt", (F, C * KH * KW, L), x.dtype)
    bt = scratch("expanded_bt", (F, 1, L), x.dtype)
    _by_residue(np.ascontiguousarray(w.transpose(2, 0, 1, 3)).reshape(C * KH * KW, F), wt)
    _by_residue((np.zeros(F, dtype=x.dtype) if b is None else b).reshape(1, F), bt)
    padded, pitch = _bordered_buffers(x, padding, nt)
    _expanded_conv(x, padding[0], padding[2], wt, bt.reshape(F, L), y, KH, KW, padded, pitch,
                   relu, nt)
    return y


def _weight_grad_expanded(dy, x, w, padding, nt):
    """``(dw, db)`` by expanded rows: per-chunk partial sums by residue, added in chunk order,
    then folded into channels."""
    KH, KW, C, F = w.shape
    L, chunks = _lanes(x.dtype), min(x.shape[0], WEIGHT_GRAD_CHUNKS)
    padded, pitch = _bordered_buffers(x, padding, nt)
    dwacc = scratch("dwc", (chunks, F, C * KH * KW, L), x.dtype)
    dbacc = scratch("dbc", (chunks, F, L), x.dtype)
    dw, db = np.empty(w.shape, dtype=x.dtype), np.empty(F, dtype=x.dtype)
    _expanded_weight_grad(x, padding[0], padding[2], dy, dwacc, dbacc, KH, KW, padded, pitch,
                          _residue_fold_index(KH, KW, C, F, L), dw,
                          _residue_fold_index(1, 1, 1, F, L), db, nt)
    return dw, db


@functools.lru_cache(maxsize=64)
def _residue_fold_index(KH: int, KW: int, C: int, F: int, L: int) -> np.ndarray:
    """``(KH * KW * C * F, L)``: where the L partial sums of ``dw[kh, kw, c, f]`` lie in a chunk
    ``(F, C * KH * KW, L)`` of :func:`_expanded_weight_grad`'s sums by residue (residue p, lane l
    holds channel ``(p + l) % F``; see :func:`_by_residue`), in order of p, then l."""
    T = C * KH * KW
    p, lane = np.divmod(np.arange(F * L), L)
    by_channel = np.argsort((p + lane) % F, kind="stable")  # each channel's L (p, l), in order
    offsets = (p * T * L + lane)[by_channel].reshape(F, L)
    t = np.arange(T).reshape(C, KH, KW).transpose(1, 2, 0)  # dw[kh, kw, c] is row t of (T, F)
    return _read_only((t[..., None, None] * L + offsets).reshape(-1, L))


def _input_grad_direct(dy, x, w, stride, padding, dilation, dx, nt):
    """Input gradient, into ``dx``, by the cheaper of a pixel-lane transposed convolution and
    kernel-row spans; always the former for a dilated kernel row when ``dy`` holds a NaN or
    infinity, which the span's zero weights between the taps would spread to cells the kernel
    skips (0 * inf is NaN), else the latter when ``w`` does, which the former would multiply by
    the zeros interleaved into and around ``dy``."""
    planar = _input_grad_planar_is_cheaper(x.shape, w.shape, stride, padding, dilation,
                                           _lanes(x.dtype))
    if not planar or not _all_finite(w):
        planar = dilation[1] > 1 and not _all_finite(dy)
    if planar:
        return _input_grad_planar(dy, x, w, stride, padding, dilation, dx, nt)
    if _slides(x.shape, w.shape, stride, padding, dilation, x.itemsize):
        return _input_grad_slide(dy, x, w, stride, padding, dilation, dx, nt)
    return _input_grad_spans(dy, x, w, stride, padding, dilation, dx, nt)


def _all_finite(a) -> bool:
    """No NaN or infinity in ``a`` (one summing pass; a sum overflowing to infinity also says
    False, which only costs the choice of the other, equally exact, kernel)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf, or a sum past the range
        return bool(np.isfinite(np.add.reduce(a, axis=None)))


@functools.lru_cache(maxsize=256)
def _input_grad_planar_is_cheaper(x_shape, w_shape, stride, padding, dilation, L: int) -> bool:
    """The cost model's choice between the input-gradient kernels (cached per shape)."""
    _, H, W, C = x_shape
    KH, KW, _, F = w_shape
    Ho, Wo = _output_hw(x_shape, w_shape, stride, padding, dilation)
    dil_w = dilation[1]
    planar = _cost_pixel_lanes(H, W + (KW - 1) * dil_w, KH * KW * F, C, L)
    return planar < _cost_spans(H, Ho, Wo, KH, ((KW - 1) * dil_w + 1) * C, F, L)


def _input_grad_planar(dy, x, w, stride, padding, dilation, dx, nt):
    """Input gradient as a stride-1 transposed convolution in pixel lanes: ``dy`` zero-interleaved
    by the stride and padded by the kernel extent, convolved with the flipped kernel (few input
    channels)."""
    N, H, W, C = x.shape
    KH, KW, _, F = w.shape
    (sh, sw), (top, _, left, _), (dh, dw) = stride, padding, dilation
    w_flipped = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))
    return _conv_via_planes(dy, ((KH - 1) * dh - top, (KW - 1) * dw - left), stride,
                            (H + (KH - 1) * dh, W + (KW - 1) * dw), w_flipped,
                            np.zeros(C, dtype=x.dtype), dx, dilation, False, nt)


# The sliding input gradient takes one task per sample: batches of fewer samples go by rows.
SLIDE_MIN_SAMPLES = 8
# ... and each thread's padded input gradient of one sample is at most this big (an L2 cache).
SLIDE_MAX_BYTES = 1 << 21


def _slides(x_shape, w_shape, stride, padding, dilation, itemsize: int) -> bool:
    """The input gradient slides down the rows (:func:`_input_grad_slide`) rather than gathering
    them (:func:`_input_grad_spans`): vertical stride and dilation 1, a kernel no taller than
    the kernels' registers allow (``slide_kh``: 7 rows with AVX-512, else 5), at least
    SLIDE_MIN_SAMPLES samples of at most SLIDE_MAX_BYTES once padded."""
    rows, pitch = _slide_rows(x_shape, w_shape, padding, dilation[1], itemsize)
    return (stride[0] == dilation[0] == 1 and w_shape[0] <= cnx_f.slide_kh
            and x_shape[0] >= SLIDE_MIN_SAMPLES and rows * pitch * itemsize <= SLIDE_MAX_BYTES)


def _slide_rows(x_shape, w_shape, padding, dil_w: int, itemsize: int) -> tuple[int, int]:
    """``(rows, pitch)`` of one sample's padded input gradient for the sliding input gradient:
    the padded rows, each with a vector of slack past the last kernel row span."""
    _, H, W, C = x_shape
    KW = w_shape[1]
    top, bottom, left, right = padding
    lanes = cnx_f.vbytes // itemsize
    return H + top + bottom, (W + left + right) * C + _round_up(((KW - 1) * dil_w + 1) * C, lanes)


def _input_grad_slide(dy, x, w, stride, padding, dilation, dx, nt):
    """Input gradient, sample by sample, sliding down the rows: each output-gradient value,
    broadcast, times every kernel row's (kw, c) span of weights in vector lanes, added to the
    input rows it reaches (vertical stride and dilation 1)."""
    KH, KW, C, F = w.shape
    (top, _, left, _), dil_w = padding, dilation[1]
    span = ((KW - 1) * dil_w + 1) * C
    wt = scratch("span_wt", (KH, F, _round_up(span, _lanes(x.dtype))), x.dtype)
    bufs = scratch("dx_rows", (nt, *_slide_rows(x.shape, w.shape, padding, dil_w, x.itemsize)),
                   x.dtype)
    _slide_input_grad(dy, w, dil_w, wt, span, stride[1], top, left, bufs, dx, nt)
    return dx


def _input_grad_spans(dy, x, w, stride, padding, dilation, dx, nt):
    """Input gradient gathered row by row: each input row sums, over the kernel rows that reach
    it, every output pixel's gradient times the kernel row's (kw, c) span in vector lanes (few
    input channels, or strided)."""
    N, H, W, C = x.shape
    KH, KW, _, F = w.shape
    (sh, sw), (top, bottom, left, right), (dh, dw) = stride, padding, dilation
    span = ((KW - 1) * dw + 1) * C
    Sp = _round_up(span, _lanes(x.dtype))
    wt = scratch("span_wt", (KH, F, Sp), x.dtype)
    rb = cnx_f.rb
    khs, nks, blocks, sizes = _row_blocks(N, H, dy.shape[1], KH, sh, dh, top, rb)
    dy_rows = scratch("dy_rows", (nt, rb * KH), np.intp)
    bufs = scratch("dx_rows", (nt, rb, (W + left + right) * C + Sp), x.dtype)
    _span_input_grad(dy, w, dw, wt, span, khs, nks, blocks, sizes, sh, sw, dh, top, left,
                     dy_rows, bufs, dx, nt)
    return dx


@functools.lru_cache(maxsize=16)
def _row_blocks(N: int, H: int, Ho: int, KH: int, sh: int, dh: int, top: int, rb: int):
    """``(khs, nks, blocks, sizes)`` for :func:`_span_input_grad`. The kernel rows ``kh`` that
    reach input row ``ih`` (``ih + top - kh*dh`` is ``sh`` times an output row) are
    ``khs[ih, :nks[ih]]``. Block ``k`` lists ``sizes[k] <= rb`` rows ``(n, ih)`` reached by the
    same kernel rows in ``blocks[k] (rb, 2)`` (padded with its first row), samples ``rb`` at a
    time (so that a thread's blocks share samples), one row for a whole block where it can."""
    reach = [tuple(kh for kh in range(KH)
                   if (ih + top - kh * dh) % sh == 0 and 0 <= (ih + top - kh * dh) // sh < Ho)
             for ih in range(H)]
    groups: dict[tuple, list] = {}
    for ih, kernel_rows in enumerate(reach):
        groups.setdefault(kernel_rows, []).append(ih)
    khs = np.zeros((H, KH), dtype=np.intp)
    for ih, kernel_rows in enumerate(reach):
        khs[ih, : len(kernel_rows)] = kernel_rows
    blocks, sizes = [], []
    for n0 in range(0, N, rb):
        for rows in groups.values():
            items = [(n, ih) for ih in rows for n in range(n0, min(N, n0 + rb))]
            for i in range(0, len(items), rb):
                block = items[i : i + rb]
                sizes.append(len(block))
                blocks.append(block + block[:1] * (rb - len(block)))
    return tuple(map(_read_only, (khs, np.array([len(r) for r in reach], dtype=np.intp),
                                  np.array(blocks, dtype=np.intp).reshape(-1, rb, 2),
                                  np.array(sizes, dtype=np.intp))))


# Cost model (vector multiply-adds per sample) choosing between the direct kernels. Pixel-lane
# kernels load a vector per multiply-add, hence the factor 2; each update of an input-gradient
# vector (a read-modify-write) costs about 2 multiply-adds.
def _cost_channel_lanes(Ho, Wo, taps, Cout, L) -> int:
    return Ho * _round_up(Wo, cnx_f.rb) * taps * -(-Cout // L)


def _cost_pixel_lanes(Ho, pitch, taps, Cout, L) -> int:
    return 2 * Ho * pitch * taps * Cout // L


def _cost_wgrad_channel_lanes(Ho, Wo, KH, row_taps, F, L) -> int:
    return Ho * Wo * KH * _round_up(row_taps, cnx_f.rb) * -(-F // L)


def _cost_wgrad_spans(Ho, Wo, KH, span, F, L) -> int:
    return Ho * Wo * KH * F * -(-span // L)


def _cost_wgrad_pixel_lanes(Ho, pitch, taps, C, F, L) -> int:
    return F * C * _round_up(taps, cnx_f.rb) * -(-Ho * pitch // L)


def _cost_spans(H, Ho, Wo, KH, span, F, L) -> int:
    return Wo * -(-span // L) * (Ho * KH * F + 2 * H)


# Expanded rows count their lane permutes too (they take the multiply-add ports): the forward
# computes blocks of EXPANDED_ROWS rows (a last half block is counted whole), one permute per
# row and kernel column feeding up to KH rows; the weight gradient one permute per row and
# column (measured to cost about half a multiply-add there), and about 2 * KH vectors to set up
# and store per column.
def _cost_expanded(Ho, Wo, KH, row_taps, F, L) -> int:
    per_column = EXPANDED_ROWS * KH + EXPANDED_ROWS + KH - 1
    return _round_up(Ho, EXPANDED_ROWS) * -(-Wo * F // L) * row_taps * per_column // EXPANDED_ROWS


def _cost_wgrad_expanded(Ho, Wo, KH, row_taps, F, L) -> int:
    return -(-Wo * F // L) * row_taps * (Ho * (2 * KH + 1) + 4 * KH) // 2


def _conv_via_planes(src, origin, spread, plane_hw, w, bias, y, dilation, relu, nt):
    """Stride-1 convolution computed with pixels in vector lanes (few output channels).

    ``src (N, A, B, Cin)`` goes into zeroed channel planes of ``plane_hw`` cells, cell
    ``(i, j)`` at ``origin + (i, j) * spread`` (padding, or zero-interleaving for a transposed
    convolution); the planes are convolved with ``w (KH, KW, Cin, Cout)`` at ``dilation`` and
    ``bias (Cout,)`` is added (then ReLU with ``relu``), giving ``y (N, Ho, Wo, Cout)``
    (returned).
    """
    N, Ho, Wo, _ = y.shape
    KH, KW, Cin, Cout = w.shape
    (rows, pitch), (dh, dw) = plane_hw, dilation
    qoff = (np.arange(KH)[:, None] * dh * pitch + np.arange(KW) * dw).ravel().astype(np.intp)
    nq = max(Ho * pitch, cnx_f.qb * _lanes(src.dtype))  # outputs computed per plane
    # each thread's input planes (one sample) and output planes (one group of channels)
    planes = scratch("planes", (nt, Cin, max(rows * pitch, nq + int(qoff.max()))), src.dtype,
                      zero=True)
    out = scratch("planes_out", (nt, PLANAR_GROUP, nq), src.dtype)
    _planar_conv(src, rows, pitch, origin[0], origin[1], spread[0], spread[1], qoff,
                 w.reshape(KH * KW, Cin, Cout), bias, y, KH, dh, dw, planes,
                 np.full(nt, -1, dtype=np.intp), out, relu, nt)
    return y


def _gemm_chunk(N, Ho, Wo, K) -> int:
    """Samples per im2col buffer: as many as fit GEMM_TILE_ELEMENTS, at least one."""
    return max(1, min(N, GEMM_TILE_ELEMENTS // (Ho * Wo * K)))


def _forward_gemm(x, w, b, stride, padding, dilation, y, relu):
    N, H, W, C = x.shape
    KH, KW, _, F = w.shape
    _, Ho, Wo, _ = y.shape
    (sh, sw), (top, _, left, _), (dh, dw) = stride, padding, dilation
    K, P = KH * KW * C, Ho * Wo
    # im2col/col2im stay on one thread: OpenMP workers spinning after a parallel region would
    # fight BLAS's threads for the cores.
    nt = 1
    w2d = w.reshape(K, F)
    y2d = y.reshape(N * P, F)
    step = _gemm_chunk(N, Ho, Wo, K)
    cols = scratch("cols", (step * P, K), x.dtype)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        _im2col(x, cols, n0, n1, Ho, Wo, KH, KW, sh, sw, top, left, dh, dw, nt)
        np.matmul(cols[: (n1 - n0) * P], w2d, out=y2d[n0 * P : n1 * P])
    if b is not None:
        y2d += b
    if relu:
        np.maximum(y2d, 0, out=y2d)
    return y


def _backward_gemm(dy, x, w, stride, padding, dilation, dx):
    """``(dx, dw, db)``; the input gradient is written into ``dx`` unless that is None."""
    N, H, W, C = x.shape
    KH, KW, _, F = w.shape
    _, Ho, Wo, _ = dy.shape
    (sh, sw), (top, _, left, _), (dh, dw) = stride, padding, dilation
    K, P = KH * KW * C, Ho * Wo
    # im2col/col2im stay on one thread: OpenMP workers spinning after a parallel region would
    # fight BLAS's threads for the cores.
    nt = 1
    w2d = w.reshape(K, F)
    dy2d = dy.reshape(N * P, F)
    step = _gemm_chunk(N, Ho, Wo, K)
    cols = scratch("cols", (step * P, K), x.dtype)
    dcols = scratch("dcols", (step * P, K), x.dtype) if dx is not None else None
    dw2d = np.zeros((K, F), dtype=x.dtype)
    part = np.empty_like(dw2d)
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        m = (n1 - n0) * P
        dy_chunk = dy2d[n0 * P : n1 * P]
        _im2col(x, cols, n0, n1, Ho, Wo, KH, KW, sh, sw, top, left, dh, dw, nt)
        np.matmul(cols[:m].T, dy_chunk, out=part)
        dw2d += part
        if dx is not None:
            np.matmul(dy_chunk, w2d.T, out=dcols[:m])
            _col2im(dcols, dx, n0, n1, Ho, Wo, KH, KW, sh, sw, top, left, dh, dw, nt)
    parts = np.empty((min(N * P, WEIGHT_GRAD_CHUNKS), F), dtype=x.dtype)
    _column_sums(dy2d, parts, nt)
    return dx, dw2d.reshape(KH, KW, C, F), parts.sum(axis=0)
