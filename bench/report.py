"""tracekit report on the pipeline benchmark's run: its wall time against a plot-everything baseline.

Generates bench/pipeline.py's synthetic raw run (3 nodes, 2,000,000 process
samples, 10,000 invocations by default; seeded, not timed), parses and
exports it with Tracekit (not timed), then times, each in a fresh process
(``python -m`` start-up and imports included, as a user waits for them):

* tracekit: ``tracekit report RUN_DIR`` (target: under 30 s);
* baseline, the straightforward script: read the whole of proc_metrics and
  host_metrics into Python records, draw every host sample of every node,
  each task's CPU from every one of its process samples, and one bar per
  task in a Gantt chart (one artist each), save the PNGs.

    .venv/bin/python bench/report.py            # ~3 min (generation and parse included)
    .venv/bin/python bench/report.py --quick    # 60,000 samples, ~30 s

Prints Markdown; exits 0 whatever the numbers are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import pipeline  # noqa: E402 - the generator of the pipeline benchmark, reused
from _load import LoadWatch
from _load import add_arguments as add_load_arguments

TARGET_S = 30.0


def baseline(run: Path, out: Path) -> None:
    """What a first report script does: everything in memory, every point and bar drawn."""
    os.environ["MPLBACKEND"] = "Agg"
    from matplotlib.figure import Figure

    from tracekit.trace import cctf

    cctf_dir = run / "cctf"
    out.mkdir(parents=True, exist_ok=True)
    host = cctf.read_table(cctf_dir, "host_metrics").to_pylist()
    samples = cctf.read_table(cctf_dir, "proc_metrics").to_pylist()
    invocations = [json.loads(line) for line in (cctf_dir / "invocations.jsonl").read_text().splitlines()]
    by_node = defaultdict(list)
    for row in host:
        by_node[row["node"]].append(row)
    figure = Figure(figsize=(11, 7))
    axes = figure.subplots(len(by_node), 1, squeeze=False)[:, 0]
    for ax, (node, rows) in zip(axes, sorted(by_node.items())):
        ax.plot([r["ts_ms"] for r in rows], [r["cpu_util_pct"] for r in rows])
        ax.plot([r["ts_ms"] for r in rows], [100 * r["mem_used_kb"] / r["mem_total_kb"] for r in rows])
    figure.savefig(out / "timelines.png", dpi=100)
    per_task = defaultdict(list)
    for row in samples:
        if row["task_id"]:
            per_task[row["task_id"]].append((row["ts_ms"], (row["cpu_user_ms"] + row["cpu_system_ms"]) / max(1, row["dt_ms"])))
    figure = Figure(figsize=(11, 7))
    ax = figure.subplots()
    for points in per_task.values():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=0.3)
    figure.savefig(out / "task_cpu.png", dpi=100)
    figure = Figure(figsize=(11, 7))
    ax = figure.subplots()
    nodes = sorted({i["node"] for i in invocations})
    for i in invocations:
        ax.barh(nodes.index(i["node"]), i["ts_end"] - i["ts_start"], left=i["ts_start"], height=0.8)
    figure.savefig(out / "gantt.png", dpi=100)


def timed(argv: list[str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, (done.stdout + done.stderr).strip()[-400:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60,000 samples, 300 invocations")
    parser.add_argument("--baseline-only-run", type=Path, help=argparse.SUPPRESS)
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    watch = LoadWatch.from_args(args)
    if args.baseline_only_run:
        baseline(args.baseline_only_run, args.baseline_only_run / "baseline-report")
        return 0
    size = pipeline.QUICK if args.quick else pipeline.DEFAULTS
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="tkbench-report-") as tmp:
        run = Path(tmp) / "run"
        totals = pipeline.generate_run(run, 3, size["samples"], size["invocations"], 8, 1, jsonl_copy=False)
        from tracekit.trace.export.opendc import export_opendc
        from tracekit.trace.parse import parse_run

        parse_run(run)
        export_opendc(run, run / "opendc")
        os.sync()
        report_s, report_rc, report_out = timed([python, "-m", "tracekit", "report", str(run)])
        baseline_s, baseline_rc, baseline_out = timed([python, __file__, "--baseline-only-run", str(run)])
        pngs = sorted((run / "report").glob("*.png"))
        sizes = {p.name: p.stat().st_size for p in pngs}
        page_kb = (run / "report" / "index.html").stat().st_size / 1024 if report_rc == 0 else 0
    print("# tracekit report benchmark\n")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(watch.start_line().replace("at start", "before the run was made"))
    print(f"- run: 3 nodes, {totals['samples']:,} process samples, {totals['invocations']:,} invocations, "
          f"{totals['host']:,} host samples\n")  # fmt: skip
    print("| job | wall s (fresh process) | exit |\n|---|---:|---:|")
    print(f"| tracekit report | {report_s:.2f} | {report_rc} |")
    print(f"| baseline (everything read, every point and bar drawn) | {baseline_s:.2f} | {baseline_rc} |\n")
    print(f"tracekit report: {report_out}")
    if baseline_rc:
        print(f"baseline failed: {baseline_out}")
    print(f"\npage {page_kb:.0f} kB; figures: {', '.join(f'{k} {v // 1024} kB' for k, v in sizes.items())}\n")
    print(watch.end_line() + "\n")
    print(f"- {watch.verdict(report_rc == 0 and report_s < TARGET_S)} report in {report_s:.1f} s "
          f"(target < {TARGET_S:.0f} s); {baseline_s / report_s:.1f}x faster than the baseline")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
