"""The reliable task queue on Redis Streams: place, take, finish, requeue.

input:  a Redis client and a run's keys
output: tasks on per-node streams, read by worker slots through one consumer
        group; terminal records on the results stream

A task entry stays in its node's stream, pending for the worker slot that
took it, until that slot finishes it. Finishing is one Lua script: the
entry is acknowledged and deleted and the terminal record written together,
and only if the entry was still pending, so a task ends in exactly one
terminal record even when a slot died and its task was requeued. A
restarted slot reads its own pending entries first (their delivery count
gives the attempt number).

Every task entry carries the dispatcher's signature (tracekit.sched.signing):
what a slot takes is verified before it becomes a ``Taken``; an entry that
fails is a ``Rejected``, which the worker deletes unrun (``reject``) and
reports. Terminal records carry the worker's signature, checked by the
dispatcher (``verified_record``).
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from dataclasses import dataclass, replace
from string import Template
from typing import Any

import redis
from redis.commands.core import Script

from tracekit.errors import ProtocolError, RedisUnavailable
from tracekit.sched.protocol import (
    RECORD_FIELD, SIGNATURE_FIELD, TASK_FIELD, WORKER_GROUP, RunKeys, StartRecord, TaskMessage, TerminalRecord,
    start_record_lua,
)  # fmt: skip
from tracekit.sched.signing import TaskSigner

_json_string = functools.lru_cache(maxsize=1024)(json.dumps)  # node and consumer names, per task
PLACE_BATCH = 500  # tasks per place_many call: one round trip, and Redis busy for about a millisecond

def new_nonce() -> str:
    """A placement's nonce (TaskMessage.nonce)."""
    return secrets.token_hex(8)


__all__ = ["PLACE_BATCH", "Rejected", "SlotConnection", "Taken", "TaskMessage", "TaskQueue", "TerminalRecord"]


@dataclass(frozen=True)
class Taken:
    """A task a worker slot took: its entry, message and attempt number."""

    entry_id: str
    message: TaskMessage
    attempt: int


@dataclass(frozen=True)
class Rejected:
    """A queue entry a slot took that it must not run: not signed for this node under the run's key, or unreadable."""

    entry_id: str
    reason: str
    payload: str  # what the entry held (its first 500 characters), for the report

    def as_dict(self, node: str, ts_ms: int) -> dict[str, Any]:
        return {"ts_ms": ts_ms, "node": node, "entry_id": self.entry_id, "reason": self.reason, "payload": self.payload}


def _lua(script: str) -> str:
    """A script with the protocol's names in place of $task_field, $record_field, $sig_field and $start_record."""
    start_record = start_record_lua(task_id="cjson.encode(task.task_id)", node="ARGV[6]", consumer="ARGV[7]",
                                    attempt="string.format('%d', tonumber(task.attempt) or 1)", ts_start="ARGV[8]",
                                    entry_id="cjson.encode(entry[1])")  # fmt: skip
    return Template(script).substitute(task_field=TASK_FIELD, record_field=RECORD_FIELD, sig_field=SIGNATURE_FIELD,
                                       start_record=start_record)  # fmt: skip


# KEYS: queue, results. ARGV: group, entry id, record, record signature. Returns 1 if finished here.
_FINISH = _lua("""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', '$record_field', ARGV[3], '$sig_field', ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
""")
# A busy worker slot's one round trip per task: finish the task it ran (as
# _FINISH, unless ARGV[2] is empty), take the next new entry if there is one
# (never blocking: Redis does not block inside a script) and write its start
# record (laid out as StartRecord.encode writes it; task_id and attempt are
# TaskMessage fields) when its payload reads as a task: the slot verifies its
# signature after this call (Redis holds no key), and the dispatcher counts
# only starts of entries it placed. A slot holds one task at a time, so an
# entry still pending for it after the finish was taken by a call whose reply
# was lost (the client retried): it is returned again, with its delivery
# count, instead of a new one, which would strand it. KEYS: queue, results,
# starts. ARGV: group, entry id, record, record signature, consumer, node and
# consumer as JSON strings, ts_start. Returns {finished} when the queue holds
# nothing new, else {finished, entry id, payload, signature, deliveries}.
_FINISH_AND_TAKE = _lua("""
local finished = 0
if ARGV[2] ~= '' and redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', '$record_field', ARGV[3], '$sig_field', ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[2])
  finished = 1
end
local function task_fields(fields)
  local payload, sig = '', ''
  for i = 1, #fields, 2 do
    if fields[i] == '$task_field' then payload = fields[i + 1] end
    if fields[i] == '$sig_field' then sig = fields[i + 1] end
  end
  return payload, sig
end
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[5])
if #mine > 0 then
  local found = redis.call('XRANGE', KEYS[1], mine[1][1], mine[1][1])
  if #found > 0 then
    local payload, sig = task_fields(found[1][2])
    return {finished, mine[1][1], payload, sig, mine[1][4]}
  end
  redis.call('XACK', KEYS[1], ARGV[1], mine[1][1])  -- its entry is gone: nothing to run
end
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[5], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if not reply then
  return {finished}
end
local entry = reply[1][2][1]
local payload, sig = task_fields(entry[2])
local readable, task = pcall(cjson.decode, payload)
if readable and type(task) == 'table' and type(task.task_id) == 'string' then
  redis.call('XADD', KEYS[3], '*', '$record_field', $start_record)
end
return {finished, entry[1], payload, sig, 1}
""")
# KEYS: old queue, new queue. ARGV: group, entry id, new payload, its signature. Moves a task.
_REQUEUE = _lua("""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  return redis.call('XADD', KEYS[2], '*', '$task_field', ARGV[3], '$sig_field', ARGV[4])
end
return false
""")
# Moves an entry no slot has taken yet (its id is past the group's last
# delivered id) to another queue; false when a slot took it (or it is gone).
# KEYS: old queue, new queue. ARGV: group, entry id, new payload, its signature.
_MOVE_WAITING = _lua("""
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$$')
  return tonumber(ms), tonumber(seq)
end
local delivered
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  if name == ARGV[1] then delivered = last end
end
if not delivered then return false end
local ms, seq = id_parts(ARGV[2])
local last_ms, last_seq = id_parts(delivered)
if ms < last_ms or (ms == last_ms and seq <= last_seq) then return false end
if redis.call('XDEL', KEYS[1], ARGV[2]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', '$task_field', ARGV[3], '$sig_field', ARGV[4])
""")
# KEYS: queue. ARGV: group, entry id. Deletes an entry a slot took and must not run.
_REJECT = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
"""


class SlotConnection:
    """A worker slot's own Redis connection, for its one script call per task.

    Through the client that call cost ~0.1 ms of CPU more than on a bare
    connection (pool checkout and release, command wrappers, metrics), about
    a tenth of a no-op task. Errors are the client's: ConnectionError and
    TimeoutError (the connection is dropped and made again by the next
    call) and ResponseError. One thread per SlotConnection.
    """

    def __init__(self, client: redis.Redis):
        pool = client.connection_pool
        self._connection = pool.connection_class(**pool.connection_kwargs)

    def run_script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._call("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # Redis restarted or flushed its scripts: EVAL caches it again
            return self._call("EVAL", script.script, len(keys), *keys, *args)

    def _call(self, *args: Any) -> Any:
        self._connection.send_command(*args)
        return self._connection.read_response()

    def close(self) -> None:
        self._connection.disconnect()


class TaskQueue:
    """A run's queues, starts and results. ``signer`` (the run's task key) signs and verifies task entries
    and terminal records; only ``cleanup``, ``live_nodes`` and reading streams work without one."""

    def __init__(self, client: redis.Redis, keys: RunKeys, url: str = "redis", signer: TaskSigner | None = None):
        self.client = client
        self.keys = keys
        self.url = url
        self._signer = signer
        self._finish = client.register_script(_FINISH)
        self._finish_and_take = client.register_script(_FINISH_AND_TAKE)
        self._requeue = client.register_script(_REQUEUE)
        self._reject = client.register_script(_REJECT)
        self._move_waiting = client.register_script(_MOVE_WAITING)

    @property
    def signer(self) -> TaskSigner:
        if self._signer is None:
            raise TypeError("this TaskQueue was made without the run's task key (signer)")
        return self._signer

    def _checked(self, node: str, entry_id: str, payload: str | None, signature: str | None,
                 deliveries: int = 1) -> Taken | Rejected:  # fmt: skip
        """An entry taken from ``node``'s queue: a Taken only if the run's dispatcher signed it for this node."""
        payload = payload or ""
        if not signature:
            return Rejected(entry_id, "not signed", payload[:500])
        if not self.signer.task_is_signed(node, payload, signature):
            return Rejected(entry_id, f"signature does not verify for node {node} under this run's key", payload[:500])
        try:
            message = TaskMessage.from_payload(payload)
        except ProtocolError as exc:  # signed, yet unreadable: another Tracekit version
            return Rejected(entry_id, str(exc), payload[:500])
        return Taken(entry_id, message, message.attempt + deliveries - 1)

    def verified_record(self, fields: dict[str, str]) -> TerminalRecord | None:
        """A results entry as a TerminalRecord, or None when no worker of this run signed it."""
        payload = fields.get(RECORD_FIELD)
        if payload is None or not self.signer.record_is_signed(payload, fields.get(SIGNATURE_FIELD)):
            return None
        return TerminalRecord.decode(fields)

    # -- set-up and state -------------------------------------------------------

    def create(self, nodes: list[str], meta: dict[str, str]) -> None:
        """Make the node queues and mark the run live (idempotent)."""
        self.client.hset(self.keys.meta, mapping=meta)
        for node in nodes:
            self.ensure_group(node)

    def ensure_group(self, node: str) -> None:
        try:
            self.client.xgroup_create(self.keys.queue(node), WORKER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def is_live(self) -> bool:
        return bool(self.client.exists(self.keys.meta))

    def require_live(self) -> None:
        if not self.is_live():
            raise RedisUnavailable(
                f"Redis at {self.url} no longer holds run {self.keys.run_id} "
                "(restarted without persistence, or cleaned up); the run's queue state is lost"
            )

    def cleanup(self) -> int:
        """Delete every key of the run; returns how many."""
        deleted = 0
        for key in self.client.scan_iter(match=self.keys.pattern, count=500):
            deleted += self.client.unlink(key)
        return deleted

    # -- dispatcher side ----------------------------------------------------------

    def place(self, node: str, message: TaskMessage) -> str:
        return self.client.xadd(self.keys.queue(node), message.encode(self.signer, node))

    def place_many(self, placements: list[tuple[str, TaskMessage]]) -> list[str]:
        """Place (node, message) pairs in one round trip, as one MULTI/EXEC.

        A connection lost mid-batch then leaves the whole batch placed or none
        of it, never a part: the retry is as safe as a single ``place``'s.
        Keep batches to a few hundred (PLACE_BATCH): Redis runs nothing else
        while it runs one.
        """
        pipe = self.client.pipeline(transaction=True)
        for node, message in placements:
            pipe.xadd(self.keys.queue(node), message.encode(self.signer, node))
        return pipe.execute()

    def read_stream(self, key: str, last_id: str, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
        reply = self.client.xread({key: last_id}, count=1000, block=block_ms)
        return reply[0][1] if reply else []

    def pending_of_dead_consumers(self, node: str, lease_ms: int) -> list[tuple[str, str]]:
        """(consumer, entry id) of tasks held by slots without a heartbeat for ``lease_ms``."""
        queue = self.keys.queue(node)
        found = []
        for entry in self.client.xpending_range(queue, WORKER_GROUP, "-", "+", 1000):
            consumer = entry["consumer"]
            if entry["time_since_delivered"] < lease_ms:
                continue
            if not self.client.exists(self.keys.heartbeat(node, consumer)):
                found.append((consumer, entry["message_id"]))
        return found

    def requeue(self, from_node: str, entry_id: str, to_node: str, message: TaskMessage) -> str | None:
        """Move a pending task to ``to_node``'s queue, signed for that node (None if it was finished meanwhile)."""
        fields = message.encode(self.signer, to_node)
        return self._requeue(
            keys=[self.keys.queue(from_node), self.keys.queue(to_node)],
            args=[WORKER_GROUP, entry_id, fields[TASK_FIELD], fields[SIGNATURE_FIELD]],
        )

    def entry(self, node: str, entry_id: str) -> Taken | Rejected | None:
        """The entry ``entry_id`` of ``node``'s queue as a slot would see it (None: not there)."""
        found = self.client.xrange(self.keys.queue(node), entry_id, entry_id)
        if not found:
            return None
        fields = found[0][1]
        return self._checked(node, entry_id, fields.get(TASK_FIELD), fields.get(SIGNATURE_FIELD))

    def undelivered(self, node: str) -> list[tuple[str, Taken | Rejected]]:
        """The entries of ``node``'s queue that no slot has taken yet, as a slot would see them."""
        queue = self.keys.queue(node)
        groups = [g for g in self.client.xinfo_groups(queue) if g["name"] == WORKER_GROUP]
        if not groups:
            return []
        last = groups[0]["last-delivered-id"]
        return [
            (entry_id, self._checked(node, entry_id, fields.get(TASK_FIELD), fields.get(SIGNATURE_FIELD)))
            for entry_id, fields in self.client.xrange(queue, min=f"({last}", max="+")
        ]

    def move_waiting(self, from_node: str, entry_id: str, to_node: str, message: TaskMessage) -> str | None:
        """Move an entry no slot has taken to ``to_node``'s queue, signed for it (None: a slot took it, or it is gone)."""
        fields = message.encode(self.signer, to_node)
        return self._move_waiting(
            keys=[self.keys.queue(from_node), self.keys.queue(to_node)],
            args=[WORKER_GROUP, entry_id, fields[TASK_FIELD], fields[SIGNATURE_FIELD]],
        )

    def live_nodes(self) -> set[str]:
        """Nodes with at least one worker slot sending heartbeats."""
        nodes = set()
        for key in self.client.scan_iter(match=self.keys.heartbeats, count=500):
            nodes.add(self.keys.heartbeat_node(key))
        return nodes

    # -- worker side ----------------------------------------------------------------

    def take(self, node: str, consumer: str, block_ms: int, own_pending_first: bool = True) -> Taken | Rejected | None:
        """The slot's own unfinished task first (after a restart), else a new one.

        A slot that finishes what it takes has nothing pending; it checks its
        own pending entries only when it starts (``own_pending_first``).
        """
        queue = self.keys.queue(node)
        entries = []
        if own_pending_first:
            reply = self.client.xreadgroup(WORKER_GROUP, consumer, {queue: "0"}, count=1)
            entries = reply[0][1] if reply else []
        redelivered = bool(entries)
        if not entries:
            reply = self.client.xreadgroup(WORKER_GROUP, consumer, {queue: ">"}, count=1, block=block_ms)
            entries = reply[0][1] if reply else []
        if not entries:
            return None
        entry_id, fields = entries[0]
        deliveries = 1
        if redelivered:
            [pending] = self.client.xpending_range(queue, WORKER_GROUP, entry_id, entry_id, 1)
            deliveries = pending["times_delivered"]
        return self._checked(node, entry_id, fields.get(TASK_FIELD), fields.get(SIGNATURE_FIELD), deliveries)

    def reject(self, node: str, rejected: Rejected) -> None:
        """Delete an entry the slot must not run: it is never run, nor taken again."""
        self._reject(keys=[self.keys.queue(node)], args=[WORKER_GROUP, rejected.entry_id])

    def started(self, node: str, consumer: str, taken: Taken, ts_start: int) -> None:
        record = StartRecord(taken.message.task_id, node, consumer, taken.attempt, ts_start, taken.entry_id)
        self.client.xadd(self.keys.starts, record.entry())

    def finish(self, node: str, taken: Taken, record: TerminalRecord) -> bool:
        """Write the terminal record (signed) and release the entry, atomically."""
        entry = record.entry(self.signer)
        return bool(
            self._finish(keys=[self.keys.queue(node), self.keys.results],
                         args=[WORKER_GROUP, taken.entry_id, entry[RECORD_FIELD], entry[SIGNATURE_FIELD]])  # fmt: skip
        )

    def finish_and_take(
        self, node: str, consumer: str, taken: Taken | None, record: TerminalRecord | None, ts_start: int,
        connection: SlotConnection | None = None,
    ) -> tuple[bool, Taken | Rejected | None]:  # fmt: skip
        """``finish`` the slot's task (if any), then take a new one and record its start: one round trip.

        Returns (finished, the entry now taken: a Taken, started, or a
        Rejected, not to be run; None when the queue holds no new entry: then
        ``take`` waits for one). With ``connection``, the call goes through the
        slot's own connection.
        """
        entry = record.entry(self.signer) if record else {RECORD_FIELD: "", SIGNATURE_FIELD: ""}
        keys = [self.keys.queue(node), self.keys.results, self.keys.starts]
        args = [WORKER_GROUP, taken.entry_id if taken else "", entry[RECORD_FIELD], entry[SIGNATURE_FIELD], consumer,
                _json_string(node), _json_string(consumer), ts_start]  # fmt: skip
        if connection is not None:
            reply = connection.run_script(self._finish_and_take, keys, args)
        else:
            reply = self._finish_and_take(keys=keys, args=args)
        if len(reply) == 1:
            return bool(reply[0]), None
        finished, entry_id, payload, signature, deliveries = reply
        return bool(finished), self._checked(node, entry_id, payload, signature, int(deliveries))

    def hand_back(self, node: str, taken: Taken) -> None:
        """Return an interrupted task to its node's queue (the next attempt runs it), signed anew."""
        message = replace(taken.message, attempt=taken.attempt + 1, nonce=new_nonce())
        self.requeue(node, taken.entry_id, node, message)

    def heartbeat(self, node: str, consumers: list[str], ttl_ms: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        now = str(int(time.time() * 1000))
        for consumer in consumers:
            pipe.set(self.keys.heartbeat(node, consumer), now, px=ttl_ms)
        pipe.execute()
