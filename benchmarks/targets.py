"""The speed targets of issue 5, checked against one run's results (a summary for the report)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

Figure = Optional[tuple[float, str]]  # (value compared with the threshold, text), None: not run
SCALING_THREADS = 16  # the scaling targets are stated for 16 threads


def times(ratio: float) -> str:
    """A speed ratio as text: 2.35x, 0.84x, 0.041x."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


@dataclass(frozen=True)
class Target:
    name: str
    measure: Callable[[dict[str, Any]], Figure]
    threshold: float
    needs_scaling_threads: bool = False


def _op_ratio(case: str, direction: str) -> Callable[[dict[str, Any]], Figure]:
    def get(results: dict[str, Any]) -> Figure:
        for op in results["ops"]:
            if op["case"] == case:
                ratio = op["results"]["cnnext"][direction]["speed_vs_torch"]["median"]
                return ratio, times(ratio)
        return None
    return get


def _net_ratio(mode: str) -> Callable[[dict[str, Any]], Figure]:
    def get(results: dict[str, Any]) -> Figure:
        for net in results["models"]["nets"]:
            if net["net"] == "lenet5":
                ratio = net[f"{mode}_speed_vs_torch"]["median"]
                return ratio, times(ratio)
        return None
    return get


def _large_conv_gemm(results: dict[str, Any]) -> Figure:
    for op in results["ops"]:
        if op["case"] == results["scaling"]["conv_case"]:
            pct = op["results"]["cnnext"]["fwd+bwd"]["pct_gemm"]
            return pct, f"{pct:.0f}%"
    return None


def _pooling_worst(results: dict[str, Any]) -> Figure:
    ratios = {f"{op['case']} {d}": op["results"]["cnnext"][d]["speed_vs_torch"]["median"]
              for op in results["ops"] if op["kind"] == "pool" for d in ("fwd", "fwd+bwd")}
    if not ratios:
        return None
    worst = min(ratios, key=ratios.get)
    return ratios[worst], f"{times(ratios[worst])} (slowest: {worst})"


def _scaling(key: str) -> Callable[[dict[str, Any]], Figure]:
    def get(results: dict[str, Any]) -> Figure:
        points = results["scaling"]["points"]
        # the SCALING_THREADS point when measured (more cores go further), else the last one
        point = next((p for p in points if p["threads"] == SCALING_THREADS), points[-1])
        gain = point["cnnext"][key] / points[0]["cnnext"][key]
        return gain, f"{times(gain)} at {point['threads']} threads"
    return get


def _workspace(results: dict[str, Any]) -> Figure:
    reuse = results["workspace"]
    mib = reuse["max_transient_after_first_mib"]
    return (1.0 if reuse["reuses_workspace"] else 0.0), f"{mib:.1f} MiB transient per later step"


CONV_1_6 = "conv N128 1->6 28x28 k5 p2"
CONV_6_16 = "conv N128 6->16 14x14 k5"
CONV_LARGE = "conv N32 64->64 56x56 k3 p1"
TARGETS = (
    Target("LeNet-5 training speed / PyTorch >= 2.0x", _net_ratio("train"), 2.0),
    Target("LeNet-5 inference speed / PyTorch >= 2.0x", _net_ratio("inference"), 2.0),
    Target(f"{CONV_1_6} fwd+bwd speed / PyTorch >= 3x", _op_ratio(CONV_1_6, "fwd+bwd"), 3.0),
    Target(f"{CONV_6_16} fwd+bwd speed / PyTorch >= 3x", _op_ratio(CONV_6_16, "fwd+bwd"), 3.0),
    Target(f"{CONV_LARGE} fwd+bwd speed / PyTorch >= 0.8x", _op_ratio(CONV_LARGE, "fwd+bwd"),
           0.8),
    Target(f"{CONV_LARGE} fwd+bwd >= 50% of the GEMM ceiling", _large_conv_gemm, 50.0),
    Target("every pooling row (fwd, fwd+bwd) speed / PyTorch >= 5x", _pooling_worst, 5.0),
    Target(f"large conv at {SCALING_THREADS} threads >= 10x 1 thread", _scaling("conv_gflops"),
           10.0, needs_scaling_threads=True),
    Target(f"LeNet-5 training at {SCALING_THREADS} threads >= 6x 1 thread",
           _scaling("lenet5_images_per_s"), 6.0, needs_scaling_threads=True),
    Target("no new large buffers per training step after the first", _workspace, 1.0),
)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: the measured figure and whether it is met (None: not measured, or a
    scaling target on a machine with fewer than SCALING_THREADS threads)."""
    max_threads = results["scaling"]["points"][-1]["threads"]
    rows = []
    for target in TARGETS:
        figure = target.measure(results)
        met = None if figure is None else figure[0] >= target.threshold
        if target.needs_scaling_threads and max_threads < SCALING_THREADS:
            met = None
        rows.append({"target": target.name, "measured": figure[1] if figure else "not measured",
                     "met": met})
    return rows
