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
