"""Thread count: results do not depend on it (beyond float rounding), and it is set and read
correctly (set_num_threads validation, OMP_NUM_THREADS at import)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import cnnext
from cnnext import ops

THREAD_COUNTS = [1, 2, 4]
REPO_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(cnnext.__file__)))


def run_all_ops(backend: str, dtype) -> list[np.ndarray]:
    """Every op and direction on inputs large enough to be split over several threads."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 12, 11, 5)).astype(dtype)
    w = rng.standard_normal((3, 3, 5, 6)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    conv = {"stride": (2, 1), "padding": "same", "dilation": 1}
    y = ops.conv2d(x, w, b, **conv, backend=backend)
    results = [y, *ops.conv2d_backward(y, x, w, **conv, backend=backend)]
    for mode in ("max", "min", "avg"):
        pool = {"size": 3, "stride": 2, "padding": 1, "mode": mode}
        p = ops.pool2d(x, **pool, backend=backend)
        results += [p, ops.pool2d_backward(p, x, **pool, backend=backend)]
    u = ops.upsample2d(x, (2, 3), backend=backend)
    results += [u, ops.upsample2d_backward(u, (2, 3), backend=backend)]
    flat = x.reshape(8, -1)
    for n in (8, 70):  # few rows: the threads split the columns; many: the rows
        rows = np.resize(flat, (n, flat.shape[1]))
        kernel = rng.standard_normal((flat.shape[1], 70)).astype(dtype)
        d = ops.dense(rows, kernel, b[:1].repeat(70), backend=backend)
        results += [d, *ops.dense_backward(d, rows, kernel, backend=backend)]
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_thread_count(compiled_backend, dtype):
    cnnext.set_num_threads(1)
    reference = run_all_ops(compiled_backend, dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert len(reference) == 20
    for n in THREAD_COUNTS[1:]:
        cnnext.set_num_threads(n)
        for got, want in zip(run_all_ops(compiled_backend, dtype), reference):
            scale = max(1.0, float(np.abs(want).max()))
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def test_set_num_threads_round_trips():
    cnnext.set_num_threads(3)
    assert cnnext.get_num_threads() == (3 if cnnext.config()["openmp"] else 1)
    cnnext.set_num_threads(np.int64(2))
    assert cnnext.get_num_threads() == (2 if cnnext.config()["openmp"] else 1)


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_rejects_non_positive(bad):
    with pytest.raises(ValueError, match=f"n >= 1, got {bad}"):
        cnnext.set_num_threads(bad)


@pytest.mark.parametrize("bad", ["2", 2.0, True])
def test_set_num_threads_rejects_non_integers(bad):
    with pytest.raises(TypeError, match=f"expects an int or None, got {type(bad).__name__}"):
        cnnext.set_num_threads(bad)


def run_python(code: str, **env_vars: str | None) -> subprocess.CompletedProcess:
    """``python -c code`` importing this checkout's cnnext, with ``env_vars`` set (None: unset);
    a hang fails after two minutes instead of stalling the suite."""
    env = {k: v for k, v in os.environ.items() if k not in env_vars}
    env.update({k: v for k, v in env_vars.items() if v is not None})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_PARENT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, timeout=120)


def threads_in_subprocess(omp_num_threads: str | None) -> int:
    out = run_python("import cnnext; print(cnnext.get_num_threads())",
                     OMP_NUM_THREADS=omp_num_threads)
    return int(out.stdout.strip())


def test_get_num_threads_honours_omp_num_threads():
    if not cnnext.config()["openmp"]:
        assert threads_in_subprocess("3") == 1  # a serial build always runs one thread
        return
    assert threads_in_subprocess("3") == 3
    assert threads_in_subprocess("1") == 1


@pytest.mark.parametrize("value", ["\u00b2", "5000", "3.5", "-2"])
def test_odd_omp_num_threads_values_neither_break_the_import_nor_exceed_the_cap(value):
    """"²" passes str.isdigit but not int(): the import used to fail; 5000 skipped the cap."""
    cores = threads_in_subprocess(None)
    expected = min(5000, cnnext._config.MAX_THREADS) if value == "5000" else cores
    assert threads_in_subprocess(value) == (expected if cnnext.config()["openmp"] else 1)


FORKED_CHILD = """
import os, sys, warnings
import numpy as np
import cnnext
from cnnext import ops
cnnext.set_num_threads(2)
x = np.random.default_rng(0).standard_normal((8, 12, 12, 3)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((3, 3, 3, 4)).astype(np.float32)
early = os.fork()  # before any kernel: the child keeps its threads (no team to inherit)
if early == 0:
    os._exit(0 if cnnext.get_num_threads() == 2 and ops.conv2d(x, w).shape == (8, 10, 10, 4)
             else 1)
_, status = os.waitpid(early, 0)
print(os.waitstatus_to_exitcode(status))
y = ops.conv2d(x, w)  # the parent's OpenMP team now exists
pid = os.fork()
if pid == 0:
    ok = np.array_equal(ops.conv2d(x, w), y) and cnnext.get_num_threads() == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cnnext.set_num_threads(2)
    ok = ok and cnnext.get_num_threads() == 1 and "forked" in str(caught[0].message)
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), cnnext.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_runs_the_kernels_on_one_thread_instead_of_hanging():
    """GNU OpenMP cannot start a team in a child forked after the parent ran one: the child
    used to hang in its first kernel (multiprocessing's default start method on Linux)."""
    if not cnnext.config()["openmp"]:
        pytest.skip("a build without OpenMP has no thread team to lose")
    out = run_python(FORKED_CHILD)
    assert out.stdout.split() == ["0", "0", "2"], out.stderr


def test_set_num_threads_warns_when_the_build_has_no_openmp(monkeypatch):
    monkeypatch.setattr(cnnext._config, "openmp_enabled", lambda: False)
    try:
        with pytest.warns(RuntimeWarning, match="built without OpenMP"):
            cnnext.set_num_threads(2)
        assert cnnext.get_num_threads() == 1
    finally:
        monkeypatch.undo()
        cnnext.set_num_threads(None)


def test_set_num_threads_none_restores_the_default():
    cnnext.set_num_threads(1)
    cnnext.set_num_threads(None)
    assert cnnext.get_num_threads() == threads_in_subprocess(os.environ.get("OMP_NUM_THREADS"))
