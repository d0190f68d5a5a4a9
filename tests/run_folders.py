"""Run folders made by hand, with the files tracekit-run leaves and results.py reads (imported as tests.run_folders).

Each file has the fields its real writer gives it: status.json and resolved.json (the runner), the
controller's dispatch.json and terminal_records.jsonl (tracekit.sched.dispatcher), each node's
collector.jsonl (tracekit.collect.daemon), cctf/audit.json's contention section (tracekit.trace.audit),
the load's summary.json (tracekit.load.results), and a report/index.html when asked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTROLLER = "cloud0"
EXPERIMENT = {
    "name": "policies", "description": "", "inventory": None, "source": "experiments/policies.yaml",
    "collectors": {"interval_ms": 1000, "match": "^ffmpeg$", "match_cmdline": None, "host": True},
    "kind": "command", "workload": {"argv": ["true"], "count": 1, "params": {"ms": [40, 80]}},
    "dispatch": {"policy": "round-robin", "batch_size": 0, "dribble_interval": 0, "backlog_limit": 0, "timeout": 600},
    "parallel": 1, "export_formats": ["opendc"], "include_failed": False, "export_jsonl": False, "tags": {},
}  # fmt: skip


def with_values(experiment: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``experiment`` (resolved, as in resolved.json) with dotted keys set, e.g. {"dispatch.policy": "lpt"}."""
    result = json.loads(json.dumps(experiment))
    for dotted, value in values.items():
        keys = dotted.split(".")
        if keys[0] == "workload" and len(keys) > 1 and keys[1] == result.get("kind"):
            keys = [keys[0], *keys[2:]]  # the resolved experiment holds the kind's section as "workload"
        place = result
        for key in keys[:-1]:
            place = place.setdefault(key, {})
        place[keys[-1]] = value
    return result


def make_run_folder(
    path: Path,
    *,
    run_id: str | None = None,
    state: str = "succeeded",
    values: dict[str, Any] | None = None,
    tasks: list[tuple[str, str, int, int]] | None = None,
    workers: tuple[str, ...] = ("cloud1", "cloud2"),
    makespan_ms: int | None = None,
    collectors: dict[str, list[tuple[int, int, int, int]]] | None = None,
    contention: dict[str, tuple[float | None, float]] | None = None,
    load: dict[str, Any] | None = None,
    report: bool = False,
    results: bool = False,
) -> Path:
    """A run folder at ``path``. ``tasks``: (node, state, ts_start, ts_end) each, as the workers' terminal
    records; ``collectors``: node -> its collector records (ts_ms, cpu_user_ms, cpu_system_ms, pid);
    ``contention``: node -> (contended_task_share, task_time_s) in the audit; ``load``: the load's
    summary.json; ``results``: write results.json as tracekit-run does at the end."""
    run_id = run_id or path.name
    path.mkdir(parents=True, exist_ok=True)
    (path / "status.json").write_text(json.dumps({"run_id": run_id, "state": state, "phases": {}}))
    resolved = {"run_id": run_id, "experiment": with_values(EXPERIMENT, values or {}), "overrides": [],
                "inventory_path": "inventory/local.yml", "tasks": len(tasks or [])}  # fmt: skip
    (path / "resolved.json").write_text(json.dumps(resolved, indent=2, sort_keys=True))
    controller = path / "nodes" / CONTROLLER
    controller.mkdir(parents=True, exist_ok=True)
    if tasks is not None:
        _dispatch_files(controller, run_id, tasks, workers, makespan_ms)
    if load is not None:
        (controller / "load").mkdir(exist_ok=True)
        (controller / "load" / "summary.json").write_text(json.dumps(load))
    for node, records in (collectors or {}).items():
        folder = path / "nodes" / node
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, (ts_ms, user, system, pid) in enumerate(records):
            event = "start" if i == 0 or records[i - 1][3] != pid else "self"
            lines.append(json.dumps({"ts_ms": ts_ms, "event": event, "pid": pid, "node": node, "ticks": i,
                                     "cpu_user_ms": user, "cpu_system_ms": system, "rss_kb": 19000}))  # fmt: skip
        (folder / "collector.jsonl").write_text("\n".join(lines) + "\n")
    if contention is not None:
        (path / "cctf").mkdir(exist_ok=True)
        nodes = {node: {"source": "task_cgroups", "task_time_s": time, "contended_task_share": share, "note": None}
                 for node, (share, time) in contention.items()}  # fmt: skip
        audit = {"run_id": run_id, "contention": {"saturated_busy_pct": 90.0, "nodes": nodes}, "notes": []}
        (path / "cctf" / "audit.json").write_text(json.dumps(audit))
    if report:
        (path / "report").mkdir(exist_ok=True)
        (path / "report" / "index.html").write_text(f"<html><title>{run_id}</title></html>\n")
    if results:
        from tracekit.experiment.results import write_results

        write_results(path)
    return path


def _dispatch_files(controller: Path, run_id: str, tasks: list[tuple[str, str, int, int]],
                    workers: tuple[str, ...], makespan_ms: int | None) -> None:  # fmt: skip
    records, per_node = [], {n: {"done": 0, "failed": 0, "busy_ms": 0} for n in workers}
    for i, (node, state, start, end) in enumerate(tasks):
        records.append({"v": 2, "task_id": f"t{i:05d}", "node": node, "consumer": f"{node}-0", "attempt": 1,
                        "state": state, "exit_status": 0 if state == "done" else 1, "reason": None,
                        "ts_start": start, "ts_end": end, "cpu_ms": (end - start) * 0.9})  # fmt: skip
        per_node[node][state] += 1
        per_node[node]["busy_ms"] += end - start  # as the dispatcher counts it: every finished task's run time
    done = sum(1 for t in tasks if t[1] == "done")
    if makespan_ms is None:
        makespan_ms = max(t[3] for t in tasks) - min(t[2] for t in tasks) if tasks else 0
    summary = {"run_id": run_id, "policy": "round-robin", "tasks": len(tasks), "pending": 0, "queued": 0,
               "running": 0, "done": done, "failed": len(tasks) - done, "unfinished": 0, "timed_out": 0,
               "makespan_ms": makespan_ms, "per_node": per_node}  # fmt: skip
    (controller / "dispatch.json").write_text(json.dumps(summary, indent=2))
    (controller / "terminal_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def tasks_of(durations_ms: dict[str, list[int]], start_ms: int = 1_796_572_410_000) -> list[tuple[str, str, int, int]]:
    """Done tasks run one after the other on each node: node -> their durations in ms."""
    tasks = []
    for node, durations in durations_ms.items():
        at = start_ms
        for duration in durations:
            tasks.append((node, "done", at, at + duration))
            at += duration
    return tasks


def make_sweep_folder(
    path: Path,
    axes: dict[str, list[Any]],
    repeat: int,
    run_files: Any,
    states: dict[tuple[int, int], str] | None = None,
    sweep_id: str | None = None,
) -> Path:
    """A sweep folder as the sweep writes it: experiment.yaml, sweep.json (the matrix of ``axes`` in the
    order given, ``repeat`` runs per point) and points/<i>-<label>-r<j>/ run folders.
    ``run_files(values, repetition)``: make_run_folder's keywords for that run; ``states``: (point,
    repetition) -> the run's state (default succeeded; a pending run has no folder)."""
    import itertools

    sweep_id = sweep_id or path.name
    path.mkdir(parents=True, exist_ok=True)
    (path / "experiment.yaml").write_text("name: policies\nsweep:\n  repeat: %d\n" % repeat)
    points, runs = [], []
    for index, combination in enumerate(itertools.product(*axes.values())):
        values = dict(zip(axes, combination))
        label = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())
        points.append({"point": index, "values": values, "label": label})
        for repetition in range(1, repeat + 1):
            folder = f"points/{index}-{label}-r{repetition}"
            state = (states or {}).get((index, repetition), "succeeded")
            run_id = f"{sweep_id}.p{index}-r{repetition}"
            runs.append({"point": index, "repetition": repetition, "run_id": run_id, "folder": folder, "state": state})
            if state not in ("pending", "running"):
                make_run_folder(path / folder, run_id=run_id, state=state, values=values,
                                **run_files(values, repetition))  # fmt: skip
    sweep = {"sweep_id": sweep_id, "axes": axes, "repeat": repeat, "order": "given", "seed": 0,
             "points": points, "runs": runs}  # fmt: skip
    (path / "sweep.json").write_text(json.dumps(sweep, indent=2))
    return path
