"""Process samples: cumulative ``proc.csv`` rows -> per-interval ``proc_metrics``.

input:  one node's RAW_PROC table, its processes.jsonl records, a task
        attribution per process, the node's clock offset
output: a PROC_METRICS table, rows ordered by (ts_ms, pid, create_time_ms)

The first sample of a process covers [create_time, first sample]: its
counters are everything the process used since it started, so no work is
lost before the first tick (the original tool wrote a zero placeholder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace.arrowjson import row_numbers, shifted_down
from tracekit.trace.records import CCTF_SORT_KEYS, PROC_METRICS, PROC_METRICS_PER_PROCESS

_COUNTERS = ("cpu_user_ms", "cpu_system_ms", "read_bytes", "write_bytes", "ctx_voluntary", "ctx_involuntary")


@dataclass
class NodeProcMetrics:
    table: pa.Table  # PROC_METRICS, in CCTF_SORT_KEYS["proc_metrics"] order
    negative_deltas: int  # counters that went backwards (clamped to 0)


def first_of_each_process(pid: pa.Array, create_time_ms: pa.Array) -> pa.Array:
    """True on each row that starts a process's run of rows (rows ordered by process)."""
    changed = pc.or_(pc.not_equal(pid, shifted_down(pid)), pc.not_equal(create_time_ms, shifted_down(create_time_ms)))
    return pc.fill_null(changed, True)


def build_proc_metrics(
    node: str,
    samples: pa.Table,
    processes: dict[tuple[int, int], dict[str, Any]],
    task_of: dict[tuple[int, int], str | None],
    clock_offset_ms: int,
    start_correction_ms: int = 0,
) -> NodeProcMetrics:
    """Per-interval metrics of one node's followed processes."""
    if samples.num_rows == 0:
        return NodeProcMetrics(PROC_METRICS.empty_table(), 0)
    # Rows in the output's order; the collector writes them so, and then nothing moves.
    samples = samples.combine_chunks()
    order = pc.sort_indices(samples, sort_keys=[(name, "ascending") for name in CCTF_SORT_KEYS["proc_metrics"]])
    if not pc.all(pc.equal(order, row_numbers(len(order)))).as_py():
        samples = samples.take(order)
    column = {name: samples.column(name).chunk(0) for name in samples.column_names}
    pid, ctime, ts = column["pid"], column["create_time_ms"], column["ts_ms"]

    # Each row's previous sample of the same process, found by walking the rows process by process
    # (moving only row numbers, not the table).
    by_process = pc.sort_indices(samples, sort_keys=[("pid", "ascending"), ("create_time_ms", "ascending"),
                                                     ("ts_ms", "ascending")])  # fmt: skip
    first_by_process = first_of_each_process(pc.take(pid, by_process), pc.take(ctime, by_process))
    place = pc.sort_indices(by_process)  # row -> its place in by_process
    previous = pc.take(pc.if_else(first_by_process, None, shifted_down(by_process)), place)
    first = pc.is_null(previous)
    negative = 0

    def per_interval(values: pa.Array, start: pa.Array | int) -> pa.Array:
        nonlocal negative
        step = pc.if_else(first, pc.subtract(values, start), pc.subtract(values, pc.take(values, previous)))
        below = pc.less(step, 0)
        count = pc.sum(below).as_py() or 0
        if count:
            negative += count
            step = pc.if_else(below, 0, step)
        return step

    # create_time_ms is a stable key but up to a second early (whole-second
    # boot time): the first interval starts at the corrected start time.
    dt_ms = per_interval(ts, pc.add(ctime, start_correction_ms))
    deltas = {name: per_interval(column[name], 0) for name in _COUNTERS}

    # One row per process, by (pid, create time); each sample row's process among them.
    group_by_process = pc.subtract(pc.cumulative_sum(pc.cast(first_by_process, pa.int64())), 1)
    group_index = pc.take(group_by_process, place)
    starts = by_process.filter(first_by_process)
    keys = list(zip(pc.take(pid, starts).to_pylist(), pc.take(ctime, starts).to_pylist()))
    per_process = pa.table(
        {
            "node": pa.array([node] * len(keys), pa.string()),
            "pid": pa.array([k[0] for k in keys], pa.int64()),
            "create_time_ms": pa.array([k[1] + clock_offset_ms for k in keys], pa.int64()),
            "comm": pa.array([processes.get(k, {}).get("comm") for k in keys], pa.string()),
            "cgroup": pa.array([processes.get(k, {}).get("cgroup") for k in keys], pa.string()),
            "container_id": pa.array([processes.get(k, {}).get("container_id") for k in keys], pa.string()),
            "task_id": pa.array([task_of.get(k) for k in keys], pa.string()),
        }
    )
    rows = {name: pc.take(per_process.column(name), group_index) for name in PROC_METRICS_PER_PROCESS}
    rows.update(
        ts_ms=pc.add(ts, clock_offset_ms),
        dt_ms=dt_ms,
        rss_kb=column["rss_kb"],
        num_threads=column["num_threads"],
        **deltas,
    )
    return NodeProcMetrics(pa.table({name: rows[name] for name in PROC_METRICS.names}, schema=PROC_METRICS), negative)


def attribute_tasks(
    processes: list[dict[str, Any]], invocation_keys: dict[tuple[int, int], str]
) -> dict[tuple[int, int], str | None]:
    """The task each followed process worked for, keyed by (pid, create_time_ms).

    A process is an invocation's own process (wrap recorded its pid and create
    time), or was registered with a task id, or descends from such a process.
    The collector may have followed a process by name before its registration
    arrived, so descent is worked out here again from the parent links.
    """
    task_of: dict[tuple[int, int], str | None] = {}
    latest_with_pid: dict[int, tuple[int, int]] = {}
    for record in sorted(processes, key=lambda r: (r["create_time_ms"], r["pid"])):
        key = (record["pid"], record["create_time_ms"])
        task = invocation_keys.get(key) or record.get("task_id")
        if task is None:
            parent = latest_with_pid.get(record["ppid"])
            task = task_of.get(parent) if parent is not None else None
        task_of[key] = task
        latest_with_pid[record["pid"]] = key
    for key, task in invocation_keys.items():
        task_of.setdefault(key, task)  # sampled, but its processes.jsonl line was lost
    return task_of
