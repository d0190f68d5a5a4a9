"""tracekit-run under attack and accident, end to end on the local inventory (real Ansible, Redis, ffmpeg).

Someone else writing to the run's Redis, templates in the experiment's
values, a collector killed mid-run, tracekit-run itself killed, two runs on
the same nodes, Ctrl-C while a module runs, a disk that fills up: each must
end with nothing run that the run did not sign, nothing evaluated, nothing
left running, and a run that says what its trace lost instead of
"succeeded".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import psutil
import pytest
import redis

from tests.helpers import VENV_BIN, ProcessTableWatch, file_secret, processes_under, read_jsonl, wait_until
from tracekit.sched.protocol import RunKeys, TaskMessage

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"
# Smoke's tasks a little longer (each is sampled, and a run phase lasts a few seconds).
LONGER = ["-e", "collectors.interval_ms=100", "-e", "workload.ffmpeg.transcode.scale=640:360",
          "-e", "workload.ffmpeg.transcode.preset=medium"]  # fmt: skip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def tracekit_run(inventory: Path, logs: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "tracekit-run"), "-i", str(inventory), "--logs-dir", str(logs), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def finished(child: subprocess.Popen, timeout_s: float = 600) -> str:
    try:
        output, _ = child.communicate(timeout=timeout_s)
    finally:
        if child.poll() is None:
            child.kill()
    return output


def phase_state(logs: Path, run_id: str, phase: str) -> str | None:
    try:
        return json.loads((logs / run_id / "status.json").read_text())["phases"][phase].get("state")
    except (OSError, ValueError, KeyError):
        return None


def run_redis(logs: Path, run_id: str, port: int) -> redis.Redis | None:
    """A client of the run's Redis, with the password tracekit-run generated (None until there is one)."""
    try:
        password = (logs / ".secrets" / f"{run_id}.redis").read_text().strip()
    except OSError:
        return None
    if not password:  # made, not written yet: a client with no password would be refused for good
        return None
    return redis.Redis(port=port, password=password, decode_responses=True, socket_connect_timeout=1)


def answers(call):
    """``call()``, or None while the run's Redis is not up yet (a predicate for wait_until)."""
    try:
        return call()
    except redis.RedisError:
        return None


def invocations(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "cctf" / "invocations.jsonl")


def test_a_run_runs_nothing_it_did_not_sign_evaluates_no_value_and_says_what_its_trace_lost(tmp_path, local_site):
    folder, inventory, port = local_site
    logs, run_id = tmp_path / "logs", "safety"
    markers = tmp_path / "markers"
    markers.mkdir()
    # Values that run a command on the controller if Ansible ever takes them for templates (or a shell runs them).
    match = f"^ffmpeg$|^ffprobe$|{{{{ lookup('ansible.builtin.pipe', 'touch {markers}/match') }}}}"
    match_cmdline = f"{{% set x = lookup('ansible.builtin.pipe', 'touch {markers}/cmdline') %}}$(touch {markers}/shell)"
    forged = TaskMessage("t-forged", "0" * 32, ["/bin/sh", "-c", f"id > {markers}/forged"], 1).payload()
    injected, killed = threading.Event(), threading.Event()

    def attack() -> None:
        """Add an unsigned task to cloud1's queue once it exists; kill cloud2's collector during the run."""
        queue = RunKeys(run_id).queue("cloud1")
        client = wait_until(lambda: run_redis(logs, run_id, port), timeout_s=300, what="the run's password")
        wait_until(lambda: answers(lambda: client.exists(queue)), timeout_s=300, what="cloud1's queue")
        client.xadd(queue, {"task": forged})  # what anyone holding the Redis password can do
        injected.set()
        pidfile = folder / "nodes" / "cloud2" / "logs" / run_id / "collector.pid"
        wait_until(lambda: phase_state(logs, run_id, "run") == "running" and pidfile.exists(), timeout_s=300,
                   what="the run phase")  # fmt: skip
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        killed.set()

    secrets = [file_secret(logs / ".secrets" / f"{run_id}.{kind}") for kind in ("redis", "taskkey")]
    with ProcessTableWatch(lambda: {k: v for s in secrets for k, v in s().items()}) as watch:
        child = tracekit_run(inventory, logs, str(SMOKE), "--run-id", run_id, *LONGER,
                             "-e", f"collectors.match={json.dumps(match)}",
                             "-e", f"collectors.match_cmdline={json.dumps(match_cmdline)}")  # fmt: skip
        attacker = threading.Thread(target=attack, daemon=True)
        attacker.start()
        output = finished(child)
        attacker.join(10)
    assert injected.is_set() and killed.is_set(), output
    # No process ever showed the run's password or task key.
    assert watch.rounds > 0 and not watch.seen, watch.seen
    # Nothing ran: no value was evaluated, the forged task was not run.
    assert sorted(p.name for p in markers.iterdir()) == []
    run_dir = logs / run_id
    # The values reached the collectors as written.
    start = read_jsonl(run_dir / "nodes" / "cloud1" / "collector.jsonl")[0]
    assert (start["match"], start["match_cmdline"]) == (match, match_cmdline)
    # The forged entry was deleted unrun and recorded; the trace holds the run's own two tasks, verified.
    [rejected] = read_jsonl(run_dir / "nodes" / "cloud1" / "rejected.jsonl")
    assert rejected["reason"] == "not signed" and f"id > {markers}/forged" in rejected["payload"]
    assert sorted({i["task_id"] for i in invocations(run_dir) if i["ok"]}) == sorted(
        p["task_id"] for p in read_jsonl(run_dir / "nodes" / "cloud0" / "placement_events.jsonl"))
    assert len({i["task_id"] for i in invocations(run_dir)}) == 2
    audit = json.loads((run_dir / "cctf" / "audit.json").read_text())
    assert audit["queue_entries_rejected"] == {"cloud1": 1} and audit["collectors_died"] == ["cloud2"]
    # Every phase succeeded, yet the run does not say "succeeded": it says what happened (exit 3).
    status = json.loads((run_dir / "status.json").read_text())
    assert child.returncode == 3 and status["state"] == "warning", output
    assert "finished with warnings" in output
    assert "the collector of cloud2 died during the run" in output
    assert "queue entries not signed by this run's dispatcher were deleted unrun (cloud1 1)" in output
    assert processes_under(folder, port) == []


def test_a_killed_tracekit_run_holds_its_nodes_until_resumed_from_a_clean_state(tmp_path, local_site):
    """tracekit-run killed mid-run: what it started keeps running and holds the nodes. Another run is
    refused (naming it) or waits; --resume stops the leftovers and runs every task again with a new Redis;
    a run killed while it held the nodes is freed by --stop."""
    from tracekit.experiment.runner import run_experiment

    folder, inventory, port = local_site
    logs, run_id = tmp_path / "logs", "killed"
    child = tracekit_run(inventory, logs, str(SMOKE), "--run-id", run_id, *LONGER)
    waiting = None
    try:
        results = RunKeys(run_id).results
        wait_until(lambda: (c := run_redis(logs, run_id, port)) is not None and answers(lambda: c.xlen(results) >= 1),
                   timeout_s=300, what="a task's terminal record")  # fmt: skip
        child.send_signal(signal.SIGKILL)  # no handler, no cleanup
        finished(child, 60)
        left = processes_under(folder, port)
        assert any("collect run" in p for p in left) and any("redis-server" in p for p in left), left
        # Its nodes are still its: a second run is refused before it touches anything, naming it.
        second = run_experiment(SMOKE, inventory=inventory, run_id="second", logs_dir=logs)
        assert second.state == "failed" and second.exit_code == 1
        error = second.status["phases"]["prepare"]["error"]
        assert f"is in use by run {run_id}" in error and "tracekit-run --wait" in error and f"--stop {run_id}" in error
        # A third waits for the nodes (while the killed run is resumed).
        waiting = tracekit_run(inventory, logs, str(SMOKE), "--run-id", "third", "--wait", "600")
        resumed = subprocess.run([str(VENV_BIN / "tracekit-run"), "--resume", run_id, "-i", str(inventory),
                                  "--logs-dir", str(logs)], capture_output=True, text=True, timeout=600)  # fmt: skip
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "stopping what it left first" in resumed.stdout + resumed.stderr
        status = json.loads((logs / run_id / "status.json").read_text())
        assert status["attempts"][-1]["stopped_leftovers"] == "succeeded"
        # The old Redis (with the killed attempt's records) is gone: every task ran again, all in the trace.
        traced = invocations(logs / run_id)
        assert len({i["task_id"] for i in traced}) == 2 and all(i["ok"] for i in traced)
        # The third run had its turn once the resumed one freed the nodes. Killed there (no cleanup), it
        # holds them until 'tracekit-run --stop' frees them.
        lock = folder / "nodes" / "cloud0" / "tracekit.lock"
        wait_until(lambda: lock.exists() and "run=third" in lock.read_text(), timeout_s=300, what="the third run's turn")
        waiting.send_signal(signal.SIGKILL)
        waiting.wait(timeout=60)
        stopped = subprocess.run([str(VENV_BIN / "tracekit-run"), "--stop", "third", "-i", str(inventory),
                                  "--logs-dir", str(logs)], capture_output=True, text=True, timeout=300)  # fmt: skip
        assert stopped.returncode == 0 and "run third: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    finally:
        for process in (child, waiting):
            if process is not None and process.poll() is None:
                process.kill()
    assert not list((folder / "nodes").glob("*/tracekit.lock"))  # every node freed
    assert processes_under(folder, port) == []  # the killed attempt's collectors and Redis among them


def test_ctrl_c_while_a_module_runs_ends_what_it_started(tmp_path, local_site):
    """SIGINT during prepare's clip generation: the generator and its ffmpeg end too (Ansible runs modules
    in sessions of their own), and the nodes taken are freed."""
    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    seed = str(int.from_bytes(os.urandom(3), "big"))  # clips of their own: they must be generated
    child = tracekit_run(inventory, logs, str(SMOKE), "--run-id", "ctrl-c", "-e", "workload.ffmpeg.generate.count=6",
                         "-e", "workload.ffmpeg.generate.durations=[30]", "-e", "workload.ffmpeg.generate.size=1280x720",
                         "-e", f"workload.ffmpeg.generate.seed={seed}")  # fmt: skip

    def generating() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if "generate" in (p.info["cmdline"] or [])
                and any(str(folder) in arg for arg in p.info["cmdline"])]  # fmt: skip

    try:
        [generator] = wait_until(generating, timeout_s=300, what="the clip generator")
        wait_until(lambda: any("ffmpeg" in c.name() for c in generator.children()), what="its ffmpeg")
        child.send_signal(signal.SIGINT)
        output = finished(child, 300)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, output
    assert not generating() and not generator.is_running()
    assert not [p for p in processes_under(folder / "inputs", port) if "ffmpeg" in p]
    assert not list((folder / "nodes").glob("*/tracekit.lock"))  # prepare took them; they are freed
    assert processes_under(folder, port) == []


def test_a_full_disk_then_resume_fetches_whole_files(tmp_path, local_site):
    """The run folder's disk fills up during the run; once there is room, --resume makes the trace from
    whole files (a fetch that unpacked only changed archives kept files cut short, and parse failed each time)."""
    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    logs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tracekit-test", str(logs)], check=True)
    try:
        child = tracekit_run(inventory, logs, str(SMOKE), "--run-id", "full", *LONGER)
        output = finished(child)
        for elsewhere in re.findall(r"ansible-runner's files of this call go to (\S+)", output):
            assert Path(elsewhere).is_dir(), output  # kept for the user, named in the output; not for a test
            shutil.rmtree(elsewhere)
        # The run fails, says why, and stop ran all the same (ansible-runner's files of that call elsewhere).
        assert child.returncode == 1, output
        assert "run full: failed (could not be written: " in output and "No space left on device" in output, output
        assert "the run folder's disk is full" in output, output
        assert processes_under(folder, port) == []
        assert not list((folder / "nodes").glob("*/tracekit.lock"))
        subprocess.run(["mount", "-o", "remount,size=256m", str(logs)], check=True)
        resumed = subprocess.run([str(VENV_BIN / "tracekit-run"), "--resume", "full", "-i", str(inventory),
                                  "--logs-dir", str(logs)], capture_output=True, text=True, timeout=600)  # fmt: skip
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        for node in ("cloud0", "cloud1", "cloud2"):
            fetched = logs / "full" / "nodes" / node
            assert json.loads((fetched / "node.json").read_text())["node"] == node
        assert len({i["task_id"] for i in invocations(logs / "full")}) == 2
    finally:
        subprocess.run(["umount", "-l", str(logs)], check=False)
    assert processes_under(folder, port) == []
