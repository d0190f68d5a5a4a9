"""Whose process is it: ``proc_metrics + invocations + nodes -> samples on the wrong node``.

input:  the trace's process samples (cctf/proc_metrics/: node, pid,
        create_time_ms, task_id), its invocations and node records (nodes.json)
output: per node, how many of its process samples belong to a task of
        ANOTHER node on the same machine (must be 0)

Several inventory nodes may share one machine (the local inventory, loopback
SSH nodes); their collectors see the same processes under the same (pid,
create time). A task's processes belong to the node that ran it: the
invocation's own process, and every process that node's trace attributes to
the task. Nodes share processes only when they share a kernel (boot_id) and
a PID namespace; timestamps in the trace are on the controller's clock, so
each node's own clock shift is taken off again before keys are compared.
Parse reports the figure in the audit; ``verify opendc --against`` fails a
trace where it is not 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace import cctf

PROC_COLUMNS = ("node", "pid", "create_time_ms", "task_id")


def machine_key(node: dict[str, Any]) -> str:
    """Nodes with the same key see the same processes; a node that recorded no identity is alone."""
    boot_id, namespace = node.get("boot_id"), node.get("pid_namespace")
    if boot_id and namespace:
        return f"{boot_id}/{namespace}"
    return f"node:{node['node']}"


def clock_shift_ms(node: dict[str, Any]) -> int:
    """What parse added to the node's timestamps (tracekit.trace.rawrun rounds the offset the same way)."""
    offset = node.get("clock_offset_ms")
    return round(offset) if offset is not None else 0


def _keys(table: pa.Table, nodes: dict[str, dict[str, Any]]) -> pa.Table:
    """(machine, pid, create time on the node's own clock) of each row, beside its node."""
    node_column = table.column("node")
    names = sorted(nodes)
    index = pc.index_in(node_column, value_set=pa.array(names, pa.string()))
    machine = pc.take(pa.array([machine_key(nodes[n]) for n in names], pa.string()), index)
    shift = pc.take(pa.array([clock_shift_ms(nodes[n]) for n in names], pa.int64()), index)
    return pa.table(
        {
            "machine": machine,
            "pid": pc.cast(table.column("pid"), pa.int64()),
            "ctime": pc.subtract(pc.cast(table.column("create_time_ms"), pa.int64()), shift),
            "node": node_column,
        }
    )


def samples_of_other_nodes(
    cctf_dir: Path, invocations: list[dict[str, Any]], nodes: list[dict[str, Any]]
) -> dict[str, int]:
    """Per node: how many of its samples (cctf/proc_metrics/) belong to another node's task on the same machine.

    Only the samples of nodes that share a machine are read.
    """
    by_name = {n["node"]: n for n in nodes}
    counts = {name: 0 for name in sorted(by_name)}
    per_machine: dict[str, list[str]] = {}
    for node in nodes:
        per_machine.setdefault(machine_key(node), []).append(node["node"])
    sharing = sorted(name for names in per_machine.values() if len(names) > 1 for name in names)
    if not sharing:
        return counts  # no two nodes share a machine: nothing can be on the wrong one
    proc = cctf.read_table(cctf_dir, "proc_metrics", columns=list(PROC_COLUMNS), nodes=sharing)
    launched = [r for r in invocations if r.get("pid") is not None and r["node"] in by_name]
    owned = pa.concat_tables([
        _keys(pa.table({"node": pa.array([r["node"] for r in launched], pa.string()),
                        "pid": pa.array([r["pid"] for r in launched], pa.int64()),
                        "create_time_ms": pa.array([r["create_time_ms"] for r in launched], pa.int64())}), by_name),
        _keys(proc.filter(pc.is_valid(proc.column("task_id"))), by_name),
    ]).group_by(["machine", "pid", "ctime", "node"]).aggregate([])  # fmt: skip
    owned = owned.rename_columns(["machine", "pid", "ctime", "owner"])
    rows = _keys(proc, by_name).join(owned, ["machine", "pid", "ctime"], join_type="inner", use_threads=False)
    wrong = rows.filter(pc.not_equal(rows.column("node"), rows.column("owner")))
    for name, count in zip(*(wrong.group_by("node").aggregate([("pid", "count")]).column(c).to_pylist()
                             for c in ("node", "pid_count"))):  # fmt: skip
        counts[name] = count
    return counts
