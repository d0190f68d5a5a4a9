"""Run one command as a traced invocation: ``argv -> events.<module>.jsonl`` line.

The child is started with ``os.posix_spawnp``: glibc spawns with
``CLONE_VFORK``, so the call returns only once exec succeeded (or reports
why it failed), and the collector never sees the wrapper's own name under
the PID registered in the run's PID folder. It costs less than
``subprocess.Popen`` (no error pipe, no Python-level set-up); like Popen it
restores the signals Python ignores, and the child inherits no descriptor
but 0-2 (see ``_inherited_descriptors``). The wrapper waits with
``os.wait4``: the child's exact CPU time and peak RSS at exit close the books
that interval samples leave open. A task with a working folder of its own is
started with ``subprocess.Popen(cwd=...)`` (posix_spawn here has no working
folder; Popen's vfork path costs the same, and it too returns once exec
succeeded). A task in a cgroup of its own (``cgroups``, a worker's) is
spawned behind the cgroup's ``/bin/sh`` trampoline (tracekit.taskcgroup),
which goes to its working folder too: its registered PID is that shell for
a moment before it execs the task, and the collector waits for the exec.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit import container as containers
from tracekit import runfolder
from tracekit.container import ContainerSpec
from tracekit.errors import CommandNotFound, RunFolderError, UsageError
from tracekit.jsonl import append_line, dumps
from tracekit.registration import Registrar, process_identity, write_registration
from tracekit.taskcgroup import SHELL, TaskCgroup, TaskCgroups, cgroup_name
from tracekit.tracecontext import new_trace_id

_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Python ignores these; a child gets them back at their defaults (as with
# subprocess.Popen's restore_signals), or ffmpeg would not die of a closed pipe.
_RESTORED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name))

# Exit statuses a shell would report when a command cannot run.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


@dataclass(frozen=True)
class IoPaths:
    """Files an invocation reads and writes (their sizes become bytes_in/out)."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


def module_for(argv: list[str]) -> str:
    """Default module name: the command's base name, made safe for a file name."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.basename(argv[0])) or "cmd"
    return name


@dataclass(frozen=True)
class Invocation:
    """What to run and how to label it."""

    argv: list[str]
    run_id: str
    logs_dir: Path | str | None = None
    module: str | None = None  # default: module_for(argv)
    task_id: str | None = None  # default: a new UUID
    trace_id: str | None = None  # default: a new trace id
    ts_enqueue: int | None = None  # epoch ms, controller clock; default: ts_start (node clock)
    node_id: str | None = None  # default: $TRACEKIT_NODE_ID, else the host name; marked on the child
    attempt: int = 1
    pid_dir: Path | None = None  # default: the run folder's pids/
    io: IoPaths = IoPaths()  # the files it reads and writes (tracekit.adapters.ffmpeg_argv guesses ffmpeg's)
    extra: dict = field(default_factory=dict)  # more fields for the event (profile, ...)
    env: Mapping[str, str] | None = None  # added to this process's environment for the child
    cwd: str | None = None  # the child's working folder (default: this process's)
    timeout_s: float | None = None  # past it the child's whole process group is killed: its event says timed_out
    stderr: Path | None = None  # the child's stderr goes to this file (rewritten); a failure's tail is in the event
    # A process group of its own: what a time-out or a stop ends is the task and all it started. Not for a
    # command run from a terminal (tracekit wrap), which must stay in the terminal's foreground group.
    own_group: bool = False
    # Run in a container (tracekit.container): the engine's client is the child, the argv runs inside;
    # ``mounts``: folders the container sees at the same paths (the task's outputs and files).
    container: ContainerSpec | None = None
    mounts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.argv:
            raise UsageError("nothing to run: give the command after '--', e.g. tracekit wrap -- sleep 1")
        runfolder.validate_run_id(self.run_id)


def _inherited_descriptors() -> list[tuple[int, int]]:
    """posix_spawn file actions closing, in the child, every inheritable descriptor >= 3.

    What Popen's ``close_fds=True`` did. Python opens descriptors
    non-inheritable, so this is usually empty: only a descriptor inherited
    from this process's own parent, or made inheritable on purpose, is listed.
    """
    actions = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:  # the listing's own descriptor, closed by now
                pass
    return actions


_NODE_ID_ENV = runfolder.NODE_ID_ENV.encode()
_RUN_ID_ENV = runfolder.RUN_ID_ENV.encode()


def venv_environment(venv: Path | str | None) -> dict[str, str]:
    """What a workload's own venv adds to its commands' environment: its bin/ first on PATH."""
    if not venv:
        return {}
    folder = Path(venv).resolve()
    return {"PATH": f"{folder / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(folder)}


def _environment(node: str, run_id: str, extra: Mapping[str, str] | None = None) -> Mapping[bytes, bytes]:
    """This process's environment with the node's and the run's mark, as posix_spawn takes it.

    The child carries TRACEKIT_NODE_ID=<node> and TRACEKIT_RUN_ID=<run>:
    collectors of other nodes on the same machine, and of other runs that use
    the same node id, leave it alone. ``os.environ`` decodes and re-encodes
    every variable on each spawn (about 0.1 ms for 40 variables); its bytes
    mapping, kept in step with it by CPython, is taken as it is when it holds
    the marks already (a worker marks its own environment once).
    """
    environment = getattr(os.environ, "_data", os.environb)
    node_mark, run_mark = node.encode(), run_id.encode()
    if environment.get(_NODE_ID_ENV) == node_mark and environment.get(_RUN_ID_ENV) == run_mark and not extra:
        return environment
    added = {os.fsencode(name): os.fsencode(value) for name, value in (extra or {}).items()}
    return {**environment, **added, _NODE_ID_ENV: node_mark, _RUN_ID_ENV: run_mark}


def _spawn(invocation: Invocation, node: str, cgroup: TaskCgroup | None = None,
           engine_argv: list[str] | None = None) -> int:  # fmt: skip
    """posix_spawn the invocation's argv (found on PATH as execvp would find it), marked with ``node``.

    With a ``cgroup`` (tracekit.taskcgroup) the argv is spawned behind its trampoline, which moves the
    child into it and into the task's working folder, and could only report a missing command or folder
    by its exit status: both are looked for first, and a missing one raises as without. ``engine_argv``:
    a container engine's command that runs the argv (tracekit.container.run_argv), spawned instead, here.
    """
    argv = list(invocation.argv) if engine_argv is None else engine_argv
    if engine_argv is not None:
        invocation = dataclasses.replace(invocation, cwd=None)  # the container's folder is its --workdir
    environment = _environment(node, invocation.run_id, invocation.env)
    path = os.fsdecode(environment[b"PATH"]) if b"PATH" in environment else None
    executable = _on_path(argv[0], path)
    if cgroup is not None:
        if invocation.cwd is not None and not os.path.isdir(invocation.cwd):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), invocation.cwd)
        _check_runnable(argv[0], executable, path, invocation.cwd)
        argv, executable = cgroup.trampoline(argv, invocation.cwd), SHELL
    own_group = invocation.own_group or invocation.timeout_s is not None
    if invocation.cwd is not None and cgroup is None:
        return _spawn_in_folder(invocation, argv, executable, environment, own_group)
    descriptors = _inherited_descriptors()
    if invocation.stderr is not None:
        descriptors = [*descriptors, (os.POSIX_SPAWN_OPEN, 2, str(invocation.stderr),
                                      os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]  # fmt: skip
    spawn_options: dict[str, Any] = {"setsigdef": _RESTORED_SIGNALS, "file_actions": descriptors}
    if own_group:
        spawn_options["setpgroup"] = 0
    if executable is not None:
        try:
            return os.posix_spawn(executable, argv, environment, **spawn_options)
        except OSError:
            pass  # gone or changed since it was found: posix_spawnp searches again, and says why it fails
    return os.posix_spawnp(argv[0], argv, environment, **spawn_options)


def _spawn_in_folder(invocation: Invocation, argv: list[str], executable: str | None,
                     environment: Mapping[bytes, bytes], own_group: bool) -> int:  # fmt: skip
    """Popen in the invocation's working folder; the caller waits for the PID (os.wait4: its rusage)."""
    stderr = open(invocation.stderr, "wb") if invocation.stderr is not None else None  # noqa: SIM115 - the child's
    try:
        process = subprocess.Popen(argv, executable=executable, cwd=invocation.cwd, env=environment, stderr=stderr,
                                   process_group=0 if own_group else None, restore_signals=True, close_fds=True)  # fmt: skip
    finally:
        if stderr is not None:
            stderr.close()
    process.returncode = 0  # reaped by the caller's wait4: Popen must neither wait for it nor warn of it
    return process.pid


def _check_runnable(command: str, executable: str | None, path: str | None, cwd: str | None) -> None:
    """Raise what an exec of ``command`` would: FileNotFoundError when there is none, PermissionError when not runnable.

    A missing working folder is left to the spawn, which names it.
    """
    if executable is None:
        folder = cwd if cwd is not None else os.getcwd()
        if not os.path.isdir(folder):
            return
        if "/" in command:
            executable = os.path.join(folder, command)
        else:  # found on no absolute PATH entry: on a relative one, if anywhere
            relative = os.pathsep.join(os.path.join(folder, entry) for entry in (path or "").split(os.pathsep))
            executable = shutil.which(command, path=relative)
    if executable is None or not os.path.exists(executable):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
    if os.path.isdir(executable) or not os.access(executable, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), command)


@functools.lru_cache(maxsize=256)
def _on_path(command: str, path: str | None) -> str | None:
    """Where PATH leads ``command`` (None: not found), remembered per PATH value.

    posix_spawnp tries each PATH entry in the child, one failed exec after
    another, on every spawn (~60 us a task for a command in /usr/bin).
    """
    if "/" in command:
        return command if os.path.isabs(command) else None
    found = shutil.which(command, path=path)
    return found if found is not None and os.path.isabs(found) else None  # a relative PATH entry: search each time


@functools.lru_cache(maxsize=64)
def _run_paths(logs_dir: Path, run_id: str, module: str) -> tuple[Path, Path]:
    """The run folder and the module's events file (built once, not per task)."""
    folder = logs_dir / run_id
    return folder, runfolder.events_file(folder, module)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def run_invocation(
    invocation: Invocation,
    on_start: Callable[[int], None] | None = None,
    registrar: Registrar | None = None,
    cgroups: TaskCgroups | None = None,
) -> dict:
    """Run the command to completion and write its event; return the event.

    ``cgroups``: the child is born in cgroups of its own (tracekit.taskcgroup), whose totals
    (every process it started, however short) go into its event beside its rusage.

    ``registrar``: how a long-lived caller (a worker slot) registers its
    children in the PID folder, which must then be this invocation's; by
    default a registration file is created and removed per invocation.
    Raises CommandNotFound (after writing a failed event) when the command
    cannot be executed.
    """
    module = invocation.module or module_for(invocation.argv)
    folder, events_path = _run_paths(runfolder.logs_dir(invocation.logs_dir), invocation.run_id, module)
    if not os.path.isdir(folder):
        # Proved writable once, when new; workers run thousands of tasks into
        # an existing folder, and a failed event write is reported below.
        runfolder.ensure_writable_dir(folder, "run folder")
    io = invocation.io
    task_id = invocation.task_id or uuid.uuid4().hex
    event = {
        "run_id": invocation.run_id,
        "task_id": task_id,
        "trace_id": invocation.trace_id or new_trace_id(),
        "node": invocation.node_id or runfolder.default_node_id(),
        "module": module,
        "attempt": invocation.attempt,
        "argv": list(invocation.argv),
        "inputs": list(io.inputs),
        "outputs": list(io.outputs),
        "bytes_in": sum(_file_size(p) for p in io.inputs),
        **invocation.extra,
    }
    ts_start = int(time.time() * 1000)
    event["ts_enqueue"] = invocation.ts_enqueue if invocation.ts_enqueue is not None else ts_start
    # A given enqueue time comes from the dispatcher, on the controller's
    # clock; parse must not shift it by this node's clock offset.
    event["ts_enqueue_given"] = invocation.ts_enqueue is not None
    event["ts_start"] = ts_start
    # Forward stop signals from before the spawn on: one that arrives before
    # the child exists is held and delivered as soon as it does (a signal
    # between spawn and handler installation used to kill only the wrapper).
    child: dict[str, Any] = {"pid": None, "held": [], "group": invocation.own_group or invocation.timeout_s is not None}

    def forward(signum: int, _frame: object) -> None:
        if child["pid"] is None:
            child["held"].append(signum)
            return
        try:
            (os.killpg if child["group"] else os.kill)(child["pid"], signum)
        except ProcessLookupError:
            pass

    # Only the main thread may install handlers; a threaded caller (the
    # worker's slots) handles signals itself and stops its children.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED_SIGNALS} if in_main_thread else {}
    try:
        cgroup = cgroups.task(cgroup_name(task_id, invocation.attempt)) if cgroups is not None else None
        return _spawn_and_wait(invocation, event, events_path, folder, io, task_id, registrar, on_start, child, cgroup)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _spawn_and_wait(
    invocation: Invocation,
    event: dict[str, Any],
    events_path: Path,
    folder: Path,
    io: IoPaths,
    task_id: str,
    registrar: Registrar | None,
    on_start: Callable[[int], None] | None,
    child: dict[str, Any],
    cgroup: TaskCgroup | None = None,
) -> dict:
    """Spawn, register, wait; then complete and write the event (run_invocation's second half)."""
    boxed = _ContainerRun.prepare(invocation, event, folder, task_id) if invocation.container is not None else None
    try:
        pid, cgroup = _spawn_counted(invocation, event, cgroup, boxed)
    except OSError as exc:
        in_folder = invocation.cwd is not None and exc.filename == invocation.cwd  # Popen could not change to it
        missing = isinstance(exc, FileNotFoundError) and not in_folder
        if boxed is not None and exc.filename == boxed.spec.engine:
            error = f"container engine not found: {boxed.spec.engine} ({exc.strerror})"
            hint = "install it on the node (prepare installs podman for engine podman)"
        elif in_folder:
            error, hint = f"cannot run in {invocation.cwd} ({exc.strerror})", "does the task's cwd exist on the node?"
        elif missing:
            error, hint = f"command not found: {invocation.argv[0]} ({exc.strerror})", "is it installed and on PATH?"
        else:
            error, hint = f"cannot execute: {invocation.argv[0]} ({exc.strerror})", "check its permissions"
        event.update(
            pid=None, create_time_ms=None, ts_end=int(time.time() * 1000),
            status=EXIT_NOT_FOUND if missing else EXIT_NOT_EXECUTABLE, signal=None, error=error,
            cpu_user_ms=0.0, cpu_system_ms=0.0, max_rss_kb=0, bytes_out=0,
        )  # fmt: skip
        _write_event(events_path, event)
        raise CommandNotFound(f"{event['error']}; {hint}", exit_code=event["status"]) from None

    # posix_spawnp returned: the child has exec'd. From here on it is waited for
    # whatever happens, and its event written: nothing started is left running.
    child["pid"] = pid
    for signum in child["held"]:
        (os.killpg if child["group"] else os.kill)(pid, signum)
    create_time_ms = process_identity(pid).create_time_ms  # ours until waited for: its /proc entry stays
    unregister = _register(invocation, folder, registrar, pid, create_time_ms, task_id, event)
    try:
        if on_start is not None:
            on_start(pid)
    except BaseException:
        os.kill(pid, signal.SIGTERM)  # the caller cannot follow it: stop it, record it, then say why
        _wait_and_record(event, events_path, pid, create_time_ms, io, unregister, invocation, cgroup, boxed)
        raise
    return _wait_and_record(event, events_path, pid, create_time_ms, io, unregister, invocation, cgroup, boxed)


def _spawn_counted(invocation: Invocation, event: dict[str, Any], cgroup: TaskCgroup | None,
                   boxed: _ContainerRun | None = None) -> tuple[int, TaskCgroup | None]:  # fmt: skip
    """_spawn, into the task's cgroups when it has some; cgroups that cannot be made are said in the event."""
    if cgroup is not None:
        try:
            cgroup.make()
        except OSError as exc:
            event["cgroup_error"] = f"not in cgroups of its own: {exc.strerror or exc}"
            cgroup.remove()
            cgroup = None
    engine_argv = boxed.argv(invocation, cgroup) if boxed is not None else None
    try:
        return _spawn(invocation, event["node"], cgroup, engine_argv), cgroup
    except OSError:
        if cgroup is not None:
            cgroup.remove(everywhere=boxed is not None)
        raise


@dataclass
class _ContainerRun:
    """A task's container (tracekit.container): its name and id file; the event says which."""

    spec: ContainerSpec
    name: str
    cidfile: Path

    @classmethod
    def prepare(cls, invocation: Invocation, event: dict[str, Any], folder: Path, task_id: str) -> _ContainerRun:
        spec = invocation.container
        assert spec is not None
        name = containers.container_name(invocation.run_id, event["node"], cgroup_name(task_id, invocation.attempt))
        cidfile = folder / runfolder.CONTAINERS_DIR / f"{name}.cid"
        cidfile.parent.mkdir(exist_ok=True)
        cidfile.unlink(missing_ok=True)  # the engine refuses to overwrite one (a killed worker's)
        event.update(container_engine=spec.engine, container_name=name, image=spec.what)
        return cls(spec, name, cidfile)

    def argv(self, invocation: Invocation, cgroup: TaskCgroup | None) -> list[str]:
        env_names = sorted({*(invocation.env or {}), runfolder.NODE_ID_ENV, runfolder.RUN_ID_ENV})
        return containers.run_argv(
            self.spec, list(invocation.argv), name=self.name, cidfile=self.cidfile,
            cgroup_parent=cgroup.engine_parent() if cgroup is not None else None, env_names=env_names,
            cwd=invocation.cwd, mounts=list(invocation.mounts),
        )  # fmt: skip

    def finish(self, event: dict[str, Any], ended_by_us: bool, cgroup: TaskCgroup | None) -> None:
        """After the engine's client ended: the container's id into the event; a container the client left
        (it was killed, or timed out) removed; the engine's own failure named. The engine's monitor
        (conmon) removes the container after the client returned: its cgroup is waited for to empty, so
        that the task's totals are whole and its cgroup can go."""
        event["container_id"] = containers.read_cidfile(self.cidfile)
        self.cidfile.unlink(missing_ok=True)
        if ended_by_us or (event["status"] or 0) < 0:
            containers.remove(self.spec.engine, self.name)
        if cgroup is not None:
            cgroup.wait_empty(containers.SETTLE_S)
        if event["status"] == containers.ENGINE_FAILED:
            event["error"] = f"the container engine failed ({self.spec.engine}, exit status {event['status']})"


def _register(
    invocation: Invocation, folder: Path, registrar: Registrar | None, pid: int, create_time_ms: int, task_id: str,
    event: dict[str, Any],
) -> Callable[[], None]:  # fmt: skip
    """Register the child in the PID folder; returns how to unregister it.

    When it cannot be registered (PID folder unwritable, disk full) the task
    runs on, and its event says so: the collector may still follow it by
    name, and its exact totals come from the wait anyway.
    """
    try:
        if registrar is not None:
            registration = registrar.register(pid, create_time_ms, task_id)
            return lambda: registrar.unregister(registration)
        pid_dir = invocation.pid_dir or folder / runfolder.PID_DIR
        registration_path = write_registration(pid_dir, pid, create_time_ms, task_id)
        return lambda: registration_path.unlink(missing_ok=True)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        event["registration_error"] = f"not registered for the collector: {exc.strerror or exc}{where}"
        return lambda: None


def _wait_and_record(
    event: dict[str, Any], events_path: Path, pid: int, create_time_ms: int, io: IoPaths, unregister: Callable[[], None],
    invocation: Invocation, cgroup: TaskCgroup | None = None, boxed: _ContainerRun | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Wait for the child; its exit, exact CPU time and peak RSS, and what it wrote, into its event, written.

    Past its time-out its process group is ended (SIGTERM, SIGKILL after KILL_AFTER_S): the task and
    whatever it started; the event says timed_out.
    """
    timer = _TimeOut(pid, invocation.timeout_s) if invocation.timeout_s is not None else None
    try:
        _, wait_status, usage = os.wait4(pid, 0)
    finally:
        if timer is not None:
            timer.cancel()
        unregister()
    ts_end = int(time.time() * 1000)
    exit_code = os.waitstatus_to_exitcode(wait_status)
    event.update(
        pid=pid,
        create_time_ms=create_time_ms,
        ts_end=ts_end,
        status=exit_code,
        signal=signal.Signals(-exit_code).name if exit_code < 0 else None,
        error=None if exit_code == 0 else _describe_failure(exit_code),
        cpu_user_ms=round(usage.ru_utime * 1000, 3),
        cpu_system_ms=round(usage.ru_stime * 1000, 3),
        max_rss_kb=usage.ru_maxrss,  # Linux reports kB
        bytes_out=sum(_file_size(p) for p in io.outputs),
    )
    if timer is not None and timer.fired:
        event["timed_out"] = True
        event["error"] = f"timed out after {invocation.timeout_s:g} s (its process group was killed)"
    if exit_code != 0 and invocation.stderr is not None:
        event["stderr_tail"] = _tail(invocation.stderr)
    if boxed is not None:
        boxed.finish(event, timer is not None and timer.fired, cgroup)
    if cgroup is not None:
        try:
            event.update(cgroup.totals())
        except (OSError, ValueError) as exc:
            event["cgroup_error"] = f"its cgroups could not be read: {exc}"
        kept = cgroup.remove(everywhere=boxed is not None)
        if kept:  # a process of the task outlived it (left its process group)
            event["cgroup_kept"] = kept
    _write_event(events_path, event)
    return event


KILL_AFTER_S = 5.0  # after SIGTERM at a time-out, how long a task's processes may take to end
STDERR_TAIL_BYTES = 2000


class _TimeOut:
    """Ends a child's process group once its time is up (a timer thread; nothing when it ended before)."""

    def __init__(self, pid: int, timeout_s: float):
        self.pid = pid
        self.fired = False
        self._timer = threading.Timer(timeout_s, self._end)
        self._timer.daemon = True
        self._timer.start()
        self._kill: threading.Timer | None = None

    def _end(self) -> None:
        self.fired = True
        _signal_group(self.pid, signal.SIGTERM)
        self._kill = threading.Timer(KILL_AFTER_S, _signal_group, (self.pid, signal.SIGKILL))
        self._kill.daemon = True
        self._kill.start()

    def cancel(self) -> None:
        self._timer.cancel()
        if self._kill is not None:
            self._kill.cancel()
            _signal_group(self.pid, signal.SIGKILL)  # what is left of the group after its leader ended


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    """The last STDERR_TAIL_BYTES of a file, as text."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - STDERR_TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _write_event(path: Path, event: dict) -> None:
    try:
        append_line(path, event)
    except OSError as exc:
        raise RunFolderError(
            f"cannot write {path}: {exc.strerror}; the command ran (status {event['status']}) but its event "
            f"is lost: {dumps(event)[:200]}"
        ) from None


def _describe_failure(exit_code: int) -> str:
    if exit_code < 0:
        return f"killed by {signal.Signals(-exit_code).name}"
    return f"exit status {exit_code}"


def shell_exit_code(status: int) -> int:
    """The exit code a shell reports for a child's status (128+N for signal N)."""
    return 128 - status if status < 0 else status
