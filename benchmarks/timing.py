"""The one timing helper every benchmark uses: warm up, repeat, report robust statistics.

These machines are shared and noisy, so a figure is the median of many single-call timings, with
the interquartile range (q1..q3) and the minimum beside it. Quick mode (smoke tests) divides every
time budget by QUICK_FACTOR and caps the repeat counts, everywhere at once.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

QUICK_FACTOR = 5
_quick = False


def set_quick(enabled: bool) -> None:
    """Switch every later :func:`measure` to the reduced quick-mode effort."""
    global _quick
    _quick = bool(enabled)


def is_quick() -> bool:
    return _quick


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median, quartiles and minimum over ``repeats`` timed calls."""

    median: float
    q1: float
    q3: float
    min: float
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    min_repeats: int = 7,
    max_repeats: int = 200,
    budget_s: float = 1.0,
) -> Timing:
    """Time ``fn()`` (seconds per call) after ``warmup`` untimed calls.

    The number of timed calls is chosen so that they take about ``budget_s`` in total, clamped to
    ``[min_repeats, max_repeats]``; the last warm-up call's duration gives the estimate (the
    first may include one-time setup: PyTorch's first conv backward takes 30x a later one).
    """
    if _quick:
        warmup, min_repeats, budget_s = 1, min(min_repeats, 3), budget_s / QUICK_FACTOR
    for _ in range(max(warmup, 1)):
        last = time_once(fn)
    repeats = int(np.clip(budget_s / max(last, 1e-9), min_repeats, max_repeats))
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return Timing(float(median), float(q1), float(q3), float(samples.min()), repeats)


def speedup(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """How many times faster ``ours`` is than ``theirs`` (two :meth:`Timing.to_dict` results),
    by median and by best time (the latter is less sensitive to a busy machine)."""
    return {"median": theirs["median"] / ours["median"], "best": theirs["min"] / ours["min"]}


def time_once(fn: Callable[[], object]) -> float:
    """Seconds taken by a single call of ``fn()`` (used to decide whether to skip a slow case)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
