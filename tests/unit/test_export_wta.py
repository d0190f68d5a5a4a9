"""tracekit export wta on a trace made by hand: an HTTP chain is a workflow with parents and children,
every other request one of its own, the run's batch tasks one; read back, it is the trace."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracekit.errors import UsageError
from tracekit.trace import cctf
from tracekit.trace.export import wta
from tracekit.trace.records import PROC_METRICS

T0 = 1_796_572_410_000


def invocation(task_id: str, start: int, end: int, node: str = "cloud1", trace: str | None = None,
               span: str | None = None, parent: str | None = None, ok: bool = True) -> dict:  # fmt: skip
    return {"task_id": task_id, "trace_id": trace or f"trace-{task_id}", "node": node, "module": "http" if span else "burn",
            "attempt": 1, "pid": 100, "ts_enqueue": T0 + start - 5, "ts_start": T0 + start, "ts_end": T0 + end,
            "ok": ok, "max_rss_kb": 2048, "cpu_user_ms": 1.0, "cpu_system_ms": 0.0, "span_id": span,
            "parent_span_id": parent}  # fmt: skip


@pytest.fixture
def run(tmp_path):
    return hand_made_run(tmp_path)


def hand_made_run(tmp_path: Path) -> Path:
    """tmp_path/r1: a parsed run made by hand (a chain of three requests, a request alone, batch tasks, a
    failed one), its process samples empty."""
    run = tmp_path / "r1"
    trace = run / cctf.CCTF
    trace.mkdir(parents=True)
    invocations = [
        invocation("a", 0, 300, trace="chain", span="s1"),  # the front service ...
        invocation("b", 10, 250, "cloud2", trace="chain", span="s2", parent="s1"),  # ... calls the next ...
        invocation("c", 20, 200, "cloud1", trace="chain", span="s3", parent="s2"),  # ... which calls the last
        invocation("alone", 400, 450, trace="single", span="s9", parent="client-span"),  # its caller is not traced
        invocation("t1", 1000, 1600), invocation("t2", 1000, 1300, "cloud2"),
        invocation("broken", 2000, 2100, ok=False),
    ]
    cctf.write_records(trace, cctf.INVOCATIONS, invocations)
    cctf.write_json(trace, cctf.NODES, [{"node": n, "cpu_mhz": 2000, "cores_logical": 2, "mem_kb": 8 << 20}
                                        for n in ("cloud1", "cloud2")])  # fmt: skip
    for node in ("cloud1", "cloud2"):
        cctf.write_table(cctf.node_file(trace, "proc_metrics", node), "proc_metrics", PROC_METRICS.empty_table())
    return run


def test_a_chain_is_one_workflow_with_parents_and_children_and_reads_back_as_the_trace(run, tmp_path):
    out = tmp_path / "wta"
    result = wta.export(run, out)
    assert result.summary["tasks"] == 6 and result.summary["workflows"] == 3 and result.summary["dependencies"] == 2
    assert result.summary["excluded_failed"] == 1
    tasks = pq.read_table(out / "tasks/schema-1.0/part.0.parquet").to_pylist()
    by_id = {json.loads(t["params"])["task_id"]: t for t in tasks}
    a, b, c = by_id["a"], by_id["b"], by_id["c"]
    assert (a["parents"], a["children"]) == ([], [b["id"]]) and (b["parents"], b["children"]) == ([a["id"]], [c["id"]])
    assert (c["parents"], c["children"]) == ([b["id"]], []) and a["workflow_id"] == b["workflow_id"] == c["workflow_id"]
    assert by_id["alone"]["parents"] == [] and by_id["alone"]["workflow_id"] != a["workflow_id"]
    assert by_id["t1"]["workflow_id"] == by_id["t2"]["workflow_id"] not in (a["workflow_id"], by_id["alone"]["workflow_id"])
    # Round trip: the count, every runtime and submission, the sum of runtimes.
    assert sum(t["runtime"] for t in tasks) == 300 + 240 + 180 + 50 + 600 + 300
    assert by_id["t1"]["ts_submit"] == T0 + 995 and by_id["t1"]["wait_time"] == 5 and by_id["t1"]["memory_requested"] == 2.0
    workflows = {w["id"]: w for w in pq.read_table(out / "workflows/schema-1.0/part.0.parquet").to_pylist()}
    chain = workflows[a["workflow_id"]]
    # a starts at its submission (T0 - 5) and lasts 300 ms; b and c finish inside it: the path is a -> b -> c.
    assert chain["task_count"] == 3 and chain["critical_path_task_count"] == 3 and chain["scheduler"] == "tracekit load"
    assert chain["critical_path_length"] == (T0 - 5 + 300 + 240 + 180) - (T0 - 5) and chain["approx_max_concurrent_tasks"] == 1
    batch = workflows[by_id["t1"]["workflow_id"]]
    assert batch["task_count"] == 2 and batch["approx_max_concurrent_tasks"] == 2 and batch["critical_path_task_count"] == 1
    workload = json.loads((out / "workload/schema-1.0/generic_information.json").read_text())
    assert workload["total_tasks"] == 6 and workload["total_workflows"] == 3
    assert wta.verify(out, run).ok, wta.verify(out, run).violations


def test_the_archive_s_columns_in_its_order_and_types(run, tmp_path):
    wta.export(run, tmp_path / "wta")
    schema = pq.read_schema(tmp_path / "wta" / "tasks/schema-1.0/part.0.parquet")
    assert schema.names == sorted(schema.names) and "resource_amount_requested" in schema.names
    assert str(schema.field("parents").type) == "list<element: int64>" and str(schema.field("ts_submit").type) == "int64"
    assert schema.field("runtime").metadata[b"unit"] == b"ms"  # every column says its unit and what it holds


def test_verify_finds_a_broken_export_and_one_that_is_not_the_run(run, tmp_path):
    out = tmp_path / "wta"
    wta.export(run, out)
    path = out / "tasks/schema-1.0/part.0.parquet"
    table = pq.read_table(path)
    children = table.column("children").to_pylist()
    children[0] = []  # a forgets its child b
    pq.write_table(table.set_column(table.schema.get_field_index("children"), table.schema.field("children"),
                                    [children]), path)  # fmt: skip
    assert any("does not list it as a child" in v for v in wta.verify(out).violations)
    wta.export(run, out)  # its own earlier export: replaced without --force
    runtimes = table.column("runtime").to_pylist()
    runtimes[4] += 1
    pq.write_table(table.set_column(table.schema.get_field_index("runtime"), table.schema.field("runtime"), [runtimes]), path)
    assert wta.verify(out).ok and any("runtime" in v for v in wta.verify(out, run).violations)
    (out / "export.json").unlink()
    with pytest.raises(UsageError, match="not an earlier wta export"):
        wta.export(run, out)


def test_a_slice_of_no_length_gives_its_cpu_to_a_neighbour_and_is_left_out(run):
    """A cgroup sample taken at a task's start is an interval of 0 ms: OpenDC's loaders drop such rows, and
    the CPU in them. It goes to the task's next slice (the last one's to the one before)."""
    from tracekit.trace import slices
    from tracekit.trace.records import TASK_METRICS

    trace = run / cctf.CCTF
    task = {**invocation("cg", 0, 3000), "cgroup_cpu_ms": 900.0, "cpu_user_ms": 900.0}
    rows = [(T0, 0, 50.0), (T0 + 1000, 1000, 300.0), (T0 + 2000, 1000, 250.0), (T0 + 3000, 1000, 280.0),
            (T0 + 3000, 0, 20.0)]  # fmt: skip
    cgroup = [{f.name: None for f in TASK_METRICS} | {"ts_ms": ts, "node": "cloud1", "task_id": "cg", "attempt": 1,
              "dt_ms": dt, "cpu_ms": ms, "cpu_user_ms": ms, "cpu_system_ms": 0.0, "pids": 1} for ts, dt, ms in rows]  # fmt: skip
    cctf.write_table(cctf.node_file(trace, "task_metrics", "cloud1"), "task_metrics",
                     pa.Table.from_pylist(cgroup, schema=TASK_METRICS))  # fmt: skip
    cut = slices.cut([task], trace)
    assert cut.slices.column("duration").to_pylist() == [1000, 1000, 1000]
    assert cut.slices.column("cpu_ms").to_pylist() == [350.0, 250.0, 300.0]  # 900 ms, every one kept


def test_the_nodes_are_the_archive_s_resources_and_each_task_names_its_own(run, tmp_path):
    """As wta-tools' parsers write them (resources/schema-1.0: one per machine, its cores and memory in GB)."""
    out = tmp_path / "wta"
    wta.export(run, out)
    resources = pq.read_table(out / "resources/schema-1.0/part.0.parquet")
    assert resources.column_names == sorted(resources.column_names)  # the archive's writers sort them
    rows = resources.to_pylist()
    assert [(r["id"], json.loads(r["details"])["node"], r["num_resources"], r["memory"], r["type"]) for r in rows] == \
        [(0, "cloud1", 2.0, 8, "core"), (1, "cloud2", 2.0, 8, "core")]  # fmt: skip
    tasks = pq.read_table(out / "tasks/schema-1.0/part.0.parquet").to_pylist()
    assert {(json.loads(t["params"])["node"], t["resource_used"]) for t in tasks} == {("cloud1", 0), ("cloud2", 1)}
    workload = json.loads((out / "workload/schema-1.0/generic_information.json").read_text())
    assert workload["mean_network_usage"] == workload["max_energy"] == workload["cov_disk_space_usage"] == -1
    assert wta.verify(out, run).ok
    table = pq.read_table(out / "tasks/schema-1.0/part.0.parquet")
    swapped = [1 - r for r in table.column("resource_used").to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("resource_used"), table.schema.field("resource_used"),
                                    [pa.array(swapped, pa.int64())]), out / "tasks/schema-1.0/part.0.parquet")  # fmt: skip
    assert any("its resource" in v for v in wta.verify(out).violations)
