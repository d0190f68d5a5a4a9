"""One node's raw files -> its part of the trace: ``NodeFolder -> <node folder>/cctf-part/``.

input:  a node folder (node.json, clock.json, events.*.jsonl, processes.jsonl,
        proc.csv, cgroup.csv, host.csv, host_cpus.csv, host_net.csv)
output: a part folder: proc_metrics.parquet, task_metrics.parquet, task_slices.parquet,
        host_metrics.parquet, link_metrics.parquet (this node's rows of cctf's tables, written
        exactly as parse writes them) and part.json (the node's
        invocations, audit figures, bad lines and what was rejected, the
        run it belongs to, a fingerprint of the raw files it was made from
        and a checksum of each table file)

``tracekit parse --node-part`` makes a node's part where the node's data is
(tracekit-run does so on every node before the fetch); ``tracekit parse``
takes a part whose fingerprint still matches the raw files beside it as it
is, and makes the others itself; a part whose table files no longer match
their checksums, or that names another run, is reported and made again.
Either way a node's part is the same bytes, so the trace is too.

A node's invocation events are taken once each: an event of another run
than the node's own (its run_id) is left out, and so is an event of a task
and attempt met before (a copied events file): an identical copy is only
counted, a different one reported.

A node's work is two jobs, its processes and its host samples, so that two
worker processes keep both cores busy. Each job holds one node's bulk in
memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit import __version__, runfolder
from tracekit.errors import RunFolderError
from tracekit.jsonl import BadLine, printable
from tracekit.trace import audit as audit_mod
from tracekit.trace import cctf
from tracekit.trace.hostmetrics import build_host_metrics
from tracekit.trace.procmetrics import attribute_tasks, build_proc_metrics, close_with_rusage
from tracekit.trace.records import RAW_CGROUP
from tracekit.trace.slices import node_cores, node_slices
from tracekit.trace.taskmetrics import build_task_metrics
from tracekit.trace.rawrun import (
    BadLines,
    NodeFolder,
    Rejected,
    iter_numbered_records,
    load_node_folder,
    read_csv_table,
    read_host_samples,
    read_proc_samples,
    read_records,
    run_folder_name,
)

PART_DIR = "cctf-part"
PART_MANIFEST = "part.json"
PART_FORMAT = 5  # raised whenever what a part holds, or how it is made, changes
PROC_TABLES = ("proc_metrics", "task_metrics", "task_slices")
HOST_TABLES = ("host_metrics", "link_metrics")

# Fields of an invocation in cctf/, in order (events may carry more: kept after these).
INVOCATION_FIELDS = (
    "task_id", "trace_id", "node", "module", "attempt", "pid", "create_time_ms",
    "ts_enqueue", "ts_start", "ts_end", "duration_ms", "status", "ok", "error",
    "cpu_user_ms", "cpu_system_ms", "max_rss_kb", "samples", "sampled_cpu_ms", "bytes_in", "bytes_out",
    "method", "path", "span_id", "parent_span_id",
)  # fmt: skip
_NODE_CLOCK_FIELDS = ("ts_start", "ts_end", "create_time_ms")
EVENT_REQUIRED = ("task_id", "ts_start", "ts_end", "status")
# Fields parse computes with: whole numbers where present (ts_start and ts_end always are).
_EVENT_INTEGERS = ("ts_start", "ts_end", "attempt", "pid", "create_time_ms", "ts_enqueue")


def invocation_ok(event: dict[str, Any]) -> bool:
    """Did the invocation succeed? Exit status 0; for HTTP, any status below 500."""
    status = event.get("status")
    if event.get("module") in ("nginx", "http"):
        return isinstance(status, int) and status < 500
    return status == 0


def normalize_invocation(event: dict[str, Any], node: NodeFolder) -> dict[str, Any]:
    """An event from a node's events.*.jsonl -> a cctf invocation (controller clock)."""
    record = dict(event)
    record["node"] = node.node
    for name in _NODE_CLOCK_FIELDS:
        record[name] = node.shift(record.get(name))
    if not record.get("ts_enqueue_given"):
        record["ts_enqueue"] = node.shift(record.get("ts_enqueue"))
    record["duration_ms"] = record["ts_end"] - record["ts_start"]
    record["ok"] = invocation_ok(record)
    record.setdefault("attempt", 1)
    for name in INVOCATION_FIELDS:
        record.setdefault(name, None)
    ordered = {name: record.pop(name) for name in INVOCATION_FIELDS}
    ordered.update(sorted(record.items()))
    return ordered


def event_problem(event: dict[str, Any]) -> str | None:
    """Why an invocation event cannot be computed with (a field of the wrong type), or None."""
    if not isinstance(event["task_id"], str):
        return "task_id is not a string"
    for name in _EVENT_INTEGERS:
        value = event.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"{name} is not a whole number"
    if "attempt" in event:  # absent: the first; a task's attempts are told apart by it
        if event["attempt"] is None:
            return "attempt is not a whole number"
        if event["attempt"] < 1:
            return "attempt is below 1"
    return None


@dataclass
class ProcessesPart:
    invocations: list[dict[str, Any]]
    bad_lines: list[BadLine]
    audit_per_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit_task_samples: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    duplicate_invocations: int = 0  # identical copies of an event met before, left out
    rejected: list[Rejected] = field(default_factory=list)
    # (node, task, attempt) -> its task cgroup samples' figures (the invocation's cgroup_samples)
    audit_task_cgroup_samples: dict[tuple[str, str, int], tuple[int, int]] = field(default_factory=dict)
    audit_task_slices: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (node, task, attempt) -> slices


@dataclass
class HostPart:
    bad_lines: list[BadLine]
    rejected: list[Rejected] = field(default_factory=list)


@dataclass
class NodePart:
    """A node's part: its table files in ``path``, the rest in memory."""

    path: Path
    processes: ProcessesPart
    host: HostPart
    made_here: bool = False  # by this parse, in its staging folder (else beside a node's raw files)

    def table_file(self, table: str) -> Path:
        return self.path / f"{table}{cctf.SUFFIX}"

    @property
    def bad_lines(self) -> list[BadLine]:
        """In the order a parse meets them: the processes' files, then the host samples."""
        return self.processes.bad_lines + self.host.bad_lines

    @property
    def rejected(self) -> list[Rejected]:
        return self.processes.rejected + self.host.rejected


def parse_node_processes(node: NodeFolder, part: Path, strict: bool) -> ProcessesPart:
    """Events, processes, process and task cgroup samples of one node -> part/proc_metrics.parquet,
    task_metrics.parquet and task_slices.parquet."""
    bad = BadLines(strict=strict)
    offset = node.clock_offset_ms or 0
    invocations, duplicates = _read_invocations(node, bad)
    processes = read_records(node.path / runfolder.PROCESSES, bad)
    by_key = {(p["pid"], p["create_time_ms"]): p for p in processes}
    # Invocation keys are on the node clock here, like the samples. A process that serves many
    # invocations (an HTTP server's) is none of them: its samples stay unattributed.
    invocation_keys = {
        (r["pid"], r["create_time_ms"] - offset): r["task_id"]
        for r in invocations
        if r["pid"] is not None and r["create_time_ms"] is not None and not r.get("process_shared")
    }
    task_of = attribute_tasks(processes, invocation_keys)
    samples = read_proc_samples(node.path / runfolder.PROC_SAMPLES, bad)
    correction = node.facts.get("start_time_correction_ms") or 0
    metrics = build_proc_metrics(node.node, samples, by_key, task_of, offset, correction)
    if samples.num_rows and samples.column("cpu_ns").null_count < samples.num_rows:  # exact samples only
        metrics.table, metrics.closing_rows = close_with_rusage(metrics.table, invocations)
    del samples
    cctf.write_table(part / f"proc_metrics{cctf.SUFFIX}", "proc_metrics", metrics.table)
    # A worker's tasks in cgroups of their own: their samples, per task and interval.
    cgroup_samples = read_csv_table(node.path / runfolder.CGROUP_SAMPLES, RAW_CGROUP, bad)
    task_metrics = build_task_metrics(node.node, cgroup_samples, invocations, offset)
    cctf.write_table(part / f"task_metrics{cctf.SUFFIX}", "task_metrics", task_metrics.table)
    # Every invocation cut at its samples once, here where they are in memory: the exports read the slices.
    task_slices = node_slices(node.node, invocations, task_metrics.table, metrics.table, node_cores(node.facts))
    cctf.write_table(part / f"task_slices{cctf.SUFFIX}", "task_slices", task_slices)
    audit = audit_mod.Audit(run_dir=node.path)
    audit.add_node(node, metrics, len(by_key))  # a process exec'd after its first line has a second
    audit.add_task_metrics(node.node, task_metrics)
    audit.add_task_slices(node.node, task_slices)
    return ProcessesPart(invocations, bad.lines, audit.per_node, audit.task_samples, duplicates, bad.rejected,
                         audit.task_cgroup_samples, audit.task_slices)  # fmt: skip


def _read_invocations(node: NodeFolder, bad: BadLines) -> tuple[list[dict[str, Any]], int]:
    """The node's invocations (events files in name order), each task and attempt once; how many
    identical copies were left out. Events of another run and different copies go to ``bad.rejected``."""
    invocations = []
    duplicates = 0
    # (task, attempt) -> where its invocation is in the list, file, line (not the event: memory)
    first: dict[tuple[str, Any], tuple[int, str, int]] = {}
    for path in sorted(node.path.glob("events.*.jsonl")):
        for line_no, event in iter_numbered_records(path, bad, required=EVENT_REQUIRED):
            problem = event_problem(event)
            if problem:
                bad.add(BadLine(path, line_no, problem))
                continue
            run_id = event.get("run_id")
            if node.run_id is not None and isinstance(run_id, str) and run_id != node.run_id:
                bad.reject(path, "invocation", f"of run {printable(run_id)!r}, not of {node.run_id!r} (this "
                           "node's run): left out", line_no)  # fmt: skip
                continue
            key = (event["task_id"], event.get("attempt", 1))  # as normalize_invocation takes it
            seen = first.get(key)
            if seen is None:
                first[key] = (len(invocations), path.name, line_no)
                invocations.append(normalize_invocation(event, node))
            elif normalize_invocation(event, node) == invocations[seen[0]]:
                duplicates += 1  # the same event twice (a copied file): once is the truth
            else:
                bad.reject(path, "invocation", f"task {printable(key[0])!r} attempt {key[1]} again, different from "
                           f"{printable(seen[1])}:{seen[2]}: the first kept", line_no)  # fmt: skip
    return invocations, duplicates


def parse_node_host(node: NodeFolder, part: Path, strict: bool) -> HostPart:
    """Host samples of one node -> part/host_metrics.parquet and part/link_metrics.parquet; the bad lines."""
    bad = BadLines(strict=strict)
    host, links = build_host_metrics(node.node, read_host_samples(node.path, bad), node.clock_offset_ms or 0)
    cctf.write_table(part / f"host_metrics{cctf.SUFFIX}", "host_metrics", host)
    cctf.write_table(part / f"link_metrics{cctf.SUFFIX}", "link_metrics", links)
    return HostPart(bad.lines, bad.rejected)


# -- the part on disk: made on the node, taken by parse ------------------------------


def raw_inputs(folder: Path) -> list[Path]:
    """The raw files a node's part is made from (those that exist), by name."""
    names = [runfolder.NODE_FACTS, runfolder.CLOCK, runfolder.PROCESSES, runfolder.PROC_SAMPLES,
             runfolder.CGROUP_SAMPLES, runfolder.HOST_SAMPLES, runfolder.HOST_CPU_SAMPLES,
             runfolder.HOST_NET_SAMPLES]  # fmt: skip
    paths = [folder / name for name in names] + list(folder.glob("events.*.jsonl"))
    return sorted((path for path in paths if path.is_file()), key=lambda path: path.name)


def fingerprint(folder: Path) -> dict[str, list[Any]]:
    """name -> [size, sha256] of each raw input: a part is good only for exactly these files."""
    prints = {}
    for path in raw_inputs(folder):
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        prints[path.name] = [path.stat().st_size, digest]
    return prints


def part_run_id(node: NodeFolder) -> tuple[str, str]:
    """The run a part made of this node folder is of, and what says so: the node's own files
    ("recorded"), else the name of the run folder ("folder")."""
    if node.run_id is not None:
        return node.run_id, "recorded"
    return run_folder_name(node.path), "folder"


def write_part(folder: Path, strict: bool = False) -> tuple[Path, bool]:
    """Parse one node folder into ``folder/cctf-part/``: (the part folder, whether it was written).

    A part that still matches the raw files is left as it is. Written to a
    temporary folder and renamed: a part is whole or absent.
    """
    node = load_node_folder(folder)
    if read_part(node) is not None and not (strict and _has_bad_lines(folder / PART_DIR)):
        return folder / PART_DIR, False
    final = folder / PART_DIR
    staging = folder / f".{PART_DIR}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        prints = fingerprint(folder)
        processes = parse_node_processes(node, staging, strict)
        host = parse_node_host(node, staging, strict)
        run_id, run_id_from = part_run_id(node)
        manifest = {
            "format": PART_FORMAT,
            "tracekit": __version__,
            "node": node.node,
            "run_id": run_id,
            "run_id_from": run_id_from,
            "inputs": prints,
            "tables": {table: _file_print(staging / f"{table}{cctf.SUFFIX}") for table in PROC_TABLES + HOST_TABLES},
            "invocations": processes.invocations,
            "duplicate_invocations": processes.duplicate_invocations,
            "audit_per_node": processes.audit_per_node,
            "audit_task_samples": [[task, *figures] for (_, task), figures in processes.audit_task_samples.items()],
            "audit_task_cgroup_samples": [[task, attempt, *figures] for (_, task, attempt), figures
                                          in processes.audit_task_cgroup_samples.items()],  # fmt: skip
            "audit_task_slices": [[task, attempt, count] for (_, task, attempt), count
                                  in processes.audit_task_slices.items()],  # fmt: skip
            "bad_lines": [_bad_line_record(b, folder) for b in processes.bad_lines],
            "host_bad_lines": [_bad_line_record(b, folder) for b in host.bad_lines],
            "rejected": [_rejected_record(r, folder) for r in processes.rejected],
            "host_rejected": [_rejected_record(r, folder) for r in host.rejected],
        }
        (staging / PART_MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final, True


def _file_print(path: Path) -> list[Any]:
    with open(path, "rb") as f:
        return [path.stat().st_size, hashlib.file_digest(f, "sha256").hexdigest()]


def _has_bad_lines(part: Path) -> bool:
    manifest = json.loads((part / PART_MANIFEST).read_text())
    return bool(manifest["bad_lines"] or manifest["host_bad_lines"])


def _bad_line_record(bad: BadLine, folder: Path) -> list[Any]:
    return [str(Path(bad.path).relative_to(folder)), bad.line_no, bad.reason]


def _rejected_record(rejected: Rejected, folder: Path) -> list[Any]:
    return [str(Path(rejected.path).relative_to(folder)), rejected.kind, rejected.reason, rejected.line]


@dataclass(frozen=True)
class PartCheck:
    """What parse may take from a node's part folder: the part, or None and maybe why not.

    ``rejected`` is said only when the part is damaged or of another run; a
    part that is simply out of date (the raw files changed since, another
    Tracekit made it) is made again without a word, as a missing one is.
    """

    part: NodePart | None
    rejected: str | None = None
    run_id: str | None = None  # the run the part says it is of
    run_id_from: str | None = None  # "recorded" (the node's own files) or "folder" (the run folder's name)


def read_part(node: NodeFolder) -> NodePart | None:
    """The node's part made beside its raw files, if it is one for exactly these files (else None)."""
    return check_part(node).part


def check_part(node: NodeFolder, run_id: str | None = None, folder_names_count: bool = False) -> PartCheck:
    """The node's part made beside its raw files, if it is sound, for exactly these files, and of
    run ``run_id`` (when given). ``folder_names_count``: a part that knows its run only from the
    name of the folder it was made in counts as of that run (the runner's run folders are named
    after the run id; a folder renamed by hand is not)."""
    path = node.path / PART_DIR
    try:
        manifest = json.loads((path / PART_MANIFEST).read_bytes())
    except (OSError, ValueError):
        return PartCheck(None)
    if not isinstance(manifest, dict):
        return PartCheck(None)
    # Another Tracekit may parse differently: only a part made by this one gives this one's trace.
    if (manifest.get("format"), manifest.get("tracekit"), manifest.get("node")) != (PART_FORMAT, __version__, node.node):
        return PartCheck(None)
    part_run, part_run_from = manifest.get("run_id"), manifest.get("run_id_from")
    if run_id is not None and part_run != run_id and (part_run_from == "recorded" or folder_names_count):
        return PartCheck(None, f"a part of run {printable(str(part_run))!r}, not of {run_id!r}", part_run, part_run_from)
    if any(not (path / f"{table}{cctf.SUFFIX}").is_file() for table in PROC_TABLES + HOST_TABLES):
        return PartCheck(None)
    if manifest.get("inputs") != fingerprint(node.path):
        return PartCheck(None)  # the raw files changed since (or the part came from elsewhere)
    # The tables as they were written: a byte changed since (a bad disk, a broken copy) and parse
    # would merge a table it cannot read, or worse, one it reads wrong.
    tables = manifest.get("tables")
    for table in PROC_TABLES + HOST_TABLES:
        name = f"{table}{cctf.SUFFIX}"
        if not isinstance(tables, dict) or tables.get(table) != _file_print(path / name):
            return PartCheck(None, f"{name} is not the file written (damaged since)", part_run, part_run_from)

    def bad_lines(records: list[list[Any]]) -> list[BadLine]:
        return [BadLine(node.path / name, line_no, reason) for name, line_no, reason in records]

    def rejected(records: list[list[Any]]) -> list[Rejected]:
        return [Rejected(node.path / name, kind, reason, line) for name, kind, reason, line in records]

    try:
        processes = ProcessesPart(
            list(manifest["invocations"]),
            bad_lines(manifest["bad_lines"]),
            dict(manifest["audit_per_node"]),
            {(node.node, task): audit_mod.TaskSamples(*figures) for task, *figures in manifest["audit_task_samples"]},
            int(manifest["duplicate_invocations"]),
            rejected(manifest["rejected"]),
            {(node.node, task, attempt): audit_mod.TaskSamples(*figures)
             for task, attempt, *figures in manifest["audit_task_cgroup_samples"]},  # fmt: skip
            {(node.node, task, attempt): int(count) for task, attempt, count in manifest["audit_task_slices"]},
        )
        host = HostPart(bad_lines(manifest["host_bad_lines"]), rejected(manifest["host_rejected"]))
        return PartCheck(NodePart(path, processes, host), None, part_run, part_run_from)
    except (KeyError, TypeError, ValueError):
        return PartCheck(None)  # a damaged part.json: the node is parsed here instead


def check_part_folder(folder: Path) -> Path:
    """The node folder for ``parse --node-part`` (a clear error if it is none)."""
    if not (folder / runfolder.NODE_FACTS).is_file():
        raise RunFolderError(
            f"{folder}: no {runfolder.NODE_FACTS}; --node-part takes one node's run folder "
            "(e.g. logs/<RUN_ID> on the node, or logs/<RUN_ID>/nodes/<node> after a fetch)"
        )
    return folder
