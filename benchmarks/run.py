"""Benchmark cnnext against PyTorch CPU and write benchmarks/results/latest.{md,json,png}.

    python benchmarks/run.py [--threads N] [--quick] [--out benchmarks/results]

One run: the float32 GEMM ceiling, per-op timings, end-to-end networks, thread scaling (one
process per point), peak memory of a LeNet-5 epoch (one process per library) and the workspace
reuse check. ``--quick`` runs a reduced set in about a minute, for smoke testing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's cnnext

from machine import available_cores, environment, gemm_ceiling, set_threads  # noqa: E402
from memory_bench import workspace_reuse  # noqa: E402
from model_bench import run_models  # noqa: E402
from ops_bench import LARGE_CONV, run_ops  # noqa: E402
from report import write_report  # noqa: E402
from scaling import thread_counts  # noqa: E402
from timing import is_quick, set_quick  # noqa: E402
from worker import spawn  # noqa: E402

LIBRARIES = ("cnnext", "torch")


def run_scaling() -> dict[str, Any]:
    counts = thread_counts()
    if is_quick():
        counts = sorted({1, counts[-1]})
    points = [{"threads": n, **{lib: spawn("scaling", lib, n) for lib in LIBRARIES}}
              for n in counts]
    return {"conv_case": LARGE_CONV.label, "points": points}


def run_memory(threads: int) -> dict[str, Any]:
    return {"runs": [spawn("memory", lib, threads) for lib in LIBRARIES]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="threads for both libraries (default: the usable cores)")
    parser.add_argument("--quick", action="store_true", help="reduced set, about a minute")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="directory for latest.md / latest.json / latest.png")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")

    set_threads(args.threads)
    set_quick(args.quick)
    results: dict[str, Any] = {"quick": args.quick, "environment": environment(args.threads)}
    steps = (("gemm", gemm_ceiling),
             ("ops", lambda: run_ops(results["gemm"]["gflops"])),
             ("models", run_models),
             ("scaling", run_scaling),
             ("memory", lambda: run_memory(args.threads)),
             ("workspace", workspace_reuse))
    for name, step in steps:
        start = time.perf_counter()
        print(f"[{name}] ...", end=" ", flush=True)
        results[name] = step()
        print(f"{time.perf_counter() - start:.1f} s", flush=True)
    for path in write_report(results, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
