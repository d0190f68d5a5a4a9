"""Task cgroup samples (cgroup.csv) -> task_metrics: intervals from the task's start, on the controller clock."""

from __future__ import annotations

import pyarrow as pa

from tracekit.taskcgroup import cgroup_name
from tracekit.trace.records import RAW_CGROUP
from tracekit.trace.taskmetrics import build_task_metrics

TASK = {"task_id": "t/1 odd", "attempt": 2, "ts_start": 1_000, "ts_end": 1_500}


def samples(*rows) -> pa.Table:
    names = RAW_CGROUP.names
    return pa.table({name: [row.get(name) for row in rows] for name in names}, schema=RAW_CGROUP)


def row(ts_ms, cpu_us, cgroup=None, **more):
    return {"ts_ms": ts_ms, "cgroup": cgroup or cgroup_name(TASK["task_id"], TASK["attempt"]), "cpu_us": cpu_us,
            "cpu_user_us": cpu_us // 2, "cpu_system_us": cpu_us - cpu_us // 2, **more}  # fmt: skip


def test_intervals_from_the_task_s_start_shifted_to_the_controller_clock():
    built = build_task_metrics("cloud1", samples(
        row(940, 40_000, memory_bytes=4096, pids=3), row(1_040, 90_000, memory_bytes=8192, pids=1)), [TASK], offset_ms=60)
    rows = built.table.to_pylist()
    assert [(r["ts_ms"], r["dt_ms"], r["cpu_ms"]) for r in rows] == [(1_100, 100, 90.0)]  # all since the start
    assert built.rows_left_out == 1  # the sample at 940 + 60 = 1000 is the task's start itself: no interval


def test_samples_of_no_task_after_its_end_or_going_back_are_left_out_and_counted():
    built = build_task_metrics("cloud1", samples(
        row(1_100, 10_000), row(1_200, 30_000, memory_bytes=1 << 20), row(1_300, 20_000), row(1_600, 90_000),
        row(1_200, 5_000, cgroup="another-1")), [TASK], offset_ms=0)  # fmt: skip
    rows = built.table.to_pylist()
    assert [(r["ts_ms"], r["dt_ms"], r["cpu_ms"], r["cpu_user_ms"]) for r in rows] == [
        (1_100, 100, 10.0, 5.0), (1_200, 100, 20.0, 10.0)]
    assert rows[1]["memory_bytes"] == 1 << 20 and rows[0]["memory_bytes"] is None
    assert (rows[0]["task_id"], rows[0]["attempt"], rows[0]["node"]) == ("t/1 odd", 2, "cloud1")
    assert built.rows_without_task == 1 and built.rows_left_out == 2  # went back (1,300), after the end (1,600)
