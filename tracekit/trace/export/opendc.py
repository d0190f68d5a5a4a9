"""``tracekit export opendc``: cctf/ -> an OpenDC workload (the format ``opendc`` of tracekit.trace.export).

input:  RUN_DIR/cctf/ invocations.jsonl, task_slices/ (tracekit.trace.slices), nodes.json
output: OUT_DIR/ tasks.parquet, fragments.parquet (current OpenDC `workload`
        format, schemas in tracekit.trace.records), experiment.json (topology
        from the measured nodes), task_ids.jsonl (OpenDC id -> task_id,
        trace_id, node, pid), export.json (what was excluded and why)

One task per successful invocation (failed ones are excluded and counted
unless asked for). Its fragments are its slices (tracekit.trace.slices:
they cover [ts_start, ts_end] exactly and hold its measured CPU time):
cpu_usage = CPU-ms in the slice / slice ms x the node's measured core MHz.
The topology claims the cores the nodes had: a node given CPUs of its own
(nodes sharing a machine) is a host of that many cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.errors import TracekitError, UsageError
from tracekit.jsonl import dumps
from tracekit.trace import slices
from tracekit.trace.export import SUMMARY, Checked, ExportResult, prepare_out_dir, read_exported
from tracekit.trace.slices import node_cores
from tracekit.trace.records import OPENDC_FRAGMENTS, OPENDC_TASKS

# The OpenDC this export is written for and checked against (its workload format, its experiment file):
# atlarge-research/opendc at 3.0-SNAPSHOT (commit 691036d, 2026-07-20; the last release: v2.4u).
OPENDC_VERSION = "3.0-SNAPSHOT (691036d)"
TASKS_FILE, FRAGMENTS_FILE = "tasks.parquet", "fragments.parquet"
TABLES = {TASKS_FILE: OPENDC_TASKS, FRAGMENTS_FILE: OPENDC_FRAGMENTS}  # OpenDC's workload format, declared once


# -- the format, as tracekit.trace.export finds it ------------------------------------------------------

NAME = "opendc"
TITLE = "OpenDC"  # in tracekit-run's summary
MAIN_FILES = ("tasks.parquet", "fragments.parquet", "experiment.json")
HELP = "cctf/ -> OpenDC workload (tasks.parquet, fragments.parquet, experiment.json)"
DESCRIPTION = ("Write the OpenDC workload of a parsed run: one task per successful invocation, fragments "
               "covering each task exactly (CPU-seconds equal the measured CPU time), experiment.json with the "
               "measured nodes as hosts, task_ids.jsonl mapping OpenDC ids to task ids.")  # fmt: skip


def add_arguments(parser: Any) -> None:
    parser.add_argument("--merge-tolerance", type=float, metavar="PCT", dest="merge_tolerance_pct",
                        help="merge adjacent slices whose usage differs by less")  # fmt: skip


def check_options(values: dict[str, Any]) -> None:
    """Its options as an experiment gives them, checked before the run (tracekit.trace.export.option_values)."""
    if "merge_tolerance_pct" in values:
        _check_merge_tolerance(values["merge_tolerance_pct"])


def _check_merge_tolerance(merge_tolerance_pct: float | None) -> None:
    if merge_tolerance_pct is not None and not (0 <= merge_tolerance_pct < 100):
        raise UsageError(f"--merge-tolerance {merge_tolerance_pct:g} must be a percentage from 0 to 100")


def export(run_dir: Path, out_dir: Path, *, include_failed: bool = False, force: bool = False,
           merge_tolerance_pct: float | None = None) -> ExportResult:  # fmt: skip
    return export_opendc(run_dir, out_dir, include_failed, merge_tolerance_pct, force)


def add_verify_arguments(parser: Any) -> None:
    parser.add_argument("--topology", type=Path, help="experiment.json (default: OUT_DIR/experiment.json)")


def verify(out_dir: Path, against: Path | None = None, topology: Path | None = None) -> Checked:
    """Check tasks.parquet and fragments.parquet as OpenDC's reader would, and more: column presence and exact
    Parquet types, non-nullable required columns, value rules, submission order, workflow links, orphans, fit
    against the topology, and with --against conservation of CPU time and duration per task."""
    from tracekit.trace.verify import verify_opendc

    result = verify_opendc(out_dir, topology, against)
    checked = f", conservation checked for {result.checked_conservation} tasks" if against else ""
    return Checked(result.violations, f"{out_dir}: OK: {result.tasks} tasks, {result.fragments} fragments{checked}")


# -- the export --------------------------------------------------------------------------------------------


def export_opendc(
    run_dir: str | Path,
    out_dir: str | Path,
    include_failed: bool = False,
    merge_tolerance_pct: float | None = None,
    force: bool = False,
) -> ExportResult:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_merge_tolerance(merge_tolerance_pct)
    # ids 0..N-1 by submission time
    cctf_dir, invocations, chosen, nodes = read_exported(run_dir, include_failed, "; an empty workload crashes OpenDC")
    for node in {r["node"] for r in chosen}:
        if not nodes[node].get("cpu_mhz"):
            raise TracekitError(
                f"node {node} has no measured CPU speed in cctf/nodes.json; restart its collector with "
                "--cpu-mhz MHZ (the nominal core speed) and parse again"
            )
    prepare_out_dir(out_dir, force, run_dir, NAME)

    fragments, per_task = build_fragments(chosen, nodes, cctf_dir)
    if merge_tolerance_pct is not None:
        fragments = merge_similar_slices(fragments, merge_tolerance_pct)

    tasks = _tasks_table(chosen, nodes, per_task, *slices.dependencies(chosen))
    pq.write_table(tasks, out_dir / "tasks.parquet")
    pq.write_table(fragments, out_dir / "fragments.parquet")
    with open(out_dir / "task_ids.jsonl", "w") as out:
        for opendc_id, r in enumerate(chosen):
            mapping = {"id": opendc_id, "task_id": r["task_id"], "trace_id": r["trace_id"], "node": r["node"]}
            mapping.update(pid=r["pid"], attempt=r["attempt"], ok=r["ok"])
            out.write(dumps(mapping) + "\n")
    topology_nodes = [nodes[n] for n in sorted({r["node"] for r in chosen})]
    experiment = experiment_json(run_dir.name, topology_nodes)
    (out_dir / "experiment.json").write_text(json.dumps(experiment, indent=2) + "\n")
    summary = {
        "format": NAME,
        "opendc_version": OPENDC_VERSION,
        "run_dir": str(run_dir.resolve()),
        "tasks": len(chosen),
        "fragments": fragments.num_rows,
        **slices.left_out(invocations, include_failed),
        "include_failed": include_failed,
        "merge_tolerance_pct": merge_tolerance_pct,
        "cpu_ms_total": round(sum(t["cpu_ms"] for t in per_task), 3),
        "tasks_without_samples": sum(1 for t in per_task if t["samples"] == 0),
        "zero_duration_tasks_stretched_to_1_ms": sum(1 for t in per_task if t["stretched"]),
        # CPU past cores x runtime (times cut to the ms): a fragment of theirs holds more than cpu_capacity.
        "tasks_above_their_cores": sum(1 for r, t in zip(chosen, per_task)
                                       if slices.over_cores(r, t, nodes[r["node"]])),  # fmt: skip
        # Nodes that shared CPUs of one machine, exported as one host each group.
        "nodes_merged_into_one_host": [h["nodes"] for h in measured_hosts(topology_nodes) if len(h["nodes"]) > 1],
    }
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    line = (f"{out_dir}: {summary['tasks']} tasks, {summary['fragments']} fragments, "
            f"{summary['cpu_ms_total'] / 1000:.3f} CPU-seconds; {slices.said_left_out(summary)}")  # fmt: skip
    return ExportResult(out_dir, summary, line)


def build_fragments(
    tasks: list[dict[str, Any]], nodes: dict[str, dict], cctf_dir: Path
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Fragments of every task (OPENDC_FRAGMENTS: its slices, tracekit.trace.slices, each one's CPU as MHz of
    the node's cores) and per-task facts."""
    cut = slices.cut(tasks, cctf_dir)
    mhz = pa.array([float(nodes[t["node"]]["cpu_mhz"]) for t in tasks], pa.float64())
    rows = cut.slices
    cores_used = pc.divide(rows.column("cpu_ms"), pc.cast(rows.column("duration"), pa.float64()))
    fragments = pa.table(
        {"id": rows.column("id"), "duration": rows.column("duration"),
         "cpu_usage": pc.multiply(cores_used, pc.take(mhz, rows.column("id")))},
        schema=OPENDC_FRAGMENTS,
    )  # fmt: skip
    return fragments, cut.facts


def _tasks_table(tasks: list[dict], nodes: dict[str, dict], per_task: list[dict], parents: list[list[int]],
                 children: list[list[int]]) -> pa.Table:  # fmt: skip
    rows: dict[str, list] = {name: [] for name in OPENDC_TASKS.names}
    for opendc_id, (task, facts) in enumerate(zip(tasks, per_task)):
        node = nodes[task["node"]]
        cpu_count = slices.cores_needed(task, facts, node)
        rows["id"].append(opendc_id)
        rows["submission_time"].append(task["ts_enqueue"])
        rows["duration"].append(slices.runtime_ms(task))
        rows["cpu_count"].append(cpu_count)
        rows["cpu_capacity"].append(cpu_count * float(node["cpu_mhz"]))
        rows["mem_capacity"].append(slices.peak_memory_kb(task, facts, node))
        rows["name"].append(f"{task['node']}/{task['task_id']}#{task['attempt']}")
        rows["parents"].append(parents[opendc_id])
        rows["children"].append(children[opendc_id])
    return pa.table(rows, schema=OPENDC_TASKS)


def merge_similar_slices(fragments: pa.Table, tolerance_pct: float) -> pa.Table:
    """Merge adjacent slices of a task whose usage differs by less than the tolerance.

    The merged slice keeps the CPU-seconds of its parts (usage is the
    duration-weighted mean), so conservation holds.
    """
    merged: dict[str, list] = {"id": [], "duration": [], "cpu_usage": []}
    for task_id, duration, usage in zip(*(fragments.column(n).to_pylist() for n in ("id", "duration", "cpu_usage"))):
        if merged["id"] and merged["id"][-1] == task_id:
            last = merged["cpu_usage"][-1]
            reference = max(abs(last), abs(usage), 1e-9)
            if abs(usage - last) / reference * 100 < tolerance_pct:
                total_duration = merged["duration"][-1] + duration
                merged["cpu_usage"][-1] = (last * merged["duration"][-1] + usage * duration) / total_duration
                merged["duration"][-1] = total_duration
                continue
        merged["id"].append(task_id)
        merged["duration"].append(duration)
        merged["cpu_usage"].append(usage)
    return pa.table(merged, schema=OPENDC_FRAGMENTS)


def measured_hosts(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hosts the measurement had: one per node, but nodes on one machine whose CPUs overlap are one.

    Nodes sharing a machine (the same boot_id) were given CPUs of their own
    or not; where their CPU sets overlap, they competed for the same cores,
    so the honest host is one with their union, not one each.
    """
    hosts: list[dict[str, Any]] = []
    for node in nodes:
        host = {"nodes": [node["node"]], "boot_id": node.get("boot_id"), "cpus": set(node.get("cpus") or ()),
                "cores": node_cores(node), "cpu_mhz": float(node["cpu_mhz"]), "mem_kb": int(node["mem_kb"])}  # fmt: skip
        for other in [h for h in hosts if h["boot_id"] and h["boot_id"] == host["boot_id"] and h["cpus"] & host["cpus"]]:
            hosts.remove(other)
            host["nodes"] = other["nodes"] + host["nodes"]
            host["cpus"] |= other["cpus"]
            host["cores"] = len(host["cpus"])
        hosts.append(host)
    return hosts


def experiment_json(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """An experiment for OpenDC's ``opendc run`` (its SDK format, OPENDC_VERSION): the measured hosts
    (``measured_hosts``), grouped when identical, with their units written out (a bare number would be read
    as MHz and MiB, with a warning); the workload is the folder the experiment is in."""
    groups: dict[tuple, list[str]] = {}
    for host in measured_hosts(nodes):
        key = (host["cores"], host["cpu_mhz"], host["mem_kb"] // 1024)
        groups.setdefault(key, []).append("&".join(host["nodes"]))
    hosts = [
        {
            "name": "+".join(members),
            "count": len(members),
            "cpu": {"coreCount": cores, "coreSpeed": f"{mhz:.10g} MHz"},  # every digit measured (":g" keeps 6)
            "memory": {"size": f"{mem_mib} MiB"},
        }
        for (cores, mhz, mem_mib), members in sorted(groups.items(), key=lambda item: item[1])
    ]
    return {
        "name": name,
        "topologies": [{"clusters": [{"name": "C01", "hosts": hosts}]}],
        "workloads": [{"type": "trace", "source": {"type": "named", "name": "."}}],
        "allocationPolicies": [{"type": "prefab", "prefabName": "Mem"}],
    }
