"""A sweep on the local inventory, end to end: the worker count swept (2 and 1) x 2 repetitions, the nodes
prepared once, a Ctrl-C during a run (stopped and fetched like a run), --resume, and the summary of the
four runs."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import VENV_BIN, kill_processes_under, processes_under, wait_until
from tracekit.sweep.run import run_sweep

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"
PREPARE_PLAY = "Install Tracekit on every node"  # playbooks/prepare.yml: one per prepare phase

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _job_events(run_dir: Path):
    """The events of a run's Ansible calls (ansible-runner's job_events)."""
    for event in (run_dir / "ansible" / "artifacts").glob("*/job_events/*.json"):
        yield json.loads(event.read_text())


def _prepare_plays(run_dir: Path) -> int:
    """Prepare plays that ran a task of their own in a run's Ansible calls (a play the phase tags leave out
    starts all the same and checks its roles' arguments, nothing more)."""
    ran = set()
    for data in _job_events(run_dir):
        found = data.get("event_data", {})
        if (data.get("event") == "runner_on_start" and found.get("play") == PREPARE_PLAY
                and not str(found.get("task")).startswith("Validating arguments")):  # fmt: skip
            ran.add(found.get("play_uuid"))
    return len(ran)


def _locks_taken(run_dir: Path) -> int:
    """Hosts on which a run's calls took the node lock (tracekit_lock's task ran, not skipped)."""
    return sum(data.get("event") == "runner_on_ok" and str(data.get("event_data", {}).get("task")).startswith("Take the node")
               for data in _job_events(run_dir))  # fmt: skip


def _ran(run_dir: Path, task: str) -> int:
    """Hosts on which a run's calls ran a task (not skipped)."""
    return sum(data.get("event") == "runner_on_ok" and data.get("event_data", {}).get("task") == task
               for data in _job_events(run_dir))  # fmt: skip


REDIS_START = "Start redis-server (no systemd needed)"  # roles/tracekit_redis: a server that did not run
REDIS_STOP = "Stop redis-server (no data kept) and remove its config (it holds the password)"


def test_a_sweep_prepares_once_survives_ctrl_c_resumes_and_sums_up_its_runs(tmp_path, local_site):
    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    sweep_dir = logs / "sweep-t"
    argv = [str(VENV_BIN / "tracekit-run"), str(SMOKE), "-i", str(inventory), "--logs-dir", str(logs), "--run-id", "sweep-t",
            "--matrix", "workers.count=[2, 1]", "--repeat", "2"]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: (sweep_dir / "sweep.json").is_file(), timeout_s=120, what="the sweep's record")
        runs = json.loads((sweep_dir / "sweep.json").read_text())["runs"]
        second = sweep_dir / runs[1]["folder"]
        # Ctrl-C while the second run starts its nodes: it is stopped and fetched like a run, the sweep ends there.
        wait_until(lambda: _status(second).get("phases", {}).get("start", {}).get("state") == "running",
                   timeout_s=600, what="the second run's start")  # fmt: skip
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, output
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["state"] for r in record["runs"]] == ["succeeded", "interrupted", "pending", "pending"], output
    interrupted = _status(second)
    assert interrupted["phases"]["stop"]["state"] == "succeeded" and interrupted["phases"]["fetch"]["state"] == "succeeded"
    assert interrupted["phases"]["prepare"]["state"] == "skipped"  # the first run prepared the nodes
    assert record["nodes_freed"] is True and f"tracekit-run --resume sweep-t" in output
    assert processes_under(folder, port) == []

    result = run_sweep(resume="sweep-t", logs_dir=logs, out=lambda _line: None)
    assert result.state == "succeeded" and result.exit_code == 0, result.lines
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["state"] for r in record["runs"]] == ["succeeded"] * 4
    folders = [sweep_dir / r["folder"] for r in record["runs"]]
    # The nodes were prepared once, by the first run (two workers: every node), also for the resumed sweep.
    assert [_prepare_plays(f) for f in folders] == [1, 0, 0, 0]
    assert [_status(f)["phases"]["prepare"]["state"] for f in folders] == ["succeeded", "skipped", "skipped", "skipped"]
    assert {r["prepared_by"] for r in record["runs"]} == {record["runs"][0]["run_id"]}
    # The first run took the nodes (prepare and start); the last found them held by the sweep (its one worker's).
    assert _locks_taken(folders[0]) == 6 and _locks_taken(folders[3]) == 0
    # One Redis per tracekit-run of the sweep, up from its first start to its end (the first tracekit-run ended
    # in the second run, the resumed one in the fourth), under the sweep's id, none of a run's own.
    assert [_ran(f, REDIS_START) for f in folders] == [1, 1, 0, 0]
    assert [_ran(f, REDIS_STOP) for f in folders] == [0, 1, 0, 1]
    redis_dirs = {p.name for p in (folder / "nodes" / "cloud0" / "redis").iterdir()}
    assert "sweep-t" in redis_dirs and not redis_dirs & {r["run_id"] for r in record["runs"]}
    # The sweep's Redis password is gone with its server (its .owner token stays: the nodes' lock holder).
    assert [p.name for p in (logs / ".secrets").glob("sweep-t.*")] == ["sweep-t.owner"] and not (folder / "nodes" / "cloud0" / "redis" / "sweep-t" / "redis.conf").exists()
    # One worker: every task on cloud1, cloud2 no node of the run; two: both placed on.
    for run_folder in folders:
        count = json.loads((run_folder / "resolved.json").read_text())["experiment"]["workers_count"]
        per_node = json.loads((run_folder / "results.json").read_text())["tasks"]["per_node"]
        assert sorted(per_node) == ["cloud1", "cloud2"][:count] and sum(n["done"] for n in per_node.values()) == 2
        fetched = sorted(p.name for p in (run_folder / "nodes").iterdir() if p.is_dir())
        assert fetched == ["cloud0", "cloud1", "cloud2"][: count + 1]
    # The table: each point's two runs, its makespan's mean and interval.
    table = pq.read_table(sweep_dir / "summary.parquet").to_pylist()
    makespans = [row for row in table if row["figure"] == "makespan_s"]
    assert sorted(row["workers.count"] for row in makespans) == [1, 2]
    assert all(row["n"] == 2 and row["ci95_low"] <= row["mean"] <= row["ci95_high"] for row in makespans)
    assert (sweep_dir / "summary.md").is_file() and (sweep_dir / "report" / "index.html").is_file()
    # tracekit compare on run folders alone (as if made one tracekit-run at a time): the same points, from the
    # values that differ between the runs' resolved experiments.
    compared = subprocess.run([str(VENV_BIN / "tracekit"), "compare", *map(str, folders), "-o", str(tmp_path / "cmp")],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    again = pq.read_table(tmp_path / "cmp" / "summary.parquet").to_pylist()
    assert sorted((r["workers_count"], r["n"]) for r in again if r["figure"] == "makespan_s") == [(1, 2), (2, 2)]
    assert processes_under(folder, port) == []
    kill_processes_under(folder, port)


FAILING = """name: sweep-fail
collectors: {interval_ms: 200, match: null}
workload:
  command:
    argv: ["true"]
dispatch: {policy: round-robin, timeout: 120}
sweep:
  matrix:
    workload.command.argv: [["true"], ["false"]]
  order: given
"""


def test_a_failed_point_is_recorded_the_sweep_goes_on_and_exits_1(tmp_path, local_site):
    folder, inventory, port = local_site
    experiment = tmp_path / "failing.yaml"
    experiment.write_text(FAILING)
    logs = tmp_path / "logs"
    cli = subprocess.run([str(VENV_BIN / "tracekit-run"), str(experiment), "-i", str(inventory), "--logs-dir", str(logs),
                          "--run-id", "sweep-f"], capture_output=True, text=True, timeout=900)  # fmt: skip
    assert cli.returncode == 1, cli.stdout + cli.stderr
    record = json.loads((logs / "sweep-f" / "sweep.json").read_text())
    assert [r["state"] for r in record["runs"]] == ["succeeded", "failed"]
    assert "sweep sweep-f: failed (2 runs: 1 failed, 1 succeeded)" in cli.stdout
    assert "1-argv-false-r1: failed" in cli.stdout and "tracekit-run --resume sweep-f" in cli.stdout
    rows = {r["label"]: r for r in pq.read_table(logs / "sweep-f" / "summary.parquet").to_pylist() if r["figure"] == "tasks_failed"}
    assert (rows['workload.command.argv=["true"]']["n"], rows['workload.command.argv=["true"]']["mean"]) == (1, 0)
    assert (rows['workload.command.argv=["false"]']["n"], rows['workload.command.argv=["false"]']["n_failed"]) == (0, 1)
    assert record["nodes_freed"] is True and processes_under(folder, port) == []
