"""Real sshd nodes on loopback for multi-node tests: tmp folder + node names ->
running sshd processes, a client key, and an Ansible inventory that reaches them.

Each node is its own ``/usr/sbin/sshd -D -e`` child (never daemonized) with its
own host key, config, log and free port on 127.0.0.1, all below the tmp
folder. Every node accepts the same client key for root (tests run as root).

sshd puts every accepted connection into a new session (``setsid``), so killing
the listener's process group does not reach connection handlers or the commands
they run; stopping a node therefore collects the whole process tree first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from tests.helpers import wait_until

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it
STARTUP_TIMEOUT_S = 15.0
STOP_GRACE_S = 5.0
PORT_ATTEMPTS = 3  # a free port can be taken between probing and sshd binding it
NO_HOST_KEY_CHECKS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")


class SshdStartError(RuntimeError):
    """An sshd node did not come up; the message carries sshd's own log."""


def free_port() -> int:
    """A loopback TCP port nothing listens on (at the moment of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    return path


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class SshNode:
    """One sshd: ``root`` is the node's own folder, ``folder`` holds sshd's files."""

    name: str
    port: int
    root: Path
    folder: Path
    process: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.folder / "sshd_config"

    @property
    def log(self) -> Path:
        return self.folder / "sshd.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> set[int]:
        """The listener and every process below it (connection handlers, sessions)."""
        if not self.running:
            return set()
        return {self.process.pid, *(child.pid for child in _descendants(self.process.pid))}

    def stop(self) -> None:
        """SIGTERM the listener and all its descendants, SIGKILL what is left, reap."""
        if self.process is None:
            return
        if self.process.poll() is None:
            # Freeze the listener so it forks no new handler while we collect
            # its tree: once it dies, its descendants are reparented and lost.
            os.kill(self.process.pid, signal.SIGSTOP)
            descendants = _descendants(self.process.pid)
            _signal_all(descendants, signal.SIGTERM)
            os.killpg(self.process.pid, signal.SIGTERM)  # the listener and its group
            os.kill(self.process.pid, signal.SIGCONT)  # so it acts on the SIGTERM
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
            alive = _wait_gone(descendants, STOP_GRACE_S)
            _signal_all(alive, signal.SIGKILL)
            _wait_gone(alive, STOP_GRACE_S)
        self.process.wait(timeout=STOP_GRACE_S)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal_all(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


def _is_gone(process: psutil.Process) -> bool:
    """Exited; a zombie counts as gone (pid 1 reaps reparented handlers, not us)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until every process is gone; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    alive = [process for process in processes if not _is_gone(process)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [process for process in alive if not _is_gone(process)]
    return alive


class SshNodes:
    """A set of sshd nodes sharing one client key; use ``start_sshd_nodes``."""

    def __init__(self, folder: Path, names: tuple[str, ...], extra_config: str = ""):
        if not names:
            raise ValueError("at least one node name is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique: {names}")
        self.folder = folder
        self.extra_config = extra_config  # more sshd_config lines (e.g. SetEnv PATH=...: a node's login PATH)
        ssh_dir = folder / "ssh"
        ssh_dir.mkdir(parents=True)
        self.client_key = _keygen(ssh_dir / "client_ed25519", "tracekit-test-client")
        self.authorized_keys = ssh_dir / "authorized_keys"
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        self.nodes: dict[str, SshNode] = {}
        for name in names:
            node = SshNode(name=name, port=0, root=folder / "nodes" / name, folder=ssh_dir / name)
            node.root.mkdir(parents=True)
            node.folder.mkdir()
            _keygen(node.folder / "ssh_host_ed25519_key", f"tracekit-test-{name}")
            self.nodes[name] = node

    def __getitem__(self, name: str) -> SshNode:
        return self.nodes[name]

    def __iter__(self):
        return iter(self.nodes.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.nodes)

    @staticmethod
    def free_port() -> int:
        return free_port()

    def start(self, name: str) -> None:
        """Start one node's sshd and wait until it runs a command for the client key."""
        node = self.nodes[name]
        if node.running:
            return
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            node.port = free_port()
            self._write_config(node)
            with node.log.open("w") as log:
                node.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(node.config)],
                                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                start_new_session=True)  # fmt: skip
            try:
                self._wait_ready(node)
                return
            except SshdStartError:
                port_taken = "Address already in use" in node.log.read_text(errors="replace")
                node.stop()
                if not port_taken or attempt == PORT_ATTEMPTS:
                    raise

    def _write_config(self, node: SshNode) -> None:
        node.config.write_text(
            f"Port {node.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {node.folder / 'ssh_host_ed25519_key'}\n"
            f"PidFile {node.folder / 'sshd.pid'}\n"
            # tmp folders are not root-owned 0700 all the way up, which StrictModes demands.
            "StrictModes no\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "Subsystem sftp internal-sftp\n"
            "PrintMotd no\n"
            "LogLevel VERBOSE\n"  # also logs sessions and subsystem requests (sftp)
            + self.extra_config
        )

    def _wait_ready(self, node: SshNode) -> None:
        def ready() -> bool:
            if node.process.poll() is not None:
                raise SshdStartError(self._start_failure(node, f"sshd exited with {node.process.returncode}"))
            if not _port_open(node.port):
                return False
            answer = subprocess.run(self.ssh_argv(node.name, "true"), capture_output=True, timeout=10)
            return answer.returncode == 0

        try:
            wait_until(ready, timeout_s=STARTUP_TIMEOUT_S, what=f"sshd {node.name}")
        except AssertionError:
            raise SshdStartError(self._start_failure(node, f"no answer within {STARTUP_TIMEOUT_S:g} s")) from None

    def _start_failure(self, node: SshNode, reason: str) -> str:
        stderr = node.log.read_text(errors="replace").strip() if node.log.exists() else ""
        return f"sshd node {node.name} on 127.0.0.1:{node.port}: {reason}; sshd stderr:\n{stderr or '(empty)'}"

    def stop(self, name: str) -> None:
        """Stop one node (its port then refuses connections: an unreachable host)."""
        self.nodes[name].stop()

    def close(self) -> None:
        """Stop every node; safe to call twice."""
        errors = []
        for node in self.nodes.values():
            try:
                node.stop()
            except Exception as error:  # keep stopping the others
                errors.append(error)
        if errors:
            raise errors[0]

    def __enter__(self) -> SshNodes:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def pids(self) -> set[int]:
        return set().union(*(node.pids() for node in self.nodes.values()))

    def ssh_argv(self, name: str, *command: str) -> list[str]:
        """argv of an ssh client running ``command`` as root on node ``name``."""
        node = self.nodes[name]
        return ["ssh", "-F", "/dev/null", "-i", str(self.client_key), "-o", "IdentitiesOnly=yes",
                *NO_HOST_KEY_CHECKS, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-p", str(node.port), "root@127.0.0.1", *command]  # fmt: skip

    def inventory(self, path: Path | None = None) -> Path:
        """Write an Ansible YAML inventory: ``controller`` = first node, ``workers`` = the rest."""
        path = path or self.folder / "inventory.yml"

        def host(node: SshNode) -> dict:
            return {
                "ansible_host": "127.0.0.1",
                "ansible_port": node.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.client_key),
                "ansible_ssh_common_args": " ".join(NO_HOST_KEY_CHECKS),
                # The remote side's interpreter, not this venv's.
                "ansible_python_interpreter": "/usr/bin/python3",
                "tracekit_node_root": str(node.root),
            }

        first, *rest = self.nodes.values()
        workers = {node.name: host(node) for node in rest}
        # All nodes share this machine: each worker gets a CPU of its own while there are enough.
        cpus = sorted(os.sched_getaffinity(0))
        if len(workers) <= len(cpus):
            for values, cpu in zip(workers.values(), cpus):
                values["tracekit_node_cpus"] = str(cpu)
        document = {"all": {"children": {
            "controller": {"hosts": {first.name: host(first)}},
            "workers": {"hosts": workers},
        }}}  # fmt: skip
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path


def start_sshd_nodes(tmp_path: Path, names: tuple[str, ...] = ("cloud0", "cloud1", "cloud2"),
                     extra_config: str = "") -> SshNodes:  # fmt: skip
    """Start one sshd per name below ``tmp_path``; on any failure none is left running."""
    nodes = SshNodes(tmp_path, tuple(names), extra_config)
    try:
        for name in nodes.names:
            nodes.start(name)
    except BaseException:
        nodes.close()
        raise
    return nodes
