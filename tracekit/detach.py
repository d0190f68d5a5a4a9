"""Background processes with a pidfile: start once, find again, stop for sure. The one mechanism.

input:  an argv to run in the background, a pidfile path, a console log path
output: the process (own session, so it outlives the Ansible task or shell
        that started it); the pidfile holds "PID CREATE_TIME" so that a
        reused PID is never mistaken for ours

Two ways to own a pidfile: the starter writes it (``start_detached``), or
the process holds it itself (``hold_pidfile``: an exclusive lock as well,
so that a second one refuses to run), and its starter waits until it does
(``registers_itself``). Used for the collector (holds its own), the worker
(``tracekit worker --detach`` / ``--stop``), HTTP services (``tracekit
serve``) and the dispatcher (holds its own, so that ``tracekit dispatch
--stop`` can end one whose Ansible task was interrupted).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from tracekit.errors import TracekitError

START_CHECK_S = 0.5  # a process that dies this soon did not start (the caller checked its inputs first)
READY_TIMEOUT_S = 15.0  # how long a process that registers itself may take to hold its pidfile
# The run folder's pidfiles and console logs (the collector's are in tracekit.runfolder).
WORKER_PIDFILE, WORKER_CONSOLE = "worker.pid", "worker.out"
DISPATCHER_PIDFILE = "dispatcher.pid"


@dataclass(frozen=True)
class Running:
    pid: int
    create_time: float


def _process_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def pidfile_pid(pidfile: Path) -> int | None:
    """The PID a pidfile names, alive or not (to name a stale pidfile)."""
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_alive(running: Running) -> bool:
    """The process is still the one we started (same PID and start time) and has not exited."""
    actual = _process_create_time(running.pid)
    if actual is None or abs(actual - running.create_time) > 0.05:
        return False
    try:
        return psutil.Process(running.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def read_pidfile(pidfile: Path) -> Running | None:
    """The live process the pidfile names, or None (missing, stale or reused PID)."""
    try:
        pid_text, _, created_text = pidfile.read_text().strip().partition(" ")
        pid, created = int(pid_text), float(created_text)
    except (OSError, ValueError):
        return None
    running = Running(pid, created)
    if not is_alive(running):
        return None
    return Running(pid, created)


def _write_pidfile(pidfile: Path, pid: int) -> None:
    created = _process_create_time(pid)
    partial = pidfile.with_name(f".{pidfile.name}.{os.getpid()}")
    partial.write_text(f"{pid} {created}\n")
    os.replace(partial, pidfile)


@contextlib.contextmanager
def hold_pidfile(pidfile: Path, what: str, error: type[TracekitError] = TracekitError,
                 announce_now: bool = True) -> Iterator[Callable[[], None]]:  # fmt: skip
    """Hold ``pidfile`` for this process while the block runs: locked (a second holder is refused with
    ``error``), naming this process; removed at the end. The lock goes with the process, however it ends.

    Yields ``announce``: the pidfile names this process from then on, which is when its starter's wait
    (``registers_itself``) ends. ``announce_now=False``: only when the block calls it, once it is ready
    (a collector: its start record written, its process events subscribed)."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(pidfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = pidfile_pid(pidfile)
        os.close(fd)
        raise error(f"{what} already runs (pid {owner or '?'})") from None

    def announce() -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_process_create_time(os.getpid())}\n".encode(), 0)

    try:
        if announce_now:
            announce()
        else:
            os.ftruncate(fd, 0)  # a dead holder's pid is not this one's
        yield announce
    finally:
        pidfile.unlink(missing_ok=True)
        os.close(fd)


def start_detached(
    argv: list[str],
    pidfile: Path,
    console_log: Path,
    what: str,
    env: dict[str, str] | None = None,
    cpus: tuple[int, ...] | None = None,
    registers_itself: bool = False,
    error: type[TracekitError] = TracekitError,
    cwd: Path | None = None,
) -> tuple[Running, bool]:
    """Start ``argv`` in the background unless the pidfile names a live one.

    Returns (process, started_now). Raises ``error`` with the last line of
    its console log when it exits before it counts as started: within
    START_CHECK_S, or, when it ``registers_itself`` (holds the pidfile),
    before it does so (within READY_TIMEOUT_S).
    """
    running = read_pidfile(pidfile)
    if running is not None:
        return running, False
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(console_log, "ab") as log, open(os.devnull, "rb") as devnull:
        # On its CPUs from its first instruction: whatever it starts inherits them.
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        try:
            child = subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=log, start_new_session=True, env=env,
                                     preexec_fn=pin, cwd=cwd)  # fmt: skip
        except FileNotFoundError as exc:
            missing = argv[0] if exc.filename in (None, argv[0]) else exc.filename
            raise error(f"{what}: {missing}: not found on this node (is it installed, and on PATH?)") from None
        except PermissionError:
            raise error(f"{what}: {argv[0]}: not executable on this node") from None
    if not registers_itself:
        _write_pidfile(pidfile, child.pid)
    deadline = time.monotonic() + (READY_TIMEOUT_S if registers_itself else START_CHECK_S)
    while time.monotonic() < deadline:
        if registers_itself and (holder := read_pidfile(pidfile)) is not None and holder.pid == child.pid:
            return holder, True
        if child.poll() is not None:
            holder = read_pidfile(pidfile)
            if registers_itself and holder is not None:
                return holder, False  # lost a race with a concurrent start: that one runs
            if not registers_itself:
                pidfile.unlink(missing_ok=True)
            raise error(f"{what} did not start: {last_log_line(console_log) or f'exit status {child.returncode}'} (log: {console_log})")
        time.sleep(0.02)
    if registers_itself:
        child.terminate()
        raise error(f"{what} did not come up within {READY_TIMEOUT_S:.0f} s; see {console_log}")
    return Running(child.pid, _process_create_time(child.pid) or 0.0), True


def stop_detached(
    pidfile: Path, what: str, timeout_s: float, error: type[TracekitError] = TracekitError, killed_note: str = ""
) -> Running | None:
    """SIGTERM the process the pidfile names and wait for its exit; SIGKILL its session after ``timeout_s``.

    Returns the process that was stopped, None when none was running (a stale pidfile is removed).
    Idempotent. Waits for the exit itself, not only the pidfile: callers may move its files right after.
    """
    running = read_pidfile(pidfile)
    if running is None:
        pidfile.unlink(missing_ok=True)
        return None
    try:
        os.kill(running.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while is_alive(running):
        if time.monotonic() > deadline:
            try:
                os.killpg(running.pid, signal.SIGKILL)  # its session: e.g. the worker and its tasks
            except ProcessLookupError:
                pass
            pidfile.unlink(missing_ok=True)
            raise error(f"{what} pid {running.pid} did not stop within {timeout_s:.0f} s and was killed{killed_note}")
        time.sleep(0.02)
    pidfile.unlink(missing_ok=True)
    return running


def end_processes_naming(text: str, grace_s: float = 5.0) -> int:
    """SIGTERM every process whose command line names ``text``, with everything it started (its modules run
    in sessions of their own); SIGKILL what is still there after ``grace_s``. Returns how many were ended.

    For an ansible-playbook that outlived its tracekit-run (killed): it goes on with the phases of its
    call, unattended, until something ends it.
    """
    found: dict[int, psutil.Process] = {}  # by pid: a child that names the path too is found twice
    for process in psutil.process_iter(["cmdline"]):
        if process.pid != os.getpid() and any(text in arg for arg in process.info["cmdline"] or []):
            try:
                found.update((p.pid, p) for p in (process, *process.children(recursive=True)))
            except psutil.Error:
                pass
    return _end(list(found.values()), grace_s)


def _end(processes: list[psutil.Process], grace_s: float) -> int:
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    return len(processes)


def end_grandchildren(grace_s: float = 5.0) -> int:
    """SIGTERM every process below this one's own children; SIGKILL those still there after ``grace_s``.

    Ansible starts its modules in sessions of their own: killing its process
    group (what ansible-runner does on cancel) leaves a module's children
    running, e.g. a clip generator's ffmpeg. Our own children (ansible-playbook)
    are left to their owner (ansible-runner waits for them); background
    processes started detached (collectors, workers) are no descendants of ours.
    Returns how many were ended.
    """
    try:
        children = psutil.Process().children()
        processes = [p for child in children for p in child.children(recursive=True)]
    except psutil.Error:
        return 0
    return _end(processes, grace_s)


def last_log_line(path: Path) -> str | None:
    """The last non-blank line of a log (what a process said before it died)."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


# -- the run's background processes ----------------------------------------------------
# (the collector's: tracekit.collect.daemon; HTTP services': tracekit.adapters.http_service)


def start_worker(folder: Path, run_id: str, argv: list[str]) -> tuple[Running, bool]:
    """The run's worker in the background (``argv``: its foreground command line), unless it runs."""
    return start_detached(argv, folder / WORKER_PIDFILE, folder / WORKER_CONSOLE, f"worker of run {run_id}")


def stop_worker(folder: Path, run_id: str, grace_s: float) -> Running | None:
    """SIGTERM the run's worker (its running tasks finish within ``grace_s``) and wait for its exit."""
    return stop_detached(folder / WORKER_PIDFILE, f"worker of run {run_id}", grace_s + 10)


def dispatcher_pidfile(folder: Path, run_id: str) -> contextlib.AbstractContextManager[None]:
    """Held by a dispatcher while it runs: ``stop_dispatcher`` finds it there."""
    return hold_pidfile(folder / DISPATCHER_PIDFILE, f"a dispatcher of run {run_id}")


def stop_dispatcher(folder: Path, run_id: str) -> Running | None:
    return stop_detached(folder / DISPATCHER_PIDFILE, f"dispatcher of run {run_id}", 10)
