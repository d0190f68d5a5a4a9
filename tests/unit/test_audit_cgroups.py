"""The audit's task cgroup accounting: each task's cgroup CPU against its rusage, and nodes without task cgroups."""

from __future__ import annotations

import json
from pathlib import Path

from tracekit.schemas import validation_errors
from tracekit.trace.audit import Audit
from tracekit.trace.audit import cgroup_counted, exact_cpu_ms
from tracekit.trace.rawrun import NodeFolder, load_node_folder

V1 = {"available": True, "version": 1, "readings": ["cpu", "memory", "pids"], "why": None}
NONE = {"available": False, "version": None, "readings": [], "why": "no cgroup hierarchy is mounted"}


def invocation(task_id: str, node: str, rusage_ms: float, **cgroup) -> dict:
    return {"task_id": task_id, "node": node, "attempt": 1, "ok": True, "ts_start": 0, "ts_end": 10, "pid": 1,
            "cpu_user_ms": rusage_ms, "cpu_system_ms": 0.0, **cgroup}  # fmt: skip


def audit_of(tmp_path: Path, invocations: list[dict], task_cgroups: dict) -> dict:
    nodes = [NodeFolder(tmp_path, node, {"node": node, "cpu_mhz": 1000}, 0, None, task_cgroups=described)
             for node, described in task_cgroups.items()]  # fmt: skip
    audit = Audit(tmp_path)
    audit.finish(nodes, invocations, [])
    return audit.as_dict()


def test_cgroups_that_agree_with_rusage_are_counted_and_not_noted(tmp_path):
    summary = audit_of(tmp_path, [invocation("a", "cloud1", 200.0, cgroup_cpu_ms=201.5),
                                  invocation("b", "cloud1", 0.2, cgroup_cpu_ms=0.6)], {"cloud1": V1})  # fmt: skip
    cgroups = summary["cgroup_accounting"]
    assert (cgroups["tasks_in_cgroups"], cgroups["tasks_apart"], cgroups["cpu_ms"]) == (2, 0, 202.1)
    assert summary["cpu_ms_by_source"]["cgroups"] == 202.1 and cgroups["nodes"] == {"cloud1": V1}
    assert not [n for n in summary["notes"] if "cgroup" in n]
    assert validation_errors("cctf/audit", json.loads(json.dumps(summary))) == []


def test_a_task_whose_cgroup_counted_what_it_left_running_is_named(tmp_path):
    summary = audit_of(tmp_path, [invocation("a", "cloud1", 100.0, cgroup_cpu_ms=103.0, cgroup_kept=["/x/a-1"]),
                                  invocation("b", "cloud2", 50.0, cgroup_error="not in cgroups of its own: EBUSY")],
                       {"cloud1": V1, "cloud2": NONE})  # fmt: skip
    cgroups = summary["cgroup_accounting"]
    assert cgroups["tasks_apart_listed"] == [
        {"task_id": "a", "node": "cloud1", "attempt": 1, "cgroup_cpu_ms": 103.0, "rusage_cpu_ms": 100.0}]
    assert cgroups["tasks_left_processes"] == ["a"] and cgroups["tasks_cgroup_error"] == ["b"]
    notes = "\n".join(summary["notes"])
    assert "1 tasks' cgroup CPU differs from their rusage by more than 1%: a (103 ms against 100)" in notes
    assert "the tasks of cloud2 ran without cgroups of their own (no cgroup hierarchy is mounted)" in notes
    assert "1 tasks left processes running after they ended (first: a)" in notes
    assert "see its event's cgroup_error" in notes
    assert validation_errors("cctf/audit", json.loads(json.dumps(summary))) == []


def test_a_worker_s_task_cgroup_record_is_read_as_untrusted(tmp_path):
    (tmp_path / "node.json").write_text(json.dumps({"node": "cloud1"}))
    (tmp_path / "task_cgroups.json").write_text(json.dumps(
        {"available": True, "version": 9, "readings": ["cpu", "\x1b[2J"], "why": "x" * 5000}))
    node = load_node_folder(tmp_path)
    assert node.task_cgroups == {"available": True, "version": None, "readings": ["cpu"], "why": "x" * 1000}
    (tmp_path / "task_cgroups.json").write_text("[1, 2")
    node = load_node_folder(tmp_path)
    assert node.task_cgroups is None and [r.kind for r in node.rejected] == ["task_cgroups"]


def test_a_task_whose_move_into_its_cgroup_failed_is_counted_by_its_rusage():
    failed = invocation("a", "cloud1", 100.0, cgroup_cpu_ms=0.4)  # ran outside its (empty) cgroup
    assert not cgroup_counted(failed) and exact_cpu_ms(failed) == 100.0
    more = invocation("b", "cloud1", 100.0, cgroup_cpu_ms=250.0)  # a detached child's CPU besides
    assert cgroup_counted(more) and exact_cpu_ms(more) == 250.0
    assert cgroup_counted(invocation("c", "cloud1", 100.0, cgroup_cpu_ms=98.0))  # the spawn's share before the move
    assert exact_cpu_ms({"cgroup_cpu_ms": None, "cpu_user_ms": None}) is None
