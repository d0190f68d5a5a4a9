"""Each task's time cut into slices, with its CPU and memory in each: the format-neutral part of every export.

input:  a parsed trace (cctf/: task_metrics, proc_metrics; tracekit.trace.cctf) and the invocations to cut
output: ``TaskSlices``: one row per slice (``SLICES``: the task's index, its end, its duration, the CPU-ms
        and, for a sampled slice, the RSS in it), in task then time order, and per task its facts
        (samples, the exact CPU total, peak RSS, peak cores, stretched)

A task's slices cover [ts_start, ts_end] exactly: one per sampling interval that ended inside the task
(its cgroup's samples where the task had a cgroup of its own: every process it started; else its
processes' samples), then a tail slice to ts_end whose CPU is the exact total (its cgroup's, else its
rusage) minus what the samples counted, so the CPU-ms of a task's slices equal its measured CPU time
(samples that overshoot it are scaled down). A task of no length lasts 1 ms (formats need positive
durations). Every exporter (tracekit.trace.export) builds its rows from these.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace import cctf
from tracekit.trace.arrowjson import row_numbers, shifted_down
from tracekit.trace.nodeparse import cgroup_counted, exact_cpu_ms

# One row per slice of a task: ``id`` the task's index in the list cut, ``end_ms`` when the slice ended
# (controller clock), ``duration`` ms, ``cpu_ms`` its CPU in it, ``rss_kb`` the RSS sampled at its end
# (null for the tail slice, which no sample ends).
SLICES = pa.schema([("id", pa.int32()), ("end_ms", pa.int64()), ("duration", pa.int64()),
                    ("cpu_ms", pa.float64()), ("rss_kb", pa.int64())])  # fmt: skip


@dataclass(frozen=True)
class TaskSlices:
    slices: pa.Table  # SLICES, sorted by id then end_ms
    # Per task (the list's order): samples, sampled_cpu_ms, cpu_ms (the exact total, else the sampled),
    # peak_rss_kb, peak_cores (the most cores one slice used), stretched (no length: made 1 ms).
    facts: list[dict[str, Any]]


def cut(tasks: list[dict[str, Any]], cctf_dir: Path) -> TaskSlices:
    """The slices of every task (invocations of the trace, each with node, task_id, attempt, ts_start, ts_end)."""
    by_node: dict[str, list[int]] = {}
    for index, task in enumerate(tasks):
        by_node.setdefault(task["node"], []).append(index)
    # Nodes are independent and Arrow's kernels release the GIL: two at a time keep both cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        per_node = pool.map(lambda node: _node_ticks(node, tasks, by_node[node], cctf_dir), sorted(by_node))
        ticks = pa.concat_tables(list(per_node))
    ticks = ticks.append_column("row", row_numbers(ticks.num_rows))

    # Per task, from its ticks: how many, their CPU, the last one, peak RSS.
    facts = [
        {"samples": 0, "sampled_cpu_ms": 0.0, "last_tick": t["ts_start"], "peak_rss_kb": 0, "last_row": None,
         "peak_cores": 0.0}  # fmt: skip
        for t in tasks
    ]
    summary = ticks.group_by("id", use_threads=False).aggregate(
        [("cpu_ms", "count"), ("cpu_ms", "sum"), ("ts_ms", "max"), ("rss_kb", "max"), ("row", "max")]
    )
    for index, count, cpu, last, rss, row in zip(*(summary.column(name).to_pylist() for name in (
            "id", "cpu_ms_count", "cpu_ms_sum", "ts_ms_max", "rss_kb_max", "row_max"))):  # fmt: skip
        facts[index].update(samples=count, sampled_cpu_ms=cpu, last_tick=last, peak_rss_kb=rss, last_row=row)

    scale, extra_on_last_row, tails = _close_the_books(tasks, facts)
    cpu = pc.multiply(ticks.column("cpu_ms"), pc.take(pa.array(scale, pa.float64()), ticks.column("id")))
    if extra_on_last_row:
        extra = [0.0] * ticks.num_rows
        for row, value in extra_on_last_row.items():
            extra[row] = value
        cpu = pc.add(cpu, pa.array(extra, pa.float64()))

    slices = _no_empty_slices(pa.concat_tables([
        pa.table({"id": ticks.column("id"), "end_ms": ticks.column("ts_ms"), "duration": ticks.column("duration"),
                  "cpu_ms": cpu, "rss_kb": ticks.column("rss_kb")}, schema=SLICES),
        tails,
    ]).sort_by([("id", "ascending"), ("end_ms", "ascending")]))  # fmt: skip
    cores_used = pc.divide(slices.column("cpu_ms"), pc.cast(slices.column("duration"), pa.float64()))
    peaks = pa.table({"id": slices.column("id"), "cores": cores_used}).group_by("id", use_threads=False).aggregate(
        [("cores", "max")]
    )
    for index, most in zip(peaks.column("id").to_pylist(), peaks.column("cores_max").to_pylist()):
        facts[index]["peak_cores"] = most
    for fact in facts:
        del fact["last_tick"], fact["last_row"]
    return TaskSlices(slices.combine_chunks(), facts)


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
    if not cctf.has_table(cctf_dir, "task_metrics"):  # a trace parsed before task cgroups
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


def _no_empty_slices(slices: pa.Table) -> pa.Table:
    """``slices`` (sorted) without a slice of no length (a cgroup sample taken at the task's start): its CPU
    goes to the task's next slice, else its previous one. Simulators drop such rows (OpenDC's loaders do),
    and the CPU in them with them."""
    empty = pc.equal(slices.column("duration"), 0)
    if not pc.any(empty).as_py():
        return slices
    ids, cpu = slices.column("id").to_pylist(), slices.column("cpu_ms").to_pylist()
    durations = slices.column("duration").to_pylist()
    keep = [True] * len(ids)
    carried = 0.0
    for row in range(len(ids)):
        if durations[row] == 0:
            keep[row] = False
            if row + 1 < len(ids) and ids[row + 1] == ids[row]:
                carried += cpu[row]  # to the next slice of the task
                continue
            back = row - 1
            while back >= 0 and ids[back] == ids[row] and not keep[back]:
                back -= 1
            if back >= 0 and ids[back] == ids[row]:
                cpu[back] += carried + cpu[row]
            carried = 0.0
            continue
        cpu[row] += carried
        carried = 0.0
    fixed = slices.set_column(slices.schema.get_field_index("cpu_ms"), "cpu_ms", pa.array(cpu, pa.float64()))
    return fixed.filter(pa.array(keep))


def _close_the_books(tasks: list[dict], per_task: list[dict]) -> tuple[list[float], dict[int, float], pa.Table]:
    """Every task's exact CPU total (rusage), against what its ticks hold: a scale for ticks that
    overshoot it, the remainder on the last tick or in a tail slice up to the task's end."""
    scale = [1.0] * len(tasks)
    extra_on_last_row: dict[int, float] = {}
    tail_ids, tail_durations, tail_cpu, tail_end = [], [], [], []
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
            tail_end.append(max(task["ts_end"], facts["last_tick"] + 1))  # after every tick
        elif remainder > 0 and facts["last_row"] is not None:
            extra_on_last_row[facts["last_row"]] = remainder  # the last tick was exactly at ts_end
    tails = pa.table({"id": pa.array(tail_ids, pa.int32()), "end_ms": pa.array(tail_end, pa.int64()),
                      "duration": pa.array(tail_durations, pa.int64()), "cpu_ms": pa.array(tail_cpu, pa.float64()),
                      "rss_kb": pa.array([None] * len(tail_ids), pa.int64())}, schema=SLICES)  # fmt: skip
    return scale, extra_on_last_row, tails


def node_cores(node: dict[str, Any]) -> int:
    """The cores a node had: its own CPUs where it was given some (nodes sharing a machine), else the machine's."""
    return int(node.get("cores_usable") or node.get("cores_logical") or 1)




def exported(invocations: list[dict[str, Any]], include_failed: bool) -> list[dict[str, Any]]:
    """The invocations every format exports, in the order of their ids (submission time): the successful
    ones (all with ``include_failed``), never a warm-up request (cctf flags them: the load before the
    measured one)."""
    chosen = [r for r in invocations if (include_failed or r["ok"]) and not r.get("warmup")]
    chosen.sort(key=lambda r: (r["ts_enqueue"], r["node"], r["pid"] or -1, r["task_id"], r["attempt"]))
    return chosen


def left_out(invocations: list[dict[str, Any]], include_failed: bool) -> dict[str, int]:
    """What ``exported`` leaves out, counted for an export's summary: failed invocations, warm-up requests."""
    warm = sum(1 for r in invocations if r.get("warmup"))
    failed = 0 if include_failed else sum(1 for r in invocations if not r["ok"] and not r.get("warmup"))
    return {"excluded_failed": failed, "excluded_warmup": warm}


def said_left_out(summary: dict[str, Any]) -> str:
    """The end of an export's line: what it left out."""
    warm = f"; {summary['excluded_warmup']} warm-up requests left out" if summary.get("excluded_warmup") else ""
    return f"{summary['excluded_failed']} failed invocations excluded{warm}"


def dependencies(tasks: list[dict[str, Any]]) -> tuple[list[list[int]], list[list[int]]]:
    """Each task's parents and children (indices): a request's parent is the request whose span called it
    (the same trace id, its parent_span_id that one's span_id)."""
    by_span = {(r["trace_id"], r["span_id"]): i for i, r in enumerate(tasks) if r.get("span_id")}
    parents: list[list[int]] = []
    children: list[list[int]] = [[] for _ in tasks]
    for i, r in enumerate(tasks):
        parent = by_span.get((r["trace_id"], r.get("parent_span_id"))) if r.get("parent_span_id") else None
        parents.append([parent] if parent is not None and parent != i else [])
        if parents[-1]:
            children[parent].append(i)
    return parents, children


def jobs(tasks: list[dict[str, Any]]) -> tuple[list[int], list[list[int]]]:
    """Each task's job (0..J-1 by first submission) and each job's tasks: the requests of one HTTP chain (one
    trace id), and the run's other tasks together (a batch: submitted by one dispatcher, none waiting for
    another). Every format that groups tasks (WTA's workflows, Google's collections, Alibaba's jobs) uses these."""
    key_of = [("request", r["trace_id"]) if r.get("span_id") else ("run", None) for r in tasks]
    numbers: dict[tuple[str, Any], int] = {}
    job_of = [numbers.setdefault(key, len(numbers)) for key in key_of]
    members: list[list[int]] = [[] for _ in numbers]
    for i, job in enumerate(job_of):
        members[job].append(i)
    return job_of, members


def cores_needed(task: dict[str, Any], facts: dict[str, Any], node: dict[str, Any]) -> int:
    """The cores a task needed: those it asked for, else the most one of its slices used (rounded up), at
    least 1 and at most its node's."""
    requested = task.get("cores_requested")
    count = int(requested) if requested else math.ceil(round(facts["peak_cores"], 6))
    return min(max(1, count), node_cores(node))


def peak_memory_kb(task: dict[str, Any], facts: dict[str, Any], node: dict[str, Any]) -> int:
    """The task's peak memory: the larger of its rusage's max RSS (its largest process's peak) and the most its
    samples saw at once (a process tree's sum can exceed any one of its processes), at most its node's memory
    (a sum of RSS counts pages its processes share once per process); 0: unknown."""
    peak = max(int(task.get("max_rss_kb") or 0), int(facts["peak_rss_kb"] or 0))
    return min(peak, int(node["mem_kb"])) if node.get("mem_kb") else peak
