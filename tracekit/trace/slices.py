"""Each task's time cut into slices, with its CPU and memory in each: the format-neutral part of every export.

input:  one node's invocations and samples (parse's node job: task_metrics, proc_metrics in memory), or a
        parsed trace (cctf/: task_slices; tracekit.trace.cctf) and the invocations an export takes
output: ``node_slices``: the node's rows of cctf's task_slices (records.TASK_SLICES); ``cut``: per export,
        ``TaskSlices``: one row per slice of the chosen invocations (``SLICES``: the task's index in the
        list, its end, its duration, the CPU-ms and, for a sampled slice, the RSS in it), in task then time
        order, and per task its facts (its exact CPU total, peak RSS, peak cores)

A task's slices cover [ts_start, ts_end] exactly: one per sampling interval that ended inside the task
(its cgroup's samples where the task had a cgroup of its own: every process it started; else its
processes' samples), then a tail slice to ts_end whose CPU is the exact total (its cgroup's, else its
rusage) minus what the samples counted, so the CPU-ms of a task's slices equal its measured CPU time
(samples that overshoot it are scaled down). A task of no length lasts 1 ms (formats need positive
durations). The slices are cut once, where a node's samples are in memory (parse's node jobs, or
``tracekit parse --node-part`` on the node); every exporter (tracekit.trace.export) reads them and never
the samples. A trace parsed before task_slices existed is cut here from its samples instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace import cctf
from tracekit.trace.arrowjson import row_numbers, shifted_down
from tracekit.trace.audit import cgroup_counted, exact_cpu_ms
from tracekit.trace.records import TASK_SLICES

# One row per slice of a task: ``id`` the task's index in the list cut, ``end_ms`` when the slice ended
# (controller clock), ``duration`` ms, ``cpu_ms`` its CPU in it, ``rss_kb`` the RSS sampled at its end
# (null for the tail slice, which no sample ends).
SLICES = pa.schema([("id", pa.int32()), ("end_ms", pa.int64()), ("duration", pa.int64()),
                    ("cpu_ms", pa.float64()), ("rss_kb", pa.int64())])  # fmt: skip
_KEY = ["node", "task_id", "attempt"]


@dataclass(frozen=True)
class TaskSlices:
    slices: pa.Table  # SLICES, sorted by id then end_ms
    # Per task (the list's order): cpu_ms (the exact total, else the sampled), samples (its slices with a
    # memory reading: sampled while it ran; not the tail, nor a process sampled at its exit or closed from its
    # rusage), peak_rss_kb (the most its samples saw at once), peak_cores (the most cores one slice used),
    # stretched (no length: made 1 ms).
    facts: list[dict[str, Any]]


def cut(tasks: list[dict[str, Any]], cctf_dir: Path) -> TaskSlices:
    """The slices of every task (invocations of the trace, each with node, task_id, attempt, ts_start, ts_end)."""
    rows = _trace_slices(tasks, cctf_dir).combine_chunks()
    ids = _task_index(rows, tasks)
    chosen = pc.is_valid(ids)
    rows, ids = rows.filter(chosen), ids.filter(chosen)
    # A task's rows are together and in time order (task_slices' sort keys): a stable sort by task keeps them so.
    order = pc.sort_indices(ids)
    slices = pa.table({"id": ids.take(order), "end_ms": rows.column("ts_ms").take(order),
                       "duration": rows.column("dt_ms").take(order), "cpu_ms": rows.column("cpu_ms").take(order),
                       "rss_kb": rows.column("rss_kb").take(order)}, schema=SLICES)  # fmt: skip

    facts = [{"cpu_ms": 0.0, "samples": 0, "peak_rss_kb": 0, "peak_cores": 0.0,
              "stretched": t["ts_end"] <= t["ts_start"]} for t in tasks]  # fmt: skip
    cores_used = pc.divide(slices.column("cpu_ms"), pc.cast(slices.column("duration"), pa.float64()))
    summary = pa.table({"id": slices.column("id"), "cpu_ms": slices.column("cpu_ms"), "rss_kb": slices.column("rss_kb"),
                        "cores": cores_used}).group_by("id", use_threads=False).aggregate(
        [("cpu_ms", "sum"), ("rss_kb", "count"), ("rss_kb", "max"), ("cores", "max")])  # fmt: skip
    for index, cpu, sampled, rss, cores in zip(*(summary.column(name).to_pylist() for name in (
            "id", "cpu_ms_sum", "rss_kb_count", "rss_kb_max", "cores_max"))):  # fmt: skip
        facts[index].update(cpu_ms=cpu, samples=sampled, peak_rss_kb=rss or 0, peak_cores=cores)
    for task, fact in zip(tasks, facts):
        exact = exact_cpu_ms(task)  # what the slices sum to, without their float rounding
        if exact is not None:
            fact["cpu_ms"] = float(exact)
    return TaskSlices(slices, facts)


def _task_index(rows: pa.Table, tasks: list[dict[str, Any]]) -> pa.Array:
    """Each row's task: its index in ``tasks`` (by node, task id and attempt), null for a task not among them.
    The keys as integers (each part by its index among the rows' distinct values: no key overflows whatever
    the attempt numbers): a hash lookup of numbers instead of a join on strings."""
    if rows.num_rows == 0:
        return pa.array([], pa.int32())
    codes = [pc.dictionary_encode(rows.column(name).chunk(0)) for name in _KEY]
    code_of = [{value: code for code, value in enumerate(c.dictionary.to_pylist())} for c in codes]
    key = pc.cast(codes[0].indices, pa.int64())
    for part, known in zip(codes[1:], code_of[1:]):
        key = pc.add(pc.multiply(key, len(known)), pc.cast(part.indices, pa.int64()))
    wanted = []
    for task in tasks:
        parts = [known.get(task[name]) for known, name in zip(code_of, _KEY)]
        if None in parts:
            wanted.append(-1)  # not in the trace's slices
            continue
        value = parts[0]
        for part, known in zip(parts[1:], code_of[1:]):
            value = value * len(known) + part
        wanted.append(value)
    return pc.cast(pc.index_in(key, value_set=pa.array(wanted, pa.int64())), pa.int32())


def _trace_slices(tasks: list[dict[str, Any]], cctf_dir: Path) -> pa.Table:
    """The trace's task_slices rows of the tasks' nodes; cut here from the samples for a trace parsed before
    task_slices existed."""
    nodes = sorted({t["node"] for t in tasks})
    columns = [*_KEY, "ts_ms", "dt_ms", "cpu_ms", "rss_kb"]
    if cctf.has_table(cctf_dir, "task_slices"):
        return cctf.read_table(cctf_dir, "task_slices", columns, nodes=nodes)
    per_node = []
    facts = cctf.read_nodes(cctf_dir) if cctf.has(cctf_dir, cctf.NODES) else {}
    for node in nodes:
        task_metrics = (cctf.read_table(cctf_dir, "task_metrics", nodes=[node])
                        if cctf.has_table(cctf_dir, "task_metrics") else None)  # fmt: skip
        proc_metrics = cctf.read_table(cctf_dir, "proc_metrics", ["task_id", "ts_ms", "cpu_user_ms", "cpu_system_ms",
                                                                  "rss_kb"], nodes=[node])  # fmt: skip
        cores = node_cores(facts[node]) if node in facts else None
        per_node.append(node_slices(node, [t for t in tasks if t["node"] == node], task_metrics, proc_metrics, cores))
    return pa.concat_tables(per_node).select(columns) if per_node else TASK_SLICES.empty_table().select(columns)


def node_slices(node: str, invocations: list[dict[str, Any]], task_metrics: pa.Table | None,
                proc_metrics: pa.Table, cores: int | None) -> pa.Table:  # fmt: skip
    """The node's rows of cctf's task_slices: every one of ``invocations`` (this node's) cut at its samples.
    ``task_metrics``: the node's task cgroup samples (None: none made); ``proc_metrics``: its process samples
    (task_id, ts_ms, cpu_user_ms, cpu_system_ms and rss_kb are read); ``cores``: the node's
    (node_cores; None: unknown), the most CPU a slice can hold per ms."""
    # In task_slices' order (task id, attempt; UTF-8's byte order is the code points'): the slices, cut in
    # the order of the tasks' indices, need no sort of their own.
    tasks = sorted((r for r in invocations if r["node"] == node), key=lambda r: (r["task_id"], r["attempt"]))
    in_cgroups, cgroup_ticks = _cgroup_ticks(tasks, task_metrics)
    ticks = pa.concat_tables([cgroup_ticks, _process_ticks(tasks, [i for i in range(len(tasks)) if i not in in_cgroups],
                                                           proc_metrics)])  # fmt: skip
    slices = _within_cores(_slices_of(tasks, ticks), cores)
    ids = slices.column("id")
    table = pa.table({
        "ts_ms": slices.column("end_ms"), "node": pa.array([node] * slices.num_rows, pa.string()),
        "task_id": pc.take(pa.array([t["task_id"] for t in tasks], pa.string()), ids),
        "attempt": pc.take(pa.array([t["attempt"] for t in tasks], pa.int64()), ids),
        "dt_ms": slices.column("duration"), "cpu_ms": slices.column("cpu_ms"), "rss_kb": slices.column("rss_kb"),
    }, schema=TASK_SLICES)  # fmt: skip
    return table.combine_chunks()


def _slices_of(tasks: list[dict[str, Any]], ticks: pa.Table) -> pa.Table:
    """SLICES of ``tasks`` from their sampling ticks (id, ts_ms, duration, cpu_ms, rss_kb): the ticks' CPU
    scaled or topped up to each task's exact total, a tail slice to its end, no slice of no length."""
    ticks = ticks.append_column("row", row_numbers(ticks.num_rows))
    # Per task, from its ticks: their CPU, the last one, its row.
    facts = [{"sampled_cpu_ms": 0.0, "last_tick": t["ts_start"], "last_row": None} for t in tasks]
    summary = ticks.group_by("id", use_threads=False).aggregate([("cpu_ms", "sum"), ("ts_ms", "max"), ("row", "max")])
    for index, cpu, last, row in zip(*(summary.column(name).to_pylist() for name in (
            "id", "cpu_ms_sum", "ts_ms_max", "row_max"))):  # fmt: skip
        facts[index].update(sampled_cpu_ms=cpu, last_tick=last, last_row=row)

    scale, extra_on_last_row, tails = _close_the_books(tasks, facts)
    cpu = pc.multiply(ticks.column("cpu_ms"), pc.take(pa.array(scale, pa.float64()), ticks.column("id")))
    if extra_on_last_row:
        extra = [0.0] * ticks.num_rows
        for row, value in extra_on_last_row.items():
            extra[row] = value
        cpu = pc.add(cpu, pa.array(extra, pa.float64()))
    return _no_empty_slices(pa.concat_tables([
        pa.table({"id": ticks.column("id"), "end_ms": ticks.column("ts_ms"), "duration": ticks.column("duration"),
                  "cpu_ms": cpu, "rss_kb": ticks.column("rss_kb")}, schema=SLICES),
        tails,
    ]).sort_by([("id", "ascending"), ("end_ms", "ascending")]))  # fmt: skip


def _within_cores(slices: pa.Table, cores: int | None) -> pa.Table:
    """``slices`` (SLICES) with no slice holding more CPU than its length's worth of the node's cores, where the
    task's other slices have room for the excess.

    Counters read in 10 ms ticks can leave up to a tick of a task's CPU per counter out of its samples; its
    exact total puts it back on the last slice, which may be a few ms long: a task of 1.1 cores on average
    showed 10 cores there. Such an excess goes to the task's other slices in proportion to the room they
    have, so the task's CPU stays its total. A task that used more than its cores in its whole time (its
    start and end are cut to the ms: up to a ms of every core) keeps what does not fit (over_cores).
    """
    if not cores or slices.num_rows == 0:
        return slices
    capacity = pc.multiply(pc.cast(slices.column("duration"), pa.float64()), float(cores))
    over = pc.greater(slices.column("cpu_ms"), pc.multiply(capacity, 1 + 1e-9))
    if not pc.any(over).as_py():
        return slices
    # Only the rows of the tasks with a crowded slice go through Python (few: a busy node's millions do not).
    # (Arrow only: a node's own parse has no numpy.)
    crowded = pc.is_in(slices.column("id"), value_set=pc.unique(pc.filter(slices.column("id"), over)))
    ids, caps, cpu = (pc.filter(column, crowded).to_pylist() for column in (slices.column("id"), capacity,
                                                                             slices.column("cpu_ms")))  # fmt: skip
    of_task: dict[int, list[int]] = {}
    for position, task in enumerate(ids):
        of_task.setdefault(task, []).append(position)
    for positions in of_task.values():
        excess = {i: cpu[i] - caps[i] for i in positions if cpu[i] > caps[i]}
        room = {i: caps[i] - cpu[i] for i in positions if cpu[i] < caps[i]}
        total_excess, total_room = sum(excess.values()), sum(room.values())
        moved = min(total_excess, total_room)
        if moved <= 0:
            continue
        for i, share in excess.items():
            cpu[i] -= moved * share / total_excess
        for i, share in room.items():
            cpu[i] += moved * share / total_room
    spread = pc.replace_with_mask(slices.column("cpu_ms").combine_chunks(), crowded.combine_chunks(),
                                  pa.array(cpu, pa.float64()))  # fmt: skip
    return slices.set_column(slices.schema.get_field_index("cpu_ms"), "cpu_ms", spread)


def over_cores(task: dict[str, Any], fact: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether a task's CPU is more than its node's cores could give in its runtime (its start and end cut to
    the ms, a task using every core can show up to a ms of each more): its slices cannot all fit its cores."""
    return fact["cpu_ms"] > node_cores(node) * runtime_ms(task) * (1 + 1e-9)


_TICK_COLUMNS = {"id": pa.int32(), "ts_ms": pa.int64(), "duration": pa.int64(), "cpu_ms": pa.float64(),
                 "rss_kb": pa.int64()}  # fmt: skip


def _no_ticks() -> pa.Table:
    return pa.table({name: pa.array([], kind) for name, kind in _TICK_COLUMNS.items()})


def _cgroup_ticks(tasks: list[dict[str, Any]], rows: pa.Table | None) -> tuple[set[int], pa.Table]:
    """The tasks (their indices) with task cgroup samples, and their ticks (task_metrics: already one per
    task and interval, the first from the task's start)."""
    if rows is None:  # no task cgroups on the node (or a trace parsed before them)
        return set(), _no_ticks()
    # A task whose move into its cgroup failed keeps its processes' samples (its cgroup counted little).
    index_of = {(task["task_id"], task["attempt"]): i for i, task in enumerate(tasks) if cgroup_counted(task)}
    ids = [index_of.get(key, -1) for key in zip(rows.column("task_id").to_pylist(), rows.column("attempt").to_pylist())]
    ticks = pa.table({
        "id": pa.array(ids, pa.int32()), "ts_ms": rows.column("ts_ms"), "duration": rows.column("dt_ms"),
        "cpu_ms": rows.column("cpu_ms"),
        "rss_kb": pc.cast(pc.divide(rows.column("memory_bytes"), 1024), pa.int64()),  # null: not read
    }).filter(pc.greater_equal(pc.field("id"), 0)).sort_by([("id", "ascending"), ("ts_ms", "ascending")])  # fmt: skip
    return set(ticks.column("id").to_pylist()), ticks.combine_chunks()


def _process_ticks(tasks: list[dict[str, Any]], indices: list[int], samples: pa.Table) -> pa.Table:
    """The ticks of the tasks of ``indices`` from their processes' samples (one node's).

    All processes of a task are sampled in the same tick, so a tick's CPU is
    the sum over them.
    """
    samples = samples.select(["task_id", "ts_ms", "cpu_user_ms", "cpu_system_ms", "rss_kb"])
    samples = samples.filter(pc.is_valid(samples.column("task_id")))
    # A running process has resident pages: an RSS of 0 is an exiting one's (sampled at its exit event, its
    # memory already released) or a row closed from its rusage, no reading of its memory. Summed as 0, it made a
    # task's mean memory half what it was and its minimum 0.
    rss_kb = pc.if_else(pc.greater(samples.column("rss_kb"), 0), samples.column("rss_kb"), pa.scalar(None, pa.int64()))
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
                  "rss_kb": rss_kb})  # fmt: skip
        .group_by(["code", "ts_ms"], use_threads=False)
        .aggregate([("cpu_ms", "sum"), ("rss_kb", "sum")])
        .join(task_table, "code", join_type="inner", use_threads=False)
    )
    inside = pc.and_(pc.greater(ticks.column("ts_ms"), ticks.column("ts_start")),
                     pc.less_equal(ticks.column("ts_ms"), ticks.column("ts_end")))  # fmt: skip
    ticks = ticks.filter(inside).sort_by([("id", "ascending"), ("ts_ms", "ascending")]).combine_chunks()
    if ticks.num_rows == 0:
        return _no_ticks()
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
        if task["ts_end"] <= task["ts_start"]:
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


def runtime_ms(invocation: dict[str, Any]) -> int:
    """An invocation's length in every format: from its start to its end, at least 1 ms (one measured under
    a millisecond lasts 1 ms, as its slices do: simulators need positive durations, usage needs a length)."""
    return max(1, invocation["ts_end"] - invocation["ts_start"])


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
