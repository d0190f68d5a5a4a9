"""The report's small pieces: busy time as a union of spans, Gantt rows, downsampling, running counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tracekit.report import data, plots, summary


def test_busy_time_counts_overlapping_spans_once():
    assert summary._union_ms([]) == 0
    assert summary._union_ms([(0, 10), (5, 15), (20, 30), (21, 22)]) == 25
    assert summary._union_ms([(20, 30), (0, 10)]) == 20


def test_tasks_without_a_named_slot_share_rows_only_when_they_do_not_overlap():
    tasks = [{"ts_start": 0, "ts_end": 10}, {"ts_start": 5, "ts_end": 8}, {"ts_start": 10, "ts_end": 12},
             {"ts_start": 8, "ts_end": 9}]  # fmt: skip
    names, rows = plots._worker_rows("cloud1", tasks)
    assert rows == [0, 1, 0, 1] and names == ["cloud1 #1", "cloud1 #2"]
    named = [{"ts_start": 0, "ts_end": 1, "consumer": "cloud1-1"}, {"ts_start": 0, "ts_end": 1, "consumer": "cloud1-0"}]
    assert plots._worker_rows("cloud1", named) == (["cloud1-0", "cloud1-1"], [1, 0])


def test_downsampling_keeps_short_series_and_averages_long_ones():
    short = pa.table({"ts_ms": pa.array([0, 1000], pa.int64()), "cpu": [10.0, 20.0], "mem": [1.0, 2.0]})
    kept = data._downsample(short)
    assert kept.ts_ms.tolist() == [0, 1000] and kept.cpu_util_pct.tolist() == [10.0, 20.0] and kept.samples == 2
    n = 10 * data.MAX_POINTS
    ts = np.arange(n, dtype=np.int64) * 100
    cpu = np.where(np.arange(n) % 2 == 0, 0.0, 100.0)  # alternating: every bucket of 10 averages to 50
    long = data._downsample(pa.table({"ts_ms": ts, "cpu": cpu, "mem": np.full(n, 7.0)}))
    assert len(long.ts_ms) <= data.MAX_POINTS and long.samples == n
    assert np.allclose(long.cpu_util_pct, 50.0) and np.allclose(long.mem_used_pct, 7.0)
    assert (np.diff(long.ts_ms) > 0).all() and long.ts_ms[0] >= 0 and long.ts_ms[-1] <= ts[-1]


def test_running_count_steps_up_and_down():
    tasks = [{"a": 1000, "b": 3000}, {"a": 2000, "b": 4000}, {"a": None, "b": 5000}]
    x, count = plots._running_count(tasks, "a", "b", t0=1000)
    assert x.tolist() == [0.0, 1.0, 2.0, 3.0] and count.tolist() == [1, 2, 1, 0]


def test_contention_is_a_row_per_node_and_the_audit_s_notes():
    from pathlib import Path

    from tracekit.report.data import RunView
    from tracekit.report.summary import contention_notes, contention_rows

    note = "cloud1: tasks shared saturated CPUs with other work for 62% of their time (...)"
    nodes = {"cloud2": {"source": "process_samples", "saturated_task_share": None, "contended_task_share": None,
                        "other_cores_mean": None, "task_run_delay_share": None, "note": None},
             "cloud1": {"source": "task_cgroups", "saturated_task_share": 0.8, "contended_task_share": 0.62,
                        "other_cores_mean": 1.4, "task_run_delay_share": 0.35, "note": note}}  # fmt: skip
    view = RunView(Path("."), "r1", audit={"contention": {"nodes": nodes}})
    assert contention_rows(view) == [["cloud1", "task cgroups", "80 %", "62 %", "1.40", "35 %"],
                                     ["cloud2", "process samples", "–", "–", "–", "–"]]  # fmt: skip
    assert contention_notes(view) == [note]
    assert contention_rows(RunView(Path("."), "r1", audit={"contention": None})) == []  # parsed before it was measured
