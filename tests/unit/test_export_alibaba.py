"""tracekit export alibaba on a trace made by hand: jobs with their DAG in the task names, instances with
their CPU and memory, machines and their usage over time, in the v2018 trace's units; read back, it is the trace."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from tests.unit.test_export_google import with_samples
from tests.unit.test_export_wta import T0, invocation
from tests.unit.test_export_wta import run as run  # noqa: F401 - the fixture: a chain, a request, batch tasks
from tracekit.errors import TracekitError
from tracekit.trace import cctf
from tracekit.trace.export import alibaba
from tracekit.trace.records import HOST_METRICS, LINK_METRICS


def with_host_samples(run, node: str, busy_pct: list[float], rx_bytes: int) -> None:
    """One host interval of 1 s per entry, the first ending 1 s before T0 (before the first submission)."""
    rows, links = [], []
    for i, busy in enumerate(busy_pct):
        ts = T0 + (i - 1) * 1000
        rows.append({f.name: None for f in HOST_METRICS} | {
            "ts_ms": ts, "node": node, "dt_ms": 1000, "cpu_util_pct": busy, "cpu_user_pct": busy, "cpu_system_pct": 0.0,
            "cpu_iowait_pct": 0.0, "cpu_idle_pct": 100 - busy, "per_core_util_pct": [busy, busy],
            "mem_total_kb": 8 << 20, "mem_available_kb": 6 << 20, "mem_used_kb": 2 << 20, "swap_used_kb": 0,
            "load1": 0.5, "load5": 0.5, "load15": 0.5})  # fmt: skip
        for iface in ("eth0", "eth1"):
            links.append({"ts_ms": ts, "node": node, "iface": iface, "dt_ms": 1000, "rx_bytes": rx_bytes,
                          "tx_bytes": rx_bytes // 2, "rx_bits_per_s": rx_bytes * 8.0, "tx_bits_per_s": rx_bytes * 4.0})  # fmt: skip
    trace = run / cctf.CCTF
    cctf.write_table(cctf.node_file(trace, "host_metrics", node), "host_metrics", pa.Table.from_pylist(rows, schema=HOST_METRICS))
    cctf.write_table(cctf.node_file(trace, "link_metrics", node), "link_metrics", pa.Table.from_pylist(links, schema=LINK_METRICS))


def read(out, name: str) -> list[dict]:
    schema = alibaba.TABLES[name]
    return pacsv.read_csv(out / name, read_options=pacsv.ReadOptions(column_names=schema.names),
                          convert_options=pacsv.ConvertOptions(column_types=schema)).to_pylist()  # fmt: skip


@pytest.fixture
def sampled(run):
    invocations = cctf.read_records(run / cctf.CCTF, cctf.INVOCATIONS)
    for r in invocations:
        if r["task_id"] == "t1":
            r.update(cpu_user_ms=450.0, cpu_system_ms=0.0)
    # t2 failed once on cloud1 before its attempt on cloud2.
    invocations.append(invocation("t2", 700, 900) | {"attempt": 0, "ok": False})
    cctf.write_records(run / cctf.CCTF, cctf.INVOCATIONS, invocations)
    with_samples(run, "t1", "cloud1", [(1200, 200), (1400, 150)])
    with_host_samples(run, "cloud1", [10.0, 50.0, 80.0, 20.0], rx_bytes=1000)
    with_host_samples(run, "cloud2", [5.0, 5.0, 5.0], rx_bytes=4000)
    return run


def test_jobs_tasks_instances_and_machines_in_the_trace_s_shape_and_units(sampled, tmp_path):
    out = tmp_path / "alibaba"
    result = alibaba.export(sampled, out, include_failed=True)
    assert (result.summary["jobs"], result.summary["tasks"], result.summary["instances"]) == (3, 7, 8)
    assert result.summary["machines"] == {"m_1": "cloud1", "m_2": "cloud2"}
    # The trace's start: the first host interval's start (T0 - 2000), before the first submission (T0 - 5).
    assert result.summary["trace_start_ms"] == T0 - 2000
    instances = read(out, "batch_instance.csv")
    tasks = {(t["job_name"], t["task_name"]): t for t in read(out, "batch_task.csv")}
    # The chain a -> b -> c is one job whose task names carry its DAG; the lone request a job of its own.
    assert [(i["job_name"], i["task_name"]) for i in instances[:4]] == [("j_1", "M1"), ("j_1", "M2_1"), ("j_1", "M3_2"),
                                                                        ("j_2", "M1")]  # fmt: skip
    t1 = next(i for i in instances if i["start_time"] == pytest.approx(3.0))  # T0 + 1000, 3 s after the start
    assert (t1["end_time"], t1["machine_id"], t1["status"], t1["seq_no"], t1["total_seq_no"]) == (3.6, "m_1", "Terminated", 1, 1)
    assert t1["cpu_avg"] == pytest.approx(100 * 450 / 600)  # 100 is one core
    assert t1["cpu_max"] == pytest.approx(100 * 200 / 200) and t1["mem_avg"] == pytest.approx(100 * 4096 / (8 << 20))
    assert t1["mem_max"] == pytest.approx(100 * 4096 / (8 << 20))  # its samples' peak: above its rusage's 2048
    # t2's two attempts are one task with two instances; its status is its last attempt's.
    t2 = [i for i in instances if i["job_name"] == "j_3" and i["total_seq_no"] == 2]
    assert sorted((i["seq_no"], i["status"], i["machine_id"]) for i in t2) == [(0, "Failed", "m_1"), (1, "Terminated", "m_2")]
    task2 = tasks[("j_3", t2[0]["task_name"])]
    assert task2["instance_num"] == 2 and task2["status"] == "Terminated" and task2["plan_cpu"] == 100
    meta = read(out, "machine_meta.csv")
    assert [(m["machine_id"], m["cpu_num"], m["mem_size"], m["status"]) for m in meta] == [("m_1", 2, 100.0, "USING"),
                                                                                           ("m_2", 2, 100.0, "USING")]  # fmt: skip
    usage = read(out, "machine_usage.csv")
    assert [(u["machine_id"], u["time_stamp"], u["cpu_util_percent"]) for u in usage[:2]] == [("m_1", 1.0, 10.0), ("m_1", 2.0, 50.0)]
    assert usage[0]["mem_util_percent"] == 25.0 and usage[0]["mem_gps"] is None and usage[0]["disk_io_percent"] is None
    # Bytes per second over both interfaces, each column normalized to its own most (as the original's):
    # cloud2's 8000 B/s received and 4000 B/s sent.
    assert (result.summary["net_in_max_bytes_per_s"], result.summary["net_out_max_bytes_per_s"]) == (8000.0, 4000.0)
    assert (usage[0]["net_in"], usage[0]["net_out"], usage[-1]["net_in"], usage[-1]["net_out"]) == (25.0, 25.0, 100.0, 100.0)
    assert (out / "batch_task.csv").read_text().splitlines()[0].startswith("M1,1,j_1,1,Terminated,")  # no header, no quotes
    checked = alibaba.verify(out, sampled)
    assert checked.ok, checked.violations
    assert "checked against the run" in checked.line


def test_verify_finds_what_does_not_hold_the_trace(sampled, tmp_path):
    out = tmp_path / "alibaba"
    alibaba.export(sampled, out)
    lines = (out / "batch_instance.csv").read_text().splitlines()
    fields = lines[4].split(",")  # t1: double its CPU
    fields[10] = str(float(fields[10]) * 2)
    (out / "batch_instance.csv").write_text("\n".join(lines[:4] + [",".join(fields)] + lines[5:]) + "\n")
    assert alibaba.verify(out).ok
    assert any("CPU-ms, the trace" in v for v in alibaba.verify(out, sampled).violations)
    fields[11] = "250.0"  # cpu_max: 2.5 cores on a node of 2
    (out / "batch_instance.csv").write_text("\n".join(lines[:4] + [",".join(fields)] + lines[5:]) + "\n")
    assert any(f"instance {fields[0]}: cpu_max 250 is above its machine m_1's 200 (2 cores)" in v
               for v in alibaba.verify(out).violations)  # fmt: skip
    (out / "batch_task.csv").write_text((out / "batch_task.csv").read_text().replace("M3_2", "M3_7"))
    violations = alibaba.verify(out).violations
    assert any("waits for task 7, not in the job" in v for v in violations)
    assert any("instances in batch_instance.csv" in v for v in violations)  # M3_2's instance has no task now
    # A name without a DAG (how the original names independent tasks) is a violation, not a crash.
    (out / "batch_task.csv").write_text((out / "batch_task.csv").read_text().replace("M1,", "task_abc,", 1))
    assert any("task name 'task_abc' of job 'j_1' is not M<n>" in v for v in alibaba.verify(out).violations)
    (out / "machine_usage.csv").write_text("m_1,not a time\n")
    assert "not readable as the trace's machine_usage.csv columns" in alibaba.verify(out).violations[0]


def test_a_trace_without_host_samples_names_the_missing_table(run, tmp_path):
    with pytest.raises(TracekitError, match=r"cctf/host_metrics/ has no host samples of node cloud1: machine_usage needs every node's"):
        alibaba.export(run, tmp_path / "alibaba")
    assert not (tmp_path / "alibaba").exists()
    with_host_samples(run, "cloud1", [1.0], 10)
    with pytest.raises(TracekitError, match=r"has no host samples of node cloud2"):
        alibaba.export(run, tmp_path / "alibaba")
    with_host_samples(run, "cloud2", [1.0], 10)
    assert json.loads((alibaba.export(run, tmp_path / "alibaba").out_dir / "export.json").read_text())["tasks"] == 6
