"""The compiled convolution's expanded-row kernels (AVX-512: few input and output channels),
called directly, against the NumPy twin for every channel count they accept."""
from __future__ import annotations

import os

import numpy as np
import pytest

from cnnext.backend import numpy_ops

if os.environ.get("CI") == "true":
    from cnnext._ext import _conv2d  # CI builds the kernels: missing ones must fail, never skip
else:
    _conv2d = pytest.importorskip("cnnext._ext._conv2d")

UNIT = (1, 1)


def _lanes(dtype) -> int:
    return 16 if dtype == np.float32 else 8


def _accepted(dtype) -> list[tuple[int, int]]:
    """(C, F) pairs the expanded-row kernels take for ``dtype`` (none without AVX-512)."""
    return [(C, F) for C in (1, 2, 3, 4, 5, 8) for F in (1, 2, 3, 4, 5, 6, 7, 8, 12, 16)
            if _conv2d._use_expanded((3, 3, C, F), 17, UNIT, UNIT, _lanes(dtype))]


CASES = [(dtype, C, F) for dtype in (np.float32, np.float64) for C, F in _accepted(dtype)]


def test_the_cases_above_exist_exactly_with_avx512() -> None:
    """Without AVX-512 the test below has no cases and pytest skips it; CI declares the level it
    expects (``CNNEXT_EXPECT_SIMD``), so there that cannot pass unnoticed."""
    level = _conv2d.simd_level()
    assert bool(CASES) == (level == "avx512")
    assert os.environ.get("CNNEXT_EXPECT_SIMD", level) == level


@pytest.mark.parametrize("dtype, C, F", CASES)
@pytest.mark.parametrize("kernel, padding", [((3, 3), (1, 1, 1, 1)), ((5, 2), (2, 2, 0, 1)),
                                             ((1, 7), (0, 0, 3, 3))])
# fewer and more samples than weight-gradient chunks; 11, 14 and 16 output rows: the forward's
# last block of 8 rows is half as tall, moved back, or not needed
@pytest.mark.parametrize("n, H", [(3, 11), (20, 14), (5, 16)])
def test_expanded_rows_match_numpy(dtype, C, F, kernel, padding, n, H) -> None:
    rng = np.random.default_rng(C * 100 + F)
    x = rng.uniform(-1, 1, (n, H, 17, C)).astype(dtype)
    w = rng.uniform(-1, 1, (*kernel, C, F)).astype(dtype)
    b = rng.uniform(-1, 1, F).astype(dtype)
    want = numpy_ops.conv2d_forward(x, w, b, UNIT, padding, UNIT)
    assert want.shape[1] >= _conv2d.EXPANDED_ROWS
    got = _conv2d._forward_expanded(x, w, b, padding, np.empty_like(want))
    tol = (1e-5 if dtype == np.float32 else 1e-12) * kernel[0] * kernel[1] * C
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)

    dy = rng.uniform(-1, 1, want.shape).astype(dtype)
    _, dw_want, db_want = numpy_ops.conv2d_backward(dy, x, w, UNIT, padding, UNIT)
    dw, db = _conv2d._weight_grad_expanded(dy, x, w, padding, 2)
    tol = 1e-4 if dtype == np.float32 else 1e-12  # of the largest gradient: a 1.03x error fails
    np.testing.assert_allclose(dw, dw_want, rtol=tol, atol=tol * np.abs(dw_want).max())
    np.testing.assert_allclose(db, db_want, rtol=tol, atol=tol * np.abs(db_want).max())
    assert dw.dtype == db.dtype == dtype
