"""Process samples: cumulative ``proc.csv`` rows -> per-interval ``proc_metrics``.

input:  one node's RAW_PROC table, its processes.jsonl records, a task
        attribution per process, the node's clock offset
output: a PROC_METRICS table, rows ordered by (ts_ms, pid, create_time_ms)

The first sample of a process covers [create_time, first sample]: its
counters are everything the process used since it started, so no work is
lost before the first tick (the original tool wrote a zero placeholder).

CPU: where the collector wrote ``cpu_ns`` (exact where the kernel gives it)
and ``children_unseen_cpu_ns`` (the CPU of reaped children that their own
rows did not show), an interval's CPU is the growth of their sum, in whole
ms kept exact over the process's life (each interval the difference of the
rounded running totals, carried over the task's rows: _whole_ms_carried); it
is split into user and system by the clock-tick counters' shares in the
interval (all user where they did not move). Rows of
older collectors (no cpu_ns) take the clock-tick counters as they are.

A task's own process (an invocation's) is reaped by its wrapper, often
before the collector could read it at its exit: the CPU it and its children
used since its last sample would be lost. Its wrapper's rusage (wait4:
every process of the task it waited for, exact) closes it: with exact
samples, ``close_with_rusage`` adds a last row at the invocation's end with
what the rusage holds beyond the task's rows (none where they already show
it all).
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
    closing_rows: int = 0  # rows added by close_with_rusage: no sample of the collector's


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
    exact = column["cpu_ns"].null_count < len(column["cpu_ns"])
    if exact:
        total_ns = pc.add(column["cpu_ns"], pc.fill_null(column["children_unseen_cpu_ns"], 0))
        exact_step_ms = pc.divide(pc.cast(per_interval(pc.fill_null(total_ns, 0), 0), pa.float64()), 1e6)

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
    if exact:
        step_ms = _whole_ms_carried(exact_step_ms, rows["task_id"], ts, pid)
        deltas["cpu_user_ms"], deltas["cpu_system_ms"] = _split(step_ms, column["cpu_ns"], deltas)
    rows.update(
        run_delay_ns=per_interval(column["run_delay_ns"], 0),
        ts_ms=pc.add(ts, clock_offset_ms),
        dt_ms=dt_ms,
        rss_kb=column["rss_kb"],
        num_threads=column["num_threads"],
        **deltas,
    )
    return NodeProcMetrics(pa.table({name: rows[name] for name in PROC_METRICS.names}, schema=PROC_METRICS), negative)


def _whole_ms_carried(step_ms: pa.Array, task_id: pa.Array, ts: pa.Array, pid: pa.Array) -> pa.Array:
    """Exact per-interval CPU (float ms) as whole ms whose sums over each task stay exact.

    A task of hundreds of processes of a fraction of a ms each would gain or
    lose up to half a ms per process if each were rounded alone; the
    rounding is carried over the task's rows in time order instead (each row
    the difference of the task's rounded running totals), so a row is off by
    less than a ms and the task's total by less than half of one.
    """
    if isinstance(task_id, pa.ChunkedArray):
        task_id = task_id.combine_chunks()
    # Each task as a number (the order of the tasks does not matter, only their rows' order within each):
    # sorting by integers, not by strings.
    group = pc.dictionary_encode(pc.fill_null(task_id, "")).indices
    order = pc.sort_indices(pa.table({"g": group, "ts": ts, "pid": pid}),
                            sort_keys=[("g", "ascending"), ("ts", "ascending"), ("pid", "ascending")])  # fmt: skip
    steps, groups = pc.take(step_ms, order), pc.take(group, order)
    running = pc.cumulative_sum(steps)
    first = pc.fill_null(pc.not_equal(groups, shifted_down(groups)), True)
    base = pc.fill_null_forward(pc.if_else(first, pc.subtract(running, steps), None))
    rounded = pc.cast(pc.round(pc.subtract(running, base)), pa.int64())
    whole = pc.subtract(rounded, pc.if_else(first, 0, shifted_down(rounded)))
    return pc.take(whole, pc.sort_indices(order))  # back to the rows' order


def _split(step_ms: pa.Array, cpu_ns: pa.Array, deltas: dict[str, pa.Array]) -> tuple[pa.Array, pa.Array]:
    """User and system ms of each row: its CPU split by the tick counters' shares in the interval (all user
    where they did not move); rows without cpu_ns keep the tick counters' values."""
    user_ticks, system_ticks = deltas["cpu_user_ms"], deltas["cpu_system_ms"]
    ticks = pc.add(user_ticks, system_ticks)
    share = pc.if_else(pc.greater(ticks, 0), pc.divide(pc.cast(system_ticks, pa.float64()), pc.cast(ticks, pa.float64())), 0.0)
    system = pc.cast(pc.round(pc.multiply(pc.cast(step_ms, pa.float64()), share)), pa.int64())
    user = pc.subtract(step_ms, system)
    exact = pc.is_valid(cpu_ns)
    return pc.if_else(exact, user, user_ticks), pc.if_else(exact, system, system_ticks)


def close_with_rusage(table: pa.Table, invocations: list[dict[str, Any]]) -> tuple[pa.Table, int]:
    """``table`` (PROC_METRICS, controller clock) with a closing row for each invocation whose own
    process's rows end before it did and show less CPU than its rusage; how many were added.

    Each task's CPU shown and its own process's last row come from one grouping of the table (a filter of the
    whole table per task was quadratic: minutes on a node of thousands of tasks)."""
    if table.num_rows == 0:
        return table, 0
    per_task: dict[str, list[dict[str, Any]]] = {}
    for invocation in invocations:
        per_task.setdefault(invocation["task_id"], []).append(invocation)
    # A task run again: its rows are not told apart. A task without rusage or pid has nothing to close with.
    eligible = {task_id: attempts[0] for task_id, attempts in per_task.items()
                if len(attempts) == 1 and attempts[0].get("cpu_user_ms") is not None
                and attempts[0].get("pid") is not None}  # fmt: skip
    if not eligible:
        return table, 0
    keys = pa.table({"task_id": pa.array(list(eligible), pa.string()),
                     "pid": pa.array([r["pid"] for r in eligible.values()], pa.int64()),
                     "create_time_ms": pa.array([r["create_time_ms"] for r in eligible.values()], pa.int64())})  # fmt: skip
    # The join and the grouping move only the key columns and row numbers, not the table.
    keyed = table.select(["task_id", "pid", "create_time_ms", "ts_ms"]).append_column("row", row_numbers(table.num_rows))
    own = keyed.join(keys, ["task_id", "pid", "create_time_ms"], join_type="inner", use_threads=False)
    if own.num_rows == 0:
        return table, 0
    latest = own.group_by("task_id", use_threads=False).aggregate([("ts_ms", "max")]).rename_columns(["task_id", "ts_ms"])
    last_row = own.join(latest, ["task_id", "ts_ms"], join_type="inner", use_threads=False).column("row")
    last_rows = {row["task_id"]: row for row in table.take(last_row).to_pylist()}
    sums = table.select(["task_id", "cpu_user_ms", "cpu_system_ms"]).group_by("task_id", use_threads=False).aggregate(
        [("cpu_user_ms", "sum"), ("cpu_system_ms", "sum")])  # fmt: skip
    shown_of = {task_id: (user or 0) + (system or 0) for task_id, user, system in
                zip(*(sums.column(name).to_pylist() for name in ("task_id", "cpu_user_ms_sum", "cpu_system_ms_sum")))}  # fmt: skip
    closing = []
    for task_id, invocation in eligible.items():
        last = last_rows.get(task_id)
        if last is None:
            continue
        user, system = invocation["cpu_user_ms"], invocation.get("cpu_system_ms") or 0
        tail = round(user + system - shown_of[task_id])
        if tail <= 0:
            continue
        tail_system = round(tail * system / (user + system))
        ts_end = max(invocation["ts_end"], last["ts_ms"])  # a last sample at its exit may be a ms after the wrapper's end
        closing.append({
            **{name: last[name] for name in PROC_METRICS_PER_PROCESS},
            "ts_ms": ts_end, "dt_ms": ts_end - last["ts_ms"],
            "cpu_user_ms": tail - tail_system, "cpu_system_ms": tail_system, "rss_kb": 0, "num_threads": 0,
            "read_bytes": None, "write_bytes": None, "ctx_voluntary": None, "ctx_involuntary": None,
            "run_delay_ns": None,
        })  # fmt: skip
    if not closing:
        return table, 0
    table = pa.concat_tables([table, pa.Table.from_pylist(closing, schema=PROC_METRICS)])
    return table.sort_by([(name, "ascending") for name in CCTF_SORT_KEYS["proc_metrics"]]), len(closing)


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
