"""``tracekit export wta``: cctf/ -> the Workflow Trace Archive's format (Parquet, schema 1.0).

input:  RUN_DIR/cctf/ invocations.jsonl, nodes.json, and task_slices/ (tracekit.trace.slices: the cores and
        memory each task needed)
output: OUT_DIR/ tasks/schema-1.0/part.0.parquet, workflows/schema-1.0/part.0.parquet,
        resources/schema-1.0/part.0.parquet, workload/schema-1.0/generic_information.json (the layout and
        columns the archive's own tools, atlarge-research/wta-tools, write: its Task, Workflow, Resource and
        Workload objects; columns in alphabetical order as their writers leave them), export.json

One task per successful invocation (failed ones too with --include-failed), ids 0..N-1 by submission time as
in the OpenDC export. Workflows: the requests of one HTTP chain (invocations that share a trace id and link by
their spans) are one workflow whose tasks carry parents and children (a request's parent is the request
whose span called it); every other request is a workflow of its own (what one client submitted); the run's
other tasks (a batch workload: submitted together by one dispatcher, with no dependencies between them) are
one workflow. A resource is a node the exported tasks ran on (its cores, memory, CPU model and OS), each
task's resource_used its node's. Times are the controller's clock in ms since the epoch (not shifted to 0);
unknown values are -1, as the archive writes them.
"""

from __future__ import annotations

import json
import statistics
from collections import deque
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.trace import slices
from tracekit.trace.export import (SUMMARY, Checked, ExportResult, column, exported_by, prepare_out_dir, read_tables,
                                   read_exported)

NAME = "wta"
TITLE = "WTA"  # in tracekit-run's summary
SCHEMA_DIR = "schema-1.0"
TASKS_FILE = f"tasks/{SCHEMA_DIR}/part.0.parquet"
WORKFLOWS_FILE = f"workflows/{SCHEMA_DIR}/part.0.parquet"
RESOURCES_FILE = f"resources/{SCHEMA_DIR}/part.0.parquet"
WORKLOAD_FILE = f"workload/{SCHEMA_DIR}/generic_information.json"
MAIN_FILES = ("tasks/", "workflows/", "resources/", "workload/")
HELP = "cctf/ -> Workflow Trace Archive (tasks, workflows, workload; Parquet, schema 1.0)"
DESCRIPTION = ("Write a parsed run in the Workflow Trace Archive's format (schema 1.0): tasks with parents and "
               "children, workflows with their critical path, the nodes as resources, the workload's generic "
               "information. An HTTP chain "
               "is a workflow of its requests, every other request one of its own, the run's other tasks one.")  # fmt: skip
UNKNOWN = -1
LOAD = "tracekit load"  # the scheduler of a request's workflow: the open-loop load generator


# The archive's columns (wta-tools' objects/task.py and workflow.py), with what Tracekit writes in each.
TASKS = pa.schema([
    column("children", pa.list_(pa.int64()), "task id", "the tasks that depend on this one (requests it called)"),
    column("disk_io_time", pa.int64(), "ms", "unknown: -1"),
    column("disk_space_requested", pa.float64(), "MB", "unknown: -1"),
    column("energy_consumption", pa.int64(), "J", "unknown: -1"),
    column("group_id", pa.int32(), "", "unknown: -1"),
    column("id", pa.int64(), "", "0..N-1 by submission time"),
    column("memory_requested", pa.float64(), "MB", "the task's peak memory (its max RSS)"),
    column("network_io_time", pa.int64(), "ms", "unknown: -1"),
    column("nfrs", pa.string(), "JSON", "non-functional requirements: {}"),
    column("params", pa.string(), "JSON", "the task in the trace: task_id, attempt, node, module"),
    column("parents", pa.list_(pa.int64()), "task id", "the tasks this one depends on (the request that called it)"),
    column("resource_amount_requested", pa.float64(), "cores", "the cores it needed: asked for, else its peak use"),
    column("resource_type", pa.string(), "", "core"),
    column("resource_used", pa.int64(), "", "the resource it ran on (resources/: its node)"),
    column("runtime", pa.int64(), "ms", "from its start to its end"),
    column("submission_site", pa.int32(), "", "unknown: -1"),
    column("ts_submit", pa.int64(), "ms since the epoch", "when it was queued (controller clock)"),
    column("type", pa.string(), "", "atomic"),
    column("user_id", pa.int32(), "", "unknown: -1"),
    column("wait_time", pa.int64(), "ms", "from its submission to its start"),
    column("workflow_id", pa.int64(), "", "the workflow it belongs to"),
])  # fmt: skip
WORKFLOWS = pa.schema([
    column("approx_max_concurrent_tasks", pa.int32(), "tasks", "the widest wave of tasks with no path between them"),
    column("critical_path_length", pa.int64(), "ms", "the latest finish along its dependencies minus its first submission"),
    column("critical_path_task_count", pa.int32(), "tasks", "the tasks on that path"),
    column("id", pa.int64(), "", "0..W-1 by first submission"),
    column("nfrs", pa.string(), "JSON", "{}"),
    column("scheduler", pa.string(), "", "the dispatch policy, or the load generator for requests"),
    column("task_count", pa.int32(), "tasks", "its tasks"),
    column("total_disk_space_usage", pa.float64(), "MB", "unknown: -1"),
    column("total_energy_consumption", pa.int64(), "J", "unknown: -1"),
    column("total_memory_usage", pa.float64(), "MB", "the sum of its tasks' memory_requested"),
    column("total_network_usage", pa.float64(), "ms", "unknown: -1"),
    column("total_resources", pa.float64(), "cores", "the sum of its tasks' resource_amount_requested"),
    column("ts_submit", pa.int64(), "ms since the epoch", "its first task's submission"),
])  # fmt: skip
RESOURCES = pa.schema([
    column("details", pa.string(), "JSON", "the node as the trace has it: node, mem_kb, cpu_mhz, cores_logical"),
    column("disk_space", pa.int64(), "GB", "unknown: -1"),
    column("id", pa.int64(), "", "0..R-1, the nodes by name"),
    column("memory", pa.int64(), "GiB", "the node's memory, rounded (details has it in kB)"),
    column("network", pa.int64(), "Gbps", "unknown: -1"),
    column("num_resources", pa.float64(), "cores", "the node's cores (its own CPUs where nodes shared a machine)"),
    column("os", pa.string(), "", "the node's operating system"),
    column("proc_model", pa.string(), "", "the node's CPU model"),
    column("type", pa.string(), "", "core: num_resources counts cores, as the tasks' resource_type"),
])  # fmt: skip
TABLES = {TASKS_FILE: TASKS, WORKFLOWS_FILE: WORKFLOWS, RESOURCES_FILE: RESOURCES}


# -- the format, as tracekit.trace.export finds it ------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """No flags of its own."""


def export(run_dir: Path, out_dir: Path, *, include_failed: bool = False, force: bool = False) -> ExportResult:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    trace, invocations, chosen, nodes = read_exported(run_dir, include_failed)  # ids 0..N-1 by submission time
    prepare_out_dir(out_dir, force, run_dir, NAME)
    cut = slices.cut(chosen, trace)
    parents, children = slices.dependencies(chosen)
    workflow_of, workflows = slices.jobs(chosen)
    resource_of = {node: i for i, node in enumerate(sorted({r["node"] for r in chosen}))}
    tasks = _tasks_table(chosen, cut.facts, nodes, parents, children, workflow_of, resource_of)
    schedulers = [LOAD if chosen[members[0]].get("span_id") else _policy(run_dir) for members in workflows]
    workflow_rows = _workflows_table(workflows, tasks, parents, schedulers)
    resources = _resources_table(resource_of, nodes)
    for path, table in ((TASKS_FILE, tasks), (WORKFLOWS_FILE, workflow_rows), (RESOURCES_FILE, resources)):
        (out_dir / path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out_dir / path)
    (out_dir / WORKLOAD_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / WORKLOAD_FILE).write_text(json.dumps(_workload(run_dir.name, tasks, len(workflows)), indent=2) + "\n")
    summary = {"format": NAME, "run_dir": str(run_dir.resolve()), "tasks": tasks.num_rows, "workflows": len(workflows),
               "resources": resources.num_rows,
               "dependencies": sum(len(p) for p in parents), **slices.left_out(invocations, include_failed),
               "include_failed": include_failed}  # fmt: skip
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    line = (f"{out_dir}: {summary['tasks']} tasks in {summary['workflows']} workflows, {summary['dependencies']} "
            f"dependencies; {slices.said_left_out(summary)}")  # fmt: skip
    return ExportResult(out_dir, summary, line)


def add_verify_arguments(parser: Any) -> None:
    """No flags of its own."""


def verify(out_dir: Path, against: Path | None = None) -> Checked:
    """Check a WTA export: the archive's columns and types, unique ids, parents and children that mirror each
    other within one workflow, each workflow's task count, each task's resource its node; with --against
    RUN_DIR, one task per exported
    invocation with its runtime, submission and dependencies as the trace has them."""
    checked = Checked()
    tables = read_tables(out_dir, TABLES, NAME, "the archive's schema 1.0", checked)
    if not checked.ok:
        return checked
    tasks = tables[TASKS_FILE].to_pydict()
    ids = tasks["id"]
    if len(set(ids)) != len(ids):
        checked.violations.append(f"{TASKS_FILE}: task ids repeat")
    row = {task_id: i for i, task_id in enumerate(ids)}
    workflow = dict(zip(ids, tasks["workflow_id"]))
    for task_id, its_parents, its_children in zip(ids, tasks["parents"], tasks["children"]):
        for parent in its_parents:
            if parent not in row or task_id not in tasks["children"][row[parent]]:
                checked.violations.append(f"task {task_id}: parent {parent} does not list it as a child")
            elif workflow[parent] != workflow[task_id]:
                checked.violations.append(f"task {task_id}: parent {parent} is in another workflow")
        for child in its_children:
            if child not in row or task_id not in tasks["parents"][row[child]]:
                checked.violations.append(f"task {task_id}: child {child} does not list it as a parent")
    node_of = {}
    for resource, details in zip(*(tables[RESOURCES_FILE].column(n).to_pylist() for n in ("id", "details"))):
        try:
            node_of[resource] = json.loads(details).get("node")
        except (ValueError, AttributeError):
            checked.violations.append(f"{RESOURCES_FILE}: resource {resource}: details are not a JSON object")
    for task_id, resource, params in zip(ids, tasks["resource_used"], tasks["params"]):
        if resource not in node_of:
            checked.violations.append(f"task {task_id}: resource_used {resource} is not in {RESOURCES_FILE}")
            break
        if node_of[resource] != _node_in(params):
            checked.violations.append(f"task {task_id}: ran on {_node_in(params)}, its resource {resource} is "
                                      f"{node_of[resource]}")  # fmt: skip
            break
    counted = {w: list(tasks["workflow_id"]).count(w) for w in set(tasks["workflow_id"])}
    for w, count in zip(*(tables[WORKFLOWS_FILE].column(n).to_pylist() for n in ("id", "task_count"))):
        if counted.get(w, 0) != count:
            checked.violations.append(f"workflow {w}: task_count {count}, {counted.get(w, 0)} tasks")
    if against is not None and checked.ok:
        _check_against(tasks, against, out_dir, checked)
    checked.line = (f"{out_dir}: OK: {len(ids)} tasks in {tables[WORKFLOWS_FILE].num_rows} workflows"
                    + (", runtimes and dependencies checked against the run" if against is not None else ""))  # fmt: skip
    return checked


def _node_in(params: str) -> str | None:
    """The node a task's params name (None where they are no JSON object)."""
    try:
        return json.loads(params).get("node")
    except (ValueError, AttributeError):
        return None


# -- the export --------------------------------------------------------------------------------------------


def _tasks_table(tasks: list[dict], facts: list[dict], nodes: dict[str, dict], parents: list[list[int]],
                 children: list[list[int]], workflow_of: list[int],
                 resource_of: dict[str, int]) -> pa.Table:  # fmt: skip
    rows: dict[str, list] = {name: [] for name in TASKS.names}
    for i, (task, fact) in enumerate(zip(tasks, facts)):
        runtime = slices.runtime_ms(task)
        memory_kb = slices.peak_memory_kb(task, fact, nodes[task["node"]])
        params = {"task_id": task["task_id"], "attempt": task["attempt"], "node": task["node"], "module": task["module"]}
        rows["children"].append(children[i])
        rows["disk_io_time"].append(UNKNOWN)
        rows["disk_space_requested"].append(float(UNKNOWN))
        rows["energy_consumption"].append(UNKNOWN)
        rows["group_id"].append(UNKNOWN)
        rows["id"].append(i)
        rows["memory_requested"].append(round(memory_kb / 1024, 3) if memory_kb else float(UNKNOWN))
        rows["network_io_time"].append(UNKNOWN)
        rows["nfrs"].append("{}")
        rows["params"].append(json.dumps(params, sort_keys=True))
        rows["parents"].append(parents[i])
        rows["resource_amount_requested"].append(float(slices.cores_needed(task, fact, nodes[task["node"]])))
        rows["resource_type"].append("core")
        rows["resource_used"].append(resource_of[task["node"]])
        rows["runtime"].append(runtime)
        rows["submission_site"].append(UNKNOWN)
        rows["ts_submit"].append(task["ts_enqueue"])
        rows["type"].append("atomic")
        rows["user_id"].append(UNKNOWN)
        rows["wait_time"].append(max(0, task["ts_start"] - task["ts_enqueue"]))
        rows["workflow_id"].append(workflow_of[i])
    return pa.table(rows, schema=TASKS)


def _resources_table(resource_of: dict[str, int], nodes: dict[str, dict]) -> pa.Table:
    """One resource per node the exported tasks ran on, as wta-tools' Resource (its parsers write one per
    machine: cores, memory in GB)."""
    rows: dict[str, list] = {name: [] for name in RESOURCES.names}
    for node, number in resource_of.items():
        facts = nodes[node]
        details = {"node": node, "mem_kb": facts.get("mem_kb"), "cpu_mhz": facts.get("cpu_mhz"),
                   "cores_logical": facts.get("cores_logical")}  # fmt: skip
        rows["details"].append(json.dumps(details, sort_keys=True))
        rows["disk_space"].append(UNKNOWN)
        rows["id"].append(number)
        rows["memory"].append(round(int(facts["mem_kb"]) / 1024**2) if facts.get("mem_kb") else UNKNOWN)
        rows["network"].append(UNKNOWN)
        rows["num_resources"].append(float(slices.node_cores(facts)))
        rows["os"].append(str(facts.get("os") or ""))
        rows["proc_model"].append(str(facts.get("cpu_model") or ""))
        rows["type"].append("core")
    return pa.table(rows, schema=RESOURCES)


def critical_path(members: list[int], submit: list[int], runtime: list[int], parents: list[list[int]]) -> tuple[int, int, int]:
    """(critical path length ms, its task count, approximate max concurrent tasks) of one workflow, as the
    archive's tools define them: a task finishes at max(its parents' finish, its submission) + its runtime;
    the path ends at the latest finish and is measured from the first submission; the width is the widest
    wave of tasks none of which has yet a child, walking the tasks in dependency order."""
    inside = set(members)
    waiting = {i: sum(1 for p in parents[i] if p in inside) for i in members}
    ready = deque(sorted((i for i in members if waiting[i] == 0), key=lambda i: submit[i]))
    children: dict[int, list[int]] = {i: [] for i in members}
    for i in members:
        for p in parents[i]:
            if p in inside:
                children[p].append(i)
    finish: dict[int, int] = {}
    length: dict[int, int] = {}
    wave: set[int] = set()  # a set: a batch workflow's wave is all of its tasks (a list was quadratic)
    widest = 0
    while ready:
        i = ready.popleft()
        before = [p for p in parents[i] if p in finish]
        start = max([submit[i], *(finish[p] for p in before)])
        finish[i] = start + runtime[i]
        length[i] = 1 + max((length[p] for p in before), default=0)
        wave.difference_update(before)
        wave.add(i)
        widest = max(widest, len(wave))
        for child in children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    last = max(finish, key=lambda i: (finish[i], length[i]))
    return finish[last] - min(submit[i] for i in members), length[last], widest


def _workflows_table(workflows: list[list[int]], tasks: pa.Table, parents: list[list[int]], schedulers: list[str]) -> pa.Table:
    submit, runtime = tasks.column("ts_submit").to_pylist(), tasks.column("runtime").to_pylist()
    cores = tasks.column("resource_amount_requested").to_pylist()
    memory = tasks.column("memory_requested").to_pylist()
    rows: dict[str, list] = {name: [] for name in WORKFLOWS.names}
    for w, members in enumerate(workflows):
        length, count, width = critical_path(members, submit, runtime, parents)
        rows["approx_max_concurrent_tasks"].append(width)
        rows["critical_path_length"].append(length)
        rows["critical_path_task_count"].append(count)
        rows["id"].append(w)
        rows["nfrs"].append("{}")
        rows["scheduler"].append(schedulers[w])
        rows["task_count"].append(len(members))
        rows["total_disk_space_usage"].append(float(UNKNOWN))
        rows["total_energy_consumption"].append(UNKNOWN)
        rows["total_memory_usage"].append(round(sum(max(memory[i], 0.0) for i in members), 3))
        rows["total_network_usage"].append(float(UNKNOWN))
        rows["total_resources"].append(sum(cores[i] for i in members))
        rows["ts_submit"].append(min(submit[i] for i in members))
    return pa.table(rows, schema=WORKFLOWS)


def _policy(run_dir: Path) -> str:
    """The run's placement policy (resolved.json), '' for a run without a dispatcher or made by hand."""
    try:
        resolved = json.loads((run_dir / "resolved.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(((resolved.get("experiment") or {}).get("dispatch") or {}).get("policy") or "")


def _workload(run_id: str, tasks: pa.Table, workflows: int) -> dict[str, Any]:
    """generic_information.json: the workload's totals and the spread of its tasks' cores and memory."""
    cores = tasks.column("resource_amount_requested").to_pylist()
    memory = [m for m in tasks.column("memory_requested").to_pylist() if m != UNKNOWN]
    runtime = tasks.column("runtime").to_pylist()
    submit = tasks.column("ts_submit").to_pylist()

    def spread(values: list[float], name: str) -> dict[str, float]:
        if not values:
            return {f"{k}_{name}": UNKNOWN for k in ("min", "max", "std", "mean", "median", "first_quartile",
                                                      "third_quartile", "cov")}  # fmt: skip
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        quartiles = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
        return {f"min_{name}": min(values), f"max_{name}": max(values), f"std_{name}": std, f"mean_{name}": mean,
                f"median_{name}": statistics.median(values), f"first_quartile_{name}": quartiles[0],
                f"third_quartile_{name}": quartiles[2], f"cov_{name}": std / mean if mean else UNKNOWN}  # fmt: skip

    return {
        "total_workflows": workflows,
        "total_tasks": tasks.num_rows,
        "domain": "",
        "date_start": min(submit),
        "date_end": max(s + r for s, r in zip(submit, runtime)),
        "num_sites": UNKNOWN,
        "num_resources": sum(cores),
        "num_users": UNKNOWN,
        "num_groups": UNKNOWN,
        "total_resource_seconds": sum(c * r for c, r in zip(cores, runtime)) / 1000,
        "authors": [],
        **spread(cores, "resource_task"),
        **spread(memory, "memory"),
        # Not measured per task (tasks' network_io_time, disk_space_requested, energy_consumption are -1).
        **spread([], "network_usage"),
        **spread([], "disk_space_usage"),
        **spread([], "energy"),
        "workload_description": f"Tracekit run {run_id}: times in ms since the epoch (controller clock), "
                                "memory in MB (peak RSS), resources in cores",
        "version": "1.0",
    }


def _check_against(tasks: dict[str, list], run_dir: Path, out_dir: Path, checked: Checked) -> None:
    found = exported_by(run_dir, out_dir, checked)
    if found is None:
        return
    chosen, summary = found
    if len(chosen) != len(tasks["id"]):
        checked.violations.append(f"{len(tasks['id'])} tasks, the run has {len(chosen)} invocations to export")
        return
    parents, _children = slices.dependencies(chosen)
    for i, (invocation, params) in enumerate(zip(chosen, tasks["params"])):
        said = json.loads(params)
        if (said["task_id"], said["attempt"]) != (invocation["task_id"], invocation["attempt"]):
            checked.violations.append(f"task {i}: {said['task_id']} in the export, {invocation['task_id']} in the run")
        elif tasks["runtime"][i] != slices.runtime_ms(invocation):
            checked.violations.append(f"task {i} ({invocation['task_id']}): runtime {tasks['runtime'][i]} ms, "
                                      f"the invocation {slices.runtime_ms(invocation)} ms")  # fmt: skip
        elif tasks["ts_submit"][i] != invocation["ts_enqueue"] or sorted(tasks["parents"][i]) != sorted(parents[i]):
            checked.violations.append(f"task {i} ({invocation['task_id']}): submission or parents differ from the run")
