"""``CNNEXT_BACKEND``: a bad value warns at import and falls back to the default backend, it never
makes ``import cnnext`` (or the command line) fail; :func:`cnnext.set_backend` still raises.

Each case runs in a fresh interpreter, since the variable is read once, at import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import cnnext
from cnnext import backend

REPO_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(cnnext.__file__)))
DEFAULT = "cython" if "cython" in backend.available_backends() else "numpy"

# Imports cnnext recording every warning (whatever PYTHONWARNINGS says), then prints the backend
# and the warnings as JSON. BLOCK_COMPILED hides the compiled kernels as if they were not built.
PROBE = """
import json, sys, warnings
if {block!r}:
    sys.modules["cnnext._ext._conv2d"] = None  # ImportError on import: kernels "not built"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import cnnext
print(json.dumps({{
    "backend": cnnext.get_backend(),
    "available": cnnext.available_backends(),
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
}}))
"""


def run(args: list[str], backend_env: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CNNEXT_BACKEND", "PYTHONWARNINGS")}
    if backend_env is not None:
        env["CNNEXT_BACKEND"] = backend_env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_PARENT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=120)


def probe(backend_env: str | None, block_compiled: bool = False) -> dict:
    result = run(["-c", PROBE.format(block=block_compiled)], backend_env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def backend_warnings(report: dict) -> list[str]:
    return [message for category, message in report["warnings"]
            if "CNNEXT_BACKEND" in message and category == "RuntimeWarning"]


@pytest.mark.parametrize("value", ["cuda", "bogus", "numpy,cython"])
def test_unknown_value_warns_and_uses_the_default(value: str) -> None:
    report = probe(value)
    assert report["backend"] == DEFAULT
    (message,) = backend_warnings(report)
    assert f"CNNEXT_BACKEND={value!r}" in message
    assert f"unknown backend {value.lower()!r}" in message
    assert "'numpy'" in message and "'cython'" in message  # the valid names
    assert f"using the default backend {DEFAULT!r}" in message


def test_cython_without_compiled_kernels_warns_and_uses_numpy() -> None:
    report = probe("cython", block_compiled=True)
    assert report["available"] == ["numpy"]
    assert report["backend"] == "numpy"
    (message,) = backend_warnings(report)
    assert "CNNEXT_BACKEND='cython'" in message
    assert "not available" in message
    assert "using the default backend 'numpy'" in message


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_or_empty_value_is_the_default_without_warning(value: str | None) -> None:
    report = probe(value)
    assert report["backend"] == DEFAULT
    assert backend_warnings(report) == []


@pytest.mark.parametrize("name", backend.available_backends())
def test_valid_value_is_used_without_warning(name: str) -> None:
    report = probe(f" {name.upper()} ")
    assert report["backend"] == name
    assert backend_warnings(report) == []


def test_set_backend_still_raises_for_an_unknown_name() -> None:
    before = cnnext.get_backend()
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        cnnext.set_backend("cuda")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        with cnnext.use_backend("cuda"):
            pass
    assert cnnext.get_backend() == before


def test_set_backend_raises_for_cython_without_compiled_kernels() -> None:
    code = PROBE.format(block=True) + (
        "try:\n    cnnext.set_backend('cython')\n"
        "except ValueError as exc:\n    print('ValueError:', exc)\n"
    )
    result = run(["-c", code], None)
    assert result.returncode == 0, result.stderr
    assert "ValueError: backend 'cython' is not available" in result.stdout


def test_cli_info_with_a_bad_value_warns_once_and_succeeds() -> None:
    result = run(["-m", "cnnext", "info"], "cuda")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warning_lines = [line for line in result.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warning_lines) == 1, result.stderr
    assert "CNNEXT_BACKEND='cuda' ignored: unknown backend 'cuda'" in warning_lines[0]
    info = dict(
        (key.strip(), value.strip())
        for key, value in (line.split(":", 1) for line in result.stdout.splitlines())
    )
    assert info["default_backend"] == DEFAULT


@pytest.mark.parametrize("value", [" BASELINE ", "Baseline"])
def test_cnnext_simd_is_read_without_case_or_spaces(value: str, compiled_backend: str) -> None:
    """``CNNEXT_SIMD`` is trimmed and lower-cased like ``CNNEXT_BACKEND`` (it used to warn that
    the level " BASELINE " did not exist, once per compiled module)."""
    code = ("import warnings; warnings.simplefilter('error')\n"
            "from cnnext._ext import _conv2d, _pool2d\n"
            "print(_conv2d.simd_level(), _pool2d.simd_level())")
    env = {**os.environ, "CNNEXT_SIMD": value}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_PARENT, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["baseline", "baseline"]
