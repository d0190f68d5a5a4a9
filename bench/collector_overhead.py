"""Collector overhead: Tracekit's collector vs. a naive psutil sampler and pidstat.

Measures, side by side in one run, CPU (% of one core), interval deviation
and peak RSS of the samplers following 50 and 200 live child processes
(``tkbench-<PID>``, a symlink to /bin/sleep) at 1 Hz and 10 Hz:

* tracekit: the real ``python -m tracekit collect run --match
  '^tkbench-<PID>$' --duration S``;
* naive: this script with ``--naive-baseline``: ``psutil.process_iter()``
  with fresh Process objects every tick, json.dumps, ``time.sleep(interval)``;
* pidstat (sysstat) at 1 Hz only (its interval is whole seconds):
  ``pidstat -H -h -u -r -d -w -p ALL -C '^tkbench-<PID>$' 1 N`` (the children)
  and ``pidstat -H -h -u -r -d -w -p ALL 1 N`` (every process).

Two more scenarios at 1 Hz: the same 50 children with 1,000 unrelated idle
processes (``tkbidle-<PID>``, not to be followed, measured once 12 s old)
beside them, each sampler with and without; and the collector with 10 of the 50 children in task
cgroups of their own (made by tracekit.taskcgroup as a worker makes them,
the run folder's task_cgroups.json written as the worker writes it) against
the collector without that file.

CPU is steady state, what a sampler costs while it runs: its CPU time
(/proc/PID/schedstat, ns) from a warm-up of 2 s after its start record to
its last reading before it exits (every 0.25 s), over the wall time
between; cross-checked with the sampler's own start/stop records. What it
spent outside (start-up: imports, the first look at every process; stop:
the final sample, closing) is shown apart, in ms, and in "incl. start-up",
its whole rusage over its whole life. pidstat, a C program, is measured
the same way from its launch.
Interval deviation is |gap - interval| between consecutive host-sample
``ts_ms`` (integer ms, so +-1 ms). Peak RSS is the polled VmHWM.
bench/README.md explains the columns.

    .venv/bin/python bench/collector_overhead.py           # ~7 minutes
    .venv/bin/python bench/collector_overhead.py --quick   # smoke run, ~40 s

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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import add_arguments as add_load_arguments
from _load import wait_for_quiet

# Named after this run (at most 15 characters, the kernel's comm): another run of this bench on
# the machine (another checkout's) must not add its children to this one's, nor this one to it.
CHILD_NAME = f"tkbench-{os.getpid()}"
IDLE_NAME = f"tkbidle-{os.getpid()}"  # unrelated processes: no sampler should follow them
MATCH = f"^{CHILD_NAME}$"
COUNTS = (50, 200)
QUICK_COUNTS = (50,)
IDLE_COUNT = 1000
# Unrelated idle processes on a node are old ones. The collector looks again at a process it
# did not follow for its first 10 s (RECHECK_NAME_WINDOW_MS in tracekit.collect.process: it may
# still exec something that matches), so they are measured once older than that.
IDLE_AGE_S = 12.0
TASK_CGROUP_COUNT = 10  # of the 50 children, born in task cgroups of their own
INTERVALS_MS = (1000, 100)
DEFAULT_DURATION_S = {1000: 25.0, 100: 15.0}
QUICK_DURATION_S = {1000: 2.0, 100: 2.0}
TARGET_CPU_PCT = {1000: 0.1, 100: 1.0}  # host + 50 processes
TARGET_P99_PCT = 2.0
TARGET_IDLE_GROWTH = 0.10  # with 1,000 unrelated idle processes
TARGET_CGROUPS_PCT = 0.05  # per 10 task cgroups at 1 Hz
NODE_ID, RUN_ID = "bench", "bench"
PIDSTAT = ("pidstat -C", "pidstat -p ALL")
# -H: epoch seconds, -h: one line per process; -p ALL: every process, active or not (without it,
# -C prints only the processes that used CPU in the interval: none of the sleeping children).
PIDSTAT_OPTIONS = ("-H", "-h", "-u", "-r", "-d", "-w", "-p", "ALL")
PIDSTAT_INSTALL = "pidstat (sysstat) is not installed: `apt-get install -y sysstat`; its rows are left out"
TK_CGROUPS = f"tracekit + {TASK_CGROUP_COUNT} task cgroups"
# What each sampler reads per process per tick (printed under the table).
GATHERS = {
    "tracekit": "CPU user/system, RSS, threads, read/write bytes, voluntary/involuntary context switches "
                "(/proc/PID/schedstat; stat, io and status only when schedstat shows the process ran since, stat at least "
                "every 5 s) to proc.csv; per tick also a host sample (CPU total and per CPU, memory, network per NIC); processes "
                "found by the kernel's process events (fork, exec, exit), /proc listed every 60 s",
    "naive": "the same per-process fields through psutil (stat, statm, status, io) as JSON, and a psutil host "
             "sample (per-CPU times, memory, network per NIC, disk); every /proc entry's name read each tick",
    "pidstat": "-u -r -d -w: %usr/%system/%guest/%wait/%CPU, CPU, minflt/majflt, VSZ, RSS, %MEM, kB read/written/"
               "cancelled, iodelay, cswch/nvcswch (/proc/PID/stat, status, io) as text; no host sample, no thread "
               "count; every /proc entry read each tick, -C filtering by name after",
}


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
def sleepers(count: int, name: str, workdir: Path, tasks=None):
    """``count`` sleeping processes named ``name``, killed and reaped after.

    tasks: a tracekit.taskcgroup.TaskCgroups: the first TASK_CGROUP_COUNT are born
    each in a task cgroup of its own, through the worker's spawn trampoline.
    """
    from_tasks = []
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir / name
    if not link.exists():
        link.symlink_to("/bin/sleep")
    procs: list[subprocess.Popen] = []
    try:
        for i in range(count):
            argv = [str(link), "3600"]
            if tasks is not None and i < TASK_CGROUP_COUNT:
                from tracekit.taskcgroup import cgroup_name

                task = tasks.task(cgroup_name(f"bench-task-{i}", 1))
                task.make()
                from_tasks.append(task)
                argv = task.trampoline(argv)
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
        wait_for_exec(procs, name)
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        for task in from_tasks:
            task.remove()


def wait_for_exec(procs: list[subprocess.Popen], name: str, timeout_s: float = 30.0) -> None:
    """Until every process runs ``name`` (the trampoline's shell has exec'd): the same set from the first tick."""
    deadline = time.monotonic() + timeout_s
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if _comm(p.pid) != name]
        if pending:
            time.sleep(0.02)


def wait_until_older(procs: list[subprocess.Popen], age_s: float) -> None:
    """Sleep until the youngest of ``procs`` is ``age_s`` old."""
    ticks = os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    started = max(int(Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) for p in procs) / ticks
    time.sleep(max(0.0, started + age_s - uptime))


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def task_cgroups(logs_dir: Path):
    """The run folder a worker with task cgroups would leave: (its TaskCgroups, None) or (None, why not).

    The task_cgroups.json is the worker's record (tracekit.sched.worker writes the same
    dict); only a collector started with this logs dir, run id and node id reads it.
    """
    from tracekit import runfolder
    from tracekit.jsonl import write_json
    from tracekit.taskcgroup import TaskCgroups

    folder = logs_dir / RUN_ID
    folder.mkdir(parents=True, exist_ok=True)
    found = TaskCgroups.detect(RUN_ID, NODE_ID, folder)
    if found.unavailable:
        yield None, found.unavailable
        return
    write_json(folder / runfolder.TASK_CGROUPS, {"node": NODE_ID, "run_id": RUN_ID, **found.describe()})
    try:
        yield found, None
    finally:
        found.close()


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


def run_measured(argv: list[str], start_marker: Path | None, log: Path, stdout: Path | None = None,
                 env: dict | None = None, warm_up_s: float = 2.0) -> dict:  # fmt: skip
    """Run a sampler to completion: its steady-state CPU, and all of it.

    Steady state: its CPU time (/proc/PID/schedstat, ns) read every 0.25 s, from the first reading
    ``warm_up_s`` after its start record (start_marker; None: after its launch, for a C program) to the
    last one before it exits, over the wall time between: what it costs while it runs, without its
    start-up (imports, the first look at every process) and its stop (the final sample, closing).
    Those are the rest of its rusage at exit ("incl. start-up").
    Peak RSS is the polled VmHWM, not ru_maxrss: Linux carries the forking
    parent's peak RSS over exec into the child's ru_maxrss.
    """
    launched = time.monotonic()
    with open(log, "wb") as err, (open(stdout, "wb") if stdout else contextlib.nullcontext(err)) as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
    started, at_start, hwm = (None, 0.0, 0) if start_marker else (launched, 0.0, 0)
    readings: list[tuple[float, float]] = []  # (time.monotonic(), CPU seconds) in steady state
    try:
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            now = time.monotonic()
            if started is None and start_marker.exists() and start_marker.stat().st_size > 0:
                started, at_start = now, cpu_seconds_now(proc.pid)
            if started is not None and now - started >= warm_up_s:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    readings.append((now, cpu_seconds_now(proc.pid)))
            hwm = max(hwm, vm_hwm_kb(proc.pid))
            time.sleep(0.005 if started is None else 0.25)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    ended = time.monotonic()
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{' '.join(argv[:5])} exited with {proc.returncode}; {log}:\n{tail}")
    cpu = ru.ru_utime + ru.ru_stime
    if len(readings) < 2:  # too short a run for a warm-up (--quick): from its start record to its exit
        readings = [(started or launched, at_start), (ended, cpu)]
    (t0, cpu0), (t1, cpu1) = readings[0], readings[-1]
    return {
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "cpu_pct_startup": 100 * cpu / (ended - launched),
        "outside_steady_ms": 1000 * (cpu - (cpu1 - cpu0)),
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


def pidstat_report(text: str) -> dict:
    """pidstat's reports (-H: whole epoch seconds, so no interval deviation): ticks, children seen."""
    stamps, children = set(), set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].isdigit():
            continue  # the banner, blank lines, the '# Time ...' header
        stamps.add(fields[0])
        if fields[-1] == CHILD_NAME:
            children.add(fields[2])
    return {"samples": len(stamps), "tracked": len(children), "self_pct": math.nan,
            "p50_ms": math.nan, "p99_ms": math.nan, "drift_ms": None}  # fmt: skip


def cgroups_sampled(path: Path) -> int:
    """How many task cgroups cgroup.csv has rows of (its second column)."""
    return len({line.split(",", 2)[1] for line in path.read_text().splitlines()[1:] if line})


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


def measure(impl: str, interval_ms: int, duration_s: float, out: Path) -> dict:
    """One sampler's run; ``out`` its folder (for the task-cgroup row: the logs dir holding the worker's record)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "sampler.log"
    if impl.startswith("tracekit"):
        argv = [sys.executable, "-m", "tracekit", "collect", "run", "--run-id", RUN_ID, "--node-id", NODE_ID,
                "--logs-dir", str(out), "--interval-ms", str(interval_ms), "--match", MATCH,
                "--duration", str(duration_s)]  # fmt: skip
        folder = out / RUN_ID
        result = run_measured(argv, folder / "collector.jsonl", log, warm_up_s=min(2.0, duration_s / 3))
        # host.csv: ts_ms is the first column
        stamps = [int(line.split(",", 1)[0]) for line in (folder / "host.csv").read_text().splitlines()[1:]]
        result.update(interval_stats(stamps, interval_ms))
        result.update(self_report(read_jsonl(folder / "collector.jsonl")))
        result["cgroups"] = cgroups_sampled(folder / "cgroup.csv")
    elif impl == "naive":
        argv = [sys.executable, str(Path(__file__).resolve()), "--naive-baseline", str(out), "--match", MATCH,
                "--interval-ms", str(interval_ms), "--duration", str(duration_s)]  # fmt: skip
        result = run_measured(argv, out / "events.jsonl", log, warm_up_s=min(2.0, duration_s / 3))
        result.update(interval_stats([r["ts_ms"] for r in read_jsonl(out / "host.jsonl")], interval_ms))
        result.update(self_report(read_jsonl(out / "events.jsonl")))
    else:  # pidstat: whole seconds only
        ticks = max(1, round(duration_s * 1000 / interval_ms))
        which = ["-C", MATCH] if impl == "pidstat -C" else []
        argv = ["pidstat", *PIDSTAT_OPTIONS, *which, str(interval_ms // 1000), str(ticks)]
        report = out / "pidstat.txt"
        result = run_measured(argv, None, log, stdout=report, env={**os.environ, "LC_ALL": "C"},
                              warm_up_s=min(2.0, duration_s / 3))
        result.update(pidstat_report(report.read_text()))
    return result


def machine() -> str:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return (f"- CPU: {model}, {os.cpu_count()} cores; kernel {platform.release()}; "
            f"Python {platform.python_version()}; load avg at start {os.getloadavg()[0]:.2f}")


def _ms(value: float, interval_ms: int) -> str:
    return "-" if math.isnan(value) else f"{value:.0f} ({100 * value / interval_ms:.1f}%)"


def table(rows: list[dict]) -> str:
    head = ("| sampler | processes | rate | samples | tracked | CPU % core | self-report % | start-up + stop ms "
            "| incl. start-up % | p50 dev ms (% int) | p99 dev ms (% int) | drift ms | peak RSS kB | tracekit/this CPU |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        iv = r["interval_ms"]
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        lines.append(
            f"| {r['impl']} | {scenario_label(r)} | {1000 / iv:g} Hz | {r['samples']} | {r['tracked']} "
            f"| {r['cpu_pct']:.2f} | {'-' if math.isnan(r['self_pct']) else format(r['self_pct'], '.2f')} "
            f"| {r['outside_steady_ms']:.0f} | {r['cpu_pct_startup']:.2f} | {_ms(r['p50_ms'], iv)} | {_ms(r['p99_ms'], iv)} "
            f"| {'-' if r['drift_ms'] is None else r['drift_ms']} | {r['peak_rss_kb']} | {ratio} |"
        )
    return "\n".join(lines)


def scenario_label(row: dict) -> str:
    return f"{row['procs']} + {row['idle']:,} idle" if row["idle"] else str(row["procs"])


def idle_table(rows: list[dict]) -> tuple[str, dict]:
    """Each sampler's CPU at 1 Hz with 50 children, without and with the idle processes: the growth."""
    by = {(r["impl"], r["idle"]): r for r in rows if r["procs"] == 50 and r["interval_ms"] == 1000}
    lines = [f"| sampler | CPU % core, 50 processes | + {IDLE_COUNT:,} idle processes | growth "
             "| tracekit/this, with idle |", "|---|---|---|---|---|"]
    growth = {}
    for impl in ("tracekit", "naive", *PIDSTAT):
        without, with_idle = by.get((impl, 0)), by.get((impl, IDLE_COUNT))
        if not (without and with_idle):
            continue
        growth[impl] = with_idle["cpu_pct"] / max(without["cpu_pct"], 1e-9) - 1
        ratio = f"{with_idle['ratio']:.2f}x" if "ratio" in with_idle else ""
        lines.append(f"| {impl} | {without['cpu_pct']:.2f} | {with_idle['cpu_pct']:.2f} | {100 * growth[impl]:+.0f}% "
                     f"| {ratio} |")  # fmt: skip
    return "\n".join(lines), growth


def add_ratios(rows: list[dict]) -> None:
    """Each peer's row: tracekit's CPU / its CPU in the same scenario and rate."""
    tk = {(r["procs"], r["idle"], r["interval_ms"]): r["cpu_pct"] for r in rows if r["impl"] == "tracekit"}
    for r in rows:
        key = (r["procs"], r["idle"], r["interval_ms"])
        if r["impl"] in ("naive", *PIDSTAT) and key in tk:
            r["ratio"] = tk[key] / max(r["cpu_pct"], 1e-9)


def targets(rows: list[dict], growth: dict, verdict) -> list[str]:
    tk = {(r["procs"], r["idle"], r["interval_ms"]): r for r in rows if r["impl"] == "tracekit"}
    naive = {(r["procs"], r["idle"], r["interval_ms"]): r for r in rows if r["impl"] == "naive"}
    out = []
    for iv, limit in TARGET_CPU_PCT.items():
        if (50, 0, iv) in tk:
            cpu = tk[(50, 0, iv)]["cpu_pct"]
            out.append(f"- {verdict(cpu <= limit)}: host + 50 processes at {1000 / iv:g} Hz: "
                       f"{cpu:.2f}% of one core (target <= {limit}%)")
    if "tracekit" in growth:
        g = growth["tracekit"]
        out.append(f"- {verdict(g <= TARGET_IDLE_GROWTH)}: with {IDLE_COUNT:,} unrelated idle processes, 50 followed, "
                   f"1 Hz: CPU {100 * g:+.0f}% (target <= +{100 * TARGET_IDLE_GROWTH:.0f}%)")  # fmt: skip
    cg = [r for r in rows if r["impl"] == TK_CGROUPS]
    if cg and (50, 0, 1000) in tk:
        added = cg[0]["cpu_pct"] - tk[(50, 0, 1000)]["cpu_pct"]
        out.append(f"- {verdict(added <= TARGET_CGROUPS_PCT)}: {TASK_CGROUP_COUNT} task cgroups at 1 Hz: "
                   f"{added:+.3f}% of one core (target <= {TARGET_CGROUPS_PCT}%)")
    for key, r in tk.items():
        p99 = 100 * r["p99_ms"] / key[2]
        out.append(f"- {verdict(p99 <= TARGET_P99_PCT)}: p99 interval deviation, {scenario_label(r)} processes "
                   f"at {1000 / key[2]:g} Hz: {p99:.1f}% of the interval (target <= {TARGET_P99_PCT}%)")
    for key, r in tk.items():
        b = naive.get(key)
        if b is None:
            continue
        ok = r["cpu_pct"] <= b["cpu_pct"] and r["p99_ms"] <= b["p99_ms"]
        out.append(f"- {verdict(ok)}: not worse than naive, {scenario_label(r)} processes at {1000 / key[2]:g} Hz: "
                   f"CPU {r['cpu_pct']:.2f}% vs {b['cpu_pct']:.2f}%, "
                   f"p99 {r['p99_ms']:.0f} vs {b['p99_ms']:.0f} ms")
    return out


class Runner:
    """Runs the samplers one after the other, noting the load average before each."""

    def __init__(self, durations: dict[int, float], workdir: Path, with_pidstat: bool):
        self.durations, self.workdir, self.with_pidstat = durations, workdir, with_pidstat
        self.rows: list[dict] = []
        self.loads = [os.getloadavg()[0]]

    def scenario(self, procs: int, idle: int, impls_by_rate: dict[int, tuple[str, ...]],
                 cgroup_logs: Path | None = None) -> None:  # fmt: skip
        for iv, impls in impls_by_rate.items():
            for impl in impls:
                if impl in PIDSTAT and not self.with_pidstat:
                    continue
                label = f"{procs}" + (f"+{idle}idle" if idle else "")
                out = cgroup_logs if impl == TK_CGROUPS else self.workdir / label / f"{impl.replace(' ', '')}-{iv}"
                self.loads.append(os.getloadavg()[0])
                print(f"  {impl}: {label} processes, {iv} ms, {self.durations[iv]:g} s "
                      f"(load {self.loads[-1]:.2f})", file=sys.stderr)  # fmt: skip
                row = measure(impl, iv, self.durations[iv], out)
                row.update(impl=impl, procs=procs, idle=idle, interval_ms=iv)
                self.rows.append(row)


def run_all(runner: Runner, counts: tuple[int, ...]) -> str | None:
    """Every scenario; returns why the task-cgroup row is missing, if it is."""
    every = ("tracekit", "naive", *PIDSTAT)
    at_10hz = ("tracekit", "naive")  # pidstat: whole seconds only
    cgroup_logs = runner.workdir / "50" / "tracekit-cgroups-1000"
    with task_cgroups(cgroup_logs) as (tasks, why_not):
        with sleepers(50, CHILD_NAME, runner.workdir, tasks):
            first = ("tracekit", TK_CGROUPS, *every[1:]) if tasks is not None else every
            runner.scenario(50, 0, {1000: first, 100: at_10hz}, cgroup_logs)
            with sleepers(IDLE_COUNT, IDLE_NAME, runner.workdir) as idle:
                wait_until_older(idle, IDLE_AGE_S)
                runner.scenario(50, IDLE_COUNT, {1000: every})
    for count in counts:
        if count != 50:
            with sleepers(count, CHILD_NAME, runner.workdir):
                runner.scenario(count, 0, {1000: every, 100: at_10hz})
    return why_not


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Measures; exits 0 whatever the numbers.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 50 processes only, a few seconds per configuration")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="seconds per configuration (default: 25 at 1 Hz, 15 at 10 Hz)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the raw output in DIR (new or empty; default: a temp dir)")
    add_load_arguments(parser)
    parser.add_argument("--wait-quiet", type=float, default=180.0, metavar="S",
                        help="first wait up to S seconds for the 1-minute load average to fall to half of --max-load "
                             "(what a test suite just ended leaves decays in a few minutes; default: 180)")  # fmt: skip
    parser.add_argument("--naive-baseline", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--interval-ms", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--match", default=MATCH, help=argparse.SUPPRESS)  # the naive sampler's: its parent's
    args = parser.parse_args(argv)
    if args.naive_baseline is not None:
        naive_baseline(args.naive_baseline, args.interval_ms, args.match, args.duration or 10.0)
        return 0
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: use a new or empty folder")
    durations = QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S
    if args.duration:
        durations = dict.fromkeys(INTERVALS_MS, args.duration)
    with_pidstat = shutil.which("pidstat") is not None
    waited = wait_for_quiet(args.max_load / 2, args.wait_quiet)
    print("# Collector overhead: tracekit vs naive psutil sampler and pidstat\n")
    if waited:
        print(f"- waited {waited:.0f} s for the load average to fall to {args.max_load / 2:g} (it was {os.getloadavg()[0]:.2f} then)")
    print(machine())
    if not with_pidstat:
        print(f"- {PIDSTAT_INSTALL}")
    with tempfile.TemporaryDirectory(prefix="tkbench-") as tmp:
        runner = Runner(durations, args.keep or Path(tmp), with_pidstat)
        why_no_cgroups = run_all(runner, QUICK_COUNTS if args.quick else COUNTS)
    rows = runner.rows
    runner.loads.append(os.getloadavg()[0])
    busiest = max(runner.loads)
    print("- durations: " + ", ".join(f"{durations[iv]:g} s at {1000 / iv:g} Hz" for iv in INTERVALS_MS)
          + f"; load avg at end {runner.loads[-1]:.2f}, highest seen {busiest:.2f}"
          + "; ts_ms is integer ms (+-1 ms per gap)")
    print("- pidstat runs at 1 Hz only: its interval is whole seconds, it cannot do 10 Hz; "
          "its timestamps are whole seconds, so no interval deviation")
    if why_no_cgroups:
        print(f"- no task-cgroup row: {why_no_cgroups}")
    for r in rows:
        if r["tracked"] != r["procs"]:
            print(f"- WARNING: {r['impl']} followed {r['tracked']} processes, not the {r['procs']} children")
    add_ratios(rows)
    print()
    print(table(rows))
    print("\nPer process and tick each sampler reads:\n")
    print("\n".join(f"- {name}: {what}" for name, what in GATHERS.items()))
    idle, growth = idle_table(rows)
    print(f"\n## {IDLE_COUNT:,} unrelated idle processes beside the 50 followed (1 Hz)\n")
    print(idle)
    cg = [r for r in rows if r["impl"] == TK_CGROUPS]
    if cg:
        base = next(r for r in rows if r["impl"] == "tracekit" and r["procs"] == 50 and not r["idle"]
                    and r["interval_ms"] == 1000)
        print(f"\n## Task cgroups (1 Hz, 50 processes, {TASK_CGROUP_COUNT} of them in task cgroups)\n")
        print(f"- tracekit: {base['cpu_pct']:.3f}% of a core without the worker's task_cgroups.json, "
              f"{cg[0]['cpu_pct']:.3f}% with it ({cg[0]['cgroups']} task cgroups sampled): "
              f"{cg[0]['cpu_pct'] - base['cpu_pct']:+.3f}% of a core")
    busy = busiest > args.max_load

    def verdict(ok: bool) -> str:
        return "not judged" if busy else ("PASS" if ok else "FAIL")

    print("\n## Targets (tracekit, steady-state CPU)\n")
    if busy:
        print(f"The machine was busy (load average up to {busiest:.2f}, above --max-load {args.max_load:g}): "
              "no PASS/FAIL; the figures as measured:\n")
    print("\n".join(targets(rows, growth, verdict)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every child is already killed and reaped
        sys.exit(130)
