"""Collector overhead: Tracekit's collector vs. a naive psutil sampler.

Measures, side by side in one run, CPU (% of one core), interval deviation
and peak RSS of two samplers following 50 and 200 live child processes
(``tkbench-child``, a symlink to /bin/sleep) at 1 Hz and 10 Hz:

* tracekit: the real ``python -m tracekit collect run --match
  '^tkbench-child$' --duration S``;
* naive: this script with ``--naive-baseline``: ``psutil.process_iter()``
  with fresh Process objects every tick, json.dumps, ``time.sleep(interval)``.

CPU is steady state: the child's ``os.wait4`` rusage minus its CPU time when
it wrote its start record (/proc/PID/schedstat), over the wall time between;
cross-checked with the sampler's own start/stop records. Interval deviation
is |gap - interval| between consecutive host-sample ``ts_ms`` (integer ms,
so +-1 ms). Peak RSS is the polled VmHWM. bench/README.md explains columns.

    .venv/bin/python bench/collector_overhead.py           # ~4 minutes
    .venv/bin/python bench/collector_overhead.py --quick   # smoke run, ~30 s

Prints Markdown to stdout; exits 0 whatever the numbers are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_NAME = "tkbench-child"
MATCH = f"^{CHILD_NAME}$"
COUNTS = (50, 200)
INTERVALS_MS = (1000, 100)
DEFAULT_DURATION_S = {1000: 30.0, 100: 15.0}
QUICK_DURATION_S = {1000: 4.0, 100: 2.0}
TARGET_CPU_PCT = {1000: 0.5, 100: 5.0}  # host + 50 processes
TARGET_P99_PCT = 2.0
VERDICT = {True: "PASS", False: "FAIL"}


def naive_host(psutil, ts_ms: int) -> dict:
    """The naive host sample: straight from psutil, every field."""
    nics = psutil.net_io_counters(pernic=True)
    return {"ts_ms": ts_ms,
            "cpu": [c._asdict() for c in psutil.cpu_times(percpu=True)],
            "mem": psutil.virtual_memory()._asdict(),
            "net": {nic: c._asdict() for nic, c in nics.items()},
            "disk": psutil.disk_io_counters()._asdict()}  # fmt: skip


def naive_baseline(out: Path, interval_ms: int, pattern: str, duration_s: float) -> None:
    """The obvious psutil sampler: no caching, json.dumps, drifting sleep."""
    import resource

    import psutil

    regex, seen = re.compile(pattern), set()
    # Fresh Process objects every tick (psutil >= 6 caches them in process_iter).
    clear_cache = getattr(psutil.process_iter, "cache_clear", None) or getattr(psutil, "_pmap", {}).clear

    def usage(event: str) -> str:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return json.dumps({"ts_ms": int(time.time() * 1000), "event": event,
                           "cpu_user_ms": round(ru.ru_utime * 1000), "cpu_system_ms": round(ru.ru_stime * 1000),
                           "processes_tracked": len(seen)}) + "\n"  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "host.jsonl", "w") as host, open(out / "proc.jsonl", "w") as proc, \
            open(out / "events.jsonl", "w") as events:  # fmt: skip
        events.write(usage("start"))
        events.flush()
        started = time.monotonic()
        while time.monotonic() - started < duration_s:
            ts_ms = int(time.time() * 1000)
            clear_cache()
            for p in psutil.process_iter():
                try:
                    if not regex.search(p.name()):
                        continue
                    record = {"ts_ms": ts_ms, "pid": p.pid, "cpu": p.cpu_times()._asdict(),
                              "mem": p.memory_info()._asdict(), "threads": p.num_threads(),
                              "io": p.io_counters()._asdict(), "ctx": p.num_ctx_switches()._asdict()}
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                proc.write(json.dumps(record) + "\n")
                seen.add(p.pid)
            host.write(json.dumps(naive_host(psutil, ts_ms)) + "\n")
            host.flush()
            proc.flush()
            time.sleep(interval_ms / 1000)
        events.write(usage("stop"))


@contextlib.contextmanager
def children(count: int, workdir: Path):
    """``count`` sleeping processes named tkbench-child, killed and reaped after."""
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / CHILD_NAME
    if not link.exists():
        link.symlink_to("/bin/sleep")
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([str(link), "3600"], stdin=subprocess.DEVNULL))
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def cpu_seconds_now(pid: int) -> float:
    """CPU time so far of a live process (ns-precise schedstat, else stat ticks)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_kb(pid: int) -> int:
    """Peak RSS since exec (0 once the process is a zombie)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_measured(argv: list[str], start_marker: Path, log: Path) -> dict:
    """Run a sampler to completion: CPU from rusage, steady state after its start record.

    Peak RSS is the polled VmHWM, not ru_maxrss: Linux carries the forking
    parent's peak RSS over exec into the child's ru_maxrss.
    """
    launched = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    cpu0, wall0, hwm = 0.0, None, 0
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if wall0 is None and start_marker.exists() and start_marker.stat().st_size > 0:
                cpu0, wall0 = cpu_seconds_now(proc.pid), time.monotonic()
            hwm = max(hwm, vm_hwm_kb(proc.pid))
            time.sleep(0.005 if wall0 is None else 0.25)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    ended = time.monotonic()
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(argv[:5])} exited with {proc.returncode}; {log}:\n{tail}")
    cpu = ru.ru_utime + ru.ru_stime
    return {
        "cpu_pct": 100 * (cpu - cpu0) / (ended - (wall0 or launched)),
        "cpu_pct_startup": 100 * cpu / (ended - launched),
        "peak_rss_kb": hwm,
    }


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def self_report(events: list[dict]) -> dict:
    """CPU % between the sampler's own start and stop records; processes it followed."""
    start = next(e for e in events if e.get("event") == "start")
    stop = next(e for e in reversed(events) if e.get("event") == "stop")
    cpu_ms = sum(stop[k] - start[k] for k in ("cpu_user_ms", "cpu_system_ms"))
    return {"self_pct": 100 * cpu_ms / max(1, stop["ts_ms"] - start["ts_ms"]),
            "tracked": stop["processes_tracked"]}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def interval_stats(stamps: list[int], interval_ms: int) -> dict:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    if gaps and gaps[-1] < interval_ms / 2:  # the collector's extra sample at stop
        gaps.pop()
    deviations = [abs(g - interval_ms) for g in gaps] or [math.nan]
    return {"samples": len(gaps) + 1, "p50_ms": percentile(deviations, 50),
            "p99_ms": percentile(deviations, 99), "drift_ms": sum(gaps) - len(gaps) * interval_ms}


def measure(impl: str, interval_ms: int, duration_s: float, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{impl}-{interval_ms}"
    if impl == "tracekit":
        argv = [sys.executable, "-m", "tracekit", "collect", "run", "--run-id", "bench",
                "--logs-dir", str(out), "--interval-ms", str(interval_ms), "--match", MATCH,
                "--duration", str(duration_s)]  # fmt: skip
        folder, events = out / "bench", "collector.jsonl"
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "--naive-baseline", str(out),
                "--interval-ms", str(interval_ms), "--duration", str(duration_s)]  # fmt: skip
        folder, events = out, "events.jsonl"
    result = run_measured(argv, folder / events, workdir / f"{impl}-{interval_ms}.log")
    if impl == "tracekit":  # host.csv: ts_ms is the first column
        stamps = [int(line.split(",", 1)[0]) for line in (folder / "host.csv").read_text().splitlines()[1:]]
    else:
        stamps = [r["ts_ms"] for r in read_jsonl(folder / "host.jsonl")]
    result.update(interval_stats(stamps, interval_ms))
    result.update(self_report(read_jsonl(folder / events)))
    return result


def machine() -> str:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return (f"- CPU: {model}, {os.cpu_count()} cores; kernel {platform.release()}; "
            f"Python {platform.python_version()}; load avg at start {os.getloadavg()[0]:.2f}")


def table(rows: list[dict]) -> str:
    head = ("| impl | procs | rate | samples | tracked | CPU % core | self-report % | incl. start-up % "
            "| p50 dev ms (% int) | p99 dev ms (% int) | drift ms | peak RSS kB | naive/tracekit CPU |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        iv = r["interval_ms"]
        ratio = f"{r['ratio']:.1f}x" if "ratio" in r else ""
        lines.append(
            f"| {r['impl']} | {r['procs']} | {1000 / iv:g} Hz | {r['samples']} | {r['tracked']} "
            f"| {r['cpu_pct']:.2f} | {r['self_pct']:.2f} | {r['cpu_pct_startup']:.2f} "
            f"| {r['p50_ms']:.0f} ({100 * r['p50_ms'] / iv:.1f}%) "
            f"| {r['p99_ms']:.0f} ({100 * r['p99_ms'] / iv:.1f}%) "
            f"| {r['drift_ms']} | {r['peak_rss_kb']} | {ratio} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[str]:
    tk = {(r["procs"], r["interval_ms"]): r for r in rows if r["impl"] == "tracekit"}
    naive = {(r["procs"], r["interval_ms"]): r for r in rows if r["impl"] == "naive"}
    out = []
    for iv, limit in TARGET_CPU_PCT.items():
        if (50, iv) in tk:
            cpu = tk[(50, iv)]["cpu_pct"]
            out.append(f"- {VERDICT[cpu <= limit]}: host + 50 processes at {1000 / iv:g} Hz: "
                       f"{cpu:.2f}% of one core (target <= {limit}%)")
    for key, r in tk.items():
        p99 = 100 * r["p99_ms"] / key[1]
        out.append(f"- {VERDICT[p99 <= TARGET_P99_PCT]}: p99 interval deviation, {key[0]} processes "
                   f"at {1000 / key[1]:g} Hz: {p99:.1f}% of the interval (target <= {TARGET_P99_PCT}%)")
    for key, r in tk.items():
        b = naive[key]
        ok = r["cpu_pct"] <= b["cpu_pct"] and r["p99_ms"] <= b["p99_ms"]
        out.append(f"- {VERDICT[ok]}: not worse than naive, {key[0]} processes at {1000 / key[1]:g} Hz: "
                   f"CPU {r['cpu_pct']:.2f}% vs {b['cpu_pct']:.2f}%, "
                   f"p99 {r['p99_ms']:.0f} vs {b['p99_ms']:.0f} ms")
    return out


def run_all(durations: dict[int, float], workdir: Path) -> list[dict]:
    """Every configuration, tracekit then naive against the same children."""
    rows: list[dict] = []
    for count in COUNTS:
        with children(count, workdir):
            for iv in INTERVALS_MS:
                pair = {}
                for impl in ("tracekit", "naive"):
                    print(f"  {impl}: {count} processes, {iv} ms, {durations[iv]:g} s", file=sys.stderr)
                    pair[impl] = measure(impl, iv, durations[iv], workdir / str(count))
                    pair[impl].update(impl=impl, procs=count, interval_ms=iv)
                pair["tracekit"]["ratio"] = pair["naive"]["cpu_pct"] / max(pair["tracekit"]["cpu_pct"], 1e-9)
                rows += [pair["tracekit"], pair["naive"]]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Measures; exits 0 whatever the numbers.")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few seconds per configuration")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="seconds per configuration (default: 30 at 1 Hz, 15 at 10 Hz)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the raw output in DIR (new or empty; default: a temp dir)")
    parser.add_argument("--naive-baseline", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--interval-ms", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_baseline is not None:
        naive_baseline(args.naive_baseline, args.interval_ms, MATCH, args.duration or 10.0)
        return 0
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: use a new or empty folder")
    durations = QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S
    if args.duration:
        durations = dict.fromkeys(INTERVALS_MS, args.duration)
    print("# Collector overhead: tracekit vs naive psutil sampler\n")
    print(machine())
    with tempfile.TemporaryDirectory(prefix="tkbench-") as tmp:
        rows = run_all(durations, args.keep or Path(tmp))
    print("- durations: " + ", ".join(f"{durations[iv]:g} s at {1000 / iv:g} Hz" for iv in INTERVALS_MS)
          + f"; load avg at end {os.getloadavg()[0]:.2f}; ts_ms is integer ms (+-1 ms per gap)\n")
    print(table(rows))
    print("\n## Targets (tracekit, steady-state CPU)\n")
    print("\n".join(targets(rows)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every child is already killed and reaped
        sys.exit(130)
