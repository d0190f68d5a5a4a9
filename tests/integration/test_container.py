"""Tasks and services in real podman containers (runc; the host's own tree as an overlay, no registry)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import followed_processes, kill_processes_under, processes_under, tracekit_cmd, wait_until
from tests.integration.test_http_experiment import http_site
from tracekit.container import ContainerSpec
from tracekit.experiment.runner import run_experiment
from tracekit.invocation import Invocation, run_invocation
from tracekit.jsonl import read_jsonl, write_json
from tracekit.taskcgroup import TaskCgroups, cgroup_mount_points
from tracekit.trace import cctf

REPO = Path(__file__).resolve().parents[2]
HOST_TREE = ContainerSpec("podman", rootfs="/", runtime="runc")
# Burns CPU until its own process time reaches the given seconds, then writes that time where it was told.
BURN = "import sys, time\nwhile time.process_time() < float(sys.argv[1]): pass\nopen(sys.argv[2], 'w').write(str(time.process_time()))"

if shutil.which("podman") is None or shutil.which("runc") is None:
    pytest.fail("podman and runc are needed (make test installs them: apt-get install podman runc)", pytrace=False)


def discovery_mode(run_dir: Path, node: str) -> str:
    """How the node's collector found processes: "events" (the kernel's) or "polling"."""
    return json.loads((run_dir / "nodes" / node / "node.json").read_text())["process_discovery"]["mode"]


def containers_named(prefix: str) -> list[str]:
    listing = subprocess.run(["podman", "ps", "--all", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60)
    return [name for name in listing.stdout.split() if name.startswith(prefix)]


def cgroups_of_run(run_id: str) -> list[str]:
    """Every cgroup folder of the run, in every mounted hierarchy (the engine's too)."""
    points = cgroup_mount_points(Path("/proc/self/mountinfo").read_text())
    return [str(p) for point in points for p in Path(point).glob(f"**/tracekit/{run_id}")]


@pytest.fixture
def task_cgroups(tmp_path):
    run_id = f"ct{os.getpid()}"
    found = TaskCgroups.detect(run_id, "n1", tmp_path / "logs" / run_id)
    assert not found.unavailable, found.unavailable
    yield run_id, found
    found.clear_leftovers()
    found.close()


def run_boxed(tmp_path: Path, run_id: str, cgroups: TaskCgroups, argv: list[str], spec: ContainerSpec = HOST_TREE,
              **options) -> dict:  # fmt: skip
    outputs = tmp_path / "outputs"
    outputs.mkdir(exist_ok=True)
    invocation = Invocation(argv=argv, run_id=run_id, logs_dir=tmp_path / "logs", module="boxed", node_id="n1",
                            task_id="t1", cwd=str(outputs), container=spec, mounts=(str(outputs),), own_group=True,
                            stderr=tmp_path / "stderr.txt", **options)  # fmt: skip
    return run_invocation(invocation, cgroups=cgroups)


def test_a_task_in_a_container_is_counted_whole_by_its_cgroup_and_leaves_nothing(tmp_path, task_cgroups):
    run_id, cgroups = task_cgroups
    result = tmp_path / "outputs" / "burned.txt"
    event = run_boxed(tmp_path, run_id, cgroups, [sys.executable, "-c", BURN, "0.4", str(result)],
                      env={"TK_SECRETISH": "a value; $(id) {{ x }}"})  # fmt: skip
    assert event["status"] == 0, event
    burned_ms = float(result.read_text()) * 1000  # written inside the container, in the mounted outputs folder
    assert burned_ms >= 400
    # The engine's client is all rusage sees; the task's cgroup holds the container (and the engine's monitor).
    rusage_ms = event["cpu_user_ms"] + event["cpu_system_ms"]
    assert rusage_ms < burned_ms <= event["cgroup_cpu_ms"]
    assert len(event["container_id"]) == 64 and event["container_name"] == f"tk-{run_id}-n1-t1-1"
    assert event["container_engine"] == "podman" and event["image"] == "rootfs:/"
    assert event["argv"][0] == sys.executable  # the task's argv, not the engine's
    # Nothing is left: the container was removed, its cgroups and the task's in every hierarchy too.
    assert containers_named(f"tk-{run_id}-") == []
    assert cgroups.leftovers() == [] and "cgroup_kept" not in event
    cgroups.close()
    assert cgroups_of_run(run_id) == []


def test_the_environment_reaches_the_container_by_name_and_its_values_no_command_line(tmp_path, task_cgroups):
    run_id, cgroups = task_cgroups
    seen = tmp_path / "outputs" / "seen.txt"
    value = "a value; $(id) {{ lookup('pipe', 'id') }}"
    script = f"import os; open({str(seen)!r}, 'w').write(os.environ['TK_VALUE'] + '|' + os.environ['TRACEKIT_NODE_ID'])"
    event = run_boxed(tmp_path, run_id, cgroups, [sys.executable, "-c", script], env={"TK_VALUE": value})
    assert event["status"] == 0, event
    assert seen.read_text() == f"{value}|n1"


def test_an_engine_failure_is_a_failed_task_with_the_engine_s_line_and_no_container(tmp_path, task_cgroups):
    run_id, cgroups = task_cgroups
    event = run_boxed(tmp_path, run_id, cgroups, ["true"], ContainerSpec("podman", image="localhost/tracekit-absent:0",
                                                                        runtime="runc", options=("--pull=never",)))  # fmt: skip
    assert event["status"] == 125 and "the container engine failed (podman, exit status 125)" in event["error"]
    assert "Error:" in event["stderr_tail"] and "tracekit-absent" in event["stderr_tail"]
    assert event["container_id"] is None
    assert containers_named(f"tk-{run_id}-") == [] and cgroups.leftovers() == []


def test_a_missing_engine_is_a_failed_task_naming_it(tmp_path, task_cgroups, monkeypatch):
    run_id, cgroups = task_cgroups
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman on it
    from tracekit.errors import CommandNotFound

    with pytest.raises(CommandNotFound, match="container engine not found: podman"):
        run_boxed(tmp_path, run_id, cgroups, ["true"])
    [event] = list(read_jsonl(tmp_path / "logs" / run_id / "events.boxed.jsonl"))
    assert event["status"] == 127 and event["container_engine"] == "podman"
    assert cgroups.leftovers() == []


def test_a_stop_removes_the_container_a_killed_worker_left(tmp_path, task_cgroups):
    """A worker SIGKILLed mid-task leaves its container running (the engine's monitor is not its child):
    `tracekit worker --stop` removes it by its run's name prefix, and what it left in its cgroups."""
    run_id, cgroups = task_cgroups
    folder = tmp_path / "logs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "task_cgroups.json", {"node": "n1", "run_id": run_id, **cgroups.describe()})
    script = (
        "import sys\nfrom pathlib import Path\nfrom tracekit.container import ContainerSpec\n"
        "from tracekit.invocation import Invocation, run_invocation\nfrom tracekit.taskcgroup import TaskCgroups\n"
        f"logs = Path({str(tmp_path / 'logs')!r})\n"
        f"cgroups = TaskCgroups.detect({run_id!r}, 'n1', logs / {run_id!r})\n"
        f"run_invocation(Invocation(argv=['sleep', '300'], run_id={run_id!r}, logs_dir=logs, module='boxed', node_id='n1',"
        " task_id='t9', own_group=True, container=ContainerSpec('podman', rootfs='/', runtime='runc')), cgroups=cgroups)\n"
    )  # fmt: skip
    worker = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        wait_until(lambda: containers_named(f"tk-{run_id}-n1-t9"), timeout_s=60, what="the task's container")
        wait_until(lambda: _running(f"tk-{run_id}-n1-t9-1"), timeout_s=60, what="the container running")
        os.killpg(worker.pid, 9)  # the worker and the engine's client: the container lives on
        worker.wait(timeout=10)
        assert containers_named(f"tk-{run_id}-n1-t9")
        stopped = subprocess.run(tracekit_cmd("worker", "--stop", "--run-id", run_id, "--logs-dir", str(tmp_path / "logs"),
                                              "--json"), capture_output=True, text=True, timeout=120)  # fmt: skip
        answer = json.loads(stopped.stdout)
        assert stopped.returncode == 0 and answer["changed"] is True, stopped.stderr
        assert "removed 1 containers its tasks left" in answer["message"], answer
        assert containers_named(f"tk-{run_id}-") == [] and cgroups.leftovers() == []
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 9)
            worker.wait()
        subprocess.run(["podman", "rm", "--force", f"tk-{run_id}-n1-t9-1"], capture_output=True, timeout=60)


def _running(name: str) -> bool:
    state = subprocess.run(["podman", "inspect", "--format", "{{.State.Running}}", name], capture_output=True, text=True, timeout=60)
    return state.stdout.strip() == "true"


def test_the_collector_follows_a_container_s_processes_as_its_task_s(tmp_path, task_cgroups):
    run_id, cgroups = task_cgroups
    folder = tmp_path / "logs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "task_cgroups.json", {"node": "n1", "run_id": run_id, **cgroups.describe()})
    collector = subprocess.Popen(tracekit_cmd("collect", "run", "--run-id", run_id, "--node-id", "n1", "--logs-dir",
                                              str(tmp_path / "logs"), "--interval-ms", "100", "--duration", "60"))  # fmt: skip
    try:
        wait_until(lambda: (folder / "collector.jsonl").exists(), timeout_s=30, what="the collector's start")
        event = run_boxed(tmp_path, run_id, cgroups, [sys.executable, "-c", BURN, "0.6", str(tmp_path / "outputs" / "b")])
        assert event["status"] == 0, event
    finally:
        collector.terminate()
        collector.wait(timeout=30)
    processes = followed_processes(folder / "processes.jsonl")
    inside = [p for p in processes if p["container_id"] == event["container_id"]]
    # The container's python: not a child of the registered engine client, found in the task's cgroup.
    assert [p for p in inside if p["cmdline"][1:3] == ["-c", BURN]], processes
    assert all(p["task_id"] == "t1" and p["reason"] in ("cgroup", "descendant") for p in inside), inside
    [registered] = [p for p in processes if p["reason"] == "registered"]
    assert registered["task_id"] == "t1" and registered["container_id"] is None  # the client, on the host


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ffmpeg_tasks_in_containers_through_tracekit_run(tmp_path, local_site):
    """experiments/container.yaml on the local inventory: each transcode in a podman container of its own."""
    folder, inventory, port = local_site
    logs = tmp_path / "logs"
    try:
        result = run_experiment(REPO / "experiments" / "container.yaml", inventory=inventory, run_id="boxed-ffmpeg",
                                logs_dir=logs, overrides=["workers.keep_outputs=true"])  # fmt: skip
        run_dir = logs / "boxed-ffmpeg"
        assert result.state == "succeeded", result.summary
        invocations = [i for i in read_jsonl(run_dir / "cctf" / "invocations.jsonl") if i["module"] == "ffmpeg"]
        assert len(invocations) == 2 and all(i["ok"] for i in invocations)
        assert all(len(i["container_id"]) == 64 and i["image"] == "rootfs:/" for i in invocations)
        # Its cgroup holds the container's ffmpeg: more than the engine client's rusage, and sampled.
        assert all(i["cgroup_cpu_ms"] > i["cpu_user_ms"] + i["cpu_system_ms"] and i["cgroup_samples"] for i in invocations)
        audit = json.loads((run_dir / "cctf" / "audit.json").read_text())
        assert audit["cgroup_accounting"]["tasks_in_containers"] == 2 and audit["cgroup_accounting"]["tasks_apart"] == 0
        # The trace names the containers its ffmpeg processes ran in, as their tasks'.
        samples = cctf.read_table(run_dir / "cctf", "proc_metrics").to_pylist()
        boxed = {(s["container_id"], s["task_id"]) for s in samples if s["comm"] == "ffmpeg"}
        expected = {(i["container_id"], i["task_id"]) for i in invocations}
        if all(discovery_mode(run_dir, i["node"]) == "events" for i in invocations):
            assert boxed == expected  # short ones too: found at their exec
        else:  # polling (a PID namespace of its own): a transcode of 0.1 s may fall between two samples of 200 ms,
            assert boxed <= expected  # both did in a fresh root once; what is sampled is the right container's
        for invocation in invocations:  # the transcode landed in the node's outputs folder, mounted
            assert (folder / "nodes" / invocation["node"] / "outputs" / "boxed-ffmpeg" / f"{invocation['task_id']}.mp4").stat().st_size > 0
        page = (run_dir / "report" / "index.html").read_text()
        assert all(f"<td>{i['container_id'][:12]}</td>" in page for i in invocations)
        assert containers_named("tk-boxed-ffmpeg-") == [] and cgroups_of_run("boxed-ffmpeg") == []
        assert processes_under(folder, port) == []
    finally:
        kill_processes_under(folder, port)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_http_service_in_a_container_through_tracekit_run(tmp_path, local_site):
    """experiments/http.yaml with its service in a podman container on each node (the host's tree, so the
    node's Tracekit venv runs it): the requests are traced server-side, the processes carry the container."""
    folder, inventory, port = http_site(tmp_path, local_site)
    logs = tmp_path / "logs"
    overrides = ["workload.http.load.rate=20", "workload.http.load.duration=2s", "workload.http.load.warmup=null",
                 "workload.http.container={engine: podman, rootfs: /, runtime: runc}", "collectors.interval_ms=200"]  # fmt: skip
    try:
        result = run_experiment(REPO / "experiments" / "http.yaml", inventory=inventory, run_id="boxed-http",
                                logs_dir=logs, overrides=overrides)  # fmt: skip
        run_dir = logs / "boxed-http"
        assert result.state == "succeeded", result.summary
        results = json.loads((run_dir / "results.json").read_text())
        assert results["requests"]["success_ratio"] == 1.0 and results["requests"]["requests"] == 40
        served = [i for i in read_jsonl(run_dir / "cctf" / "invocations.jsonl") if i["module"] == "http"]
        assert len(served) == 40  # the middleware in the container wrote into the mounted run folder
        samples = cctf.read_table(run_dir / "cctf", "proc_metrics").to_pylist()
        ids = set()
        for node in ("cloud1", "cloud2"):
            described = json.loads((run_dir / "nodes" / node / "http_service.json").read_text())
            assert described["container_name"] == f"tk-boxed-http-{node}-service" and len(described["container_id"]) == 64
            ids.add(described["container_id"])
            # Its container's cgroup, below the service's own: exact totals at stop, at least what its processes'
            # samples hold (they are its processes; the cgroup has the engine's monitor and every short child too).
            sampled_ms = sum(s["cpu_user_ms"] + s["cpu_system_ms"] for s in samples if s["container_id"] == described["container_id"])
            assert 0 < sampled_ms <= described["container_cgroup_totals"]["cgroup_cpu_ms"] + 20, described
            assert described["container_cgroup_totals"]["cgroup_memory_peak_bytes"] > 0
        assert {s["container_id"] for s in samples if s["container_id"]} == ids
        page = (run_dir / "report" / "index.html").read_text()
        assert all(f"<td>{i[:12]}</td>" in page for i in ids)
        assert containers_named("tk-boxed-http-") == []
        assert processes_under(folder, port) == []
    finally:
        kill_processes_under(folder, port)
        for name in containers_named("tk-boxed-http-"):
            subprocess.run(["podman", "rm", "--force", name], capture_output=True, timeout=60)
