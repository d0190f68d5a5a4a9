"""An export read back with plain pyarrow, as its format's own readers would, and compared with the trace it
came from (cctf/): the acceptance of every export format, used by the end-to-end tests of real runs.

Each reader below knows only the format (its files, columns and units: docs/exports.md), not the exporter's
code: task count, the sum of runtimes (exact: every format keeps milliseconds), the sum of CPU-seconds
(within 0.1%, where the format has CPU), every dependency (where it has them), and for the usage tables the
samples they cover: each Google usage row the CPU of the task's slices in its window, each Alibaba machine
usage row its node's host sample (CPU and memory).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tracekit.trace import cctf, slices
from tracekit.trace.audit import exact_cpu_ms


class Read:
    """What an export says about its tasks, in its ids' order (0..N-1), in one set of units."""

    def __init__(self, runtime_ms: list[int], cpu_ms: list[float] | None, edges: set[tuple[int, int]] | None):
        self.runtime_ms, self.cpu_ms, self.edges = runtime_ms, cpu_ms, edges


def _opendc(out: Path, run_dir: Path) -> Read:
    tasks = pq.read_table(out / "tasks.parquet").to_pylist()
    mhz = {n["node"]: n["cpu_mhz"] for n in json.loads((run_dir / "cctf" / "nodes.json").read_text())}
    node_of = {t["id"]: t["name"].split("/")[0] for t in tasks}
    cpu = [0.0] * len(tasks)
    for f in pq.read_table(out / "fragments.parquet").to_pylist():
        cpu[f["id"]] += f["duration"] * f["cpu_usage"] / mhz[node_of[f["id"]]]  # MHz over the node's MHz: cores
    edges = {(p, t["id"]) for t in tasks for p in t["parents"] or []}
    assert edges == {(t["id"], c) for t in tasks for c in t["children"] or []}
    return Read([t["duration"] for t in sorted(tasks, key=lambda t: t["id"])], cpu, edges)


def _wta(out: Path, run_dir: Path) -> Read:
    tasks = sorted(pq.read_table(out / "tasks" / "schema-1.0" / "part.0.parquet").to_pylist(), key=lambda t: t["id"])
    edges = {(p, t["id"]) for t in tasks for p in t["parents"]}
    assert edges == {(t["id"], c) for t in tasks for c in t["children"]}
    return Read([t["runtime"] for t in tasks], None, edges)  # the archive's tasks carry no CPU time


def _exported(out: Path, run_dir: Path) -> list[dict]:
    """The run's invocations the export in ``out`` holds, in the exports' order (ids 0..N-1)."""
    invocations = cctf.read_records(run_dir / cctf.CCTF, cctf.INVOCATIONS)
    return slices.exported(invocations, json.loads((out / "export.json").read_text()).get("include_failed", False))


def _google_instances(out: Path, run_dir: Path) -> list[tuple[int, int]]:
    """Each exported task's instance (collection_id, instance_index), in the exports' order. Google numbers
    instances by collection (a job: docs/exports.md), so two tasks submitted in one ms may be numbered apart from
    their submission order: the numbering is taken from the jobs, not from the events' times."""
    job_of, members = slices.jobs(_exported(out, run_dir))
    index = {i: position for job in members for position, i in enumerate(job)}
    return [(job + 1, index[i]) for i, job in enumerate(job_of)]


def _google(out: Path, run_dir: Path) -> Read:
    ncu = json.loads((out / "export.json").read_text())["ncu_cores"]
    events = pq.read_table(out / "instance_events.parquet").to_pylist()
    times = {(e["collection_id"], e["instance_index"], e["type"]): e["time"] for e in events}
    instances = _google_instances(out, run_dir)
    assert sorted(instances) == sorted({(e["collection_id"], e["instance_index"]) for e in events})
    cpu: dict[tuple[int, int], float] = {}
    for u in pq.read_table(out / "instance_usage.parquet").to_pylist():
        key = (u["collection_id"], u["instance_index"])
        cpu[key] = cpu.get(key, 0.0) + u["average_usage"]["cpus"] * ncu * (u["end_time"] - u["start_time"]) / 1000
    runtime = [(times.get((*key, 6), times.get((*key, 5))) - times[(*key, 3)]) // 1000 for key in instances]
    return Read(runtime, [cpu.get(key, 0.0) for key in instances], None)  # collections, no task dependencies


def _alibaba(out: Path, run_dir: Path) -> Read:
    from tracekit.trace.export.alibaba import BATCH_INSTANCE

    rows = pacsv.read_csv(out / "batch_instance.csv", read_options=pacsv.ReadOptions(column_names=BATCH_INSTANCE.names)).to_pylist()
    rows.sort(key=lambda r: int(r["instance_name"].removeprefix("ins_")))
    runtime = [round((r["end_time"] - r["start_time"]) * 1000) for r in rows]
    cpu = [r["cpu_avg"] / 100 * ms for r, ms in zip(rows, runtime)]  # 100 is one core
    # The DAG in the task names (M<n>_<parent>...): back to instance ids, within each job.
    number = {(r["job_name"], str(r["task_name"])[1:].split("_")[0]): int(r["instance_name"][4:]) for r in rows}
    edges = {(number[(r["job_name"], parent)], int(r["instance_name"][4:]))
             for r in rows for parent in str(r["task_name"])[1:].split("_")[1:]}  # fmt: skip
    return Read(runtime, cpu, edges)


READERS = {"opendc": _opendc, "wta": _wta, "google": _google, "alibaba": _alibaba}


def assert_round_trip(run_dir: Path, format_name: str, out: Path | None = None) -> int:
    """The export in ``out`` (default RUN_DIR/<format>/) holds the run's exported tasks; their count."""
    out = out or run_dir / format_name
    chosen = _exported(out, run_dir)
    read = READERS[format_name](out, run_dir)
    assert len(read.runtime_ms) == len(chosen), (format_name, len(read.runtime_ms), len(chosen))
    assert sum(read.runtime_ms) == sum(max(1, r["ts_end"] - r["ts_start"]) for r in chosen), format_name
    assert read.runtime_ms == [max(1, r["ts_end"] - r["ts_start"]) for r in chosen], format_name
    if read.cpu_ms is not None:
        measured = [exact_cpu_ms(r) if exact_cpu_ms(r) is not None else r.get("sampled_cpu_ms") or 0 for r in chosen]
        assert abs(sum(read.cpu_ms) - sum(measured)) <= 0.001 * max(sum(measured), 1.0), (format_name, sum(read.cpu_ms), sum(measured))
    if read.edges is not None:  # a request's parent: the request whose span called it (same trace id)
        by_span = {(r["trace_id"], r["span_id"]): i for i, r in enumerate(chosen) if r.get("span_id")}
        called = {(by_span[(r["trace_id"], r["parent_span_id"])], i) for i, r in enumerate(chosen)
                  if r.get("parent_span_id") and (r["trace_id"], r["parent_span_id"]) in by_span}  # fmt: skip
        assert read.edges == called, format_name
    if format_name == "alibaba":
        _machine_usage_holds_the_host_samples(out, run_dir)
    if format_name == "google":
        _usage_windows_hold_the_slices_they_cover(out, run_dir, chosen)
    return len(chosen)


def _usage_windows_hold_the_slices_they_cover(out: Path, run_dir: Path, chosen: list[dict]) -> None:
    """Every instance_usage row (a task in one window) holds the CPU of the task's slices it covers (a slice
    across its edges by its share of the slice's time), within 0.1%."""
    summary = json.loads((out / "export.json").read_text())
    t0_ms, ncu = summary["trace_start_ms"], summary["ncu_cores"]
    position = {key: i for i, key in enumerate(_google_instances(out, run_dir))}
    cut = slices.cut(chosen, run_dir / cctf.CCTF).slices.to_pylist()
    of_task: dict[int, list[tuple[int, int, float]]] = {}
    for s in cut:
        of_task.setdefault(s["id"], []).append((s["end_ms"] - s["duration"], s["end_ms"], s["cpu_ms"]))
    rows = pq.read_table(out / "instance_usage.parquet").to_pylist()
    assert rows
    for u in rows:
        start, end = ((u[name] - 600_000_000) / 1000 + t0_ms for name in ("start_time", "end_time"))
        covered = sum(cpu * max(0.0, min(end, b) - max(start, a)) / (b - a)
                      for a, b, cpu in of_task.get(position[(u["collection_id"], u["instance_index"])], []) if b > a)  # fmt: skip
        held = u["average_usage"]["cpus"] * ncu * (end - start)
        assert abs(held - covered) <= 0.001 * max(covered, 1.0), (u, held, covered)


def _machine_usage_holds_the_host_samples(out: Path, run_dir: Path) -> None:
    """Every host interval of every exported machine, its busy share as cctf has it."""
    from tracekit.trace.export.alibaba import MACHINE_USAGE

    machines = json.loads((out / "export.json").read_text())["machines"]
    usage = pacsv.read_csv(out / "machine_usage.csv", read_options=pacsv.ReadOptions(column_names=MACHINE_USAGE.names)).to_pylist()
    host = cctf.read_table(run_dir / cctf.CCTF, "host_metrics", ["node", "ts_ms", "cpu_util_pct", "mem_used_kb",
                                                                 "mem_total_kb"]).to_pylist()  # fmt: skip
    for machine, node in machines.items():
        ours = [u["cpu_util_percent"] for u in usage if u["machine_id"] == machine]
        theirs = [h["cpu_util_pct"] for h in sorted(host, key=lambda h: h["ts_ms"]) if h["node"] == node]
        assert len(ours) == len(theirs) and all(abs(a - b) < 1e-9 for a, b in zip(ours, theirs)), machine
        memory = [u["mem_util_percent"] for u in usage if u["machine_id"] == machine]
        used = [100 * h["mem_used_kb"] / h["mem_total_kb"] for h in sorted(host, key=lambda h: h["ts_ms"]) if h["node"] == node]
        assert all(abs(a - b) < 1e-9 for a, b in zip(memory, used)), machine
