"""tracekit.workloads: the registry of kinds, their schema parts, and the command kind's planner."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from tracekit import workloads
from tracekit.errors import ExperimentError
from tracekit.experiment.spec import check_here, load_experiment
from tracekit.taskspec import fill_in, render
from tracekit.workloads import PlanContext, tasks_of
from tracekit.workloads.base import WorkloadKind

REPO = Path(__file__).resolve().parents[2]
CONTEXT = PlanContext("r1")
HERE = {"files": "/node/files", "outputs": "/node/outputs"}  # a worker's folders


def experiment(tmp_path: Path, command: str, *overrides: str):
    """An experiment with ``workload: {command: <command>}`` (YAML flow text)."""
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: c\nworkload:\n  command: {command}\n")
    return load_experiment(path, list(overrides))


def planned(tmp_path: Path, command: str, *overrides: str):
    spec = experiment(tmp_path, command, *overrides)
    return workloads.kind("command").tasks(spec.workload, CONTEXT)


def problem(tmp_path: Path, command: str, *overrides: str) -> str:
    with pytest.raises(ExperimentError) as caught:
        experiment(tmp_path, command, *overrides)
    return str(caught.value).split(": ", 1)[1]  # without the file's name


# -- the seam -------------------------------------------------------------------------------------


def test_every_module_is_a_kind_and_the_schema_holds_each_part():
    assert list(workloads.kinds()) == ["command", "ffmpeg", "http"]
    schema = workloads.experiment_schema()["properties"]["workload"]["properties"]
    assert set(schema) == {"command", "ffmpeg", "http"}
    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)  # parts are inlined
    with pytest.raises(ExperimentError, match="unknown workload kind 'gpu': use one of command, ffmpeg, http"):
        workloads.kind("gpu")


def test_a_new_kind_is_one_module(monkeypatch, tmp_path):
    # A module of tracekit.workloads with KIND and a schema part: the registry, the experiment schema and
    # the dispatcher's planning find it, with no edit elsewhere.
    from tracekit.taskspec import TaskSpec

    class Sleep(WorkloadKind):
        name = "sleepy"
        describes = "sleeps"
        has_tasks = True

        def schema(self):
            return {"type": "object", "additionalProperties": False,
                    "properties": {"seconds": {"type": "integer", "minimum": 0, "maximum": 9, "default": 1}}}  # fmt: skip

        def spec(self, section):
            return section["seconds"]

        def tasks(self, spec, context):
            return [TaskSpec("s0", ("sleep", str(spec)), "sleep")]

    module = types.ModuleType("tracekit.workloads.sleepy")
    module.KIND = Sleep()
    monkeypatch.setitem(sys.modules, "tracekit.workloads.sleepy", module)
    found = [info for info in __import__("pkgutil").iter_modules(workloads.__path__)]
    monkeypatch.setattr(workloads.pkgutil, "iter_modules",
                        lambda _path: [*found, types.SimpleNamespace(name="sleepy")])  # fmt: skip
    from tracekit.experiment import validate

    def forget() -> None:  # the caches of the kinds and of the schema made of them
        for cached in (workloads.kinds, workloads.experiment_schema, validate._validator):
            cached.cache_clear()

    forget()
    try:
        path = tmp_path / "exp.yaml"
        path.write_text("name: s\nworkload:\n  sleepy: {seconds: 3}\n")
        assert load_experiment(path).workload == 3
        path.write_text("name: s\nworkload:\n  sleepy: {seconds: 30}\n")
        with pytest.raises(ExperimentError, match="workload.sleepy.seconds: 30 is out of range"):
            load_experiment(path)
        assert tasks_of({"kind": "sleepy", "section": {}}, CONTEXT, "w")[0].argv == ("sleep", "1")
    finally:
        forget()


def test_a_module_without_its_kind_is_refused(monkeypatch):
    module = types.ModuleType("tracekit.workloads.broken")
    monkeypatch.setitem(sys.modules, "tracekit.workloads.broken", module)
    monkeypatch.setattr(workloads.pkgutil, "iter_modules", lambda _path: [types.SimpleNamespace(name="broken")])
    workloads.kinds.cache_clear()
    try:
        with pytest.raises(TypeError, match="tracekit.workloads.broken must define KIND"):
            workloads.kinds()
    finally:
        workloads.kinds.cache_clear()


def test_a_workload_file_gets_the_experiment_checks(tmp_path):
    section = {"argv": ["echo", "{n}"], "params": {"n": [1, 2]}, "files": None}  # null: as absent
    assert [t.argv for t in tasks_of({"kind": "command", "section": section}, CONTEXT, "w.json")] == [
        ("echo", "1"), ("echo", "2")]
    with pytest.raises(ExperimentError, match=r"^w.json: workload.command.argv: 3 is not a list"):
        tasks_of({"kind": "command", "section": {"argv": 3}}, CONTEXT, "w.json")
    with pytest.raises(ExperimentError, match=r"^w.json: workload.command.argv\[1\]: unknown placeholder \{m\}"):
        tasks_of({"kind": "command", "section": {"argv": ["echo", "{m}"]}}, CONTEXT, "w.json")
    with pytest.raises(ExperimentError, match="a workload is a JSON object"):
        tasks_of(["command"], CONTEXT, "w.json")


def test_no_kind_or_two_kinds_name_the_kinds(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\nworkload: {}\n")
    with pytest.raises(ExperimentError, match="workload: give exactly one kind: 'command' .batch tasks"):
        load_experiment(path)


# -- the command kind: planning -------------------------------------------------------------------


def test_one_task_per_combination_times_count_in_name_order(tmp_path):
    tasks = planned(tmp_path, '{argv: [burn, "--ms={ms}", "{threads}", "{index}/{repeat}/{task_id}"], '
                              'params: {threads: [1, 2], ms: [10, 20]}, count: 2}')  # fmt: skip
    assert [t.task_id for t in tasks] == [f"t{i:05d}" for i in range(8)]
    # ms (the first name) varies slowest, then threads, then the repeat.
    assert [t.argv for t in tasks[:3]] == [("burn", "--ms=10", "1", "0/0/t00000"), ("burn", "--ms=10", "1", "1/1/t00001"),
                                           ("burn", "--ms=10", "2", "2/0/t00002")]  # fmt: skip
    assert dict(tasks[7].params) == {"ms": 20, "threads": 2, "repeat": 1}
    assert {t.module for t in tasks} == {"command"} and {t.profile for t in tasks} == {
        'burn --ms={ms} {threads} {index}/{repeat}/{task_id}'}  # the argv template
    assert all(t.size == 1 and t.unit_ms == 1000 for t in tasks)  # no expect_ms: duration-online learns
    assert workloads.kind("command").task_count(experiment(tmp_path, "{argv: [x, '{a}'], params: {a: [1, 2, 3]}, count: 4}").workload) == 12


def test_shuffled_is_the_same_tasks_in_a_seeded_order(tmp_path):
    command = "{argv: [echo, '{n}'], params: {n: [1, 2, 3, 4, 5, 6, 7, 8]}, order: shuffled, seed: 3}"
    given = planned(tmp_path, "{argv: [echo, '{n}'], params: {n: [1, 2, 3, 4, 5, 6, 7, 8]}}")
    shuffled = planned(tmp_path, command)
    assert shuffled == planned(tmp_path, command)  # the same seed, the same order
    assert [t.task_id for t in shuffled] != [t.task_id for t in given]
    assert sorted(shuffled, key=lambda t: t.task_id) == given  # ids go with their task
    assert [t.task_id for t in planned(tmp_path, command, "workload.command.seed=4")] != [t.task_id for t in shuffled]


def test_values_reach_the_task_as_literal_bytes_of_one_argument(tmp_path):
    values = ["{{ lookup('pipe', 'id') }}", "$(touch /tmp/x)", "a'b\"c", "two words", "line\nbreak", "{n}", "-rf /"]
    section = {"argv": ["printf", "[%s]", "{v}"], "params": {"v": values}, "env": {"V": "{v}"}}
    tasks = tasks_of({"kind": "command", "section": section}, CONTEXT, "w")
    assert [t.argv[2] for t in tasks] == values  # one element each, never split, never read again
    assert [dict(t.env)["V"] for t in tasks] == values
    # Braces in the template: {{ }} are literal, braces around anything but a name stay.
    [task] = planned(tmp_path, "{argv: [awk, '{print $1}', '{{n}}', '{{{n}}}'], params: {n: [7]}}")
    assert task.argv == ("awk", "{print $1}", "{n}", "{7}")


def test_worker_folders_are_filled_in_on_the_node(tmp_path):
    (tmp_path / "batch").mkdir()
    [task] = planned(tmp_path, "{files: batch, argv: [run, '{files}/a', '--out={outputs}/{task_id}.txt'], "
                               "env: {D: '{files}'}}")  # fmt: skip
    assert [fill_in(arg, HERE) for arg in task.argv] == ["run", "/node/files/a", "--out=/node/outputs/t00000.txt"]
    assert fill_in(task.cwd, HERE) == "/node/outputs"  # the default working folder
    assert fill_in(dict(task.env)["D"], HERE) == "/node/files"


def test_expect_ms_profile_timeout_and_cwd(tmp_path):
    tasks = planned(tmp_path, "{argv: [burn, '{ms}'], params: {ms: [100, 250.5]}, expect_ms: '{ms}', profile: 'p{ms}', "
                              "timeout: 1m30s, cwd: /tmp}")  # fmt: skip
    assert [(t.size, t.unit_ms, t.expected_ms, t.profile) for t in tasks] == [(100, 1, 100, "p100"), (250.5, 1, 250.5, "p250.5")]
    assert {t.timeout_s for t in tasks} == {90.0} and {t.cwd for t in tasks} == {"/tmp"}
    [task] = planned(tmp_path, "{argv: [x], expect_ms: 800, timeout: 2.5}")
    assert (task.expected_ms, task.timeout_s) == (800, 2.5)


def test_explicit_tasks(tmp_path):
    tasks = planned(tmp_path, "{tasks: [{argv: [a, '{task_id}'], expect_ms: 5, env: {X: '1'}}, {argv: [b], expect_ms: 9, "
                              "timeout: 3s, profile: slow}]}")  # fmt: skip
    assert [(t.task_id, t.argv, t.expected_ms, t.env, t.timeout_s, t.profile) for t in tasks] == [
        ("t00000", ("a", "t00000"), 5, (("X", "1"),), None, "a {task_id}"), ("t00001", ("b",), 9, (), 3.0, "slow")]


@pytest.mark.parametrize(("command", "message"), [
    ("{argv: [echo, '{nope}'], params: {n: [1]}}",
     "workload.command.argv[1]: unknown placeholder {nope}; known here: {n}, {task_id}, {index}, {repeat}, {outputs}, {files}"),
    ("{argv: [echo], params: {n: []}}", "workload.command.params.n: 0 items; give 1 to 10000"),
    ("{argv: [echo], env: {A: '{x}'}}", "workload.command.env.A: unknown placeholder {x}"),
    ("{argv: [echo], profile: '{x}'}", "workload.command.profile: unknown placeholder {x}"),
    ("{argv: [echo, '{files}/x']}", "workload.command: uses {files}, but workload.command.files names no folder"),
    ("{argv: [echo], setup: [make, '{n}'], params: {n: [1]}}", "workload.command.setup[1]: unknown placeholder {n}; known here: {outputs}, {files}"),
    ("{argv: [echo, '{n}'], params: {n: [a, 5]}, expect_ms: '{n}'}",
     "workload.command.expect_ms: '{n}' gives 'a' for task t00000: not a number of milliseconds"),
    ("{argv: [echo], timeout: soon}", "workload.command.timeout 'soon' is not a duration"),
    ("{argv: [echo], timeout: 200h}", "workload.command.timeout: '200h' is out of range"),
    ("{argv: [echo], cwd: here}", "workload.command.cwd: 'here' is relative"),
    ("{argv: [echo], params: {a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}, count: 1001}",
     "workload.command: 100,100 tasks (params' combinations times count); at most 100,000"),
    ("{tasks: [{argv: [a], expect_ms: 5}, {argv: [b]}]}", "expect_ms is on some tasks only"),
    ("{tasks: [{argv: [a]}], argv: [b]}", "workload.command: give either argv (with params, count) or tasks"),
    ("{argv: [echo], param: {n: [1]}}", "workload.command.param: unknown key (did you mean 'params'?)"),
    ("{argv: [echo, \"a\\0b\"]}", "workload.command.argv: a value holds a NUL byte"),
])  # fmt: skip
def test_bad_input_is_one_line_naming_the_field(tmp_path, command, message):
    assert message in problem(tmp_path, command)


def test_files_and_requirements_must_be_here(tmp_path):
    from tracekit.experiment.render import read_inventory

    inventory = read_inventory(REPO / "inventory" / "local.yml")
    spec = experiment(tmp_path, "{files: /nonexistent/batch, argv: ['{files}/x']}")
    with pytest.raises(ExperimentError, match="workload.command.files: /nonexistent/batch is not a folder on this machine"):
        check_here(spec, inventory)
    spec = experiment(tmp_path, "{requirements: reqs.txt, argv: [x]}")
    with pytest.raises(ExperimentError, match=f"workload.command.requirements: {tmp_path}/reqs.txt is not a file"):
        check_here(spec, inventory)  # relative: to the experiment's folder (here no repository holds it)
    (tmp_path / "reqs.txt").write_text("")
    check_here(spec, inventory)


def test_relative_paths_are_the_projects(tmp_path):
    from tracekit.workloads.base import project_path

    assert project_path("examples/batch", str(REPO / "experiments" / "command.yaml")) == REPO / "examples" / "batch"
    (tmp_path / "proj" / ".git").mkdir(parents=True)
    (tmp_path / "proj" / "exp").mkdir()
    assert project_path("batch", str(tmp_path / "proj" / "exp" / "x.yaml")) == tmp_path / "proj" / "batch"
    assert project_path("/abs", "anything.yaml") == Path("/abs")


def test_the_committed_command_experiments_plan(tmp_path):
    for name, count in (("command", 12), ("compress", 20)):
        spec = load_experiment(REPO / "experiments" / f"{name}.yaml")
        tasks = workloads.kind("command").tasks(spec.workload, CONTEXT)
        assert len(tasks) == count == workloads.kind("command").task_count(spec.workload)
        needs = workloads.kind("command").node_needs(spec.workload, spec.source)
        assert needs.files == REPO / "examples" / "batch" and needs.setup


def test_render_is_plain_text_replacement():
    assert render("{a}{b}", {"a": "{b}", "b": "x"}, "w") == "{b}x"  # a value is never read again
    with pytest.raises(ExperimentError, match="w: unknown placeholder {c}; known here: {a}"):
        render("{c}", {"a": ""}, "w")


# -- the http kind: a command service, requirements -----------------------------------------------


def http_experiment(tmp_path: Path, service: str, *more: str):
    path = tmp_path / "h.yaml"
    path.write_text("name: h\nworkload:\n  http:\n    load: {rate: 20, duration: 5s}\n    service: " + service + "\n"
                    + "".join(f"    {line}\n" for line in more))  # fmt: skip
    return load_experiment(path)


def test_an_http_service_may_be_any_command(tmp_path):
    from tracekit.experiment.render import extravars, read_inventory
    from tracekit.workloads.http import CommandService

    (tmp_path / "svc").mkdir()
    spec = http_experiment(tmp_path, "{command: [python3, '{files}/app.py', '{port}'], files: svc, port: 9100, health: /health}")
    assert spec.workload.service == CommandService(("python3", "{files}/app.py", "{port}"), "svc", 9100, "/health", None, "combined")
    inventory = read_inventory(REPO / "inventory" / "local.yml")
    check_here(spec, inventory)
    kind = extravars(spec, "r1", tmp_path / "run", tmp_path / "w", tmp_path / "s", "python3", inventory, REPO)["tracekit_run_kind"]
    assert kind["command"] == ["python3", "{files}/app.py", "{port}"] and kind["health"] == "/health"
    assert kind["service_src"] == str(tmp_path / "svc") and kind["service_dir_name"] == "svc"
    assert [n["port"] for n in kind["nodes"].values()] == [9100, 9101]  # its port, counting up
    assert workloads.kind("http").node_needs(spec.workload, spec.source).requirements is None


@pytest.mark.parametrize(("service", "more", "message"), [
    ("{files: x}", (), "workload.http.service.command: missing; it is required"),
    ("{command: []}", (), "workload.http.service.command: 0 items"),
    ("{command: [x], health: health}", (), "workload.http.service.health: 'health' is not a path such as /health"),
    ("{command: [x]}", ("on: [cloud1, cloud2]", "chain: true"), "a command service has none"),
    ("{command: [x], helth: /}", (), "workload.http.service.helth: unknown key (did you mean 'health'?)"),
])  # fmt: skip
def test_a_command_service_s_bad_input(tmp_path, service, more, message):
    with pytest.raises(ExperimentError, match=__import__("re").escape(message)):
        http_experiment(tmp_path, service, *more)


def test_a_command_service_s_placeholders_and_folders_are_checked_here(tmp_path):
    from tracekit.experiment.render import read_inventory

    inventory = read_inventory(REPO / "inventory" / "local.yml")
    with pytest.raises(ExperimentError, match=r"workload.http.service.command\[1\]: unknown placeholder \{prot\}"):
        check_here(http_experiment(tmp_path, "{command: [server, '{prot}']}"), inventory)
    with pytest.raises(ExperimentError, match="workload.http.service.files: .*/nope is not a folder on this machine"):
        check_here(http_experiment(tmp_path, "{command: [server], files: nope}"), inventory)
    with pytest.raises(ExperimentError, match="workload.http.requirements: .*/reqs.txt is not a file on this machine"):
        check_here(http_experiment(tmp_path, "examples/fastapi_svc", "requirements: reqs.txt"), inventory)


def test_requirements_go_beside_tracekit_for_an_asgi_app_only(tmp_path):
    (tmp_path / "reqs.txt").write_text("")
    asgi = http_experiment(tmp_path, "examples/fastapi_svc", f"requirements: {tmp_path / 'reqs.txt'}")
    command = http_experiment(tmp_path, "{command: [server]}", f"requirements: {tmp_path / 'reqs.txt'}")
    needs = [workloads.kind("http").node_needs(s.workload, s.source) for s in (asgi, command)]
    assert [(n.requirements, n.with_tracekit) for n in needs] == [(tmp_path / "reqs.txt", True), (tmp_path / "reqs.txt", False)]
