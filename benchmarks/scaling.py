"""Thread scaling: the large conv (fwd+bwd) and LeNet-5 training at 1, 2, 4, ... threads.

Each point runs in its own process (see worker.py) so every thread pool starts clean.
"""
from __future__ import annotations

from typing import Any

from machine import available_cores
from model_bench import LENET5, load_training_data, make_runner, train_throughput
from ops_bench import LARGE_CONV, cnnext_calls, torch_calls
from timing import measure


def thread_counts(cores: int | None = None) -> list[int]:
    """Powers of two below the core count, then the core count itself: 1, 2, 4, ..., cores."""
    cores = cores or available_cores()
    counts = [1 << i for i in range(cores.bit_length()) if 1 << i < cores]
    return counts + [cores]


def scaling_point(library: str) -> dict[str, Any]:
    """GFLOP/s of LARGE_CONV fwd+bwd and LeNet-5 training images/s with the current threads."""
    calls = cnnext_calls(LARGE_CONV, "cython") if library == "cnnext" else torch_calls(LARGE_CONV)
    _, forward_backward = calls
    timing = measure(forward_backward, min_repeats=7, budget_s=2.0)
    x, y, _ = load_training_data(limit=LENET5.train_batch * 32)
    lenet = train_throughput(make_runner(library, LENET5), x, y, LENET5.train_batch)
    return {"conv_timing": timing.to_dict(), "conv_ms": timing.median * 1e3,
            "conv_gflops": LARGE_CONV.work()[1] / timing.median / 1e9,
            "lenet5_images_per_s": lenet["images_per_s"]}
