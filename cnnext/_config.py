"""Thread count and build/runtime introspection.

The kernels read :func:`get_num_threads` on every call and pass it to OpenMP as ``num_threads``,
so the setting holds in every Python thread. :func:`set_num_threads` also limits numpy's BLAS pool
to the same count (via threadpoolctl), so OpenMP and BLAS never oversubscribe the cores.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np

try:
    from ._ext import _openmp
except ImportError:  # compiled kernels not built
    _openmp = None

__version__ = "0.1.0"


def openmp_enabled() -> bool:
    return bool(_openmp is not None and _openmp.openmp_enabled())


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _default_threads() -> int:
    if not openmp_enabled():
        return 1
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return _available_cores()


MAX_THREADS = 4096  # more would only make OpenMP try to start absurd numbers of threads
_num_threads = _default_threads()
_blas_limiter = None


def get_num_threads() -> int:
    """Threads the compiled kernels use (1 when built without OpenMP)."""
    return _num_threads


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in the kernels and in numpy's BLAS; ``None`` restores the default
    (``OMP_NUM_THREADS`` when set, else the usable cores)."""
    global _num_threads, _blas_limiter
    if n is None:
        n = _default_threads()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads expects an int or None, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads expects n >= 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"set_num_threads expects n <= {MAX_THREADS}, got {n}")
    _num_threads = int(n) if openmp_enabled() else 1
    from threadpoolctl import threadpool_limits

    if _blas_limiter is not None:
        _blas_limiter.restore_original_limits()
    _blas_limiter = threadpool_limits(limits=int(n), user_api="blas")


def config() -> dict[str, Any]:
    """Build and runtime facts as a dict (what :func:`show_config` prints)."""
    from . import backend

    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "compiled_kernels": "cython" in backend.available_backends(),
        "compiled_import_error": backend.COMPILED_IMPORT_ERROR,
        "openmp": openmp_enabled(),
        "num_threads": get_num_threads(),
        "available_cores": _available_cores(),
        "default_backend": backend.get_backend(),
        "backends": backend.available_backends(),
        "dtypes": ["float32", "float64"],
    }


def show_config() -> None:
    """Print :func:`config` as aligned ``key: value`` lines."""
    cfg = config()
    width = max(map(len, cfg))
    for key, value in cfg.items():
        if value is None:
            continue
        print(f"{key:<{width}} : {value}")
