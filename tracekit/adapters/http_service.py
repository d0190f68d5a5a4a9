"""An HTTP service of a run in the background: ``ServiceSpec -> uvicorn, pidfile, port answering``.

input:  the service (a folder with an ASGI app, e.g. examples/fastapi_svc),
        where it listens, its uvicorn workers, the run and node it serves
        for, its next hop
output: a detached uvicorn (own session) with <run folder>/http_service.pid
        ("PID CREATE_TIME", tracekit.detach) and its console log
        http_service.log; the call returns once the port accepts
        connections, or raises with the log's last line

The service gets TRACEKIT_RUN_ID, TRACEKIT_LOGS_DIR and TRACEKIT_NODE_ID
(the middleware's run folder and node, and the mark a node-scoped
collector follows), and DEFAULT_NEXT_URL when it has a next hop.
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tracekit import detach, runfolder
from tracekit.cpuset import check_usable
from tracekit.errors import TracekitError, UsageError

PIDFILE = "http_service.pid"
CONSOLE = "http_service.log"
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

    @property
    def run_folder(self) -> Path:
        return runfolder.run_dir(self.run_id, self.logs_dir)

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "uvicorn", self.app, "--app-dir", str(self.app_dir), "--host", self.host,
                "--port", str(self.port), "--workers", str(self.workers), "--no-access-log"]  # fmt: skip
        return argv + (["--factory"] if self.factory else [])

    def environment(self) -> dict[str, str]:
        env = runfolder.node_environment(self.node_id)
        env.update({runfolder.RUN_ID_ENV: self.run_id, runfolder.LOGS_DIR_ENV: str(self.logs_dir)})
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


def start_service(spec: ServiceSpec) -> tuple[detach.Running, bool]:
    """Start the service unless this run's already runs; (process, started now). Ready when it returns."""
    _check(spec)
    folder = runfolder.ensure_writable_dir(spec.run_folder, "run folder")
    pidfile, console = folder / PIDFILE, folder / CONSOLE
    if detach.read_pidfile(pidfile) is None and _accepts(spec.host, spec.port):
        raise TracekitError(f"{spec.host}:{spec.port} is already in use by another process; give the service another port")
    running, started = detach.start_detached(spec.argv(), pidfile, console, f"HTTP service of run {spec.run_id}",
                                             spec.environment(), spec.cpus)  # fmt: skip
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


def stop_service(run_id: str, logs_dir: Path) -> bool:
    """SIGTERM the run's service (uvicorn ends its requests, then its workers); whether one ran."""
    folder = runfolder.run_dir(runfolder.validate_run_id(run_id), logs_dir)
    return detach.stop_detached(folder / PIDFILE, f"HTTP service of run {run_id}", STOP_TIMEOUT_S) is not None
