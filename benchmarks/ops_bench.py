"""Per-op timings: cnnext compiled, cnnext NumPy twin and PyTorch CPU on the same shapes.

cnnext is called through :mod:`cnnext.ops` on NHWC arrays; PyTorch through
``torch.nn.functional`` on NCHW tensors (its native layout). "fwd+bwd" is the forward call plus
every gradient: for cnnext ``conv2d`` + ``conv2d_backward`` (dx, dw, db) or ``pool2d`` +
``pool2d_backward``; for PyTorch the forward plus ``torch.autograd.grad`` w.r.t. the input (and the
weight and bias for conv), all of which require grad.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

import cnnext
from cnnext import ops
from timing import is_quick, measure, speedup, time_once

BYTES = 4  # float32
DIRECTIONS = ("fwd", "fwd+bwd")
TWIN_LIMIT_S = 2.0  # seconds: the NumPy twin is skipped where one call takes longer


@dataclass(frozen=True)
class ConvCase:
    """Convolution of x (N, H, W, C) with F filters of KH x KW, square stride and padding."""

    n: int
    c: int
    f: int
    hw: int
    k: int
    stride: int = 1
    pad: int = 0

    @property
    def label(self) -> str:
        stride = f" s{self.stride}" if self.stride != 1 else ""
        pad = f" p{self.pad}" if self.pad else ""
        return f"conv N{self.n} {self.c}->{self.f} {self.hw}x{self.hw} k{self.k}{stride}{pad}"

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.pad - self.k) // self.stride + 1

    def work(self) -> tuple[float, float]:
        """FLOPs of (forward, forward+backward): 2*N*Ho*Wo*F*C*KH*KW per direction; fwd+bwd
        is 3x that (forward, dx and dw)."""
        fwd = 2.0 * self.n * self.out_hw**2 * self.f * self.c * self.k**2
        return fwd, 3.0 * fwd


@dataclass(frozen=True)
class PoolCase:
    """2x2 pooling, stride 2, of x (N, H, W, C)."""

    mode: str
    n: int
    c: int
    hw: int
    size: int = 2

    @property
    def label(self) -> str:
        return f"{self.mode}-pool {self.size}x{self.size} N{self.n} C{self.c} {self.hw}x{self.hw}"

    def work(self) -> tuple[float, float]:
        """Bytes moved by (forward, forward+backward): forward reads x and writes y; backward
        reads dy, writes dx, and (max only) reads x again to find the winners."""
        x = self.n * self.c * self.hw**2 * BYTES
        y = x // self.size**2
        backward = y + x + (x if self.mode == "max" else 0)
        return float(x + y), float(x + y + backward)


Case = Union[ConvCase, PoolCase]

CONV_CASES = (
    ConvCase(128, 1, 6, 28, 5, pad=2),
    ConvCase(128, 6, 16, 14, 5),
    ConvCase(32, 1, 8, 28, 3),
    ConvCase(64, 32, 64, 28, 3, pad=1),
    ConvCase(32, 64, 64, 56, 3, pad=1),
    ConvCase(1, 3, 64, 224, 7, stride=2, pad=3),
)
POOL_CASES = tuple(PoolCase(mode, n, c, hw) for mode in ("max", "avg") for n, c, hw in
                   ((128, 6, 28), (32, 64, 56)))
QUICK_CASES = (CONV_CASES[0], CONV_CASES[1], POOL_CASES[0])
LARGE_CONV = CONV_CASES[4]  # the thread-scaling case


def _rng_array(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def cnnext_calls(case: Case, backend: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(forward, forward+backward) closures through cnnext.ops on NHWC float32 arrays."""
    if isinstance(case, ConvCase):
        x = _rng_array((case.n, case.hw, case.hw, case.c), 1)
        w = _rng_array((case.k, case.k, case.c, case.f), 2) * 0.1
        b = _rng_array((case.f,), 3)
        dy = _rng_array((case.n, case.out_hw, case.out_hw, case.f), 4)
        conv = dict(stride=case.stride, padding=case.pad, backend=backend)

        def forward() -> Any:
            return ops.conv2d(x, w, b, **conv)

        def forward_backward() -> Any:
            ops.conv2d(x, w, b, **conv)
            return ops.conv2d_backward(dy, x, w, **conv)

        return forward, forward_backward
    x = _rng_array((case.n, case.hw, case.hw, case.c), 1)
    dy = _rng_array((case.n, case.hw // case.size, case.hw // case.size, case.c), 4)
    pool = dict(size=case.size, mode=case.mode, backend=backend)

    def pool_forward() -> Any:
        return ops.pool2d(x, **pool)

    def pool_forward_backward() -> Any:
        ops.pool2d(x, **pool)
        return ops.pool2d_backward(dy, x, **pool)

    return pool_forward, pool_forward_backward


def torch_calls(case: Case) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(forward, forward+backward) closures through torch.nn.functional on NCHW tensors."""
    import torch
    import torch.nn.functional as F

    def tensor(array: np.ndarray, grad: bool) -> "torch.Tensor":
        return torch.from_numpy(np.ascontiguousarray(array)).requires_grad_(grad)

    if isinstance(case, ConvCase):
        x = tensor(_rng_array((case.n, case.c, case.hw, case.hw), 1), True)
        w = tensor(_rng_array((case.f, case.c, case.k, case.k), 2) * 0.1, True)
        b = tensor(_rng_array((case.f,), 3), True)
        dy = tensor(_rng_array((case.n, case.f, case.out_hw, case.out_hw), 4), False)
        inputs = (x, w, b)

        def apply() -> "torch.Tensor":
            return F.conv2d(x, w, b, stride=case.stride, padding=case.pad)
    else:
        x = tensor(_rng_array((case.n, case.c, case.hw, case.hw), 1), True)
        out_hw = case.hw // case.size
        dy = tensor(_rng_array((case.n, case.c, out_hw, out_hw), 4), False)
        inputs = (x,)
        pool_fn = F.max_pool2d if case.mode == "max" else F.avg_pool2d

        def apply() -> "torch.Tensor":
            return pool_fn(x, case.size)

    def forward() -> Any:
        with torch.no_grad():
            return apply()

    def forward_backward() -> Any:
        return torch.autograd.grad(apply(), inputs, dy)

    return forward, forward_backward


def _entry(fn: Callable[[], Any], work: float) -> dict[str, Any]:
    timing = measure(fn, min_repeats=9, budget_s=1.5)
    return {"timing": timing.to_dict(), "ms": timing.median * 1e3,
            "rate": work / timing.median / 1e9}


def _twin_entries(case: Case, works: tuple[float, float]) -> dict[str, Any]:
    """NumPy-twin timings; a direction whose first call takes over TWIN_LIMIT_S is skipped (and
    forward+backward with it when the forward alone is that slow)."""
    entries: dict[str, Any] = {}
    for direction, fn, work in zip(DIRECTIONS, cnnext_calls(case, "numpy"), works):
        probe = time_once(fn)
        if probe > TWIN_LIMIT_S:
            entries[direction] = {"skipped": f"slow: first call {probe:.1f} s"}
            if direction == "fwd":  # forward+backward would be slower still
                entries["fwd+bwd"] = {"skipped": "slow: the forward alone is over the limit"}
                break
        else:
            entries[direction] = _entry(fn, work)
    return entries


def bench_case(case: Case, gemm_gflops: float) -> dict[str, Any]:
    """Timings of one case for the three implementations, in both directions."""
    works = case.work()
    results: dict[str, Any] = {}
    for name, calls in (("cnnext", cnnext_calls(case, "cython")), ("torch", torch_calls(case))):
        results[name] = {d: _entry(fn, w) for d, fn, w in zip(DIRECTIONS, calls, works)}
    results["numpy_twin"] = _twin_entries(case, works)
    for direction in DIRECTIONS:
        ours, theirs = results["cnnext"][direction], results["torch"][direction]
        ours["speed_vs_torch"] = speedup(ours["timing"], theirs["timing"])
        if isinstance(case, ConvCase):
            for entry in (ours, theirs, results["numpy_twin"][direction]):
                if "rate" in entry:
                    entry["pct_gemm"] = 100.0 * entry["rate"] / gemm_gflops
    return {"case": case.label, "kind": "conv" if isinstance(case, ConvCase) else "pool",
            "unit": "GFLOP/s" if isinstance(case, ConvCase) else "GB/s",
            "work": dict(zip(DIRECTIONS, works)), "results": results}


def run_ops(gemm_gflops: float) -> list[dict[str, Any]]:
    """Every per-op case (a reduced set in quick mode)."""
    cases = QUICK_CASES if is_quick() else CONV_CASES + POOL_CASES
    if "cython" not in cnnext.available_backends():
        raise RuntimeError("cnnext's compiled kernels are not built; run "
                           "`python setup.py build_ext --inplace` first")
    return [bench_case(case, gemm_gflops) for case in cases]
