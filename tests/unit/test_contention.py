"""A node's CPU outside the run's tasks (tracekit.trace.contention), on hand-made cctf tables of a 2-CPU node."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from tracekit.schemas import validation_errors
from tracekit.trace.audit import Audit
from tracekit.trace.contention import RUN_DELAY, node_contention, run_cpu, sharing_cpus
from tracekit.trace.records import CONTENTION, HOST_METRICS, PROC_METRICS, TASK_METRICS

SECOND = 1_000


def host(busy_pct: list[float], cpus: int = 2) -> pa.Table:
    """host_metrics of one-second intervals ending at 1 s, 2 s, ...: the node's CPUs this busy."""
    rows = []
    for i, pct in enumerate(busy_pct, start=1):
        row = {f.name: None for f in HOST_METRICS}
        row.update({"ts_ms": i * SECOND, "node": "cloud1", "dt_ms": SECOND, "cpu_util_pct": pct, "cpu_user_pct": pct,
                    "cpu_system_pct": 0.0, "cpu_iowait_pct": 0.0, "cpu_idle_pct": 100.0 - pct,
                    "per_core_util_pct": [pct] * cpus, "mem_total_kb": 1, "mem_available_kb": 1, "mem_used_kb": 0,
                    "swap_used_kb": 0, "load1": 0.0, "load5": 0.0, "load15": 0.0})  # fmt: skip
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=HOST_METRICS)


def task_metrics(task_id: str, cores: list[float], start_ms: int = 0) -> list[dict]:
    """A task's cgroup samples at each second after ``start_ms``: ``cores`` of CPU in each interval."""
    rows, last = [], start_ms
    for i, used in enumerate(cores, start=start_ms // SECOND + 1):
        ts = i * SECOND
        rows.append({"ts_ms": ts, "node": "cloud1", "task_id": task_id, "attempt": 1, "dt_ms": ts - last,
                     "cpu_ms": used * (ts - last), "cpu_user_ms": used * (ts - last), "cpu_system_ms": 0.0,
                     "memory_bytes": None, "memory_peak_bytes": None, "pids": 1, "io_read_bytes": None,
                     "io_write_bytes": None})  # fmt: skip
        last = ts
    return rows


def tasks_table(*rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([r for task in rows for r in task], schema=TASK_METRICS)


def proc_metrics(task_id: str | None, cores: list[float], run_delay_cores: list[float] | None = None) -> pa.Table:
    """A process's samples each second: ``cores`` of CPU; with ``run_delay_cores`` also the newer collectors'
    run-queue wait column (per interval, ns), which older traces lack."""
    rows = []
    for i, used in enumerate(cores, start=1):
        row = {f.name: None for f in PROC_METRICS}
        row.update({"node": "cloud1", "pid": 10, "create_time_ms": 0, "task_id": task_id, "ts_ms": i * SECOND,
                    "dt_ms": SECOND, "cpu_user_ms": round(used * SECOND), "cpu_system_ms": 0, "rss_kb": 1,
                    "num_threads": 1})  # fmt: skip
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=PROC_METRICS)
    waits = pa.array([round(c * 1e9) for c in run_delay_cores] if run_delay_cores is not None else [None] * table.num_rows, pa.int64())
    table = table.set_column(table.schema.get_field_index(RUN_DELAY), RUN_DELAY, waits)
    return table


def invocation(task_id: str, start_ms: int, end_ms: int) -> dict:
    return {"task_id": task_id, "node": "cloud1", "attempt": 1, "ts_start": start_ms, "ts_end": end_ms}


def test_a_task_on_saturated_cpus_beside_other_work_is_noted_with_the_other_work_s_cores():
    result = node_contention("cloud1", host([100.0] * 10), [invocation("t1", 0, 10 * SECOND)],
                             tasks_table(task_metrics("t1", [0.4] * 10)), None)  # fmt: skip
    rows = result.table.to_pylist()
    assert result.table.schema.equals(CONTENTION) and len(rows) == 10
    assert {(r["cpus"], r["busy_cores"], r["run_cores"], r["other_cores"], r["task_ms"], r["source"]) for r in rows} == {
        (2, 2.0, 0.4, 1.6, 1000.0, "task_cgroups")}
    figures = result.figures
    assert (figures["contended_task_share"], figures["saturated_task_share"], figures["other_cores_mean"]) == (1.0, 1.0, 1.6)
    assert figures["task_run_delay_share"] is None and figures["task_time_s"] == 10.0
    assert figures["note"] == ("cloud1: tasks shared saturated CPUs with other work for 100% of their time (other "
                               "work: 1.6 cores on average while they ran): their durations are longer than on a "
                               "node of their own")  # fmt: skip


def test_cpus_saturated_by_the_run_s_own_tasks_alone_are_no_contention():
    two = tasks_table(task_metrics("t1", [1.0] * 10), task_metrics("t2", [0.98] * 10))
    result = node_contention("cloud1", host([99.5] * 10), [invocation("t1", 0, 10 * SECOND),
                                                            invocation("t2", 0, 10 * SECOND)], two, None)  # fmt: skip
    figures = result.figures
    assert figures["saturated_task_share"] == 1.0 and figures["contended_task_share"] == 0.0
    assert figures["other_cores_mean"] == pytest.approx(0.01) and figures["note"] is None
    assert figures["task_time_s"] == 20.0  # two tasks' time


def test_an_idle_node_is_no_contention():
    result = node_contention("cloud1", host([6.0] * 5), [invocation("t1", 0, 5 * SECOND)],
                             tasks_table(task_metrics("t1", [0.1] * 5)), None)  # fmt: skip
    figures = result.figures
    assert (figures["saturated_task_share"], figures["contended_task_share"], figures["note"]) == (0.0, 0.0, None)
    assert figures["other_cores_mean"] == pytest.approx(0.02)


def test_only_the_task_s_time_on_contended_intervals_counts():
    # Other work for the first 4 s of 10; the task from 2 s to 10 s: 2 of its 8 s contended.
    busy = [100.0] * 4 + [50.0] * 6
    result = node_contention("cloud1", host(busy), [invocation("t1", 2 * SECOND, 10 * SECOND)],
                             tasks_table(task_metrics("t1", [0.5] * 8, start_ms=2 * SECOND)), None)  # fmt: skip
    figures = result.figures
    assert figures["contended_task_share"] == 0.25 and figures["saturated_task_share"] == 0.25
    assert [r["task_ms"] for r in result.table.to_pylist()][:4] == [0.0, 0.0, 1000.0, 1000.0]
    assert figures["other_cores_mean"] == pytest.approx((2 * 1.5 + 6 * 0.5) / 8)
    assert "for 25% of their time" in figures["note"]


def test_a_cgroup_sample_across_host_intervals_is_shared_by_its_overlap():
    # The task starts at 1.5 s: its first cgroup interval [1.5 s, 2 s] lies in the host interval ending at 2 s,
    # its second sample is 3 s later (a slow tick): shared among the three intervals it covers.
    samples = task_metrics("t1", [1.0], start_ms=1_500)
    samples[0]["ts_ms"], samples[0]["dt_ms"], samples[0]["cpu_ms"] = 2_000, 500, 500.0
    samples += [{**samples[0], "ts_ms": 5_000, "dt_ms": 3_000, "cpu_ms": 1_500.0}]
    result = node_contention("cloud1", host([100.0] * 5), [invocation("t1", 1_500, 5_000)], tasks_table(samples), None)
    assert [r["run_cores"] for r in result.table.to_pylist()] == [0.0, 0.5, 0.5, 0.5, 0.5]
    assert [r["task_ms"] for r in result.table.to_pylist()] == [0.0, 500.0, 1000.0, 1000.0, 1000.0]


def test_a_node_without_task_cgroups_takes_the_run_s_process_samples_and_says_so():
    processes = proc_metrics("t1", [0.5] * 6)
    result = node_contention("cloud1", host([100.0] * 6), [invocation("t1", 0, 6 * SECOND)], None, processes)
    rows = result.table.to_pylist()
    assert {(r["source"], r["run_cores"], r["other_cores"]) for r in rows} == {("process_samples", 0.5, 1.5)}
    figures = result.figures
    assert figures["source"] == "process_samples" and figures["contended_task_share"] == 1.0
    assert figures["note"].endswith("(other work: 1.5 cores on average while they ran; the run's CPU from its process "
                                    "samples: its tasks had no cgroups of their own): their durations are longer than "
                                    "on a node of their own")  # fmt: skip


def test_the_tasks_run_queue_wait_share_where_the_collector_recorded_it():
    processes = proc_metrics("t1", [0.5] * 4, run_delay_cores=[0.5, 0.5, 1.5, 1.5])  # waited 0.5 then 1.5 s a second
    result = node_contention("cloud1", host([100.0] * 4), [invocation("t1", 0, 4 * SECOND)],
                             tasks_table(task_metrics("t1", [0.5] * 4)), processes)  # fmt: skip
    assert [r["task_run_delay_share"] for r in result.table.to_pylist()] == [0.5, 0.5, 0.75, 0.75]
    assert result.figures["task_run_delay_share"] == pytest.approx(4.0 / 6.0, abs=1e-3)
    assert "; their processes waited for a CPU 67% of their runnable time)" in result.figures["note"]


def test_an_older_trace_without_the_wait_column_or_with_it_empty_has_no_wait_share():
    older = proc_metrics("t1", [0.5] * 2)
    for processes in (older.drop_columns([RUN_DELAY]), older):  # without the column; with it empty (all null)
        result = node_contention("cloud1", host([100.0] * 2), [invocation("t1", 0, 2 * SECOND)],
                                 tasks_table(task_metrics("t1", [0.5] * 2)), processes)  # fmt: skip
        assert [r["task_run_delay_share"] for r in result.table.to_pylist()] == [None, None]
        assert result.figures["task_run_delay_share"] is None


def test_a_node_without_host_samples_or_tasks_says_nothing():
    result = node_contention("cloud1", host([]), [invocation("t1", 0, SECOND)], tasks_table(), None)
    assert result.table.num_rows == 0 and result.figures["intervals"] == 0
    assert (result.figures["contended_task_share"], result.figures["other_cores_mean"], result.figures["note"]) == (None, None, None)
    controller = node_contention("cloud1", host([100.0] * 3), [], None, proc_metrics(None, [0.2] * 3))
    assert controller.figures["task_time_s"] == 0.0 and controller.figures["note"] is None
    assert {r["other_cores"] for r in controller.table.to_pylist()} == {1.8}


def test_the_audit_s_contention_section_and_note(tmp_path):
    noted = node_contention("cloud1", host([100.0] * 10), [invocation("t1", 0, 10 * SECOND)],
                            tasks_table(task_metrics("t1", [0.4] * 10)), None).figures  # fmt: skip
    quiet = node_contention("cloud2", host([10.0] * 10), [], None, proc_metrics(None, [0.1] * 10)).figures
    audit = Audit(tmp_path)
    audit.finish([], [], [])
    assert audit.as_dict()["contention"] is None  # not computed: an audit made outside parse
    audit.add_contention({"cloud2": quiet, "cloud1": noted})
    summary = json.loads(json.dumps(audit.as_dict()))
    assert validation_errors("cctf/audit", summary) == []
    section = summary["contention"]
    assert list(section["nodes"]) == ["cloud1", "cloud2"] and section["saturated_busy_pct"] == 90.0
    assert [n for n in summary["notes"] if "saturated" in n] == [noted["note"]]
    markdown = audit.as_markdown()
    assert "| cloud1 | task_cgroups | 10 | 100% | 100% | 1.60 | - |" in markdown
    assert "| cloud2 | process_samples | 0 | - | - | - | - |" in markdown
    for row in noted, quiet:
        assert validation_errors("cctf/audit", {**summary, "contention": {**section, "nodes": {"x": row}}}) == []


def test_the_run_s_other_nodes_on_the_same_cpus_are_the_run_not_other_work():
    nodes = [{"node": "cloud1", "boot_id": "b", "cpus": [0, 1]}, {"node": "cloud2", "boot_id": "b", "cpus": [0, 1]},
             {"node": "cloud3", "boot_id": "b", "cpus": [2]}, {"node": "cloud4", "boot_id": None, "cpus": [0, 1]},
             {"node": "cloud5", "boot_id": "other", "cpus": [0, 1]}]  # fmt: skip
    assert sharing_cpus(nodes) == {"cloud1": ["cloud2"], "cloud2": ["cloud1"], "cloud3": [], "cloud4": [], "cloud5": []}
    # cloud1's task used 0.4 cores, cloud2's (the same CPUs) 1.6: the CPUs were the run's alone.
    beside = run_cpu(tasks_table(task_metrics("t2", [1.6] * 5)), None)
    result = node_contention("cloud1", host([100.0] * 5), [invocation("t1", 0, 5 * SECOND)],
                             tasks_table(task_metrics("t1", [0.4] * 5)), None, neighbours_cpu=beside)  # fmt: skip
    assert {r["run_cores"] for r in result.table.to_pylist()} == {2.0}
    assert result.figures["contended_task_share"] == 0.0 and result.figures["note"] is None


def test_the_same_samples_in_any_order_give_the_same_floats():
    """Float addition is not associative: (0.1 + 0.2) + 0.3 != (0.3 + 0.2) + 0.1. A trace read back in
    another row order (a threaded read, an older collector's file) gave contention figures that differed
    in their last digits, and parses of one run that differed."""
    from tracekit.trace.contention import _run_delay

    cgroups = tasks_table(*(task_metrics(f"t{i}", [cores]) for i, cores in enumerate([0.0001, 0.0002, 0.0003])))
    assert run_cpu(cgroups, None).rows() == run_cpu(cgroups.take([2, 1, 0]), None).rows() == [(0, SECOND, 0.1 + 0.2 + 0.3)]
    waits = pa.concat_tables([proc_metrics("t1", [0.5], run_delay_cores=[c]) for c in (0.0001, 0.0002, 0.0003)])
    assert run_cpu(None, waits).rows() == run_cpu(None, waits.take([2, 1, 0])).rows()
    interval = (np.array([0]), np.array([SECOND]))
    assert _run_delay(waits, *interval) == _run_delay(waits.take([2, 1, 0]), *interval)


def test_a_value_is_spread_over_the_intervals_it_overlaps_in_proportion():
    """_spread, vectorized: a row within one interval, one across two, one across four (a process's first
    interval from its creation, long before), one of no length (the interval holding it), one outside all."""
    from tracekit.trace.contention import Spans, _spread

    starts, ends = np.array([0, 100, 200, 300]), np.array([100, 200, 300, 400])
    spans = Spans.of([(10, 60, 5.0), (50, 150, 10.0), (-400, 400, 8.0), (200, 200, 3.0), (500, 600, 9.0)])
    # The point at 200 is held by the interval that ends there.
    assert _spread(starts, ends, spans).tolist() == pytest.approx([5.0 + 5.0 + 1.0, 5.0 + 1.0 + 3.0, 1.0, 1.0])
    assert _spread(starts, ends, Spans.of([])).tolist() == [0.0] * 4
