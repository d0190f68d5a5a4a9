"""``tracekit export opendc``: cctf/ -> an OpenDC workload.

input:  RUN_DIR/cctf/ invocations.jsonl, proc_metrics/, task_metrics/, nodes.json
output: OUT_DIR/ tasks.parquet, fragments.parquet (current OpenDC `workload`
        format, schemas in tracekit.trace.records), experiment.json (topology
        from the measured nodes), task_ids.jsonl (OpenDC id -> task_id,
        trace_id, node, pid), export.json (what was excluded and why)

One task per successful invocation (failed ones are excluded and counted
unless asked for). Its fragments cover [ts_start, ts_end] exactly: one slice
per sampling interval that ended inside the task (its cgroup's samples where
the task had a cgroup of its own: every process it started; else its
processes' samples), then a tail slice to ts_end whose CPU is the exact
total (its cgroup's, else its rusage) minus what the samples counted, so the
CPU-seconds of a task's fragments equal its measured CPU time.
cpu_usage = CPU-ms in the slice / slice ms x the node's measured core MHz.
The topology claims the cores the nodes had: a node given CPUs of its own
(nodes sharing a machine) is a host of that many cores.
"""

from __future__ import annotations

import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.errors import RunFolderError, TracekitError, UsageError
from tracekit.jsonl import dumps, read_jsonl
from tracekit.trace import cctf
from tracekit.trace.arrowjson import row_numbers, shifted_down
from tracekit.trace.nodeparse import cgroup_counted, exact_cpu_ms
from tracekit.trace.records import OPENDC_FRAGMENTS, OPENDC_TASKS


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    summary: dict[str, Any]


def _load_cctf(run_dir: Path) -> tuple[list[dict], dict[str, dict], Path]:
    cctf_dir = run_dir / cctf.CCTF
    if not (cctf_dir / "invocations.jsonl").exists():
        raise RunFolderError(f"{run_dir} has no cctf/ trace; run 'tracekit parse {run_dir}' first")
    invocations = list(read_jsonl(cctf_dir / "invocations.jsonl"))
    nodes = {n["node"]: n for n in json.loads((cctf_dir / "nodes.json").read_text())}
    return invocations, nodes, cctf_dir


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise UsageError(f"output folder {out_dir} exists and is not empty; pass --force to replace it")
        shutil.rmtree(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot write output folder {out_dir}: {exc.strerror}") from None


def export_opendc(
    run_dir: str | Path,
    out_dir: str | Path,
    include_failed: bool = False,
    merge_tolerance_pct: float | None = None,
    force: bool = False,
) -> ExportResult:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if merge_tolerance_pct is not None and not (0 <= merge_tolerance_pct < 100):
        raise UsageError(f"--merge-tolerance {merge_tolerance_pct} must be a percentage from 0 to 100")
    invocations, nodes, cctf_dir = _load_cctf(run_dir)
    chosen = [r for r in invocations if include_failed or r["ok"]]
    excluded_failed = len(invocations) - len(chosen)
    if not chosen:
        raise TracekitError(
            f"{run_dir}: no {'invocations' if include_failed else 'successful invocations'} to export "
            f"({len(invocations)} in the trace); an empty workload crashes OpenDC"
        )
    for node in {r["node"] for r in chosen}:
        facts = nodes.get(node)
        if facts is None or not facts.get("cpu_mhz"):
            raise TracekitError(
                f"node {node} has no measured CPU speed in cctf/nodes.json; restart its collector with "
                "--cpu-mhz MHZ (the nominal core speed) and parse again"
            )
    _prepare_out_dir(out_dir, force)

    # OpenDC ids 0..N-1, deterministic: by submission time, node, pid, task.
    chosen.sort(key=lambda r: (r["ts_enqueue"], r["node"], r["pid"] or -1, r["task_id"], r["attempt"]))
    fragments, per_task = build_fragments(chosen, nodes, cctf_dir)
    if merge_tolerance_pct is not None:
        fragments = merge_similar_slices(fragments, merge_tolerance_pct)

    tasks = _tasks_table(chosen, nodes, per_task)
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
        "run_dir": str(run_dir),
        "tasks": len(chosen),
        "fragments": fragments.num_rows,
        "excluded_failed": excluded_failed,
        "include_failed": include_failed,
        "merge_tolerance_pct": merge_tolerance_pct,
        "cpu_ms_total": round(sum(t["cpu_ms"] for t in per_task), 3),
        "tasks_without_samples": sum(1 for t in per_task if t["samples"] == 0),
        "zero_duration_tasks_stretched_to_1_ms": sum(1 for t in per_task if t["stretched"]),
        # Nodes that shared CPUs of one machine, exported as one host each group.
        "nodes_merged_into_one_host": [h["nodes"] for h in measured_hosts(topology_nodes) if len(h["nodes"]) > 1],
    }
    (out_dir / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return ExportResult(out_dir, summary)


_TICK_COLUMNS = {"id": pa.int32(), "ts_ms": pa.int64(), "duration": pa.int64(), "cpu_ms": pa.float64(),
                 "rss_kb": pa.int64()}  # fmt: skip


def _node_ticks(node: str, tasks: list[dict[str, Any]], indices: list[int], cctf_dir: Path) -> pa.Table:
    """One node's sampling ticks inside its tasks: id, ts_ms, slice duration, cpu_ms, rss_kb.

    A task in a cgroup of its own that was sampled has its ticks from its cgroup's samples (every
    process it started, task_metrics); the others from their processes' samples (proc_metrics).
    """
    in_cgroups, cgroup_ticks = _cgroup_ticks(node, tasks, indices, cctf_dir)
    return pa.concat_tables([cgroup_ticks, _process_ticks(node, tasks, [i for i in indices if i not in in_cgroups],
                                                          cctf_dir)])  # fmt: skip


def _cgroup_ticks(node: str, tasks: list[dict[str, Any]], indices: list[int], cctf_dir: Path) -> tuple[set[int], pa.Table]:
    """The tasks of ``indices`` with task cgroup samples, and their ticks (task_metrics: already one per
    task and interval, the first from the task's start)."""
    if not (cctf_dir / "task_metrics").is_dir():  # a trace parsed before task cgroups
        return set(), pa.table({name: pa.array([], kind) for name, kind in _TICK_COLUMNS.items()})
    rows = cctf.read_table(cctf_dir, "task_metrics", columns=["task_id", "attempt", "ts_ms", "dt_ms", "cpu_ms",
                                                              "memory_bytes"], nodes=[node])  # fmt: skip
    # A task whose move into its cgroup failed keeps its processes' samples (its cgroup counted little).
    index_of = {(tasks[i]["task_id"], tasks[i]["attempt"]): i for i in indices if cgroup_counted(tasks[i])}
    ids = [index_of.get(key, -1) for key in zip(rows.column("task_id").to_pylist(), rows.column("attempt").to_pylist())]
    ticks = pa.table({
        "id": pa.array(ids, pa.int32()), "ts_ms": rows.column("ts_ms"), "duration": rows.column("dt_ms"),
        "cpu_ms": rows.column("cpu_ms"),
        "rss_kb": pc.cast(pc.divide(pc.fill_null(rows.column("memory_bytes"), 0), 1024), pa.int64()),
    }).filter(pc.greater_equal(pc.field("id"), 0)).sort_by([("id", "ascending"), ("ts_ms", "ascending")])  # fmt: skip
    return set(ticks.column("id").to_pylist()), ticks.combine_chunks()


def _process_ticks(node: str, tasks: list[dict[str, Any]], indices: list[int], cctf_dir: Path) -> pa.Table:
    """The ticks of the tasks of ``indices`` from their processes' samples.

    All processes of a task are sampled in the same tick, so a tick's CPU is
    the sum over them. Only this node's samples are read (memory follows the
    largest node, not the run).
    """
    samples = cctf.read_table(
        cctf_dir, "proc_metrics", columns=["task_id", "ts_ms", "cpu_user_ms", "cpu_system_ms", "rss_kb"],
        nodes=[node], where=pc.is_valid(pc.field("task_id")),
    )
    # Task ids as small integers (their index among this node's distinct ids): grouping
    # and joining on them costs a fraction of doing it on the strings.
    encoded = pc.dictionary_encode(samples.column("task_id").combine_chunks())
    code_of = {task_id: code for code, task_id in enumerate(encoded.dictionary.to_pylist())}
    chosen = [i for i in indices if tasks[i]["task_id"] in code_of]
    task_table = pa.table(
        {
            "code": pa.array([code_of[tasks[i]["task_id"]] for i in chosen], pa.int32()),
            "id": pa.array(chosen, pa.int32()),
            "ts_start": pa.array([tasks[i]["ts_start"] for i in chosen], pa.int64()),
            "ts_end": pa.array([tasks[i]["ts_end"] for i in chosen], pa.int64()),
        }
    )
    ticks = (
        pa.table({"code": pc.cast(encoded.indices, pa.int32()), "ts_ms": samples.column("ts_ms"),
                  "cpu_ms": pc.add(samples.column("cpu_user_ms"), samples.column("cpu_system_ms")),
                  "rss_kb": samples.column("rss_kb")})  # fmt: skip
        .group_by(["code", "ts_ms"], use_threads=False)
        .aggregate([("cpu_ms", "sum"), ("rss_kb", "sum")])
        .join(task_table, "code", join_type="inner", use_threads=False)
    )
    inside = pc.and_(pc.greater(ticks.column("ts_ms"), ticks.column("ts_start")),
                     pc.less_equal(ticks.column("ts_ms"), ticks.column("ts_end")))  # fmt: skip
    ticks = ticks.filter(inside).sort_by([("id", "ascending"), ("ts_ms", "ascending")]).combine_chunks()
    if ticks.num_rows == 0:
        return pa.table({name: pa.array([], kind) for name, kind in _TICK_COLUMNS.items()})
    ids, ts = ticks.column("id").chunk(0), ticks.column("ts_ms").chunk(0)
    previous_ts, previous_id = shifted_down(ts), shifted_down(ids)
    first = pc.fill_null(pc.not_equal(ids, previous_id), True)
    slice_start = pc.if_else(first, ticks.column("ts_start").chunk(0), previous_ts)
    return pa.table({"id": ids, "ts_ms": ts, "duration": pc.subtract(ts, slice_start),
                     "cpu_ms": pc.cast(ticks.column("cpu_ms_sum"), pa.float64()),
                     "rss_kb": ticks.column("rss_kb_sum")})  # fmt: skip


def build_fragments(
    tasks: list[dict[str, Any]], nodes: dict[str, dict], cctf_dir: Path
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Fragments of every task (OPENDC_FRAGMENTS) and per-task facts."""
    by_node: dict[str, list[int]] = {}
    for index, task in enumerate(tasks):
        by_node.setdefault(task["node"], []).append(index)
    # Nodes are independent and Arrow's kernels release the GIL: two at a time keep both cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        per_node = pool.map(lambda node: _node_ticks(node, tasks, by_node[node], cctf_dir), sorted(by_node))
        ticks = pa.concat_tables(list(per_node))
    ticks = ticks.append_column("row", row_numbers(ticks.num_rows))

    # Per task, from its ticks: how many, their CPU, the last one, peak RSS.
    per_task = [
        {"samples": 0, "sampled_cpu_ms": 0.0, "last_tick": t["ts_start"], "peak_rss_kb": 0, "last_row": None,
         "peak_cores": 0.0}  # fmt: skip
        for t in tasks
    ]
    summary = ticks.group_by("id", use_threads=False).aggregate(
        [("cpu_ms", "count"), ("cpu_ms", "sum"), ("ts_ms", "max"), ("rss_kb", "max"), ("row", "max")]
    )
    for index, count, cpu, last, rss, row in zip(*(summary.column(name).to_pylist() for name in (
            "id", "cpu_ms_count", "cpu_ms_sum", "ts_ms_max", "rss_kb_max", "row_max"))):  # fmt: skip
        per_task[index].update(samples=count, sampled_cpu_ms=cpu, last_tick=last, peak_rss_kb=rss, last_row=row)

    scale, extra_on_last_row, tails = _close_the_books(tasks, per_task)
    cpu = pc.multiply(ticks.column("cpu_ms"), pc.take(pa.array(scale, pa.float64()), ticks.column("id")))
    if extra_on_last_row:
        extra = [0.0] * ticks.num_rows
        for row, value in extra_on_last_row.items():
            extra[row] = value
        cpu = pc.add(cpu, pa.array(extra, pa.float64()))

    mhz = pa.array([float(nodes[t["node"]]["cpu_mhz"]) for t in tasks], pa.float64())
    slices = pa.concat_tables([
        pa.table({"id": ticks.column("id"), "duration": ticks.column("duration"), "cpu_ms": cpu,
                  "order": ticks.column("ts_ms")}),
        tails,
    ]).sort_by([("id", "ascending"), ("order", "ascending")])  # fmt: skip
    slice_mhz = pc.take(mhz, slices.column("id"))
    cores_used = pc.divide(slices.column("cpu_ms"), pc.cast(slices.column("duration"), pa.float64()))
    fragments = pa.table(
        {"id": slices.column("id"), "duration": slices.column("duration"), "cpu_usage": pc.multiply(cores_used, slice_mhz)},
        schema=OPENDC_FRAGMENTS,
    )
    peaks = pa.table({"id": slices.column("id"), "cores": cores_used}).group_by("id", use_threads=False).aggregate(
        [("cores", "max")]
    )
    for index, cores in zip(peaks.column("id").to_pylist(), peaks.column("cores_max").to_pylist()):
        per_task[index]["peak_cores"] = cores
    return fragments, per_task


def _close_the_books(tasks: list[dict], per_task: list[dict]) -> tuple[list[float], dict[int, float], pa.Table]:
    """Every task's exact CPU total (rusage), against what its ticks hold: a scale for ticks that
    overshoot it, the remainder on the last tick or in a tail slice up to the task's end."""
    scale = [1.0] * len(tasks)
    extra_on_last_row: dict[int, float] = {}
    tail_ids, tail_durations, tail_cpu, tail_order = [], [], [], []
    for index, (task, facts) in enumerate(zip(tasks, per_task)):
        # The exact total (its cgroup's, its rusage, a request's own CPU), else what the samples hold.
        exact = exact_cpu_ms(task)
        total = exact if exact is not None else facts["sampled_cpu_ms"]
        if facts["sampled_cpu_ms"] > total:
            # Samples count in 10 ms ticks and can overshoot the exact total a little.
            scale[index] = total / facts["sampled_cpu_ms"]
        remainder = max(0.0, total - facts["sampled_cpu_ms"])
        tail = task["ts_end"] - facts["last_tick"]
        facts["cpu_ms"] = total
        facts["stretched"] = task["ts_end"] <= task["ts_start"]
        if facts["stretched"]:
            tail = 1  # OpenDC needs positive durations; a sub-millisecond task lasts 1 ms
        if tail > 0:
            tail_ids.append(index)
            tail_durations.append(tail)
            tail_cpu.append(remainder)
            tail_order.append(task["ts_end"] + 1)  # after every tick
        elif remainder > 0 and facts["last_row"] is not None:
            extra_on_last_row[facts["last_row"]] = remainder  # the last tick was exactly at ts_end
    tails = pa.table({"id": pa.array(tail_ids, pa.int32()), "duration": pa.array(tail_durations, pa.int64()),
                      "cpu_ms": pa.array(tail_cpu, pa.float64()), "order": pa.array(tail_order, pa.int64())})  # fmt: skip
    return scale, extra_on_last_row, tails


def node_cores(node: dict[str, Any]) -> int:
    """The cores a node had: its own CPUs where it was given some (nodes sharing a machine), else the machine's."""
    return int(node.get("cores_usable") or node.get("cores_logical") or 1)


def _tasks_table(tasks: list[dict], nodes: dict[str, dict], per_task: list[dict]) -> pa.Table:
    rows: dict[str, list] = {name: [] for name in OPENDC_TASKS.names}
    for opendc_id, (task, facts) in enumerate(zip(tasks, per_task)):
        node = nodes[task["node"]]
        cores = node_cores(node)
        requested = task.get("cores_requested")
        cpu_count = int(requested) if requested else math.ceil(round(facts["peak_cores"], 6))
        cpu_count = min(max(1, cpu_count), cores)
        rows["id"].append(opendc_id)
        rows["submission_time"].append(task["ts_enqueue"])
        rows["duration"].append(max(1, task["ts_end"] - task["ts_start"]))
        rows["cpu_count"].append(cpu_count)
        rows["cpu_capacity"].append(cpu_count * float(node["cpu_mhz"]))
        rows["mem_capacity"].append(int(task.get("max_rss_kb") or facts["peak_rss_kb"] or 0))
        rows["name"].append(f"{task['node']}/{task['task_id']}#{task['attempt']}")
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
    """An `opendc run` experiment: the measured hosts (``measured_hosts``), grouped when identical."""
    groups: dict[tuple, list[str]] = {}
    for host in measured_hosts(nodes):
        key = (host["cores"], host["cpu_mhz"], host["mem_kb"] // 1024)
        groups.setdefault(key, []).append("&".join(host["nodes"]))
    hosts = [
        {
            "name": "+".join(members),
            "count": len(members),
            "cpu": {"coreCount": cores, "coreSpeed": mhz},
            "memory": {"size": mem_mib},
        }
        for (cores, mhz, mem_mib), members in sorted(groups.items(), key=lambda item: item[1])
    ]
    return {
        "name": name,
        "topologies": [{"clusters": [{"name": "C01", "hosts": hosts}]}],
        "workloads": [{"type": "trace", "source": {"type": "named", "name": "."}}],
        "allocationPolicies": [{"type": "prefab", "prefabName": "Mem"}],
    }
