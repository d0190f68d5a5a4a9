"""Ansible roles run for real with ansible-runner on this machine (local connection):
they do their job, a second run changes nothing, their argument specs agree
with their defaults."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import urllib.request
import sys
from pathlib import Path

import ansible_runner
import psutil
import pytest
import redis
import yaml

from tests.helpers import ProcessTableWatch, wait_until
from tracekit.trace import nodeparse
from tracekit.trace.rawrun import load_node_folder

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())


def run_role(tmp_path: Path, role: str, variables: dict, ident: str) -> ansible_runner.Runner:
    """Include ``role`` from a user's playbook on localhost, as the role's README shows."""
    playbook = [{"hosts": "localhost", "gather_facts": False,
                 "tasks": [{"ansible.builtin.include_role": {"name": role}, "vars": variables}]}]  # fmt: skip
    data = tmp_path / "runner"
    (data / "project").mkdir(parents=True, exist_ok=True)
    (data / "project" / "play.yml").write_text(yaml.safe_dump(playbook))
    inventory = f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    return ansible_runner.run(
        private_data_dir=str(data), playbook="play.yml", inventory=inventory, ident=ident, quiet=True,
        envvars={"ANSIBLE_ROLES_PATH": str(REPO / "roles"), "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip


def changed(runner: ansible_runner.Runner) -> int:
    return sum(runner.stats.get("changed", {}).values())


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_agree_with_defaults(role):
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults), role
    for name, option in options.items():
        assert name.startswith(f"{role}_"), name  # role-prefixed variables
        if not option.get("required"):
            assert option.get("default") == defaults[name], name
    assert (REPO / "roles" / role / "README.md").exists()


def test_redis_role_starts_a_protected_server_and_is_idempotent(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A password as a user of the role may pick one: a space, quotes, a backslash (redis.conf and AUTH quote it).
    password = secrets.token_hex(16) + ' "x\\ y'
    variables = {"tracekit_redis_dir": str(tmp_path / "redis"), "tracekit_redis_port": port,
                 "tracekit_redis_password": password, "tracekit_redis_install": False}  # fmt: skip
    # The password shows in no process's argv or environment at any moment (sampled all along).
    watch = ProcessTableWatch(lambda: {"password": password})
    try:
        with watch:
            first = run_role(tmp_path, "tracekit_redis", variables, "first")
            assert first.rc == 0, first.stdout.read()
            assert changed(first) > 0
            client = redis.Redis(port=port, password=password)
            assert client.ping()
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=port, password="wrong").ping()
            second = run_role(tmp_path, "tracekit_redis", variables, "second")
            assert second.rc == 0 and changed(second) == 0  # idempotent
            assert (tmp_path / "redis" / "redis.conf").stat().st_mode & 0o077 == 0  # root only
            for artifact in (tmp_path / "runner" / "artifacts").rglob("*"):
                if artifact.is_file():
                    assert password not in artifact.read_text(errors="replace"), artifact  # no_log held
            stopped = run_role(tmp_path, "tracekit_redis", {**variables, "tracekit_redis_state": "stopped"}, "stop")
            assert stopped.rc == 0 and changed(stopped) == 1
            with pytest.raises(redis.ConnectionError):
                redis.Redis(port=port, password=password, socket_connect_timeout=1).ping()
            # The config held the password: gone with the server.
            assert not (tmp_path / "redis" / "redis.conf").exists()
            again = run_role(tmp_path, "tracekit_redis", {**variables, "tracekit_redis_state": "stopped"}, "stop-again")
            assert again.rc == 0 and changed(again) == 0
        assert watch.rounds > 0 and not watch.seen, watch.seen
    finally:
        try:
            redis.Redis(port=port, password=password).shutdown(nosave=True)
        except redis.ConnectionError:
            pass


def test_redis_role_never_signals_a_process_that_took_over_the_pid_of_its_server(tmp_path, children):
    # The pidfile outlived its server (killed, machine rebooted) and the kernel gave the PID to
    # another process: the role runs as root, so a SIGTERM would kill whatever that is.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    innocent = children(["sleep", "300"])
    folder = tmp_path / "redis"
    folder.mkdir(mode=0o700)
    (folder / "redis.pid").write_text(f"{innocent.pid}\n")
    password = secrets.token_hex(16)
    variables = {"tracekit_redis_dir": str(folder), "tracekit_redis_port": port,
                 "tracekit_redis_password": password, "tracekit_redis_install": False}  # fmt: skip
    stopped = run_role(tmp_path, "tracekit_redis", {**variables, "tracekit_redis_state": "stopped"}, "stop-stale")
    assert stopped.rc == 0 and innocent.poll() is None  # left alone
    assert not (folder / "redis.pid").exists() and changed(stopped) == 1  # the stale pidfile removed
    (folder / "redis.pid").write_text(f"{innocent.pid}\n")
    try:
        started = run_role(tmp_path, "tracekit_redis", variables, "start-over-stale")
        assert started.rc == 0, started.stdout.read()
        assert redis.Redis(port=port, password=password).ping()  # not taken for running: started
        assert innocent.poll() is None
    finally:
        try:
            redis.Redis(port=port, password=password).shutdown(nosave=True)
        except redis.ConnectionError:
            pass


TRACEKIT = str(Path(sys.executable).parent / "tracekit")


def test_collector_role_starts_once_and_stops_once(tmp_path):
    variables = {"tracekit_collector_run_id": "role-c", "tracekit_collector_logs_dir": str(tmp_path / "logs"),
                 "tracekit_collector_tracekit": TRACEKIT, "tracekit_collector_interval_ms": 200}  # fmt: skip
    try:
        first = run_role(tmp_path, "tracekit_collector", variables, "start")
        assert first.rc == 0 and changed(first) == 1, first.stdout.read()
        second = run_role(tmp_path, "tracekit_collector", variables, "start-again")
        assert second.rc == 0 and changed(second) == 0
        stop = {**variables, "tracekit_collector_state": "stopped"}
        stopped = run_role(tmp_path, "tracekit_collector", stop, "stop")
        assert stopped.rc == 0 and changed(stopped) == 1
        assert '"event":"stop"' in (tmp_path / "logs" / "role-c" / "collector.jsonl").read_text().replace(" ", "")
        again = run_role(tmp_path, "tracekit_collector", stop, "stop-again")
        assert again.rc == 0 and changed(again) == 0
    finally:
        subprocess.run([TRACEKIT, "collect", "stop", "--run-id", "role-c", "--logs-dir", str(tmp_path / "logs")], capture_output=True)


def test_worker_role_starts_once_and_stops_once(tmp_path, redis_server):
    password_file = tmp_path / "redis.password"
    password_file.write_text(redis_server.password)
    key_file = tmp_path / "task.key"
    key_file.write_text(redis_server.task_key)
    variables = {"tracekit_worker_run_id": "role-w", "tracekit_worker_logs_dir": str(tmp_path / "logs"),
                 "tracekit_worker_tracekit": TRACEKIT, "tracekit_worker_node_id": "cloud1",
                 "tracekit_worker_redis_url": redis_server.url, "tracekit_worker_redis_password_file": str(password_file),
                 "tracekit_worker_task_key_file": str(key_file),
                 "tracekit_worker_outputs": str(tmp_path / "out"), "tracekit_worker_grace": 5}  # fmt: skip
    pidfile = tmp_path / "logs" / "role-w" / "worker.pid"
    try:
        first = run_role(tmp_path, "tracekit_worker", variables, "start")
        assert first.rc == 0 and changed(first) == 1, first.stdout.read()
        pid = int(pidfile.read_text().split()[0])
        assert psutil.pid_exists(pid)
        second = run_role(tmp_path, "tracekit_worker", variables, "start-again")
        assert second.rc == 0 and changed(second) == 0
        assert int(pidfile.read_text().split()[0]) == pid  # still the one worker
        stop = {**variables, "tracekit_worker_state": "stopped"}
        stopped = run_role(tmp_path, "tracekit_worker", stop, "stop")
        assert stopped.rc == 0 and changed(stopped) == 1
        assert not pidfile.exists()
        assert "stopped" in (tmp_path / "logs" / "role-w" / "worker.log").read_text()
        again = run_role(tmp_path, "tracekit_worker", stop, "stop-again")
        assert again.rc == 0 and changed(again) == 0
    finally:
        subprocess.run([TRACEKIT, "worker", "--stop", "--run-id", "role-w", "--logs-dir", str(tmp_path / "logs")], capture_output=True)


def test_dispatcher_role_stops_a_leftover_dispatcher_once(tmp_path):
    folder = tmp_path / "logs" / "role-d"
    folder.mkdir(parents=True)
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (folder / "dispatcher.pid").write_text(f"{leftover.pid} {psutil.Process(leftover.pid).create_time()}\n")
    variables = {"tracekit_dispatcher_state": "stopped", "tracekit_dispatcher_run_id": "role-d",
                 "tracekit_dispatcher_logs_dir": str(tmp_path / "logs"), "tracekit_dispatcher_tracekit": TRACEKIT}  # fmt: skip
    try:
        first = run_role(tmp_path, "tracekit_dispatcher", variables, "stop")
        assert first.rc == 0 and changed(first) == 1
        assert leftover.wait(timeout=10) == -15  # SIGTERM
        second = run_role(tmp_path, "tracekit_dispatcher", variables, "stop-again")
        assert second.rc == 0 and changed(second) == 0
    finally:
        leftover.kill()
        leftover.wait()


GOLDEN_NODE = REPO / "tests" / "data" / "golden-run" / "nodes" / "cloud1"


def test_fetch_role_parses_on_the_node_brings_the_run_folder_and_is_idempotent(tmp_path):
    source = tmp_path / "node" / "logs" / "role-f"
    shutil.copytree(GOLDEN_NODE, source)
    (source / "pids").mkdir()
    variables = {"tracekit_fetch_run_id": "role-f", "tracekit_fetch_logs_dir": str(tmp_path / "node" / "logs"),
                 "tracekit_fetch_dest": str(tmp_path / "run" / "nodes"),
                 "tracekit_fetch_tracekit": str(Path(sys.executable).parent / "tracekit")}  # fmt: skip
    first = run_role(tmp_path, "tracekit_fetch", variables, "fetch")
    assert first.rc == 0 and changed(first) > 0, first.stdout.read()
    fetched = tmp_path / "run" / "nodes" / "localhost"
    assert (fetched / "node.json").read_bytes() == (GOLDEN_NODE / "node.json").read_bytes() and (fetched / "pids").is_dir()
    # The node's part came along, made on the node, and it fits the raw files fetched with it.
    assert (source / "cctf-part" / "part.json").is_file()
    assert nodeparse.read_part(load_node_folder(fetched)) is not None
    second = run_role(tmp_path, "tracekit_fetch", variables, "fetch-again")
    assert second.rc == 0 and changed(second) == 0
    # Files an earlier fetch left short (a full disk) are fetched again, though the archive did not change.
    (fetched / "node.json").write_bytes(b"")
    with open(fetched / "host.csv", "r+") as f:
        f.truncate(100)
    (fetched / "proc.csv").unlink()
    repaired = run_role(tmp_path, "tracekit_fetch", variables, "fetch-repair")
    assert repaired.rc == 0 and changed(repaired) == 1
    for name in ("node.json", "host.csv", "proc.csv"):
        assert (fetched / name).read_bytes() == (source / name).read_bytes(), name
    with open(source / "host.csv", "a") as f:  # new data is parsed and fetched again
        f.write((GOLDEN_NODE / "host.csv").read_text().splitlines()[-1].replace("17", "18", 1) + "\n")
    third = run_role(tmp_path, "tracekit_fetch", variables, "fetch-new")
    assert third.rc == 0 and changed(third) > 0
    assert (fetched / "host.csv").read_text() == (source / "host.csv").read_text()
    assert nodeparse.read_part(load_node_folder(fetched)) is not None


def test_fetch_role_brings_a_run_folder_without_files(tmp_path):
    """A run stopped before its collector wrote anything: nothing to check, nothing that differs."""
    (tmp_path / "node" / "logs" / "role-e").mkdir(parents=True)
    variables = {"tracekit_fetch_run_id": "role-e", "tracekit_fetch_logs_dir": str(tmp_path / "node" / "logs"),
                 "tracekit_fetch_dest": str(tmp_path / "run" / "nodes"),
                 "tracekit_fetch_tracekit": str(Path(sys.executable).parent / "tracekit")}  # fmt: skip
    runner = run_role(tmp_path, "tracekit_fetch", variables, "fetch-empty")
    assert runner.rc == 0, runner.stdout.read()
    assert (tmp_path / "run" / "nodes" / "localhost").is_dir()


def test_fetch_role_says_a_node_without_the_run_folder_has_nothing_to_fetch(tmp_path):
    """A run stopped before it made its folder on this node (Ctrl-C during start): no failure, a message."""
    (tmp_path / "node" / "logs").mkdir(parents=True)
    variables = {"tracekit_fetch_run_id": "role-n", "tracekit_fetch_logs_dir": str(tmp_path / "node" / "logs"),
                 "tracekit_fetch_dest": str(tmp_path / "run" / "nodes"),
                 "tracekit_fetch_tracekit": str(Path(sys.executable).parent / "tracekit")}  # fmt: skip
    runner = run_role(tmp_path, "tracekit_fetch", variables, "fetch-none")
    output = runner.stdout.read()
    assert runner.rc == 0, output
    assert "nothing to fetch from localhost: the run made no folder there" in output
    assert not (tmp_path / "run" / "nodes" / "localhost").exists()


def test_fetch_role_fetches_even_when_the_node_cannot_parse(tmp_path):
    source = tmp_path / "node" / "logs" / "role-g"
    shutil.copytree(GOLDEN_NODE, source)
    variables = {"tracekit_fetch_run_id": "role-g", "tracekit_fetch_logs_dir": str(tmp_path / "node" / "logs"),
                 "tracekit_fetch_dest": str(tmp_path / "run" / "nodes"),
                 "tracekit_fetch_tracekit": str(tmp_path / "no-such-tracekit")}  # fmt: skip
    runner = run_role(tmp_path, "tracekit_fetch", variables, "fetch")
    output = runner.stdout.read()
    assert runner.rc == 0, output
    assert "no part of the trace made on localhost" in output
    assert (tmp_path / "run" / "nodes" / "localhost" / "proc.csv").read_bytes() == (GOLDEN_NODE / "proc.csv").read_bytes()
    assert not (tmp_path / "run" / "nodes" / "localhost" / "cctf-part").exists()


def test_node_role_installs_tracekit_once(tmp_path):
    from tracekit.experiment.wheelhouse import build_wheelhouse

    wheelhouse = build_wheelhouse(Path.home() / ".cache" / "tracekit" / "wheelhouse")
    variables = {"tracekit_node_root": str(tmp_path / "node"), "tracekit_node_wheelhouse": str(wheelhouse),
                 "tracekit_node_packages": ["python3-venv"]}  # fmt: skip
    first = run_role(tmp_path, "tracekit_node", variables, "install")
    assert first.rc == 0 and changed(first) > 0, first.stdout.read()
    installed = subprocess.run([str(tmp_path / "node" / "venv" / "bin" / "tracekit"), "--version"], capture_output=True, text=True)
    assert installed.returncode == 0 and installed.stdout.startswith("tracekit ")
    assert (tmp_path / "node" / "secrets").stat().st_mode & 0o077 == 0
    second = run_role(tmp_path, "tracekit_node", variables, "install-again")
    assert second.rc == 0 and changed(second) == 0


def test_workload_role_gives_a_node_its_files_venv_and_setup_once(tmp_path):
    import tarfile

    from tests.helpers import make_wheel
    from tracekit.experiment.wheelhouse import build_wheelhouse, build_workload_wheels

    root = tmp_path / "node"
    (root / "wheelhouse").mkdir(parents=True)
    with tarfile.open(build_wheelhouse(Path.home() / ".cache" / "tracekit" / "wheelhouse") / "wheelhouse.tar") as tar:
        [pip] = [m for m in tar.getmembers() if m.name.startswith("pip-")]  # what tracekit_node leaves there
        tar.extract(pip, root / "wheelhouse")
    make_wheel(tmp_path / "reqs" / "wheels", "tk_extra_dep", "1.0", "MESSAGE = 'from the wheelhouse'\n")
    (tmp_path / "reqs" / "requirements.txt").write_text("--no-index\n--find-links wheels\ntk_extra_dep==1.0\n")
    wheels = build_workload_wheels(tmp_path / "reqs" / "requirements.txt", tmp_path / "built", False, "test")
    venv = root / "venvs" / (wheels / "wheels.id").read_text()
    files = tmp_path / "files"
    files.mkdir()
    (files / "data.txt").write_text("one")
    script = "import sys, tk_extra_dep; open(sys.argv[1], 'w').write(tk_extra_dep.MESSAGE + ' ' + sys.executable)"
    variables = {"tracekit_workload_root": str(root), "tracekit_workload_tracekit": TRACEKIT,
                 "tracekit_workload_files_src": str(files), "tracekit_workload_files_dir": str(root / "files" / "r1"),
                 "tracekit_workload_wheels": str(wheels), "tracekit_workload_venv": str(venv),
                 "tracekit_workload_outputs": str(root / "outputs" / "r1"),
                 "tracekit_workload_setup": ["python3", "-c", script, "{files}/made.txt"]}  # fmt: skip
    first = run_role(tmp_path, "tracekit_workload", variables, "prepare")
    assert first.rc == 0, first.stdout.read()
    # The setup ran once, on the node's copy, with the venv's python first on PATH and the package in it.
    assert (root / "files" / "r1" / "data.txt").read_text() == "one"
    assert (root / "files" / "r1" / "made.txt").read_text() == f"from the wheelhouse {venv}/bin/python3"
    second = run_role(tmp_path, "tracekit_workload", variables, "prepare-again")
    assert second.rc == 0 and changed(second) == 0  # the same files, wheels and setup: nothing to do
    (files / "data.txt").write_text("two")
    third = run_role(tmp_path, "tracekit_workload", variables, "files-changed")
    assert third.rc == 0 and changed(third) == 2  # the copy, and the setup run again on it
    assert (root / "files" / "r1" / "data.txt").read_text() == "two"


def test_http_service_role_copies_starts_once_and_stops_once(tmp_path, monkeypatch):
    import py_compile

    from tests.sshd import free_port

    # A service folder as a developer's checkout has it: with the __pycache__ of an earlier import, on a
    # machine whose Pythons write bytecode (a fresh one: the second start once counted as a change, the
    # service having rewritten the copied, stale .pyc that the copy then found different from its source).
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    source = tmp_path / "src"
    shutil.copytree(REPO / "examples" / "fastapi_svc", source)
    py_compile.compile(str(source / "app.py"), cfile=str(source / "__pycache__" / f"app.{sys.implementation.cache_tag}.pyc"))
    port = free_port()
    variables = {"tracekit_http_service_run_id": "role-h", "tracekit_http_service_logs_dir": str(tmp_path / "logs"),
                 "tracekit_http_service_tracekit": TRACEKIT, "tracekit_http_service_port": port,
                 "tracekit_http_service_src": str(source),
                 "tracekit_http_service_dir": str(tmp_path / "svc"), "tracekit_http_service_node_id": "cloud1"}  # fmt: skip
    pidfile = tmp_path / "logs" / "role-h" / "http_service.pid"
    try:
        first = run_role(tmp_path, "tracekit_http_service", variables, "start")
        assert first.rc == 0 and changed(first) == 2, first.stdout.read()  # copied, started
        assert (tmp_path / "svc" / "app.py").is_file() and psutil.pid_exists(int(pidfile.read_text().split()[0]))
        second = run_role(tmp_path, "tracekit_http_service", variables, "start-again")
        assert second.rc == 0 and changed(second) == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as reply:
            assert reply.status == 200
        events = tmp_path / "logs" / "role-h" / "events.http.jsonl"
        assert '"node":"cloud1"' in wait_until(lambda: events.exists() and events.read_text(), what="the request's event")
        stop = {**variables, "tracekit_http_service_state": "stopped"}
        stopped = run_role(tmp_path, "tracekit_http_service", stop, "stop")
        assert stopped.rc == 0 and changed(stopped) == 1 and not pidfile.exists()
        again = run_role(tmp_path, "tracekit_http_service", stop, "stop-again")
        assert again.rc == 0 and changed(again) == 0
    finally:
        subprocess.run([TRACEKIT, "serve", "--stop", "--run-id", "role-h", "--logs-dir", str(tmp_path / "logs")], capture_output=True)


def test_load_role_writes_results_and_fails_clearly_without_a_service(tmp_path):
    from tests.httpserve import example_service
    from tests.sshd import free_port

    logs = tmp_path / "logs"
    with example_service(tmp_path / "svc" / "s1", "cloud1", tmp_path / "svc.log") as server:
        variables = {"tracekit_load_run_id": "role-l", "tracekit_load_logs_dir": str(logs), "tracekit_load_tracekit": TRACEKIT,
                     "tracekit_load_urls": [server.url + "/health"], "tracekit_load_rate": "20", "tracekit_load_duration": "1s"}  # fmt: skip
        sent = run_role(tmp_path, "tracekit_load", variables, "load")
        assert sent.rc == 0, sent.stdout.read()
    assert len((logs / "role-l" / "load" / "results.jsonl").read_text().splitlines()) == 20
    assert '"200": 20' in (logs / "role-l" / "load" / "summary.json").read_text()
    nowhere = {**variables, "tracekit_load_run_id": "role-l2", "tracekit_load_urls": [f"http://127.0.0.1:{free_port()}/"]}
    failed = run_role(tmp_path, "tracekit_load", nowhere, "load-nowhere")
    assert failed.rc != 0 and "got a response (connect: Connection refused)" in failed.stdout.read()
    assert (logs / "role-l2" / "load" / "results.jsonl").is_file()


def test_lock_role_holds_a_node_for_one_run(tmp_path):
    root = tmp_path / "node"

    def lock(run: str, token: str, state: str = "acquired", ident: str = "") -> ansible_runner.Runner:
        # Each call its own ident: ansible-runner's artifacts of one call are not another's.
        return run_role(tmp_path, "tracekit_lock", {"tracekit_lock_run_id": run, "tracekit_lock_token": token,
                        "tracekit_lock_root": str(root), "tracekit_lock_state": state,
                        "tracekit_lock_holder": f"tracekit-run of {run}"}, ident or f"{run}-{token}-{state}")  # fmt: skip

    first = lock("r1", "t1")
    assert first.rc == 0 and changed(first) == 1
    assert "run=r1" in (root / "tracekit.lock").read_text()
    again = lock("r1", "t1", ident="again")
    assert again.rc == 0 and changed(again) == 0  # the same run (a resume) holds it already
    for run, token in (("r2", "t2"), ("r1", "elsewhere")):  # another run, or the same id from another run folder
        refused = lock(run, token)
        output = refused.stdout.read()
        assert refused.rc != 0 and "is in use by run r1" in output and "tracekit-run --stop r1" in output, output
    assert changed(lock("r2", "t2", "released")) == 0 and (root / "tracekit.lock").exists()  # not r2's to free
    freed = lock("r1", "t1", "released")
    assert freed.rc == 0 and changed(freed) == 1 and not (root / "tracekit.lock").exists()
    assert changed(lock("r1", "t1", "released", ident="freed-again")) == 0
    # A lock from before the node's last reboot: nothing of that run can still run there; taken over.
    taken = lock("r2", "t2", ident="r2-turn")
    assert taken.rc == 0 and changed(taken) == 1
    text = (root / "tracekit.lock").read_text()
    (root / "tracekit.lock").write_text(re.sub(r"boot=.*", "boot=another-boot", text))
    after_reboot = lock("r3", "t3", ident="after-reboot")
    assert after_reboot.rc == 0 and changed(after_reboot) == 1 and "run=r3" in (root / "tracekit.lock").read_text()


def test_clean_role_removes_only_the_runs_named_and_none_in_use(tmp_path):
    root = tmp_path / "node"
    made = ["logs/r1/cloud1/proc.csv", "logs/r1.attempt1/proc.csv", "logs/.r1.tgz", "logs/.r1.sha256",
            "outputs/r1/out.mp4", "redis/r1/redis.conf", "files/r1/in.txt", "secrets/r1.redis", "secrets/r1.taskkey",
            "logs/r10/proc.csv", "outputs/r1x/out.mp4", "secrets/r10.redis", "venv/bin/python", "logs/r2/proc.csv"]  # fmt: skip
    for name in made:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x" * 5000)
    (root / "tracekit.lock").write_text("run=r2\ntoken=t\n")

    def clean(ids: list[str], ident: str) -> ansible_runner.Runner:
        return run_role(tmp_path, "tracekit_clean", {"tracekit_clean_run_ids": ids, "tracekit_clean_root": str(root)}, ident)

    def left() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "tracekit.lock")

    refused = clean(["r1", "../r2"], "unsafe")
    assert refused.rc != 0 and "not a run id: '../r2'" in refused.stdout.read()
    assert len(left()) == len(made)  # nothing removed
    busy = clean(["r1", "r2"], "busy")  # r2 holds the node: kept, r1 removed all the same
    assert busy.rc != 0 and "r2 is in use: the node is held by it" in busy.stdout.read()
    assert left() == ["logs/r10/proc.csv", "logs/r2/proc.csv", "outputs/r1x/out.mp4", "secrets/r10.redis", "venv/bin/python"]
    again = clean(["r1"], "again")
    assert again.rc == 0 and changed(again) == 0


def test_a_module_that_did_not_run_is_not_taken_for_a_missing_package(tmp_path):
    """dpkg-query's exit status 1 says 'not installed'; a module whose Python crashed exits 1 too, with no
    stdout: that is the failure, said where it happened, not the next task's (apt, with the same Python)."""
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'ImportError: a broken Python' >&2\nexit 1\n")
    crashing.chmod(0o755)
    runner = run_role(tmp_path, "tracekit_redis", {"tracekit_redis_state": "present", "ansible_python_interpreter": str(crashing)},
                      "crashing")  # fmt: skip
    assert runner.rc != 0
    failed = [event["event_data"] for event in runner.events if event["event"] == "runner_on_failed"]
    assert [data["task"] for data in failed] == ["Look for redis-server"]
    assert "ImportError: a broken Python" in failed[0]["res"]["module_stderr"]
