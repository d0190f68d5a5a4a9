"""``tracekit parse``: raw node folders -> the normalized trace ``cctf/``.

input:  RUN_DIR with one node's raw files, or nodes/<node>/ folders
        (node.json, host.csv, host_cpus.csv, host_net.csv, proc.csv,
        cgroup.csv, task_cgroups.json, processes.jsonl, events.*.jsonl, optional clock.json,
        placement_events.jsonl, terminal_records.jsonl, load/**/results.jsonl
        and cctf-part/)
output: RUN_DIR/cctf/ (layout: tracekit.trace.cctf) proc_metrics/,
        task_metrics/, task_slices/, host_metrics/, link_metrics/, contention/ (a Parquet file per node),
        invocations.jsonl, nodes.json, links.json, placement_events.jsonl,
        requests.jsonl (HTTP load runs: the load generator's requests joined
        to the services' invocations, tracekit.trace.requests), audit.json,
        audit.md; with ``jsonl`` also the JSON Lines copy of the per-sample
        tables (tracekit.trace.jsonl_copy)

Every node folder is checked against the run first: one whose own files
record another run (events' run_id, node.json's run_id, its part's run) is
left out and reported. The run is the one resolved.json names, else the one
the node folders record (the run folder's name among them, else the one
most of them record).

Each node's part (nodeparse) is taken as made on the node when it still
matches the raw files (and is sound, and of this run), else made here: two
jobs per node (its processes, its host samples) run by WORKERS processes,
each job holding one node's bulk at a time, so memory depends on the
number of workers, not of nodes.
The parts are put together in node order; each node's contention
(tracekit.trace.contention: it needs both jobs' tables, and those of the
nodes on its CPUs) is one more job, run as soon as those are in place. Every timestamp is moved to the
controller's clock with the node's measured offset. The output is written
to a temporary folder and renamed, so a failed parse never leaves a half
trace; the same input always gives byte-identical files.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit import runfolder
from tracekit.errors import RunFolderError
from tracekit.jsonl import printable
from tracekit.trace import audit as audit_mod
from tracekit.trace import cctf, ownership
from tracekit.trace.contention import sharing_cpus, write_node_contention
from tracekit.trace.jsonl_copy import write_jsonl_copy
from tracekit.trace.nodeparse import (
    HOST_TABLES,
    PART_DIR,
    PROC_TABLES,
    NodePart,
    check_part,
    parse_node_host,
    parse_node_processes,
)
from tracekit.trace.rawrun import (
    BadLines,
    NodeFolder,
    Rejected,
    collector_died,
    foreign_processes,
    find_node_folders,
    is_dispatcher_only,
    load_node_folder,
    read_records,
)
from tracekit.trace.requests import join as join_requests
from tracekit.trace.requests import read_requests, service_overhead
from tracekit.trace.validate import validate_outputs

__all__ = ["ParseResult", "parse_run"]

CCTF = cctf.CCTF
RESOLVED = "resolved.json"  # tracekit-run's record of the run (tracekit.experiment.run_dir)
WORKERS = 2  # processes: the nodes' jobs keep two cores busy
TERMINAL_REQUIRED = ("task_id", "node", "attempt", "state")


@dataclass(frozen=True)
class ParseResult:
    cctf_dir: Path
    audit: dict[str, Any]


def node_record(node: NodeFolder) -> dict[str, Any]:
    facts = node.facts
    clock = node.clock or {}  # only the values parse took (rawrun): what nodes.json says was applied
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
        "task_cgroups": node.task_cgroups,
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
            "bw_bits_per_s": int(iface.get("speed_mbps") or 0) * 1_000_000,
            "rtt_ms": clock.get("rtt_ms"),
        }
        for iface in node.facts.get("interfaces", [])
        if iface.get("is_up") and iface["name"] != "lo"
    ]


def parse_run(run_dir: str | Path, strict: bool = False, jsonl: bool = False) -> ParseResult:
    """Parse ``run_dir`` into ``run_dir/cctf/``; ``jsonl`` adds the JSON Lines copy of the per-sample tables."""
    # Millions of short-lived objects and no reference cycles: the cyclic
    # garbage collector would only rescan them.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_run(Path(run_dir), strict, jsonl)
    finally:
        if was_enabled:
            gc.enable()


def _parse_run(run_dir: Path, strict: bool, jsonl: bool) -> ParseResult:
    folders = find_node_folders(run_dir)
    # A controller that ran only the dispatcher contributes its placements.
    placement_only = [folder for folder in folders if is_dispatcher_only(folder)]
    nodes = [load_node_folder(folder) for folder in folders if folder not in placement_only]
    if not nodes:
        raise RunFolderError(f"{run_dir}: no node folder with node facts (node.json); nothing was measured")
    run_id, from_resolved = _run_id(run_dir, nodes)
    nodes, ready, rejected = _of_this_run(nodes, run_id, from_resolved)
    if not nodes:
        raise RunFolderError(
            f"{run_dir}: every node folder is of another run than {run_id!r} ({rejected[0].reason}); "
            "give the run folder these nodes belong to"
        )
    seen: dict[str, Path] = {}
    for node in nodes:
        runfolder.validate_name(node.node, f"{node.path / runfolder.NODE_FACTS}: node id")
        if node.node in seen:
            raise RunFolderError(
                f"node id {node.node!r} appears twice ({seen[node.node]} and {node.path}); "
                "every node needs its own --node-id"
            )
        seen[node.node] = node.path
    bad = BadLines(strict=strict)
    audit = audit_mod.Audit(run_dir=run_dir, run_id=run_id)
    for node in nodes:
        rejected += node.rejected  # clock.json

    final = run_dir / CCTF
    staging = run_dir / f".{CCTF}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    node_records = [node_record(n) for n in nodes]
    shared = sharing_cpus(node_records)
    missing = [node for node in nodes if node.node not in ready]
    # Arrow registers its compute kernels at the first call (0.2 s): once here, before the fork, not in each worker.
    pc.add(pa.array([0]), 0)
    pool = ProcessPoolExecutor(max_workers=max(1, min(WORKERS, max(2 * len(missing), len(nodes)))),
                               mp_context=multiprocessing.get_context("fork"))  # the workers need only the arguments
    try:
        invocations: list[dict[str, Any]] = []
        placements: list[dict[str, Any]] = []
        terminal_records: list[dict[str, Any]] = []
        task_times: dict[str, list[tuple[int, int]]] = {}  # node -> its invocations' (ts_start, ts_end)
        contention: dict[str, Future] = {}
        for node, part in _node_parts(pool, nodes, ready, staging / ".parts", strict):
            invocations += part.processes.invocations
            audit.duplicate_invocations += part.processes.duplicate_invocations
            rejected += part.rejected
            for line in part.bad_lines:
                bad.add(line)
            audit.per_node.update(part.processes.audit_per_node)
            audit.task_samples.update(part.processes.audit_task_samples)
            audit.task_cgroup_samples.update(part.processes.audit_task_cgroup_samples)
            audit.task_slices.update(part.processes.audit_task_slices)
            for table in PROC_TABLES + HOST_TABLES:
                target = cctf.node_file(staging, table, node.node)
                target.parent.mkdir(exist_ok=True)
                if part.made_here:  # ours to move; a part made on the node stays beside its raw files
                    os.replace(part.table_file(table), target)
                else:
                    shutil.copyfile(part.table_file(table), target)
            task_times[node.node] = [(r["ts_start"], r["ts_end"]) for r in part.processes.invocations]
            for record in node_records:  # each node's contention once its tables and its neighbours' are here
                name = record["node"]
                if name not in contention and task_times.keys() >= {name, *shared[name]}:
                    neighbours = [other for other in node_records if other["node"] in shared[name]]
                    contention[name] = pool.submit(_in_worker, write_node_contention, staging, record,
                                                   task_times[name], neighbours)  # fmt: skip
            for event in read_records(node.path / runfolder.PLACEMENT_EVENTS, bad, required=("ts_ms", "task_id")):
                event["ts_ms"] = node.shift(event["ts_ms"])
                placements.append(event)
        shutil.rmtree(staging / ".parts", ignore_errors=True)
        for folder in placement_only:  # the dispatcher's clock is the controller's
            placements += read_records(folder / runfolder.PLACEMENT_EVENTS, bad, required=("ts_ms", "task_id"))
        for folder in [node.path for node in nodes] + placement_only:
            terminal_records += read_records(folder / runfolder.TERMINAL_RECORDS, bad, required=TERMINAL_REQUIRED)
            rejected_entries = read_records(folder / runfolder.REJECTED_ENTRIES, bad)
            for entry in rejected_entries:
                node_id = str(entry.get("node") or folder.name)
                audit.queue_entries_rejected[node_id] = audit.queue_entries_rejected.get(node_id, 0) + 1
        collector_events = {node.node: read_records(node.path / runfolder.COLLECTOR_EVENTS, bad) for node in nodes}
        audit.collectors_died = [node for node, events in collector_events.items() if collector_died(events)]
        audit.foreign_processes = {node: foreign_processes(events) for node, events in collector_events.items()}
        audit.services_without_spans = [node.node for node in nodes if _service_without_spans(node.path)]
        invocations.sort(key=lambda r: (r["ts_start"], r["node"], r["task_id"], r["attempt"]))
        load_folders = [(node.path, node) for node in nodes] + [(folder, None) for folder in placement_only]
        requests = read_requests(load_folders, run_dir, bad)
        if requests:
            audit.requests = join_requests(requests, invocations)
            cctf.write_records(staging, cctf.REQUESTS, requests)
        audit.service_overhead = service_overhead(staging, invocations)
        audit.finish(nodes, invocations, bad.lines, terminal_records, rejected)  # also counts each invocation's samples
        cctf.write_records(staging, cctf.INVOCATIONS, invocations)
        audit.add_ownership(ownership.samples_of_other_nodes(staging, invocations, node_records))
        audit.add_contention({record["node"]: contention[record["node"]].result() for record in node_records})
        if placements:
            placements.sort(key=lambda r: (r["ts_ms"], str(r.get("task_id")), r.get("attempt", 1)))
            cctf.write_records(staging, cctf.PLACEMENTS, placements)
        if jsonl:
            write_jsonl_copy(staging, [node.node for node in nodes])
        cctf.write_json(staging, cctf.NODES, node_records)
        cctf.write_json(staging, cctf.LINKS, [link for n in nodes for link in link_records(n)])
        cctf.write_json(staging, cctf.AUDIT, audit.as_dict())
        cctf.write_text(staging, cctf.AUDIT_TEXT, audit.as_markdown())
        validate_outputs(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    except BaseException:
        pool.shutdown(cancel_futures=True)  # before the staging folder goes: a job may be writing into it
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        pool.shutdown(cancel_futures=True)
    return ParseResult(final, audit.as_dict())


def _service_without_spans(folder: Path) -> bool:
    """The node ran an HTTP service as a command that writes no access log (tracekit.adapters.http_service)."""
    try:
        description = json.loads((folder / "http_service.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(description, dict) and description.get("kind") == "command" and not description.get("access_log")


def _run_id(run_dir: Path, nodes: list[NodeFolder]) -> tuple[str | None, bool]:
    """The run these node folders should be of, and whether resolved.json says so.

    resolved.json's run_id (tracekit-run writes it); else what the node
    folders' own files record: the run folder's name if one of them records
    it, else the one most of them record; None when none records any (a run
    by hand without tracekit wrap: nothing to check against).
    """
    try:
        resolved = json.loads((run_dir / RESOLVED).read_bytes())
    except (OSError, ValueError):
        resolved = None
    if isinstance(resolved, dict) and isinstance(resolved.get("run_id"), str):
        return resolved["run_id"], True
    recorded = [node.run_id for node in nodes if node.run_id is not None]
    if not recorded or run_dir.name in recorded:
        return (run_dir.name if recorded else None), False
    counts = {run_id: recorded.count(run_id) for run_id in sorted(set(recorded))}
    most = max(counts.values())
    leaders = [run_id for run_id, count in counts.items() if count == most]
    if len(leaders) > 1:
        holders = "; ".join(
            f"{run_id}: {', '.join(n.path.name for n in nodes if n.run_id == run_id)}" for run_id in leaders
        )
        raise RunFolderError(
            f"{run_dir}: its node folders record different runs, as many of each ({holders}) and the folder's "
            "name is none of them; remove the other run's node folders, or name the run folder after its run id"
        )
    return leaders[0], False


def _of_this_run(
    nodes: list[NodeFolder], run_id: str | None, from_resolved: bool
) -> tuple[list[NodeFolder], dict[str, NodePart], list[Rejected]]:
    """The node folders of run ``run_id``, the parts made on them that parse takes, and what was rejected.

    A node folder is of another run when its own files say so, or (for one
    whose files record no run) its part does, from the name of the run folder
    it was made in, when that name is the run id (resolved.json gives it).
    A damaged part, or one of another run beside files of this run, is
    rejected: the node's raw files are parsed instead.
    """
    kept, ready, rejected = [], {}, []
    for node in nodes:
        check = check_part(node, run_id, folder_names_count=from_resolved)
        node_run = node.run_id
        if node_run is None and check.part is not None and (check.run_id_from == "recorded" or from_resolved):
            node_run = check.run_id  # the raw files it was made from are these (their fingerprint)
        if run_id is not None and node_run is not None and node_run != run_id:
            rejected.append(Rejected(node.path, "node_folder", f"of run {printable(node_run)!r}, not of {run_id!r}: "
                                     "left out of the trace"))  # fmt: skip
            continue
        kept.append(node)
        if check.part is not None:
            ready[node.node] = check.part
        elif check.rejected is not None:
            rejected.append(Rejected(node.path / PART_DIR, "node_part", f"{check.rejected}: made again from the "
                                     "node's raw files"))  # fmt: skip
    return kept, ready, rejected


def _node_parts(
    pool: ProcessPoolExecutor, nodes: list[NodeFolder], made_on_node: dict[str, NodePart], parts: Path, strict: bool
) -> Iterator[tuple[NodeFolder, NodePart]]:
    """Each node's part, in node order: the one made on the node if it still fits, else made here.

    Parts made here are two jobs per node, run by ``pool``'s WORKERS processes.
    Results are taken in node order, so with --strict the first bad line
    raised is the one a sequential parse would meet first.
    """
    missing = [node for node in nodes if node.node not in made_on_node]
    folders = {}
    for index, node in enumerate(missing):
        folders[node.node] = parts / f"{index:05d}"
        folders[node.node].mkdir(parents=True)
    # Every node's processes job first: they are the long ones, so the short host jobs fill
    # the gaps at the end instead of a long job starting last (longest first).
    processes = {node.node: pool.submit(_in_worker, parse_node_processes, node, folders[node.node], strict)
                 for node in missing}  # fmt: skip
    host = {node.node: pool.submit(_in_worker, parse_node_host, node, folders[node.node], strict)
            for node in missing}  # fmt: skip
    try:
        for node in nodes:
            ready = made_on_node.get(node.node)
            if ready is None:
                ready = NodePart(folders[node.node], processes[node.node].result(), host[node.node].result(),
                                 made_here=True)  # fmt: skip
            yield node, ready
    finally:
        for job in [*processes.values(), *host.values()]:
            job.cancel()


def _in_worker(job, *args):
    """Run one node's job in a worker process, then hand Arrow's freed memory back to the system:
    a worker runs several nodes' jobs, and what one job's arrays left fragmented would otherwise
    raise the next one's peak (memory would grow with the number of nodes)."""
    pa.set_memory_pool(_bulk_memory_pool())
    try:
        return job(*args)
    finally:
        pa.default_memory_pool().release_unused()


def _bulk_memory_pool() -> pa.MemoryPool:
    """jemalloc where this pyarrow has it: on a node's bulk, mimalloc (Arrow's default on Linux)
    spends as long again in the kernel on fresh pages (bench/pipeline.py; the worker is ours,
    so the process-wide choice harms no one)."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool()
