"""tracekit.sweep.grouping: which runs are repetitions of which point."""

from __future__ import annotations

import json

import pytest

from tests.run_folders import EXPERIMENT, make_run_folder, make_sweep_folder
from tracekit.errors import UsageError
from tracekit.sweep.grouping import comparison_of, flatten_experiment, group_runs, read_sweep


def test_a_resolved_experiment_flattens_to_the_keys_e_takes():
    flat = flatten_experiment({**EXPERIMENT, "workload": {"load": {"rate": 50}, "params": {"ms": [40, 80]}},
                               "kind": "http", "tags": {}})  # fmt: skip
    assert flat["workload.http.load.rate"] == 50
    assert flat["workload.http.params.ms"] == [40, 80]  # a list is one value
    assert flat["dispatch.policy"] == "round-robin" and flat["collectors.interval_ms"] == 1000
    assert flat["tags"] == {}  # an empty mapping is a value too
    assert "source" not in flat and "description" not in flat  # where the file was read from, its prose


def test_runs_are_grouped_by_the_values_that_differ(tmp_path):
    values = [{"dispatch.policy": "lpt", "workload.command.count": 20},
              {"dispatch.policy": "round-robin", "workload.command.count": 5},
              {"dispatch.policy": "lpt", "workload.command.count": 20},
              {"dispatch.policy": "lpt", "workload.command.count": 5}]  # fmt: skip
    runs = [make_run_folder(tmp_path / f"r{i}", values=v, state="failed" if i == 2 else "succeeded")
            for i, v in enumerate(values)]  # fmt: skip
    comparison = group_runs([(run, None) for run in runs])
    # Both keys differ; the numeric one first (the plots' x axis); the rest (policy, name, ...) are equal.
    assert comparison.axes == ("workload.command.count", "dispatch.policy")
    assert [p.label for p in comparison.points] == [
        "workload.command.count=5,dispatch.policy=lpt", "workload.command.count=5,dispatch.policy=round-robin",
        "workload.command.count=20,dispatch.policy=lpt"]  # fmt: skip
    repeated = comparison.points[2]
    assert [(r.folder.name, r.repetition, r.state) for r in repeated.runs] == [("r0", 1, "succeeded"), ("r2", 2, "failed")]
    assert repeated.values == {"workload.command.count": 20, "dispatch.policy": "lpt"}
    assert [r.run_id for r in repeated.counted()] == ["r0"] and [r.run_id for r in repeated.failed()] == ["r2"]


def test_runs_that_do_not_differ_are_one_point(tmp_path):
    runs = [make_run_folder(tmp_path / f"r{i}") for i in range(3)]
    comparison = group_runs([(run, None) for run in runs])
    assert comparison.axes == () and len(comparison.points) == 1
    assert comparison.points[0].label == "all runs" and len(comparison.points[0].runs) == 3


def test_a_sweep_is_read_from_its_sweep_json_and_a_run_recorded_twice_counts_as_last_said(tmp_path):
    sweep = make_sweep_folder(tmp_path / "s", {"dispatch.policy": ["lpt", "round-robin"]}, 2, lambda v, r: {},
                              states={(0, 2): "interrupted"})  # fmt: skip
    record = json.loads((sweep / "sweep.json").read_text())
    resumed = {**record["runs"][1], "state": "succeeded"}  # the interrupted run, done again by --resume
    record["runs"].append(resumed)
    (sweep / "sweep.json").write_text(json.dumps(record))
    comparison = read_sweep(sweep)
    assert comparison.axes == ("dispatch.policy",) and comparison.sweep_dir == sweep
    assert [p.label for p in comparison.points] == ["dispatch.policy=lpt", "dispatch.policy=round-robin"]
    assert [(r.repetition, r.state) for r in comparison.points[0].runs] == [(1, "succeeded"), (2, "succeeded")]
    assert comparison.points[0].runs[0].folder == sweep / "points" / "0-dispatch.policy=lpt-r1"
    assert comparison_of([sweep]) == comparison


def test_a_sweep_and_run_folders_together_are_grouped_by_values(tmp_path):
    sweep = make_sweep_folder(tmp_path / "s", {"dispatch.policy": ["lpt", "round-robin"]}, 1, lambda v, r: {},
                              states={(1, 1): "pending"})  # fmt: skip
    extra = make_run_folder(tmp_path / "by-hand", values={"dispatch.policy": "lpt"})
    comparison = comparison_of([sweep, extra])
    assert comparison.sweep_dir is None and comparison.axes == ()  # the pending run has no folder: all are lpt
    assert [r.folder.name for r in comparison.points[0].runs] == ["0-dispatch.policy=lpt-r1", "by-hand"]


def _empty_folder(path):
    path.mkdir()
    (path / "status.json").write_text("{}")  # a status alone is no run folder tracekit-run made
    return path


@pytest.mark.parametrize("make, expected", [
    (lambda root: root / "missing", "missing: no such folder; give run folders"),
    (_empty_folder, "other: not a run folder (no resolved.json) nor a sweep folder (no sweep.json)"),
    (lambda path: (path.write_text("{}"), path)[1], "other: not a folder; give run folders"),
])  # fmt: skip
def test_a_path_that_is_no_run_or_sweep_folder_is_one_line(tmp_path, make, expected):
    with pytest.raises(UsageError) as error:
        comparison_of([make_run_folder(tmp_path / "ok"), make(tmp_path / "other")])
    assert expected in str(error.value) and "\n" not in str(error.value) and error.value.exit_code == 2


def test_a_damaged_sweep_json_or_resolved_json_is_one_line(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text('{"axes": {}, "points": []}')
    with pytest.raises(UsageError, match=r"sweep.json: 'runs' is missing or not a list"):
        comparison_of([tmp_path / "s"])
    run = make_run_folder(tmp_path / "r")
    (run / "resolved.json").write_text("{not json")
    with pytest.raises(UsageError, match=r"resolved.json: no 'experiment' object in it"):
        comparison_of([run, make_run_folder(tmp_path / "r2")])
