"""tracekit.experiment.outcome: what keeps a run whose phases all succeeded from a plain success."""

from __future__ import annotations

import json
from pathlib import Path

from tracekit.experiment.outcome import outcome_warnings

INVENTORY = "all:\n  children:\n    controller: {hosts: {cloud0: {}}}\n    workers: {hosts: {cloud1: {}, cloud2: {}}}\n"
WHOLE = {"per_node": {"cloud0": {}, "cloud1": {}, "cloud2": {}}, "collectors_died": [], "tasks_missing_from_trace": [],
         "tasks_in_trace": 4, "queue_entries_rejected": {}, "rejected": 0}  # fmt: skip


def run_folder(tmp_path: Path, audit: dict | None, dispatch: dict | None = None) -> Path:
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    (tmp_path / "cctf").mkdir()
    if audit is not None:
        (tmp_path / "cctf" / "audit.json").write_text(json.dumps(audit))
    (tmp_path / "nodes" / "cloud0").mkdir(parents=True)
    (tmp_path / "nodes" / "cloud0" / "dispatch.json").write_text(json.dumps(dispatch or {"tasks": 4}))
    return tmp_path


def test_a_whole_trace_has_no_warning(tmp_path):
    assert outcome_warnings(run_folder(tmp_path, WHOLE)) == []


def test_each_loss_or_refusal_is_a_warning_that_names_it(tmp_path):
    audit = {**WHOLE, "per_node": {"cloud0": {}, "cloud1": {}}, "collectors_died": ["cloud1"],
             "tasks_missing_from_trace": ["t1 (attempt 1 on cloud1)"], "tasks_in_trace": 3,
             "queue_entries_rejected": {"cloud1": 2, "cloud2": 0}, "rejected": 5}  # fmt: skip
    dispatch = {"tasks": 4, "rejected_records": 1, "rejected_entries": 6}
    warnings = outcome_warnings(run_folder(tmp_path, audit, dispatch))
    expected = ["no samples from node(s) cloud2", "the collector of cloud1 died", "1 task(s) the scheduler ran are not "
                "in the trace: t1 (attempt 1 on cloud1)", "the trace holds 3 of the 4 tasks the dispatcher planned",
                "1 starts or results entries not written by this run's workers", "6 queue entries not signed by this "
                "run's dispatcher (or copies of its entries) were deleted unrun by the dispatcher",
                "deleted unrun (cloud1 2)", "parse did not use 5 item(s)"]  # fmt: skip
    assert len(warnings) == len(expected)
    for warning, start in zip(warnings, expected):
        assert start in warning, (warning, start)


def test_the_nodes_expected_are_the_runs_hosts_when_workers_count_left_some_out(tmp_path):
    # workers.count 1: the run had cloud0 and cloud1 only (resolved.json); cloud2 collected nothing and is no loss.
    audit = {**WHOLE, "per_node": {"cloud0": {}, "cloud1": {}}}
    run_dir = run_folder(tmp_path, audit)
    assert outcome_warnings(run_dir)[0].startswith("no samples from node(s) cloud2")  # the inventory's, without the record
    (run_dir / "resolved.json").write_text(json.dumps({"hosts": ["cloud0", "cloud1"]}))
    assert outcome_warnings(run_dir) == []
    (run_dir / "resolved.json").write_text(json.dumps({"hosts": ["cloud0", "cloud1", "cloud2"]}))
    assert outcome_warnings(run_dir)[0].startswith("no samples from node(s) cloud2")


def test_an_unreadable_audit_is_a_warning(tmp_path):
    assert outcome_warnings(run_folder(tmp_path, None)) == ["no readable cctf/audit.json: the trace cannot be checked"]


def test_contention_is_said_in_the_summary_but_is_no_warning(tmp_path):
    from tracekit.experiment.results import write_results
    from tracekit.experiment.runner import summarize

    note = ("cloud1: tasks shared saturated CPUs with other work for 62% of their time (other work: 1.4 cores on "
            "average while they ran): their durations are longer than on a node of their own")  # fmt: skip
    quiet = {"source": "task_cgroups", "note": None}
    audit = {**WHOLE, "contention": {"nodes": {"cloud2": quiet, "cloud1": {"source": "task_cgroups", "note": note}}},
             "notes": [note]}  # fmt: skip
    run_dir = run_folder(tmp_path, audit)
    assert outcome_warnings(run_dir) == []  # a shared machine does not change the run's state (nor exit status 3)
    status = {"run_id": "r1", "state": "succeeded", "phases": {}}
    (run_dir / "status.json").write_text(json.dumps(status))
    assert write_results(run_dir)["contention"] == [note]
    lines = summarize(run_dir, status, {})
    assert f"  contention: {note}" in lines and lines[0] == "run r1: succeeded"
    assert not [line for line in lines if line.startswith("  warning:")]


def test_a_trace_parsed_before_contention_was_measured_has_no_contention_line(tmp_path):
    from tracekit.experiment.results import headline, summary_lines

    run_dir = run_folder(tmp_path, WHOLE)  # no contention section
    assert headline(run_dir)["contention"] == [] and not [line for line in summary_lines(headline(run_dir))
                                                           if "contention" in line]  # fmt: skip
