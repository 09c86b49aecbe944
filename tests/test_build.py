"""The build: compiled kernels import, OpenMP was not silently lost, config is reported, and the
wheel is a platform wheel carrying every extension module."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cnnext
from cnnext import backend
from cnnext._config import openmp_enabled

EXTENSIONS = ("_conv2d", "_pool2d", "_upsample2d", "_openmp")
SOURCE_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", EXTENSIONS)
def test_extension_imports(name: str) -> None:
    module = importlib.import_module(f"cnnext._ext.{name}")
    assert Path(module.__file__).suffix in (".so", ".pyd")


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


def test_wheel_is_a_platform_wheel_with_every_extension(tmp_path: Path) -> None:
    wheel = _built_wheel(tmp_path)
    assert not wheel.name.endswith("-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    for ext in EXTENSIONS:
        assert any(
            n.startswith(f"cnnext/_ext/{ext}.") and n.endswith((".so", ".pyd")) for n in names
        ), f"{ext} missing from {wheel.name}: {names}"
