"""Argument normalisation and output-size arithmetic shared by :mod:`cnnext.ops` and the layers.

Conventions (channels-last): spatial sizes are ``(h, w)`` pairs of ints; a resolved padding is a
``(top, bottom, left, right)`` tuple of non-negative ints.

Padding specs accepted everywhere:

- ``int p``: ``p`` cells on every side;
- ``(ph, pw)``: ``ph`` cells top and bottom, ``pw`` cells left and right;
- ``"valid"``: no padding;
- ``"same"``: the TensorFlow/Keras rule. Along one axis with input ``n``, kernel ``k``, stride ``s``
  and dilation ``d`` the output has ``ceil(n / s)`` cells and the padding totals
  ``max((ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)``. An odd total puts the extra cell at the
  bottom (rows) or right (columns): ``top = total // 2``, ``bottom = total - top``. PyTorch's
  ``padding="same"`` splits the same way but only supports stride 1.
"""
from __future__ import annotations

from numbers import Integral
from typing import Union

Pair = tuple[int, int]
Padding4 = tuple[int, int, int, int]
PaddingSpec = Union[int, Pair, str]

PADDING_MODES = ("same", "valid")
MAX_INT = 2**31 - 1  # largest size/stride/padding accepted: the compiled kernels use C ints


def _as_int(value: object) -> int | None:
    """``value`` as an int when it is an integer (numpy integers included, bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        return None
    return int(value)


def to_pair(value: int | Pair, name: str, minimum: int = 1) -> Pair:
    """Normalise an ``int`` or an ``(h, w)`` pair of ints to a pair of ints ``>= minimum``.

    Raises TypeError for anything that is not an int or a pair of ints (``bool`` included) and
    ValueError for values below ``minimum`` or above ``MAX_INT``; the messages quote ``name`` and
    the received value.
    """
    if type(value) is int and minimum <= value <= MAX_INT:  # fast path for the common case
        return (value, value)
    what = "positive int" if minimum == 1 else f"int >= {minimum}"
    message = f"{name} must be a {what} or a pair of them (h, w); received {name}={value!r}"
    single = _as_int(value)
    if single is not None:
        pair: Pair = (single, single)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        h, w = _as_int(value[0]), _as_int(value[1])
        if h is None or w is None:
            raise TypeError(message)
        pair = (h, w)
    else:
        raise TypeError(message)
    if min(pair) < minimum:
        raise ValueError(message)
    if max(pair) > MAX_INT:
        raise ValueError(f"{name} is too large (at most {MAX_INT}); received {name}={value!r}")
    return pair


def check_padding(padding: PaddingSpec) -> str | Pair:
    """Validate a padding spec without knowing the input size.

    Returns ``"same"`` or ``"valid"`` (lower-cased) or an ``(ph, pw)`` pair of non-negative ints.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in PADDING_MODES:
            raise ValueError(
                "padding must be an int, a pair (ph, pw), 'same' or 'valid'; "
                f"received padding={padding!r}"
            )
        return mode
    return to_pair(padding, "padding", minimum=0)


def same_padding_1d(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """``(before, after)`` padding of one axis under the "same" rule (extra cell goes after)."""
    out = -(-size // stride)  # ceil(size / stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_padding(
    padding: PaddingSpec, in_hw: Pair, kernel_hw: Pair, stride: Pair, dilation: Pair = (1, 1)
) -> Padding4:
    """Turn a padding spec into ``(top, bottom, left, right)`` for an input of ``in_hw`` cells.

    ``kernel_hw``, ``stride`` and ``dilation`` are already-normalised ``(h, w)`` pairs; they only
    matter for ``"same"``.
    """
    if type(padding) is int and 0 <= padding <= MAX_INT:  # fast path for the common case
        return (padding, padding, padding, padding)
    spec = check_padding(padding)
    if spec == "valid":
        return (0, 0, 0, 0)
    if spec == "same":
        top, bottom = same_padding_1d(in_hw[0], kernel_hw[0], stride[0], dilation[0])
        left, right = same_padding_1d(in_hw[1], kernel_hw[1], stride[1], dilation[1])
        return (top, bottom, left, right)
    ph, pw = spec
    return (ph, ph, pw, pw)


def dilated_kernel_hw(kernel_hw: Pair, dilation: Pair = (1, 1)) -> Pair:
    """Rows and columns a dilated kernel spans: ``d * (k - 1) + 1`` per axis."""
    return (dilation[0] * (kernel_hw[0] - 1) + 1, dilation[1] * (kernel_hw[1] - 1) + 1)


def padded_hw(in_hw: Pair, padding: Padding4) -> Pair:
    """Input size after padding with ``(top, bottom, left, right)``."""
    top, bottom, left, right = padding
    return (in_hw[0] + top + bottom, in_hw[1] + left + right)


def clamped_stride(in_hw: Pair, padding: Padding4, span: Pair, stride: Pair) -> Pair:
    """``stride`` capped at the room a kernel spanning ``span`` cells has in the padded input:
    a larger stride leaves one output row/column all the same, so the result is unchanged, and no
    kernel sizes its buffers by an absurd stride."""
    room = padded_hw(in_hw, padding)
    return (min(stride[0], room[0] - span[0] + 1), min(stride[1], room[1] - span[1] + 1))


def conv_output_hw(
    in_hw: Pair, kernel_hw: Pair, stride: Pair, padding: Padding4, dilation: Pair = (1, 1)
) -> Pair:
    """Output ``(Ho, Wo)`` of a convolution: ``(H + top + bottom - d*(KH-1) - 1) // sh + 1``.

    The caller makes sure the dilated kernel fits in the padded input (otherwise the result is
    < 1).
    """
    ph, pw = padded_hw(in_hw, padding)
    eh, ew = dilated_kernel_hw(kernel_hw, dilation)
    return ((ph - eh) // stride[0] + 1, (pw - ew) // stride[1] + 1)


def pool_output_hw(in_hw: Pair, size: Pair, stride: Pair, padding: Padding4) -> Pair:
    """Output ``(Ho, Wo)`` of a pooling window of ``size`` (a convolution without dilation)."""
    return conv_output_hw(in_hw, size, stride, padding)


def upsample_output_hw(in_hw: Pair, scale: Pair) -> Pair:
    """Output ``(H * sh, W * sw)`` of nearest-neighbour upsampling."""
    return (in_hw[0] * scale[0], in_hw[1] * scale[1])
