"""The compiled input gradient's row plan (``_conv2d._row_blocks``): which output-gradient rows
reach each input row, and how the rows are grouped into register blocks."""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

if os.environ.get("CI") == "true":
    from cnnext._ext import _conv2d  # CI builds the kernels: missing ones must fail, never skip
else:
    _conv2d = pytest.importorskip("cnnext._ext._conv2d")


def _reaching(ih: int, top: int, KH: int, sh: int, dh: int, Ho: int) -> list[int]:
    """Kernel rows kh through which some output row oh reads input row ih:
    oh * sh + kh * dh == ih + top with 0 <= oh < Ho."""
    return [kh for kh in range(KH) for oh in range(Ho) if oh * sh + kh * dh == ih + top]


# (N, H, KH, stride, dilation, top, bottom): LeNet-5, strides, dilation, padding, a last input
# row that no window reaches, one sample, more samples than a block
CASES = [(128, 14, 5, 1, 1, 0, 0), (3, 11, 3, 2, 1, 1, 0), (5, 13, 3, 1, 3, 2, 1),
         (1, 224, 7, 2, 1, 3, 3), (2, 10, 4, 3, 1, 0, 0), (13, 6, 2, 2, 2, 0, 1)]


@pytest.mark.parametrize("N, H, KH, sh, dh, top, bottom", CASES)
@pytest.mark.parametrize("rb", [6, 12])
def test_row_blocks_cover_every_input_row_once_with_its_kernel_rows(N, H, KH, sh, dh, top,
                                                                    bottom, rb) -> None:
    Ho = (H + top + bottom - dh * (KH - 1) - 1) // sh + 1
    khs, nks, blocks, sizes = _conv2d._row_blocks(N, H, Ho, KH, sh, dh, top, rb)
    for ih in range(H):
        assert list(khs[ih, : nks[ih]]) == _reaching(ih, top, KH, sh, dh, Ho), ih
    assert blocks.shape == (len(sizes), rb, 2) and (1 <= sizes).all() and (sizes <= rb).all()
    stored = [tuple(block[r]) for block, size in zip(blocks, sizes) for r in range(size)]
    assert sorted(stored) == list(itertools.product(range(N), range(H)))
    for block, size in zip(blocks, sizes):
        rows = block[:, 1]
        assert all(nks[ih] == nks[rows[0]] and (khs[ih] == khs[rows[0]]).all() for ih in rows)
        assert (block[size:] == block[0]).all()  # the padding repeats the first row


def test_row_blocks_fill_whole_blocks_with_one_input_row_when_the_batch_allows() -> None:
    """LeNet-5's second layer at batch 128: twelve samples per block, one input row each."""
    khs, nks, blocks, sizes = _conv2d._row_blocks(128, 14, 10, 5, 1, 1, 0, 12)
    one_row = (sizes == 12) & (blocks[:, :, 1] == blocks[:, :1, 1]).all(axis=1)
    assert one_row.sum() >= 0.9 * len(blocks)  # the last 8 samples mix rows in some blocks
    assert not blocks.flags.writeable  # shared between calls


def test_forward_weights_are_packed_on_a_cache_line_boundary() -> None:
    """The forward's channel-lane kernel loads a vector of weights per tap: weights that start
    off a 64-byte boundary (numpy's allocations are only 16-byte aligned) are copied to one
    first, so that no load straddles two cache lines; aligned ones are used as they are."""
    buf = np.arange(5 * 5 * 6 * 16 + 16, dtype=np.float32)
    start = -buf.ctypes.data % 64 // 4
    aligned = buf[start : start + 2400].reshape(5, 5, 6, 16)
    shifted = buf[start + 4 : start + 2404].reshape(5, 5, 6, 16)
    assert _conv2d._pad_channels(aligned, 16) is aligned
    packed = _conv2d._pad_channels(shifted, 16)
    assert packed.ctypes.data % 64 == 0
    np.testing.assert_array_equal(packed, shifted)
    padded = _conv2d._pad_channels(shifted[..., :13], 16)
    assert padded.ctypes.data % 64 == 0 and padded.shape == (5, 5, 6, 16)
    np.testing.assert_array_equal(padded[..., :13], shifted[..., :13])
    assert not padded[..., 13:].any()
