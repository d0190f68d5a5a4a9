"""An HTTP service of a run in the background: ``ServiceSpec -> uvicorn, pidfile, port answering``.

input:  the service (a folder with an ASGI app, e.g. examples/fastapi_svc,
        traced in its process by tracekit.adapters.http), where it listens,
        its uvicorn workers, the run and node it serves for, its next hop;
        or any service's command (``CommandService``: a WSGI app, nginx,
        any binary) with a health path and, if it writes one, an
        nginx-format access log
output: a detached service (own session) with <run folder>/http_service.pid
        ("PID CREATE_TIME", tracekit.detach) and its console log
        http_service.log; http_service.json (what kind of service, where
        its server-side spans come from); the call returns once the port
        accepts connections (and the health path answers), or raises with
        the log's last line. Stopping a command service turns its access
        log into invocation events (events.nginx.jsonl, tracekit.adapters.nginx)

The service gets TRACEKIT_RUN_ID, TRACEKIT_LOGS_DIR and TRACEKIT_NODE_ID
(the middleware's run folder and node, and the mark a node-scoped
collector follows), and DEFAULT_NEXT_URL when it has a next hop.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tracekit import detach, runfolder
from tracekit.container import ENGINES, NAME_PREFIX, SETTLE_S, ContainerSpec, container_name, read_cidfile, run_argv
from tracekit.container import remove as remove_container
from tracekit.cpuset import check_usable
from tracekit.errors import TracekitError, UsageError
from tracekit.taskcgroup import SERVICE_CGROUP, TaskCgroups
from tracekit.invocation import venv_environment
from tracekit.taskspec import render

PIDFILE = "http_service.pid"
CONSOLE = "http_service.log"
DESCRIPTION = "http_service.json"  # what the service is and where its server-side spans come from
COMMAND_PLACEHOLDERS = ("host", "port", "files", "run_dir")  # run_dir: the node's run folder (fetched with the run)
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class ServiceSpec:
    app_dir: Path
    run_id: str
    logs_dir: Path
    node_id: str
    port: int
    host: str = "127.0.0.1"
    app: str = "app:create_app"
    factory: bool = True
    workers: int = 1
    next_url: str | None = None
    cpus: tuple[int, ...] | None = None  # the service and its workers stay on these CPUs
    container: ContainerSpec | None = None  # run in a container (tracekit.container): needs this node's venv in it

    @property
    def run_folder(self) -> Path:
        return runfolder.run_dir(self.run_id, self.logs_dir)

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "uvicorn", self.app, "--app-dir", str(self.app_dir), "--host", self.host,
                "--port", str(self.port), "--workers", str(self.workers), "--no-access-log"]  # fmt: skip
        return argv + (["--factory"] if self.factory else [])

    def environment(self) -> dict[str, str]:
        env = runfolder.node_environment(self.node_id, self.run_id)
        env[runfolder.LOGS_DIR_ENV] = str(self.logs_dir)
        # The folder is the role's copy of the service: the service writes no bytecode into it, or the next
        # copy finds a copied .pyc rewritten and counts a change (and copies it back) on every start.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("DEFAULT_NEXT_URL", None)
        if self.next_url:
            env["DEFAULT_NEXT_URL"] = self.next_url
        return env


def _check(spec: ServiceSpec) -> None:
    runfolder.validate_run_id(spec.run_id)
    runfolder.validate_name(spec.node_id, "--node-id")
    if not (spec.app_dir / f"{spec.app.partition(':')[0]}.py").is_file():
        raise UsageError(f"--app-dir {spec.app_dir}: no {spec.app.partition(':')[0]}.py for --app {spec.app}")
    if not 1 <= spec.port <= 65535:
        raise UsageError(f"--port {spec.port} is not a port (1 to 65535)")
    if spec.workers < 1:
        raise UsageError(f"--workers {spec.workers} must be at least 1")
    if spec.cpus:
        check_usable(spec.cpus)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def listener_of(port: int) -> str:
    """Who listens on a TCP port of this machine: 'NAME (pid N)', or what can be said when it is not visible."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return "another process (not visible to this user)"
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            if connection.pid is None:
                return "another process (not visible to this user)"
            try:
                return f"{psutil.Process(connection.pid).name()} (pid {connection.pid})"
            except psutil.Error:
                return f"pid {connection.pid}"
    return "another process"


def port_taken(host: str, port: int) -> TracekitError:
    return TracekitError(f"{host}:{port} is already in use by {listener_of(port)}; give the service another port "
                         "(an experiment's workload.http.port, or the host's tracekit_http_port in the inventory; "
                         "--port of tracekit serve)")  # fmt: skip


def start_service(spec: ServiceSpec) -> tuple[detach.Running, bool]:
    """Start the service unless this run's already runs; (process, started now). Ready when it returns."""
    _check(spec)
    folder = runfolder.ensure_writable_dir(spec.run_folder, "run folder")
    pidfile, console = folder / PIDFILE, folder / CONSOLE
    if detach.read_pidfile(pidfile) is None and _accepts(spec.host, spec.port):
        raise port_taken(spec.host, spec.port)
    environment = spec.environment()
    argv, boxed = _in_container(spec.container, spec.argv(), spec.run_id, spec.node_id, folder, environment,
                                [str(spec.app_dir), str(spec.logs_dir), str(Path(sys.executable).parent.parent)])  # fmt: skip
    (folder / DESCRIPTION).write_text(json.dumps({"kind": "asgi", "app": spec.app, "app_dir": str(spec.app_dir), **boxed}) + "\n")
    running, started = detach.start_detached(argv, pidfile, console, f"HTTP service of run {spec.run_id}",
                                             environment, spec.cpus)  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _accepts(spec.host, spec.port):
        if detach.read_pidfile(pidfile) is None:
            raise TracekitError(f"the HTTP service of run {spec.run_id} exited: {detach.last_log_line(console)} (log: {console})")
        if time.monotonic() > deadline:
            detach.stop_detached(pidfile, f"HTTP service of run {spec.run_id}", STOP_TIMEOUT_S)
            raise TracekitError(f"the HTTP service of run {spec.run_id} did not listen on {spec.host}:{spec.port} "
                                f"within {READY_TIMEOUT_S:.0f} s and was stopped (log: {console})")  # fmt: skip
        time.sleep(0.1)
    return running, started


@dataclass(frozen=True)
class CommandService:
    """Any service as a command: {host}, {port}, {files} and {run_dir} in its arguments are filled in (no shell)."""

    command: tuple[str, ...]
    run_id: str
    logs_dir: Path
    node_id: str
    port: int
    host: str = "127.0.0.1"
    files: Path | None = None  # its folder on the node ({files}; it runs there)
    health: str = "/"  # ready once a GET of this path answers (any HTTP status)
    venv: Path | None = None  # the workload's own venv: its bin/ first on PATH
    access_log: str | None = None  # an nginx-format access log it writes (placeholders filled in; {run_dir}: kept with the run)
    access_log_format: str = "combined"
    cpus: tuple[int, ...] | None = None
    container: ContainerSpec | None = None  # run in a container (tracekit.container)

    @property
    def run_folder(self) -> Path:
        return runfolder.run_dir(self.run_id, self.logs_dir)

    def _values(self) -> dict[str, str]:
        return {"host": self.host, "port": str(self.port), "files": str(self.files or ""), "run_dir": str(self.run_folder)}

    def argv(self) -> list[str]:
        return [render(arg, self._values(), f"the service command's argument {i}") for i, arg in enumerate(self.command)]

    def access_log_path(self) -> Path | None:
        if not self.access_log:
            return None
        path = Path(render(self.access_log, self._values(), "the service's access log"))
        return path if path.is_absolute() else (self.files or self.run_folder) / path

    def environment(self) -> dict[str, str]:
        env = runfolder.node_environment(self.node_id, self.run_id)
        env[runfolder.LOGS_DIR_ENV] = str(self.logs_dir)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # as the ASGI service's: its folder is the role's copy
        env.update(venv_environment(self.venv))
        return env


def _answers(host: str, port: int, path: str) -> bool:
    """A GET of ``path`` gets an HTTP answer (whatever its status: the service is up)."""
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def start_command_service(service: CommandService) -> tuple[detach.Running, bool]:
    """Start the command unless this run's service already runs; ready when its health path answers."""
    runfolder.validate_run_id(service.run_id)
    runfolder.validate_name(service.node_id, "--node-id")
    if not service.command:
        raise UsageError("the service's command is empty")
    if not 1 <= service.port <= 65535:
        raise UsageError(f"--port {service.port} is not a port (1 to 65535)")
    if service.cpus:
        check_usable(service.cpus)
    folder = runfolder.ensure_writable_dir(service.run_folder, "run folder")
    pidfile, console = folder / PIDFILE, folder / CONSOLE
    argv, access_log = service.argv(), service.access_log_path()
    if detach.read_pidfile(pidfile) is None and _accepts(service.host, service.port):
        raise port_taken(service.host, service.port)
    environment = service.environment()
    mounts = [str(service.logs_dir), *([str(service.files)] if service.files else []),
              *([str(service.venv)] if service.venv else []), *([str(access_log.parent)] if access_log else [])]  # fmt: skip
    shown = argv
    argv, boxed = _in_container(service.container, argv, service.run_id, service.node_id, folder, environment, mounts,
                                str(service.files) if service.files else None)  # fmt: skip
    (folder / DESCRIPTION).write_text(json.dumps({
        "kind": "command", "node": service.node_id, "argv": shown, "health": service.health,
        "access_log": str(access_log) if access_log else None, "access_log_format": service.access_log_format, **boxed,
    }) + "\n")  # fmt: skip
    running, started = detach.start_detached(argv, pidfile, console, f"HTTP service of run {service.run_id}",
                                             environment, service.cpus, cwd=service.files)  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (_accepts(service.host, service.port) and _answers(service.host, service.port, service.health)):
        if detach.read_pidfile(pidfile) is None:
            raise TracekitError(f"the HTTP service of run {service.run_id} ({argv[0]}) exited: "
                                f"{detach.last_log_line(console)} (log: {console})")  # fmt: skip
        if time.monotonic() > deadline:
            detach.stop_detached(pidfile, f"HTTP service of run {service.run_id}", STOP_TIMEOUT_S)
            raise TracekitError(f"the HTTP service of run {service.run_id} did not answer GET {service.health} on "
                                f"{service.host}:{service.port} within {READY_TIMEOUT_S:.0f} s and was stopped "
                                f"(log: {console})")  # fmt: skip
        time.sleep(0.1)
    return running, started


def _in_container(container: ContainerSpec | None, argv: list[str], run_id: str, node_id: str, folder: Path,
                  environment: dict[str, str], mounts: list[str], cwd: str | None = None) -> tuple[list[str], dict]:  # fmt: skip
    """The service's argv, in its container when it has one (``tk-<run>-<node>-service``, the run folder and
    ``mounts`` at their own paths, its environment passed by name); what http_service.json says of it."""
    if container is None:
        return argv, {}
    name = container_name(run_id, node_id, "service")
    cidfile = folder / runfolder.CONTAINERS_DIR / f"{name}.cid"
    cidfile.parent.mkdir(exist_ok=True)
    cidfile.unlink(missing_ok=True)
    # Its cgroup below one of the service's own, beside the node's task cgroups: its exact totals at stop.
    cgroups = TaskCgroups.detect(run_id, node_id, folder)
    cgroup, parent = cgroups.task(SERVICE_CGROUP), None
    if cgroup is not None:
        try:
            cgroup.make()
            parent = cgroup.engine_parent()
        except OSError:
            cgroup = None
    boxed = run_argv(container, argv, name=name, cidfile=cidfile, cgroup_parent=parent, env_names=sorted(environment),
                     cwd=cwd, mounts=[str(folder), *mounts])  # fmt: skip
    described = {"node": node_id, "container_engine": container.engine, "container_name": name, "image": container.what}
    if parent is not None:  # where the stop finds it again (another process, maybe in another cgroup of its own)
        described["container_cgroup"] = {"version": cgroups.version, "folders": {c: str(f) for c, f in cgroups.dirs.items()}}
    return boxed, described


def stop_service(run_id: str, logs_dir: Path) -> bool:
    """SIGTERM the run's service (uvicorn ends its requests, then its workers); whether one ran. A command
    service's access log then becomes the node's server-side spans (events.nginx.jsonl). A service in a
    container: the engine's client passes the signal on; a container it left (killed) is removed."""
    folder = runfolder.run_dir(runfolder.validate_run_id(run_id), logs_dir)
    stopped = detach.stop_detached(folder / PIDFILE, f"HTTP service of run {run_id}", STOP_TIMEOUT_S) is not None
    _end_container(folder, run_id)
    _adapt_access_log(folder)
    return stopped


def _end_container(folder: Path, run_id: str) -> None:
    """The service's container, if it ran in one: its id kept in http_service.json, the container removed, its
    cgroup's totals kept there too (``container_cgroup_totals``: exact CPU, memory peak) and the cgroup removed."""
    try:
        description = json.loads((folder / DESCRIPTION).read_text())
    except (OSError, ValueError):
        return
    if not isinstance(description, dict) or not description.get("container_name"):
        return
    engine, name = description.get("container_engine"), str(description["container_name"])
    # The file is in the run folder, which tasks can write: only a known engine, only this run's container.
    if engine not in ENGINES or not name.startswith(f"{NAME_PREFIX}-{run_id}-") or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        return
    if "container_id" not in description:
        description["container_id"] = read_cidfile(folder / runfolder.CONTAINERS_DIR / f"{name}.cid")
    remove_container(engine, name)
    recorded = description.get("container_cgroup")
    if isinstance(recorded, dict):
        cgroups = TaskCgroups.of_record(recorded.get("folders"), recorded.get("version"), run_id, description.get("node"), folder)
        cgroup = cgroups.task(SERVICE_CGROUP) if cgroups is not None else None
        if cgroup is not None:
            cgroup.wait_empty(SETTLE_S)
            try:
                description["container_cgroup_totals"] = cgroup.totals()
            except (OSError, ValueError, KeyError) as exc:
                description["container_cgroup_totals"] = {"error": f"its cgroup could not be read: {exc}"}
            cgroup.remove(everywhere=True)
    (folder / DESCRIPTION).write_text(json.dumps(description) + "\n")


def _adapt_access_log(folder: Path) -> None:
    """The access log of a command service as invocation events, once (what `tracekit adapt nginx` does)."""
    try:
        description = json.loads((folder / DESCRIPTION).read_text())
    except (OSError, ValueError):
        return
    log = description.get("access_log")
    events = runfolder.events_file(folder, "nginx")
    if not log or description.get("adapted") or not Path(log).is_file():
        return
    from tracekit.adapters.nginx import adapt_nginx_log

    node = str(description.get("node") or runfolder.default_node_id())
    report = adapt_nginx_log(Path(log), events, description.get("access_log_format") or "combined", node)
    description["adapted"] = {"events": str(events), "invocations": report.events, "bad_lines": len(report.bad_lines)}
    (folder / DESCRIPTION).write_text(json.dumps(description) + "\n")
