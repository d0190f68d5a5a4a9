"""Shared fixtures: a private logs folder per test, and cleanup of every
collector and child process a test starts."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items) -> None:
    """The tests on the session's SSH site (ssh_site) run one after the other, where the first of them
    was: pytest-xdist hands neighbouring tests to the same worker, and the site is made once per worker."""
    on_ssh_site = [item for item in items if "ssh_site" in getattr(item, "fixturenames", ())]
    if on_ssh_site:
        first = items.index(on_ssh_site[0])
        grouped = set(on_ssh_site)
        others = [item for item in items if item not in grouped]
        items[:] = others[:first] + on_ssh_site + others[first:]


def pytest_sessionfinish(session) -> None:
    """Once every test is done (pytest's controller, not each of its workers): the task cgroups that the
    tests' killed workers left, removed (a real worker removes them when they are 10 minutes old)."""
    if not hasattr(session.config, "workerinput"):
        from tracekit.taskcgroup import remove_stale

        remove_stale(older_than_s=0)


@pytest.fixture(scope="session", autouse=True)
def cgroup_hierarchies() -> list[str]:
    """The kernel's cgroups, mounted where nothing mounted them (a bare chroot: tests/cgroupfs.py)."""
    from tests.cgroupfs import ensure_mounted

    return ensure_mounted()


@pytest.fixture
def logs_dir(tmp_path, monkeypatch) -> Path:
    """A fresh logs folder, also set as TRACEKIT_LOGS_DIR for subprocesses."""
    path = tmp_path / "logs"
    path.mkdir()
    monkeypatch.setenv("TRACEKIT_LOGS_DIR", str(path))
    monkeypatch.delenv("TRACEKIT_RUN_ID", raising=False)
    yield path
    _stop_collectors(path)


def _stop_collectors(path: Path) -> None:
    """Kill any collector still holding a pidfile below ``path``."""
    for pidfile in path.glob("*/collector.pid"):
        try:
            pid = int((pidfile.read_text().split() or ["0"])[0])  # "PID CREATE_TIME" (tracekit.detach)
        except (OSError, ValueError):
            continue
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def children():
    """Start helper processes; all are killed and reaped after the test."""
    started: list[subprocess.Popen] = []

    def start(argv, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            descendants = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


class RedisServer:
    """A real redis-server on a free loopback port with its own password.

    The password lives in the config file (not on the command line) and in a
    password file for the CLI; restart() loses all data (no persistence).
    """

    def __init__(self, folder: Path):
        import secrets
        import socket

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.password = secrets.token_hex(16)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.password_file = folder / "redis.password"
        self.password_file.write_text(self.password + "\n")
        self.task_key = secrets.token_hex(32)  # not Redis's: the run's task key, for signed queues
        self.config = folder / "redis.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {self.password}\n"
            f'save ""\nappendonly no\ndir {folder}\nlogfile {folder / "redis.log"}\n'
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis as redis_lib

        self.process = subprocess.Popen(["redis-server", str(self.config)], stdout=subprocess.DEVNULL)
        client = redis_lib.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis_lib.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: see {self.folder / 'redis.log'}")
                import time

                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self, decode: bool = True):
        import redis as redis_lib

        return redis_lib.Redis(port=self.port, password=self.password, decode_responses=decode)

    def signer(self):
        from tracekit.sched.signing import TaskSigner

        return TaskSigner(self.task_key.encode())


@pytest.fixture
def redis_server(tmp_path, monkeypatch):
    server = RedisServer(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("REDIS_PASSWORD", server.password)
    # The run's task key, as a by-hand run gives it: the dispatcher signs with it, workers verify.
    monkeypatch.setenv("TRACEKIT_TASK_KEY", server.task_key)
    yield server
    server.stop()


@pytest.fixture
def sshd_nodes(tmp_path):
    """Real sshd nodes on loopback (cloud0 = controller, cloud1-2 = workers); see tests/sshd.py.

    Every sshd and every process below it is stopped, also when the test fails.
    """
    from tests.sshd import start_sshd_nodes

    nodes = start_sshd_nodes(tmp_path)
    yield nodes
    nodes.close()


@pytest.fixture(scope="session")
def ssh_site(tmp_path_factory):
    """Real sshd nodes on loopback (as sshd_nodes) and a free port for the controller's Redis: (nodes, port).

    One per test session, as local_site: the nodes' venvs are installed over SSH by the first run, later
    runs show the idempotent path. Each test writes its own inventory (tests.inventories.ssh_inventory).
    Whatever a test leaves running below the nodes is killed at the end, then every sshd is stopped.
    """
    from tests.helpers import kill_processes_under
    from tests.sshd import free_port, start_sshd_nodes

    nodes = start_sshd_nodes(tmp_path_factory.mktemp("ssh-site"))
    port = free_port()
    yield nodes, port
    try:
        kill_processes_under(nodes.folder / "nodes", port)
    finally:
        nodes.close()


@pytest.fixture(scope="session")
def local_site(tmp_path_factory):
    """inventory/local.yml with node roots of its own and Redis on a free port: (folder, inventory, port).

    One per test session: the node venvs are installed once (tracekit-run's
    prepare), and later runs show the idempotent path. Whatever a test leaves
    running under it is killed at the end.
    """
    from tests.helpers import kill_processes_under
    from tests.inventories import local_inventory
    from tests.sshd import free_port

    folder = tmp_path_factory.mktemp("site")
    port = free_port()
    yield folder, local_inventory(folder, port), port
    kill_processes_under(folder, port)
