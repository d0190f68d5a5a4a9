"""Trace pipeline throughput: Tracekit's parse + export vs. a per-record baseline.

Generates a synthetic but realistic raw run (seeded, deterministic; not
timed): N node folders with node.json, clock.json, proc.csv (cumulative
counters, every tick all live processes), processes.jsonl,
events.ffmpeg.jsonl (as ``tracekit wrap`` writes them), host.csv (one row
per tick), host_cpus.csv and host_net.csv. Several invocations run
concurrently on each node; each one's process (and sometimes a child) is
sampled every 1000 ms tick, ~200 samples per invocation on average.

Then measures, each job in a fresh subprocess (``--measure JOB``), the wall
time of the call itself (imports excluded) and the process's peak RSS
(``VmHWM`` from /proc/self/status at the end of the child):

* tracekit: ``parse_run(run)`` (cctf/ as Parquet) then ``export_opendc(run, out)``;
* tracekit --jsonl: the same with ``parse_run(run, jsonl=True)`` (also the
  JSON Lines copy of the per-sample tables);
* baseline, "the approach of the original tool", on the same data: a
  straightforward per-record implementation (json.loads per line of a
  JSONL copy of the samples, dicts, a per-process previous-sample dict for
  the deltas, json.dumps per proc_metrics record; then export reads that
  JSONL back, builds every invocation's fragments in a Python loop and
  writes tasks/fragments Parquet from Python lists);
* tracekit again with 2x the nodes (same samples per node): peak RSS must
  not grow with the number of nodes.
* the floor under parse ("io-floor"): each node's raw CSV files read by
  Arrow and written back as zstd Parquet, nothing computed, in parse's
  worker processes: no parse of these files on this machine is faster.

    .venv/bin/python bench/pipeline.py --quick     # smoke run, ~30 s
    .venv/bin/python bench/pipeline.py             # 3 nodes, 2M samples (~7 min on a busy 2-core machine)
    .venv/bin/python bench/pipeline.py --profile   # + cProfile of parse and export (~+7 min)

Prints Markdown to stdout; exits 0 whatever the numbers are (1 if a job
crashed). bench/README.md explains the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import accumulate, chain, repeat
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from _load import LoadWatch
from _load import add_arguments as add_load_arguments
from tracekit.trace.export import names as export_formats

TICK_MS = 1000
T0_MS = 1_795_600_000_000  # 2026-11-25, epoch ms
PROC_COLUMNS = (
    "ts_ms", "pid", "create_time_ms", "cpu_user_ms", "cpu_system_ms", "rss_kb",
    "num_threads", "read_bytes", "write_bytes", "ctx_voluntary", "ctx_involuntary",
    "cpu_ns", "run_delay_ns", "children_unseen_cpu_ns",
)  # fmt: skip (= tracekit.collect.process.PROC_CSV_COLUMNS, checked in generate_run)
COUNTERS = ("cpu_user_ms", "cpu_system_ms", "read_bytes", "write_bytes", "ctx_voluntary", "ctx_involuntary")
CHILD_SHARE = 0.3  # invocations with a sampled child process
SHORT_SHARE = 0.02  # invocations shorter than a tick (usually no samples)
FAILED_SHARE = 0.02  # exit status 1
KILLED_SHARE = 0.005  # SIGKILL
DEFAULTS = {"samples": 2_000_000, "invocations": 10_000}
QUICK = {"samples": 60_000, "invocations": 300}
# The pipeline is judged against what this machine can do in the same run (issue 29): parse + export at most
# this multiple of the io floor (the raw files read and written back, nothing computed), and at least this
# multiple of the per-record baseline. (1,000,000 samples/s on 2 cores was withdrawn: parse and export need
# more CPU-seconds than 2 cores give in 2 s.)
TARGET_VS_FLOOR = 2.5
TARGET_SPEEDUP = 10.0
RSS_GROWTH_TOLERANCE = 1.10  # 2x the nodes may cost at most 10 % more peak RSS
TARGET_JSONL_SAMPLES_PER_S = 200_000  # with the JSON Lines copy (parse --jsonl)
TARGET_FORMAT_VS_OPENDC = 2.0  # every export format within 2x of the OpenDC export's time (issue 28)
FORMATS = tuple(export_formats())
JOBS = ("tracekit-parse", "tracekit-parse-jsonl", "tracekit-merge", "tracekit-export", "baseline-parse", "baseline-export",
        "io-floor", *(f"export:{name}" for name in FORMATS))


# -- synthetic raw run ---------------------------------------------------------


@dataclass
class Proc:
    pid: int
    ctime: int  # create_time_ms as the collector reports it (whole-second boot time)
    ppid: int
    comm: str
    cmdline: list[str]
    reason: str
    task_id: str | None
    k_first: int  # first tick that samples it
    n: int  # samples
    first_frac: float  # share of a tick the first sample covers
    share: float  # cores it keeps busy
    rss_kb: int
    threads: int
    read_bps: int
    write_bps: int
    base: tuple[int, ...] = (0, 0, 0, 0, 0, 0)  # counters before the first sample (COUNTERS order)
    last: dict[str, int] = field(default_factory=dict)  # last cumulative sample values
    max_rss_kb: int = 0


@dataclass
class Task:
    event: dict
    procs: list[Proc]
    share: float


@dataclass
class NodePlan:
    node: str
    index: int
    t0: int
    ticks: int
    boot_ms: int
    correction_ms: int
    cores: int
    tasks: list[Task]
    daemon: Proc

    @property
    def procs(self) -> list[Proc]:
        found = [self.daemon] + [p for t in self.tasks for p in t.procs if p.n > 0]
        return sorted(found, key=lambda p: (p.k_first, p.pid))

    @property
    def samples(self) -> int:
        return self.daemon.n + sum(p.n for t in self.tasks for p in t.procs)


def node_name(index: int) -> str:
    return f"{'cloud' if index % 2 == 0 else 'edge'}{index // 2 + 1:02d}"


def node_facts(plan: NodePlan) -> dict:
    """The shape of a real node.json (tracekit collect run), with this node's values."""
    cloud = plan.index % 2 == 0
    return {
        "node": plan.node,
        "stage": "cloud" if cloud else "edge",
        "role": "worker",
        "hostname": plan.node,
        "os": "Debian GNU/Linux 12 (bookworm)",
        "kernel": "6.1.0-28-amd64",
        "arch": "x86_64",
        "cpu_model": "AMD EPYC 7B13" if cloud else "Intel(R) Core(TM) i5-8365U CPU @ 1.60GHz",
        "cores_logical": plan.cores,
        "cores_physical": plan.cores if cloud else plan.cores // 2,
        "cpu_mhz": 2445.404 if cloud else 1600.0,
        "cpu_mhz_source": "cpuinfo" if cloud else "cpufreq",
        "mem_kb": 32_873_656 if cloud else 16_270_332,
        "cgroup_version": 2,
        "boot_time_ms": plan.boot_ms,
        "start_time_correction_ms": plan.correction_ms,
        "clk_tck": 100,
        "page_size": 4096,
        "interfaces": [
            {"name": "eth0", "is_up": True, "speed_mbps": 10000 if cloud else 1000, "mtu": 1500,
             "ipv4": [f"10.0.0.{plan.index + 10}"], "mac": f"02:fc:00:00:00:{plan.index + 1:02x}"},
            {"name": "lo", "is_up": True, "speed_mbps": 0, "mtu": 65536, "ipv4": ["127.0.0.1"],
             "mac": "00:00:00:00:00:00"},
        ],
    }  # fmt: skip


def tick_ts(plan: NodePlan, k: int) -> int:
    return plan.t0 + k * TICK_MS + (k * 7) % 4  # a few ms of scheduling jitter


def _sampled(plan: NodePlan, start: int, end: int) -> tuple[int, int]:
    """(first tick, count) of the ticks that see a process alive over [start, end]."""
    k_first = (start - plan.t0) // TICK_MS + 1
    k_last = (end - 3 - plan.t0) // TICK_MS  # the jitter never puts a tick after the exit
    return k_first, max(0, k_last - k_first + 1)


def plan_node(seed: int, index: int, invocations: int, mean_ticks: float, concurrency: int) -> NodePlan:
    """Invocations of one node: ``concurrency`` slots, each running tasks back to back.

    The random draws do not depend on ``mean_ticks``, so calibrating it keeps
    everything else the same.
    """
    rng = random.Random(f"tkbench/{seed}/{index}")
    node = node_name(index)
    cores = 8 if index % 2 == 0 else 4
    t0 = T0_MS + index * 137
    boot_ms = (t0 - 86_400_000 - rng.randrange(0, 3_600_000)) // 1000 * 1000
    plan = NodePlan(node, index, t0, 0, boot_ms, rng.randrange(1, 1000), cores, [], None)  # type: ignore[arg-type]
    slots = [(t0 + rng.randrange(0, 5000), slot) for slot in range(concurrency)]
    heapq.heapify(slots)
    next_pid = 2000 + rng.randrange(0, 1000)

    def new_pid() -> int:
        nonlocal next_pid
        next_pid = 2000 + (next_pid - 2000 + 1 + rng.randrange(0, 16)) % 30000  # pid_max 32768, reused
        return next_pid

    def ctime_of(real_start: int) -> int:
        return boot_ms + (real_start - boot_ms - plan.correction_ms) // 10 * 10

    for _ in range(invocations):
        free_at, slot = heapq.heappop(slots)
        u = [rng.random() for _ in range(12)]
        ts_start = free_at + 200 + int(u[0] * 2800)
        if u[1] < SHORT_SHARE:
            duration = 20 + int(u[2] * 900)
        else:
            duration = int(mean_ticks * (0.2 + 1.6 * u[2]) * TICK_MS) + int(u[3] * TICK_MS)
        ts_end = ts_start + duration
        heapq.heappush(slots, (ts_end, slot))
        status, signal, error = 0, None, None
        if u[4] < FAILED_SHARE:
            status, error = 1, "exit status 1"
        elif u[4] < FAILED_SHARE + KILLED_SHARE:
            status, signal, error = -9, "SIGKILL", "killed by SIGKILL"
        task_id = f"{rng.getrandbits(128):032x}"
        clip = f"/data/in/clip-{rng.randrange(0, 5000):05d}.mp4"
        output = f"/data/out/{task_id}.mp4"
        argv = ["ffmpeg", "-nostdin", "-y", "-i", clip, "-c:v", "libx264", "-preset", "veryfast",
                "-b:v", f"{500 + 500 * int(u[5] * 8)}k", output]  # fmt: skip
        share = min(1.0, cores / concurrency * (0.4 + 0.8 * u[6]))
        real_start = ts_start + 2 + int(u[7] * 7)
        exit_at = ts_end - 1 - int(u[8] * 2)
        k_first, n = _sampled(plan, real_start, exit_at)
        wrapper_pid = new_pid()
        pid = new_pid()
        rss = 60_000 + int(u[9] * 400_000)
        main = Proc(pid, ctime_of(real_start), wrapper_pid, "ffmpeg", argv, "registered", task_id, k_first, n,
                    (tick_ts(plan, k_first) - real_start) / TICK_MS, share, rss, 8 + int(u[10] * 24),
                    200_000 + int(u[11] * 4_000_000), 100_000 + int(u[5] * 2_000_000))  # fmt: skip
        procs = [main]
        c = [rng.random() for _ in range(4)]
        if c[0] < CHILD_SHARE and duration > 5 * TICK_MS:
            child_start = real_start + int(duration * (0.1 + 0.3 * c[1]))
            child_end = min(exit_at - 50, child_start + int(duration * (0.3 + 0.3 * c[2])))
            k_first, n = _sampled(plan, child_start, child_end)
            child_argv = ["ffprobe", "-v", "error", "-show_streams", output]
            procs.append(
                Proc(new_pid(), ctime_of(child_start), pid, "ffprobe", child_argv, "descendant",
                     task_id if c[3] < 0.5 else None,  # followed by name before the registration: no task id
                     k_first, n, (tick_ts(plan, k_first) - child_start) / TICK_MS, share * 0.3,
                     20_000 + int(c[3] * 30_000), 2, 50_000, 0)  # fmt: skip
            )
        event = {
            "run_id": "bench", "task_id": task_id, "trace_id": f"{rng.getrandbits(128):032x}", "node": node,
            "module": "ffmpeg", "attempt": 1, "argv": argv, "inputs": [clip], "outputs": [output],
            "bytes_in": 2_000_000 + int(u[11] * 60_000_000), "ts_enqueue": ts_start, "ts_enqueue_given": False,
            "ts_start": ts_start, "pid": pid, "create_time_ms": main.ctime, "ts_end": ts_end, "status": status,
            "signal": signal, "error": error,
        }  # fmt: skip
        plan.tasks.append(Task(event, procs, share))
    last_end = max(t.event["ts_end"] for t in plan.tasks) if plan.tasks else t0
    plan.ticks = (last_end - t0) // TICK_MS + 2
    # A long-running ffmpeg the collector follows by name, not from a wrapped task: unattributed samples.
    live = ["ffmpeg", "-i", "rtsp://cam1/live", "-f", "hls", "/srv/hls/cam1.m3u8"]
    plan.daemon = Proc(1234, boot_ms + 120_000, 1, "ffmpeg", live, "name", None, 0, plan.ticks, 1.0, 0.15,
                       90_000, 6, 0, 400_000, (8_000_000, 400_000, 0, 30_000_000_000, 9_000_000, 200_000))  # fmt: skip
    return plan


def calibrated_plan(seed: int, index: int, invocations: int, samples: int, concurrency: int) -> NodePlan:
    """The node's plan with the mean duration chosen so that it has ~``samples`` samples."""
    mean = samples / max(1, invocations) / (1 + CHILD_SHARE * 0.45 + 1 / concurrency)
    plan = plan_node(seed, index, invocations, mean, concurrency)
    for _ in range(4):
        if plan.samples == 0:
            break
        mean *= samples / plan.samples
        plan = plan_node(seed, index, invocations, mean, concurrency)
    return plan


def _data_bytes(strings: pa.Array) -> memoryview:
    """The characters of a string array, back to back (no copy)."""
    _, offsets, data = strings.buffers()
    offsets = pa.Array.from_buffers(pa.int32(), len(strings) + 1, [None, offsets], offset=strings.offset)
    return memoryview(data)[offsets[0].as_py() : offsets[len(strings)].as_py()]


def sample_table(plan: NodePlan, seed: int) -> pa.Table:
    """Every proc.csv row of the node, in tick order; fills each Proc's last/max values."""
    procs = plan.procs
    counts = [p.n for p in procs]
    total = sum(counts)
    starts = list(accumulate([0] + counts[:-1]))
    idx = pa.array(list(chain.from_iterable(repeat(i, n) for i, n in enumerate(counts))), pa.int32())

    def per(values: list, kind: pa.DataType = pa.float64()) -> pa.Array:
        return pc.take(pa.array(values, kind), idx)

    def rnd(k: int) -> pa.Array:
        return pc.random(total, initializer=seed * 1_000_003 + plan.index * 101 + k)

    pos = pc.subtract(pa.array(range(total), pa.int64()), per(starts, pa.int64()))
    tick = pc.add(per([p.k_first for p in procs], pa.int64()), pos)
    ts = pc.take(pa.array([tick_ts(plan, k) for k in range(plan.ticks)], pa.int64()), tick)
    first = pc.equal(pos, 0)
    frac = pc.if_else(first, per([p.first_frac for p in procs]), 1.0)  # the first sample covers part of a tick
    share = pc.multiply(per([p.share for p in procs]), frac)

    def scaled(value: pa.Array, lo: float, spread: float, k: int, quantum: int = 1) -> pa.Array:
        """value * (lo + spread * U), rounded to ``quantum``, as int64."""
        x = pc.multiply(value, pc.add(lo, pc.multiply(rnd(k), spread)))
        return pc.cast(pc.multiply(pc.round(pc.divide(x, float(quantum))), quantum), pa.int64())

    increments = {
        "cpu_user_ms": scaled(share, 780.0, 276.0, 1, 10),  # clock ticks of 10 ms
        "cpu_system_ms": scaled(share, 25.0, 50.0, 2, 10),
        "read_bytes": scaled(pc.multiply(per([p.read_bps for p in procs]), frac), 0.5, 1.0, 3),
        "write_bytes": scaled(pc.multiply(per([p.write_bps for p in procs]), frac), 0.5, 1.0, 4),
        "ctx_voluntary": scaled(frac, 40.0, 400.0, 5),
        "ctx_involuntary": scaled(share, 2.0, 60.0, 6),
    }
    # Cumulative counters: a running sum within each process, on top of its base.
    columns = {}
    ends = [s + n - 1 for s, n in zip(starts, counts)]
    for c, name in enumerate(COUNTERS):
        running = pc.cumulative_sum(increments[name])
        before = [0] + pc.take(running, pa.array([s - 1 for s in starts[1:]], pa.int64())).to_pylist()
        columns[name] = pc.add(running, per([p.base[c] - b for p, b in zip(procs, before)], pa.int64()))
        for p, value in zip(procs, pc.take(columns[name], pa.array(ends, pa.int64())).to_pylist()):
            p.last[name] = value
    ramp = pc.if_else(first, 0.6, 1.0)  # the first sample catches the process still growing
    rss = scaled(pc.multiply(per([p.rss_kb for p in procs]), ramp), 0.9, 0.2, 7)
    peaks = pa.table({"p": idx, "rss": rss}).group_by("p").aggregate([("rss", "max")])
    for i, peak in zip(peaks.column("p").to_pylist(), peaks.column("rss_max").to_pylist()):
        procs[i].max_rss_kb = peak
    table = pa.table(
        {
            "tick": tick, "order": idx, "ts_ms": ts, "pid": per([p.pid for p in procs], pa.int64()),
            "create_time_ms": per([p.ctime for p in procs], pa.int64()),
            "cpu_user_ms": columns["cpu_user_ms"], "cpu_system_ms": columns["cpu_system_ms"], "rss_kb": rss,
            "num_threads": per([p.threads for p in procs], pa.int64()),
            **{name: columns[name] for name in COUNTERS[2:]},
            # Today's collector: the exact CPU (here the ticks' total, in ns), the run-queue wait, no unseen children.
            "cpu_ns": pc.multiply(pc.add(columns["cpu_user_ms"], columns["cpu_system_ms"]), 1_000_000),
            "run_delay_ns": pc.multiply(columns["ctx_involuntary"], 50_000),
            "children_unseen_cpu_ns": pc.multiply(columns["ctx_involuntary"], 0),
        }
    )  # fmt: skip
    # The collector writes every tick's live processes in the order it started following them.
    return table.sort_by([("tick", "ascending"), ("order", "ascending")]).select(list(PROC_COLUMNS))


def finish_events(plan: NodePlan, rng: random.Random) -> list[dict]:
    """Close each invocation with its rusage: the last samples plus the CPU after the last tick."""
    events = []
    for task in plan.tasks:
        event = dict(task.event)
        main = task.procs[0]
        last_tick = tick_ts(plan, main.k_first + main.n - 1) if main.n else event["ts_start"]
        tail_s = max(0, event["ts_end"] - last_tick) / TICK_MS
        user = sum(p.last.get("cpu_user_ms", 0) for p in task.procs)
        user += task.share * 920 * tail_s * (0.8 + 0.4 * rng.random())
        system = sum(p.last.get("cpu_system_ms", 0) for p in task.procs)
        system += task.share * 50 * tail_s * rng.random()
        peak = max((p.max_rss_kb for p in task.procs), default=0) or main.rss_kb
        event.update(
            cpu_user_ms=round(user + rng.random() * 9, 3), cpu_system_ms=round(system + rng.random() * 9, 3),
            max_rss_kb=peak + int(rng.random() * 2000),
            bytes_out=0 if event["status"] else 300_000 + int(rng.random() * 30_000_000),
        )  # fmt: skip
        events.append(event)
    events.sort(key=lambda e: (e["ts_end"], e["task_id"]))  # appended when each one ends
    return events


def host_files(plan: NodePlan, rng: random.Random) -> dict[str, list[str]]:
    """host.csv (one row per tick), host_cpus.csv (per tick and CPU), host_net.csv (per tick and
    interface): cumulative counters, the collector's columns (tracekit.collect.host), header first."""
    from tracekit.collect.host import HOST_CPUS_CSV_COLUMNS, HOST_CSV_COLUMNS, HOST_NET_CSV_COLUMNS

    # A pool of per-core increments over one tick (they sum to 1000 ms), cycled through.
    pool = []
    for _ in range(257):
        user, system = int(rng.random() * 80) * 10, int(rng.random() * 8) * 10
        iowait, softirq, steal = int(rng.random() * 3) * 10, int(rng.random() * 2) * 10, int(rng.random() * 2) * 10
        pool.append((user, 0, system, 1000 - user - system - iowait - softirq - steal, iowait, 0, softirq, steal))
    per_core = [[1_000_000 * (c + 1), 1000, 300_000, 80_000_000, 20_000, 0, 9_000, 3_000] for c in range(plan.cores)]
    eth = [900_000_000, 400_000_000, 700_000, 500_000]
    lo = [7_000_000, 70_000]
    disk = [3_000_000_000, 1_700_000_000, 67_000, 18_000, 11_000]
    mem_total = node_facts(plan)["mem_kb"]
    host, cpus, net = [",".join(HOST_CSV_COLUMNS)], [",".join(HOST_CPUS_CSV_COLUMNS)], [",".join(HOST_NET_CSV_COLUMNS)]
    for k in range(plan.ticks):
        ts = tick_ts(plan, k)
        for c, core in enumerate(per_core):
            step = pool[(k * 31 + c * 17) % 257]
            for m in range(8):
                core[m] += step[m]
            cpus.append(f"{ts},{c},{','.join(map(str, core))}")
        total = ",".join(str(sum(core[m] for core in per_core)) for m in range(8))
        r = rng.random()
        eth[0] += int(r * 9_000_000)
        eth[1] += int(r * 3_000_000)
        eth[2] += int(r * 7000)
        eth[3] += int(r * 4000)
        lo[0] += 700
        lo[1] += 7
        disk[0] += int(r * 4_000_000)
        disk[1] += int(r * 6_000_000)
        disk[2] += int(r * 90)
        disk[3] += int(r * 120)
        disk[4] += int(r * 80)
        used = mem_total // 4 + int(r * mem_total // 4)
        load = round(plan.cores * (0.3 + 0.6 * r), 2)
        host.append(
            f"{ts},{total},{mem_total},{mem_total - used},{used},{mem_total - used - 400_000},0,"
            f"{load!r},{round(load * 0.95, 2)!r},{round(load * 0.9, 2)!r},{','.join(map(str, disk))}"
        )
        net.append(f"{ts},eth0,{eth[0]},{eth[1]},{eth[2]},{eth[3]},0,0,0,0")
        net.append(f"{ts},lo,{lo[0]},{lo[0]},{lo[1]},{lo[1]},0,0,0,0")
    return {"host.csv": host, "host_cpus.csv": cpus, "host_net.csv": net}


def process_record(plan: NodePlan, p: Proc) -> dict:
    scope = "session-3.scope" if p.reason != "name" else "ffmpeg-live.service"
    return {
        "ts_ms": tick_ts(plan, p.k_first), "pid": p.pid, "create_time_ms": p.ctime, "ppid": p.ppid,
        "comm": p.comm, "cmdline": p.cmdline, "reason": p.reason, "task_id": p.task_id,
        "cgroup": f"/user.slice/user-1000.slice/{scope}" if p.reason != "name" else f"/system.slice/{scope}",
        "container_id": None, "container_runtime": None, "systemd_unit": scope,
    }  # fmt: skip


def write_node(folder: Path, plan: NodePlan, seed: int, jsonl_copy: bool) -> dict:
    """All raw files of one node; returns counts."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"tkbench/{seed}/{plan.index}/write")
    (folder / "node.json").write_text(json.dumps(node_facts(plan), indent=2) + "\n")
    offset = 0.0 if plan.index == 0 else round(rng.uniform(-40.0, 40.0), 3)
    clock = {"offset_ms": offset, "uncertainty_ms": 0.4, "reference": "controller", "rtt_ms": 0.3}
    (folder / "clock.json").write_text(json.dumps(clock) + "\n")
    samples = sample_table(plan, seed)
    with open(folder / "proc.csv", "wb") as out:
        out.write((",".join(PROC_COLUMNS) + "\n").encode())
        pa_csv.write_csv(samples, out, pa_csv.WriteOptions(include_header=False))
    if jsonl_copy:  # the baseline's input: the same samples as JSON Lines
        with open(folder / "proc.jsonl", "wb") as out:
            for batch in samples.to_batches(max_chunksize=500_000):
                pieces: list = []
                for i, name in enumerate(PROC_COLUMNS):
                    pieces += [("{" if i == 0 else ",") + f'"{name}":', pc.cast(batch.column(i), pa.string())]
                out.write(_data_bytes(pc.binary_join_element_wise(*pieces, "}\n", "")))
    with open(folder / "processes.jsonl", "w") as out:
        out.writelines(json.dumps(process_record(plan, p), separators=(",", ":")) + "\n" for p in plan.procs)
    events = finish_events(plan, rng)
    with open(folder / "events.ffmpeg.jsonl", "w") as out:
        out.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    for name, lines in host_files(plan, rng).items():
        (folder / name).write_text("\n".join(lines) + "\n")
    return {"samples": samples.num_rows, "invocations": len(events), "host": plan.ticks, "processes": len(plan.procs)}


def generate_run(run: Path, nodes: int, samples: int, invocations: int, concurrency: int, seed: int,
                 jsonl_copy: bool, reuse: Path | None = None, scale: int = 1) -> dict:  # fmt: skip
    """A run folder ``run/nodes/<node>/`` of ``scale`` x ``nodes`` nodes, each with its share of
    ``samples`` and ``invocations`` (so node i + k*nodes gets what node i gets); nodes already in
    ``reuse`` are hard-linked from it."""
    from tracekit.collect.process import PROC_CSV_COLUMNS

    assert PROC_COLUMNS == PROC_CSV_COLUMNS, "proc.csv columns changed: update bench/pipeline.py"
    totals = {"samples": 0, "invocations": 0, "host": 0, "processes": 0}
    for index in range(nodes * scale):
        share = index % nodes
        plan = calibrated_plan(seed, index, invocations // nodes + (share < invocations % nodes),
                               samples // nodes + (share < samples % nodes), concurrency)  # fmt: skip
        folder = run / "nodes" / plan.node
        source = reuse / "nodes" / plan.node if reuse else None
        if source is not None and (source / "counts.json").exists():
            folder.mkdir(parents=True)
            for path in source.iterdir():
                if path.name != "proc.jsonl":
                    os.link(path, folder / path.name)
            counts = json.loads((source / "counts.json").read_text())
        else:
            counts = write_node(folder, plan, seed, jsonl_copy)
            # Not a raw file; parse reads only the names it knows. Lets a bigger run reuse this node.
            (folder / "counts.json").write_text(json.dumps(counts))
        for key in totals:
            totals[key] += counts[key]
    return totals


# -- the floor: reading and writing, nothing computed ---------------------------

# proc.csv rows are proc_metrics rows, host.csv rows host_metrics rows; the per-CPU and
# per-interface rows are folded into fewer.
FLOOR_WRITTEN = ("proc.csv", "host.csv")


def _read_and_write(paths: list[Path], out: Path) -> None:
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())  # as parse's workers
    for path in paths:
        table = pa_csv.read_csv(path)
        if path.name in FLOOR_WRITTEN:
            pq.write_table(table, out / f"{path.parent.name}-{path.stem}.parquet", compression="zstd")


def io_floor(run: Path, out: Path) -> None:
    """What no parse of these files goes below: each node's raw CSV files read by Arrow, those
    whose rows become cctf rows one for one written back as zstd Parquet, nothing computed; in
    parse's worker processes and job order."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tracekit.trace.parse import WORKERS

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    folders = sorted((run / "nodes").iterdir())
    jobs = [[folder / "proc.csv"] for folder in folders]
    jobs += [[folder / name for name in ("host.csv", "host_cpus.csv", "host_net.csv")] for folder in folders]
    with ProcessPoolExecutor(WORKERS, mp_context=get_context("fork")) as pool:
        list(pool.map(_read_and_write, jobs, [out] * len(jobs)))


# -- the baseline: "the approach of the original tool" -----------------------------


def baseline_parse(run: Path, out: Path) -> None:
    """Raw JSONL -> proc_metrics.jsonl + invocations.jsonl + nodes.json, one record at a time."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    invocations, nodes = [], []
    with open(out / "proc_metrics.jsonl", "w") as metrics_out:
        for folder in sorted(p for p in (run / "nodes").iterdir() if p.is_dir()):
            facts = json.loads((folder / "node.json").read_text())
            node = facts["node"]
            clock_path = folder / "clock.json"
            offset = round(json.loads(clock_path.read_text())["offset_ms"]) if clock_path.exists() else 0
            correction = facts.get("start_time_correction_ms") or 0
            events = []
            for path in sorted(folder.glob("events.*.jsonl")):
                with open(path) as f:
                    for line in f:
                        event = json.loads(line)
                        event["node"] = node
                        for name in ("ts_start", "ts_end", "create_time_ms"):
                            if event.get(name) is not None:
                                event[name] += offset
                        if not event.get("ts_enqueue_given"):
                            event["ts_enqueue"] += offset
                        event["duration_ms"] = event["ts_end"] - event["ts_start"]
                        event["ok"] = event["status"] == 0
                        events.append(event)
            processes = {}
            with open(folder / "processes.jsonl") as f:
                for line in f:
                    record = json.loads(line)
                    processes[(record["pid"], record["create_time_ms"])] = record
            # Which task each process worked for: its own invocation, its registration, or its parent's.
            own = {(e["pid"], e["create_time_ms"] - offset): e["task_id"] for e in events if e["pid"] is not None}
            task_of, latest_with_pid = {}, {}
            for record in sorted(processes.values(), key=lambda r: (r["create_time_ms"], r["pid"])):
                key = (record["pid"], record["create_time_ms"])
                task = own.get(key) or record.get("task_id")
                if task is None and record["ppid"] in latest_with_pid:
                    task = task_of[latest_with_pid[record["ppid"]]]
                task_of[key] = task
                latest_with_pid[record["pid"]] = key
            previous = {}
            with open(folder / "proc.jsonl") as f:
                for line in f:
                    sample = json.loads(line)
                    key = (sample["pid"], sample["create_time_ms"])
                    before = previous.get(key)
                    info = processes.get(key, {})
                    record = {
                        "node": node, "pid": key[0], "create_time_ms": key[1] + offset, "comm": info.get("comm"),
                        "cgroup": info.get("cgroup"), "container_id": info.get("container_id"),
                        "task_id": task_of.get(key, own.get(key)), "ts_ms": sample["ts_ms"] + offset,
                    }  # fmt: skip
                    if before is None:  # since the process started
                        record["dt_ms"] = max(0, sample["ts_ms"] - (key[1] + correction))
                    else:
                        record["dt_ms"] = max(0, sample["ts_ms"] - before["ts_ms"])
                    for name in ("cpu_user_ms", "cpu_system_ms", "rss_kb", "num_threads", *COUNTERS[2:]):
                        value = sample[name]
                        if name in COUNTERS and value is not None:
                            start = 0 if before is None else before[name]
                            value = None if start is None else max(0, value - start)
                        record[name] = value
                    metrics_out.write(json.dumps(record, separators=(",", ":")) + "\n")
                    previous[key] = sample
            invocations += events
            nodes.append({"node": node, "cpu_mhz": facts.get("cpu_mhz"), "cores_logical": facts.get("cores_logical"),
                          "mem_kb": facts.get("mem_kb")})  # fmt: skip
    invocations.sort(key=lambda r: (r["ts_start"], r["node"], r["task_id"], r["attempt"]))
    with open(out / "invocations.jsonl", "w") as f:
        for record in invocations:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    (out / "nodes.json").write_text(json.dumps(nodes, indent=2) + "\n")


def baseline_export(cctf: Path, out: Path) -> None:
    """proc_metrics.jsonl + invocations.jsonl -> tasks.parquet, fragments.parquet, one task at a time."""
    from tracekit.trace.records import OPENDC_FRAGMENTS, OPENDC_TASKS  # the format only

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    nodes = {n["node"]: n for n in json.loads((cctf / "nodes.json").read_text())}
    with open(cctf / "invocations.jsonl") as f:
        chosen = [r for r in map(json.loads, f) if r["ok"]]
    chosen.sort(key=lambda r: (r["ts_enqueue"], r["node"], r["pid"] or -1, r["task_id"], r["attempt"]))
    # Per task: CPU and RSS of every tick (a task's processes share the tick).
    ticks: dict[tuple[str, str], dict[int, list[int]]] = {}
    with open(cctf / "proc_metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if record["task_id"] is None:
                continue
            per_tick = ticks.setdefault((record["node"], record["task_id"]), {})
            cpu = record["cpu_user_ms"] + record["cpu_system_ms"]
            tick = per_tick.get(record["ts_ms"])
            if tick is None:
                per_tick[record["ts_ms"]] = [cpu, record["rss_kb"]]
            else:
                tick[0] += cpu
                tick[1] += record["rss_kb"]
    fragments: dict[str, list] = {"id": [], "duration": [], "cpu_usage": []}
    tasks: dict[str, list] = {name: [] for name in OPENDC_TASKS.names}
    with open(out / "task_ids.jsonl", "w") as ids_out:
        for opendc_id, task in enumerate(chosen):
            node = nodes[task["node"]]
            mhz = float(node["cpu_mhz"])
            start, end = task["ts_start"], task["ts_end"]
            series = sorted(
                (ts, value) for ts, value in ticks.get((task["node"], task["task_id"]), {}).items() if start < ts <= end
            )
            slices, last, sampled, peak_rss = [], start, 0, 0
            for ts, (cpu, rss) in series:
                slices.append([ts - last, cpu])
                last, sampled, peak_rss = ts, sampled + cpu, max(peak_rss, rss)
            rusage = None
            if task.get("cpu_user_ms") is not None:
                rusage = task["cpu_user_ms"] + (task.get("cpu_system_ms") or 0)
            total = rusage if rusage is not None else sampled
            scale = 1.0
            if sampled > total > 0:
                scale = total / sampled
            elif sampled > total:
                scale = 0.0
            remainder = max(0.0, total - sampled)
            tail = 1 if end <= start else end - last
            if tail <= 0 and remainder > 0 and slices:
                slices[-1][1] += remainder  # the last tick was exactly at ts_end
            cut = [[duration, cpu * scale] for duration, cpu in slices] + ([[tail, remainder]] if tail > 0 else [])
            cores = int(node.get("cores_usable") or node.get("cores_logical") or 1)
            # No slice above its length's worth of the node's cores: the excess to the others' room, as parse does.
            excess = sum(max(0.0, cpu - cores * duration) for duration, cpu in cut)
            room = sum(max(0.0, cores * duration - cpu) for duration, cpu in cut)
            moved = min(excess, room)
            if moved > 0:
                for piece in cut:
                    over, free = piece[1] - cores * piece[0], cores * piece[0] - piece[1]
                    piece[1] += -moved * over / excess if over > 0 else moved * free / room if free > 0 else 0.0
            peak_cores = 0.0
            for duration, cpu in cut:
                usage = cpu / duration * mhz
                fragments["id"].append(opendc_id)
                fragments["duration"].append(duration)
                fragments["cpu_usage"].append(usage)
                peak_cores = max(peak_cores, usage / mhz)
            cpu_count = min(max(1, math.ceil(round(peak_cores, 6))), cores)
            tasks["id"].append(opendc_id)
            tasks["submission_time"].append(task["ts_enqueue"])
            tasks["duration"].append(max(1, end - start))
            tasks["cpu_count"].append(cpu_count)
            tasks["cpu_capacity"].append(cpu_count * mhz)
            tasks["mem_capacity"].append(max(int(task.get("max_rss_kb") or 0), int(peak_rss or 0)))  # as slices.peak_memory_kb
            tasks["name"].append(f"{task['node']}/{task['task_id']}#{task['attempt']}")
            tasks["parents"].append([])  # the generated workload has no HTTP chains
            tasks["children"].append([])
            mapping = {"id": opendc_id, "task_id": task["task_id"], "trace_id": task["trace_id"], "node": task["node"],
                       "pid": task["pid"], "attempt": task["attempt"], "ok": task["ok"]}  # fmt: skip
            ids_out.write(json.dumps(mapping, separators=(",", ":")) + "\n")
    pq.write_table(pa.table(tasks, schema=OPENDC_TASKS), out / "tasks.parquet")
    pq.write_table(pa.table(fragments, schema=OPENDC_FRAGMENTS), out / "fragments.parquet")


# -- measuring (in a fresh child process) --------------------------------------------


def _status_kb(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def measure(job: str, run: Path, out: Path, profile: Path | None) -> None:
    """Run one job and print {"seconds", "peak_rss_kb", "rss_before_kb"} as JSON (the child side)."""
    if job in ("tracekit-parse", "tracekit-parse-jsonl"):
        from tracekit.trace.parse import parse_run

        def work() -> None:
            parse_run(run, jsonl=job == "tracekit-parse-jsonl")
    elif job == "tracekit-merge":
        # The controller's parse when every node made its part (tracekit-run's fetch does): the
        # parts are made here first, untimed, as the nodes would have.
        from tracekit.trace.nodeparse import write_part
        from tracekit.trace.parse import parse_run

        for folder in sorted((run / "nodes").iterdir()):
            write_part(folder)

        def work() -> None:
            parse_run(run)
    elif job == "io-floor":

        def work() -> None:
            io_floor(run, out)
    elif job == "tracekit-export":
        from tracekit.trace.export.opendc import export_opendc

        def work() -> None:
            export_opendc(run, out, force=True)
    elif job.startswith("export:"):
        from tracekit.trace import export as formats

        module = formats.get(job.split(":", 1)[1])

        def work() -> None:
            module.export(run, out, force=True)
    elif job == "baseline-parse":

        def work() -> None:
            baseline_parse(run, out)
    else:
        from tracekit.trace.records import OPENDC_TASKS  # imported before the clock starts, like tracekit's

        assert OPENDC_TASKS

        def work() -> None:
            baseline_export(run, out)

    before = _status_kb("VmRSS")
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.runcall(work)
        seconds = time.perf_counter() - started
        profiler.dump_stats(str(profile))
    else:
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
    # parse_run's worker processes: the largest one's peak (ru_maxrss of the waited-for children; a
    # forked child's count includes the pages it shares with this process) times the number of
    # workers, added to this process's peak. An upper bound on what was resident at once.
    import resource

    worker_peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    workers = 0
    if worker_peak_kb and job.startswith("tracekit-parse"):
        from tracekit.trace.parse import WORKERS as workers
    own_peak_kb = _status_kb("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_rss_kb": own_peak_kb + workers * worker_peak_kb,
                      "own_peak_kb": own_peak_kb, "workers": workers, "worker_peak_kb": worker_peak_kb,
                      "rss_before_kb": before}))  # fmt: skip


def run_job(job: str, run: Path, out: Path, profile: Path | None = None) -> dict:
    """``job`` in a fresh interpreter; its JSON result, or {"error": ...}."""
    command = [sys.executable, os.path.abspath(__file__), "--measure", job, "--run", str(run), "--out", str(out)]
    if profile is not None:
        command += ["--profile-out", str(profile)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": f"{job} exited {done.returncode}: {done.stderr.strip()[-2000:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the report --------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} logical cores, Python {platform.python_version()}, pyarrow {pa.__version__}, "
            f"{platform.system()} {platform.release()}")  # fmt: skip


def count_lines(path: Path) -> int:
    lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
    return lines


def compare_outputs(tracekit_out: Path, baseline_out: Path, tracekit_cctf: Path, baseline_cctf: Path) -> list[str]:
    """Do both implementations give the same workload? (A sanity check of the baseline.)"""
    notes = []
    for name in ("tasks.parquet", "fragments.parquet"):
        a, b = pq.read_table(tracekit_out / name), pq.read_table(baseline_out / name)
        if a.num_rows != b.num_rows:
            notes.append(f"{name}: {a.num_rows} rows (tracekit) vs {b.num_rows} (baseline)")
            continue
        differing = [n for n in a.column_names if not a.column(n).equals(b.column(n))]
        if "cpu_usage" in differing:
            gap = pc.max(pc.abs(pc.subtract(a.column("cpu_usage"), b.column("cpu_usage")))).as_py()
            if gap < 1e-6:
                differing.remove("cpu_usage")
        notes.append(f"{name}: {a.num_rows} rows, " + (f"columns differ: {differing}" if differing else "identical"))
    lines_a = count_lines(tracekit_cctf / "proc_metrics.jsonl")  # the --jsonl run's
    rows_a = pq.read_table(tracekit_cctf / "proc_metrics").num_rows
    lines_b = count_lines(baseline_cctf / "proc_metrics.jsonl")
    notes.append(f"proc_metrics: {rows_a} Parquet rows and {lines_a} JSON lines (tracekit) vs {lines_b} lines (baseline)")
    return notes


def fmt_int(n: int) -> str:
    return f"{n:,}"


def print_profile(path: Path, title: str, top: int) -> None:
    import io
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("cumulative").print_stats(top)
    text = buffer.getvalue()
    body = text[text.find("   ncalls") :] if "   ncalls" in text else text
    total = next((line for line in text.splitlines() if "function calls" in line), "").strip()
    print(f"\n### cProfile: {title} (top {top} by cumulative time; {total})\n\n```\n{body.rstrip()}\n```")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Trace pipeline throughput and peak RSS: Tracekit's parse_run + export_opendc vs. a "
        "per-record JSON baseline, on a synthetic raw run.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {fmt_int(QUICK['samples'])} samples, "
                        f"{QUICK['invocations']} invocations")  # fmt: skip
    parser.add_argument("--nodes", type=int, default=3, help="nodes of the main run (default 3); the scaling "
                        "check uses twice as many with the same samples per node")  # fmt: skip
    parser.add_argument("--samples", type=int,
                        help=f"process samples in total (default {fmt_int(DEFAULTS['samples'])})")  # fmt: skip
    parser.add_argument("--invocations", type=int,
                        help=f"invocations in total (default {fmt_int(DEFAULTS['invocations'])})")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=8, help="invocations running at once per node (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    add_load_arguments(parser)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="generate into DIR and keep everything")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile tracekit's parse and export on the main run "
                        "(top 15 cumulative)")  # fmt: skip
    parser.add_argument("--no-scaling", action="store_true", help="skip the 2x-nodes run")
    # internal: one measured job in this (fresh) process
    parser.add_argument("--measure", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        measure(args.measure, args.run, args.out, args.profile_out)
        return 0

    size = QUICK if args.quick else DEFAULTS
    samples = args.samples or size["samples"]
    invocations = args.invocations or size["invocations"]
    nodes = args.nodes
    if args.keep:
        if args.keep.exists() and any(args.keep.iterdir()):
            parser.error(f"--keep {args.keep}: folder exists and is not empty")
        work = args.keep
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="tkbench-pipeline-"))
    failed = False
    try:
        print(f"# Trace pipeline benchmark{' (--quick: not representative)' if args.quick else ''}\n")
        print(f"- machine: {machine()}")
        watch = LoadWatch.from_args(args)
        print(watch.start_line())
        started = time.perf_counter()
        main_run = work / f"run-{nodes}n"
        data = generate_run(main_run, nodes, samples, invocations, args.concurrency, args.seed, jsonl_copy=True)
        big_run = work / f"run-{2 * nodes}n"
        big = None
        if not args.no_scaling:
            big = generate_run(big_run, nodes, samples, invocations, args.concurrency, args.seed,
                               jsonl_copy=False, reuse=main_run, scale=2)  # fmt: skip
        print(f"- data ({nodes} nodes): {fmt_int(data['samples'])} process samples "
              f"({data['samples'] / max(1, data['invocations']):.0f} per invocation), "
              f"{fmt_int(data['invocations'])} invocations, {fmt_int(data['processes'])} processes, "
              f"{fmt_int(data['host'])} host samples; {args.concurrency} invocations at a time per node; "
              f"seed {args.seed}")  # fmt: skip
        if big:
            print(f"- scaling run ({2 * nodes} nodes): {fmt_int(big['samples'])} samples, "
                  f"{fmt_int(big['invocations'])} invocations "
                  f"(its first {nodes} nodes are the main run's)")  # fmt: skip
        # Gigabytes of fresh data are still being written back to disk: the first job would pay for it.
        os.sync()
        print(f"- generated in {time.perf_counter() - started:.1f} s (not measured) under {work}")
        sys.stdout.flush()

        results: dict[tuple[str, int], dict] = {}
        plan = [("tracekit", nodes, main_run, work / f"tracekit-{nodes}n-opendc"),
                ("tracekit --jsonl", nodes, main_run, work / f"tracekit-{nodes}n-opendc"),
                ("baseline", nodes, main_run, work / f"baseline-{nodes}n")]  # fmt: skip
        if big:
            plan.append(("tracekit", 2 * nodes, big_run, work / f"tracekit-{2 * nodes}n-opendc"))
        for impl, n, run, out in plan:
            if impl.startswith("tracekit"):
                parse = run_job("tracekit-parse-jsonl" if impl.endswith("--jsonl") else "tracekit-parse", run, out)
                export = run_job("tracekit-export", run, out) if "error" not in parse else {"error": "skipped"}
            else:
                parse = run_job("baseline-parse", run, out / "cctf")
                export = (run_job("baseline-export", out / "cctf", out / "opendc")
                          if "error" not in parse else {"error": "skipped"})  # fmt: skip
            results[(impl, n)] = {"parse": parse, "export": export,
                                  "samples": data["samples"] if n == nodes else big["samples"]}  # fmt: skip
            for stage in (parse, export):
                if "error" in stage and stage["error"] != "skipped":
                    failed = True
                    print(f"\n**{impl} ({n} nodes) crashed**: {stage['error']}", file=sys.stderr)

        def ok(r: dict) -> bool:
            return "error" not in r["parse"] and "error" not in r["export"]

        def total_s(r: dict) -> float:
            return r["parse"]["seconds"] + r["export"]["seconds"]

        def peak_mb(r: dict) -> float:
            return max(r["parse"]["peak_rss_kb"], r["export"]["peak_rss_kb"]) / 1024

        base = results.get(("baseline", nodes))
        print("\n| implementation | nodes | samples | parse s | export s | total s | samples/s | peak RSS MB | "
              "speedup vs baseline |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
        for (impl, n), r in results.items():
            if not ok(r):
                print(f"| {impl} | {n} | {fmt_int(r['samples'])} | crashed | | | | | |")
                continue
            speedup = "1.0x" if impl == "baseline" else "—"
            if impl.startswith("tracekit") and base and ok(base):
                ratio = total_s(base) / total_s(r)
                by_rate = ratio * r["samples"] / base["samples"]
                speedup = f"{ratio:.1f}x" if n == nodes else f"({by_rate:.1f}x by samples/s)"
            print(f"| {impl} | {n} | {fmt_int(r['samples'])} | {r['parse']['seconds']:.2f} | "
                  f"{r['export']['seconds']:.2f} | {total_s(r):.2f} | {fmt_int(round(r['samples'] / total_s(r)))} | "
                  f"{peak_mb(r):.0f} | {speedup} |")  # fmt: skip
        print("\nPeak RSS per stage (MB; RSS before the work started, i.e. interpreter + imports, in brackets):\n")
        for (impl, n), r in results.items():
            if ok(r):
                p, e = r["parse"], r["export"]
                workers = ""
                if p.get("workers"):
                    workers = (f" = {p['own_peak_kb'] / 1024:.0f} + {p['workers']} workers x "
                               f"{p['worker_peak_kb'] / 1024:.0f}")  # fmt: skip
                print(f"- {impl}, {n} nodes: parse {p['peak_rss_kb'] / 1024:.0f}{workers} "
                      f"({p['rss_before_kb'] / 1024:.0f}), "
                      f"export {e['peak_rss_kb'] / 1024:.0f} ({e['rss_before_kb'] / 1024:.0f})")  # fmt: skip
        tk = results.get(("tracekit", nodes))
        if tk and base and ok(tk) and ok(base):
            print("\nSame workload from both (sanity check of the baseline):\n")
            for note in compare_outputs(work / f"tracekit-{nodes}n-opendc", work / f"baseline-{nodes}n" / "opendc",
                                        main_run / "cctf", work / f"baseline-{nodes}n" / "cctf"):  # fmt: skip
                print(f"- {note}")

        merges, flat = {}, None
        for n, run in ((nodes, main_run), (2 * nodes, big_run if big else None)):
            if run is not None:
                merges[n] = run_job("tracekit-merge", run, work / "unused")
        if merges:
            print("\nThe controller's parse when each node made its part first (`parse --node-part`, as "
                  "tracekit-run's fetch does; the parts' making not timed):\n")
            for n, merge in merges.items():
                if "error" in merge:
                    failed = True
                    print(f"- {n} nodes: crashed: {merge['error']}")
                else:
                    print(f"- {n} nodes: {merge['seconds']:.2f} s, peak RSS {merge['peak_rss_kb'] / 1024:.0f} MB")
            if nodes in merges and 2 * nodes in merges and not any("error" in m for m in merges.values()):
                growth = merges[2 * nodes]["seconds"] / merges[nodes]["seconds"]
                flat = growth  # judged with the targets, after the last load reading
            for run in (main_run, big_run if big else None):  # the other jobs parse the raw files
                for part in (run.glob("nodes/*/cctf-part") if run else ()):
                    shutil.rmtree(part)
        floor = run_job("io-floor", main_run, work / "io-floor")
        print("\nThe floor under parse: each node's raw CSV files read, proc.csv and host.csv written back as zstd "
              "Parquet, nothing computed, in parse's worker processes: " + (f"{floor['seconds']:.2f} s, i.e. "
              f"{fmt_int(round(data['samples'] / floor['seconds']))} samples/s before any computation or export"
              if "error" not in floor else f"crashed: {floor['error']}"))  # fmt: skip
        failed = failed or "error" in floor
        exports = {name: run_job(f"export:{name}", main_run, work / f"export-{name}") for name in FORMATS}
        print("\nEach export format on the same parsed run (tracekit export FORMAT; its own process):\n\n"
              "| format | export s | peak RSS MB | vs opendc |\n|---|---:|---:|---:|")  # fmt: skip
        for name, result in exports.items():
            if "error" in result:
                failed = True
                print(f"| {name} | crashed: {result['error']} | | |")
                continue
            versus = (f"{result['seconds'] / exports['opendc']['seconds']:.2f}x"
                      if "error" not in exports.get("opendc", {"error": 1}) else "")  # fmt: skip
            print(f"| {name} | {result['seconds']:.2f} | {result['peak_rss_kb'] / 1024:.0f} | {versus} |")
        print(f"\n{watch.end_line()}")  # the last reading before any target is judged
        print("\nTargets:\n")
        if flat is not None:
            print(f"- {watch.verdict(flat <= 1.5)} flat in the nodes: the controller's parse with the nodes' parts took "
                  f"{flat:.2f}x the time with twice the nodes (parsing everything on the controller: about 2x)")  # fmt: skip
        if "error" not in exports.get("opendc", {"error": 1}):
            for name, result in exports.items():
                if name != "opendc" and "error" not in result:
                    ratio = result["seconds"] / exports["opendc"]["seconds"]
                    print(f"- {watch.verdict(ratio <= TARGET_FORMAT_VS_OPENDC)} export {name}: {ratio:.2f}x the OpenDC "
                          f"export's time (target <= {TARGET_FORMAT_VS_OPENDC:.0f}x)")  # fmt: skip
        tk_jsonl = results.get(("tracekit --jsonl", nodes))
        if tk and ok(tk):
            if "error" not in floor:
                ratio = total_s(tk) / floor["seconds"]
                print(f"- {watch.verdict(ratio <= TARGET_VS_FLOOR)} parse + export: {total_s(tk):.2f} s, {ratio:.2f}x the "
                      f"io floor's {floor['seconds']:.2f} s (target <= {TARGET_VS_FLOOR:g}x; "
                      f"{fmt_int(round(tk['samples'] / total_s(tk)))} samples/s end to end)")  # fmt: skip
            if base and ok(base):
                ratio = total_s(base) / total_s(tk)
                print(f"- {watch.verdict(ratio >= TARGET_SPEEDUP)} speedup: {ratio:.1f}x the baseline "
                      f"(target >= {TARGET_SPEEDUP:.0f}x)")  # fmt: skip
            if tk_jsonl and ok(tk_jsonl):
                rate = tk_jsonl["samples"] / total_s(tk_jsonl)
                print(f"- {watch.verdict(rate >= TARGET_JSONL_SAMPLES_PER_S)} throughput with --jsonl: {fmt_int(round(rate))} "
                      f"samples/s end to end (target >= {fmt_int(TARGET_JSONL_SAMPLES_PER_S)})")  # fmt: skip
            tk2 = results.get(("tracekit", 2 * nodes))
            if tk2 and ok(tk2):
                growth = peak_mb(tk2) / peak_mb(tk)
                print(f"- {watch.verdict(growth <= RSS_GROWTH_TOLERANCE)} memory: peak RSS {peak_mb(tk):.0f} MB with {nodes} "
                      f"nodes, {peak_mb(tk2):.0f} MB with {2 * nodes} ({growth:.2f}x; target: no growth, "
                      f"<= {RSS_GROWTH_TOLERANCE:.2f}x)")  # fmt: skip
        sys.stdout.flush()

        if args.profile and tk and ok(tk):
            profiles = [("tracekit-parse", main_run, "parse_run"),
                        ("tracekit-export", main_run, "export_opendc")]  # fmt: skip
            for job, run, title in profiles:
                path = work / f"{job}.prof"
                result = run_job(job, run, work / f"tracekit-{nodes}n-opendc", profile=path)
                if "error" in result:
                    failed = True
                    print(result["error"], file=sys.stderr)
                    continue
                print_profile(path, f"{title}, {nodes} nodes, {fmt_int(data['samples'])} samples, "
                              f"{result['seconds']:.2f} s under the profiler", 15)  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
