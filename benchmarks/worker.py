"""Runs one measurement in a fresh process, so thread pools start clean and peak memory belongs
to one library alone; prints the result as one JSON line.

    python benchmarks/worker.py {scaling,memory} --library {cnnext,torch} --threads N [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's cnnext

from machine import set_threads  # noqa: E402
from memory_bench import epoch_peak_memory  # noqa: E402
from scaling import scaling_point  # noqa: E402
from timing import is_quick, set_quick  # noqa: E402

TASKS = {"scaling": scaling_point, "memory": epoch_peak_memory}


def spawn(task: str, library: str, threads: int, timeout_s: float = 900) -> dict[str, Any]:
    """Run ``task`` for ``library`` with ``threads`` threads (and this process's quick mode) in a
    new interpreter; its JSON result."""
    cmd = [sys.executable, __file__, task, "--library", library, "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd + (["--quick"] if is_quick() else []), env=env, capture_output=True,
                          text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--library", choices=("cnnext", "torch"), required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    set_threads(args.threads, (args.library,))
    set_quick(args.quick)
    print(json.dumps(TASKS[args.task](args.library)))


if __name__ == "__main__":
    main()
