"""The build: compiled kernels import, OpenMP was not silently lost, config is reported, and the
wheel is a platform wheel carrying every extension module."""
from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import cnnext
from cnnext import backend
from cnnext._config import openmp_enabled
from cnnext.backend import numpy_ops

EXTENSIONS = ("_conv2d", "_pool2d", "_upsample2d", "_dense", "_activation", "_softmax",
              "_optimizers", "_openmp")
SIMD_LEVELS = ("avx512", "avx2", "baseline")  # simd_level() of _conv2d, _pool2d and _dense
SOURCE_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", EXTENSIONS)
def test_extension_imports(name: str) -> None:
    module = importlib.import_module(f"cnnext._ext.{name}")
    assert Path(module.__file__).suffix in (".so", ".pyd")


PUBLIC_MODULES = sorted(
    info.name for info in pkgutil.walk_packages(cnnext.__path__, "cnnext.")
    if not any(part.startswith("_") for part in info.name.split("."))
)


@pytest.mark.parametrize("name", ["cnnext", *PUBLIC_MODULES])
def test_star_import_of_every_public_module(name: str) -> None:
    module = importlib.import_module(name)
    namespace: dict = {}
    exec(f"from {name} import *", namespace)  # an __all__ naming a missing attribute fails here
    assert set(getattr(module, "__all__", ())) <= set(namespace)


def test_compiled_backend_provides_every_op() -> None:
    assert "cython" in backend.available_backends(), backend.COMPILED_IMPORT_ERROR
    table = backend.resolve("cython")
    for op in backend.OP_NAMES:
        assert callable(getattr(table, op)), op
        assert getattr(table, op).__module__.startswith("cnnext._ext."), op


@pytest.mark.skipif(
    os.environ.get("CNNEXT_EXPECT_OPENMP") != "1",
    reason="set CNNEXT_EXPECT_OPENMP=1 where the compiler supports OpenMP (CI does)",
)
def test_openmp_was_not_lost() -> None:
    assert openmp_enabled(), "the kernels were built without OpenMP (see the build warning)"
    cnnext.set_num_threads(2)
    assert cnnext.get_num_threads() == 2


def test_thread_count_matches_the_build() -> None:
    from cnnext._ext import _openmp

    assert openmp_enabled() == bool(_openmp.openmp_enabled())
    cnnext.set_num_threads(3)
    assert cnnext.get_num_threads() == (3 if openmp_enabled() else 1)


def test_show_config_reports_the_build(capsys: pytest.CaptureFixture[str]) -> None:
    cnnext.show_config()
    lines = dict(
        (key.strip(), value.strip())
        for key, value in (line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    )
    assert lines["version"] == cnnext.__version__
    assert lines["openmp"] == str(openmp_enabled())
    assert lines["num_threads"] == str(cnnext.get_num_threads())
    assert lines["default_backend"] == cnnext.get_backend()
    assert lines["compiled_kernels"] == "True"
    assert lines["simd"] in SIMD_LEVELS


def test_config_reports_the_simd_level() -> None:
    config = cnnext.config()
    assert "simd" in config
    if not config["compiled_kernels"]:
        assert config["simd"] is None
        return
    from cnnext._ext import _conv2d

    from cnnext._ext import _dense, _pool2d

    assert config["simd"] in SIMD_LEVELS
    assert config["simd"] == _conv2d.simd_level() == _pool2d.simd_level() == _dense.simd_level()


def _built_wheel(tmp_path: Path) -> Path:
    """The wheel scripts/test.sh built (CNNEXT_WHEEL), else a fresh build of the source tree."""
    if os.environ.get("CNNEXT_WHEEL"):
        return Path(os.environ["CNNEXT_WHEEL"])
    if not (SOURCE_ROOT / "setup.py").exists():
        pytest.skip("needs the source tree (setup.py) or CNNEXT_WHEEL")
    cmd = [sys.executable, "-m", "pip", "wheel", str(SOURCE_ROOT), "-w", str(tmp_path),
           "--no-deps", "-q"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("cnnext-*.whl")
    return wheel


# (N, H, W, C, KH, KW, F, stride, padding, dilation): few and many channels, strides, dilation,
# asymmetric padding, so every direct kernel (and the GEMM path below AVX-512) runs.
CONV_CASES = [
    (3, 9, 8, 1, 5, 5, 6, (1, 1), (2, 2, 2, 2), (1, 1)),
    (2, 10, 9, 6, 3, 2, 16, (1, 1), (0, 1, 2, 0), (1, 2)),
    (2, 9, 11, 5, 3, 3, 7, (2, 3), (1, 0, 0, 2), (2, 1)),
    (2, 8, 8, 16, 3, 3, 40, (1, 1), (1, 1, 1, 1), (1, 1)),
    # kernel-row spans of several vectors (the last moved back), channels in uneven blocks
    (3, 14, 14, 6, 5, 5, 13, (1, 1), (0, 0, 0, 0), (1, 1)),
    (2, 12, 13, 4, 4, 5, 9, (2, 1), (1, 2, 0, 1), (1, 1)),
    # enough samples for the sliding input gradient (spans of one to three vectors)
    (8, 10, 9, 6, 5, 5, 16, (1, 1), (0, 0, 0, 0), (1, 1)),
    (8, 9, 10, 3, 4, 3, 9, (1, 2), (1, 2, 1, 0), (1, 1)),
    (8, 11, 8, 12, 3, 3, 5, (1, 1), (1, 1, 1, 1), (1, 1)),
]


@contextlib.contextmanager
def _simd_level(module, level: str) -> Iterator[None]:
    """Run ``module``'s kernels compiled for ``level`` (skip where the CPU lacks it, unless the
    environment says, by ``CNNEXT_EXPECT_SIMD`` as CI does, that it has this level or a wider
    one)."""
    previous = module.simd_level()
    try:
        module.set_simd_level(level)
    except ValueError:
        levels = ["baseline", "avx2", "avx512"]
        expected = os.environ.get("CNNEXT_EXPECT_SIMD")
        if expected in levels and levels.index(level) <= levels.index(expected):
            pytest.fail(f"CNNEXT_EXPECT_SIMD={expected} but the {level} kernels do not run")
        pytest.skip(f"this CPU does not run the {level} kernels")
    try:
        yield
    finally:
        module.set_simd_level(previous)


@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_every_simd_level_matches_the_numpy_twin(level: str) -> None:
    from cnnext._ext import _conv2d

    with _simd_level(_conv2d, level):
        rng = np.random.default_rng(0)
        for n, h, w_, c, kh, kw, f, stride, padding, dilation in CONV_CASES:
            x = rng.standard_normal((n, h, w_, c))
            w = rng.standard_normal((kh, kw, c, f))
            b = rng.standard_normal(f)
            args = (stride, padding, dilation)
            y = _conv2d.conv2d_forward(x, w, b, *args)
            np.testing.assert_allclose(y, numpy_ops.conv2d_forward(x, w, b, *args), rtol=1e-10,
                                       atol=1e-10)
            dy = rng.standard_normal(y.shape)
            for got, want in zip(_conv2d.conv2d_backward(dy, x, w, *args),
                                 numpy_ops.conv2d_backward(dy, x, w, *args)):
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def _tile_pool_cases():
    """Tiling windows (stride = size, no padding) over every channel count up to 20 and a few
    more, on rows long and short: every vector placement of src/_pool_simd_kernels.h runs."""
    for c in (*range(1, 21), 31, 40):
        for size, hw in (((2, 2), (4, 9)), ((2, 2), (6, 28)), ((3, 2), (7, 11)), ((1, 3), (2, 14))):
            yield c, size, hw


def _tile_pool_values(rng, shape) -> np.ndarray:
    """Many ties (-1, -0.0, 0, 1) and a few NaNs: the winner's position is what is checked."""
    x = rng.choice(np.array([-1.0, -0.0, 0.0, 1.0]), size=shape)
    x.flat[rng.choice(x.size, size=max(1, x.size // 15), replace=False)] = np.nan
    return x


@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_every_simd_level_of_tile_pooling_matches_the_numpy_twin(level: str) -> None:
    from cnnext._ext import _pool2d

    with _simd_level(_pool2d, level):
        rng = np.random.default_rng(1)
        for c, size, hw in _tile_pool_cases():
            for dtype in (np.float32, np.float64):
                x = _tile_pool_values(rng, (2, *hw, c)).astype(dtype)
                for mode, relu in (("max", False), ("min", False), ("avg", False), ("max", True),
                                   ("min", True)):
                    args = (size, size, (0, 0, 0, 0), mode, None, relu)
                    where = f"{c} {size} {hw} {mode} relu={relu}"
                    y = _pool2d.pool2d_forward(x, *args)
                    want = numpy_ops.pool2d_forward(x, *args)
                    np.testing.assert_array_equal(y, want, err_msg=where)
                    if mode != "avg":  # a selection copies the winner: signs of zero agree too
                        assert np.array_equal(np.signbit(y), np.signbit(want)), where
                    dy = rng.standard_normal(y.shape).astype(dtype)
                    dy.flat[::4] = -0.0
                    got_dx = _pool2d.pool2d_backward(dy, x, *args)
                    want_dx = numpy_ops.pool2d_backward(dy, x, *args)
                    np.testing.assert_array_equal(got_dx, want_dx, err_msg=where)
                    # a zero gradient (-0.0 in dy, or masked by the ReLU) is +0.0 on both
                    assert np.array_equal(np.signbit(got_dx), np.signbit(want_dx)), where


@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_every_simd_level_of_dense_matches_the_numpy_twin(level: str) -> None:
    """Row counts around the register tile (6 or 12 rows) and column counts around one and two
    vectors (2, 4 or 8 float64 lanes, twice as many float32)."""
    from cnnext._ext import _dense

    with _simd_level(_dense, level):
        rng = np.random.default_rng(2)
        for n, d, u in ((1, 1, 1), (5, 3, 7), (13, 17, 33), (25, 8, 16), (40, 31, 65)):
            for dtype in (np.float32, np.float64):
                x, w = rng.standard_normal((n, d)), rng.standard_normal((d, u))
                b, dy = rng.standard_normal(u), rng.standard_normal((n, u))
                x, w, b, dy = (a.astype(dtype) for a in (x, w, b, dy))
                tol = 1e-12 if dtype == np.float64 else 1e-5
                np.testing.assert_allclose(_dense.dense_forward(x, w, b),
                                           numpy_ops.dense_forward(x, w, b), rtol=tol, atol=tol)
                for got, want in zip(_dense.dense_backward(dy, x, w),
                                     numpy_ops.dense_backward(dy, x, w)):
                    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_wheel_is_a_platform_wheel_with_every_extension(tmp_path: Path) -> None:
    wheel = _built_wheel(tmp_path)
    assert not wheel.name.endswith("-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    for ext in EXTENSIONS:
        assert any(
            n.startswith(f"cnnext/_ext/{ext}.") and n.endswith((".so", ".pyd")) for n in names
        ), f"{ext} missing from {wheel.name}: {names}"
