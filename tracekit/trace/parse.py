"""``tracekit parse``: raw node folders -> the normalized trace ``cctf/``.

input:  RUN_DIR with one node's raw files, or nodes/<node>/ folders
        (node.json, host.jsonl, proc.csv, processes.jsonl, events.*.jsonl,
        optional clock.json and placement_events.jsonl)
output: RUN_DIR/cctf/ invocations.jsonl, proc_metrics.jsonl (+ .parquet, the
        same records for fast readers), proc_cpu.jsonl, proc_rss.jsonl,
        host_metrics.jsonl, link_metrics.jsonl, nodes.json, links.json,
        placement_events.jsonl, audit.json, audit.md

Nodes are processed one at a time (memory does not grow with the number of
nodes). Every timestamp is moved to the controller's clock with the node's
measured offset. The output is written to a temporary folder and renamed,
so a failed parse never leaves a half trace; the same input always gives
byte-identical files.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tracekit import runfolder
from tracekit.errors import RunFolderError
from tracekit.jsonl import dumps
from tracekit.trace import audit as audit_mod
from tracekit.trace.arrowjson import BackgroundWriter
from tracekit.trace.hostmetrics import build_host_metrics
from tracekit.trace.procmetrics import attribute_tasks, build_proc_metrics
from tracekit.trace.rawrun import (
    PLACEMENT_EVENTS,
    BadLines,
    NodeFolder,
    find_node_folders,
    is_dispatcher_only,
    load_node_folder,
    read_host_samples,
    read_proc_samples,
    read_records,
)
from tracekit.trace.records import PROC_METRICS
from tracekit.trace.validate import validate_outputs

CCTF = "cctf"
JSONL_OUTPUTS = (
    "invocations.jsonl", "proc_metrics.jsonl", "proc_cpu.jsonl", "proc_rss.jsonl",
    "host_metrics.jsonl", "link_metrics.jsonl",
)  # fmt: skip

# Fields of an invocation in cctf/, in order (events may carry more: kept after these).
INVOCATION_FIELDS = (
    "task_id", "trace_id", "node", "module", "attempt", "pid", "create_time_ms",
    "ts_enqueue", "ts_start", "ts_end", "duration_ms", "status", "ok", "error",
    "cpu_user_ms", "cpu_system_ms", "max_rss_kb", "samples", "sampled_cpu_ms", "bytes_in", "bytes_out",
    "method", "path", "span_id", "parent_span_id",
)  # fmt: skip
_NODE_CLOCK_FIELDS = ("ts_start", "ts_end", "create_time_ms")
EVENT_REQUIRED = ("task_id", "ts_start", "ts_end", "status")


@dataclass(frozen=True)
class ParseResult:
    cctf_dir: Path
    audit: dict[str, Any]


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


def node_record(node: NodeFolder) -> dict[str, Any]:
    facts = node.facts
    clock = node.clock or {}
    return {
        "node": node.node,
        "stage": facts.get("stage"),
        "role": facts.get("role"),
        "hostname": facts.get("hostname"),
        "os": facts.get("os"),
        "kernel": facts.get("kernel"),
        "arch": facts.get("arch"),
        "cpu_model": facts.get("cpu_model"),
        "cores_logical": facts.get("cores_logical"),
        "cores_physical": facts.get("cores_physical"),
        "cpu_mhz": facts.get("cpu_mhz"),
        "cpu_mhz_source": facts.get("cpu_mhz_source"),
        "mem_kb": facts.get("mem_kb"),
        "cgroup_version": facts.get("cgroup_version"),
        "clock_offset_ms": clock.get("offset_ms"),
        "clock_uncertainty_ms": clock.get("uncertainty_ms"),
        "clock_reference": clock.get("reference"),
    }


def link_records(node: NodeFolder) -> list[dict[str, Any]]:
    """The node's network links: up, non-loopback interfaces, toward the controller."""
    clock = node.clock or {}
    return [
        {
            "u": node.node,
            "v": clock.get("reference"),
            "iface": iface["name"],
            "bw_bps": int(iface.get("speed_mbps") or 0) * 1_000_000,
            "rtt_ms": clock.get("rtt_ms"),
        }
        for iface in node.facts.get("interfaces", [])
        if iface.get("is_up") and iface["name"] != "lo"
    ]


def parse_run(run_dir: str | Path, strict: bool = False) -> ParseResult:
    # Millions of short-lived dicts and no reference cycles: the cyclic
    # garbage collector would only rescan them (it doubled the time of
    # reading host samples).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_run(Path(run_dir), strict)
    finally:
        if was_enabled:
            gc.enable()


def _parse_run(run_dir: Path, strict: bool) -> ParseResult:
    folders = find_node_folders(run_dir)
    # A controller that ran only the dispatcher contributes its placements.
    placement_only = [folder for folder in folders if is_dispatcher_only(folder)]
    nodes = [load_node_folder(folder) for folder in folders if folder not in placement_only]
    if not nodes:
        raise RunFolderError(f"{run_dir}: no node folder with node facts (node.json); nothing was measured")
    seen: dict[str, Path] = {}
    for node in nodes:
        if node.node in seen:
            raise RunFolderError(
                f"node id {node.node!r} appears twice ({seen[node.node]} and {node.path}); "
                "every node needs its own --node-id"
            )
        seen[node.node] = node.path
    bad = BadLines(strict=strict)
    audit = audit_mod.Audit(run_dir=run_dir)

    final = run_dir / CCTF
    staging = run_dir / f".{CCTF}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        outputs = {name: open(staging / name, "wb") for name in JSONL_OUTPUTS}  # noqa: SIM115
        parquet = pq.ParquetWriter(staging / "proc_metrics.parquet", PROC_METRICS, compression="zstd")
        writer = BackgroundWriter()
        invocations: list[dict[str, Any]] = []
        placements: list[dict[str, Any]] = []
        try:
            for node in nodes:
                invocations += _parse_node(node, outputs, parquet, writer, bad, audit)
                for event in read_records(node.path / PLACEMENT_EVENTS, bad, required=("ts_ms", "task_id")):
                    event["ts_ms"] = node.shift(event["ts_ms"])
                    placements.append(event)
            for folder in placement_only:  # the dispatcher's clock is the controller's
                placements += read_records(folder / PLACEMENT_EVENTS, bad, required=("ts_ms", "task_id"))
            invocations.sort(key=lambda r: (r["ts_start"], r["node"], r["task_id"], r["attempt"]))
            audit.finish(nodes, invocations, bad.lines)  # also counts each invocation's samples
            writer.close()
            outputs["invocations.jsonl"].writelines((dumps(r) + "\n").encode() for r in invocations)
        finally:
            try:
                writer.close()  # after an error too: no write may outlive the files
            finally:
                parquet.close()
            for out in outputs.values():
                out.close()
        if placements:
            placements.sort(key=lambda r: (r["ts_ms"], str(r.get("task_id")), r.get("attempt", 1)))
            with open(staging / "placement_events.jsonl", "w") as out:
                out.writelines(dumps(r) + "\n" for r in placements)
        _write_json(staging / "nodes.json", [node_record(n) for n in nodes])
        _write_json(staging / "links.json", [link for n in nodes for link in link_records(n)])
        _write_json(staging / "audit.json", audit.as_dict())
        (staging / "audit.md").write_text(audit.as_markdown())
        validate_outputs(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ParseResult(final, audit.as_dict())


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")


def _parse_node(node, outputs, parquet, writer, bad: BadLines, audit) -> list[dict[str, Any]]:
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
    writer.submit(parquet.write_table, metrics.table)
    for lines in metrics.lines():
        for name in list(lines):
            writer.write_lines(lines.pop(name), outputs[name])
    audit.add_node(node, metrics, len(processes))
    del metrics  # before the host samples: one node's bulk in memory at a time
    host = build_host_metrics(node.node, read_host_samples(node.path / runfolder.HOST_SAMPLES, bad), offset)
    writer.write_lines(host.host_lines, outputs["host_metrics.jsonl"])
    writer.write_lines(host.link_lines, outputs["link_metrics.jsonl"])
    return invocations
