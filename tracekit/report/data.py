"""What the report shows, read from a run folder: small values and downsampled series, never every sample.

input:  RUN_DIR/cctf/ (invocations.jsonl, nodes.json, audit.json,
        placement_events.jsonl, requests.jsonl; host_metrics/ through
        tracekit.trace.cctf.read_table, the readers parse and export use),
        RUN_DIR/opendc/ (fragments.parquet, task_ids.jsonl)
        for the longest tasks' fragments, RUN_DIR/resolved.json and
        status.json for the experiment's name and times
output: a RunView; each piece that is missing is None (or empty) with a
        note saying what is missing and how to get it
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from tracekit.errors import RunFolderError
from tracekit.jsonl import BadLine, read_jsonl
from tracekit.trace import cctf

# A timeline never draws more points than a page is pixels wide.
MAX_POINTS = 1500
LONGEST_TASKS = 4


@dataclass
class HostSeries:
    """One node's host samples, averaged into at most MAX_POINTS buckets."""

    ts_ms: np.ndarray
    cpu_util_pct: np.ndarray
    mem_used_pct: np.ndarray
    samples: int  # before downsampling


@dataclass
class TaskDemand:
    """A long task's CPU demand per OpenDC fragment, next to its node's host samples."""

    invocation: dict[str, Any]
    fragment_start_ms: np.ndarray  # the fragments' edges: the task's start plus the durations before each
    fragment_cores: np.ndarray  # its demand in cores (cpu_usage MHz / the node's MHz)
    host_ts_ms: np.ndarray
    host_busy_cores: np.ndarray  # the node's whole CPU use in the same window, in cores


@dataclass
class RunView:
    run_dir: Path
    run_id: str
    name: str | None = None
    description: str | None = None
    state: str | None = None
    start: str | None = None
    end: str | None = None
    invocations: list[dict[str, Any]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit: dict[str, Any] | None = None
    placements: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] | None = None
    host: dict[str, HostSeries] = field(default_factory=dict)
    longest: list[TaskDemand] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # section -> what is missing there
    results: dict[str, Any] | None = None  # the headline figures tracekit-run wrote at the end (results.json)
    # Per container its processes' samples: {container id: {"node", "cpu_ms", "peak_rss_kb", "processes"}}.
    container_samples: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The services that ran in a container (nodes/<node>/http_service.json), by container id.
    service_containers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """The invocations that are not HTTP requests (the dispatcher's tasks, wrapped commands)."""
        return [i for i in self.invocations if i.get("module") != "http"]


def load_run(run_dir: Path) -> RunView:
    """Everything the report draws from ``run_dir``; what is missing is noted, not fatal."""
    cctf_dir = run_dir / cctf.CCTF
    if not cctf_dir.is_dir():
        raise RunFolderError(f"{run_dir} has no cctf/ folder; run 'tracekit parse {run_dir}' first")
    view = RunView(run_dir=run_dir, run_id=run_dir.name)
    _experiment(view)
    view.invocations = _records(view, cctf.INVOCATIONS, "summary")
    view.invocations.sort(key=lambda i: (i.get("ts_start") or 0, i.get("node") or "", i.get("task_id") or ""))
    view.nodes = _cctf_json(view, cctf.NODES, "summary", lambda: cctf.read_nodes(cctf_dir)) or {}
    view.audit = _cctf_json(view, cctf.AUDIT, "summary", lambda: cctf.read_json(cctf_dir, cctf.AUDIT))
    if cctf.has(cctf_dir, cctf.PLACEMENTS):
        view.placements = _records(view, cctf.PLACEMENTS, "queue")
    else:
        view.note("queue", f"no placement events (cctf/{cctf.PLACEMENTS}): the run had no dispatcher")
    if cctf.has(cctf_dir, cctf.REQUESTS):
        view.requests = _records(view, cctf.REQUESTS, "http")
    view.host = _host_series(view, cctf_dir)
    view.longest = _longest_tasks(view, cctf_dir)
    view.container_samples = _container_samples(view, cctf_dir)
    view.service_containers = _service_containers(view)
    return view


def _service_containers(view: RunView) -> dict[str, dict[str, Any]]:
    """What each node's http_service.json says of the container its service ran in (id, image, cgroup totals)."""
    found = {}
    for path in sorted(view.run_dir.glob("nodes/*/http_service.json")):
        described = _json(view, path, "summary")
        if isinstance(described, dict) and isinstance(described.get("container_id"), str):
            found[described["container_id"]] = described
    return found


def _container_samples(view: RunView, cctf_dir: Path) -> dict[str, dict[str, Any]]:
    """Per container id, what its processes' samples hold: CPU (the sum of their intervals), the peak of their
    summed RSS at one tick, how many processes (a task's container, or a service's)."""
    if not cctf.has_table(cctf_dir, "proc_metrics"):
        return {}
    try:
        table = cctf.read_table(
            cctf_dir, "proc_metrics",
            ["container_id", "node", "pid", "create_time_ms", "ts_ms", "cpu_user_ms", "cpu_system_ms", "rss_kb"],
            where=pc.field("container_id").is_valid(),
        )  # fmt: skip
    except (OSError, pa.ArrowInvalid) as exc:
        view.note("summary", f"the containers' process samples could not be read: {exc}")
        return {}
    if not table.num_rows:
        return {}
    cpu = table.group_by(["container_id", "node"]).aggregate([("cpu_user_ms", "sum"), ("cpu_system_ms", "sum")])
    rss = table.group_by(["container_id", "ts_ms"]).aggregate([("rss_kb", "sum")]).group_by("container_id").aggregate([("rss_kb_sum", "max")])
    processes = table.group_by(["container_id", "pid", "create_time_ms"]).aggregate([]).group_by("container_id").aggregate([("pid", "count")])
    found: dict[str, dict[str, Any]] = {}
    for row in cpu.to_pylist():
        found[row["container_id"]] = {"node": row["node"], "cpu_ms": row["cpu_user_ms_sum"] + row["cpu_system_ms_sum"]}
    for row in rss.to_pylist():
        found[row["container_id"]]["peak_rss_kb"] = row["rss_kb_sum_max"]
    for row in processes.to_pylist():
        found[row["container_id"]]["processes"] = row["pid_count"]
    return found


def _experiment(view: RunView) -> None:
    resolved = _json(view, view.run_dir / "resolved.json", None)
    if resolved:
        experiment = resolved.get("experiment", {})
        view.name, view.description = experiment.get("name"), experiment.get("description")
    if (view.run_dir / "results.json").exists():
        view.results = _json(view, view.run_dir / "results.json", None)
    status = _json(view, view.run_dir / "status.json", None)
    if status:
        view.state, view.end = status.get("state"), status.get("end")
        attempts = status.get("attempts") or [{}]
        view.start = attempts[0].get("start")


def _json(view: RunView, path: Path, section: str | None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if section:
            view.note(section, f"{path.relative_to(view.run_dir)} is missing")
    except (OSError, ValueError) as exc:
        view.note(section or "summary", f"{path.relative_to(view.run_dir)} cannot be read: {exc}")
    return None


def _records(view: RunView, name: str, section: str) -> list[dict[str, Any]]:
    """A JSON Lines table of cctf/ (tracekit.trace.cctf), its bad lines noted; a missing one noted."""
    cctf_dir = view.run_dir / cctf.CCTF
    if not cctf.has(cctf_dir, name):
        view.note(section, f"{cctf.CCTF}/{name} is missing")
        return []
    return cctf.read_records(cctf_dir, name, view.bad_lines)


def _cctf_json(view: RunView, name: str, section: str, read: Any) -> Any:
    """A JSON document of cctf/ through ``read``; a missing or unreadable one noted (None)."""
    if not cctf.has(view.run_dir / cctf.CCTF, name):
        view.note(section, f"{cctf.CCTF}/{name} is missing")
        return None
    try:
        return read()
    except RunFolderError as exc:
        view.note(section, f"{cctf.CCTF}/{name} cannot be read: {str(exc).split(': ', 1)[-1]}")
        return None


def _host_series(view: RunView, cctf_dir: Path) -> dict[str, HostSeries]:
    if not cctf.has_table(cctf_dir, "host_metrics"):
        view.note("timelines", "cctf/host_metrics/ is missing (no host samples)")
        return {}
    series = {}
    for path in cctf.node_files(cctf_dir, "host_metrics"):
        node = path.stem
        table = cctf.read_table(cctf_dir, "host_metrics", ["ts_ms", "cpu_util_pct", "mem_used_kb", "mem_total_kb"], [node])
        if table.num_rows == 0:
            continue
        used_pct = pc.multiply(pc.divide(pc.cast(table["mem_used_kb"], pa.float64()), table["mem_total_kb"]), 100.0)
        table = pa.table({"ts_ms": table["ts_ms"], "cpu": table["cpu_util_pct"], "mem": used_pct})
        series[node] = _downsample(table)
    if not series:
        view.note("timelines", "cctf/host_metrics/ holds no host samples")
    return series


def _downsample(table: pa.Table) -> HostSeries:
    """Means over equal time buckets, at most MAX_POINTS of them (the whole series when it is shorter)."""
    samples = table.num_rows
    if samples > MAX_POINTS:
        first, last = pc.min_max(table["ts_ms"]).values()
        width = max(1, -(-(last.as_py() - first.as_py() + 1) // MAX_POINTS))
        bucket = pc.divide(pc.subtract(table["ts_ms"], first), width)  # integer division on int64
        table = (
            table.append_column("bucket", bucket)
            .group_by("bucket")
            .aggregate([("ts_ms", "mean"), ("cpu", "mean"), ("mem", "mean")])
            .sort_by("bucket")
            .rename_columns(["bucket", "ts_ms", "cpu", "mem"])
        )
    return HostSeries(
        ts_ms=table["ts_ms"].to_numpy().astype(np.float64),
        cpu_util_pct=table["cpu"].to_numpy(zero_copy_only=False),
        mem_used_pct=table["mem"].to_numpy(zero_copy_only=False),
        samples=samples,
    )


def _longest_tasks(view: RunView, cctf_dir: Path) -> list[TaskDemand]:
    tasks = [t for t in view.tasks if t.get("ok") and t.get("ts_start") is not None and t.get("ts_end") is not None]
    if not tasks:
        view.note("longest", "no task finished successfully")
        return []
    opendc = view.run_dir / "opendc"
    if not (opendc / "fragments.parquet").exists() or not (opendc / "task_ids.jsonl").exists():
        view.note("longest", "opendc/ is missing (the experiment's export.opendc is false, or 'tracekit export opendc' "
                             "was not run): no fragments to show")  # fmt: skip
        return []
    ids = {m["task_id"]: m["id"] for m in read_jsonl(opendc / "task_ids.jsonl", view.bad_lines)}
    longest = sorted((t for t in tasks if t["task_id"] in ids), key=lambda t: t["ts_end"] - t["ts_start"], reverse=True)
    longest = longest[:LONGEST_TASKS]
    if not longest:
        view.note("longest", "no task of the trace is in the OpenDC export")
        return []
    wanted = pa.array([ids[t["task_id"]] for t in longest], pa.int32())
    fragments = ds.dataset(opendc / "fragments.parquet").to_table(filter=pc.field("id").isin(wanted))
    demands = []
    for task in longest:
        opendc_id = ids[task["task_id"]]
        mine = fragments.filter(pc.equal(fragments["id"], opendc_id))  # in time order within a task
        durations = mine["duration"].to_numpy()
        start = task["ts_start"]  # the fragments cover the task from its start to its end
        mhz = (view.nodes.get(task["node"]) or {}).get("cpu_mhz") or 0
        host = _host_window(cctf_dir, task["node"], task["ts_start"], task["ts_end"])
        demands.append(TaskDemand(
            invocation=task,
            fragment_start_ms=start + np.concatenate([[0], np.cumsum(durations)]).astype(np.float64),
            fragment_cores=mine["cpu_usage"].to_numpy() / mhz if mhz else np.zeros(len(mine)),
            host_ts_ms=host[0],
            host_busy_cores=host[1],
        ))  # fmt: skip
    return demands


def _host_window(cctf_dir: Path, node: str, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """The node's host samples from ``start_ms`` to a little after ``end_ms``: (times, CPUs busy)."""
    if not cctf.has_table(cctf_dir, "host_metrics"):
        return np.array([]), np.array([])
    window = (pc.field("ts_ms") >= start_ms) & (pc.field("ts_ms") <= end_ms + 2000)
    host = cctf.read_table(cctf_dir, "host_metrics", ["ts_ms", "per_core_util_pct"], [node], where=window)
    # The sum over the node's CPUs: a busy core counts one whatever the machine's size.
    busy = np.array([sum(cores) / 100.0 for cores in host["per_core_util_pct"].to_pylist()])
    return host["ts_ms"].to_numpy().astype(np.float64), busy
