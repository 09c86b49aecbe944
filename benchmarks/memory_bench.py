"""Memory: peak RSS of one LeNet-5 training epoch, and whether a cnnext training step keeps
allocating large buffers after the first batch (workspace reuse)."""
from __future__ import annotations

import ctypes.util
import gc
import tracemalloc
from typing import Any

from model_bench import LENET5, batches, load_training_data, make_runner, train_epoch
from timing import is_quick

LARGE_BYTES = 1 << 20  # a "large" buffer: 1 MiB or more
REUSE_STEPS = 6
QUICK_EPOCH_STEPS = 10


def _status_kib(field: str) -> int:
    """A ``Vm*`` line of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> None:
    """Make VmHWM (the peak RSS) restart from the current RSS (Linux >= 4.0), after handing the
    heap's free memory back to the system: memory freed earlier but still mapped would otherwise
    serve the epoch's new buffers without raising the RSS (it hid 9 MiB of cnnext's)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name is not None else None
    if hasattr(libc, "malloc_trim"):  # glibc
        libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def epoch_peak_memory(library: str) -> dict[str, Any]:
    """Train LeNet-5 for one epoch (batch 128; QUICK_EPOCH_STEPS steps in quick mode) and report
    how far the RSS rose above its level just before the epoch, with data loaded, batches
    converted and the network built."""
    steps = QUICK_EPOCH_STEPS if is_quick() else None
    x, y, source = load_training_data(limit=steps and steps * LENET5.train_batch)
    runner = make_runner(library, LENET5)
    prepared = batches(runner, x, y, LENET5.train_batch)
    del x, y
    _reset_peak_rss()
    before = _status_kib("VmRSS")
    epoch = train_epoch(runner, prepared)
    peak = _status_kib("VmHWM")
    return {"library": library, "data": source, "epoch": epoch,
            "method": "peak RSS (VmHWM, reset via /proc/self/clear_refs after malloc_trim) minus "
                      "the RSS before the epoch",
            "rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024,
            "epoch_peak_increase_mib": (peak - before) / 1024}


def workspace_reuse() -> dict[str, Any]:
    """tracemalloc over the first REUSE_STEPS cnnext LeNet-5 training steps.

    Per step: the traced peak above the traced total at the step's start (transient buffers), the
    bytes still held after it (retained), and the number of live blocks >= LARGE_BYTES. Only
    allocations made through Python/NumPy are traced (not C-level malloc inside the kernels).
    """
    x, y, _ = load_training_data(limit=LENET5.train_batch * REUSE_STEPS)
    runner = make_runner("cnnext", LENET5)
    steps = []
    tracemalloc.start()
    try:
        for xb, yb in batches(runner, x, y, LENET5.train_batch):
            tracemalloc.reset_peak()
            start, _ = tracemalloc.get_traced_memory()
            runner.train_step(xb, yb)
            end, peak = tracemalloc.get_traced_memory()
            live_large = sum(t.size >= LARGE_BYTES for t in tracemalloc.take_snapshot().traces)
            steps.append({"transient_peak_bytes": peak - start, "retained_bytes": end - start,
                          "live_large_blocks": live_large})
    finally:
        tracemalloc.stop()
    later_peak = max(step["transient_peak_bytes"] for step in steps[1:])
    return {"steps": steps, "large_bytes": LARGE_BYTES,
            "reuses_workspace": later_peak < LARGE_BYTES,
            "max_transient_after_first_mib": later_peak / 2**20}
