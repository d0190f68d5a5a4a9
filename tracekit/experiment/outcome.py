"""What a finished run's folder says of its trace: the warnings that keep it from a plain success.

input:  <run folder>/cctf/audit.json (tracekit.trace.audit), nodes/*/dispatch.json,
        resolved.json's hosts, else inventory.yml (the nodes the run had)
output: one line per thing the trace lost or the run refused; none for a
        trace that holds every planned task and every node's samples to the end

A run whose every phase succeeded still ends 'warning' (tracekit-run exits 3)
when its trace is not whole: tasks the scheduler planned or ran that are not
in it, a node without samples, a collector that died mid-run, queue entries or
results nobody of the run signed, node data parse would not use as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tracekit import runfolder
from tracekit.trace import cctf

MAX_NAMED = 3  # a warning names this many of what it is about


def outcome_warnings(run_dir: Path) -> list[str]:
    """The warnings of a run whose phases all succeeded (its cctf/ written by the parse phase)."""
    audit = cctf.read_audit(run_dir / cctf.CCTF)
    if audit is None:
        return [f"no readable {cctf.CCTF}/{cctf.AUDIT}: the trace cannot be checked"]
    warnings: list[str] = []
    nodes_seen = set(audit.get("per_node") or {})
    missing_nodes = [n for n in _inventory_hosts(run_dir) if n not in nodes_seen]
    if missing_nodes:
        warnings.append(f"no samples from node(s) {_names(missing_nodes)}: their collectors wrote nothing parse could use")
    if audit.get("collectors_died"):
        warnings.append(f"the collector of {_names(audit['collectors_died'])} died during the run (no stop record): "
                        "its samples end at its last flush")  # fmt: skip
    missing = audit.get("tasks_missing_from_trace") or []
    if missing:
        warnings.append(f"{len(missing)} task(s) the scheduler ran are not in the trace: {_names(missing)}")
    for summary in _dispatch_summaries(run_dir):
        planned, traced = summary.get("tasks") or 0, audit.get("tasks_in_trace")
        if traced is not None and traced < planned:
            warnings.append(f"the trace holds {traced} of the {planned} tasks the dispatcher planned")
        if summary.get("rejected_records"):
            warnings.append(f"{summary['rejected_records']} starts or results entries not written by this run's "
                            "workers were ignored (someone else wrote to the run's Redis)")  # fmt: skip
        if summary.get("rejected_entries"):
            warnings.append(f"{summary['rejected_entries']} queue entries not signed by this run's dispatcher (or "
                            "copies of its entries) were deleted unrun by the dispatcher")  # fmt: skip
    rejected = {node: n for node, n in (audit.get("queue_entries_rejected") or {}).items() if n}
    if rejected:
        counts = ", ".join(f"{node} {n}" for node, n in sorted(rejected.items()))
        warnings.append(f"queue entries not signed by this run's dispatcher were deleted unrun ({counts}): someone "
                        "else wrote to the run's Redis; see nodes/<node>/rejected.jsonl")  # fmt: skip
    if audit.get("rejected"):
        warnings.append(f"parse did not use {audit['rejected']} item(s) of node data as they were (another run's "
                        f"files, damaged parts, clock offsets past belief, ...): see {cctf.CCTF}/audit.md")  # fmt: skip
    return warnings


def _names(items: list[str]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def _dispatch_summaries(run_dir: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((run_dir / "nodes").glob(f"*/{runfolder.DISPATCH_SUMMARY}")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict):
            found.append(summary)
    return found


def _inventory_hosts(run_dir: Path) -> list[str]:
    """The run's hosts, each of which collects: those resolved.json names (the controller and the first
    workers.count workers), else the controller and workers of its inventory copy (inventory.yml)."""
    try:
        hosts = json.loads((run_dir / "resolved.json").read_text()).get("hosts")
    except (OSError, ValueError, AttributeError):
        hosts = None
    if isinstance(hosts, list) and all(isinstance(h, str) for h in hosts):
        return hosts
    try:
        document = yaml.safe_load((run_dir / "inventory.yml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    children = (document.get("all") or {}).get("children") or {}
    hosts: list[str] = []
    for group in ("controller", "workers"):
        hosts += list(((children.get(group) or {}).get("hosts") or {}))
    return hosts
