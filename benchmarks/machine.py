"""The machine and software under test, thread control for both libraries, the GEMM ceiling."""
from __future__ import annotations

import datetime
import os
import platform
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from timing import Timing, measure

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")
GEMM_SIZE = 2048


def available_cores() -> int:
    """CPU cores this process may run on (affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_info() -> dict[str, Any]:
    """CPU model and the SIMD flags that matter here, read from /proc/cpuinfo when present."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {
        "model": model,
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
        "cores": available_cores(),
        "logical_cpus": os.cpu_count(),
    }


def library_versions() -> dict[str, Any]:
    """Versions of cnnext, numpy, torch, and the BLAS / OpenMP libraries loaded in this process."""
    import cnnext
    import torch

    pools = [
        {key: info.get(key) for key in ("user_api", "internal_api", "version", "architecture",
                                        "threading_layer", "num_threads")}
        | {"library": os.path.basename(info.get("filepath", ""))}
        for info in threadpool_info()
    ]
    return {
        "python": platform.python_version(),
        "cnnext": cnnext.__version__,
        "cnnext_backends": cnnext.available_backends(),
        "cnnext_openmp": cnnext.config()["openmp"],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "threadpools": pools,
    }


def environment(threads: int) -> dict[str, Any]:
    """Everything the report header shows about where and how the run happened."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "threads": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": library_versions(),
    }


def set_threads(n: int, libraries: tuple[str, ...] = ("cnnext", "torch")) -> None:
    """Give ``libraries`` and every BLAS/OpenMP pool loaded in the process the same ``n`` threads
    (only the libraries named are imported, so a subprocess can leave the other one unloaded)."""
    if "cnnext" in libraries:
        import cnnext

        cnnext.set_num_threads(n)
    if "torch" in libraries:
        import torch

        torch.set_num_threads(n)
    threadpool_limits(limits=n)  # kept for the whole process: the benchmarks run under it


def gemm_ceiling() -> dict[str, Any]:
    """float32 GEMM speed of numpy's BLAS (``GEMM_SIZE``^3 matmul, median) in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    b = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    out = np.empty_like(a)
    timing: Timing = measure(lambda: np.matmul(a, b, out=out), min_repeats=15, budget_s=2.0)
    flops = 2.0 * GEMM_SIZE**3
    return {"size": GEMM_SIZE, "timing": timing.to_dict(), "gflops": flops / timing.median / 1e9,
            "gflops_best": flops / timing.min / 1e9}
