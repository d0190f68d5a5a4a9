"""``tracekit export alibaba``: cctf/ -> tables of Alibaba's cluster-trace-v2018 shape (CSV).

input:  RUN_DIR/cctf/ invocations.jsonl, nodes.json, host_metrics/ and link_metrics/, task_slices/
        (tracekit.trace.slices)
output: OUT_DIR/ batch_task.csv, batch_instance.csv, machine_meta.csv, machine_usage.csv (no header and the
        columns in the order of the trace's schema.md, as Alibaba publishes them), export.json

As the v2018 trace defines them: times in seconds from the trace's start (here: the earlier of the run's
first submission and its first host sample), CPU in hundredths of a core (100 is one core), memory
normalized to the largest machine's [0, 100], machine usage in percent. Tracekit writes times to the
millisecond and shares to the fraction (the original's are whole numbers) so a task's runtime and CPU time
read back as measured.

A job is a group of tasks (tracekit.trace.slices.jobs: an HTTP chain's requests, or the run's batch tasks);
an Alibaba task is a Tracekit task (its task id), its instances the task's exported attempts (seq_no the
attempt, total_seq_no how many were exported). The DAG is in the task name as in the original: ``M2_1``
is task 2 of its job, waiting for task 1 (a request called by request 1). machine_usage has one row per
node and host sampling interval (the original: one per 10 s).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tracekit.errors import TracekitError
from tracekit.trace import cctf, slices
from tracekit.trace.export import (SUMMARY, Checked, ExportResult, column, exported_by, prepare_out_dir, read_csv,
                                   read_exported)
from tracekit.trace.records import HOST_METRICS

NAME = "alibaba"
TITLE = "Alibaba"  # in tracekit-run's summary
TASK_FILE, INSTANCE_FILE = "batch_task.csv", "batch_instance.csv"
MACHINE_META_FILE, MACHINE_USAGE_FILE = "machine_meta.csv", "machine_usage.csv"
MAIN_FILES = (TASK_FILE, INSTANCE_FILE, MACHINE_META_FILE, MACHINE_USAGE_FILE)
HELP = "cctf/ -> Alibaba cluster-trace-v2018 shape (batch_task, batch_instance, machine_meta, machine_usage CSV)"
DESCRIPTION = ("Write a parsed run as Alibaba's cluster-trace-v2018 tables (CSV without a header, as published): "
               "batch tasks with their DAG in the task name, their instances with average and maximum CPU and "
               "memory, the machines and their usage over time; the trace's units (seconds from the start, "
               "100 = one core, memory normalized to the largest machine).")  # fmt: skip
NEEDS_HOST_SAMPLES = True  # machine_usage: an experiment with collectors.host: false cannot have this format
TASK_TYPE = "1"  # the original's 12 types are not published: every task is of type 1
TERMINATED, FAILED = "Terminated", "Failed"
USING = "USING"  # machine_meta's status of a machine in service

# The trace's columns (cluster-trace-v2018/schema.md), in its order, with what Tracekit writes in each.
BATCH_TASK = pa.schema([
    column("task_name", pa.string(), "", "M<n>[_<parent>...]: task n of its job and the tasks it waited for"),
    column("instance_num", pa.int64(), "", "its instances: the task's exported attempts"),
    column("job_name", pa.string(), "", "j_<n>: an HTTP chain's requests, or the run's batch tasks"),
    column("task_type", pa.string(), "", "1 (the original's types are not published)"),
    column("status", pa.string(), "", "Terminated, or Failed when its last attempt failed"),
    column("start_time", pa.float64(), "s", "from the trace's start: its first instance's start"),
    column("end_time", pa.float64(), "s", "its last instance's end"),
    column("plan_cpu", pa.float64(), "% of one core", "the cores it needed (asked for, else its peak), 100 is one core"),
    column("plan_mem", pa.float64(), "% of the largest machine's memory", "its peak memory"),
])  # fmt: skip
BATCH_INSTANCE = pa.schema([
    column("instance_name", pa.string(), "", "ins_<id>: the id the other exports give the same invocation"),
    column("task_name", pa.string(), "", "as batch_task"),
    column("job_name", pa.string(), "", "as batch_task"),
    column("task_type", pa.string(), "", "as batch_task"),
    column("status", pa.string(), "", "Terminated or Failed"),
    column("start_time", pa.float64(), "s", "from the trace's start"),
    column("end_time", pa.float64(), "s", "from the trace's start"),
    column("machine_id", pa.string(), "", "m_<n>, as machine_meta"),
    column("seq_no", pa.int64(), "", "the attempt"),
    column("total_seq_no", pa.int64(), "", "the task's exported attempts"),
    column("cpu_avg", pa.float64(), "% of one core", "its CPU time / its runtime"),
    column("cpu_max", pa.float64(), "% of one core", "the most of one sampling interval"),
    column("mem_avg", pa.float64(), "% of the largest machine's memory", "the mean RSS sampled (empty: no sample)", nullable=True),
    column("mem_max", pa.float64(), "% of the largest machine's memory", "its peak memory"),
])  # fmt: skip
MACHINE_META = pa.schema([
    column("machine_id", pa.string(), "", "m_1..m_M, the nodes by name (export.json: machines)"),
    column("time_stamp", pa.int64(), "s", "0: in service from the start"),
    column("failure_domain_1", pa.int64(), "", "unknown: 0"),
    column("failure_domain_2", pa.string(), "", "unknown: empty", nullable=True),
    column("cpu_num", pa.int64(), "cores", "the cores the node had"),
    column("mem_size", pa.float64(), "% of the largest machine's memory", "its memory"),
    column("status", pa.string(), "", "USING"),
])  # fmt: skip
MACHINE_USAGE = pa.schema([
    column("machine_id", pa.string(), "", "as machine_meta"),
    column("time_stamp", pa.float64(), "s", "the sampling interval's end, from the trace's start"),
    column("cpu_util_percent", pa.float64(), "%", "busy share of its CPUs in the interval: every mode but idle and iowait (cctf's cpu_util_pct)"),
    column("mem_util_percent", pa.float64(), "%", "memory used / its memory"),
    column("mem_gps", pa.float64(), "", "not measured: empty", nullable=True),
    column("mkpi", pa.int64(), "", "not measured: empty", nullable=True),
    column("net_in", pa.float64(), "% of the column's maximum", "bytes received per second (not packets), normalized to the most of any row (export.json: net_in_max_bytes_per_s)", nullable=True),
    column("net_out", pa.float64(), "% of the column's maximum", "bytes sent per second, normalized to the most of any row (export.json: net_out_max_bytes_per_s)", nullable=True),
    column("disk_io_percent", pa.float64(), "", "not measured: empty", nullable=True),
])  # fmt: skip
TABLES = {TASK_FILE: BATCH_TASK, INSTANCE_FILE: BATCH_INSTANCE, MACHINE_META_FILE: MACHINE_META,
          MACHINE_USAGE_FILE: MACHINE_USAGE}  # fmt: skip


# -- the format, as tracekit.trace.export finds it ------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """No flags of its own."""


def export(run_dir: Path, out_dir: Path, *, include_failed: bool = False, force: bool = False) -> ExportResult:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    trace, invocations, chosen, nodes = read_exported(run_dir, include_failed)
    used = sorted({r["node"] for r in chosen})
    unknown = [n for n in used if not (nodes.get(n) or {}).get("mem_kb")]
    if unknown:
        raise TracekitError(f"{trace}/{cctf.NODES} lacks the memory of node {unknown[0]}; parse the run again "
                            f"(tracekit parse {run_dir})")  # fmt: skip
    host = _host_usage(trace, used)
    unsampled = sorted(set(used) - set(host.column("node").to_pylist()))
    if unsampled:
        raise TracekitError(f"{trace}/host_metrics/ has no host samples of node {unsampled[0]}: machine_usage needs "
                            "every node's (its collector's host.csv, which is missing or empty)")  # fmt: skip
    prepare_out_dir(out_dir, force, run_dir, NAME)
    machine = {node: f"m_{i + 1}" for i, node in enumerate(used)}
    mem_kb = max(int(nodes[n]["mem_kb"]) for n in used)
    t0_ms = min([min(r["ts_enqueue"] for r in chosen)]
                + ([pc.min(pc.subtract(host.column("ts_ms"), host.column("dt_ms"))).as_py()] if host.num_rows else []))
    cut = slices.cut(chosen, trace)
    instances, tasks = _batch(chosen, cut, nodes, machine, mem_kb, t0_ms)
    usage, net_max = _machine_usage(host, machine, t0_ms)
    meta = pa.table({
        "machine_id": [machine[n] for n in used], "time_stamp": [0] * len(used), "failure_domain_1": [0] * len(used),
        "failure_domain_2": [None] * len(used), "cpu_num": [slices.node_cores(nodes[n]) for n in used],
        "mem_size": [100 * int(nodes[n]["mem_kb"]) / mem_kb for n in used], "status": [USING] * len(used),
    }, schema=MACHINE_META)  # fmt: skip
    for name, table in ((TASK_FILE, tasks), (INSTANCE_FILE, instances), (MACHINE_META_FILE, meta),
                        (MACHINE_USAGE_FILE, usage)):  # fmt: skip
        pacsv.write_csv(table, out_dir / name, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    summary = {"format": NAME, "run_dir": str(run_dir.resolve()),
               "jobs": len(set(tasks.column("job_name").to_pylist())),
               "tasks": tasks.num_rows, "instances": instances.num_rows, "usage_rows": usage.num_rows,
               "trace_start_ms": t0_ms, "machines": {machine[n]: n for n in used}, "mem_kb_100": mem_kb,
               **net_max, "cpu_ms_total": round(sum(f["cpu_ms"] for f in cut.facts), 3),
               "columns": {name: [f.name for f in schema] for name, schema in TABLES.items()},
               "include_failed": include_failed, **slices.left_out(invocations, include_failed)}  # fmt: skip
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    line = (f"{out_dir}: {summary['instances']} instances of {summary['tasks']} tasks in {summary['jobs']} jobs, "
            f"{usage.num_rows} machine usage rows; {slices.said_left_out(summary)}")  # fmt: skip
    return ExportResult(out_dir, summary, line)


def add_verify_arguments(parser: Any) -> None:
    """No flags of its own."""


def verify(out_dir: Path, against: Path | None = None) -> Checked:
    """Check an Alibaba-shape export: every file's columns readable as the trace's schema, every instance's task
    in batch_task with as many instances as it says, its DAG naming tasks of its job, instances and usage on
    machines of machine_meta, no instance's cpu_max above its machine's cores (where its average is within
    them); with --against RUN_DIR, one instance per exported invocation, their runtimes,
    CPU time (within 0.1%) and dependencies as the trace has them, and machine_usage holding the nodes' host
    samples."""
    checked = Checked()
    tables = read_csv_tables(out_dir, checked)
    if not checked.ok:
        return checked
    tasks, instances = tables[TASK_FILE].to_pydict(), tables[INSTANCE_FILE].to_pydict()
    machines = set(tables[MACHINE_META_FILE].column("machine_id").to_pylist())
    declared = {(job, task): count for job, task, count in zip(tasks["job_name"], tasks["task_name"], tasks["instance_num"])}
    counted: dict[tuple[str, str], int] = {}
    for job, task in zip(instances["job_name"], instances["task_name"]):
        counted[(job, task)] = counted.get((job, task), 0) + 1
    for key in sorted(set(declared) | set(counted), key=str):
        if declared.get(key) != counted.get(key, 0):
            checked.violations.append(f"task {key[1]} of job {key[0]}: instance_num {declared.get(key)}, "
                                      f"{counted.get(key, 0)} instances in {INSTANCE_FILE}")  # fmt: skip
    dags = {(job, task): dag_of(task) for job, task in declared}
    for (job, task), dag in dags.items():
        if dag is None:
            checked.violations.append(f"{TASK_FILE}: task name {task!r} of job {job!r} is not M<n>[_<parent>...]")
    numbers = {(job, dag[0]) for (job, _task), dag in dags.items() if dag}
    for (job, task), dag in dags.items():
        missing = [p for p in (dag[1] if dag else []) if (job, p) not in numbers]
        if missing:
            checked.violations.append(f"task {task} of job {job}: waits for task {missing[0]}, not in the job")
    for name, table in ((INSTANCE_FILE, tables[INSTANCE_FILE]), (MACHINE_USAGE_FILE, tables[MACHINE_USAGE_FILE])):
        strange = {str(m) for m in set(table.column("machine_id").to_pylist()) - machines}
        if strange:
            checked.violations.append(f"{name}: machine {sorted(strange)[0]} is not in {MACHINE_META_FILE}")
    if any(a is None or b is None or b < a for a, b in zip(instances["start_time"], instances["end_time"])):
        checked.violations.append(f"{INSTANCE_FILE}: an instance ends before it starts")
    cores = dict(zip(tables[MACHINE_META_FILE].column("machine_id").to_pylist(),
                     tables[MACHINE_META_FILE].column("cpu_num").to_pylist()))  # fmt: skip
    # Where the instance's whole CPU fits its machine's cores (one that used more, its times cut to the ms,
    # keeps the rest above them: tracekit.trace.slices.over_cores).
    for name, average, peak, machine in zip(instances["instance_name"], instances["cpu_avg"], instances["cpu_max"],
                                            instances["machine_id"]):  # fmt: skip
        fits = cores.get(machine) and average is not None and average <= 100 * cores[machine] * (1 + 1e-9)
        if fits and peak is not None and peak > 100 * cores[machine] * (1 + 1e-9):
            checked.violations.append(f"{INSTANCE_FILE}: instance {name}: cpu_max {peak:.6g} is above its machine "
                                      f"{machine}'s {100 * cores[machine]} ({cores[machine]} cores)")  # fmt: skip
            break
    if against is not None and checked.ok:
        _check_against(tables, against, out_dir, checked)
    checked.line = (f"{out_dir}: OK: {len(instances['instance_name'])} instances of {len(declared)} tasks, "
                    f"{tables[MACHINE_USAGE_FILE].num_rows} machine usage rows"
                    + (", runtimes, CPU time, dependencies and machine usage checked against the run"
                       if against is not None else ""))  # fmt: skip
    return checked


def read_csv_tables(out_dir: Path, checked: Checked) -> dict[str, pa.Table]:
    """The export's four CSV files read as their declared columns; {} after one that does not read so."""
    tables = {}
    for name, schema in TABLES.items():
        try:
            tables[name] = read_csv(out_dir / name, schema)
        except (OSError, pa.ArrowException) as exc:
            checked.violations.append(f"{out_dir / name}: not readable as the trace's {name} columns "
                                      f"({str(exc).splitlines()[0][:200]}); export again (tracekit export {NAME} "
                                      "--force)")  # fmt: skip
            return {}
    return tables


DAG_NAME = re.compile(r"[A-Z](\d+)((?:_\d+)*)")


def dag_of(task_name: str | None) -> tuple[int, list[int]] | None:
    """``M5_3_4`` -> (5, [3, 4]): the task's number in its job and those it waits for (the trace's naming);
    None for a name that carries no DAG (the original names independent tasks ``task_<random>``)."""
    match = DAG_NAME.fullmatch(task_name or "")
    if not match:
        return None
    return int(match[1]), [int(p) for p in match[2].split("_")[1:]]


# -- the export --------------------------------------------------------------------------------------------


def _seconds(ms: int, t0_ms: int) -> float:
    return (ms - t0_ms) / 1000


def _batch(chosen: list[dict], cut: slices.TaskSlices, nodes: dict[str, dict], machine: dict[str, str],
           mem_kb: int, t0_ms: int) -> tuple[pa.Table, pa.Table]:  # fmt: skip
    """batch_instance (one row per exported invocation, by id) and batch_task (one row per task id)."""
    job_of, members = slices.jobs(chosen)
    parents, _children = slices.dependencies(chosen)
    # An Alibaba task is a Tracekit task id within its job; its number 1..T by first submission.
    number: dict[tuple[int, str], int] = {}
    for job, its in enumerate(members):
        seen = 0
        for i in its:
            if (job, chosen[i]["task_id"]) not in number:
                seen += 1
                number[(job, chosen[i]["task_id"])] = seen
    attempts: dict[tuple[int, int], list[int]] = {}
    for i, r in enumerate(chosen):
        attempts.setdefault((job_of[i], number[(job_of[i], r["task_id"])]), []).append(i)
    names = {}
    for (job, task), its in attempts.items():
        waits = sorted({number[(job, chosen[p]["task_id"])] for i in its for p in parents[i]} - {task})
        names[(job, task)] = "M" + "_".join(str(n) for n in [task, *waits])
    rss_mean = _mean_rss(cut.slices, len(chosen))

    instance: dict[str, list] = {name: [] for name in BATCH_INSTANCE.names}
    for i, (r, fact) in enumerate(zip(chosen, cut.facts)):
        key = (job_of[i], number[(job_of[i], r["task_id"])])
        runtime_ms = slices.runtime_ms(r)
        instance["instance_name"].append(f"ins_{i}")
        instance["task_name"].append(names[key])
        instance["job_name"].append(f"j_{job_of[i] + 1}")
        instance["task_type"].append(TASK_TYPE)
        instance["status"].append(TERMINATED if r["ok"] else FAILED)
        instance["start_time"].append(_seconds(r["ts_start"], t0_ms))
        instance["end_time"].append(_seconds(r["ts_start"] + runtime_ms, t0_ms))
        instance["machine_id"].append(machine[r["node"]])
        instance["seq_no"].append(int(r["attempt"]))
        instance["total_seq_no"].append(len(attempts[key]))
        instance["cpu_avg"].append(100 * fact["cpu_ms"] / runtime_ms)
        instance["cpu_max"].append(100 * max(fact["peak_cores"], fact["cpu_ms"] / runtime_ms))
        instance["mem_avg"].append(None if rss_mean[i] is None else 100 * rss_mean[i] / mem_kb)
        instance["mem_max"].append(100 * slices.peak_memory_kb(r, fact, nodes[r["node"]]) / mem_kb)
    task: dict[str, list] = {name: [] for name in BATCH_TASK.names}
    for key, its in sorted(attempts.items()):
        task["task_name"].append(names[key])
        task["instance_num"].append(len(its))
        task["job_name"].append(f"j_{key[0] + 1}")
        task["task_type"].append(TASK_TYPE)
        task["status"].append(TERMINATED if chosen[its[-1]]["ok"] else FAILED)
        task["start_time"].append(min(instance["start_time"][i] for i in its))
        task["end_time"].append(max(instance["end_time"][i] for i in its))
        task["plan_cpu"].append(100 * max(slices.cores_needed(chosen[i], cut.facts[i], nodes[chosen[i]["node"]]) for i in its))
        task["plan_mem"].append(max(instance["mem_max"][i] for i in its))
    return pa.table(instance, schema=BATCH_INSTANCE), pa.table(task, schema=BATCH_TASK)


def _mean_rss(rows: pa.Table, count: int) -> list[float | None]:
    """Each task's mean sampled RSS (None: no sample)."""
    grouped = rows.filter(pc.is_valid(rows.column("rss_kb"))).group_by("id").aggregate([("rss_kb", "mean")])
    mean: list[float | None] = [None] * count
    for task, value in zip(grouped.column("id").to_pylist(), grouped.column("rss_kb_mean").to_pylist()):
        mean[task] = value
    return mean


def _host_usage(trace: Path, used: list[str]) -> pa.Table:
    """The used nodes' host intervals with their bytes received and sent (all interfaces but lo), by node and time."""
    columns = ["node", "ts_ms", "dt_ms", "cpu_util_pct", "mem_used_kb", "mem_total_kb"]
    if not cctf.has_table(trace, "host_metrics"):
        return pa.table({name: pa.array([], HOST_METRICS.field(name).type) for name in columns})
    host = cctf.read_table(trace, "host_metrics", columns, used)
    if cctf.has_table(trace, "link_metrics"):
        links = cctf.read_table(trace, "link_metrics", ["node", "ts_ms", "rx_bytes", "tx_bytes"], used)
        links = links.group_by(["node", "ts_ms"], use_threads=False).aggregate([("rx_bytes", "sum"), ("tx_bytes", "sum")])
        host = host.join(links, ["node", "ts_ms"], join_type="left outer")
    else:
        host = host.append_column("rx_bytes_sum", pa.nulls(host.num_rows, pa.int64()))
        host = host.append_column("tx_bytes_sum", pa.nulls(host.num_rows, pa.int64()))
    return host.sort_by([("node", "ascending"), ("ts_ms", "ascending")])


def _machine_usage(host: pa.Table, machine: dict[str, str], t0_ms: int) -> tuple[pa.Table, dict[str, float | None]]:
    """machine_usage, and each network column's maximum (bytes/s) it is normalized to, as the original's."""
    seconds = pc.divide(pc.cast(pc.max_element_wise(host.column("dt_ms"), 1), pa.float64()), 1000.0)
    rx, tx = (pc.divide(pc.cast(host.column(f"{way}_bytes_sum"), pa.float64()), seconds) for way in ("rx", "tx"))
    net_max = {"net_in_max_bytes_per_s": pc.max(rx).as_py() or None, "net_out_max_bytes_per_s": pc.max(tx).as_py() or None}

    def normalized(rate: pa.Array, most: float | None) -> pa.Array:
        return pc.multiply(rate, 100.0 / most if most else 0.0)

    usage = pa.table({
        "machine_id": [machine[n] for n in host.column("node").to_pylist()],
        "time_stamp": pc.divide(pc.cast(pc.subtract(host.column("ts_ms"), t0_ms), pa.float64()), 1000.0),
        "cpu_util_percent": host.column("cpu_util_pct"),
        "mem_util_percent": pc.divide(pc.multiply(pc.cast(host.column("mem_used_kb"), pa.float64()), 100.0),
                                      pc.cast(pc.max_element_wise(host.column("mem_total_kb"), 1), pa.float64())),
        "mem_gps": pa.nulls(host.num_rows, pa.float64()), "mkpi": pa.nulls(host.num_rows, pa.int64()),
        "net_in": normalized(rx, net_max["net_in_max_bytes_per_s"]),
        "net_out": normalized(tx, net_max["net_out_max_bytes_per_s"]),
        "disk_io_percent": pa.nulls(host.num_rows, pa.float64()),
    }, schema=MACHINE_USAGE)  # fmt: skip
    return usage, net_max


def _check_against(tables: dict[str, pa.Table], run_dir: Path, out_dir: Path, checked: Checked) -> None:
    found = exported_by(run_dir, out_dir, checked)
    if found is None:
        return
    chosen, summary = found
    instances = tables[INSTANCE_FILE].to_pydict()
    if len(chosen) != len(instances["instance_name"]):
        checked.violations.append(f"{len(instances['instance_name'])} instances, the run has {len(chosen)} "
                                  "invocations to export")  # fmt: skip
        return
    trace = run_dir / cctf.CCTF
    cut = slices.cut(chosen, trace)
    row = {name: i for i, name in enumerate(instances["instance_name"])}
    runtime = {i: round((instances["end_time"][row[f"ins_{i}"]] - instances["start_time"][row[f"ins_{i}"]]) * 1000)
               for i in range(len(chosen)) if f"ins_{i}" in row}  # fmt: skip
    if len(runtime) != len(chosen):
        checked.violations.append(f"{INSTANCE_FILE}: instance names are not ins_0..ins_{len(chosen) - 1}")
        return
    parents, _children = slices.dependencies(chosen)
    for i, r in enumerate(chosen):
        x = row[f"ins_{i}"]
        measured = slices.runtime_ms(r)
        if runtime[i] != measured:
            checked.violations.append(f"instance ins_{i} ({r['task_id']}): runs {runtime[i]} ms, the trace {measured} ms")
        cpu = instances["cpu_avg"][x] * runtime[i] / 100
        if abs(cpu - cut.facts[i]["cpu_ms"]) > 0.001 * max(cut.facts[i]["cpu_ms"], 1.0):
            checked.violations.append(f"instance ins_{i} ({r['task_id']}): {cpu:.1f} CPU-ms, the trace "
                                      f"{cut.facts[i]['cpu_ms']:.1f}")  # fmt: skip
        waits_for = {instances["task_name"][row[f"ins_{p}"]] for p in parents[i]}
        named = set(dag_of(instances["task_name"][x])[1])
        if {dag_of(name)[0] for name in waits_for} != named:
            checked.violations.append(f"instance ins_{i} ({r['task_id']}): waits for tasks {sorted(named)}, the "
                                      f"trace for {sorted(waits_for)}")  # fmt: skip
    _check_usage(tables[MACHINE_USAGE_FILE], summary, trace, checked)


def _check_usage(usage: pa.Table, summary: dict[str, Any], trace: Path, checked: Checked) -> None:
    """machine_usage holds every host interval of the exported machines, with the busy share cctf has."""
    machines = summary.get("machines") or {}
    host = cctf.read_table(trace, "host_metrics", ["node", "dt_ms", "cpu_util_pct"], sorted(machines.values()))
    for machine_id, node in machines.items():
        ours = usage.filter(pc.equal(usage.column("machine_id"), machine_id))
        theirs = host.filter(pc.equal(host.column("node"), node))
        busy = pc.sum(pc.multiply(theirs.column("dt_ms"), theirs.column("cpu_util_pct"))).as_py() or 0.0
        weights = pc.sum(theirs.column("dt_ms")).as_py() or 1
        mean_theirs = busy / weights
        # Row for row: both are the node's host intervals in time order, so the same weights apply.
        if ours.num_rows != theirs.num_rows:
            checked.violations.append(f"{MACHINE_USAGE_FILE}: {ours.num_rows} rows of {machine_id} ({node}), "
                                      f"cctf/host_metrics has {theirs.num_rows}")  # fmt: skip
            continue
        mean_ours = (pc.sum(pc.multiply(theirs.column("dt_ms"), ours.column("cpu_util_percent"))).as_py() or 0.0) / weights
        if abs(mean_ours - mean_theirs) > 0.001 * max(abs(mean_theirs), 1e-9):
            checked.violations.append(f"{MACHINE_USAGE_FILE}: {machine_id} ({node}) busy {mean_ours:.3f}% on "
                                      f"average, cctf/host_metrics {mean_theirs:.3f}%")  # fmt: skip
