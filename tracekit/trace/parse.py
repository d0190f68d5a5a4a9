"""``tracekit parse``: raw node folders -> the normalized trace ``cctf/``.

input:  RUN_DIR with one node's raw files, or nodes/<node>/ folders
        (node.json, host.jsonl, proc.csv, processes.jsonl, events.*.jsonl,
        optional clock.json and placement_events.jsonl)
output: RUN_DIR/cctf/ invocations.jsonl, proc_metrics.jsonl (+ .parquet, the
        same records for fast readers), proc_cpu.jsonl, proc_rss.jsonl,
        host_metrics.jsonl, link_metrics.jsonl, nodes.json, links.json,
        placement_events.jsonl, audit.json, audit.md

Each node is two jobs (its processes, its host samples; nodeparse) run by
WORKERS processes, each job holding one node's bulk at a time: memory
depends on the number of workers, not of nodes. The parts are put together
in node order. Every timestamp is moved to the controller's clock with the node's
measured offset. The output is written to a temporary folder and renamed,
so a failed parse never leaves a half trace; the same input always gives
byte-identical files.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from tracekit import runfolder
from tracekit.errors import RunFolderError
from tracekit.jsonl import BadLine, dumps
from tracekit.trace import audit as audit_mod
from tracekit.trace import ownership
from tracekit.trace.nodeparse import (
    HOST_PARTS,
    PROC_PARTS,
    PROC_ROWS_PART,
    ProcessesPart,
    parse_node_host,
    parse_node_processes,
)
from tracekit.trace.rawrun import (
    BadLines,
    NodeFolder,
    find_node_folders,
    is_dispatcher_only,
    load_node_folder,
    read_records,
)
from tracekit.trace.records import PROC_METRICS
from tracekit.trace.validate import validate_outputs

__all__ = ["EVENT_REQUIRED", "INVOCATION_FIELDS", "ParseResult", "invocation_ok", "normalize_invocation", "parse_run"]

CCTF = "cctf"
JSONL_OUTPUTS = (
    "invocations.jsonl", "proc_metrics.jsonl", "proc_cpu.jsonl", "proc_rss.jsonl",
    "host_metrics.jsonl", "link_metrics.jsonl",
)  # fmt: skip
WORKERS = 2  # processes: the nodes' jobs keep two cores busy
TERMINAL_REQUIRED = ("task_id", "node", "attempt", "state")

@dataclass(frozen=True)
class ParseResult:
    cctf_dir: Path
    audit: dict[str, Any]


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
        "cpus": facts.get("cpus"),
        "cores_usable": facts.get("cores_usable"),
        "cpus_source": facts.get("cpus_source"),
        "boot_id": (facts.get("machine") or {}).get("boot_id"),
        "pid_namespace": (facts.get("machine") or {}).get("pid_namespace"),
        "process_scope": facts.get("process_scope"),
        "process_marker": facts.get("process_marker"),
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
        invocations: list[dict[str, Any]] = []
        placements: list[dict[str, Any]] = []
        terminal_records: list[dict[str, Any]] = []
        outputs = {name: open(staging / name, "wb") for name in JSONL_OUTPUTS}  # noqa: SIM115
        parquet = pq.ParquetWriter(staging / "proc_metrics.parquet", PROC_METRICS, compression="zstd")
        try:
            for node, processes, host_bad_lines, part in _node_parts(nodes, staging / ".parts", strict):
                invocations += processes.invocations
                for line in processes.bad_lines + host_bad_lines:
                    bad.add(line)
                audit.per_node.update(processes.audit_per_node)
                audit.task_samples.update(processes.audit_task_samples)
                with pa.memory_map(str(part / PROC_ROWS_PART)) as rows:
                    parquet.write_table(pa.ipc.open_file(rows).read_all())
                for name in PROC_PARTS + HOST_PARTS:
                    _append_file(part / name, outputs[name])
                shutil.rmtree(part)
                for event in read_records(node.path / runfolder.PLACEMENT_EVENTS, bad, required=("ts_ms", "task_id")):
                    event["ts_ms"] = node.shift(event["ts_ms"])
                    placements.append(event)
            for folder in placement_only:  # the dispatcher's clock is the controller's
                placements += read_records(folder / runfolder.PLACEMENT_EVENTS, bad, required=("ts_ms", "task_id"))
            for folder in [node.path for node in nodes] + placement_only:
                terminal_records += read_records(folder / runfolder.TERMINAL_RECORDS, bad, required=TERMINAL_REQUIRED)
            invocations.sort(key=lambda r: (r["ts_start"], r["node"], r["task_id"], r["attempt"]))
            audit.finish(nodes, invocations, bad.lines, terminal_records)  # also counts each invocation's samples
            outputs["invocations.jsonl"].writelines((dumps(r) + "\n").encode() for r in invocations)
        finally:
            parquet.close()
            for out in outputs.values():
                out.close()
        (staging / ".parts").rmdir()
        node_records = [node_record(n) for n in nodes]
        audit.add_ownership(ownership.samples_of_other_nodes(staging / "proc_metrics.parquet", invocations, node_records))
        if placements:
            placements.sort(key=lambda r: (r["ts_ms"], str(r.get("task_id")), r.get("attempt", 1)))
            with open(staging / "placement_events.jsonl", "w") as out:
                out.writelines(dumps(r) + "\n" for r in placements)
        _write_json(staging / "nodes.json", node_records)
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


def _node_parts(
    nodes: list[NodeFolder], parts: Path, strict: bool
) -> Iterator[tuple[NodeFolder, ProcessesPart, list[BadLine], Path]]:
    """Each node's parts, in node order, made by WORKERS processes (two jobs per node).

    Results are taken in node order, so with --strict the first bad line
    raised is the one a sequential parse would meet first.
    """
    context = multiprocessing.get_context("fork")  # the workers need nothing but the arguments
    with ProcessPoolExecutor(max_workers=min(WORKERS, 2 * len(nodes)), mp_context=context) as pool:
        jobs = []
        for index, node in enumerate(nodes):
            part = parts / f"{index:05d}"
            jobs.append((node, part, pool.submit(parse_node_processes, node, part, strict),
                         pool.submit(parse_node_host, node, part, strict)))  # fmt: skip
        try:
            for node, part, processes, host in jobs:
                yield node, processes.result(), host.result(), part
        finally:
            for *_, processes, host in jobs:
                processes.cancel()
                host.cancel()


def _append_file(source: Path, out: BinaryIO) -> None:
    """Append ``source`` to ``out`` in the kernel (copy_file_range), without reading it into Python."""
    out.flush()
    with open(source, "rb") as src:
        remaining = os.fstat(src.fileno()).st_size
        while remaining > 0:
            copied = os.copy_file_range(src.fileno(), out.fileno(), remaining)
            if copied == 0:
                raise OSError(f"{source}: copy stopped with {remaining} bytes left")
            remaining -= copied
