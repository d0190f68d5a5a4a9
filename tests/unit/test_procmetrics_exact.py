"""proc_metrics CPU from the exact columns (cpu_ns, children_unseen_cpu_ns): whole ms, task totals kept."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace.procmetrics import build_proc_metrics
from tracekit.trace.records import RAW_PROC


def rows(*samples: dict) -> pa.Table:
    base = {name: 0 for name in RAW_PROC.names}
    base.update(read_bytes=None, write_bytes=None, ctx_voluntary=None, ctx_involuntary=None, run_delay_ns=None)
    return pa.Table.from_pylist([{**base, **sample} for sample in samples], schema=RAW_PROC)


def cpu(table: pa.Table) -> int:
    return pc.sum(table.column("cpu_user_ms")).as_py() + pc.sum(table.column("cpu_system_ms")).as_py()


def test_a_task_of_many_sub_ms_processes_keeps_its_total():
    # 10 processes of 0.6 ms each, one sample each: rounded alone they would make 10 ms.
    samples = rows(*({"ts_ms": 1000, "pid": 100 + i, "create_time_ms": 900, "cpu_ns": 600_000} for i in range(10)))
    task_of = {(100 + i, 900): "t1" for i in range(10)}
    table = build_proc_metrics("n1", samples, {}, task_of, 0).table
    assert cpu(table) == 6


def test_unseen_children_count_and_ticks_only_split_user_from_system():
    samples = rows(
        {"ts_ms": 1000, "pid": 7, "create_time_ms": 0, "cpu_user_ms": 10, "cpu_system_ms": 10,
         "cpu_ns": 21_000_000, "children_unseen_cpu_ns": 0},
        {"ts_ms": 2000, "pid": 7, "create_time_ms": 0, "cpu_user_ms": 10, "cpu_system_ms": 30,
         "cpu_ns": 41_400_000, "children_unseen_cpu_ns": 100_000_000},
    )  # fmt: skip
    table = build_proc_metrics("n1", samples, {}, {(7, 0): "t1"}, 0).table
    assert [u + s for u, s in zip(table.column("cpu_user_ms").to_pylist(), table.column("cpu_system_ms").to_pylist())] == [21, 120]
    assert table.column("cpu_system_ms").to_pylist()[1] == 120  # only stime moved in that interval


def test_rows_of_an_older_collector_keep_the_tick_counters():
    samples = rows({"ts_ms": 1000, "pid": 7, "create_time_ms": 0, "cpu_user_ms": 30, "cpu_system_ms": 10, "cpu_ns": None,
                    "children_unseen_cpu_ns": None})  # fmt: skip
    table = build_proc_metrics("n1", samples, {}, {}, 0).table
    assert table.column("cpu_user_ms").to_pylist() == [30] and table.column("cpu_system_ms").to_pylist() == [10]


def test_a_task_whose_own_rows_end_short_of_its_rusage_is_closed_with_the_rest():
    """close_with_rusage: t1's own process (pid 7) and its child show 30 ms, its rusage 50: one closing row of
    20 ms at its end after pid 7's last row; t2 shows all of its rusage, t3 ran twice (rows not told apart),
    t4's own process has no rows: none of those closed."""
    from tracekit.trace.procmetrics import close_with_rusage

    ticks_only = {"cpu_ns": None, "children_unseen_cpu_ns": None}  # CPU from the tick counters (cumulative)
    samples = rows(
        {"ts_ms": 1000, "pid": 7, "create_time_ms": 900, "cpu_user_ms": 10, **ticks_only},
        {"ts_ms": 1000, "pid": 8, "create_time_ms": 950, "cpu_user_ms": 10, **ticks_only},
        {"ts_ms": 2000, "pid": 7, "create_time_ms": 900, "cpu_user_ms": 20, **ticks_only},
        {"ts_ms": 1000, "pid": 9, "create_time_ms": 900, "cpu_user_ms": 40, **ticks_only},
        {"ts_ms": 1000, "pid": 11, "create_time_ms": 900, "cpu_user_ms": 5, **ticks_only},
    )  # fmt: skip
    task_of = {(7, 900): "t1", (8, 950): "t1", (9, 900): "t2", (11, 900): "t3"}
    table = build_proc_metrics("n1", samples, {}, task_of, 0).table
    invocation = {"cpu_system_ms": 10.0, "create_time_ms": 900}
    invocations = [{**invocation, "task_id": "t1", "pid": 7, "cpu_user_ms": 40.0, "ts_end": 2500},
                   {**invocation, "task_id": "t2", "pid": 9, "cpu_user_ms": 30.0, "ts_end": 1500},
                   {**invocation, "task_id": "t3", "pid": 11, "cpu_user_ms": 90.0, "ts_end": 1500},
                   {**invocation, "task_id": "t3", "pid": 12, "cpu_user_ms": 90.0, "ts_end": 1600},
                   {**invocation, "task_id": "t4", "pid": 13, "cpu_user_ms": 90.0, "ts_end": 1600}]  # fmt: skip
    closed, added = close_with_rusage(table, invocations)
    assert added == 1 and closed.num_rows == table.num_rows + 1
    [row] = [r for r in closed.to_pylist() if r["num_threads"] == 0 and r["read_bytes"] is None and r["ts_ms"] == 2500]
    assert (row["task_id"], row["pid"], row["dt_ms"], row["cpu_user_ms"], row["cpu_system_ms"]) == ("t1", 7, 500, 16, 4)
    ts = closed.column("ts_ms").to_pylist()
    assert ts == sorted(ts)
