"""One node's raw files -> its share of ``cctf/``, in a worker process.

input:  a NodeFolder, a part folder to write into, --strict
output: in the part folder: proc_metrics.jsonl, proc_cpu.jsonl,
        proc_rss.jsonl, proc_metrics.arrow (the PROC_METRICS rows for the
        Parquet copy), host_metrics.jsonl, link_metrics.jsonl; returned: the
        node's invocations, audit figures and bad lines

A node's work is two jobs, its processes and its host samples, so that two
worker processes keep both cores busy (parse puts the parts together in node
order). Each job holds one node's bulk in memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tracekit import runfolder
from tracekit.jsonl import BadLine
from tracekit.trace import audit as audit_mod
from tracekit.trace.arrowjson import BackgroundWriter, write_lines
from tracekit.trace.hostmetrics import build_host_metrics
from tracekit.trace.procmetrics import attribute_tasks, build_proc_metrics
from tracekit.trace.rawrun import BadLines, NodeFolder, read_host_samples, read_proc_samples, read_records

PROC_PARTS = ("proc_metrics.jsonl", "proc_cpu.jsonl", "proc_rss.jsonl")
HOST_PARTS = ("host_metrics.jsonl", "link_metrics.jsonl")
PROC_ROWS_PART = "proc_metrics.arrow"

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
    audit_task_samples: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


def parse_node_processes(node: NodeFolder, part: Path, strict: bool) -> ProcessesPart:
    """Events, processes and process samples of one node -> the proc_* parts."""
    bad = BadLines(strict=strict)
    offset = node.clock_offset_ms or 0
    invocations = []
    for path in sorted(node.path.glob("events.*.jsonl")):
        for event in read_records(path, bad, required=EVENT_REQUIRED):
            invocations.append(normalize_invocation(event, node))
    processes = read_records(node.path / runfolder.PROCESSES, bad)
    by_key = {(p["pid"], p["create_time_ms"]): p for p in processes}
    # Invocation keys are on the node clock here, like the samples.
    invocation_keys = {
        (r["pid"], r["create_time_ms"] - offset): r["task_id"] for r in invocations if r["pid"] is not None
    }
    task_of = attribute_tasks(processes, invocation_keys)
    samples = read_proc_samples(node.path / runfolder.PROC_SAMPLES, bad)
    correction = node.facts.get("start_time_correction_ms") or 0
    metrics = build_proc_metrics(node.node, samples, by_key, task_of, offset, correction)
    del samples
    part.mkdir(parents=True, exist_ok=True)
    outputs = {name: open(part / name, "wb") for name in PROC_PARTS}  # noqa: SIM115
    writer = BackgroundWriter()
    try:
        # Uncompressed Arrow IPC: parse memory-maps it into the one Parquet writer.
        writer.submit(_write_arrow, metrics.table, part / PROC_ROWS_PART)
        for lines in metrics.lines():
            for name in list(lines):
                writer.write_lines(lines.pop(name), outputs[name])
        writer.close()
    finally:
        try:
            writer.close()
        finally:
            for out in outputs.values():
                out.close()
    audit = audit_mod.Audit(run_dir=node.path)
    audit.add_node(node, metrics, len(processes))
    return ProcessesPart(invocations, bad.lines, audit.per_node, audit.task_samples)


def _write_arrow(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
        out.write_table(table)


def parse_node_host(node: NodeFolder, part: Path, strict: bool) -> list[BadLine]:
    """Host samples of one node -> the host_metrics and link_metrics parts; the bad lines."""
    bad = BadLines(strict=strict)
    samples = read_host_samples(node.path / runfolder.HOST_SAMPLES, bad)
    host = build_host_metrics(node.node, samples, node.clock_offset_ms or 0)
    part.mkdir(parents=True, exist_ok=True)
    for name, lines in zip(HOST_PARTS, (host.host_lines, host.link_lines)):
        with open(part / name, "wb") as out:
            write_lines(lines, out)
    return bad.lines
