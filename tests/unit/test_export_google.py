"""tracekit export google on a trace made by hand: the events of every task, usage windows that hold each
task's measured CPU time (a sampling interval across a window's edge shared by its overlap), Google's units."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.round_trip import assert_round_trip
from tests.unit.test_export_wta import T0, invocation
from tests.unit.test_export_wta import run as run  # noqa: F401 - the fixture: a chain, a request, batch tasks
from tracekit.errors import UsageError
from tracekit.trace import cctf
from tracekit.trace.export import google
from tracekit.trace.records import PROC_METRICS


def with_samples(run, task_id: str, node: str, ticks: list[tuple[int, int]]) -> None:
    """Process samples of one task on ``node``: (ms after T0, CPU ms in the interval ending there)."""
    rows = []
    for ts, cpu in ticks:
        rows.append({f.name: None for f in PROC_METRICS} | {"ts_ms": T0 + ts, "node": node, "pid": 100,
                    "create_time_ms": T0, "task_id": task_id, "dt_ms": 200, "cpu_user_ms": cpu, "cpu_system_ms": 0,
                    "rss_kb": 4096, "num_threads": 1})  # fmt: skip
    trace = run / cctf.CCTF
    path = cctf.node_file(trace, "proc_metrics", node)
    table = pa.concat_tables([pq.read_table(path, schema=PROC_METRICS), pa.Table.from_pylist(rows, schema=PROC_METRICS)])
    cctf.write_table(path, "proc_metrics", table.sort_by([("ts_ms", "ascending")]))


def test_events_windows_and_machines_in_google_s_units_hold_the_trace(run, tmp_path):
    # Make t1 (1.0 s to 1.6 s after T0, 600 ms of CPU by its rusage) cross a 0.5 s window edge at 1.495 s.
    invocations = cctf.read_records(run / cctf.CCTF, cctf.INVOCATIONS)
    for r in invocations:
        if r["task_id"] == "t1":
            r.update(cpu_user_ms=600.0, cpu_system_ms=0.0)
    cctf.write_records(run / cctf.CCTF, cctf.INVOCATIONS, invocations)
    with_samples(run, "t1", "cloud1", [(1200, 200), (1400, 150)])
    out = tmp_path / "google"
    result = google.export(run, out, window_s=0.5)
    assert result.summary["tasks"] == 6 and result.summary["ncu_cores"] == 2
    events = pq.read_table(out / "instance_events.parquet").to_pylist()
    assert sorted(e["type"] for e in events) == [0] * 6 + [3] * 6 + [6] * 6
    first = min(e["time"] for e in events)
    assert first == google.OFFSET_US  # the first submission, 600 s after Google's time 0
    usage = pq.read_table(out / "instance_usage.parquet").to_pylist()
    t1 = [u for u in usage if u["machine_id"] == 1 and u["start_time"] >= first + (1000 + 5) * 1000]
    # Windows of 500 ms from the first submission (T0 - 5): t1 runs from T0 + 1000 to T0 + 1600, across the
    # edge at T0 + 1495 (its tail slice, 1400 to 1600, shared by its overlap).
    assert [((u["start_time"] - first) // 1000, (u["end_time"] - first) // 1000) for u in t1] == [(1005, 1500), (1500, 1605)]
    assert t1[0]["average_usage"]["cpus"] == pytest.approx((200 + 150 + 250 * 95 / 200) / 495 / 2)
    held = sum(u["average_usage"]["cpus"] * 2 * (u["end_time"] - u["start_time"]) / 1000 for u in t1)
    assert held == pytest.approx(600.0, rel=1e-3)  # the task's measured CPU time, all of it
    assert all(len(u["cpu_usage_distribution"]) == 11 and len(u["tail_cpu_usage_distribution"]) == 9 for u in usage)
    machines = pq.read_table(out / "machine_events.parquet").to_pylist()
    assert [(m["platform_id"], m["capacity"]["cpus"]) for m in machines] == [("cloud1", 1.0), ("cloud2", 1.0)]
    checked = google.verify(out, run)
    assert checked.ok, checked.violations
    assert pq.read_schema(out / "instance_usage.parquet").field("average_usage").metadata[b"unit"] == b"NCU, NMU"
    assert assert_round_trip(run, "google", out) == 6  # every window against the slices it covers, read back


def test_verify_finds_usage_that_does_not_hold_the_trace_and_a_bad_window_is_refused(run, tmp_path):
    out = tmp_path / "google"
    google.export(run, out)
    path = out / "instance_usage.parquet"
    table = pq.read_table(path)
    average = table.column("average_usage").to_pylist()
    average[0] = {"cpus": average[0]["cpus"] * 2 + 0.5, "memory": average[0]["memory"]}
    pq.write_table(table.set_column(table.schema.get_field_index("average_usage"), table.schema.field("average_usage"),
                                    [pa.array(average, google.RESOURCES)]), path)  # fmt: skip
    assert google.verify(out).ok and any("usage rows hold" in v for v in google.verify(out, run).violations)
    for bad in (0, -300, float("inf"), float("nan"), 1e-300, 0.0001, 0.0015):  # each crashed or was cut before
        with pytest.raises(UsageError, match=rf"--window-s {bad:g}: give a window of whole milliseconds"):
            google.export(run, tmp_path / "other", window_s=bad)
    assert google.export(run, tmp_path / "other", window_s=0.001).summary["window_s"] == 0.001
    assert json.loads((out / "export.json").read_text())["format"] == "google"


def test_verify_finds_a_usage_row_outside_its_run_or_above_its_machine(run, tmp_path):
    out = tmp_path / "google"
    google.export(run, out)
    path = out / "instance_usage.parquet"
    clean = pq.read_table(path)
    assert google.verify(out).ok

    def written(column: str, change) -> None:
        values = clean.column(column).to_pylist()
        values[0] = change(values[0])
        index = clean.schema.get_field_index(column)
        pq.write_table(clean.set_column(index, clean.schema.field(column), [pa.array(values, clean.schema.field(column).type)]),
                       path)  # fmt: skip

    written("end_time", lambda end: end + 5_000_000)  # 5 s past its instance's finish
    assert any("row 0 " in v and "lies outside its instance's run" in v for v in google.verify(out).violations)
    written("maximum_usage", lambda peak: {"cpus": 1.5, "memory": peak["memory"]})  # 1.5 of the largest machine
    assert any("row 0 " in v and "maximum CPU 1.5 NCU is above its machine's capacity 1 NCU" in v
               for v in google.verify(out).violations)  # fmt: skip
