"""The sshd_nodes fixture for real: every node answers ssh and Ansible over the
written inventory, a stopped node is unreachable, a broken sshd fails with its
own stderr, and no sshd process outlives the fixture (also when a test fails)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ansible_runner
import psutil
import pytest
import yaml

from tests.helpers import wait_until
from tests.sshd import SshdStartError, SshNodes, start_sshd_nodes

REPO = Path(__file__).resolve().parents[2]


def ping_all(tmp_path: Path, inventory: Path, ident: str) -> dict[str, str]:
    """``ansible all -m ansible.builtin.ping`` through ansible-runner: host -> outcome event."""
    (tmp_path / "runner").mkdir(exist_ok=True)
    runner = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"), host_pattern="all", module="ansible.builtin.ping",
        inventory=str(inventory), ident=ident, quiet=True,
        envvars={"ANSIBLE_HOST_KEY_CHECKING": "False",
                 "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    outcomes = {}
    for event in runner.events:
        if event.get("event", "").startswith("runner_on_"):
            outcomes[event["event_data"]["host"]] = event["event"]
    return outcomes


def live(pids: set[int]) -> set[int]:
    """The pids that still run (zombies awaiting pid 1 do not)."""
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def remote_sleep(listener: int) -> int | None:
    """pid of a ``sleep`` below the sshd listener (handlers come and go while we look)."""
    for process in psutil.Process(listener).children(recursive=True):
        try:
            if process.name() == "sleep":
                return process.pid
        except psutil.NoSuchProcess:
            pass
    return None


def test_every_node_answers_ssh_on_loopback_only(sshd_nodes):
    assert sshd_nodes.names == ("cloud0", "cloud1", "cloud2")
    assert len({node.port for node in sshd_nodes}) == 3
    for node in sshd_nodes:
        answer = subprocess.run(sshd_nodes.ssh_argv(node.name, "echo", "ok"), capture_output=True, text=True)
        assert (answer.returncode, answer.stdout) == (0, "ok\n"), answer.stderr
        listening = [c.laddr for c in psutil.Process(node.process.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]  # fmt: skip
        assert listening == [("127.0.0.1", node.port)]
        assert node.root == sshd_nodes.folder / "nodes" / node.name and node.root.is_dir()


def test_inventory_has_controller_and_workers(sshd_nodes):
    inventory = yaml.safe_load(sshd_nodes.inventory().read_text())
    groups = inventory["all"]["children"]
    assert list(groups["controller"]["hosts"]) == ["cloud0"]
    assert list(groups["workers"]["hosts"]) == ["cloud1", "cloud2"]
    cloud1 = groups["workers"]["hosts"]["cloud1"]
    cpus = sorted(os.sched_getaffinity(0))
    assert cloud1.pop("tracekit_node_cpus", None) == (str(cpus[0]) if len(cpus) >= 2 else None)
    assert cloud1 == {
        "ansible_host": "127.0.0.1",
        "ansible_port": sshd_nodes["cloud1"].port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(sshd_nodes.client_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": "/usr/bin/python3",
        "tracekit_node_root": str(sshd_nodes.folder / "nodes" / "cloud1"),
    }


def test_ansible_pings_every_node_over_the_inventory(sshd_nodes, tmp_path):
    outcomes = ping_all(tmp_path, sshd_nodes.inventory(), "all-up")
    assert outcomes == {name: "runner_on_ok" for name in sshd_nodes.names}
    for node in sshd_nodes:  # the module went over sftp, as real runs will
        assert "Starting session: subsystem 'sftp' for root" in node.log.read_text()


def test_a_stopped_node_is_unreachable_while_the_others_answer(sshd_nodes, tmp_path):
    pids = sshd_nodes["cloud1"].pids()
    sshd_nodes.stop("cloud1")
    assert not sshd_nodes["cloud1"].running and not live(pids)
    outcomes = ping_all(tmp_path, sshd_nodes.inventory(), "one-down")
    assert outcomes == {"cloud0": "runner_on_ok", "cloud1": "runner_on_unreachable", "cloud2": "runner_on_ok"}


def test_free_port_refuses_connections(sshd_nodes):
    port = sshd_nodes.free_port()
    assert port not in {node.port for node in sshd_nodes}
    argv = sshd_nodes.ssh_argv("cloud0", "true")
    argv[argv.index("-p") + 1] = str(port)
    answer = subprocess.run(argv, capture_output=True, text=True)
    assert answer.returncode == 255 and "Connection refused" in answer.stderr


def test_close_stops_listeners_connection_handlers_and_sessions(tmp_path, children):
    nodes = start_sshd_nodes(tmp_path, names=("a", "b"))
    try:
        # sshd puts each connection in a new session: killing the group alone would miss these.
        children(nodes.ssh_argv("a", "sleep", "300"), stdin=subprocess.DEVNULL)
        session = wait_until(lambda: remote_sleep(nodes["a"].process.pid), what="remote sleep")
        pids = nodes.pids()
        assert session in pids and len(pids) >= 4  # 2 listeners, handler(s), sleep
    finally:
        nodes.close()
    assert not live(pids)
    nodes.close()  # twice is fine


def test_a_node_that_does_not_start_fails_with_sshd_stderr(tmp_path, monkeypatch):
    write_config = SshNodes._write_config

    def broken_config(self, node):
        write_config(self, node)
        if node.name == "bad":
            with node.config.open("a") as config:
                config.write("NoSuchOption yes\n")

    monkeypatch.setattr(SshNodes, "_write_config", broken_config)

    def these_sshds() -> set[int]:  # this test's (tests run in parallel start theirs)
        return {p.pid for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] == "sshd" and any(str(tmp_path) in arg for arg in p.info["cmdline"] or [])}  # fmt: skip

    with pytest.raises(SshdStartError, match=r"(?s)sshd node bad on 127\.0\.0\.1:\d+: sshd exited.*NoSuchOption"):
        start_sshd_nodes(tmp_path, names=("good", "bad"))
    assert not live(these_sshds())  # the good node was stopped too


def test_the_fixture_stops_every_sshd_when_the_test_fails(tmp_path):
    """Run a failing test that uses the fixture in a separate pytest, then look for its processes."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text("from tests.conftest import children, sshd_nodes  # noqa: F401\n")
    (inner / "test_fails.py").write_text(textwrap.dedent("""
        import os, subprocess
        from tests.helpers import wait_until

        def test_fails(children, sshd_nodes):  # sshd_nodes is torn down first: the session is still open
            children(sshd_nodes.ssh_argv("cloud2", "sleep", "300"), stdin=subprocess.DEVNULL)
            wait_until(lambda: len(sshd_nodes["cloud2"].pids()) >= 3, what="session")
            with open(os.environ["PIDS_FILE"], "w") as out:
                out.write(" ".join(map(str, sshd_nodes.pids())))
            assert False, "this test fails on purpose"
    """))  # fmt: skip
    pids_file = tmp_path / "pids"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(inner),
         "--basetemp", str(tmp_path / "basetemp"), str(inner)],
        cwd=inner, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "PIDS_FILE": str(pids_file)},
    )  # fmt: skip
    assert result.returncode == 1 and "this test fails on purpose" in result.stdout, result.stdout + result.stderr
    pids = {int(pid) for pid in pids_file.read_text().split()}
    assert len(pids) >= 5  # three listeners, a handler, the remote sleep
    assert not live(pids)
