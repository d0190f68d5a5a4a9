"""A node's task cgroup samples -> cctf task_metrics: ``cgroup.csv rows + invocations -> TASK_METRICS``.

input:  the node's cgroup.csv (RAW_CGROUP: each live task cgroup per tick, cumulative since the
        task began) and its invocations (the cgroup of each is ``cgroup_name(task_id, attempt)``)
output: TASK_METRICS rows, per task and interval: the first interval from the task's start (its
        cgroup was born with it, at zero), the next ones between its samples; controller clock

A row whose cgroup belongs to no invocation of the node (its worker was killed before it wrote
the event) is left out and counted; so are rows after the task's end (the sample was taken while
the worker read the cgroup's last totals) and rows whose counters went back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tracekit.taskcgroup import cgroup_name
from tracekit.trace.records import CCTF_SORT_KEYS, TASK_METRICS

_DELTAS = ("cpu_us", "cpu_user_us", "cpu_system_us", "io_read_bytes", "io_write_bytes")
_LEVELS = ("memory_bytes", "memory_peak_bytes", "pids")


@dataclass(frozen=True)
class TaskMetrics:
    table: pa.Table  # TASK_METRICS, in CCTF_SORT_KEYS["task_metrics"] order
    rows_without_task: int  # samples of a cgroup no invocation of the node names
    rows_left_out: int  # after the task's end, or counters that went back


def build_task_metrics(node: str, samples: pa.Table, invocations: list[dict[str, Any]], offset_ms: int) -> TaskMetrics:
    """``samples``: RAW_CGROUP (node clock); ``invocations``: the node's, normalized (controller clock)."""
    task_of = {cgroup_name(r["task_id"], r["attempt"]): r for r in invocations}
    columns = {name: samples.column(name).to_pylist() for name in samples.schema.names}
    order = sorted(range(samples.num_rows), key=lambda i: (columns["cgroup"][i], columns["ts_ms"][i]))
    out: dict[str, list] = {name: [] for name in TASK_METRICS.names}
    without_task = left_out = 0
    previous: dict[str, tuple[int, dict[str, int | None]]] = {}  # cgroup -> (ts_ms, its counters then)
    for i in order:
        name = columns["cgroup"][i]
        task = task_of.get(name)
        if task is None:
            without_task += 1
            continue
        ts_ms = columns["ts_ms"][i] + offset_ms
        counters = {c: columns[c][i] for c in (*_DELTAS, *_LEVELS)}
        last_ts, last = previous.get(name, (task["ts_start"], dict.fromkeys(_DELTAS, 0)))
        if ts_ms <= last_ts or ts_ms > task["ts_end"] or counters["cpu_us"] < (last["cpu_us"] or 0):
            left_out += 1
            continue
        previous[name] = (ts_ms, counters)
        deltas = {c: None if counters[c] is None else counters[c] - (last[c] or 0) for c in _DELTAS}
        for column, value in (("ts_ms", ts_ms), ("node", node), ("task_id", task["task_id"]),
                              ("attempt", task["attempt"]), ("dt_ms", ts_ms - last_ts),
                              ("cpu_ms", deltas["cpu_us"] / 1000), ("cpu_user_ms", deltas["cpu_user_us"] / 1000),
                              ("cpu_system_ms", deltas["cpu_system_us"] / 1000),
                              ("io_read_bytes", deltas["io_read_bytes"]), ("io_write_bytes", deltas["io_write_bytes"])):  # fmt: skip
            out[column].append(value)
        for column in _LEVELS:
            out[column].append(counters[column])
    table = pa.table(out, schema=TASK_METRICS).sort_by([(k, "ascending") for k in CCTF_SORT_KEYS["task_metrics"]])
    return TaskMetrics(table, without_task, left_out)
