"""Thread count and build/runtime introspection.

The kernels read :func:`get_num_threads` on every call and pass it to OpenMP as ``num_threads``,
so the setting holds in every Python thread. :func:`set_num_threads` also limits numpy's BLAS pool
to the same count (via threadpoolctl), so OpenMP and BLAS never oversubscribe the cores.

A process forked from this one (``multiprocessing``'s default on Linux) after the kernels ran on
several threads runs them on one: GNU OpenMP cannot start a thread team in a child forked after
the parent ran one (the child would hang). Use the ``spawn`` or ``forkserver`` start method for
multi-threaded workers.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

try:
    from ._ext import _openmp
except ImportError:  # compiled kernels not built
    _openmp = None

__version__ = "0.1.0"


def openmp_enabled() -> bool:
    return bool(_openmp is not None and _openmp.openmp_enabled())


@functools.cache
def physical_memory() -> int | None:
    """Physical memory of this machine in bytes (None where the OS does not say); asked once."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _default_threads() -> int:
    """The first entry of ``OMP_NUM_THREADS`` when it is a positive integer (at most
    MAX_THREADS), else the usable cores; 1 without OpenMP or in a forked child."""
    if not openmp_enabled() or _forked:
        return 1
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isascii() and env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    return _available_cores()


MAX_THREADS = 4096  # more would only make OpenMP try to start absurd numbers of threads
_forked = False  # this process is a fork of one whose kernels may have run on several threads
_team_may_exist = False  # a kernel may have started a team of several OpenMP threads
_num_threads = _default_threads()
_blas_limiter = None


def get_num_threads() -> int:
    """Threads the compiled kernels use (1 when built without OpenMP). The kernels ask before
    every call, so this also records that they may have started a team of several OpenMP
    threads (see :func:`_after_fork_in_child`)."""
    global _team_may_exist
    if _num_threads > 1:
        _team_may_exist = True
    return _num_threads


def threads_for(work: int, minimum: int) -> int:
    """Threads for a kernel call of ``work`` units: all of them from ``minimum`` units on, else
    one (below it, starting the thread team costs more than it saves)."""
    return get_num_threads() if work >= minimum else 1


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
    if n > 1 and (_forked or not openmp_enabled()):
        why = ("this process was forked after its parent's kernels ran on several threads (GNU "
               "OpenMP cannot start threads there; use the spawn or forkserver start method)"
               if _forked else
               "cnnext was built without OpenMP")
        warnings.warn(f"set_num_threads({n}): the kernels stay on one thread: {why}",
                      RuntimeWarning, stacklevel=2)
    _num_threads = int(n) if openmp_enabled() and not _forked else 1
    from threadpoolctl import threadpool_limits

    if _blas_limiter is not None:
        _blas_limiter.restore_original_limits()
    _blas_limiter = threadpool_limits(limits=int(n), user_api="blas")


_blas_libs: list | None = None
_blas_lock = threading.Lock()
_blas_depth = 0
_blas_saved: list[int] = []


def _after_fork_in_child() -> None:
    """One kernel thread in a child forked after the kernels may have started a team of several
    (see the module docstring), and a fresh BLAS-policy state: the thread that held the policy
    in the parent does not exist here."""
    global _forked, _num_threads, _blas_lock, _blas_depth, _blas_saved, _held_here
    if _team_may_exist:
        _forked, _num_threads = True, 1
    _blas_lock, _blas_depth, _blas_saved = threading.Lock(), 0, []
    _held_here = threading.local()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _blas_controllers() -> list:
    """threadpoolctl controllers of the BLAS libraries loaded in this process (looked up once)."""
    global _blas_libs
    if _blas_libs is None:
        from threadpoolctl import ThreadpoolController

        _blas_libs = [lib for lib in ThreadpoolController().lib_controllers
                      if lib.user_api == "blas"]
    return _blas_libs


_held_here = threading.local()  # per Python thread: how deep in single_threaded_blas it is


def blas_held_to_one_thread() -> bool:
    """Whether this Python thread runs inside :func:`single_threaded_blas` (a model's pass): a
    kernel's choice may depend on it, never on what other threads do."""
    return getattr(_held_here, "depth", 0) > 0


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with numpy's BLAS on one thread (nestable, shared by all Python threads:
    the first entry saves the thread counts and the last exit restores them; ~1 us each).

    While the compiled kernels' OpenMP threads and BLAS's threads take turns on the same cores,
    each pool busy-waits for work after its turn and starves the other: a LeNet-5 training step
    on 2 cores took ~100 ms instead of ~6 ms. Models on the compiled backend run inside this.
    """
    global _blas_depth, _blas_saved
    libs = _blas_controllers()
    with _blas_lock:
        if _blas_depth == 0:
            _blas_saved = [lib.get_num_threads() for lib in libs]
            for lib in libs:
                lib.set_num_threads(1)
        _blas_depth += 1
    _held_here.depth = getattr(_held_here, "depth", 0) + 1
    try:
        yield
    finally:
        _held_here.depth -= 1
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for lib, n in zip(libs, _blas_saved):
                    lib.set_num_threads(n)


def config() -> dict[str, Any]:
    """Build and runtime facts as a dict (what :func:`show_config` prints)."""
    from . import backend

    try:
        from ._ext import _conv2d

        simd = _conv2d.simd_level()
    except ImportError:  # compiled kernels not built
        simd = None
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "compiled_kernels": "cython" in backend.available_backends(),
        "compiled_import_error": backend.COMPILED_IMPORT_ERROR,
        "openmp": openmp_enabled(),
        "simd": simd,
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
