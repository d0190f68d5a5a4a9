"""``tracekit dispatch``: place planned tasks on worker nodes and wait for all of them.

input:  planned tasks (tracekit.sched.plan), a placement policy, the node
        queues on Redis, worker starts and terminal records
output: placement_events.jsonl, terminal_records.jsonl (each task's
        terminal record as received: the scheduler's account of what ran),
        dispatch.json (summary) and dispatcher.log in the dispatcher's run
        folder; an exit status that says whether every task was done

Each round the policy places up to ``batch_size`` tasks on nodes below the
backlog limit (queued + running, as counted from the workers' start and
terminal records), then the dispatcher waits ``dribble_interval`` seconds
while it follows completions. Tasks of worker slots whose heartbeat stopped
are requeued (next attempt) through the policy. Nothing is dropped: every
task ends done, failed, or reported as timed out.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tracekit import runfolder
from tracekit.adapters.ffmpeg_argv import TranscodeSettings
from tracekit.errors import UsageError
from tracekit.filelog import file_logger
from tracekit.jsonl import LineWriter
from tracekit.sched.connection import connect, retrying, safe_url
from tracekit.sched.keys import RunKeys
from tracekit.sched.plan import Planned, plan_tasks
from tracekit.sched.policies import NodeState, make_policy
from tracekit.sched.queue import PLACE_BATCH, TaskMessage, TaskQueue

DISPATCHER_LOG = "dispatcher.log"
T = TypeVar("T")


@dataclass(frozen=True)
class DispatchConfig:
    run_id: str
    redis_url: str
    nodes: tuple[str, ...]
    inputs: Path
    password_file: Path | None = None
    policy: str = "duration-online"
    settings: TranscodeSettings = field(default_factory=TranscodeSettings)
    mix: dict[str, float] | None = None
    total: int | None = None
    seed: int = 0
    batch_size: int = 0  # per round; 0 = no limit
    dribble_interval_s: float = 0.0
    backlog_limit: int = 0  # per node, queued + running; 0 = no limit
    timeout_s: float = 3600.0
    logs_dir: Path = field(default_factory=runfolder.logs_dir)
    worker_wait_s: float = 30.0  # how long to wait for every node's worker
    lease_ms: int = 5000  # a slot silent this long loses its task
    redis_loss_timeout_s: float = 10.0
    node_id: str = field(default_factory=runfolder.default_node_id)  # the controller's: marked on ffprobe

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


@dataclass
class TaskProgress:
    planned: Planned
    node: str | None = None
    attempt: int = 0
    state: str = "pending"  # pending, queued, running, done, failed
    placed_ms: int | None = None
    started_ms: int | None = None
    record: dict[str, Any] | None = None


@dataclass(frozen=True)
class DispatchResult:
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.summary["done"] == self.summary["tasks"]


class Dispatcher:
    def __init__(self, config: DispatchConfig):
        self.config = config
        self.folder = runfolder.ensure_writable_dir(Path(config.logs_dir) / config.run_id, "run folder")
        self.log = file_logger(self.folder / DISPATCHER_LOG)
        self.client = connect(config.redis_url, config.password_file)
        self.queue = TaskQueue(self.client, RunKeys(config.run_id), safe_url(config.redis_url))
        self.policy = make_policy(config.policy)
        self.tasks: dict[str, TaskProgress] = {}
        self._pending: dict[str, TaskProgress] = {}  # tasks not placed yet
        self._unfinished = 0  # tasks neither done nor failed
        self.events = LineWriter(self.folder / runfolder.PLACEMENT_EVENTS)
        self.terminal_records = LineWriter(self.folder / runfolder.TERMINAL_RECORDS)

    def _redis(self, call: Callable[[], T]) -> T:
        return retrying(call, self.config.redis_url, self.config.redis_loss_timeout_s)

    # -- bookkeeping --------------------------------------------------------------

    def _states(self) -> dict[str, NodeState]:
        now = int(time.time() * 1000)
        queued = {n: 0 for n in self.config.nodes}
        running = {n: 0 for n in self.config.nodes}
        outstanding = {n: 0.0 for n in self.config.nodes}
        for progress in self.tasks.values():
            if progress.state not in ("queued", "running") or progress.node not in queued:
                continue
            expected = self.policy.expected_ms(progress.planned.task)
            if progress.state == "queued":
                queued[progress.node] += 1
                outstanding[progress.node] += expected
            else:
                running[progress.node] += 1
                outstanding[progress.node] += max(0.0, expected - (now - (progress.started_ms or now)))
        return {n: NodeState(n, queued[n], running[n], outstanding[n]) for n in self.config.nodes}

    def _place(self, progress: TaskProgress, node: str, decided_on: dict[str, Any], reason: str) -> TaskMessage:
        planned = progress.planned
        progress.attempt += 1
        ts_enqueue = int(time.time() * 1000)
        message = TaskMessage(
            task_id=planned.task.task_id, trace_id=planned.trace_id, input=str(planned.input.resolve()),
            output=planned.output_name, ts_enqueue=ts_enqueue, attempt=progress.attempt,
            profile=planned.task.profile, scale=planned.settings.scale, preset=planned.settings.preset,
            crf=planned.settings.crf, threads=planned.settings.threads, media_s=planned.task.media_s,
            expected_ms=round(self.policy.expected_ms(planned.task), 3),
        )  # fmt: skip
        progress.node, progress.state, progress.placed_ms, progress.started_ms = node, "queued", ts_enqueue, None
        self._pending.pop(planned.task.task_id, None)
        self.events.write(
            {"ts_ms": ts_enqueue, "task_id": planned.task.task_id, "node": node, "policy": self.policy.name,
             "attempt": progress.attempt, "reason": reason, "expected_ms": message.expected_ms, **decided_on}
        )  # fmt: skip
        return message

    def _follow(self, cursors: dict[str, str], block_ms: int) -> None:
        """Apply new starts and terminal records."""
        for entry_id, fields in self._redis(lambda: self.queue.read_stream(self.queue.keys.starts, cursors["starts"], None)):
            cursors["starts"] = entry_id
            start = json.loads(fields["record"])
            progress = self.tasks.get(start["task_id"])
            if progress and progress.state == "queued" and start["node"] == progress.node:
                progress.state, progress.started_ms = "running", start["ts_start"]
        results = self._redis(lambda: self.queue.read_stream(self.queue.keys.results, cursors["results"], block_ms))
        for entry_id, fields in results:
            cursors["results"] = entry_id
            record = json.loads(fields["record"])
            progress = self.tasks.get(record["task_id"])
            if progress is None or progress.state in ("done", "failed"):
                continue
            progress.state, progress.record = record["state"], record
            self._unfinished -= progress.state in ("done", "failed")
            self.terminal_records.write(record)
            if record["state"] == "done":
                self.policy.task_completed(progress.planned.task, record["node"], record["ts_end"] - record["ts_start"])
            self.log.log(
                logging.INFO if record["state"] == "done" else logging.WARNING,
                "%s %s on %s (attempt %d)%s", record["task_id"], record["state"], record["node"], record["attempt"],
                f": {record['reason']}" if record.get("reason") else "",
            )  # fmt: skip

    def _reclaim(self) -> None:
        """Requeue tasks held by worker slots that stopped sending heartbeats."""
        live = self._redis(self.queue.live_nodes) & set(self.config.nodes)
        for node in self.config.nodes:
            for consumer, entry_id in self._redis(lambda n=node: self.queue.pending_of_dead_consumers(n, self.config.lease_ms)):
                message = self._redis(lambda n=node, e=entry_id: self.queue.entry(n, e))
                progress = self.tasks.get(message.task_id) if message else None
                if progress is None or progress.state in ("done", "failed") or not live:
                    continue
                states = {n: s for n, s in self._states().items() if n in live}
                target = self.policy.choose(progress.planned.task, [states[n] for n in sorted(states)]) or sorted(live)[0]
                decided_on = {"backlog": {n: s.backlog for n, s in states.items()}, "reclaimed_from": consumer}
                new_message = self._place(progress, target, decided_on, "reclaimed")
                if self._redis(lambda: self.queue.requeue(node, entry_id, target, new_message)) is None:
                    progress.attempt -= 1  # finished meanwhile
                else:
                    self.log.warning("%s: slot %s went silent; requeued on %s (attempt %d)",
                                     message.task_id, consumer, target, progress.attempt)  # fmt: skip

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.config.worker_wait_s
        while True:
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
            time.sleep(0.2)

    # -- the run ------------------------------------------------------------------

    def run(self, progress_callback: Callable[[dict[str, int]], None] | None = None) -> DispatchResult:
        config = self.config
        planned = plan_tasks(config.inputs, config.settings, config.mix, config.total, config.seed, config.node_id)
        self.tasks = {p.task.task_id: TaskProgress(p) for p in planned}
        # Kept up to date as tasks move, not recounted over all tasks at every
        # turn of the loop (which turns about once per terminal record).
        self._pending = dict(self.tasks)  # in plan order
        self._unfinished = len(self.tasks)
        for bad_input in sorted({f"{p.input}: {p.probe_error}" for p in planned if p.probe_error}):
            self.log.warning("cannot probe %s; its tasks run anyway and will fail visibly", bad_input)
        self._redis(lambda: self.queue.create(list(config.nodes), {"run_id": config.run_id, "policy": self.policy.name}))
        self._wait_for_workers()
        self.policy.plan([p.task for p in planned], list(config.nodes))
        self.log.info("dispatching %d tasks to %s with %s", len(planned), ",".join(config.nodes), self.policy.name)
        started = time.monotonic()
        deadline = started + config.timeout_s
        next_round = started
        last_reclaim = started
        cursors = {"starts": "0", "results": "0"}
        try:
            while True:
                now = time.monotonic()
                if not self._unfinished or now > deadline:
                    break
                if self._pending and now >= next_round:
                    pending = [p.planned.task for p in self._pending.values()]
                    placed = [
                        (placement.node, self._place(self.tasks[placement.task.task_id], placement.node,
                                                     placement.decided_on, "placed"))
                        for placement in self.policy.next_placements(
                            pending, self._states(), config.batch_size, backlog_limit=config.backlog_limit
                        )
                    ]  # fmt: skip
                    for start in range(0, len(placed), PLACE_BATCH):  # one round trip per batch, not per task
                        self._redis(lambda b=placed[start : start + PLACE_BATCH]: self.queue.place_many(b))
                    self.events.flush()
                    next_round = now + config.dribble_interval_s
                if now - last_reclaim >= 1.0:
                    self._redis(self.queue.require_live)
                    self._reclaim()
                    self.events.flush()
                    last_reclaim = now
                wait_ms = 200 if not self._pending else max(1, min(200, int((next_round - time.monotonic()) * 1000)))
                self._follow(cursors, wait_ms)
                if progress_callback is not None:
                    progress_callback(self._counts())
        finally:
            self.events.close()
            self.terminal_records.close()
        return self._finish(time.monotonic() - started)

    def _counts(self) -> dict[str, int]:
        counts = {"tasks": len(self.tasks), "pending": 0, "queued": 0, "running": 0, "done": 0, "failed": 0}
        for progress in self.tasks.values():
            counts[progress.state] += 1
        return counts

    def _finish(self, elapsed_s: float) -> DispatchResult:
        counts = self._counts()
        per_node: dict[str, dict[str, Any]] = {n: {"done": 0, "failed": 0, "busy_ms": 0} for n in self.config.nodes}
        first_start, last_end = None, None
        for progress in self.tasks.values():
            record = progress.record
            if record is None:
                continue
            node = per_node.setdefault(record["node"], {"done": 0, "failed": 0, "busy_ms": 0})
            node[record["state"]] += 1
            node["busy_ms"] += record["ts_end"] - record["ts_start"]
            first_start = min(first_start or record["ts_start"], record["ts_start"])
            last_end = max(last_end or record["ts_end"], record["ts_end"])
        unfinished = sorted(t for t, p in self.tasks.items() if p.state not in ("done", "failed"))
        summary = {
            "run_id": self.config.run_id,
            "policy": self.policy.name,
            **counts,
            "timed_out": len(unfinished),
            "timed_out_task_ids": unfinished[:100],
            "failed_task_ids": sorted(t for t, p in self.tasks.items() if p.state == "failed")[:100],
            "makespan_ms": (last_end - first_start) if first_start is not None else 0,
            "elapsed_s": round(elapsed_s, 3),
            "per_node": per_node,
        }
        (self.folder / runfolder.DISPATCH_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        self.log.info("dispatch finished: %s", {k: summary[k] for k in ("tasks", "done", "failed", "timed_out")})
        return DispatchResult(summary)


def dispatch(config: DispatchConfig, progress_callback=None) -> DispatchResult:
    return Dispatcher(config).run(progress_callback)


def cleanup(run_id: str, redis_url: str, password_file: Path | None = None) -> int:
    """Delete every Redis key of the run."""
    queue = TaskQueue(connect(redis_url, password_file), RunKeys(run_id), safe_url(redis_url))
    return queue.cleanup()

