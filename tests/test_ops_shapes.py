"""cnnext.shapes: pair normalisation, padding resolution and output sizes, checked by hand."""
from __future__ import annotations

import numpy as np
import pytest

from cnnext import shapes


@pytest.mark.parametrize(
    "value, expected",
    [(3, (3, 3)), ((2, 5), (2, 5)), ([1, 4], (1, 4)), (np.int32(2), (2, 2)),
     ((np.int64(1), 2), (1, 2))],
)
def test_to_pair_accepts_ints_and_pairs(value, expected):
    pair = shapes.to_pair(value, "stride")
    assert pair == expected
    assert all(type(v) is int for v in pair)


@pytest.mark.parametrize(
    "value, exc_type",
    [(0, ValueError), ((1, 0), ValueError), (-3, ValueError), (True, TypeError), (2.0, TypeError),
     ("2", TypeError), ((1, 2, 3), TypeError), ((1, None), TypeError), (None, TypeError)],
)
def test_to_pair_rejects_with_the_value_quoted(value, exc_type):
    with pytest.raises(exc_type) as info:
        shapes.to_pair(value, "kernel_size")
    assert f"kernel_size={value!r}" in str(info.value)


def test_to_pair_minimum_zero_allows_zero_padding():
    assert shapes.to_pair((0, 2), "padding", minimum=0) == (0, 2)
    with pytest.raises(ValueError, match=r"int >= 0.*padding=-1"):
        shapes.to_pair(-1, "padding", minimum=0)


def test_check_padding():
    assert shapes.check_padding("SAME") == "same"
    assert shapes.check_padding("valid") == "valid"
    assert shapes.check_padding(1) == (1, 1)
    with pytest.raises(ValueError, match="padding='causal'"):
        shapes.check_padding("causal")


@pytest.mark.parametrize(
    "padding, in_hw, kernel, stride, dilation, expected",
    [
        (2, (5, 5), (3, 3), (1, 1), (1, 1), (2, 2, 2, 2)),
        ((1, 3), (5, 5), (3, 3), (1, 1), (1, 1), (1, 1, 3, 3)),
        ("valid", (5, 5), (3, 3), (2, 2), (1, 1), (0, 0, 0, 0)),
        # "same", stride 1: total = k - 1; an even kernel puts the odd cell bottom/right
        ("same", (5, 6), (2, 4), (1, 1), (1, 1), (0, 1, 1, 2)),
        # stride 2, H=7: out 4, total 3*2 + 3 - 7 = 2; W=6: out 3, total 2*2 + 3 - 6 = 1
        ("same", (7, 6), (3, 3), (2, 2), (1, 1), (1, 1, 0, 1)),
        # dilation 2 makes a 3-kernel span 5: total 4
        ("same", (5, 5), (3, 3), (1, 1), (2, 2), (2, 2, 2, 2)),
        # stride larger than the kernel: no padding needed
        ("same", (9, 7), (1, 2), (3, 3), (1, 1), (0, 0, 0, 1)),
    ],
)
def test_resolve_padding(padding, in_hw, kernel, stride, dilation, expected):
    assert shapes.resolve_padding(padding, in_hw, kernel, stride, dilation) == expected


@pytest.mark.parametrize("size", range(1, 12))
@pytest.mark.parametrize("kernel, stride, dilation", [(3, 1, 1), (2, 2, 1), (4, 3, 2), (1, 5, 1)])
def test_same_padding_gives_ceil_output(size, kernel, stride, dilation):
    pad = shapes.resolve_padding("same", (size, size), (kernel, kernel), (stride, stride),
                                 (dilation, dilation))
    out = shapes.conv_output_hw((size, size), (kernel, kernel), (stride, stride), pad,
                                (dilation, dilation))
    assert out == (-(-size // stride),) * 2
    assert pad[1] - pad[0] in (0, 1)


def test_output_sizes():
    assert shapes.conv_output_hw((28, 28), (5, 5), (1, 1), (2, 2, 2, 2)) == (28, 28)
    assert shapes.conv_output_hw((10, 9), (3, 2), (2, 3), (0, 1, 0, 0), (2, 1)) == (4, 3)
    assert shapes.pool_output_hw((7, 8), (2, 2), (2, 2), (0, 0, 0, 0)) == (3, 4)
    assert shapes.upsample_output_hw((3, 4), (2, 3)) == (6, 12)
    assert shapes.dilated_kernel_hw((3, 2), (2, 3)) == (5, 4)
