"""A sweep's expansion: matrix, zip, both, repeat, the shuffled order with a seed, and the bad input
that is refused before anything runs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tracekit.errors import ExperimentError
from tracekit.experiment.spec import load_experiment
from tracekit.sweep.points import Point, plan_sweep, point_values, run_order, with_command_line

SMOKE = "experiments/smoke.yaml"


def test_the_matrix_is_every_combination_with_the_first_key_slowest():
    values = point_values({"a": [1, 2], "b": ["x", "y", "z"]}, {})
    assert values == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
                      {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]  # fmt: skip


def test_zip_takes_its_lists_element_wise_and_multiplies_the_matrix():
    assert point_values({}, {"rate": [50, 100], "duration": ["20s", "10s"]}) == [
        {"rate": 50, "duration": "20s"}, {"rate": 100, "duration": "10s"}]  # fmt: skip
    both = point_values({"policy": ["lpt", "rr"]}, {"rate": [50, 100], "duration": ["20s", "10s"]})
    assert both == [{"policy": "lpt", "rate": 50, "duration": "20s"}, {"policy": "lpt", "rate": 100, "duration": "10s"},
                    {"policy": "rr", "rate": 50, "duration": "20s"}, {"policy": "rr", "rate": 100, "duration": "10s"}]  # fmt: skip


def test_runs_go_in_rounds_of_every_point_once():
    assert run_order(3, 2, "given", 0) == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]
    shuffled = run_order(5, 3, "shuffled", 7)
    for repetition in (1, 2, 3):  # each round holds every point once
        assert sorted(p for p, r in shuffled if r == repetition) == list(range(5))
    assert shuffled == run_order(5, 3, "shuffled", 7)  # the seed makes it the same order every time
    assert shuffled != run_order(5, 3, "shuffled", 8)
    expected = random.Random(7)
    first_round = list(range(5))
    expected.shuffle(first_round)
    assert [p for p, r in shuffled if r == 1] == first_round


def test_a_point_names_its_values_and_makes_its_experiment_from_overrides():
    point = Point(3, {"dispatch.policy": "round-robin", "collectors.interval_ms": 200, "workload.http.load.duration": "20s"})
    assert point.label == "dispatch.policy=round-robin,collectors.interval_ms=200,workload.http.load.duration=20s"
    assert point.run_id(2) == "3-policy-round-robin_interval_ms-200_duration-20s-r2"
    assert point.overrides == ["sweep=null", 'dispatch.policy="round-robin"', "collectors.interval_ms=200",
                               'workload.http.load.duration="20s"']  # fmt: skip


def test_plan_loads_every_point_and_orders_its_runs(tmp_path):
    sweep = with_command_line(None, ["dispatch.policy=[lpt, round-robin]", "collectors.interval_ms=[200, 1000]"], [], 3)
    plan, experiments = plan_sweep(SMOKE, [], sweep)
    assert len(plan.points) == 4 and len(plan.runs) == 12 and plan.order == "shuffled"
    assert [(e.dispatch.policy, e.collectors.interval_ms) for e in experiments] == [
        ("lpt", 200), ("lpt", 1000), ("round-robin", 200), ("round-robin", 1000)]  # fmt: skip
    assert all(e.sweep is None for e in experiments)  # a point is one run
    assert len({run.run_id for run in plan.runs}) == 12


def test_the_sweep_section_of_a_file_is_read_with_its_defaults(tmp_path):
    path = tmp_path / "swept.yaml"
    path.write_text(open(SMOKE).read() + "sweep:\n  matrix:\n    dispatch.policy: [lpt, round-robin]\n  repeat: 2\n")
    experiment = load_experiment(path)
    assert experiment.sweep == {"matrix": {"dispatch.policy": ["lpt", "round-robin"]}, "repeat": 2, "order": "shuffled", "seed": 0}
    assert "sweep" not in load_experiment(path, ["sweep=null"]).as_dict()
    plan, _ = plan_sweep(path, [], with_command_line(experiment.sweep, [], [], None))
    assert [p.values for p in plan.points] == [{"dispatch.policy": "lpt"}, {"dispatch.policy": "round-robin"}]


@pytest.mark.parametrize(
    ("matrix", "zipped", "expected"),
    [
        (["dispatch.polcy=[lpt]"], [], "sweep point 0 (dispatch.polcy=lpt): dispatch.polcy: unknown key (did you mean 'policy'?)"),
        (["workers.parallel=[1, 0]"], [], "sweep point 1 (workers.parallel=0): workers.parallel: 0 is out of range"),
        ([], ["dispatch.policy=[lpt]", "workers.parallel=[1, 2]"], "sweep.zip: the lists have different lengths"),
        (["dispatch.policy=[lpt]"], ["dispatch.policy=[lpt]"], "dispatch.policy is in both matrix and zip"),
        (["name=[a, b]"], [], "'name' cannot be swept"),
        (["sweep.repeat=[1, 2]"], [], "'sweep.repeat' cannot be swept"),
    ],
)
def test_a_bad_sweep_is_one_line_naming_the_point_or_the_key_before_anything_runs(matrix, zipped, expected):
    with pytest.raises(ExperimentError) as error:
        plan_sweep(SMOKE, [], with_command_line(None, matrix, zipped, None))
    assert expected in str(error.value) and str(error.value).startswith(f"{SMOKE}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("matrix", "repeat", "expected"),
    [(["workers.parallel=[]"], None, "give at least one value"), (["workers.parallel=3"], None, "give the values as a list"),
     ([], 0, "--repeat 0: give the runs per point, 1 or more")],
)  # fmt: skip
def test_the_command_line_sweep_flags_refuse_what_sweeps_nothing(matrix, repeat, expected):
    with pytest.raises(ExperimentError, match=expected):
        with_command_line(None, matrix, [], repeat)


def test_a_file_sweep_with_repeat_zero_or_an_empty_list_is_refused_by_the_schema(tmp_path):
    path = tmp_path / "swept.yaml"
    for section, expected in (("  repeat: 0\n", "sweep.repeat"), ("  matrix:\n    dispatch.policy: []\n", "sweep.matrix")):
        path.write_text(open(SMOKE).read() + "sweep:\n" + section)
        with pytest.raises(ExperimentError, match=expected):
            load_experiment(path)


def test_points_that_differ_only_in_what_prepare_does_not_read_share_one_preparation():
    from tracekit.sweep.run import preparation

    def prepared(path: str, *overrides: str) -> str:
        return preparation(load_experiment(path, ["sweep=null", *overrides]))

    assert prepared(SMOKE, "dispatch.policy=lpt") == prepared(SMOKE, "dispatch.policy=round-robin")
    assert prepared(SMOKE, "collectors.interval_ms=1000") == prepared(SMOKE)
    assert prepared(SMOKE, "workload.ffmpeg.generate.count=3") != prepared(SMOKE)  # other clips to make
    http = "experiments/http-rates.yaml"
    assert prepared(http, "workload.http.load.rate=400") == prepared(http, "workload.http.load.rate=50")
    assert prepared(http, "workload.http.service=examples/batch") != prepared(http)  # another service to copy
    command = "experiments/command.yaml"
    assert prepared(command, "workload.command.params.ms=[40]") == prepared(command)
    assert prepared(command, "workload.command.files=examples") != prepared(command)  # other files to copy


def test_sweep_json_keeps_the_axes_in_the_order_given(tmp_path):
    """The first swept key is the plots' x axis: workload.http.load.rate before .duration, as written, not
    the alphabet's order (the http-rates example's page was drawn against the durations)."""
    import json

    from tracekit.sweep.run import SWEEP_FILE, _create

    sweep = with_command_line(None, [], ["workload.http.load.rate=[50, 100]", 'workload.http.load.duration=["20s", "10s"]'], None)
    plan, _ = plan_sweep("experiments/http-rates.yaml", [], sweep)
    _create(tmp_path / "s1", Path("experiments/http-rates.yaml"), [], sweep, plan, None)
    record = json.loads((tmp_path / "s1" / SWEEP_FILE).read_text())
    assert list(record["axes"]) == ["workload.http.load.rate", "workload.http.load.duration"]
    assert list(record["points"][0]["values"]) == ["workload.http.load.rate", "workload.http.load.duration"]
