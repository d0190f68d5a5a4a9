"""``tracekit worker``: run the tasks placed on one node, K at a time.

input:  the node's queue on Redis (tracekit.sched.queue)
output: one invocation event per attempt (tracekit.invocation, in the node's
        run folder), one terminal record per task on Redis, worker.log

Each of the K slots is a thread with a stable consumer name (``<node>-<k>``),
so a restarted worker takes back what its slots had not finished. A busy
slot makes one Redis round trip per task, on its own connection: the
terminal record of the task it ran, the next task and that task's start
record go in one script call (``TaskQueue.finish_and_take``). A heartbeat
thread keeps the slots' heartbeat keys alive; the dispatcher requeues tasks
of slots whose heartbeat stopped. A slot runs only entries the run's
dispatcher signed for this node (tracekit.sched.signing), each once: any
other is deleted unrun, logged and written to rejected.jsonl.

A task is the argv its workload kind planned (tracekit.taskspec): the worker
fills in this node's folders ({outputs}, {files}), runs it in a process
group of its own (its time-out ends the group: failed, timed_out), with the
workload's environment (its own venv first on PATH, when it has one), and
keeps the tail of its stderr for a failure's reason. SIGINT/SIGTERM: stop
taking tasks and finish the running ones; a second signal (or the grace
period running out) stops the running tasks' groups and hands them back.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from tracekit import detach, runfolder
from tracekit.container import ContainerSpec
from tracekit.container import remove_leftovers as remove_leftover_containers
from tracekit.cpuset import check_usable, keep_on
from tracekit.errors import CommandNotFound, TracekitError, UsageError
from tracekit.filelog import close_file_logger, file_logger
from tracekit.invocation import Invocation, IoPaths, run_invocation, venv_environment
from tracekit.taskcgroup import TaskCgroups, remove_stale
from tracekit.jsonl import append_line, write_json
from tracekit.redis_client import connect, retrying, safe_url
from tracekit.registration import Registrar
from tracekit.sched.protocol import RunKeys, TaskMessage, TerminalRecord
from tracekit.sched.queue import Rejected, SlotConnection, Taken, TaskQueue
from tracekit.sched.signing import read_task_key
from tracekit.taskspec import fill_in

WORKER_LOG = "worker.log"
STDERR_PREFIX = "stderr-"  # a slot's last task's stderr: stderr-<consumer>.txt in the run folder
T = TypeVar("T")


def _container_of(message: TaskMessage) -> tuple[ContainerSpec | None, str | None]:
    """The container a task runs in (None: on the host), or why its message's is not one."""
    if not message.container:
        return None, None
    try:
        return ContainerSpec.from_message(message.container), None
    except ValueError as exc:
        return None, str(exc)


@dataclass(frozen=True)
class WorkerConfig:
    node_id: str
    run_id: str
    redis_url: str
    password_file: Path | None = None
    task_key_file: Path | None = None  # the run's task key (else $TRACEKIT_TASK_KEY)
    parallel: int = 1
    outputs: Path = Path("outputs")  # {outputs} in a task: where its results go
    files: Path | None = None  # {files} in a task: the node's copy of the workload's files
    venv: Path | None = None  # the workload's own Python environment: its bin/ comes first on the tasks' PATH
    logs_dir: Path = field(default_factory=runfolder.logs_dir)
    heartbeat_interval_s: float = 1.0
    grace_s: float = 60.0  # after a stop signal, how long running tasks may finish
    redis_loss_timeout_s: float = 10.0  # how long to retry a lost connection
    cpus: tuple[int, ...] | None = None  # the node's own CPUs (tracekit.cpuset); None: whatever it may use
    task_cgroups: bool = True  # each task in a cgroup of its own (tracekit.taskcgroup), where the machine allows

    def __post_init__(self) -> None:
        runfolder.validate_name(self.node_id, "--node-id")
        runfolder.validate_run_id(self.run_id)
        if not 1 <= self.parallel <= 256:
            raise UsageError(f"--parallel {self.parallel} must be between 1 and 256")
        if self.cpus is not None:
            check_usable(self.cpus)

    @property
    def consumers(self) -> list[str]:
        return [f"{self.node_id}-{slot}" for slot in range(self.parallel)]


class Worker:
    def __init__(self, config: WorkerConfig):
        self.config = config
        self.folder = runfolder.ensure_writable_dir(Path(config.logs_dir) / config.run_id, "run folder")
        self.log = file_logger(self.folder / WORKER_LOG)
        self.client = connect(config.redis_url, config.password_file)
        signer = read_task_key(config.task_key_file)
        self.queue = TaskQueue(self.client, RunKeys(config.run_id), safe_url(config.redis_url), signer)
        self.rejected_count = 0  # queue entries deleted unrun (runfolder.REJECTED_ENTRIES: written only if any)
        # What a task's worker placeholders stand for on this node (tracekit.taskspec), and its environment.
        self._folders = {"outputs": str(Path(config.outputs).resolve()),
                         "files": str(Path(config.files).resolve()) if config.files else ""}  # fmt: skip
        self._task_environment = venv_environment(config.venv)
        # Each task is born in cgroups of its own (tracekit.taskcgroup): its exact CPU time, all its processes.
        self.stale_cgroups = remove_stale() if config.task_cgroups else []  # dead workers' leftovers, any run
        self.cgroups = (TaskCgroups.detect(config.run_id, config.node_id, self.folder) if config.task_cgroups
                        else TaskCgroups({}, "turned off (--no-task-cgroups)"))  # fmt: skip
        self._taken_nonces: dict[str, str] = {}  # nonce -> the entry that carried it: a copy is not run again
        self.draining = threading.Event()  # take no new tasks
        self.aborting = threading.Event()  # stop running tasks and hand them back
        self.failure: BaseException | None = None
        self._running: dict[str, int] = {}  # consumer -> pid of its running ffmpeg
        self._interrupted: set[str] = set()  # consumers whose task we stopped (to hand back)
        self._lock = threading.Lock()
        self.done = threading.Event()  # the slots have stopped: heartbeats end
        self.run_seen = threading.Event()  # the dispatcher's run marker was there once
        self.tasks_finished = 0

    # -- Redis calls survive short outages, and notice a lost run -----------------

    def _redis(self, call: Callable[[], T]) -> T:
        while True:
            try:
                return retrying(call, self.config.redis_url, self.config.redis_loss_timeout_s)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the queue vanished: Redis restarted or the run was cleaned up
                    self.queue.require_live()
                    self.queue.ensure_group(self.config.node_id)
                    continue
                raise

    # -- the slots ----------------------------------------------------------------

    def _slot(self, consumer: str) -> None:
        registrar = Registrar(self.folder / runfolder.PID_DIR, consumer)
        connection = SlotConnection(self.client)
        node = self.config.node_id
        try:
            own_pending_first = True  # after a restart, this slot's unfinished task comes first
            taken: Taken | Rejected | None = None  # taken (and its start recorded), or to reject
            # A task taken together with the last one's finish is run even if
            # a stop signal came meanwhile: its start is recorded already.
            while taken is not None or not self.draining.is_set():
                if isinstance(taken, Rejected):
                    self._reject(taken)
                    taken = None
                    continue
                if taken is None:
                    taken = self._unless_copy(self._redis(lambda: self.queue.take(node, consumer, 500, own_pending_first)))
                    own_pending_first = False  # checked once; what this slot takes, it finishes
                    if taken is None:
                        self._check_run_state()
                        continue
                    if isinstance(taken, Rejected):
                        continue
                    ts_start = int(time.time() * 1000)
                    self._redis(lambda t=taken, ts=ts_start: self.queue.started(node, consumer, t, ts))
                record = self._run(consumer, taken, registrar)
                if record is None:  # handed back
                    taken = None
                    continue
                if self.draining.is_set():
                    finished, next_taken = self._redis(lambda t=taken, r=record: self.queue.finish(node, t, r)), None
                else:
                    # One round trip: this task's terminal record, the next task and its start.
                    ts_start = int(time.time() * 1000)
                    finished, next_taken = self._redis(
                        lambda t=taken, r=record, ts=ts_start: self.queue.finish_and_take(
                            node, consumer, t, r, ts, connection
                        )
                    )
                self._finished(taken, record, finished)
                taken = self._unless_copy(next_taken)
        except BaseException as exc:  # noqa: BLE001 - reported by run(), never lost
            self.failure = self.failure or exc
            self.draining.set()
        finally:
            registrar.close()
            connection.close()

    def _unless_copy(self, taken: Taken | Rejected | None) -> Taken | Rejected | None:
        """A signed entry whose nonce came before in another entry is a copy (a replay): rejected."""
        if not isinstance(taken, Taken):
            return taken
        with self._lock:
            first = self._taken_nonces.setdefault(taken.message.nonce or taken.entry_id, taken.entry_id)
        if first != taken.entry_id:
            return Rejected(taken.entry_id, f"a copy of entry {first}, which this worker took already",
                            taken.message.payload()[:500])  # fmt: skip
        return taken

    def _reject(self, rejected: Rejected) -> None:
        """An entry not signed by this run's dispatcher for this node: deleted unrun, logged, recorded."""
        self._redis(lambda: self.queue.reject(self.config.node_id, rejected))
        with self._lock:
            self.rejected_count += 1
            append_line(self.folder / runfolder.REJECTED_ENTRIES, rejected.as_dict(self.config.node_id, int(time.time() * 1000)))
        self.log.warning("rejected queue entry %s (deleted, not run): %s", rejected.entry_id, rejected.reason)

    def _check_run_state(self) -> None:
        """A run the dispatcher created and that then vanished from Redis is lost.

        Workers may start before the dispatcher creates the run: until the
        run has been seen, its absence only means "not yet".
        """
        if self._redis(self.queue.is_live):
            self.run_seen.set()
        elif self.run_seen.is_set():
            self.queue.require_live()

    def _run(self, consumer: str, taken: Taken, registrar: Registrar) -> TerminalRecord | None:
        """Run a taken task; its terminal record, or None if it was stopped and handed back."""
        message = taken.message
        node = self.config.node_id
        ts_start = int(time.time() * 1000)
        state, exit_status, reason = "done", 0, None
        event: dict = {}
        here = self._folders
        inputs = [fill_in(p, here) for p in message.inputs or ()]
        outputs = [fill_in(p, here) for p in message.outputs or ()]
        missing = [p for p in inputs if not os.path.exists(p)]
        container, problem = _container_of(message)
        if missing or problem:
            state, exit_status, reason = "failed", None, problem or f"input not found: {missing[0]}"
        else:
            for output in outputs:
                os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
            invocation = Invocation(
                argv=[fill_in(arg, here) for arg in message.argv],
                run_id=self.config.run_id,
                logs_dir=self.config.logs_dir,
                module=message.module,
                task_id=message.task_id,
                trace_id=message.trace_id,
                ts_enqueue=message.ts_enqueue,
                node_id=node,
                attempt=taken.attempt,
                io=IoPaths(tuple(inputs), tuple(outputs)),
                env={**self._task_environment, **{k: fill_in(v, here) for k, v in (message.env or {}).items()}},
                cwd=fill_in(message.cwd, here) if message.cwd else None,
                timeout_s=message.timeout_s,
                stderr=self.folder / f"{STDERR_PREFIX}{consumer}.txt",
                own_group=True,
                container=container,
                # A container sees the node's folders of the run and the task's inputs at their own paths.
                mounts=(*here.values(), *sorted({os.path.dirname(p) for p in inputs})) if container else (),
                extra={"profile": message.profile, "size": message.size, "consumer": consumer,
                       **({"params": message.params} if message.params else {})},
            )  # fmt: skip
            try:
                event = run_invocation(invocation, lambda pid: self._started(consumer, pid), registrar,
                                       self.cgroups)  # fmt: skip
            except CommandNotFound as exc:
                event = {"status": exc.exit_code, "error": str(exc)}
            with self._lock:
                self._running.pop(consumer, None)
                interrupted = consumer in self._interrupted
                self._interrupted.discard(consumer)
            if interrupted:  # we stopped it: its output is partial whatever the exit status
                self._redis(lambda: self.queue.hand_back(node, taken))
                self.log.info("handed back %s (attempt %d) after a stop", message.task_id, taken.attempt)
                return None
            if event["status"] != 0:
                program = os.path.basename(invocation.argv[0])
                state, exit_status, reason = "failed", event["status"], f"{program} {event['error']}"
                if event.get("stderr_tail"):
                    reason += f": {event['stderr_tail'].strip().splitlines()[-1][:300]}" if event["stderr_tail"].strip() else ""
        return TerminalRecord(
            task_id=message.task_id, node=node, consumer=consumer, attempt=taken.attempt, state=state,
            exit_status=exit_status, reason=reason, ts_start=event.get("ts_start", ts_start),
            ts_end=event.get("ts_end", int(time.time() * 1000)),
            extra={"cpu_ms": (event.get("cpu_user_ms") or 0) + (event.get("cpu_system_ms") or 0),
                   "profile": message.profile, "size": message.size,
                   **({"timed_out": True} if event.get("timed_out") else {})},
        )  # fmt: skip

    def _finished(self, taken: Taken, record: TerminalRecord, finished: bool) -> None:
        self.tasks_finished += finished
        task_id = taken.message.task_id
        if record.state == "done":  # one line per task costs more than the rest of a no-op task's bookkeeping
            self.log.debug("%s done (attempt %d)", task_id, taken.attempt)
        else:
            self.log.warning("%s %s (attempt %d): %s", task_id, record.state, taken.attempt, record.reason)
        if not finished:
            self.log.warning("%s was requeued by the dispatcher meanwhile; this attempt's record is dropped", task_id)

    def _started(self, consumer: str, pid: int) -> None:
        with self._lock:
            self._running[consumer] = pid
        if self.aborting.is_set():
            self._stop_children()

    def _stop_children(self) -> None:
        with self._lock:
            pids = list(self._running.values())
            self._interrupted.update(self._running)
        for pid in pids:  # each task is the leader of its own process group: it and what it started
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _heartbeats(self) -> None:
        ttl_ms = int(self.config.heartbeat_interval_s * 3000)
        while not self.done.is_set():
            try:
                self.queue.heartbeat(self.config.node_id, self.config.consumers, ttl_ms)
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # the slots notice a lasting outage
            self.done.wait(self.config.heartbeat_interval_s)

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> int:
        self.queue.ensure_group(self.config.node_id)
        stops = {"count": 0}

        def on_signal(signum: int, _frame: object) -> None:
            stops["count"] += 1
            self.draining.set()
            if stops["count"] > 1:
                self.aborting.set()
                self._stop_children()
            self.log.info("%s: %s", signal.Signals(signum).name,
                          "stopping running tasks" if stops["count"] > 1 else "finishing running tasks")  # fmt: skip

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        self.log.info(
            "worker %s: run %s, %d slot(s), redis %s, outputs %s",
            self.config.node_id, self.config.run_id, self.config.parallel, self.queue.url, self.config.outputs,
        )  # fmt: skip
        # Tasks run in it by default (and write {outputs}/... without making it): there before the first.
        os.makedirs(self._folders["outputs"], exist_ok=True)
        write_json(self.folder / runfolder.TASK_CGROUPS,
                   {"node": self.config.node_id, "run_id": self.config.run_id, **self.cgroups.describe()})  # fmt: skip
        if self.cgroups.unavailable:
            self.log.warning("tasks run without cgroups of their own: %s", self.cgroups.unavailable)
        if self.stale_cgroups:
            self.log.info("removed %d empty task cgroups that dead workers left", len(self.stale_cgroups))
        for cgroup, pids in self.cgroups.clear_leftovers().items():
            self.log.warning("a killed worker's task cgroup %s still ran %s: killed and removed", cgroup, pids)
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        slots = [threading.Thread(target=self._slot, args=(c,), name=c, daemon=True) for c in self.config.consumers]
        for slot in slots:
            slot.start()
        while not self.draining.wait(0.5):  # a timed wait lets signal handlers run
            pass
        deadline = time.monotonic() + self.config.grace_s
        for slot in slots:
            while slot.is_alive():
                slot.join(0.2)
                if time.monotonic() > deadline and not self.aborting.is_set():
                    self.aborting.set()
                    self._stop_children()
        self.done.set()
        beat.join(5)
        for cgroup, pids in self.cgroups.clear_leftovers().items():  # nothing a task started outlives the worker
            self.log.warning("task cgroup %s still held %s after its task ended: killed and removed", cgroup, pids)
        self.cgroups.close()
        if self.failure is not None:
            if isinstance(self.failure, TracekitError):
                raise self.failure
            raise TracekitError(f"worker {self.config.node_id} failed: {self.failure!r}") from self.failure
        self.log.info("worker %s stopped: %d tasks finished, %d queue entries rejected", self.config.node_id,
                      self.tasks_finished, self.rejected_count)  # fmt: skip
        return 0


def stop_worker(folder: Path, run_id: str, grace_s: float, node_id: str | None = None) -> tuple[Any, dict[str, list[int]]]:
    """Stop the run's background worker (``tracekit worker --stop``), then remove the containers its tasks
    left (named tk-<run>-<node>-...), end what they left in their cgroups and remove those (a worker
    SIGKILLed mid-task leaves them): (the worker stopped, or None when none ran; {what: pids ended}, a
    container removed as {"container <engine>:<name>": []})."""
    stopped = detach.stop_worker(folder, run_id, grace_s)
    leftover, _why = TaskCgroups.recorded(folder, run_id, node_id)
    node = node_id or _recorded_node(folder)
    ended: dict[str, list[int]] = {}
    if node is not None and (folder / runfolder.CONTAINERS_DIR).is_dir():  # a container task ran here
        ended.update({f"container {name}": [] for name in remove_leftover_containers(run_id, node)})
    if leftover is not None:
        ended.update(leftover.clear_leftovers())
        leftover.close()
    return stopped, ended


def _recorded_node(folder: Path) -> str | None:
    """The node a run folder's worker served, from its task_cgroups.json (None: not known)."""
    try:
        node = json.loads((folder / runfolder.TASK_CGROUPS).read_text()).get("node")
    except (OSError, ValueError, AttributeError):
        return None
    return node if isinstance(node, str) else None


def run_worker(config: WorkerConfig) -> int:
    """Make this process the node's worker: on the node's CPUs, marked with its node and run id, until stopped.

    What it starts inherits both: tasks stay on the node's CPUs, and a
    collector of another node on the same machine leaves them alone.
    """
    if config.cpus is not None:
        keep_on(config.cpus)
    os.environ[runfolder.NODE_ID_ENV] = config.node_id
    os.environ[runfolder.RUN_ID_ENV] = config.run_id
    worker = Worker(config)
    try:
        return worker.run()
    finally:
        close_file_logger(worker.log)
