"""Background processes with a pidfile: start once, find again, stop for sure.

input:  an argv to run in the background, a pidfile path, a console log path
output: the process (own session, so it outlives the Ansible task or shell
        that started it); the pidfile holds "PID CREATE_TIME" so that a
        reused PID is never mistaken for ours

Used for the worker (``tracekit worker --detach`` / ``--stop``), HTTP services
(``tracekit serve``) and the
dispatcher's pidfile (so that ``tracekit dispatch --stop`` can end a
dispatcher whose Ansible task was interrupted). The collector has its own
lock-based daemon (tracekit.collect.daemon).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from tracekit.errors import TracekitError

START_CHECK_S = 0.5  # a process that dies this soon did not start (the caller checked its inputs first)


@dataclass(frozen=True)
class Running:
    pid: int
    create_time: float


def _process_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def read_pidfile(pidfile: Path) -> Running | None:
    """The live process the pidfile names, or None (missing, stale or reused PID)."""
    try:
        pid_text, _, created_text = pidfile.read_text().strip().partition(" ")
        pid, created = int(pid_text), float(created_text)
    except (OSError, ValueError):
        return None
    actual = _process_create_time(pid)
    if actual is None or abs(actual - created) > 0.05:
        return None
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return Running(pid, created)


def _write_pidfile(pidfile: Path, pid: int) -> None:
    created = _process_create_time(pid)
    partial = pidfile.with_name(f".{pidfile.name}.{os.getpid()}")
    partial.write_text(f"{pid} {created}\n")
    os.replace(partial, pidfile)


@contextmanager
def pidfile_of_this_process(pidfile: Path) -> Iterator[None]:
    """Hold ``pidfile`` naming this process while the block runs."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    _write_pidfile(pidfile, os.getpid())
    try:
        yield
    finally:
        pidfile.unlink(missing_ok=True)


def start_detached(
    argv: list[str],
    pidfile: Path,
    console_log: Path,
    what: str,
    env: dict[str, str] | None = None,
    cpus: tuple[int, ...] | None = None,
) -> tuple[Running, bool]:
    """Start ``argv`` in the background unless the pidfile names a live one.

    Returns (process, started_now). Raises TracekitError with the last line
    of its console log when it exits within START_CHECK_S.
    """
    running = read_pidfile(pidfile)
    if running is not None:
        return running, False
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(console_log, "ab") as log, open(os.devnull, "rb") as devnull:
        # On its CPUs from its first instruction: whatever it starts inherits them.
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        child = subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=log, start_new_session=True, env=env,
                                 preexec_fn=pin)  # fmt: skip
    _write_pidfile(pidfile, child.pid)
    deadline = time.monotonic() + START_CHECK_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pidfile.unlink(missing_ok=True)
            raise TracekitError(f"{what} did not start: {last_log_line(console_log) or f'exit status {child.returncode}'} (log: {console_log})")
        time.sleep(0.05)
    return Running(child.pid, _process_create_time(child.pid) or 0.0), True


def stop_detached(pidfile: Path, what: str, timeout_s: float) -> bool:
    """SIGTERM the process the pidfile names and wait for its exit; SIGKILL after ``timeout_s``.

    Returns whether one was running. Idempotent.
    """
    running = read_pidfile(pidfile)
    if running is None:
        pidfile.unlink(missing_ok=True)
        return False
    try:
        os.kill(running.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while read_pidfile(pidfile) is not None:
        if time.monotonic() > deadline:
            try:
                os.killpg(running.pid, signal.SIGKILL)  # its session: the worker and its tasks
            except ProcessLookupError:
                pass
            pidfile.unlink(missing_ok=True)
            raise TracekitError(f"{what} pid {running.pid} did not stop within {timeout_s:.0f} s and was killed")
        time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    return True


def last_log_line(path: Path) -> str | None:
    """The last non-blank line of a log (what a process said before it died)."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None
