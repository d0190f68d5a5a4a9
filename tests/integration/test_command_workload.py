"""The command workload end to end: real workers and Redis with every policy; tracekit-run of
experiments/command.yaml on the local inventory and over SSH; time-outs, missing commands, failures
and values that must stay literal."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import ProcessTableWatch, ended, file_secret, kill_processes_under, processes_under, read_jsonl, tracekit_cmd
from tests.inventories import ssh_inventory
from tracekit.collect import daemon
from tracekit.collect.daemon import CollectorConfig
from tracekit.experiment.runner import run_experiment
from tracekit.sched.dispatcher import DispatchConfig, dispatch
from tracekit.sched.protocol import RunKeys
from tracekit.trace import cctf as cctf_layout
from tracekit.trace.audit import CGROUP_FLOOR_MS
from tracekit.trace.export.opendc import export_opendc
from tracekit.trace.parse import parse_run
from tracekit.trace.verify import verify_opendc
from tracekit.workloads import PlanContext, tasks_of

REPO = Path(__file__).resolve().parents[2]
COMMAND = REPO / "experiments" / "command.yaml"
BATCH = REPO / "examples" / "batch"
# The committed experiment, with shorter tasks.
QUICK = ["workload.command.params.ms=[40, 80]", "collectors.interval_ms=100"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def start_worker(children, redis_server, root: Path, node: str, files: Path | None = None):
    argv = tracekit_cmd("worker", "--node-id", node, "--run-id", "c1", "--redis-url", redis_server.url,
                        "--outputs", str(root / node / "outputs"), "--logs-dir", str(root / node / "logs"),
                        "--grace", "30", *(["--files", str(files)] if files else []))  # fmt: skip
    log = open(root / f"{node}.stderr", "ab")  # noqa: SIM115 - closed with the process
    return children(argv, stderr=log, start_new_session=True, env={**os.environ, "REDIS_PASSWORD": redis_server.password})


def run_tasks(redis_server, root: Path, section: dict, policy: str = "round-robin", nodes=("cloud1", "cloud2")):
    tasks = tasks_of({"kind": "command", "section": section}, PlanContext("c1"), "test")
    config = DispatchConfig(run_id="c1", redis_url=redis_server.url, nodes=nodes, logs_dir=root / "cloud0" / "logs",
                            worker_wait_s=20, timeout_s=120, policy=policy)  # fmt: skip
    return tasks, dispatch(config, tasks)


def events(root: Path, module: str = "command") -> dict[str, dict]:
    found = {}
    for node in ("cloud1", "cloud2"):
        path = root / node / "logs" / "c1" / f"events.{module}.jsonl"
        found.update({e["task_id"]: e for e in (read_jsonl(path) if path.exists() else [])})
    return found


def results(redis_server) -> dict[str, dict]:
    entries = redis_server.client().xrange(RunKeys("c1").results)
    return {record["task_id"]: record for record in (json.loads(f["record"]) for _, f in entries)}


@pytest.mark.parametrize("policy", ["round-robin", "least-loaded", "lpt", "duration-online"])
def test_every_policy_places_command_tasks(redis_server, tmp_path, children, policy, capfd):
    for node in ("cloud1", "cloud2"):
        start_worker(children, redis_server, tmp_path, node, files=BATCH)
    section = {"files": str(BATCH), "argv": ["python3", "{files}/burn.py", "--ms", "{ms}", "--threads", "{threads}"],
               "params": {"ms": [30, 60, 120], "threads": [1, 2]}, "expect_ms": "{ms}", "profile": "t{threads}"}  # fmt: skip
    tasks, result = run_tasks(redis_server, tmp_path, section, policy)
    assert result.ok and result.summary["done"] == 6, result.summary
    ran = events(tmp_path)
    assert set(ran) == {t.task_id for t in tasks}
    for task in tasks:
        event = ran[task.task_id]
        params = dict(task.params)
        assert event["status"] == 0 and event["module"] == "command" and event["params"] == params
        # The whole process tree is accounted: a 2-process task used about twice its ms of CPU.
        cpu_ms = event["cpu_user_ms"] + event["cpu_system_ms"]
        assert cpu_ms >= 0.8 * params["ms"] * params["threads"], (task.task_id, cpu_ms)
    placements = read_jsonl(tmp_path / "cloud0" / "logs" / "c1" / "placement_events.jsonl")
    assert {p["policy"] for p in placements} == {policy} and len(placements) == 6
    # A line per task in the dispatcher's log, none on its stderr (an Ansible task's result).
    log = (tmp_path / "cloud0" / "logs" / "c1" / "dispatcher.log").read_text()
    assert all(f"{t.task_id} done on" in log for t in tasks) and " done on " not in capfd.readouterr().err


def test_a_task_past_its_timeout_is_killed_with_its_process_group(redis_server, tmp_path, children):
    for node in ("cloud1",):
        start_worker(children, redis_server, tmp_path, node)
    marker = tmp_path / "grandchild.pid"
    section = {"tasks": [
        # A shell that starts a grandchild in the task's group, then waits: the time-out ends both.
        {"argv": ["sh", "-c", 'sleep 300 & echo $! > "$1"; wait', "sh", str(marker)], "timeout": "1s"},
        {"argv": ["no-such-command-here", "x"]},
        {"argv": ["sh", "-c", "echo to stderr >&2; echo last words >&2; exit 7"]},
        {"argv": ["true"]},
    ]}  # fmt: skip
    tasks, result = run_tasks(redis_server, tmp_path, section, nodes=("cloud1",))
    assert not result.ok and result.summary["done"] == 1 and result.summary["failed"] == 3
    records, ran = results(redis_server), events(tmp_path)
    timed_out, missing, failing, fine = (t.task_id for t in tasks)
    assert records[timed_out]["state"] == "failed" and records[timed_out]["timed_out"] is True
    assert ran[timed_out]["timed_out"] is True and ran[timed_out]["signal"] is not None
    grandchild = int(marker.read_text())
    assert ended(grandchild)
    assert records[missing]["state"] == "failed" and "command not found: no-such-command-here" in records[missing]["reason"]
    assert records[failing]["exit_status"] == 7 and records[failing]["reason"].endswith("last words")
    assert "last words" in ran[failing]["stderr_tail"] and "to stderr" in ran[failing]["stderr_tail"]
    assert records[fine]["state"] == "done"


def test_what_a_task_leaves_running_is_counted_by_its_cgroup_and_ended_by_its_worker(redis_server, tmp_path, children):
    worker = start_worker(children, redis_server, tmp_path, "cloud1")
    marker = tmp_path / "detached.pid"
    # A detached burner: out of the task's process group, never waited for, invisible to rusage.
    burner = 'setsid sh -c \'echo $$ > "$1"; while :; do :; done\' sh "$1" & sleep 0.5'
    section = {"tasks": [{"argv": ["sh", "-c", burner, "sh", str(marker)]}, {"argv": ["sh", "-c", "exit 0"]}]}
    try:
        tasks, result = run_tasks(redis_server, tmp_path, section, nodes=("cloud1",))
        assert result.ok, result.summary
        ran = events(tmp_path)
        left, plain = (ran[t.task_id] for t in tasks)
        rusage = left["cpu_user_ms"] + left["cpu_system_ms"]
        assert left["cgroup_cpu_ms"] > rusage and left["cgroup_kept"], left  # the burner's CPU is in the cgroup
        assert "cgroup_kept" not in plain and plain["cgroup_cpu_ms"] >= 0
        detached = int(marker.read_text())
        assert Path(f"/proc/{detached}").exists()
        cgroups = json.loads((tmp_path / "cloud1" / "logs" / "c1" / "task_cgroups.json").read_text())
        assert cgroups["available"] and cgroups["node"] == "cloud1" and cgroups["run_id"] == "c1"
        worker.terminate()  # a worker's stop ends what its tasks left running, and removes their cgroups
        assert worker.wait(60) == 0
        assert ended(detached)
        assert not any(Path(folder).exists() for folder in cgroups["folders"].values())
        log = (tmp_path / "cloud1" / "logs" / "c1" / "worker.log").read_text()
        assert f"still held [{detached}] after its task ended: killed and removed" in log
    finally:  # the burner left its worker's process tree: the fixture would not find it
        if marker.exists() and marker.read_text().strip():
            try:
                os.kill(int(marker.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_task_of_many_short_processes_is_traced_whole_by_its_cgroup(redis_server, tmp_path, children):
    """A task made of short processes (a build, a shell loop): its cgroup's samples and total have all of
    its CPU, in its fragments too; and so do its processes' samples now (the kernel's process events, each
    process's exact CPU, a parent's reaped children): by polling with clock ticks they held under half."""
    logs = tmp_path / "cloud1" / "logs"
    collector = CollectorConfig(run_id="c1", node_id="cloud1", interval_ms=100, logs_dir=logs, scope="node",
                                match_name="^(sh|true)$")  # fmt: skip
    daemon.start_collector(collector)
    try:
        start_worker(children, redis_server, tmp_path, "cloud1")
        section = {"tasks": [{"argv": ["sh", "-c", "for i in $(seq 1500); do /bin/true; done"]}]}
        [task], result = run_tasks(redis_server, tmp_path, section, nodes=("cloud1",))
        assert result.ok, result.summary
    finally:
        daemon.stop_collector("c1", logs)
    run = tmp_path / "run"
    shutil.copytree(logs / "c1", run / "nodes" / "cloud1")
    parse_run(run)
    [invocation] = [i for i in read_jsonl(run / "cctf" / "invocations.jsonl") if i["task_id"] == task.task_id]
    rows = [r for r in cctf_layout.read_table(run / "cctf", "task_metrics").to_pylist() if r["task_id"] == task.task_id]
    assert invocation["cgroup_samples"] == len(rows) >= 3, rows
    assert rows[0]["dt_ms"] == rows[0]["ts_ms"] - invocation["ts_start"]  # the first interval from the start
    sampled_by_cgroup = sum(r["cpu_ms"] for r in rows)
    assert invocation["cgroup_cpu_ms"] * 0.5 < sampled_by_cgroup <= invocation["cgroup_cpu_ms"]
    # The shell and its 1,500 short children, events or polling alike: the children's CPU is in the shell's
    # children counters when it reaps them, the tail in the task's rusage (seen polling in the fresh root).
    assert invocation["sampled_cpu_ms"] == pytest.approx(invocation["cgroup_cpu_ms"], rel=0.02, abs=CGROUP_FLOOR_MS)
    export_opendc(run, run / "opendc")
    checked = verify_opendc(run / "opendc", topology=run / "opendc" / "experiment.json", against=run)
    assert checked.violations == [] and checked.tasks == 1, checked.violations
    fragments = pq.read_table(run / "opendc" / "fragments.parquet").to_pylist()
    assert len(fragments) >= len(rows)  # one per cgroup sample, and the tail (unless merged: none asked)
    audit = json.loads((run / "cctf" / "audit.json").read_text())
    assert audit["cgroup_accounting"]["tasks_with_cgroup_samples"] == 1 and audit["cgroup_accounting"]["tasks_apart"] == 0


def test_values_reach_the_task_literally(redis_server, tmp_path, children):
    start_worker(children, redis_server, tmp_path, "cloud1")
    out = tmp_path / "argv.jsonl"
    values = ["{{ lookup('pipe', 'touch " + str(tmp_path / "pwned") + "') }}", "$(touch " + str(tmp_path / "pwned2") + ")",
              "it's \"quoted\"", "two words", "line\nbreak", "`id`; rm -rf /"]  # fmt: skip
    script = "import json, os, sys; open(sys.argv[1], 'a').write(json.dumps([sys.argv[2:], os.environ['V']]) + '\\n')"
    section = {"argv": ["python3", "-c", script, str(out), "{v}", "x{v}y"], "params": {"v": values}, "env": {"V": "{v}"}}
    _tasks, result = run_tasks(redis_server, tmp_path, section, nodes=("cloud1",))
    assert result.ok, result.summary
    seen = sorted(json.loads(line) for line in out.read_text().splitlines())
    assert seen == sorted([[value, f"x{value}y"], value] for value in values)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def assert_command_run(run_dir: Path, result, tasks: int) -> None:
    status = json.loads((run_dir / "status.json").read_text())
    assert result.state == "succeeded" and status["state"] == "succeeded", result.summary
    dispatch_summary = json.loads((run_dir / "nodes" / "cloud0" / "dispatch.json").read_text())
    assert dispatch_summary["tasks"] == dispatch_summary["done"] == tasks
    invocations = read_jsonl(run_dir / "cctf" / "invocations.jsonl")
    assert len({i["task_id"] for i in invocations if i["ok"]}) == tasks
    assert {i["module"] for i in invocations} == {"burn"}
    checked = verify_opendc(run_dir / "opendc", topology=run_dir / "opendc" / "experiment.json", against=run_dir)
    assert checked.tasks == tasks
    # The headline figures in one place, the summary and the report made from them, with the final state.
    results = json.loads((run_dir / "results.json").read_text())
    assert results["state"] == "succeeded" and results["requests"] is None
    figures = results["tasks"]
    assert (figures["planned"], figures["done"], figures["failed"], figures["timed_out"]) == (tasks, tasks, 0, 0)
    assert figures["makespan_s"] > 0 and set(figures["per_node"]) == {"cloud1", "cloud2"}
    task_cpu_s = sum(i["cpu_user_ms"] + i["cpu_system_ms"] for i in invocations) / 1000
    assert sum(n["task_cpu_s"] for n in figures["per_node"].values()) == pytest.approx(task_cpu_s, abs=0.01)
    assert all(n["busy_s"] > 0 for n in figures["per_node"].values())
    assert f"  tasks: {tasks}/{tasks} done, 0 failed; makespan {figures['makespan_s']:.1f} s" in "\n".join(result.summary)
    page = (run_dir / "report" / "index.html").read_text()
    assert "<td>state</td><td>succeeded</td>" in page and f"<td>{tasks} / {tasks} / 0 (0) / 0</td>" in page
    # Each task was born in a cgroup of its own, whose exact total agrees with its rusage (all waited for).
    cgroups = json.loads((run_dir / "cctf" / "audit.json").read_text())["cgroup_accounting"]
    assert set(cgroups["nodes"]) == {"cloud1", "cloud2"} and all(n["available"] for n in cgroups["nodes"].values())
    assert cgroups["tasks_in_cgroups"] == tasks and cgroups["tasks_apart"] == 0, cgroups
    assert cgroups["cpu_ms"] == pytest.approx(cgroups["rusage_cpu_ms"], rel=0.01, abs=tasks * CGROUP_FLOOR_MS)
    # setup made each worker's input once, in its copy of the files folder
    for node in ("cloud1", "cloud2"):
        events = read_jsonl(run_dir / "nodes" / node / "events.burn.jsonl")
        assert events and all(e["status"] == 0 for e in events)


def test_the_command_experiment_on_the_local_inventory(tmp_path, local_site):
    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    result = run_experiment(COMMAND, inventory=inventory, run_id="command-local", logs_dir=logs, overrides=QUICK)
    run_dir = logs / "command-local"
    assert_command_run(run_dir, result, 8)
    # The setup ran once per worker, in its copy of the files; a second run finds it done.
    for node in ("cloud1", "cloud2"):
        copy = folder / "nodes" / node / "files" / "command-local"
        assert (copy / "in" / "input-0.txt").is_file() and (copy / "burn.py").is_file()
    assert processes_under(folder, port) == []


def test_the_command_experiment_over_ssh(tmp_path, ssh_site):
    sshd_nodes, port = ssh_site
    inventory = ssh_inventory(sshd_nodes, port, tmp_path / "inventory.yml")
    logs = tmp_path / "logs"
    try:
        secret = file_secret(logs / ".secrets" / "command-ssh.redis")
        with ProcessTableWatch(secret) as watch:
            result = run_experiment(COMMAND, inventory=inventory, run_id="command-ssh", logs_dir=logs,
                                    overrides=[*QUICK, "dispatch.policy=duration-online"])  # fmt: skip
        assert watch.rounds > 0 and not watch.seen, watch.seen
        assert_command_run(logs / "command-ssh", result, 8)
        assert processes_under(sshd_nodes.folder / "nodes", port) == []
    finally:
        kill_processes_under(sshd_nodes.folder / "nodes", port)
