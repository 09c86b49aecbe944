"""Write the results as Markdown, JSON and a PNG chart, each atomically (temp file + os.replace)."""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ops_bench import DIRECTIONS
from targets import check_targets, times


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _num(value: float) -> str:
    """Three significant digits, without exponents: 0.0123, 1.23, 123, 12,345."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _ms(entry: dict[str, Any]) -> str:
    """Median ms with the interquartile range, or why it is missing."""
    if "skipped" in entry:
        return f"skipped ({entry['skipped']})"
    t = entry["timing"]
    return f"{_num(t['median'] * 1e3)} ({_num(t['q1'] * 1e3)}–{_num(t['q3'] * 1e3)})"


def _rate(entry: dict[str, Any], unit: str) -> str:
    if "rate" not in entry:
        return "—"
    pct = f", {entry['pct_gemm']:.0f}% GEMM" if "pct_gemm" in entry else ""
    return f"{_num(entry['rate'])} {unit}{pct}"


def _ratio(speed: dict[str, float]) -> str:
    return f"**{times(speed['median'])}** (best {times(speed['best'])})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in rows]


def _header(results: dict[str, Any]) -> list[str]:
    env, gemm = results["environment"], results["gemm"]
    cpu, ver = env["cpu"], env["versions"]
    pools = "; ".join(
        f"{p['internal_api']} {p['version'] or '(version n/a)'} ({p['library']}, "
        f"{p['num_threads']} threads"
        + (f", {p['architecture']}" if p.get("architecture") else "") + ")"
        for p in ver["threadpools"])
    load = ", ".join(f"{v:.2f}" for v in env["load_average"] or []) or "n/a"
    flags = ", ".join(cpu["flags"]) or "none of avx2/fma/avx512"
    return [
        f"# cnnext benchmarks{' (quick mode)' if results['quick'] else ''}", "",
        f"- Date: {env['date']}; host {env['host']} ({env['platform']})",
        f"- CPU: {cpu['model']}; flags {flags}; {cpu['cores']} usable cores",
        f"- Threads: {env['threads']} for both libraries (cnnext.set_num_threads, "
        f"torch.set_num_threads, threadpoolctl limits); load average at start {load}",
        f"- Versions: cnnext {ver['cnnext']} (backends {', '.join(ver['cnnext_backends'])}, "
        f"OpenMP {ver['cnnext_openmp']}), numpy {ver['numpy']}, torch {ver['torch']}, "
        f"Python {ver['python']}",
        f"- Thread pools: {pools}",
        f"- float32 GEMM ceiling: **{gemm['gflops']:.0f} GFLOP/s** (numpy matmul "
        f"{gemm['size']}^3, median of {gemm['timing']['repeats']}; best {gemm['gflops_best']:.0f})",
        "", "Timings are medians after warm-up, with the interquartile range in brackets. Speed "
        "ratios above 1 mean cnnext is faster; \"best\" compares the fastest calls. "
        "See benchmarks/README.md for what each column means.", "",
    ]


def _ops_section(ops: list[dict[str, Any]]) -> list[str]:
    header = ["op", "dir", "cnnext ms", "cnnext rate", "NumPy twin ms", "twin rate",
              "PyTorch ms", "PyTorch rate", "cnnext speed / PyTorch"]
    rows = []
    for op in ops:
        unit = op["unit"]
        for d in DIRECTIONS:
            ours, twin, theirs = (op["results"][lib][d]
                                  for lib in ("cnnext", "numpy_twin", "torch"))
            rows.append([op["case"], d, _ms(ours), _rate(ours, unit), _ms(twin), _rate(twin, unit),
                         _ms(theirs), _rate(theirs, unit), _ratio(ours["speed_vs_torch"])])
    return ["## Per op", ""] + _table(header, rows) + [""]


def _models_section(models: dict[str, Any]) -> list[str]:
    header = ["network", "optimizer", "train batch", "cnnext train img/s", "PyTorch train img/s",
              "train speed / PyTorch", "cnnext inference img/s", "PyTorch inference img/s",
              "inference speed / PyTorch"]
    rows = []
    for net in models["nets"]:
        row = [net["net"], net["optimizer"], str(net["train_batch"])]
        for mode in ("train", "inference"):
            row += [f"{net[lib][mode]['images_per_s']:,.0f}" for lib in ("cnnext", "torch")]
            row.append(_ratio(net[f"{mode}_speed_vs_torch"]))
        rows.append(row)
    intro = f"Data: {models['data']}. Inference batch 256."
    return ["## End to end", "", intro, ""] + _table(header, rows) + [""]


def _scaling_section(scaling: dict[str, Any]) -> list[str]:
    points = scaling["points"]
    columns = [(lib, key) for key in ("conv_gflops", "lenet5_images_per_s")
               for lib in ("cnnext", "torch")]

    def cell(point: dict[str, Any], lib: str, key: str) -> str:
        value, one_thread = point[lib][key], points[0][lib][key]
        return f"{value:,.0f} ({times(value / one_thread)})"

    rows = [[str(p["threads"])] + [cell(p, lib, key) for lib, key in columns] for p in points]
    header = ["threads", "cnnext conv GFLOP/s", "PyTorch conv GFLOP/s",
              "cnnext LeNet-5 train img/s", "PyTorch LeNet-5 train img/s"]
    intro = (f"Conv: {scaling['conv_case']} fwd+bwd. One process per point; brackets: "
             "speed-up over the same library at 1 thread.")
    return ["## Thread scaling", "", intro, ""] + _table(header, rows) + [""]


def _memory_section(memory: dict[str, Any]) -> list[str]:
    runs = memory["runs"]
    rows = [[m["library"], f"{m['epoch']['images']:,}", f"{m['epoch']['seconds']:.2f}",
             f"{m['rss_before_mib']:.0f}", f"{m['peak_rss_mib']:.0f}",
             f"**{m['epoch_peak_increase_mib']:.1f}**"] for m in runs]
    header = ["library", "images", "seconds", "RSS before MiB", "peak RSS MiB", "increase MiB"]
    intro = (f"Method: {runs[0]['method']}; one process per library. "
             f"Data: {runs[0]['data']}.")
    return (["## Peak memory of one LeNet-5 training epoch (batch 128)", "", intro, ""]
            + _table(header, rows) + [""])


def _workspace_section(reuse: dict[str, Any]) -> list[str]:
    mib = 2**20
    rows = [[str(i + 1), f"{s['transient_peak_bytes'] / mib:.2f}",
             f"{s['retained_bytes'] / mib:.2f}", str(s["live_large_blocks"])]
            for i, s in enumerate(reuse["steps"])]
    verdict = ("no new large buffers after the first batch" if reuse["reuses_workspace"] else
               f"still allocates up to {reuse['max_transient_after_first_mib']:.1f} MiB of "
               "transient buffers per step after the first batch")
    large = reuse["large_bytes"] // mib
    intro = (f"Verdict: **{verdict}** (large = {large} MiB; only NumPy/Python allocations are "
             "traced).")
    header = ["step", "transient peak MiB", "retained MiB", f"live blocks >= {large} MiB"]
    return (["## Workspace reuse (cnnext LeNet-5 training steps, tracemalloc)", "", intro, ""]
            + _table(header, rows) + [""])


def _targets_section(results: dict[str, Any]) -> list[str]:
    verdicts = {True: "yes", False: "**no**", None: "n/a"}
    rows = [[row["target"], row["measured"], verdicts[row["met"]]]
            for row in check_targets(results)]
    return (["## Targets (issue 5)", ""] + _table(["target", "measured (median)", "met"], rows)
            + [""])


def markdown(results: dict[str, Any]) -> str:
    sections = (_header(results), _targets_section(results), _ops_section(results["ops"]),
                _models_section(results["models"]),
                _scaling_section(results["scaling"]), _memory_section(results["memory"]),
                _workspace_section(results["workspace"]))
    return "\n".join(line for section in sections for line in section)


def chart_png(results: dict[str, Any]) -> bytes:
    """Per-op speed ratio bars and thread-scaling lines, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ops, ax_conv, ax_lenet) = plt.subplots(1, 3, figsize=(17, 6), width_ratios=(2, 1, 1))
    labels = [op["case"] for op in results["ops"]]
    for i, d in enumerate(DIRECTIONS):
        ratios = [op["results"]["cnnext"][d]["speed_vs_torch"]["median"] for op in results["ops"]]
        bars = ax_ops.barh([j + 0.4 * i for j in range(len(labels))], ratios, height=0.4, label=d)
        ax_ops.bar_label(bars, [f"{r:.2g}x" for r in ratios], fontsize=7, padding=2)
    ax_ops.set_yticks([j + 0.2 for j in range(len(labels))], labels, fontsize=8)
    ax_ops.invert_yaxis()
    ax_ops.set_xscale("log")
    ax_ops.axvline(1.0, color="black", linewidth=1)
    ax_ops.set_xlabel("cnnext speed / PyTorch speed (log scale; right of 1 = cnnext faster)")
    ax_ops.set_title(f"Per op, {results['environment']['threads']} threads")
    ax_ops.legend()
    points = results["scaling"]["points"]
    threads = [p["threads"] for p in points]
    conv_title = f"{results['scaling']['conv_case']} fwd+bwd, GFLOP/s"
    for ax, key, title in ((ax_conv, "conv_gflops", conv_title),
                           (ax_lenet, "lenet5_images_per_s", "LeNet-5 training, images/s")):
        for lib in ("cnnext", "torch"):
            ax.plot(threads, [p[lib][key] for p in points], marker="o", label=lib)
        ax.set_xscale("log", base=2)
        ax.set_xticks(threads, [str(t) for t in threads])
        ax.set_xlabel("threads")
        ax.set_title(title, fontsize=9)
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    """latest.md, latest.json and latest.png in ``out``; returns the paths written."""
    files = {out / "latest.json": json.dumps(results, indent=1).encode(),
             out / "latest.md": markdown(results).encode(),
             out / "latest.png": chart_png(results)}
    for path, data in files.items():
        write_atomic(path, data)
    return list(files)
