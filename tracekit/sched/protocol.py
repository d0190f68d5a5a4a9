"""The task queue's Redis protocol: every key, stream field and record of a run, built and parsed here.

input:  a run id; records (TaskMessage, StartRecord, TerminalRecord)
output: Redis key names, stream entries and their JSON payloads, and back

Keys, all under ``tk:<RUN_ID>:`` (cleanup is one prefix scan):
``meta`` (hash: the run is live), ``queue:<node>`` (stream of TaskMessage
entries, fields ``task`` and ``sig``, consumer group ``workers``), ``starts``
and ``results`` (streams of StartRecord and TerminalRecord entries, field
``record``, and ``sig`` on terminal records), ``heartbeat:<node>:<consumer>``
(expiring key of a live worker slot). ``sig`` is the HMAC of the entry under
the run's task key (tracekit.sched.signing), which never crosses Redis. Every payload is a small JSON object whose first member is the
version ``v``; a reader refuses another
version (ProtocolError): one Tracekit version runs on every node. The Lua
scripts of tracekit.sched.queue build their names from the constants here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import redis

from tracekit.errors import ProtocolError
from tracekit.runfolder import validate_run_id
from tracekit.sched.signing import TaskSigner

ENVELOPE_VERSION = 2  # the "v" of task entries, start and terminal records and the run's meta hash
WORKER_GROUP = "workers"  # the consumer group on every node queue
TASK_FIELD = "task"  # the one field of a node queue entry: a TaskMessage
RECORD_FIELD = "record"  # the field of a starts or results entry: a StartRecord or TerminalRecord
SIGNATURE_FIELD = "sig"  # a task entry's (and a terminal record's) signature under the run's task key
RESULTS_PAGE = 1000  # results entries per XRANGE in count_new_results

VERSION_MEMBER = f'"v":{ENVELOPE_VERSION}'  # how a record's JSON begins (the Lua writes it as text)
_COMPACT = (",", ":")


@dataclass(frozen=True)
class TaskMessage:
    """What a worker needs to run one task (the payload of a queue entry): nothing kind-specific.

    Paths may hold worker placeholders (tracekit.workloads.base.fill_in): the
    worker fills in its own node's folders before it runs the task.
    """

    task_id: str
    trace_id: str
    argv: list[str]
    ts_enqueue: int  # epoch ms, dispatcher (controller) clock
    attempt: int = 1  # of the placement; a restarted slot adds its redeliveries
    module: str = "task"  # its events file (events.<module>.jsonl) and module in the trace
    profile: str = "default"
    env: dict[str, str] | None = None  # added to the worker's environment
    cwd: str | None = None
    timeout_s: float | None = None  # past it, its process group is killed: failed, timed out
    inputs: list[str] | None = None  # files it reads (missing: it fails without running)
    outputs: list[str] | None = None  # files it writes
    size: float = 1.0  # work, in its kind's unit (the policies' speed model learns ms per unit)
    expected_ms: float = 0.0
    params: dict[str, Any] | None = None  # what it was made from, recorded in its event
    container: dict[str, Any] | None = None  # runs in a container (tracekit.container.ContainerSpec.as_message)
    # New for each signed placement (by the dispatcher, or a worker handing a task back): a copy of an
    # entry (someone with the password can copy one) is known by its nonce and is not run twice.
    nonce: str = ""

    def payload(self) -> str:
        # The instance's own field dict, not dataclasses.asdict: asdict deep-copies
        # every value, which cost more than the JSON encoding on the placement path.
        return json.dumps({"v": ENVELOPE_VERSION, **self.__dict__}, separators=_COMPACT)

    def encode(self, signer: TaskSigner, node: str) -> dict[str, str]:
        """The fields of its entry in ``node``'s queue: the payload and its signature for that node."""
        payload = self.payload()
        return {TASK_FIELD: payload, SIGNATURE_FIELD: signer.sign_task(node, payload)}

    @classmethod
    def from_payload(cls, payload: str) -> TaskMessage:
        return _construct(cls, _load(payload, "a task entry"), "a task entry")

    @classmethod
    def decode(cls, fields: dict[str, str]) -> TaskMessage:
        return cls.from_payload(_field(fields, TASK_FIELD, "a task entry"))


@dataclass(frozen=True)
class StartRecord:
    """A worker slot began an attempt of a task (an entry of the starts stream)."""

    task_id: str
    node: str
    consumer: str
    attempt: int
    ts_start: int  # epoch ms, the worker node's clock
    entry_id: str  # the queue entry taken: the dispatcher counts starts of the entries it placed only

    def encode(self) -> str:
        """Its JSON payload; the Lua of ``start_record_lua`` writes the same."""
        return json.dumps({"v": ENVELOPE_VERSION, **self.__dict__}, separators=_COMPACT)

    def entry(self) -> dict[str, str]:
        return {RECORD_FIELD: self.encode()}

    @classmethod
    def decode(cls, fields: dict[str, str]) -> StartRecord:
        data = _load(_field(fields, RECORD_FIELD, "a start record"), "a start record")
        return _construct(cls, data, "a start record")


@dataclass(frozen=True)
class TerminalRecord:
    """How a task ended, done or failed (an entry of the results stream: one per task)."""

    task_id: str
    node: str
    consumer: str
    attempt: int
    state: str  # "done" or "failed"
    exit_status: int | None
    reason: str | None
    ts_start: int
    ts_end: int
    extra: dict[str, Any] = field(default_factory=dict)  # flattened into the payload

    def as_dict(self) -> dict[str, Any]:
        """The payload as a dict: version, fields, then the extra fields (as written to terminal_records.jsonl)."""
        data = {"v": ENVELOPE_VERSION, **self.__dict__}  # shallow, see TaskMessage.payload
        data.update(data.pop("extra"))
        return data

    def encode(self) -> str:
        """Its JSON payload."""
        return json.dumps(self.as_dict(), separators=_COMPACT)

    def entry(self, signer: TaskSigner) -> dict[str, str]:
        payload = self.encode()
        return {RECORD_FIELD: payload, SIGNATURE_FIELD: signer.sign_record(payload)}

    @classmethod
    def decode(cls, fields: dict[str, str]) -> TerminalRecord:
        data = _load(_field(fields, RECORD_FIELD, "a terminal record"), "a terminal record")
        known = {name: data.pop(name) for name in _TERMINAL_FIELDS if name in data}
        return _construct(cls, {**known, "extra": data}, "a terminal record")


_TERMINAL_FIELDS = tuple(f.name for f in fields(TerminalRecord) if f.name != "extra")


@dataclass(frozen=True)
class RunKeys:
    """Every Redis key of a run: ``tk:<RUN_ID>:...``."""

    run_id: str

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)

    @property
    def prefix(self) -> str:
        return f"tk:{self.run_id}:"

    @property
    def pattern(self) -> str:
        return f"{self.prefix}*"

    @property
    def meta(self) -> str:
        """Hash marking the run as live in Redis (gone after a restart without persistence)."""
        return f"{self.prefix}meta"

    def queue(self, node: str) -> str:
        """Stream of the tasks placed on ``node`` (consumer group WORKER_GROUP)."""
        return f"{self.prefix}queue:{node}"

    @property
    def results(self) -> str:
        """Stream of terminal records (done / failed), one per task."""
        return f"{self.prefix}results"

    @property
    def starts(self) -> str:
        """Stream of task starts (a worker began an attempt)."""
        return f"{self.prefix}starts"

    def heartbeat(self, node: str, consumer: str) -> str:
        """Expiring key a live worker slot keeps refreshing."""
        return f"{self._heartbeat_prefix}{node}:{consumer}"

    @property
    def heartbeats(self) -> str:
        """SCAN pattern of every heartbeat key of the run."""
        return f"{self._heartbeat_prefix}*"

    def heartbeat_node(self, key: str) -> str:
        """The node of a heartbeat key (node ids hold no ':', consumer names may)."""
        if not key.startswith(self._heartbeat_prefix):
            raise ProtocolError(f"{key!r} is not a heartbeat key of run {self.run_id}")
        return key[len(self._heartbeat_prefix) :].split(":", 1)[0]

    @property
    def _heartbeat_prefix(self) -> str:
        return f"{self.prefix}heartbeat:"


def run_meta(run_id: str, policy: str) -> dict[str, str]:
    """The fields of the run's meta hash."""
    return {"v": str(ENVELOPE_VERSION), "run_id": run_id, "policy": policy}


def start_record_lua(**json_texts: str) -> str:
    """A Lua expression that builds a start record inside a script, laid out as StartRecord.encode does.

    One keyword per StartRecord field, each a Lua expression whose value is
    that field's JSON text (e.g. ``task_id="cjson.encode(task.task_id)"``;
    cjson writes '/' as '\\/', which reads back the same).
    """
    names = [f.name for f in fields(StartRecord)]
    if set(json_texts) != set(names):
        raise TypeError(f"start_record_lua needs exactly the fields {', '.join(names)}, got {', '.join(json_texts)}")
    parts = []
    for name in names:
        parts += [f"'{',' if parts else '{' + VERSION_MEMBER + ','}\"{name}\":'", f"({json_texts[name]})"]
    return " .. ".join([*parts, "'}'"])


class NewResults(NamedTuple):
    """Terminal records a run's results stream gained after a given entry."""

    done: int
    failed: int
    last_id: str  # the last entry read (or the one given, if none was new): the next call's after_id


def count_new_results(client: redis.Redis, run_id: str, after_id: str = "0") -> NewResults:
    """Count the done and failed tasks recorded after entry ``after_id`` ("0": from the start).

    ``client`` must decode responses (``decode_responses=True``). A record of
    another Tracekit version raises ProtocolError; Redis errors are the
    client's.
    """
    key = RunKeys(run_id).results
    done = failed = 0
    while True:
        entries = client.xrange(key, min="-" if after_id == "0" else f"({after_id}", count=RESULTS_PAGE)
        for entry_id, entry_fields in entries:
            after_id = entry_id
            if TerminalRecord.decode(entry_fields).state == "done":
                done += 1
            else:
                failed += 1
        if len(entries) < RESULTS_PAGE:
            return NewResults(done, failed, after_id)


def _field(entry_fields: dict[str, str], name: str, what: str) -> str:
    try:
        return entry_fields[name]
    except KeyError:
        raise ProtocolError(f"{what} without its {name!r} field (fields: {sorted(entry_fields)!r})") from None


def _load(payload: str, what: str) -> dict[str, Any]:
    """The payload's members without ``v``, once ``v`` is this version's."""
    try:
        data = json.loads(payload)
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} that is not a JSON object: {str(payload)[:200]!r}")
    version = data.pop("v", None)
    if version != ENVELOPE_VERSION:
        raise ProtocolError(f"{what} of another Tracekit version (envelope {version!r}, this one reads "
                            f"{ENVELOPE_VERSION}): run one version on every node")  # fmt: skip
    return data


def _construct(cls: type, data: dict[str, Any], what: str) -> Any:
    try:
        return cls(**data)
    except TypeError as exc:  # a member missing or unknown
        raise ProtocolError(f"{what} this version cannot read ({exc})") from None
