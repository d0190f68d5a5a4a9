"""``tracekit export google``: cctf/ -> tables of Google's cluster-data v3 (ClusterData2019) shape.

input:  RUN_DIR/cctf/ invocations.jsonl, nodes.json and task_slices/ (tracekit.trace.slices)
output: OUT_DIR/ instance_events.parquet, instance_usage.parquet, machine_events.parquet, export.json

As Google's trace defines them: times in microseconds, 0 being 600 s before the trace's start (here: the
run's first submission); CPU in normalized compute units and memory in normalized memory units, 1.0 being
the largest machine of the trace (its cores; its memory): cores = NCU x the largest node's cores, which
machine_events and export.json state. An instance is a task; a collection is a job: the requests of one
HTTP chain (or one request alone), else the run's batch tasks together (as in the WTA export).

instance_events: SUBMIT (0) at the task's submission, SCHEDULE (3) at its start on its machine, FINISH (6)
or FAIL (5) at its end. instance_usage: one row per task and usage window (default 300 s as Google's,
aligned on the trace's start; a task's first and last rows cover its part of the window): average and
maximum CPU and memory, the CPU usage distribution (percentiles 0, 10, ..., 100 of its sampling intervals'
CPU in the window) and its tail (91 ... 99). A sampling interval across a window's edge is shared by its
overlap, so a task's windows hold its measured CPU time (tracekit.trace.slices). machine_events: ADD (1)
of every node at the trace's start with its capacity.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.errors import TracekitError, UsageError
from tracekit.trace import cctf, slices
from tracekit.trace.export import (SUMMARY, Checked, ExportResult, column, exported_by, prepare_out_dir, read_tables,
                                   read_exported)

NAME = "google"
TITLE = "Google"  # in tracekit-run's summary
EVENTS_FILE, USAGE_FILE, MACHINES_FILE = "instance_events.parquet", "instance_usage.parquet", "machine_events.parquet"
MAIN_FILES = (EVENTS_FILE, USAGE_FILE, MACHINES_FILE)
HELP = "cctf/ -> Google cluster-data v3 shape (instance_events, instance_usage windows, machine_events)"
DESCRIPTION = ("Write a parsed run as Google's cluster-data v3 tables: instance events (submit, schedule, finish, "
               "fail per task), instance usage per window (average, maximum, CPU usage distribution), machine "
               "events; Google's units (microseconds from 600 s before the trace's start; CPU and memory "
               "normalized to the largest machine).")  # fmt: skip
DEFAULT_WINDOW_S = 300
OFFSET_US = 600_000_000  # Google's time 0: 600 s before the trace's start
SUBMIT, SCHEDULE, FAIL, FINISH, ADD = 0, 3, 5, 6, 1
PERCENTILES = [i / 10 for i in range(11)]
TAIL_PERCENTILES = [i / 100 for i in range(91, 100)]


RESOURCES = pa.struct([("cpus", pa.float64()), ("memory", pa.float64())])
INSTANCE_EVENTS = pa.schema([
    column("time", pa.int64(), "us", "from 600 s before the trace's start"),
    column("type", pa.int32(), "", "0 SUBMIT, 3 SCHEDULE, 5 FAIL, 6 FINISH"),
    column("collection_id", pa.int64(), "", "the job: an HTTP chain's requests, or the run's batch tasks"),
    column("instance_index", pa.int32(), "", "the task within its collection"),
    column("machine_id", pa.int64(), "", "the node it ran on (null before it was scheduled)", nullable=True),
    column("collection_type", pa.int32(), "", "0: a job"),
    column("priority", pa.int32(), "", "unknown: -1"),
    column("scheduling_class", pa.int32(), "", "unknown: -1"),
    column("resource_request", RESOURCES, "NCU, NMU", "the cores it needed (asked for, else its peak) and its peak memory, normalized"),
])  # fmt: skip
INSTANCE_USAGE = pa.schema([
    column("start_time", pa.int64(), "us", "the window's start, or the task's if later"),
    column("end_time", pa.int64(), "us", "the window's end, or the task's if earlier"),
    column("collection_id", pa.int64(), "", "as instance_events"),
    column("instance_index", pa.int32(), "", "as instance_events"),
    column("machine_id", pa.int64(), "", "the node it ran on"),
    column("collection_type", pa.int32(), "", "0: a job"),
    column("average_usage", RESOURCES, "NCU, NMU", "CPU: its CPU time in the row / the row's length; memory: the mean RSS sampled"),
    column("maximum_usage", RESOURCES, "NCU, NMU", "the most of one sampling interval in the row"),
    column("cpu_usage_distribution", pa.list_(pa.float64()), "NCU", "percentiles 0, 10, ..., 100 of its intervals' CPU"),
    column("tail_cpu_usage_distribution", pa.list_(pa.float64()), "NCU", "percentiles 91, 92, ..., 99"),
    column("sample_rate", pa.float64(), "samples/s", "sampling intervals in the row per second"),
])  # fmt: skip
MACHINE_EVENTS = pa.schema([
    column("time", pa.int64(), "us", "as instance_events"),
    column("machine_id", pa.int64(), "", "1..M, the nodes by name"),
    column("type", pa.int32(), "", "1 ADD"),
    column("capacity", RESOURCES, "NCU, NMU", "its cores and memory, normalized to the largest machine's"),
    column("platform_id", pa.string(), "", "the node's name"),
])  # fmt: skip
TABLES = {EVENTS_FILE: INSTANCE_EVENTS, USAGE_FILE: INSTANCE_USAGE, MACHINES_FILE: MACHINE_EVENTS}


# -- the format, as tracekit.trace.export finds it ------------------------------------------------------


def add_arguments(parser: Any) -> None:
    parser.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_S, dest="window_s", metavar="S",
                        help=f"instance_usage's window (default {DEFAULT_WINDOW_S} s, as Google's)")  # fmt: skip


def check_options(values: dict[str, Any]) -> None:
    """Its options as an experiment gives them, checked before the run (tracekit.trace.export.option_values)."""
    if "window_s" in values:
        _window_ms(values["window_s"])


def _window_ms(window_s: float) -> int:
    window_ms = round(window_s * 1000) if math.isfinite(window_s) else 0
    if window_ms < 1 or abs(window_ms - window_s * 1000) > 1e-6:  # the trace's times are whole ms
        raise UsageError(f"--window-s {window_s:g}: give a window of whole milliseconds, at least 0.001 s, e.g. 300")
    return window_ms


def export(run_dir: Path, out_dir: Path, *, include_failed: bool = False, force: bool = False,
           window_s: float = DEFAULT_WINDOW_S) -> ExportResult:  # fmt: skip
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    window_ms = _window_ms(window_s)
    trace, invocations, chosen, nodes = read_exported(run_dir, include_failed)  # ids 0..N-1 by submission time
    used = sorted({r["node"] for r in chosen})
    unknown = [n for n in used if not (nodes.get(n) or {}).get("mem_kb")]
    if unknown:
        raise TracekitError(f"{trace}/{cctf.NODES} lacks the memory of node {unknown[0]}; parse the run again "
                            f"(tracekit parse {run_dir})")  # fmt: skip
    prepare_out_dir(out_dir, force, run_dir, NAME)
    scale = _Scale(chosen, nodes, used)
    cut = slices.cut(chosen, trace)
    collection, index = _collections(chosen)
    events = _instance_events(chosen, cut.facts, nodes, scale, collection, index)
    usage = _instance_usage(chosen, cut.slices, scale, collection, index, window_ms)
    machines = pa.table({
        "time": [0] * len(used), "machine_id": [scale.machine[n] for n in used], "type": [ADD] * len(used),
        "capacity": [{"cpus": slices.node_cores(nodes[n]) / scale.cores, "memory": nodes[n]["mem_kb"] / scale.mem_kb}
                     for n in used],
        "platform_id": used,
    }, schema=MACHINE_EVENTS)  # fmt: skip
    for name, table in ((EVENTS_FILE, events), (USAGE_FILE, usage), (MACHINES_FILE, machines)):
        pq.write_table(table, out_dir / name)
    summary = {"format": NAME, "run_dir": str(run_dir.resolve()), "tasks": len(chosen), "usage_rows": usage.num_rows,
               "window_s": window_s, "trace_start_ms": scale.t0_ms, "ncu_cores": scale.cores,
               "nmu_kb": scale.mem_kb, "cpu_ms_total": round(sum(f["cpu_ms"] for f in cut.facts), 3),
               "include_failed": include_failed, **slices.left_out(invocations, include_failed)}  # fmt: skip
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    line = (f"{out_dir}: {summary['tasks']} tasks, {usage.num_rows} usage rows of {window_s:g} s windows, "
            f"{summary['cpu_ms_total'] / 1000:.3f} CPU-seconds; {slices.said_left_out(summary)}")  # fmt: skip
    return ExportResult(out_dir, summary, line)


def add_verify_arguments(parser: Any) -> None:
    """No flags of its own."""


def verify(out_dir: Path, against: Path | None = None) -> Checked:
    """Check a Google-shape export: its tables' columns and types, a SUBMIT, a SCHEDULE and a FINISH or FAIL for
    every instance, usage rows inside their instance's run and no more CPU than their machine has; with --against
    RUN_DIR, one instance per exported invocation, and each one's usage rows holding its measured CPU time
    (within 0.1%)."""
    checked = Checked()
    tables = read_tables(out_dir, TABLES, NAME, "the declared ones", checked)
    if not checked.ok:
        return checked
    events = tables[EVENTS_FILE].to_pydict()
    kinds: dict[tuple[int, int], list[int]] = {}
    for key, kind in zip(zip(events["collection_id"], events["instance_index"]), events["type"]):
        kinds.setdefault(key, []).append(kind)
    for key, seen in kinds.items():
        if sorted(seen) not in ([SUBMIT, SCHEDULE, FINISH], [SUBMIT, SCHEDULE, FAIL]):
            checked.violations.append(f"instance {key}: events {seen}, not SUBMIT, SCHEDULE and FINISH or FAIL")
    usage = tables[USAGE_FILE]
    if pc.any(pc.less(usage.column("end_time"), usage.column("start_time"))).as_py():
        checked.violations.append(f"{USAGE_FILE}: a row ends before it starts")
    _check_usage_rows(events, usage.to_pydict(), tables[MACHINES_FILE].to_pydict(), checked)
    if against is not None and checked.ok:
        _check_against(kinds, usage, against, out_dir, checked)
    checked.line = (f"{out_dir}: OK: {len(kinds)} instances, {usage.num_rows} usage rows"
                    + (", CPU time checked against the run" if against is not None else ""))
    return checked


def _check_usage_rows(events: dict[str, list], usage: dict[str, list], machines: dict[str, list],
                      checked: Checked) -> None:  # fmt: skip
    """Each usage row inside its instance's run (its SCHEDULE to its FINISH or FAIL), its peak CPU at most its
    machine's capacity where the instance's whole CPU fits that capacity over its run (one that used more,
    its times cut to the ms, keeps the rest above it: tracekit.trace.slices.over_cores); the first row of each
    naming its problem."""
    runs: dict[tuple[int, int], list[int]] = {}
    for key, kind, time in zip(zip(events["collection_id"], events["instance_index"]), events["type"], events["time"]):
        if kind in (SCHEDULE, FINISH, FAIL):
            runs.setdefault(key, [0, 0])[0 if kind == SCHEDULE else 1] = time
    capacity = {m: c["cpus"] for m, c in zip(machines["machine_id"], machines["capacity"])
                if c and c["cpus"] is not None}  # fmt: skip
    held: dict[tuple[int, int], float] = {}  # NCU x us
    for key, average, start, end in zip(zip(usage["collection_id"], usage["instance_index"]), usage["average_usage"],
                                        usage["start_time"], usage["end_time"]):  # fmt: skip
        held[key] = held.get(key, 0.0) + ((average or {}).get("cpus") or 0.0) * (end - start)
    outside = over = False
    for row, key in enumerate(zip(usage["collection_id"], usage["instance_index"])):
        run = runs.get(key)
        if not outside and (run is None or usage["start_time"][row] < run[0] or usage["end_time"][row] > run[1]):
            outside = True
            checked.violations.append(f"{USAGE_FILE}: row {row} (instance {key}) lies outside its instance's run "
                                      f"{run[0] if run else '?'}..{run[1] if run else '?'} us")  # fmt: skip
        peak, machine = (usage["maximum_usage"][row] or {}).get("cpus"), usage["machine_id"][row]
        fits = (run is not None and machine in capacity
                and held[key] <= capacity[machine] * (run[1] - run[0]) * (1 + 1e-9))  # fmt: skip
        if not over and fits and peak is not None and peak > capacity[machine] * (1 + 1e-9):
            over = True
            checked.violations.append(f"{USAGE_FILE}: row {row} (instance {key}): maximum CPU {peak:.6g} NCU is above "
                                      f"its machine's capacity {capacity[machine]:.6g} NCU")  # fmt: skip


# -- the export --------------------------------------------------------------------------------------------


class _Scale:
    """The trace's start and units: the largest node's cores (1 NCU) and memory (1 NMU); node -> machine id."""

    def __init__(self, tasks: list[dict[str, Any]], nodes: dict[str, dict], used: list[str]):
        self.t0_ms = min(t["ts_enqueue"] for t in tasks)
        self.cores = max(slices.node_cores(nodes[n]) for n in used)
        self.mem_kb = max(int(nodes[n]["mem_kb"]) for n in used)
        self.machine = {node: i + 1 for i, node in enumerate(used)}

    def us(self, ms: Any) -> Any:
        """Controller ms -> Google's microseconds (scalar or Arrow array)."""
        if isinstance(ms, int):
            return (ms - self.t0_ms) * 1000 + OFFSET_US
        return pc.add(pc.multiply(pc.subtract(ms, self.t0_ms), 1000), OFFSET_US)


def _collections(tasks: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Each task's collection (1..C: its job, tracekit.trace.slices.jobs) and its index within it."""
    job_of, members = slices.jobs(tasks)
    index = [0] * len(tasks)
    for job in members:
        for position, i in enumerate(job):
            index[i] = position
    return [job + 1 for job in job_of], index


def _instance_events(tasks: list[dict], facts: list[dict], nodes: dict[str, dict], scale: _Scale,
                     collection: list[int], index: list[int]) -> pa.Table:  # fmt: skip
    rows: dict[str, list] = {name: [] for name in INSTANCE_EVENTS.names}
    for i, (task, fact) in enumerate(zip(tasks, facts)):
        request = {"cpus": slices.cores_needed(task, fact, nodes[task["node"]]) / scale.cores,
                   "memory": slices.peak_memory_kb(task, fact, nodes[task["node"]]) / scale.mem_kb}  # fmt: skip
        end = task["ts_start"] + slices.runtime_ms(task)
        for kind, ms, machine in ((SUBMIT, task["ts_enqueue"], None), (SCHEDULE, task["ts_start"], task["node"]),
                                  (FINISH if task["ok"] else FAIL, end, task["node"])):  # fmt: skip
            rows["time"].append(scale.us(ms))
            rows["type"].append(kind)
            rows["collection_id"].append(collection[i])
            rows["instance_index"].append(index[i])
            rows["machine_id"].append(scale.machine[machine] if machine else None)
            rows["collection_type"].append(0)
            rows["priority"].append(-1)
            rows["scheduling_class"].append(-1)
            rows["resource_request"].append(request)
    return pa.table(rows, schema=INSTANCE_EVENTS).sort_by([("time", "ascending"), ("type", "ascending")])


def windows_of(rows: pa.Table, t0_ms: int, window_ms: int) -> pa.Table:
    """Slices (tracekit.trace.slices.SLICES) cut at the windows' edges: id, window, start_ms, end_ms, cpu_ms,
    rss_kb. A slice across an edge is shared by its overlap (its CPU spread evenly over it); the others, nearly
    all of them, stay whole."""
    start = pc.subtract(rows.column("end_ms"), rows.column("duration"))

    def window(ms: pa.Array) -> pa.Array:
        return pc.cast(pc.floor(pc.divide(pc.cast(pc.subtract(ms, t0_ms), pa.float64()), float(window_ms))), pa.int64())

    first, last = window(start), window(pc.subtract(rows.column("end_ms"), 1))
    whole = pc.equal(first, last)
    kept = pa.table({"id": rows.column("id"), "window": first, "start_ms": start, "end_ms": rows.column("end_ms"),
                     "cpu_ms": rows.column("cpu_ms"), "rss_kb": rows.column("rss_kb")}).filter(whole)  # fmt: skip
    across = rows.filter(pc.invert(whole))
    out: dict[str, list] = {name: [] for name in kept.column_names}
    for i, (end, duration, cpu, rss) in enumerate(zip(*(across.column(n).to_pylist() for n in ("end_ms", "duration",
                                                                                             "cpu_ms", "rss_kb")))):  # fmt: skip
        begin = end - duration
        for number in range((begin - t0_ms) // window_ms, (end - 1 - t0_ms) // window_ms + 1):
            a, b = max(begin, t0_ms + number * window_ms), min(end, t0_ms + (number + 1) * window_ms)
            out["id"].append(across.column("id")[i].as_py())
            out["window"].append(number)
            out["start_ms"].append(a)
            out["end_ms"].append(b)
            out["cpu_ms"].append(cpu * (b - a) / duration)
            out["rss_kb"].append(rss)
    return pa.concat_tables([kept, pa.table(out, schema=kept.schema)])


def _instance_usage(tasks: list[dict], rows: pa.Table, scale: _Scale, collection: list[int], index: list[int],
                    window_ms: int) -> pa.Table:  # fmt: skip
    parts = windows_of(rows, scale.t0_ms, window_ms)
    length = pc.subtract(parts.column("end_ms"), parts.column("start_ms"))
    cores = pc.divide(parts.column("cpu_ms"), pc.cast(pc.max_element_wise(length, 1), pa.float64()))
    parts = parts.append_column("ncu", pc.divide(cores, float(scale.cores)))
    grouped = parts.group_by(["id", "window"], use_threads=False).aggregate([
        ("start_ms", "min"), ("end_ms", "max"), ("cpu_ms", "sum"), ("ncu", "max"), ("rss_kb", "mean"),
        ("rss_kb", "max"), ("ncu", "count"), ("ncu", "tdigest", pc.TDigestOptions(q=PERCENTILES)),
        ("ncu", "tdigest", pc.TDigestOptions(q=TAIL_PERCENTILES)),
    ]).sort_by([("id", "ascending"), ("window", "ascending")])  # fmt: skip
    digests = [i for i, name in enumerate(grouped.column_names) if name.startswith("ncu_tdigest")]
    distribution, tail = grouped.column(digests[0]), grouped.column(digests[1])
    ids = grouped.column("id").to_pylist()
    start, end = grouped.column("start_ms_min").to_pylist(), grouped.column("end_ms_max").to_pylist()
    cpu, peak = grouped.column("cpu_ms_sum").to_pylist(), grouped.column("ncu_max").to_pylist()
    rss_mean, rss_max = grouped.column("rss_kb_mean").to_pylist(), grouped.column("rss_kb_max").to_pylist()
    counted = grouped.column("ncu_count").to_pylist()
    machine = [scale.machine[t["node"]] for t in tasks]
    table: dict[str, list] = {name: [] for name in INSTANCE_USAGE.names}
    for row, task in enumerate(ids):
        span = max(1, end[row] - start[row])
        table["start_time"].append(scale.us(start[row]))
        table["end_time"].append(scale.us(end[row]))
        table["collection_id"].append(collection[task])
        table["instance_index"].append(index[task])
        table["machine_id"].append(machine[task])
        table["collection_type"].append(0)
        table["average_usage"].append({"cpus": cpu[row] / span / scale.cores,
                                       "memory": (rss_mean[row] or 0) / scale.mem_kb})  # fmt: skip
        table["maximum_usage"].append({"cpus": peak[row], "memory": (rss_max[row] or 0) / scale.mem_kb})
        table["sample_rate"].append(counted[row] / (span / 1000))
    table["cpu_usage_distribution"] = distribution.to_pylist()
    table["tail_cpu_usage_distribution"] = tail.to_pylist()
    return pa.table(table, schema=INSTANCE_USAGE)


def _check_against(kinds: dict, usage: pa.Table, run_dir: Path, out_dir: Path, checked: Checked) -> None:
    found = exported_by(run_dir, out_dir, checked)
    if found is None:
        return
    chosen, summary = found
    if len(chosen) != len(kinds):
        checked.violations.append(f"{len(kinds)} instances, the run has {len(chosen)} invocations to export")
        return
    cut = slices.cut(chosen, run_dir / cctf.CCTF)
    collection, index = _collections(chosen)
    cores = float(summary.get("ncu_cores") or 1)
    span_ms = pc.divide(pc.cast(pc.subtract(usage.column("end_time"), usage.column("start_time")), pa.float64()), 1000)
    held = pc.multiply(pc.multiply(pc.struct_field(usage.column("average_usage"), "cpus"), span_ms), cores)
    per_instance: dict[tuple[int, int], float] = {}
    for key, value in zip(zip(usage.column("collection_id").to_pylist(), usage.column("instance_index").to_pylist()),
                          held.to_pylist()):  # fmt: skip
        per_instance[key] = per_instance.get(key, 0.0) + value
    for i, fact in enumerate(cut.facts):
        key, measured = (collection[i], index[i]), fact["cpu_ms"]
        if abs(per_instance.get(key, 0.0) - measured) > 0.001 * max(measured, 1.0):
            checked.violations.append(f"instance {key} ({chosen[i]['task_id']}): its usage rows hold "
                                      f"{per_instance.get(key, 0.0):.1f} CPU-ms, the trace {measured:.1f}")  # fmt: skip
