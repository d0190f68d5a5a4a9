"""The runner's pure parts: resume order, inventory checks, secrets kept out, errors grouped, plain progress."""

from __future__ import annotations

import errno
import io
import json
import re
import stat
from pathlib import Path

import pytest
import yaml

from tracekit.errors import RunError, UsageError
from tracekit.experiment.progress import Progress
from tracekit.experiment.render import (
    InventoryError,
    inventory_without_secrets,
    play_phases,
    read_inventory,
)
from tracekit.experiment.attempts import phases_to_run
from tracekit.experiment.phases import describe_failure, join_errors
from tracekit.experiment.run_dir import RunDir, write_json
from tracekit.experiment.spec import load_experiment
from tracekit.workloads.ffmpeg import generated_name

PHASES = ["prepare", "start", "run", "stop", "fetch", "parse"]
PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def status(**states: str) -> dict:
    return {"phases": {p: {"state": states.get(p, "pending")} for p in PHASES}}


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({}, PHASES),
        ({"prepare": "succeeded", "start": "succeeded", "run": "interrupted", "stop": "succeeded", "fetch": "succeeded"},
         ["start", "run", "stop", "fetch", "parse"]),  # stop undid start: both again
        ({"prepare": "succeeded", "start": "failed"}, ["start", "run", "stop", "fetch", "parse"]),
        ({p: "succeeded" for p in PHASES[:5]} | {"parse": "failed"}, ["parse"]),
        ({p: "succeeded" for p in PHASES[:3]} | {"stop": "failed"}, ["stop", "fetch", "parse"]),
        ({p: "succeeded" for p in PHASES}, []),
    ],
)  # fmt: skip
def test_resume_starts_at_the_first_unfinished_phase(states, expected):
    assert phases_to_run(status(**states)) == expected


INVENTORIES = {
    "yaml": "all:\n  vars:\n    ansible_password: hunter2\n    become_pass: sesame\n    api_token: tok3n\n"
            "    tracekit_node_root: /srv\n  children:\n    controller:\n      hosts:\n        c0:\n"
            "    workers:\n      hosts:\n        w1:\n          ansible_host: 10.0.0.2\n",
    # The run folder's copy used to blank 'key: value' lines only: these kept their passwords.
    "ini": "[controller]\nc0 ansible_host=10.0.0.1 ansible_password=hunter2\n[workers]\nw1 ansible_host=10.0.0.2\n"
           "[all:vars]\ntracekit_node_root=/srv\nbecome_pass=sesame\napi_token=tok3n\n",
    "flow": "all: {vars: {ansible_password: hunter2, become_pass: sesame, api_token: tok3n, tracekit_node_root: /srv},"
            " children: {controller: {hosts: {c0: {}}}, workers: {hosts: {w1: {ansible_host: 10.0.0.2}}}}}\n",
}  # fmt: skip


@pytest.mark.parametrize("kind", INVENTORIES)
def test_inventory_copy_removes_password_like_values_in_any_format(tmp_path, kind):
    path = tmp_path / ("hosts.ini" if kind == "ini" else "inventory.yml")
    path.write_text(INVENTORIES[kind])
    copy = inventory_without_secrets(path)
    assert not {"hunter2", "sesame", "tok3n"} & set(re.findall(r"\w+", copy)), copy
    # The copy is an inventory of the same hosts, groups and (other) values.
    again = tmp_path / "copy.yml"
    again.write_text(copy)
    inventory = read_inventory(again)
    assert (inventory.controller, inventory.workers) == ("c0", ("w1",))
    assert inventory.hostvars["w1"]["ansible_host"] == "10.0.0.2"
    assert inventory.hostvars["c0"]["tracekit_node_root"] == "/srv"


def test_same_error_on_several_hosts_is_said_once():
    errors = [("cloud1", "unreachable: refused"), ("cloud2", "unreachable: refused"), ("cloud0", "Start: boom")]
    assert join_errors(errors) == "cloud1, cloud2: unreachable: refused; cloud0: Start: boom"


def write(tmp_path, document) -> object:
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_inventory_needs_one_controller_workers_and_node_roots(tmp_path):
    good = {"all": {"children": {"controller": {"hosts": {"c0": {"tracekit_node_root": "/a"}}},
                                 "workers": {"hosts": {"w1": {"tracekit_node_root": "/b"}}}}}}  # fmt: skip
    inventory = read_inventory(write(tmp_path, good))
    assert inventory.controller == "c0" and inventory.workers == ("w1",)
    assert inventory.redis_address() == ("127.0.0.1", 6379)
    no_workers = {"all": {"children": {"controller": {"hosts": {"c0": {"tracekit_node_root": "/a"}}}}}}
    with pytest.raises(InventoryError, match="group 'workers' holds no host"):
        read_inventory(write(tmp_path, no_workers))
    no_root = {"all": {"children": {"controller": {"hosts": {"c0": {}}}, "workers": {"hosts": {"w1": {}}}}}}
    with pytest.raises(InventoryError, match="host c0 has no tracekit_node_root"):
        read_inventory(write(tmp_path, no_root))
    with pytest.raises(InventoryError, match="no such inventory file"):
        read_inventory(tmp_path / "missing.yml")


def test_the_default_inventories_are_valid():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    local = read_inventory(repo / "inventory" / "local.yml")
    assert local.hosts == ("cloud0", "cloud1", "cloud2")
    assert all(v["ansible_connection"] == "local" for v in local.hostvars.values())
    assert len({v["tracekit_node_root"] for v in local.hostvars.values()}) == 3  # one root per node
    cluster = read_inventory(repo / "inventory" / "cluster.example.yml")
    assert cluster.hosts == ("cloud0", "cloud1", "cloud2")
    # The local nodes share this machine: their collectors keep to their own node, the workers to a CPU each.
    assert [local.scope(h) for h in local.hosts] == ["node"] * 3
    assert (local.cpus("cloud0"), local.cpus("cloud1"), local.cpus("cloud2")) == (None, (0,), (1,))
    # A cluster's nodes are machines of their own: nothing changes for them.
    assert [cluster.scope(h) for h in cluster.hosts] == ["machine"] * 3
    assert all(cluster.cpus(h) is None for h in cluster.hosts)


def hosts(**workers: dict) -> dict:
    return {"all": {"children": {"controller": {"hosts": {"c0": {"tracekit_node_root": "/a", "ansible_host": "10.0.0.1"}}},
                                 "workers": {"hosts": {n: {"tracekit_node_root": f"/{n}", **v} for n, v in workers.items()}}}}}  # fmt: skip


def test_nodes_on_one_machine_are_found_by_connection_and_loopback_address(tmp_path):
    inventory = read_inventory(write(tmp_path, hosts(
        w1={"ansible_connection": "local"}, w2={"ansible_host": "127.0.0.1", "ansible_port": 2201},
        w3={"ansible_host": "10.0.0.3"}, w4={"ansible_host": "10.0.0.3", "ansible_port": 2202},
        w5={"ansible_host": "10.0.0.5", "tracekit_node_scope": "node"})))  # fmt: skip
    assert inventory.sharing("w1") == ("w2",) and inventory.sharing("w3") == ("w4",)
    assert [inventory.scope(h) for h in inventory.hosts] == ["machine", "node", "node", "node", "node", "node"]
    assert extravars_scopes(inventory) == {"c0": "machine", "w1": "node", "w2": "node", "w3": "node", "w4": "node", "w5": "node"}


def extravars_scopes(inventory) -> dict:
    from tracekit.experiment.render import extravars

    experiment = load_experiment("experiments/smoke.yaml")
    values = extravars(experiment, "r1", Path("/r"), Path("/w"), Path("/s"), "python3", inventory)
    return values["tracekit_run_node_scopes"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"w1": {"tracekit_redis_port": "64x30"}}, "host w1: tracekit_redis_port '64x30' is not a TCP port"),
        ({"w1": {"tracekit_redis_port": 70000}}, "host w1: tracekit_redis_port 70000 is not a TCP port"),
        ({"w1": {"tracekit_node_cpus": "1-x"}}, "host w1: tracekit_node_cpus '1-x' is not a CPU list"),
        ({"w1": {"tracekit_node_scope": "rack"}}, "host w1: tracekit_node_scope 'rack' is not one of machine, node"),
        ({"w1": {"ansible_connection": "local", "tracekit_node_cpus": "0-1"},
          "w2": {"ansible_connection": "local", "tracekit_node_cpus": "1"}},
         "w1 and w2 share a machine and both have CPU 1 in tracekit_node_cpus"),
    ],
)  # fmt: skip
def test_bad_node_values_fail_before_any_node_is_touched(tmp_path, values, message):
    with pytest.raises(InventoryError, match=re.escape(message)):
        read_inventory(write(tmp_path, hosts(**values)))


def test_dry_run_says_which_nodes_share_a_machine():
    from tracekit.experiment.render import Plan

    repo = Path(__file__).resolve().parents[2]
    plan = Plan("r1", load_experiment("experiments/smoke.yaml"), read_inventory(repo / "inventory" / "local.yml"), ("run",))
    assert "nodes sharing a machine: cloud0, cloud1, cloud2; each collector follows its own node's processes; " \
           "CPUs: cloud0 any, cloud1 0, cloud2 1" in plan.lines()


def test_same_clips_same_folder(tmp_path):
    experiment = load_experiment("experiments/smoke.yaml")
    other_seed = load_experiment("experiments/smoke.yaml", ["workload.ffmpeg.generate.seed=9"])
    again = load_experiment("experiments/smoke.yaml")
    assert generated_name(experiment.workload.generate) == generated_name(again.workload.generate)
    assert generated_name(experiment.workload.generate) != generated_name(other_seed.workload.generate)


def test_plain_progress_prints_timestamped_lines():
    stream = io.StringIO()
    progress = Progress(tuple(PHASES), stream)
    progress.phase_started("run")
    progress.task_counts(1, 0, 4)
    progress.task_counts(1, 0, 4)  # no change, no line
    progress.host_event("cloud2", "Start the worker", "unreachable", "Connection refused")
    progress.phase_finished("run", "failed", "cloud2: unreachable")
    lines = stream.getvalue().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines)
    assert [line[9:] for line in lines][:2] == ["run: started", "  dispatch: 1/4 tasks (0 failed), " + lines[1].split(", ", 1)[1]]
    assert "  cloud2: unreachable: Start the worker: Connection refused" in [line[9:] for line in lines]
    assert lines[-1].endswith(": cloud2: unreachable") and "run: failed" in lines[-1]


def test_live_progress_redraws_and_prints_only_failures():
    from tracekit.experiment.progress import LiveProgress, make_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    assert isinstance(make_progress(tuple(PHASES), verbose=False, stream=stream), LiveProgress)
    assert not isinstance(make_progress(tuple(PHASES), verbose=True, stream=stream), LiveProgress)  # -v: plain lines
    with make_progress(tuple(PHASES), verbose=False, stream=stream) as progress:
        progress.phase_started("run")
        progress.task_counts(3, 1, 8)
        progress.host_event("cloud2", "Start the worker", "failed", "boom")
    text = stream.getvalue()
    assert "cloud2: failed: Start the worker: boom" in text  # a line above the display
    assert "run: started" not in text  # shown in the table instead
    assert "4/8 tasks (1 failed)" in text and "running" in text


def test_resume_refuses_a_changed_experiment_and_a_folder_that_is_no_run(tmp_path):
    from tracekit.errors import UsageError
    from tracekit.experiment.runner import RunError, run_experiment

    with pytest.raises(UsageError, match="continues the run as it was resolved"):
        run_experiment(resume="r1", overrides=["dispatch.policy=lpt"], logs_dir=tmp_path)
    (tmp_path / "r2").mkdir()
    with pytest.raises(RunError, match="no resolved.json, so not a tracekit-run folder"):
        run_experiment(resume="r2", logs_dir=tmp_path)


def test_experiment_playbook_imports_every_phase_in_order_under_its_tag():
    # tracekit-run runs experiment.yml in one call and follows the phases by their plays' names.
    imports = yaml.safe_load((PLAYBOOKS / "experiment.yml").read_text())
    assert [(i["ansible.builtin.import_playbook"], i["tags"]) for i in imports] == [(f"{p}.yml", [p]) for p in PHASES]
    phase_of = play_phases(PLAYBOOKS)
    assert sorted(set(phase_of.values()) - {"release", "clean"}, key=PHASES.index) == PHASES
    assert phase_of["Dispatch the tasks and wait for all of them"] == "run"
    assert phase_of["Free the nodes this run took"] == "release"  # playbooks/release.yml: not a phase


def test_a_play_name_in_two_phases_is_refused(tmp_path):
    from tracekit.errors import SetupError

    for phase in (*PHASES, "release"):
        (tmp_path / f"{phase}.yml").write_text(yaml.safe_dump([{"name": f"Play of {phase}", "hosts": "all"}]))
    (tmp_path / "stop.yml").write_text(yaml.safe_dump([{"name": "Play of start", "hosts": "all"}]))
    with pytest.raises(SetupError, match="'Play of start' is in both start.yml and stop.yml"):
        play_phases(tmp_path)


def failed(rc: int, stdout: str, stderr: str) -> dict:
    return {"event": "runner_on_failed", "event_data": {"res": {"rc": rc, "stdout": stdout, "stderr": stderr, "msg": "non-zero return code"}}}


def test_a_failed_step_is_described_by_its_own_error_line():
    # parse, export and verify run as one shell: verify's error, not parse's first stdout line, is the message.
    chained = failed(1, "parsed 3 nodes\nexported 2 tasks\ntask t1: cpu mismatch",
                     "tracekit verify: error: 1 violations in /r/opendc (first: task t1: cpu mismatch)")
    assert describe_failure(chained) == "tracekit verify: error: 1 violations in /r/opendc (first: task t1: cpu mismatch)"
    # No error line (the dispatcher's log and summary): the last log line and the first summary line.
    dispatcher = failed(1, "0/2 tasks done, 0 failed, 2 timed out; makespan 0.1 s\n  cloud1: ...", "INFO dispatching 2 tasks\nWARNING gave up")
    assert describe_failure(dispatcher) == "WARNING gave up (first: 0/2 tasks done, 0 failed, 2 timed out; makespan 0.1 s)"


def test_a_long_error_keeps_what_to_do_at_its_end():
    # A lock error names two long paths before what to do; it was cut at 400 characters, mid-word in its advice.
    folder = "/tmp/" + "x" * 500
    message = (f"tracekit lock: error: {folder}/nodes/cloud0 is in use by run killed (run folder {folder}/logs/killed):"
               " wait for it with tracekit-run --wait SECONDS, or free its nodes with tracekit-run --stop killed")
    described = describe_failure(failed(1, "", message))
    assert described.startswith("tracekit lock: error: /tmp/xxx") and described.endswith("tracekit-run --stop killed")
    assert " … " in described and len(described) <= 1000
    assert describe_failure(failed(1, "", "short\n  error:  one   line ")) == "error: one line"


def test_ansible_gets_no_password_like_variable_of_this_process(monkeypatch):
    from tracekit.experiment.phases import job_environment

    monkeypatch.setenv("REDIS_PASSWORD", "p")
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    monkeypatch.setenv("ANSIBLE_BECOME_PASS", "b")
    monkeypatch.setenv("ANSIBLE_CONFIG", "/etc/ansible.cfg")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    monkeypatch.setenv("ANSIBLE_KEEP_REMOTE_FILES", "1")  # kept module files would hold secrets given on stdin
    import os

    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "awx_display", "PATH": "/venv/bin:/usr/bin"}  # set by the runner
    kept = job_environment(env)
    assert not {"REDIS_PASSWORD", "GITHUB_TOKEN", "ANSIBLE_BECOME_PASS", "ANSIBLE_KEEP_REMOTE_FILES"} & set(kept)
    assert kept["ANSIBLE_CONFIG"] == "/etc/ansible.cfg" and kept["LC_ALL"] == "C.UTF-8"
    assert kept["https_proxy"] == "http://proxy:3128"
    assert kept["ANSIBLE_STDOUT_CALLBACK"] == "awx_display" and kept["PATH"] == "/venv/bin:/usr/bin"


def test_the_resume_hint_names_the_logs_dir_and_inventory_the_run_used(tmp_path, monkeypatch):
    import json

    from tracekit.experiment.runner import summarize

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRACEKIT_LOGS_DIR", raising=False)
    status = {"run_id": "r1", "state": "failed", "phases": {}}
    for logs, inventory, expected in (
        (tmp_path / "elsewhere", tmp_path / "my inventory.yml",
         f"tracekit-run --resume r1 --logs-dir {tmp_path / 'elsewhere'} -i '{tmp_path / 'my inventory.yml'}'"),
        (tmp_path / "logs", Path(__file__).resolve().parents[2] / "inventory" / "local.yml", "tracekit-run --resume r1"),
    ):  # fmt: skip
        run_dir = logs / "r1"
        run_dir.mkdir(parents=True)
        (run_dir / "resolved.json").write_text(json.dumps({"inventory_path": str(inventory)}))
        assert f"  resume with: {expected}" in summarize(run_dir, status, {})


def test_http_services_ports_next_hops_and_targets(tmp_path):
    from tracekit.experiment.render import InventoryError, extravars

    repo = Path(__file__).resolve().parents[2]
    inventory = read_inventory(write(tmp_path, hosts(w1={"ansible_connection": "local"},
                                                     w2={"ansible_host": "10.0.0.2", "tracekit_http_port": 9000})))  # fmt: skip

    def services(*overrides: str) -> dict:
        experiment = load_experiment(repo / "experiments" / "http.yaml", list(overrides))
        return extravars(experiment, "r1", Path("/r"), Path("/w"), Path("/s"), "python3", inventory)["tracekit_run_kind"]

    spread = services()
    assert spread["nodes"]["w1"]["url"] == "http://127.0.0.1:8080/work?cpu_ms=4&sleep_ms=2"
    assert spread["nodes"]["w2"]["url"] == "http://10.0.0.2:9000/work?cpu_ms=4&sleep_ms=2"  # its own address and port
    assert spread["targets"] == [spread["nodes"]["w1"]["url"], spread["nodes"]["w2"]["url"]]
    assert {n["next_url"] for n in spread["nodes"].values()} == {None}
    chain = services("workload.http.on=[w2, w1]", "workload.http.chain=true")
    assert chain["targets"] == [chain["nodes"]["w2"]["url"]] and chain["nodes"]["w2"]["next_url"] == chain["nodes"]["w1"]["url"]
    assert chain["nodes"]["w1"]["next_url"] is None and chain["nodes"]["w1"]["port"] == 8081  # second in 'on'
    with pytest.raises(InventoryError, match="workload.http.on: w9 not in"):
        services("workload.http.on=[w1, w9]")
    with pytest.raises(UsageError, match="workload.http.service: .* has no app.py"):
        services(f"workload.http.service={tmp_path}")


def test_the_run_folder_keeps_status_attempts_and_the_secret(tmp_path):
    experiment = tmp_path / "x.yaml"
    experiment.write_text("name: x\n")
    folder = RunDir(tmp_path / "logs", "r1")
    folder.create(experiment, "all: {}\n", {"run_id": "r1"}, {"owner": "me"}, versions=lambda: {"tracekit": "0"})
    assert folder.begin_attempt(PHASES, keep_aside=None) == 1
    secret = folder.make_secret()
    assert secret == tmp_path / "logs" / ".secrets" / "r1.redis" and secret.parent != folder.path
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert folder.make_secret().read_text() == secret.read_text()  # generated once: a resumed run keeps it
    folder.phase_started("prepare")
    folder.phase_ended("prepare", "succeeded", None, {"cloud0": {"state": "ok", "error": None}})
    on_disk = json.loads(folder.status_file.read_text())
    assert on_disk["phases"]["prepare"]["state"] == "succeeded" and on_disk["phases"]["prepare"]["duration_s"] >= 0
    assert on_disk["attempts"][0]["phases"] == PHASES and on_disk["phases"]["run"] == {"state": "pending"}
    assert not list(folder.path.glob(".*.tmp"))  # written beside, then moved into place
    manifest = json.loads(folder.manifest_file.read_text())
    assert manifest["tags"] == {"owner": "me"} and manifest["versions"] == {"tracekit": "0"}
    (folder.path / "nodes" / "cloud1").mkdir(parents=True)
    (folder.path / "nodes" / "cloud1" / "node.json").write_text('{"node": "cloud1"}')
    # A failed run keeps its secret for --resume; a good one removes it.
    assert folder.finish("failed")[0] == "failed" and secret.exists()
    state, manifest = folder.finish("succeeded")
    assert state == "succeeded" and not secret.exists()
    assert manifest["nodes"] == {"cloud1": {"facts": {"node": "cloud1"}}} and "end" in manifest
    # Resumed from start: what the attempt collected goes to attempts/<n>/ first.
    again = RunDir(tmp_path / "logs", "r1")
    again.load_status()
    assert again.begin_attempt(PHASES[1:], keep_aside=1) == 2
    assert (folder.path / "attempts" / "1" / "nodes" / "cloud1" / "node.json").exists()
    assert not (folder.path / "nodes").exists()


def test_a_full_disk_is_noted_once_and_fails_the_run_without_stopping_it(tmp_path):
    full = {"on": False}

    def write(path, value):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_json(path, value)

    folder = RunDir(tmp_path, "r1", write=write)
    folder.path.mkdir()
    notes: list[str] = []
    folder.notify = notes.append
    folder.status = {"run_id": "r1", "phases": {}}
    folder.begin_attempt(PHASES, keep_aside=None)
    folder.make_secret()
    full["on"] = True
    folder.phase_started("run")  # noted, not raised: stop and fetch must still run
    folder.phase_ended("run", "failed", "cloud0: boom", {})
    assert notes == [f"cannot write {folder.status_file} (No space left on device); stopping and fetching go on"]
    state, manifest = folder.finish("succeeded")
    assert state == "failed" and manifest == {}
    assert folder.status["error"] == f"could not be written: {folder.status_file}: No space left on device"
    assert folder.secret_file.exists()  # kept: the run may be resumed
    with pytest.raises(OSError):
        folder.write_status()  # before anything runs, an error is raised


def test_a_folder_that_is_no_run_is_refused(tmp_path):
    (tmp_path / "r1").mkdir()
    with pytest.raises(RunError, match="no resolved.json, so not a tracekit-run folder"):
        RunDir(tmp_path, "r1").read_resolved()
    (tmp_path / "r1" / "resolved.json").write_text("{")
    with pytest.raises(RunError, match="resolved.json: not valid JSON"):
        RunDir(tmp_path, "r1").read_resolved()
    assert RunDir(tmp_path, "r1").load_status() == {}  # unreadable: every phase runs again


def test_ansible_runner_asks_whether_to_cancel_twice_a_second(tmp_path):
    # Its default (5 s) let a signal take that long to act: a run phase near its end then ended as
    # 'succeeded' under a run that said 'interrupted' (seen in test_a_hangup_stops_everything...).
    from ansible_runner.interface import init_runner

    from tracekit.experiment.phases import CANCEL_POLL_S, write_runner_settings

    write_runner_settings(tmp_path)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "p.yml").write_text("- hosts: localhost\n  tasks: []\n")
    runner = init_runner(private_data_dir=str(tmp_path), playbook="p.yml", quiet=True)
    assert runner.config.pexpect_timeout == CANCEL_POLL_S <= 1


def test_workers_count_keeps_the_first_workers_and_their_hosts_become_the_limit(tmp_path):
    from tracekit.errors import InventoryError
    from tracekit.experiment.render import extravars
    from tracekit.experiment.runner import _limit_to

    full = read_inventory(write(tmp_path, hosts(w1={}, w2={}, w3={})))
    two = full.first_workers(2, "x.yaml")
    assert two.workers == ("w1", "w2") and two.controller == "c0" and full.first_workers(None, "x.yaml") is full
    assert _limit_to(two, full, None) == "c0,w1,w2" and _limit_to(full, full, "w1") == "w1"
    with pytest.raises(UsageError, match="--limit w1 and workers.count 2 both choose hosts"):
        _limit_to(two, full, "w1")
    with pytest.raises(InventoryError, match=r"x.yaml: workers.count is 4 but .* has 3 worker\(s\) \(w1, w2, w3\)"):
        full.first_workers(4, "x.yaml")
    experiment = load_experiment("experiments/smoke.yaml", ["workers.count=2"])
    assert experiment.workers_count == 2
    variables = extravars(experiment, "r1", tmp_path, tmp_path, tmp_path / "s", "python3", two, checkout=Path.cwd())
    assert variables["tracekit_run_workers"] == ["w1", "w2"]  # the dispatcher places on these only
    assert variables["tracekit_run_needs"]["hosts"] == ["w1", "w2"]


def test_a_module_that_did_not_run_is_described_by_its_own_stderr_and_what_to_do():
    # What ansible-core 2.19 reports when the node's interpreter is a pyenv shim of a Python it does not have
    # (seen on a real cluster: the follow-on error of the next task hid it).
    shim = {"event": "runner_on_failed", "event_data": {"res": {
        "msg": "Module result deserialization failed: No start of json char found", "module_stdout": "",
        "module_stderr": "pyenv: python3.13: command not found\n\nThe python3.13 command exists in these Python "
                         "versions:\n  3.13.0\n", "rc": 127, "changed": False}}}  # fmt: skip
    assert describe_failure(shim) == (
        "the node's Python for Ansible does not run (pyenv: python3.13: command not found; exit status 127): set "
        "ansible_python_interpreter for this host in the inventory to a Python 3 it has (e.g. /usr/bin/python3)")
    # Over SSH to a host seen for the first time, the ssh client's own warning comes first: not the cause.
    shim["event_data"]["res"]["module_stderr"] = ("Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of "
                                                  "known hosts.\r\n" + shim["event_data"]["res"]["module_stderr"])
    assert "(pyenv: python3.13: command not found; exit status 127)" in describe_failure(shim)
    crashed = {"event": "runner_on_failed", "event_data": {"res": {
        "msg": "MODULE FAILURE\nSee stdout/stderr for the exact error", "rc": 1, "module_stdout": "",
        "module_stderr": 'Traceback (most recent call last):\n  File "x", line 1\nSyntaxError: invalid syntax\n'}}}
    assert describe_failure(crashed) == "MODULE FAILURE See stdout/stderr for the exact error: SyntaxError: invalid syntax"


def test_a_format_s_own_options_reach_the_parse_phase_as_its_arguments(tmp_path):
    from tracekit.experiment.render import extravars

    inventory = read_inventory(write(tmp_path, hosts(w1={})))
    experiment = load_experiment("experiments/smoke.yaml", ["export.formats=[opendc, google]",
                                                            "export.options={google: {window_s: 60}}"])  # fmt: skip
    variables = extravars(experiment, "r1", tmp_path, tmp_path, tmp_path / "s", "python3", inventory)
    assert variables["tracekit_run_export"]["option_args"] == ["--export-option=google.window_s=60.0"]
    plain = extravars(load_experiment("experiments/smoke.yaml"), "r1", tmp_path, tmp_path, tmp_path / "s", "python3",
                      inventory)  # fmt: skip
    assert plain["tracekit_run_export"]["option_args"] == []
