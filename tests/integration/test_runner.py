"""tracekit-run end to end: real Ansible (ansible-runner), real Redis, real ffmpeg, local and SSH nodes.

The local runs share one set of node roots (the session's local_site), the SSH
runs one set of sshd nodes (ssh_site), so the node venvs are installed once per
pytest worker and later runs show the idempotent path. Every test checks that
nothing it started outlives it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import (
    VENV_BIN,
    ProcessTableWatch,
    docs_samples,
    file_secret,
    kill_processes_under,
    named_binary,
    processes_under,
    read_jsonl,
    wait_until,
)
from tests.inventories import local_inventory, ssh_inventory
from tests.sshd import free_port
from tracekit.experiment.runner import run_experiment
from tracekit.experiment.spec import ExperimentError
from tracekit.trace import cctf, nodeparse
from tracekit.trace.parse import parse_run
from tracekit.trace.rawrun import load_node_folder
from tracekit.trace.verify import verify_opendc

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"
NODES = ("cloud0", "cloud1", "cloud2")
# The smoke tasks, a little longer and sampled more often: each is sampled a few times, so that
# whose samples they are can be checked (smoke's own tasks often end between two samples).
SAMPLED = ["collectors.interval_ms=100", "workload.ffmpeg.transcode.scale=640:360",
           "workload.ffmpeg.transcode.preset=medium"]  # fmt: skip

# Each experiment takes minutes on a loaded 2-core machine (a hung one still fails).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def run_files(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): p.read_bytes().decode(errors="replace") for p in run_dir.rglob("*") if p.is_file()}


def assert_complete_run(run_dir: Path, result, password: str) -> None:
    assert result.state == "succeeded", result.summary
    for name in ("experiment.yaml", "resolved.json", "inventory.yml", "manifest.json", "status.json"):
        assert (run_dir / name).is_file(), name
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "succeeded"
    assert [status["phases"][p]["state"] for p in ("prepare", "start", "run", "stop", "fetch", "parse")] == ["succeeded"] * 6
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["versions"]["ansible_core"] and manifest["versions"]["redis_server"].startswith("Redis server")
    assert sorted(manifest["nodes"]) == list(NODES)
    for node in NODES:
        clock = json.loads((run_dir / "nodes" / node / "clock.json").read_text())
        assert {"start", "end"} <= set(clock) and clock["uncertainty_ms"] >= 0 and "controller" in clock["reference"]
        assert manifest["nodes"][node]["facts"]["node"] == node
    # Every task of the plan is in the trace, on the node that ran it.
    dispatch = json.loads((run_dir / "nodes" / "cloud0" / "dispatch.json").read_text())
    assert dispatch["tasks"] == 2 and dispatch["done"] == 2
    placements = [json.loads(line) for line in (run_dir / "nodes/cloud0/placement_events.jsonl").read_text().splitlines()]
    invocations = [json.loads(line) for line in (run_dir / "cctf" / "invocations.jsonl").read_text().splitlines()]
    ran = {(i["task_id"], i["node"]) for i in invocations if i["ok"]}
    placed = {(p["task_id"], p["node"]) for p in placements}
    assert len(placed) == 2 and placed <= ran, (placed, ran)
    for task_id, node in placed:
        events = (run_dir / "nodes" / node / "events.ffmpeg.jsonl").read_text()
        assert task_id in events
    assert_each_node_holds_only_its_own(run_dir, invocations)
    # The OpenDC files pass verification against the run.
    checked = verify_opendc(run_dir / "opendc", topology=run_dir / "opendc" / "experiment.json", against=run_dir)
    assert checked.tasks == 2
    # The report is the parse phase's last step; the summary says where it is.
    page = (run_dir / "report" / "index.html").read_text()
    for section in ("summary", "timelines", "gantt", "queue", "longest"):
        assert f'<section id="{section}">' in page, section
    assert "could not be drawn" not in page and page.count("data:image/png;base64,") == 4
    assert f"  report:     {run_dir / 'report' / 'index.html'}" in result.summary
    # The per-run password is in no file of the run folder (nor in the artifacts Ansible left there).
    leaks = [name for name, text in run_files(run_dir).items() if password in text]
    assert not leaks, leaks
    assert_parts_made_on_the_nodes_give_the_whole_parse(run_dir)
    # The run opened as a researcher opens it (tracekit.open_run): the same trace, export and figures.
    import tracekit

    opened = tracekit.open_run(run_dir)
    assert opened.state == "succeeded" and opened.experiment["name"] == "smoke"
    assert opened.invocations.num_rows == len(invocations) and opened.placements.num_rows == len(placements)
    assert opened.requests.num_rows == 0 and set(opened.host_metrics.column("node").to_pylist()) == set(NODES)
    assert opened.opendc.tasks.num_rows == 2 and opened.opendc.experiment == json.loads((run_dir / "opendc" / "experiment.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert opened.figures["makespan_s"] == results["tasks"]["makespan_s"] is not None


def assert_parts_made_on_the_nodes_give_the_whole_parse(run_dir: Path) -> None:
    """Each measuring node parsed its own raw files before the fetch; putting the parts together gave
    exactly what parsing every raw file on the controller gives."""
    measured = [folder for folder in sorted((run_dir / "nodes").iterdir()) if (folder / "node.json").exists()]
    assert {folder.name for folder in measured} >= {"cloud1", "cloud2"}
    for folder in measured:
        assert nodeparse.read_part(load_node_folder(folder)) is not None, folder.name
    whole = run_dir.parent / f"{run_dir.name}-whole"
    shutil.copytree(run_dir / "nodes", whole / "nodes", ignore=shutil.ignore_patterns(nodeparse.PART_DIR))
    parse_run(whole, jsonl=(run_dir / "cctf" / "proc_metrics.jsonl").exists())

    def files(folder: Path, run: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes().replace(str(run).encode(), b"RUN")
                for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip

    assert files(run_dir / "cctf", run_dir) == files(whole / "cctf", whole)
    shutil.rmtree(whole)


def assert_each_node_holds_only_its_own(run_dir: Path, invocations: list[dict]) -> None:
    """Every node shares this machine: no node's samples of another's tasks, no more cores than it has."""
    audit = json.loads((run_dir / "cctf" / "audit.json").read_text())
    assert audit["proc_samples_wrong_node"] == 0 and audit["tasks_in_trace_pct"] == 100.0, audit["notes"]
    launched = {(i["pid"], i["create_time_ms"]): i["node"] for i in invocations}
    samples = cctf.read_table(run_dir / "cctf", "proc_metrics").to_pylist()
    assert {"cloud1", "cloud2"} <= {s["node"] for s in samples}  # each worker's tasks, sampled on it...
    assert all(launched.get((s["pid"], s["create_time_ms"]), s["node"]) == s["node"] for s in samples)  # ...only
    # The controller follows only the dispatcher's own ffprobe runs (smoke matches ffprobe): no task's.
    assert {(s["comm"], s["task_id"]) for s in samples if s["node"] == "cloud0"} <= {("ffprobe", None)}
    nodes = json.loads((run_dir / "cctf" / "nodes.json").read_text())
    assert {n["process_scope"] for n in nodes} == {"node"}
    experiment = json.loads((run_dir / "opendc" / "experiment.json").read_text())
    hosts = experiment["topologies"][0]["clusters"][0]["hosts"]
    assert sum(h["cpu"]["coreCount"] * h["count"] for h in hosts) <= os.cpu_count()


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, local_site):
    _, inventory, _ = local_site
    lines: list[str] = []
    result = run_experiment(SMOKE, inventory=inventory, run_id="dry", dry_run=True, logs_dir=tmp_path / "logs", out=lines.append)
    assert result.state == "planned" and result.exit_code == 0
    text = "\n".join(lines)
    assert "2 tasks" in text and "round-robin" in text and "cloud1, cloud2" in text
    assert [line.split()[0] for line in lines[lines.index("phases:") + 1 :]] == ["prepare", "start", "run", "stop", "fetch", "parse"]
    assert not (tmp_path / "logs").exists()


def test_a_malformed_experiment_fails_before_any_node_is_touched(tmp_path, local_site):
    _, inventory, _ = local_site
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("policy: round-robin", "policy: fastest"))
    cli = subprocess.run([str(VENV_BIN / "tracekit-run"), str(bad), "-i", str(inventory), "--logs-dir", str(tmp_path / "logs")],
                         capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 2
    assert cli.stderr.startswith(f"tracekit-run: error: {bad}: dispatch.policy: 'fastest' is not one of")
    assert len(cli.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()
    with pytest.raises(ExperimentError, match="not valid YAML"):
        bad.write_text("name: [unclosed\n")
        run_experiment(bad, inventory=inventory, logs_dir=tmp_path / "logs")


def test_local_run_end_to_end_then_resume_and_overwrite_rules(tmp_path, local_site, monkeypatch, children):
    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    # A matching process of a concurrent run that uses the same node id stays out of this run's trace
    # (its own name, added to the pattern: an 'ffmpeg' would also match the other tests' collectors).
    foreign = children([named_binary(tmp_path, "tk-concurrent"), "300"],
                       env={**os.environ, "TRACEKIT_NODE_ID": "cloud1", "TRACEKIT_RUN_ID": "a-concurrent-run"})  # fmt: skip
    matched = [*SAMPLED, "collectors.match=^ffmpeg$|^ffprobe$|^tk-concurrent$"]
    # What the README's by-hand section exports: it must not reach the run folder (ansible-runner's
    # artifacts held the whole environment of tracekit-run).
    monkeypatch.setenv("REDIS_PASSWORD", "exported-canary-7f3a9c")
    monkeypatch.setenv("SOME_API_TOKEN", "token-canary-51b2")
    # The run's password shows in no process's argv or environment at any moment of the run.
    secret = file_secret(logs / ".secrets" / "smoke-local.redis")
    key = file_secret(logs / ".secrets" / "smoke-local.taskkey")
    with ProcessTableWatch(lambda: {**secret(), **key()}) as watch:
        result = run_experiment(SMOKE, inventory=inventory, run_id="smoke-local", logs_dir=logs, overrides=matched)
    assert watch.rounds > 0 and not watch.seen, watch.seen
    run_dir = logs / "smoke-local"
    leaks = [name for name, text in run_files(run_dir).items() if "canary-" in text]
    assert not leaks, leaks
    password = secret()["smoke-local.redis"]  # the file itself is gone after a good run
    assert_complete_run(run_dir, result, password)
    # The README's sample of tracekit-run is what a run prints (with its run id and logs folder).
    samples = docs_samples()
    [sample] = [text for source, text in samples.samples((REPO / "README.md").read_text()) if source == "tracekit-run"]
    printed = samples.as_logs("\n".join(result.summary) + "\n", logs)
    printed = printed.replace("smoke-local", re.search(r"^run (\S+):", sample, re.M)[1])
    assert samples.stale(sample, {"tracekit-run experiments/smoke.yaml": printed}) is None, printed
    assert not (folder / "nodes" / "cloud0" / "redis" / "smoke-local" / "redis.conf").exists()  # it held the password
    # The transcoded files were removed from the workers once their run folders were fetched (a run's
    # outputs piled up there: workers.keep_outputs keeps them).
    invocations = read_jsonl(run_dir / "cctf" / "invocations.jsonl")
    assert {i["node"] for i in invocations} == {"cloud1", "cloud2"}
    assert not any((folder / "nodes" / node / "outputs" / "smoke-local").exists() for node in NODES)
    assert not (logs / ".secrets" / "smoke-local.redis").exists()
    assert not (logs / ".secrets" / "smoke-local.taskkey").exists()
    assert key()["smoke-local.taskkey"] not in "".join(run_files(logs / "smoke-local").values())
    assert processes_under(folder, port) == []
    samples = cctf.read_table(run_dir / "cctf", "proc_metrics").to_pylist()
    assert samples and foreign.pid not in {s["pid"] for s in samples}
    audit = json.loads((run_dir / "cctf" / "audit.json").read_text())
    # At least this one (tests running beside this one may run tasks marked cloud1 for runs of their own).
    foreign_counts = audit["foreign_processes"]
    assert foreign_counts["cloud1"]["other_runs"] >= 1 and foreign_counts["cloud2"]["other_nodes"] >= 1
    assert any("processes of another run with the same node id" in note and "cloud1 " in note for note in audit["notes"])
    # Nothing left to resume; an existing run folder is not overwritten without --force.
    again = run_experiment(resume="smoke-local", inventory=inventory, logs_dir=logs)
    assert again.state == "succeeded" and "nothing to resume" in again.summary[0]
    cli = subprocess.run([str(VENV_BIN / "tracekit-run"), str(SMOKE), "-i", str(inventory), "--run-id", "smoke-local",
                          "--logs-dir", str(logs)], capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 2 and "--resume smoke-local" in cli.stderr and "--force" in cli.stderr


def test_a_hangup_stops_everything_and_leaves_a_resumable_run(tmp_path, local_site):
    """tracekit-run on a terminal that goes away (a closed window or SSH session): SIGHUP, and every
    write to the terminal fails from then on. It cleans up as after Ctrl-C (SIGINT: test_run_safety)."""
    import fcntl
    import termios
    import threading

    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    # Long enough tasks that the hangup lands during dispatch.
    argv = [str(VENV_BIN / "tracekit-run"), str(SMOKE), "-i", str(inventory), "--run-id", "interrupted",
            "--logs-dir", str(logs), "-e", "workload.ffmpeg.generate.durations=[8]",
            "-e", "workload.ffmpeg.generate.size=640x360", "-e", "workload.ffmpeg.transcode.scale=640:360",
            "-e", "workload.ffmpeg.transcode.preset=medium"]  # fmt: skip
    terminal, its_side = os.openpty()
    child = subprocess.Popen(argv, stdin=its_side, stdout=its_side, stderr=its_side, start_new_session=True,
                             preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # its controlling terminal
    os.close(its_side)
    shown: list[bytes] = []

    def read_the_terminal() -> None:
        try:
            while chunk := os.read(terminal, 4096):
                shown.append(chunk)
        except OSError:  # closed
            pass

    reader = threading.Thread(target=read_the_terminal, daemon=True)
    reader.start()
    try:
        status_path = logs / "interrupted" / "status.json"

        def transcoding() -> bool:
            try:
                status = json.loads(status_path.read_text())
            except (OSError, ValueError):
                return False
            running = status["phases"]["run"].get("state") == "running"
            return running and any("ffmpeg" in p.split()[1] for p in processes_under(folder / "nodes" / "cloud1"))

        wait_until(transcoding, timeout_s=300, what="a worker transcoding during the run phase")
        os.close(terminal)  # the window closes: the kernel sends SIGHUP, and the terminal is gone
        child.wait(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
    after = logs / "interrupted" / "after-hangup.log"  # what it said once the terminal was gone
    output = b"".join(shown).decode(errors="replace") + (after.read_text() if after.exists() else "")
    assert child.returncode == 130, output
    assert "SIGHUP: cancelling" in after.read_text() and "Traceback" not in output
    status = json.loads(status_path.read_text())
    assert status["state"] == "interrupted"
    assert status["phases"]["run"]["state"] == "interrupted"
    assert status["phases"]["stop"]["state"] == "succeeded" and status["phases"]["fetch"]["state"] == "succeeded"
    assert status["phases"]["parse"]["state"] == "skipped"
    assert processes_under(folder, port) == [], "tracekit-run left processes behind after SIGHUP"
    assert (logs / "interrupted" / "nodes" / "cloud1" / "collector.jsonl").exists()  # the data is kept
    assert (logs / ".secrets" / "interrupted.redis").exists()  # kept for --resume
    resumed = run_experiment(resume="interrupted", inventory=inventory, logs_dir=logs)
    assert resumed.state == "succeeded", resumed.summary
    status = json.loads(status_path.read_text())
    assert [a["phases"][0] for a in status["attempts"]] == ["prepare", "start"]
    assert processes_under(folder, port) == []
    # The interrupted attempt's data is kept aside; the trace is the resumed attempt's, verified.
    assert (logs / "interrupted" / "attempts" / "1" / "nodes" / "cloud1" / "collector.jsonl").exists()
    assert (folder / "nodes" / "cloud1" / "logs" / "interrupted.attempt1" / "node.json").exists()
    invocations = [json.loads(line) for line in (logs / "interrupted" / "cctf" / "invocations.jsonl").read_text().splitlines()]
    assert sorted(i["task_id"] for i in invocations if i["ok"]) == sorted({i["task_id"] for i in invocations})
    assert len({i["task_id"] for i in invocations}) == 2


def test_a_failed_dispatch_still_stops_and_fetches_every_node(tmp_path, local_site):
    # The phases run in one ansible-playbook call; a failure ends it, and the
    # runner stops and fetches in calls of their own.
    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    result = run_experiment(SMOKE, inventory=inventory, run_id="timed-out", logs_dir=logs, overrides=["dispatch.timeout=0.05"])
    status = json.loads((logs / "timed-out" / "status.json").read_text())
    assert result.exit_code == 1 and status["state"] == "failed", result.summary
    assert [status["phases"][p]["state"] for p in ("prepare", "start", "run")] == ["succeeded", "succeeded", "failed"]
    assert status["phases"]["run"]["error"].startswith("cloud0: Run the dispatcher"), status["phases"]["run"]["error"]
    assert "timed out" in status["phases"]["run"]["error"]
    assert status["phases"]["stop"]["state"] == "succeeded" and status["phases"]["fetch"]["state"] == "succeeded"
    assert sorted(status["phases"]["stop"]["hosts"]) == list(NODES)
    assert status["phases"]["parse"]["state"] == "skipped"
    assert processes_under(folder, port) == [], "a failed run left processes behind"
    for node in NODES:  # what was collected is kept
        assert (logs / "timed-out" / "nodes" / node / "collector.jsonl").exists(), node
        assert "end" in json.loads((logs / "timed-out" / "nodes" / node / "clock.json").read_text())


def test_unreachable_node_is_named_and_nothing_runs(tmp_path):
    port = free_port()
    inventory = local_inventory(tmp_path, port, unreachable="cloud2")
    try:
        result = run_experiment(SMOKE, inventory=inventory, run_id="unreachable", logs_dir=tmp_path / "logs")
        status = json.loads((tmp_path / "logs" / "unreachable" / "status.json").read_text())
        assert result.exit_code == 1 and result.state == "failed"
        assert status["phases"]["prepare"]["state"] == "failed"
        assert status["phases"]["prepare"]["error"].startswith("cloud2: unreachable")
        assert status["phases"]["prepare"]["hosts"]["cloud2"]["state"] == "unreachable"
        assert status["phases"]["start"]["state"] == "skipped"
        # Ansible goes on through plays left without hosts after an unreachable one: none of them ran.
        assert [status["phases"][p]["state"] for p in ("run", "stop", "fetch", "parse")] == ["skipped"] * 4
        assert not (tmp_path / "logs" / "unreachable" / "cctf").exists()
        assert processes_under(tmp_path, port) == []
    finally:
        kill_processes_under(tmp_path, port)


PYENV_SHIM = """#!/bin/sh
echo "pyenv: python3.13: command not found" >&2
echo >&2
echo "The python3.13 command exists in these Python versions:" >&2
echo "  3.13.0" >&2
exit 127
"""


def test_a_node_whose_login_path_has_a_broken_python_is_named_with_the_variable_that_fixes_it(tmp_path):
    """A cluster's nodes with pyenv's shims first on the login PATH (a python3.13 shim of a Python pyenv does
    not have) and no ansible_python_interpreter: Ansible's discovery picks the shim. The run fails in prepare
    with one line naming the hosts and ansible_python_interpreter, not a follow-on error; nothing runs."""
    from tests.sshd import start_sshd_nodes

    shims = tmp_path / "pyenv" / "shims"
    shims.mkdir(parents=True)
    (shims / "python3.13").write_text(PYENV_SHIM)
    (shims / "python3.13").chmod(0o755)
    login_path = f"SetEnv PATH={shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    with start_sshd_nodes(tmp_path / "site", ("cloud0", "cloud1"), extra_config=login_path) as nodes:
        port = free_port()
        inventory = ssh_inventory(nodes, port, tmp_path / "inventory.yml")
        document = yaml.safe_load(inventory.read_text())
        for group in document["all"]["children"].values():
            for values in group["hosts"].values():
                del values["ansible_python_interpreter"]  # as the cluster example had it: discovery decides
                # No ControlPersist master: its connection (and the sshd session serving it) would outlive
                # the test by 120 s once the node's sshd is gone.
                values["ansible_ssh_args"] = "-o ControlMaster=no"
        inventory.write_text(yaml.safe_dump(document))
        try:
            result = run_experiment(SMOKE, inventory=inventory, run_id="shim", logs_dir=tmp_path / "logs")
            status = json.loads((tmp_path / "logs" / "shim" / "status.json").read_text())
            assert result.exit_code == 1 and status["phases"]["prepare"]["state"] == "failed"
            error = status["phases"]["prepare"]["error"]
            assert error.startswith("cloud0, cloud1: "), error
            assert "pyenv: python3.13: command not found" in error and "set ansible_python_interpreter" in error
            assert "\n" not in error and "stdout_lines" not in error
            assert [status["phases"][p]["state"] for p in ("start", "run")] == ["skipped"] * 2
        finally:
            kill_processes_under(tmp_path, port)


def test_a_node_that_fails_its_check_is_refused_before_anything_is_installed(tmp_path, local_site):
    """tracekit_node checks each node first: a node root on a disk without the room asked for, and a
    tracekit_node_python that does not run, are one line naming the node, what is wrong and the variable."""
    folder, inventory, port = local_site
    document = yaml.safe_load(inventory.read_text())
    workers = document["all"]["children"]["workers"]["hosts"]
    workers["cloud2"].update(tracekit_node_min_free_mb=10**9, tracekit_node_python=str(tmp_path / "no-python"))
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(document))
    try:
        result = run_experiment(SMOKE, inventory=path, run_id="checked", logs_dir=tmp_path / "logs")
        status = json.loads((tmp_path / "logs" / "checked" / "status.json").read_text())
        assert result.exit_code == 1 and status["phases"]["prepare"]["hosts"]["cloud2"]["state"] == "failed"
        error = status["phases"]["prepare"]["error"]
        assert error.startswith("cloud2: Refuse a node that would fail later: "), error
        assert f"{tmp_path / 'no-python'} does not run" in error and "set tracekit_node_python" in error
        assert "MB free on the disk of" in error and "tracekit_node_min_free_mb" in error
        assert "\n" not in error and status["phases"]["prepare"]["hosts"]["cloud1"]["state"] == "ok"
    finally:
        kill_processes_under(folder, port)


def test_a_redis_port_another_process_holds_is_named_before_redis_starts(tmp_path, local_site):
    """The controller's Redis port held by another process (here: this test's own listening socket): start
    fails with one line naming the port, who holds it and the variable; stop and fetch still run."""
    import socket

    folder, inventory, _port = local_site
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        document = yaml.safe_load(inventory.read_text())  # the site's nodes (their venvs), the taken port
        document["all"]["children"]["controller"]["hosts"]["cloud0"]["tracekit_redis_port"] = taken
        path = tmp_path / "inventory.yml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        try:
            result = run_experiment(SMOKE, inventory=path, run_id="port-taken", logs_dir=tmp_path / "logs")
            status = json.loads((tmp_path / "logs" / "port-taken" / "status.json").read_text())
        finally:
            kill_processes_under(folder, taken)
    assert result.exit_code == 1 and status["phases"]["start"]["state"] == "failed"
    error = status["phases"]["start"]["error"]
    assert error.startswith(f"cloud0: Refuse a port another process listens on: port {taken} is taken by "), error
    assert f"(pid {os.getpid()})" in error and "set tracekit_redis_port of cloud0 in the inventory" in error
    assert [status["phases"][p]["state"] for p in ("stop", "fetch")] == ["succeeded", "succeeded"]


def test_ssh_nodes_end_to_end(tmp_path, ssh_site):
    sshd_nodes, port = ssh_site
    inventory = ssh_inventory(sshd_nodes, port, tmp_path / "inventory.yml", tracekit_inputs_root=str(tmp_path / "inputs"),
                              tracekit_inputs_shared=True)  # fmt: skip
    logs = tmp_path / "logs"
    try:
        secret = file_secret(logs / ".secrets" / "smoke-ssh.redis")
        with ProcessTableWatch(secret) as watch:  # over SSH too, no process shows the password
            result = run_experiment(SMOKE, inventory=inventory, run_id="smoke-ssh", logs_dir=logs, overrides=SAMPLED)
        assert watch.rounds > 0 and not watch.seen, watch.seen
        assert_complete_run(logs / "smoke-ssh", result, secret()["smoke-ssh.redis"])
        # Each node's run folder was written below its own root, over SSH.
        for name in NODES:
            assert (sshd_nodes.nodes[name].root / "logs" / "smoke-ssh" / "node.json").is_file()
        assert processes_under(sshd_nodes.folder / "nodes", port) == []
    finally:
        kill_processes_under(sshd_nodes.folder / "nodes", port)
