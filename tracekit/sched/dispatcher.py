"""``tracekit dispatch``: place planned tasks on worker nodes and wait for all of them.

input:  tasks (tracekit.taskspec.TaskSpec, from a workload kind), a placement policy, the node
        queues on Redis, worker starts and terminal records
output: placement_events.jsonl, terminal_records.jsonl (each task's
        terminal record as received: the scheduler's account of what ran),
        dispatch.json (summary) and dispatcher.log in the dispatcher's run
        folder; an exit status that says whether every task was done

Each round the policy places up to ``batch_size`` tasks on nodes below the
backlog limit (queued + running, as counted from the workers' start and
terminal records), then the dispatcher waits ``dribble_interval`` seconds
while it follows completions. Tasks of worker slots whose heartbeat stopped
are requeued (next attempt) through the policy. A node whose every slot
stopped sending heartbeats is out of the placement: the tasks waiting in its
queue are moved to live nodes (``moved``), and back when its worker returns
(``returned``), each move a placement event. Nothing is dropped: every task
ends done, failed, or reported as timed out (or unfinished, when a stop
signal ended the dispatch early).

Every queue entry is signed with the run's task key, for its node
(tracekit.sched.signing), and carries a nonce: a worker runs only what
verifies, and a copy of an entry once. Only terminal records signed with
the key count; what nobody of the run wrote is ignored and counted
(``rejected_records``, ``rejected_entries``). The tasks come from the
caller (a workload kind's plan: tracekit.workloads): nothing here knows
what they run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

from tracekit import runfolder
from tracekit.errors import ProtocolError, UsageError
from tracekit.filelog import close_file_logger, file_logger
from tracekit.jsonl import LineWriter
from tracekit.redis_client import connect, retrying, safe_url
from tracekit.taskspec import TaskSpec
from tracekit.sched.policies import NodeState, PlannedTask, make_policy
from tracekit.sched.protocol import RunKeys, StartRecord, TaskMessage, TerminalRecord, run_meta
from tracekit.sched.queue import PLACE_BATCH, Rejected, Taken, TaskQueue, new_nonce
from tracekit.sched.signing import read_task_key

DISPATCHER_LOG = "dispatcher.log"
T = TypeVar("T")


@dataclass(frozen=True)
class DispatchConfig:
    run_id: str
    redis_url: str
    nodes: tuple[str, ...]
    password_file: Path | None = None
    task_key_file: Path | None = None  # the run's task key (else $TRACEKIT_TASK_KEY)
    policy: str = "duration-online"
    batch_size: int = 0  # per round; 0 = no limit
    dribble_interval_s: float = 0.0
    backlog_limit: int = 0  # per node, queued + running; 0 = no limit
    timeout_s: float = 3600.0
    logs_dir: Path = field(default_factory=runfolder.logs_dir)
    worker_wait_s: float = 30.0  # how long to wait for every node's worker
    lease_ms: int = 5000  # a slot silent this long loses its task
    redis_loss_timeout_s: float = 10.0
    node_id: str = field(default_factory=runfolder.default_node_id)  # the controller's

    def __post_init__(self) -> None:
        runfolder.validate_run_id(self.run_id)
        runfolder.validate_name(self.node_id, "--node-id")
        if not self.nodes:
            raise UsageError("--nodes is empty: name the worker nodes, e.g. --nodes cloud1,cloud2")
        for node in self.nodes:
            runfolder.validate_name(node, "--nodes entry")
        if len(set(self.nodes)) != len(self.nodes):
            raise UsageError(f"--nodes {','.join(self.nodes)} names a node twice")
        for flag, value in (("--batch-size", self.batch_size), ("--backlog-limit", self.backlog_limit)):
            if value < 0:
                raise UsageError(f"{flag} {value} must be 0 (no limit) or more")
        if self.dribble_interval_s < 0 or self.timeout_s <= 0:
            raise UsageError("--dribble-interval must be >= 0 and --timeout > 0 seconds")
        make_policy(self.policy)  # unknown names fail here, before anything starts


def trace_id_of(run_id: str, task_id: str) -> str:
    """The task's W3C trace id (32 hex digits): the same for the same run and task, different across runs."""
    return hashlib.sha256(f"tracekit/{run_id}/{task_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Planned:
    """A task and what the dispatcher derives from it: its trace id, and what the policies see."""

    spec: TaskSpec
    trace_id: str
    task: PlannedTask  # task_id, profile, size, unit_ms

    @classmethod
    def of(cls, spec: TaskSpec, run_id: str) -> Planned:
        return cls(spec, trace_id_of(run_id, spec.task_id), PlannedTask(spec.task_id, spec.profile, spec.size, spec.unit_ms))


@dataclass
class TaskProgress:
    planned: Planned
    node: str | None = None
    attempt: int = 0
    state: str = "pending"  # pending, queued, running, done, failed
    placed_ms: int | None = None
    started_ms: int | None = None  # controller clock: when Redis recorded its start
    record: TerminalRecord | None = None
    entry_id: str | None = None  # its entry in its node's queue
    nonce: str | None = None  # that entry's nonce (TaskMessage.nonce): another entry with it is a copy
    moved_from: str | None = None  # the node it waited on until that node's worker went away


def stream_time_ms(entry_id: str) -> int:
    """When Redis added a stream entry (``<ms>-<seq>``): the controller's clock, whatever node wrote it."""
    return int(entry_id.split("-", 1)[0])


@dataclass(frozen=True)
class DispatchResult:
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.summary["done"] == self.summary["tasks"]


class Dispatcher:
    def __init__(self, config: DispatchConfig, tasks: list[TaskSpec]):
        self.config = config
        self.specs = tasks
        self.folder = runfolder.ensure_writable_dir(Path(config.logs_dir) / config.run_id, "run folder")
        # A line per task goes to the file only: on stderr (an Ansible task's result, held in memory)
        # 100,000 tasks made megabytes; stderr gets what went wrong, the CLI prints the summary.
        self.log = file_logger(self.folder / DISPATCHER_LOG, stderr_level=logging.WARNING)
        self.client = connect(config.redis_url, config.password_file)
        signer = read_task_key(config.task_key_file)
        self.queue = TaskQueue(self.client, RunKeys(config.run_id), safe_url(config.redis_url), signer)
        self.policy = make_policy(config.policy)
        self.tasks: dict[str, TaskProgress] = {}
        self._pending: dict[str, TaskProgress] = {}  # tasks not placed yet
        self._unfinished = 0  # tasks neither done nor failed
        self._busy_done_ms = {n: 0 for n in config.nodes}  # measured run times of finished tasks (per node clock)
        # First start and last terminal record, on the controller's clock (Redis stream times).
        self._first_start_ms: int | None = None
        self._last_end_ms: int | None = None
        self.stop_requested: str | None = None  # the signal that asked this dispatcher to stop
        self._live: set[str] = set(config.nodes)  # nodes with a worker slot sending heartbeats
        self.rejected_records = 0  # results entries no worker of this run signed
        self.rejected_entries = 0  # queue entries it deleted unrun: not signed with the run's key, or copies
        self.events = LineWriter(self.folder / runfolder.PLACEMENT_EVENTS)
        self.terminal_records = LineWriter(self.folder / runfolder.TERMINAL_RECORDS)

    def _redis(self, call: Callable[[], T]) -> T:
        return retrying(call, self.config.redis_url, self.config.redis_loss_timeout_s)

    # -- bookkeeping --------------------------------------------------------------

    def _states(self) -> dict[str, NodeState]:
        """Each node as the policy sees it now: backlog, expected outstanding work (current estimates), busy time.

        The dispatcher runs on the controller beside Redis: its clock is the
        one start times are on.
        """
        now = int(time.time() * 1000)
        queued = {n: 0 for n in self.config.nodes}
        running = {n: 0 for n in self.config.nodes}
        outstanding = {n: 0.0 for n in self.config.nodes}
        busy: dict[str, float] = dict(self._busy_done_ms)
        for progress in self.tasks.values():
            if progress.state not in ("queued", "running") or progress.node not in queued:
                continue
            expected = self.policy.expected_ms(progress.planned.task)
            if progress.state == "queued":
                queued[progress.node] += 1
                outstanding[progress.node] += expected
            else:
                elapsed = max(0, now - (progress.started_ms or now))
                running[progress.node] += 1
                outstanding[progress.node] += max(0.0, expected - elapsed)
                busy[progress.node] += elapsed
        return {n: NodeState(n, queued[n], running[n], outstanding[n], busy[n]) for n in self.config.nodes}

    def _message(self, progress: TaskProgress, attempt: int) -> TaskMessage:
        """The queue entry of the task's next placement (nothing is changed yet)."""
        planned, spec = progress.planned, progress.planned.spec
        return TaskMessage(
            task_id=spec.task_id, trace_id=planned.trace_id, argv=list(spec.argv), ts_enqueue=int(time.time() * 1000),
            attempt=attempt, module=spec.module, profile=spec.profile, env=dict(spec.env) or None, cwd=spec.cwd,
            timeout_s=spec.timeout_s, inputs=list(spec.inputs) or None, outputs=list(spec.outputs) or None,
            size=spec.size, expected_ms=round(self.policy.expected_ms(planned.task), 3),
            params=dict(spec.params) or None, nonce=new_nonce(),
            container=spec.container.as_message() if spec.container is not None else None,
        )  # fmt: skip

    def _placed(self, progress: TaskProgress, node: str, message: TaskMessage, decided_on: dict[str, Any], reason: str) -> None:
        """Record a placement that happened: the task's progress and its placement event."""
        progress.attempt, progress.nonce = message.attempt, message.nonce
        progress.node, progress.state, progress.placed_ms, progress.started_ms = node, "queued", message.ts_enqueue, None
        self._pending.pop(message.task_id, None)
        self.events.write(
            {"ts_ms": message.ts_enqueue, "task_id": message.task_id, "node": node, "policy": self.policy.name,
             "attempt": message.attempt, "reason": reason, "expected_ms": message.expected_ms, **decided_on}
        )  # fmt: skip

    def _place(self, progress: TaskProgress, node: str, decided_on: dict[str, Any]) -> TaskMessage:
        message = self._message(progress, progress.attempt + 1)
        self._placed(progress, node, message, decided_on, "placed")
        return message

    def _follow(self, cursors: dict[str, str], block_ms: int) -> None:
        """Apply new starts and terminal records."""
        for entry_id, fields in self._redis(lambda: self.queue.read_stream(self.queue.keys.starts, cursors["starts"], None)):
            cursors["starts"] = entry_id
            try:
                start = StartRecord.decode(fields)
            except ProtocolError:  # not written by a worker of this run (they write them through the queue's Lua)
                self.rejected_records += 1
                self.log.warning("starts entry %s is no start record of this Tracekit: ignored", entry_id)
                continue
            progress = self.tasks.get(start.task_id)
            if progress and progress.state == "queued" and start.node == progress.node and self._is_placed_entry(progress, start):
                # The worker's ts_start is on its node's clock; the entry's time is the controller's.
                progress.state, progress.started_ms = "running", stream_time_ms(entry_id)
                if self._first_start_ms is None:
                    self._first_start_ms = progress.started_ms
        results = self._redis(lambda: self.queue.read_stream(self.queue.keys.results, cursors["results"], block_ms))
        for entry_id, fields in results:
            cursors["results"] = entry_id
            record = self.queue.verified_record(fields)
            if record is None:
                self.rejected_records += 1
                self.log.warning("results entry %s is not signed by a worker of this run: ignored", entry_id)
                continue
            progress = self.tasks.get(record.task_id)
            if progress is None or progress.state in ("done", "failed"):
                continue
            if record.state == "failed" and progress.planned.spec.note:  # what its kind knew beforehand
                record = dataclasses.replace(record, reason=f"{record.reason}; {progress.planned.spec.note}")
            progress.state, progress.record = record.state, record
            self._unfinished -= progress.state in ("done", "failed")
            self.terminal_records.write(record.as_dict())
            self._last_end_ms = stream_time_ms(entry_id)
            if record.node in self._busy_done_ms:
                self._busy_done_ms[record.node] += max(0, record.ts_end - record.ts_start)
            if record.state == "done":
                self.policy.task_completed(progress.planned.task, record.node, record.ts_end - record.ts_start)
            self.log.log(
                logging.INFO if record.state == "done" else logging.WARNING,
                "%s %s on %s (attempt %d)%s", record.task_id, record.state, record.node, record.attempt,
                f": {record.reason}" if record.reason else "",
            )  # fmt: skip

    def _is_placed_entry(self, progress: TaskProgress, start: StartRecord) -> bool:
        """The start is of the task's current entry (or one a worker handed back, signed anew); an entry
        added by anyone else gets a start record from Redis too, before its worker rejects it."""
        if start.entry_id == progress.entry_id:
            return True
        try:
            found = self._redis(lambda: self.queue.entry(start.node, start.entry_id))
        except redis.ResponseError:  # an entry id Redis cannot read: written by someone else
            return False
        return isinstance(found, Taken) and self._is_current(progress, start.entry_id, found.message)

    def _is_current(self, progress: TaskProgress, entry_id: str, message: TaskMessage) -> bool:
        """Whether a signed entry of the task is its current one. Another entry with the current nonce is a
        copy (someone copied it); one with a nonce of its own was signed anew by a worker handing the task
        back, and becomes the current entry."""
        if message.task_id != progress.planned.task.task_id:
            return False
        if entry_id == progress.entry_id:
            return True
        if message.nonce == progress.nonce:
            return False
        progress.entry_id, progress.nonce = entry_id, message.nonce
        return True

    def _reclaim(self) -> None:
        """Requeue tasks held by worker slots that stopped sending heartbeats.

        The move is recorded (progress, placement event) only once Redis made
        it: a task that finished meanwhile stays where it ran.
        """
        live = self._redis(self.queue.live_nodes) & set(self.config.nodes)
        for node in self.config.nodes:
            for consumer, entry_id in self._redis(lambda n=node: self.queue.pending_of_dead_consumers(n, self.config.lease_ms)):
                found = self._redis(lambda n=node, e=entry_id: self.queue.entry(n, e))
                if isinstance(found, Rejected):
                    self._drop_unsigned(node, found)
                    continue
                message = found.message if found else None
                progress = self.tasks.get(message.task_id) if message else None
                if progress is None or progress.state in ("done", "failed") or not live:
                    continue
                if not self._is_current(progress, entry_id, message):  # a copy of the task's entry: never run
                    self._drop_unsigned(node, Rejected(entry_id, "a copy of the task's entry", message.payload()[:500]))
                    continue
                states = {n: s for n, s in self._states().items() if n in live}
                target = self.policy.choose(progress.planned.task, [states[n] for n in sorted(states)]) or sorted(live)[0]
                decided_on = {"backlog": {n: s.backlog for n, s in states.items()}, "reclaimed_from": consumer}
                new_message = self._message(progress, progress.attempt + 1)
                new_entry = self._redis(lambda: self.queue.requeue(node, entry_id, target, new_message))
                if new_entry is None:
                    self.log.info("%s: slot %s went silent, but the task finished meanwhile", message.task_id, consumer)
                    continue
                self._placed(progress, target, new_message, decided_on, "reclaimed")
                progress.entry_id = new_entry
                self.log.warning("%s: slot %s went silent; requeued on %s (attempt %d)",
                                 message.task_id, consumer, target, progress.attempt)  # fmt: skip

    def _drop_unsigned(self, node: str, rejected: Rejected) -> None:
        """An entry of a node's queue that this run's dispatcher did not sign (or a copy of one it did):
        deleted, never run, counted."""
        self._redis(lambda: self.queue.reject(node, rejected))
        self.rejected_entries += 1
        self.log.warning("queue entry %s on %s deleted unrun: %s", rejected.entry_id, node, rejected.reason)

    def follow_liveness(self) -> None:
        """Nodes whose every slot went silent leave the placement, their waiting tasks moved to live nodes;
        a node whose worker returns gets back what was moved off it and still waits."""
        live = self._redis(self.queue.live_nodes) & set(self.config.nodes)
        for node in sorted(set(self.config.nodes) - live):
            if node in self._live:
                self.log.warning("node %s: no worker slot sends heartbeats; its waiting tasks move to live nodes", node)
            if live:
                self._move_waiting(node, live)
        for node in sorted(live - self._live):
            self.log.info("node %s: its worker is back", node)
            self._move_back(node)
        self._live = live

    def _move_waiting(self, node: str, live: set[str]) -> None:
        """Move every task waiting (not taken by a slot) in ``node``'s queue to a live node, through the policy."""
        states = {n: s for n, s in self._states().items() if n in live}  # once: kept up to date as tasks move
        for entry_id, found in self._redis(lambda: self.queue.undelivered(node)):
            if isinstance(found, Rejected):
                self._drop_unsigned(node, found)
                continue
            progress = self.tasks.get(found.message.task_id)
            if progress is None or progress.state != "queued":
                continue
            if not self._is_current(progress, entry_id, found.message):  # a copy of the entry: never run
                self._drop_unsigned(node, Rejected(entry_id, "a copy of the task's entry", found.message.payload()[:500]))
                continue
            target = self.policy.choose(progress.planned.task, [states[n] for n in sorted(states)]) or sorted(live)[0]
            message = self._message(progress, progress.attempt)  # it never started: the same attempt
            new_entry = self._redis(lambda e=entry_id, t=target, m=message: self.queue.move_waiting(node, e, t, m))
            if new_entry is None:  # a slot took it meanwhile: its worker is alive after all
                continue
            decided_on = {"backlog": {n: s.backlog for n, s in states.items()}, "moved_from": node,
                          "why": "no worker slot of the node sends heartbeats"}  # fmt: skip
            self._placed(progress, target, message, decided_on, "moved")
            progress.entry_id, progress.moved_from = new_entry, progress.moved_from or node
            expected = self.policy.expected_ms(progress.planned.task)
            states[target] = dataclasses.replace(states[target], queued=states[target].queued + 1,
                                                 expected_outstanding_ms=states[target].expected_outstanding_ms + expected)  # fmt: skip

    def _move_back(self, node: str) -> None:
        """Tasks moved off ``node`` when its worker went away, still waiting elsewhere, go back to it."""
        for progress in self.tasks.values():
            if progress.moved_from != node or progress.state != "queued" or progress.node == node:
                continue
            message = self._message(progress, progress.attempt)
            current, entry_id = progress.node, progress.entry_id
            new_entry = self._redis(lambda c=current, e=entry_id, m=message: self.queue.move_waiting(c, e, node, m))
            if new_entry is None:  # taken meanwhile where it waited
                continue
            self._placed(progress, node, message, {"moved_from": current, "why": f"the worker of {node} is back"},
                         "returned")  # fmt: skip
            progress.entry_id, progress.moved_from = new_entry, None

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.config.worker_wait_s
        while self.stop_requested is None:
            live = self._redis(self.queue.live_nodes)
            missing = [n for n in self.config.nodes if n not in live]
            if not missing:
                return
            if time.monotonic() > deadline:
                seen = ", ".join(sorted(live)) or "none"
                raise UsageError(
                    f"no worker answers for node(s) {', '.join(missing)} (workers seen: {seen}); start "
                    f"'tracekit worker --node-id {missing[0]} --run-id {self.config.run_id} ...' or fix --nodes"
                )
            time.sleep(0.05)  # a worker heartbeats once the run exists: it answers within a beat

    # -- the run ------------------------------------------------------------------

    def run(self) -> DispatchResult:
        """Dispatch until every task has a terminal record, the timeout, or SIGTERM/SIGINT.

        A stop signal ends the dispatch early, with its summary written
        (dispatch.json says which signal); the workers finish what they run.
        """
        with _stop_signals(self):
            return self._run()

    def _run(self) -> DispatchResult:
        config = self.config
        self.prepare()
        self._wait_for_workers()
        self.policy.plan([p.planned.task for p in self.tasks.values()], list(config.nodes))
        self.log.info("dispatching %d tasks to %s with %s", len(self.tasks), ",".join(config.nodes), self.policy.name)
        started = time.monotonic()
        deadline = started + config.timeout_s
        next_round = started
        last_reclaim = started
        cursors = {"starts": "0", "results": "0"}
        try:
            while self.stop_requested is None:
                now = time.monotonic()
                if not self._unfinished or now > deadline:
                    break
                if self._pending and now >= next_round and self._live:
                    self.place_round()
                    next_round = now + config.dribble_interval_s
                if now - last_reclaim >= 1.0:
                    self._redis(self.queue.require_live)
                    self._reclaim()
                    self.follow_liveness()
                    self.events.flush()
                    last_reclaim = now
                wait_ms = 200 if not self._pending else max(1, min(200, int((next_round - time.monotonic()) * 1000)))
                self._follow(cursors, wait_ms)
        finally:
            self.events.close()
            self.terminal_records.close()
        return self._finish(time.monotonic() - started)

    def prepare(self) -> None:
        """Take the tasks and make the run's queues (the run is live in Redis from here)."""
        config = self.config
        planned = [Planned.of(spec, config.run_id) for spec in self.specs]
        duplicates = duplicate_task_ids(p.task.task_id for p in planned)
        if duplicates:
            raise UsageError(f"task ids must be unique; given twice or more: {', '.join(duplicates[:5])}")
        if not planned:
            raise UsageError("no task to dispatch")
        self.tasks = {p.task.task_id: TaskProgress(p) for p in planned}
        # Kept up to date as tasks move, not recounted over all tasks at every
        # turn of the loop (which turns about once per terminal record).
        self._pending = dict(self.tasks)  # in plan order
        self._unfinished = len(self.tasks)
        for note in sorted({p.spec.note for p in planned if p.spec.note}):
            self.log.warning("%s; its tasks run anyway and fail visibly", note)
        self._redis(lambda: self.queue.create(list(config.nodes), run_meta(config.run_id, self.policy.name)))

    def place_round(self) -> int:
        """One round of placements by the policy on the live nodes; how many tasks it placed."""
        config = self.config
        pending = [p.planned.task for p in self._pending.values()]
        open_nodes = {n: s for n, s in self._states().items() if n in self._live}
        placed = [
            (placement.node, self._place(self.tasks[placement.task.task_id], placement.node, placement.decided_on))
            for placement in self.policy.next_placements(
                pending, open_nodes, config.batch_size, backlog_limit=config.backlog_limit
            )
        ]
        for start in range(0, len(placed), PLACE_BATCH):  # one round trip per batch, not per task
            batch = placed[start : start + PLACE_BATCH]
            entry_ids = self._redis(lambda b=batch: self.queue.place_many(b))
            for (_node, message), entry_id in zip(batch, entry_ids):
                self.tasks[message.task_id].entry_id = entry_id
        self.events.flush()
        return len(placed)

    def _counts(self) -> dict[str, int]:
        counts = {"tasks": len(self.tasks), "pending": 0, "queued": 0, "running": 0, "done": 0, "failed": 0}
        for progress in self.tasks.values():
            counts[progress.state] += 1
        return counts

    def _finish(self, elapsed_s: float) -> DispatchResult:
        counts = self._counts()
        per_node: dict[str, dict[str, Any]] = {
            n: {"done": 0, "failed": 0, "busy_ms": busy} for n, busy in self._busy_done_ms.items()
        }  # busy: sums of run times, each on one node's clock (durations, unlike the makespan's instants)
        for progress in self.tasks.values():
            if progress.record is not None and progress.record.node in per_node:
                per_node[progress.record.node][progress.record.state] += 1
        unfinished = sorted(t for t, p in self.tasks.items() if p.state not in ("done", "failed"))
        stopped = self.stop_requested is not None
        summary = {
            "run_id": self.config.run_id,
            "policy": self.policy.name,
            **counts,
            "unfinished": len(unfinished),
            "timed_out": 0 if stopped else len(unfinished),
            "timed_out_task_ids": [] if stopped else unfinished[:100],
            "stopped_by": self.stop_requested,
            "failed_task_ids": sorted(t for t, p in self.tasks.items() if p.state == "failed")[:100],
            # What the workload's kind knew of tasks before they ran (an input ffprobe could not read, ...).
            "notes": sorted({p.planned.spec.note for p in self.tasks.values() if p.planned.spec.note}),
            # From the first start to the last terminal record, both as Redis (the controller) saw them:
            # the workers' own timestamps are on their nodes' clocks.
            "makespan_ms": (self._last_end_ms - self._first_start_ms)
            if self._first_start_ms is not None and self._last_end_ms is not None else 0,
            "elapsed_s": round(elapsed_s, 3),
            "per_node": per_node,
            # Entries of the run's streams that its key did not sign: never run, never counted as results.
            "rejected_records": self.rejected_records,
            "rejected_entries": self.rejected_entries,
        }
        (self.folder / runfolder.DISPATCH_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        # On stderr too when a task did not end done: the line a failed run phase is described by.
        whole = summary["done"] == summary["tasks"]
        self.log.log(logging.INFO if whole else logging.WARNING, "dispatch finished: %s",
                     {k: summary[k] for k in ("tasks", "done", "failed", "timed_out")})  # fmt: skip
        return DispatchResult(summary)


@contextmanager
def _stop_signals(dispatcher: Dispatcher) -> Iterator[None]:
    """SIGTERM and SIGINT set dispatcher.stop_requested (the main thread's handlers only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: object) -> None:
        dispatcher.stop_requested = signal.Signals(signum).name
        dispatcher.log.warning("%s: stopping the dispatch; the summary is written, workers finish what they run",
                               dispatcher.stop_requested)  # fmt: skip

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def duplicate_task_ids(task_ids: Iterable[str]) -> list[str]:
    """The ids given more than once, sorted (counted once each: 100,000 tasks were a quadratic wait)."""
    return sorted(task_id for task_id, times in Counter(task_ids).items() if times > 1)


def dispatch(config: DispatchConfig, tasks: list[TaskSpec]) -> DispatchResult:
    """Place ``tasks`` (a workload kind's, tracekit.workloads) on the config's nodes and wait for all of them."""
    dispatcher = Dispatcher(config, tasks)
    try:
        return dispatcher.run()
    finally:
        close_file_logger(dispatcher.log)


def cleanup(run_id: str, redis_url: str, password_file: Path | None = None) -> int:
    """Delete every Redis key of the run."""
    queue = TaskQueue(connect(redis_url, password_file), RunKeys(run_id), safe_url(redis_url))  # no key needed
    return queue.cleanup()

