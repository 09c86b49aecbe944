"""End-to-end throughput: training steps and inference of whole networks, cnnext vs PyTorch.

Both libraries get the same images (NHWC float32 in [0, 1]; PyTorch's copy is made NCHW once,
before timing), the same batch sizes and the same optimizer. A training step is forward, loss,
backward and the optimizer update on one batch; images/s = batch size / median step time.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from timing import is_quick, measure, speedup

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INFERENCE_BATCH = 256
CYCLE_BATCHES = 32  # timed steps cycle over this many distinct batches


@dataclass(frozen=True)
class NetSpec:
    name: str
    train_batch: int
    optimizer: str


NETS = (NetSpec("lenet5", 128, "sgd_momentum"), NetSpec("test4", 32, "adam"))
LENET5 = NETS[0]


class Runner(Protocol):
    """What the benchmarks need from a network of either library."""

    library: str

    def prepare(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]: ...
    def train_step(self, x: Any, y: Any) -> None: ...
    def predict(self, x: Any) -> Any: ...


def make_runner(library: str, spec: NetSpec) -> Runner:
    """The network ``spec`` built with ``library`` ("cnnext" or "torch")."""
    if library == "torch":
        from torch_nets import TorchRunner

        return TorchRunner(spec.name, spec.optimizer)
    from cnnext_nets import CnnextRunner

    return CnnextRunner(spec.name, spec.optimizer)


def load_training_data(limit: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Fashion-MNIST training images (N, 28, 28, 1) float32 in [0, 1] and labels (N,) int64, or
    random data of the same shape when the data set is not installed; plus where it came from."""
    if FASHION_MNIST_DIR.is_dir():
        from cnnext.datasets import load_from

        (x, y), _ = load_from(FASHION_MNIST_DIR)
        source = f"Fashion-MNIST ({FASHION_MNIST_DIR})"
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)
        y = rng.integers(0, 10, 60000, dtype=np.int64)
        source = "random data shaped like Fashion-MNIST (data set not installed)"
    x, y = x[:limit], y[:limit]
    return x.astype(np.float32) / np.float32(255.0), y.astype(np.int64), source


def batches(runner: Runner, x: np.ndarray, y: np.ndarray, size: int,
            count: int | None = None) -> list:
    """The first ``count`` (default: all) full batches, already in the runner's own format."""
    starts = range(0, len(x) - size + 1, size)
    return [runner.prepare(x[i:i + size], y[i:i + size]) for i in itertools.islice(starts, count)]


def _rate(seconds_per_step: dict[str, Any], batch: int) -> dict[str, Any]:
    median = seconds_per_step["median"]
    return {"timing": seconds_per_step, "batch": batch, "ms_per_batch": median * 1e3,
            "images_per_s": batch / median}


def train_throughput(runner: Runner, x: np.ndarray, y: np.ndarray, batch: int) -> dict:
    """Training images/s: median time of one step over cycled batches."""
    feed = itertools.cycle(batches(runner, x, y, batch, CYCLE_BATCHES))
    timing = measure(lambda: runner.train_step(*next(feed)), warmup=5, min_repeats=30, budget_s=3.0)
    return _rate(timing.to_dict(), batch)


def inference_throughput(runner: Runner, x: np.ndarray, y: np.ndarray) -> dict:
    """Inference images/s at INFERENCE_BATCH (no gradients, dropout off)."""
    feed = itertools.cycle(batches(runner, x, y, INFERENCE_BATCH, CYCLE_BATCHES))
    timing = measure(lambda: runner.predict(next(feed)[0]), warmup=3,
                     min_repeats=30, budget_s=2.0)
    return _rate(timing.to_dict(), INFERENCE_BATCH)


def train_epoch(runner: Runner, prepared: list) -> dict[str, float]:
    """One pass of training steps over ``prepared`` batches: seconds and images/s."""
    start = time.perf_counter()
    for xb, yb in prepared:
        runner.train_step(xb, yb)
    seconds = time.perf_counter() - start
    images = sum(len(xb) for xb, _ in prepared)
    return {"seconds": seconds, "images": images, "images_per_s": images / seconds}


def run_models() -> dict[str, Any]:
    """Training and inference throughput of every network in NETS (LeNet-5 only in quick mode),
    for both libraries."""
    x, y, source = load_training_data(limit=INFERENCE_BATCH * CYCLE_BATCHES)
    results: dict[str, Any] = {"data": source, "nets": []}
    for spec in (LENET5,) if is_quick() else NETS:
        entry: dict[str, Any] = {"net": spec.name, "train_batch": spec.train_batch,
                                 "optimizer": spec.optimizer}
        for library in ("cnnext", "torch"):
            runner = make_runner(library, spec)
            entry[library] = {"train": train_throughput(runner, x, y, spec.train_batch),
                              "inference": inference_throughput(runner, x, y)}
        for mode in ("train", "inference"):
            entry[f"{mode}_speed_vs_torch"] = speedup(entry["cnnext"][mode]["timing"],
                                                      entry["torch"][mode]["timing"])
        results["nets"].append(entry)
    return results
