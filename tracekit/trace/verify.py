"""``tracekit verify opendc``: check an OpenDC workload as OpenDC's reader would, and more.

input:  OUT_DIR with tasks.parquet and fragments.parquet; optionally an
        experiment.json (topology) and the run folder it came from
output: a list of violations, one line each (empty: the workload is sound)

What the reader requires (exact physical types, required columns written
non-nullable, millisecond timestamps, 3-level INT32 lists), what it would
silently drop or misread (orphan fragments, tasks without fragments,
missing columns), value rules, fit against the topology, and with the run
folder: conservation of CPU time and duration per task, no node holding
another node's task processes (nodes sharing a machine), and a topology
that claims no more cores than the measured machines had.

A file that cannot be read at all (a Parquet file cut short or overwritten,
JSON that is not JSON) is no violation to list but an error naming the file.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.errors import RunFolderError
from tracekit.jsonl import printable, read_jsonl
from tracekit.trace import cctf, ownership, slices
from tracekit.trace.audit import cgroup_counted, exact_cpu_ms
from tracekit.trace.records import OPENDC_FRAGMENTS, OPENDC_FRAGMENTS_REQUIRED, OPENDC_TASKS, OPENDC_TASKS_REQUIRED

CONSERVATION_TOLERANCE = 0.01  # 1 % of the measured CPU time
# OpenDC's reader takes submission_time as plain INT64 or as a millisecond timestamp.
_TIMESTAMP_MS = ("Timestamp(isAdjustedToUTC=true, timeUnit=milliseconds, is_from_converted_type=false, "
                 "force_set_converted_type=false)")  # fmt: skip
_PHYSICAL = {pa.int32(): "INT32", pa.int64(): "INT64", pa.float64(): "DOUBLE"}


def _required_columns(schema: pa.Schema, names: tuple[str, ...], also: dict[str, str] | None = None) -> dict:
    """column -> (physical type, allowed logical types), from the records module's schema."""
    also = also or {}
    return {name: (_PHYSICAL[schema.field(name).type], {"None", *([also[name]] if name in also else [])}) for name in names}


# All of them required (not null).
TASK_COLUMNS = _required_columns(OPENDC_TASKS, OPENDC_TASKS_REQUIRED, {"submission_time": _TIMESTAMP_MS})
FRAGMENT_COLUMNS = _required_columns(OPENDC_FRAGMENTS, OPENDC_FRAGMENTS_REQUIRED)
OPTIONAL_COLUMNS = {"gpu_count": "INT32", "gpu_capacity": "DOUBLE", "deadline": "INT64", "deferrable": "BOOLEAN"}


@dataclass
class Verification:
    violations: list[str] = field(default_factory=list)
    tasks: int = 0
    fragments: int = 0
    checked_conservation: int = 0

    def add(self, message: str) -> None:
        self.violations.append(message)

    @property
    def ok(self) -> bool:
        return not self.violations


class _Unreadable:
    """Turns pyarrow's and json's complaint about a file into one line naming the file."""

    def __init__(self, path: Path, what: str = "Parquet file", fix: str = "export again (tracekit export opendc --force)"):
        self.path, self.what, self.fix = path, what, fix

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, _tb) -> bool:
        if isinstance(exc, (OSError, pa.ArrowException, ValueError)):
            reason = printable((str(exc).strip().splitlines() or [kind.__name__])[0])[:200]
            raise RunFolderError(f"{self.path}: not a readable {self.what} ({reason}); {self.fix}") from None
        return False


def _check_physical(path: Path, expected: dict[str, tuple[str, set[str]]], result: Verification) -> None:
    with _Unreadable(path):
        schema = pq.ParquetFile(path).schema
    columns = {schema.column(i).path: schema.column(i) for i in range(len(schema))}
    for name, (physical, logical_ok) in expected.items():
        column = columns.get(name)
        if column is None:
            result.add(f"{path.name}: required column {name!r} is missing (OpenDC would read it as 0)")
            continue
        if column.physical_type != physical:
            result.add(f"{path.name}: column {name!r} is {column.physical_type}, OpenDC needs {physical}")
        if str(column.logical_type) not in logical_ok:
            result.add(
                f"{path.name}: column {name!r} has logical type {column.logical_type} "
                "(micro- or nanosecond timestamps are misread as milliseconds)"
            )
        if column.max_definition_level != 0:
            result.add(f"{path.name}: column {name!r} is nullable; OpenDC needs it written as required")
    for name, physical in OPTIONAL_COLUMNS.items():
        column = columns.get(name)
        if column is not None and column.physical_type != physical:
            result.add(f"{path.name}: optional column {name!r} is {column.physical_type}, OpenDC needs {physical}")
    for name in ("parents", "children"):
        lists = [c for path_, c in columns.items() if path_.split(".")[0] == name]
        if lists and not (len(lists) == 1 and lists[0].path == f"{name}.list.element"
                          and lists[0].physical_type == "INT32"):  # fmt: skip
            result.add(f"{path.name}: column {name!r} must be a standard 3-level LIST<INT32> ({name}.list.element)")


def verify_opendc(
    out_dir: str | Path, topology: str | Path | None = None, against: str | Path | None = None
) -> Verification:
    out_dir = Path(out_dir)
    result = Verification()
    tasks_path, fragments_path = out_dir / "tasks.parquet", out_dir / "fragments.parquet"
    for path in (tasks_path, fragments_path):
        if not path.exists():
            raise RunFolderError(f"{path} not found; export first: tracekit export opendc RUN_DIR -o {out_dir}")
    _check_physical(tasks_path, TASK_COLUMNS, result)
    _check_physical(fragments_path, FRAGMENT_COLUMNS, result)
    tasks, fragments = _read(tasks_path), _read(fragments_path)
    result.tasks = len(tasks.get("id", []))
    result.fragments = len(fragments.get("id", []))
    if result.tasks == 0:
        result.add("tasks.parquet: no tasks (an empty workload crashes OpenDC)")
    if any(c not in tasks for c in TASK_COLUMNS) or any(c not in fragments for c in FRAGMENT_COLUMNS):
        return result  # reported above; the value checks need every required column

    _check_values(tasks, fragments, result)
    topology_path = Path(topology) if topology else out_dir / "experiment.json"
    if topology is not None or topology_path.exists():
        _check_fit(tasks, topology_path, result)
    if against is not None:
        trace = _read_trace(out_dir, Path(against))
        _check_conservation(tasks, fragments, trace, result)
        _check_ownership(trace, result)
        if topology is not None or topology_path.exists():
            _check_cores_claimed(topology_path, trace, result)
    return result


@dataclass(frozen=True)
class _RunTrace:
    """What --against compares the workload with, read once: the run's trace and the export's id mapping."""

    cctf: Path
    invocations: list[dict]
    nodes: list[dict]
    mapping: dict[int, dict]  # OpenDC id -> task_ids.jsonl entry


def _read_trace(out_dir: Path, run_dir: Path) -> _RunTrace:
    mapping_path = out_dir / "task_ids.jsonl"
    trace = run_dir / cctf.CCTF
    if not mapping_path.exists() or not cctf.has_trace(run_dir):
        raise RunFolderError(f"--against needs {mapping_path} and {trace}/{cctf.INVOCATIONS} (parse, then export)")
    nodes = list(cctf.read_nodes(trace).values())
    with _Unreadable(mapping_path, "task id mapping"):
        mapping = {m["id"]: m for m in read_jsonl(mapping_path)}
    return _RunTrace(cctf=trace, invocations=cctf.read_records(trace, cctf.INVOCATIONS), nodes=nodes, mapping=mapping)


def _read(path: Path) -> dict[str, list]:
    """Column -> values; timestamps as integers (nanoseconds do not convert to datetime)."""
    with _Unreadable(path):
        table = pq.read_table(path)
    return {
        name: (column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column).to_pylist()
        for name, column in zip(table.column_names, table.columns)
    }


def _finite_nonnegative(value) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def _check_values(tasks: dict, fragments: dict, result: Verification) -> None:
    ids = tasks["id"]
    known = set(ids)
    if len(known) != len(ids):
        result.add(f"tasks.parquet: {len(ids) - len(known)} duplicate task ids")
    for row, task_id in enumerate(ids):
        if (tasks.get("cpu_count") or [1] * len(ids))[row] is None or tasks["cpu_count"][row] < 1:
            result.add(f"tasks.parquet: task {task_id}: cpu_count {tasks['cpu_count'][row]} is below 1")
        duration = tasks.get("duration", [1] * len(ids))[row]
        if duration is None or duration <= 0:
            result.add(f"tasks.parquet: task {task_id}: duration {duration} is not positive")
        capacity = tasks.get("cpu_capacity", [1.0] * len(ids))[row]
        if not _finite_nonnegative(capacity) or capacity == 0:
            result.add(f"tasks.parquet: task {task_id}: cpu_capacity {capacity} is not a positive number")
        memory = tasks.get("mem_capacity", [0] * len(ids))[row]
        if memory is None or memory < 0:
            result.add(f"tasks.parquet: task {task_id}: mem_capacity {memory} is negative")
    submitted = tasks.get("submission_time") or [] if len(known) == len(ids) else []
    for row in range(1, len(submitted)):
        if submitted[row] is not None and submitted[row - 1] is not None and submitted[row] < submitted[row - 1]:
            result.add(f"tasks.parquet: task {ids[row]} was submitted before task {ids[row - 1]} above it: "
                       "tasks are not in submission order (OpenDC's newer loaders require it)")  # fmt: skip
            break
    with_fragments: set[int] = set()
    previous = None
    closed: set[int] = set()
    position = {task_id: row for row, task_id in enumerate(ids)} if len(known) == len(ids) else {}
    capacity_of = _capacity_where_the_task_fits(ids, tasks, fragments)
    out_of_order = False
    for row, (task_id, duration, usage) in enumerate(zip(fragments["id"], fragments["duration"], fragments["cpu_usage"])):
        if task_id not in known:
            result.add(f"fragments.parquet: row {row}: task {task_id} does not exist (OpenDC drops it silently)")
        if duration is None or duration <= 0:
            result.add(f"fragments.parquet: row {row}: task {task_id}: duration {duration} is not positive")
        if not _finite_nonnegative(usage):
            result.add(f"fragments.parquet: row {row}: task {task_id}: cpu_usage {usage} is not finite and >= 0")
        elif task_id in capacity_of and usage > capacity_of[task_id] * (1 + 1e-9):
            result.add(f"fragments.parquet: row {row}: task {task_id}: cpu_usage {usage:.6g} MHz is above its "
                       f"cpu_capacity {capacity_of[task_id]:.6g} MHz (the simulator gives it no more; a trace parsed "
                       "by an older Tracekit: parse it again)")  # fmt: skip
        if task_id != previous:
            if task_id in closed:
                result.add(f"fragments.parquet: row {row}: fragments of task {task_id} are not contiguous")
            elif previous in position and task_id in position and position[task_id] < position[previous] \
                    and not out_of_order:  # fmt: skip
                out_of_order = True
                result.add(f"fragments.parquet: row {row}: fragments of task {task_id} come after those of task "
                           f"{previous}, which is below it in tasks.parquet: fragments are not in task order "
                           "(OpenDC's newer loaders require it)")  # fmt: skip
            if previous is not None:
                closed.add(previous)
            previous = task_id
        with_fragments.add(task_id)
    for task_id in sorted(known - with_fragments):
        result.add(f"tasks.parquet: task {task_id} has no fragments (OpenDC drops it silently)")
    _check_workflow(tasks, known, result)


def _capacity_where_the_task_fits(ids: list, tasks: dict, fragments: dict) -> dict[int, float]:
    """Each task's cpu_capacity, for the tasks whose whole CPU fits it over their duration: theirs can be held
    by no fragment above it. A task that used more (its start and end cut to the ms, one using every core can
    show up to a ms of each more: tracekit.trace.slices.over_cores, counted in export.json) keeps the rest in
    a fragment above it. A capacity that is no positive number is reported on its own, once."""
    held: dict[int, float] = defaultdict(float)
    lasted: dict[int, int] = defaultdict(int)
    for task_id, duration, usage in zip(fragments["id"], fragments["duration"], fragments["cpu_usage"]):
        if _finite_nonnegative(usage) and duration is not None and duration > 0:
            held[task_id] += usage * duration
            lasted[task_id] += duration
    return {task_id: capacity for task_id, capacity in zip(ids, tasks.get("cpu_capacity") or [None] * len(ids))
            if _finite_nonnegative(capacity) and capacity > 0
            and held[task_id] <= capacity * lasted[task_id] * (1 + 1e-9)}  # fmt: skip


def _check_workflow(tasks: dict, known: set[int], result: Verification) -> None:
    parents = tasks.get("parents")
    children = tasks.get("children")
    if parents is None and children is None:
        return
    ids = tasks["id"]
    parents_of = {i: set(p or []) for i, p in zip(ids, parents or [[]] * len(ids))}
    children_of = {i: set(c or []) for i, c in zip(ids, children or [[]] * len(ids))}
    for task_id in ids:
        for parent in parents_of[task_id]:
            if parent not in known:
                result.add(f"tasks.parquet: task {task_id}: parent {parent} does not exist")
            elif children is not None and task_id not in children_of[parent]:
                result.add(f"tasks.parquet: task {task_id} names parent {parent}, which does not name it as a child")
        for child in children_of[task_id]:
            if child not in known:
                result.add(f"tasks.parquet: task {task_id}: child {child} does not exist")
            elif parents is not None and task_id not in parents_of[child]:
                result.add(f"tasks.parquet: task {task_id} names child {child}, which does not name it as a parent")


# OpenDC's units of a data size (its DataSize: a bare number is MiB), as MiB.
_MIB_PER = {"kib": 1 / 1024, "mib": 1.0, "gib": 1024.0, "tib": 1024.0**2}


def memory_mib(size: Any) -> float:
    """An OpenDC host's ``memory.size`` (``"16384 MiB"``, ``"16 GiB"``, or a number of MiB) in MiB."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        return float(size)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]iB)\s*", str(size), re.I)
    if not match:
        raise ValueError(f"memory size {size!r} is not a number of KiB, MiB, GiB or TiB")
    return float(match[1]) * _MIB_PER[match[2].lower()]


def _check_fit(tasks: dict, topology_path: Path, result: Verification) -> None:
    try:
        experiment = json.loads(topology_path.read_text())
        hosts = [
            (host["cpu"]["coreCount"], memory_mib(host["memory"]["size"]))
            for topology in experiment["topologies"]
            for cluster in topology["clusters"]
            for host in cluster["hosts"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        result.add(f"{topology_path}: not a usable topology ({exc.__class__.__name__}: {exc})")
        return
    for task_id, cores, memory_kb in zip(tasks["id"], tasks["cpu_count"], tasks["mem_capacity"]):
        if cores is None or memory_kb is None:
            continue  # reported by _check_values
        if not any(cores <= host_cores and memory_kb / 1000 <= host_mib for host_cores, host_mib in hosts):
            result.add(
                f"task {task_id} ({cores} cores, {memory_kb} kB) fits no host of {topology_path.name} "
                "(OpenDC terminates it as 'does not fit')"
            )


def _check_conservation(tasks: dict, fragments: dict, trace: _RunTrace, result: Verification) -> None:
    mapping = trace.mapping
    mhz = {n["node"]: n["cpu_mhz"] for n in trace.nodes}
    invocations = {(r["node"], r["task_id"], r["attempt"]): r for r in trace.invocations}
    cpu_ms = defaultdict(float)
    duration_ms = defaultdict(int)
    for task_id, duration, usage in zip(fragments["id"], fragments["duration"], fragments["cpu_usage"]):
        node = mapping.get(task_id, {}).get("node")
        if node in mhz and usage is not None and duration is not None:
            cpu_ms[task_id] += usage / mhz[node] * duration
            duration_ms[task_id] += duration
    for task_id in tasks["id"]:
        entry = mapping.get(task_id)
        if entry is None:
            result.add(f"task_ids.jsonl: no entry for task {task_id}")
            continue
        invocation = invocations.get((entry["node"], entry["task_id"], entry["attempt"]))
        if invocation is None:
            result.add(f"task {task_id}: {entry['task_id']} (attempt {entry['attempt']}) is not in {trace.cctf}")
            continue
        result.checked_conservation += 1
        expected_duration = slices.runtime_ms(invocation)
        if duration_ms[task_id] != expected_duration:
            result.add(
                f"task {task_id} ({entry['task_id']}): fragments last {duration_ms[task_id]} ms, "
                f"the invocation {expected_duration} ms"
            )
        measured = exact_cpu_ms(invocation)
        if measured is None or (invocation.get("cpu_user_ms") is None and not cgroup_counted(invocation)):
            continue  # no exact total to conserve (log adapters; a request's CPU is in one slice by design)
        if abs(cpu_ms[task_id] - measured) > CONSERVATION_TOLERANCE * max(measured, 1.0):
            result.add(
                f"task {task_id} ({entry['task_id']}): fragments hold {cpu_ms[task_id]:.1f} CPU-ms, "
                f"measured {measured:.1f} CPU-ms (more than {CONSERVATION_TOLERANCE:.0%} apart)"
            )


def _check_ownership(trace: _RunTrace, result: Verification) -> None:
    """No node's process samples may belong to another node's task (tracekit.trace.ownership)."""
    again = f"parse the run again (tracekit parse {trace.cctf.parent})"
    with _Unreadable(cctf.node_file(trace.cctf, "proc_metrics", "*").parent, "process samples table", again):
        wrong = ownership.samples_of_other_nodes(trace.cctf, trace.invocations, trace.nodes)
    for node, count in sorted(wrong.items()):
        if count:
            result.add(
                f"{trace.cctf}: node {node} holds {count} process samples of another node's tasks (the nodes share "
                "a machine; collect with --scope node)"
            )


def _check_cores_claimed(topology_path: Path, trace: _RunTrace, result: Verification) -> None:
    """The topology's cores, all hosts together, are at most what the machines of the exported tasks had."""
    try:
        experiment = json.loads(topology_path.read_text())
        claimed = sum(
            host["cpu"]["coreCount"] * host.get("count", 1)
            for topology in experiment["topologies"]
            for cluster in topology["clusters"]
            for host in cluster["hosts"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return  # reported by _check_fit
    nodes = {n["node"]: n for n in trace.nodes}
    used = {m["node"] for m in trace.mapping.values()} & set(nodes)
    machines: dict[str, int] = {}
    for name in sorted(used):
        node = nodes[name]
        key = node.get("boot_id") or f"node:{name}"  # one kernel: one machine's cores
        machines[key] = max(machines.get(key, 0), int(node.get("cores_logical") or 0))
    had = sum(machines.values())
    if had and claimed > had:
        result.add(
            f"{topology_path.name}: the hosts claim {claimed} cores, the machines of nodes {', '.join(sorted(used))} "
            f"had {had} (nodes sharing a machine need CPUs of their own: inventory tracekit_node_cpus)"
        )
