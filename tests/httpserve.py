"""Real uvicorn servers on 127.0.0.1 for tests (imported as tests.httpserve)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SERVICE = ROOT / "examples" / "fastapi_svc"
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def uvicorn(app: str, app_dir: Path, log: Path, env: dict[str, str] | None = None,
            factory: bool = False, workers: int = 1) -> Iterator[Server]:  # fmt: skip
    """``app`` ("module:attr") served by uvicorn on a free loopback port; stopped and reaped at the end."""
    command = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir), "--host", "127.0.0.1",
               "--port", "0", "--no-access-log", "--timeout-graceful-shutdown", "5"]  # fmt: skip
    if factory:
        command.append("--factory")
    if workers > 1:
        command += ["--workers", str(workers)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   start_new_session=True)  # fmt: skip
    try:

        def port() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"uvicorn exited {process.returncode}: {log.read_text()[-2000:]}")
            found = _LISTENING.search(log.read_text())
            return found.group(1) if found else None

        yield Server(f"http://127.0.0.1:{wait_until(port, what=f'uvicorn serving {app}')}", process, log)
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group ``process`` leads; wait until every member is gone (SIGKILL after 15 s)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass

    def group_gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_until(group_gone, what=f"process group {process.pid} gone")
    except AssertionError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def example_service(run_folder: Path, node: str, log: Path, env: dict[str, str] | None = None, workers: int = 1):
    """The example FastAPI service writing into ``run_folder`` as ``node``."""
    settings = {"TRACEKIT_LOGS_DIR": str(run_folder.parent), "TRACEKIT_RUN_ID": run_folder.name,
                "TRACEKIT_NODE_ID": node, **(env or {})}  # fmt: skip
    return uvicorn("app:create_app", EXAMPLE_SERVICE, log, settings, factory=True, workers=workers)
