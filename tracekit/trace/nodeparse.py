"""One node's raw files -> its part of the trace: ``NodeFolder -> <node folder>/cctf-part/``.

input:  a node folder (node.json, clock.json, events.*.jsonl, processes.jsonl,
        proc.csv, host.csv, host_cpus.csv, host_net.csv)
output: a part folder: proc_metrics.parquet, host_metrics.parquet,
        link_metrics.parquet (this node's rows of cctf's tables, written
        exactly as parse writes them) and part.json (the node's
        invocations, audit figures and bad lines, and a fingerprint of the
        raw files it was made from)

``tracekit parse --node-part`` makes a node's part where the node's data is
(tracekit-run does so on every node before the fetch); ``tracekit parse``
takes a part whose fingerprint still matches the raw files beside it as it
is, and makes the others itself. Either way a node's part is the same
bytes, so the trace is too.

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
from tracekit.jsonl import BadLine
from tracekit.trace import audit as audit_mod
from tracekit.trace import cctf
from tracekit.trace.hostmetrics import build_host_metrics
from tracekit.trace.procmetrics import attribute_tasks, build_proc_metrics
from tracekit.trace.rawrun import (
    BadLines,
    NodeFolder,
    load_node_folder,
    read_host_samples,
    read_proc_samples,
    read_records,
)

PART_DIR = "cctf-part"
PART_MANIFEST = "part.json"
PART_FORMAT = 1  # raised whenever what a part holds, or how it is made, changes
PROC_TABLES = ("proc_metrics",)
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


@dataclass
class ProcessesPart:
    invocations: list[dict[str, Any]]
    bad_lines: list[BadLine]
    audit_per_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit_task_samples: dict[tuple[str, str], tuple[int, int, int, int]] = field(default_factory=dict)


@dataclass
class NodePart:
    """A node's part: its table files in ``path``, the rest in memory."""

    path: Path
    processes: ProcessesPart
    host_bad_lines: list[BadLine]
    made_here: bool = False  # by this parse, in its staging folder (else beside a node's raw files)

    def table_file(self, table: str) -> Path:
        return self.path / f"{table}{cctf.SUFFIX}"

    @property
    def bad_lines(self) -> list[BadLine]:
        """In the order a parse meets them: the processes' files, then the host samples."""
        return self.processes.bad_lines + self.host_bad_lines


def parse_node_processes(node: NodeFolder, part: Path, strict: bool) -> ProcessesPart:
    """Events, processes and process samples of one node -> part/proc_metrics.parquet."""
    bad = BadLines(strict=strict)
    offset = node.clock_offset_ms or 0
    invocations = []
    for path in sorted(node.path.glob("events.*.jsonl")):
        for event in read_records(path, bad, required=EVENT_REQUIRED):
            invocations.append(normalize_invocation(event, node))
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
    del samples
    cctf.write_table(part / f"proc_metrics{cctf.SUFFIX}", "proc_metrics", metrics.table)
    audit = audit_mod.Audit(run_dir=node.path)
    audit.add_node(node, metrics, len(processes))
    return ProcessesPart(invocations, bad.lines, audit.per_node, audit.task_samples)


def parse_node_host(node: NodeFolder, part: Path, strict: bool) -> list[BadLine]:
    """Host samples of one node -> part/host_metrics.parquet and part/link_metrics.parquet; the bad lines."""
    bad = BadLines(strict=strict)
    host, links = build_host_metrics(node.node, read_host_samples(node.path, bad), node.clock_offset_ms or 0)
    cctf.write_table(part / f"host_metrics{cctf.SUFFIX}", "host_metrics", host)
    cctf.write_table(part / f"link_metrics{cctf.SUFFIX}", "link_metrics", links)
    return bad.lines


# -- the part on disk: made on the node, taken by parse ------------------------------


def raw_inputs(folder: Path) -> list[Path]:
    """The raw files a node's part is made from (those that exist), by name."""
    names = [runfolder.NODE_FACTS, runfolder.CLOCK, runfolder.PROCESSES, runfolder.PROC_SAMPLES,
             runfolder.HOST_SAMPLES, runfolder.HOST_CPU_SAMPLES, runfolder.HOST_NET_SAMPLES]  # fmt: skip
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
        host_bad_lines = parse_node_host(node, staging, strict)
        manifest = {
            "format": PART_FORMAT,
            "tracekit": __version__,
            "node": node.node,
            "inputs": prints,
            "invocations": processes.invocations,
            "audit_per_node": processes.audit_per_node,
            "audit_task_samples": [[task, *figures] for (_, task), figures in processes.audit_task_samples.items()],
            "bad_lines": [_bad_line_record(b, folder) for b in processes.bad_lines],
            "host_bad_lines": [_bad_line_record(b, folder) for b in host_bad_lines],
        }
        (staging / PART_MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final, True


def _has_bad_lines(part: Path) -> bool:
    manifest = json.loads((part / PART_MANIFEST).read_text())
    return bool(manifest["bad_lines"] or manifest["host_bad_lines"])


def _bad_line_record(bad: BadLine, folder: Path) -> list[Any]:
    return [str(Path(bad.path).relative_to(folder)), bad.line_no, bad.reason]


def read_part(node: NodeFolder) -> NodePart | None:
    """The node's part made beside its raw files, if it is one for exactly these files (else None)."""
    path = node.path / PART_DIR
    try:
        manifest = json.loads((path / PART_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    # Another Tracekit may parse differently: only a part made by this one gives this one's trace.
    if (manifest.get("format"), manifest.get("tracekit"), manifest.get("node")) != (PART_FORMAT, __version__, node.node):
        return None
    if any(not (path / f"{table}{cctf.SUFFIX}").is_file() for table in PROC_TABLES + HOST_TABLES):
        return None
    if manifest.get("inputs") != fingerprint(node.path):
        return None  # the raw files changed since (or the part came from elsewhere)

    def bad_lines(records: list[list[Any]]) -> list[BadLine]:
        return [BadLine(node.path / name, line_no, reason) for name, line_no, reason in records]

    try:
        processes = ProcessesPart(
            list(manifest["invocations"]),
            bad_lines(manifest["bad_lines"]),
            dict(manifest["audit_per_node"]),
            {(node.node, task): audit_mod.TaskSamples(*figures) for task, *figures in manifest["audit_task_samples"]},
        )
        return NodePart(path, processes, bad_lines(manifest["host_bad_lines"]))
    except (KeyError, TypeError, ValueError):
        return None  # a damaged part.json: the node is parsed here instead


def check_part_folder(folder: Path) -> Path:
    """The node folder for ``parse --node-part`` (a clear error if it is none)."""
    if not (folder / runfolder.NODE_FACTS).is_file():
        raise RunFolderError(
            f"{folder}: no {runfolder.NODE_FACTS}; --node-part takes one node's run folder "
            "(e.g. logs/<RUN_ID> on the node, or logs/<RUN_ID>/nodes/<node> after a fetch)"
        )
    return folder
