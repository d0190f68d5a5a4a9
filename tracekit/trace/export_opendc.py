"""``tracekit export opendc``: cctf/ -> an OpenDC workload.

input:  RUN_DIR/cctf/ invocations.jsonl, proc_metrics.parquet, nodes.json
output: OUT_DIR/ tasks.parquet, fragments.parquet (current OpenDC `workload`
        format, schemas in tracekit.trace.records), experiment.json (topology
        from the measured nodes), task_ids.jsonl (OpenDC id -> task_id,
        trace_id, node, pid), export.json (what was excluded and why)

One task per successful invocation (failed ones are excluded and counted
unless asked for). Its fragments cover [ts_start, ts_end] exactly: one slice
per sampling interval that ended inside the task, then a tail slice to
ts_end whose CPU is the exact rusage total minus what the samples counted,
so the CPU-seconds of a task's fragments equal its measured CPU time.
cpu_usage = CPU-ms in the slice / slice ms x the node's measured core MHz.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.errors import RunFolderError, TracekitError, UsageError
from tracekit.jsonl import dumps, read_jsonl
from tracekit.trace.records import OPENDC_FRAGMENTS, OPENDC_TASKS


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    summary: dict[str, Any]


def _load_cctf(run_dir: Path) -> tuple[list[dict], dict[str, dict], Path]:
    cctf = run_dir / "cctf"
    if not (cctf / "invocations.jsonl").exists():
        raise RunFolderError(f"{run_dir} has no cctf/ trace; run 'tracekit parse {run_dir}' first")
    invocations = list(read_jsonl(cctf / "invocations.jsonl"))
    nodes = {n["node"]: n for n in json.loads((cctf / "nodes.json").read_text())}
    return invocations, nodes, cctf / "proc_metrics.parquet"


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
    invocations, nodes, samples_path = _load_cctf(run_dir)
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
    fragments, per_task = build_fragments(chosen, nodes, samples_path)
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
    experiment = experiment_json(run_dir.name, [nodes[n] for n in sorted({r["node"] for r in chosen})])
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
    }
    (out_dir / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return ExportResult(out_dir, summary)


def build_fragments(
    tasks: list[dict[str, Any]], nodes: dict[str, dict], samples_path: Path
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Fragments of every task (OPENDC_FRAGMENTS) and per-task facts."""
    count = len(tasks)
    task_table = pa.table(
        {
            "node": pa.array([t["node"] for t in tasks], pa.string()),
            "task_id": pa.array([t["task_id"] for t in tasks], pa.string()),
            "id": pa.array(range(count), pa.int32()),
            "ts_start": pa.array([t["ts_start"] for t in tasks], pa.int64()),
            "ts_end": pa.array([t["ts_end"] for t in tasks], pa.int64()),
        }
    )
    samples = pq.read_table(
        samples_path, columns=["node", "task_id", "ts_ms", "cpu_user_ms", "cpu_system_ms", "rss_kb"]
    ).filter(pc.is_valid(pc.field("task_id")))
    # All processes of a task are sampled in the same tick: one row per tick.
    ticks = (
        samples.append_column("cpu_ms", pc.add(samples.column("cpu_user_ms"), samples.column("cpu_system_ms")))
        .group_by(["node", "task_id", "ts_ms"], use_threads=False)
        .aggregate([("cpu_ms", "sum"), ("rss_kb", "sum")])
        .join(task_table, ["node", "task_id"], join_type="inner", use_threads=False)
    )
    inside = pc.and_(pc.greater(ticks.column("ts_ms"), ticks.column("ts_start")),
                     pc.less_equal(ticks.column("ts_ms"), ticks.column("ts_end")))  # fmt: skip
    ticks = ticks.filter(inside).sort_by([("id", "ascending"), ("ts_ms", "ascending")]).combine_chunks()

    ids = ticks.column("id").chunk(0) if ticks.num_rows else pa.array([], pa.int32())
    ts = ticks.column("ts_ms").chunk(0) if ticks.num_rows else pa.array([], pa.int64())
    if ticks.num_rows:
        previous_ts = pa.concat_arrays([pa.nulls(1, pa.int64()), ts.slice(0, len(ts) - 1)])
        previous_id = pa.concat_arrays([pa.nulls(1, pa.int32()), ids.slice(0, len(ids) - 1)])
        first = pc.fill_null(pc.not_equal(ids, previous_id), True)
        slice_start = pc.if_else(first, ticks.column("ts_start").chunk(0), previous_ts)
        durations = pc.subtract(ts, slice_start)
    else:
        durations = pa.array([], pa.int64())
    cpu_ms = ticks.column("cpu_ms_sum").to_pylist() if ticks.num_rows else []

    # Per task: sampled CPU, last tick, peak RSS (Python over tasks, not samples).
    per_task = [
        {"samples": 0, "sampled_cpu_ms": 0, "last_tick": t["ts_start"], "peak_rss_kb": 0, "last_row": None,
         "peak_cores": 0.0}
        for t in tasks
    ]
    id_list, ts_list = ids.to_pylist(), ts.to_pylist()
    rss_list = ticks.column("rss_kb_sum").to_pylist() if ticks.num_rows else []
    for row, (task_index, tick, cpu, rss) in enumerate(zip(id_list, ts_list, cpu_ms, rss_list)):
        facts = per_task[task_index]
        facts["samples"] += 1
        facts["sampled_cpu_ms"] += cpu
        facts["last_tick"] = tick
        facts["last_row"] = row
        facts["peak_rss_kb"] = max(facts["peak_rss_kb"], rss)

    # Close the books of every task with its exact CPU total (rusage).
    scale = [1.0] * count
    tail_ids, tail_durations, tail_cpu = [], [], []
    for task_index, (task, facts) in enumerate(zip(tasks, per_task)):
        rusage = None
        if task.get("cpu_user_ms") is not None:
            rusage = task["cpu_user_ms"] + (task.get("cpu_system_ms") or 0)
        total = rusage if rusage is not None else facts["sampled_cpu_ms"]
        if facts["sampled_cpu_ms"] > total > 0:
            scale[task_index] = total / facts["sampled_cpu_ms"]  # samples tick in 10 ms steps
        elif facts["sampled_cpu_ms"] > total:
            scale[task_index] = 0.0
        remainder = max(0.0, total - facts["sampled_cpu_ms"])
        tail = task["ts_end"] - facts["last_tick"]
        facts["cpu_ms"] = total
        facts["stretched"] = task["ts_end"] <= task["ts_start"]
        if facts["stretched"]:
            tail = 1  # OpenDC needs positive durations; a sub-millisecond task lasts 1 ms
        if tail > 0:
            tail_ids.append(task_index)
            tail_durations.append(tail)
            tail_cpu.append(remainder)
        elif remainder > 0 and facts["last_row"] is not None:
            cpu_ms[facts["last_row"]] += remainder  # the last tick was exactly at ts_end
    scaled_cpu = [cpu * scale[task_index] for cpu, task_index in zip(cpu_ms, id_list)]

    mhz = [float(nodes[t["node"]]["cpu_mhz"]) for t in tasks]
    all_ids = id_list + tail_ids
    all_durations = durations.to_pylist() + tail_durations
    all_cpu = scaled_cpu + tail_cpu
    order_key = ts_list + [tasks[i]["ts_end"] + 1 for i in tail_ids]  # the tail comes last
    table = pa.table(
        {"id": pa.array(all_ids, pa.int32()), "duration": pa.array(all_durations, pa.int64()),
         "cpu_ms": pa.array(all_cpu, pa.float64()), "order": pa.array(order_key, pa.int64()),
         "mhz": pa.array([mhz[i] for i in all_ids], pa.float64())}  # fmt: skip
    ).sort_by([("id", "ascending"), ("order", "ascending")])
    usage = pc.multiply(pc.divide(table.column("cpu_ms"), pc.cast(table.column("duration"), pa.float64())),
                        table.column("mhz"))  # fmt: skip
    fragments = pa.table(
        {"id": table.column("id"), "duration": table.column("duration"), "cpu_usage": usage},
        schema=OPENDC_FRAGMENTS,
    )
    peaks = (
        pa.table({"id": fragments.column("id"), "cores": pc.divide(usage, table.column("mhz"))})
        .group_by("id", use_threads=False)
        .aggregate([("cores", "max")])
    )
    for task_index, cores in zip(peaks.column("id").to_pylist(), peaks.column("cores_max").to_pylist()):
        per_task[task_index]["peak_cores"] = cores
    return fragments, per_task


def _tasks_table(tasks: list[dict], nodes: dict[str, dict], per_task: list[dict]) -> pa.Table:
    rows: dict[str, list] = {name: [] for name in OPENDC_TASKS.names}
    for opendc_id, (task, facts) in enumerate(zip(tasks, per_task)):
        node = nodes[task["node"]]
        cores = int(node.get("cores_logical") or 1)
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


def experiment_json(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """An `opendc run` experiment: the measured nodes as hosts, grouped when identical."""
    groups: dict[tuple, list[str]] = {}
    for node in nodes:
        key = (int(node["cores_logical"]), float(node["cpu_mhz"]), int(node["mem_kb"]) // 1024)
        groups.setdefault(key, []).append(node["node"])
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
