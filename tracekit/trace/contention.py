"""A node's CPU shared with other work: ``host_metrics + task_metrics | proc_metrics + invocations -> contention``.

input:  one node's cctf tables (host_metrics; task_metrics where its tasks ran in cgroups of their
        own, else proc_metrics), its invocations, whether its worker made task cgroups (nodes.json's
        task_cgroups); controller clock
output: a CONTENTION table (one row per host interval: the node's busy CPU, the run's share of it,
        the rest: other work) and the audit's figures for the node (its ``contention`` section)

Other work is what kept the node's CPUs busy outside this run's tasks: another run, a daemon, a
noisy neighbour, but also Tracekit's own collector, worker and dispatcher (a floor of a few
hundredths of a core: the collector's self records in collector.jsonl give its share). The run's
CPU is its task cgroups' (exact, every process of a task) where the node's worker made them, else
the samples of the run's followed processes (a task's processes shorter than an interval may be
missed: other work is then overstated by that much). Each figure of the run is shared among the
host intervals it overlaps, in proportion to the overlap.

A task was contended while the node's CPUs were saturated (busy at least SATURATED_BUSY_PCT) and
other work held at least OTHER_SHARE of them: its measured duration is then longer than on a node
of its own. Where the collector wrote the processes' run-queue wait (proc_metrics' RUN_DELAY column,
from /proc/<pid>/schedstat; older traces lack it) the tasks' wait share says how much longer:
wait / (wait + CPU) of their processes.

Nodes of one machine without CPU sets of their own (the same boot_id, CPU sets that overlap) share
its CPUs: each one's host samples hold the others' tasks too, which are the run's, not other work.

It is made once a node's part is in place (it needs both of its jobs: the host samples and the task
cgroups come from two parallel jobs, or from a part made on the node that stays as it was), and those
of the nodes on its CPUs, as a job of its own in parse's worker processes while other nodes' parts are
still made, in its own table rather than as columns of host_metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace import cctf
from tracekit.trace.arrowjson import round_like_python
from tracekit.trace.records import CONTENTION, PROC_METRICS

if TYPE_CHECKING:
    import numpy as np
# numpy is imported where used: a node's parse (tracekit parse --node-part) reaches this module through the
# audit's thresholds, and a node's venv has no numpy (tracekit.experiment.wheelhouse.NODE_DISTRIBUTIONS).

SATURATED_BUSY_PCT = 90.0  # the node's CPUs this busy (the host sample's cpu_util_pct) are saturated
OTHER_SHARE = 0.10  # other work holding this share of the node's CPUs or more is meaningful
NOTED_TASK_SHARE = 0.10  # a node whose tasks were contended this share of their time or more is noted
RUN_DELAY = "run_delay_ns"  # proc_metrics: run-queue wait in the interval (schedstat); absent in older traces
SOURCES = ("task_cgroups", "process_samples")
DIGITS = 3


@dataclass(frozen=True)
class NodeContention:
    table: pa.Table  # CONTENTION
    figures: dict[str, Any]  # the audit's contention.nodes[node]


@dataclass(frozen=True)
class Spans:
    """Values over time, one per row: [start, end] (ms) and the value (arrays of one length)."""

    start: np.ndarray  # int64
    end: np.ndarray  # int64
    value: np.ndarray  # float64

    @staticmethod
    def of(rows: Iterable[tuple[int, int, float]]) -> Spans:
        import numpy as np

        rows = list(rows)
        return Spans(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                     np.array([r[2] for r in rows], np.float64))  # fmt: skip

    @staticmethod
    def joined(parts: Iterable[Spans]) -> Spans:
        import numpy as np

        parts = list(parts)
        if not parts:
            return Spans.of([])
        return Spans(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("start", "end", "value")))

    def rows(self) -> list[tuple[int, int, float]]:
        return list(zip(self.start.tolist(), self.end.tolist(), self.value.tolist()))


def _spread(starts: np.ndarray, ends: np.ndarray, spans: Spans) -> np.ndarray:
    """Each row's value shared among the host intervals [starts[i], ends[i]] it overlaps, in proportion to
    the overlap; a row of no length goes to the interval holding it. The intervals are in time order and do
    not overlap (host samples). Vectorized: one pass per interval a row reaches into (rows reach one or two)."""
    import numpy as np

    out = np.zeros(len(ends))
    if not len(ends) or not len(spans.value):
        return out
    point = spans.end <= spans.start
    at = spans.end[point]
    i = np.searchsorted(ends, at, side="left")  # the first interval that ends at or after the point
    held = i < len(ends)
    held[held] = starts[i[held]] <= at[held]
    np.add.at(out, i[held], spans.value[point][held])
    start, end, value = spans.start[~point], spans.end[~point], spans.value[~point]
    length = (end - start).astype(np.float64)
    i = np.searchsorted(ends, start, side="right")  # the first interval that ends after the row starts
    while len(i):
        live = i < len(ends)
        live[live] = starts[i[live]] < end[live]
        i, start, end, value, length = i[live], start[live], end[live], value[live], length[live]
        overlap = np.minimum(end, ends[i]) - np.maximum(start, starts[i])
        counted = overlap > 0
        np.add.at(out, i[counted], value[counted] * overlap[counted] / length[counted])
        i = i + 1
    return out


def _per_interval(table: pa.Table, values: dict[str, pa.Array]) -> Iterable[tuple[str, Spans]]:
    """For each named value: its sum over the rows of each (interval start, end), in time order. The same
    rows in any order give the same floats: integer values are summed exactly, float ones in the order of
    their values."""
    grouped = pa.table({"ts_ms": table.column("ts_ms"), "dt_ms": table.column("dt_ms"), **values})
    floats = [name for name, column in values.items() if pa.types.is_floating(column.type)]
    if floats:  # float addition is not associative: a canonical order first
        grouped = grouped.sort_by([("ts_ms", "ascending"), ("dt_ms", "ascending"), *((n, "ascending") for n in floats)])
    grouped = grouped.group_by(["ts_ms", "dt_ms"], use_threads=False).aggregate([(name, "sum") for name in values])
    grouped = grouped.sort_by([("ts_ms", "ascending"), ("dt_ms", "ascending")])
    end = grouped.column("ts_ms").to_numpy()
    start = end - grouped.column("dt_ms").to_numpy()
    for name in values:
        sums = pc.cast(pc.fill_null(grouped.column(f"{name}_sum"), 0), pa.float64()).to_numpy()
        yield name, Spans(start, end, sums)


def _cpu_ms(table: pa.Table) -> pa.Array:
    """user + system ms: integers, summed exactly."""
    return pc.add(table.column("cpu_user_ms"), table.column("cpu_system_ms"))


def run_cpu(task_metrics: pa.Table | None, proc_metrics: pa.Table | None) -> Spans:
    """A node's run CPU (ms) over time: its task cgroups' samples, else (None) its followed processes'
    samples."""
    run = task_metrics if task_metrics is not None else proc_metrics
    if run is None or run.num_rows == 0:
        return Spans.of([])
    cpu = pc.cast(run.column("cpu_ms"), pa.float64()) if task_metrics is not None else _cpu_ms(run)
    [(_, spans)] = _per_interval(run, {"cpu_ms": cpu})
    return spans


def node_contention(
    node: str,
    host: pa.Table,
    invocations: list[dict[str, Any]],
    task_metrics: pa.Table | None,
    proc_metrics: pa.Table | None,
    cores_usable: int | None = None,
    neighbours_cpu: Spans | None = None,
) -> NodeContention:
    """One node's contention. ``task_metrics``: its tasks' cgroup samples, or None when its tasks had
    no cgroups of their own (then ``proc_metrics``, its followed processes' samples, stands for the
    run). ``proc_metrics`` may hold RUN_DELAY (the tasks' wait share), and may be None when neither is
    needed. ``cores_usable``: the node's CPUs where a host sample lists none (no host_cpus.csv).
    ``neighbours_cpu``: the run CPU (``run_cpu``) of the run's other nodes on the same CPUs (nodes of one
    machine without CPU sets of their own): the run's too, not other work."""
    source = SOURCES[0] if task_metrics is not None else SOURCES[1]
    ends = host.column("ts_ms").to_numpy()
    starts = ends - host.column("dt_ms").to_numpy()
    cpus = [len(cores) or (cores_usable or 0) for cores in host.column("per_core_util_pct").to_pylist()]
    busy_pct = host.column("cpu_util_pct").to_pylist()
    busy = [pct * n / 100.0 for pct, n in zip(busy_pct, cpus)]

    run_spans = run_cpu(task_metrics, proc_metrics)
    run_ms = _spread(starts, ends, Spans.joined([run_spans, neighbours_cpu]) if neighbours_cpu is not None else run_spans).tolist()
    dated = [r for r in invocations if r.get("ts_start") is not None and r.get("ts_end") is not None]
    task_ms = _spread(starts, ends, Spans.of((r["ts_start"], r["ts_end"], r["ts_end"] - r["ts_start"]) for r in dated)).tolist()
    wait_ms, waited_cpu_ms = _run_delay(proc_metrics, starts, ends)
    starts, ends = starts.tolist(), ends.tolist()

    run_cores = [ms / (end - start) for ms, start, end in zip(run_ms, starts, ends)]
    other = [max(0.0, b - r) for b, r in zip(busy, run_cores)]
    wait_share = [None if w is None or w + c <= 0 else w / (w + c) for w, c in zip(wait_ms, waited_cpu_ms)]
    table = pa.table({
        "ts_ms": host.column("ts_ms"), "node": pa.array([node] * len(ends), pa.string()),
        "dt_ms": host.column("dt_ms"), "cpus": pa.array(cpus, pa.int64()),
        "busy_cores": _rounded(busy), "run_cores": _rounded(run_cores), "other_cores": _rounded(other),
        "source": pa.array([source] * len(ends), pa.string()), "task_ms": _rounded(task_ms),
        "task_run_delay_share": _rounded(wait_share),
    }, schema=CONTENTION)  # fmt: skip
    return NodeContention(table, _figures(node, source, busy_pct, cpus, other, task_ms, wait_ms, waited_cpu_ms))


def _run_delay(proc: pa.Table | None, starts: np.ndarray, ends: np.ndarray) -> tuple[list, list]:
    """Per interval, the run-queue wait of the tasks' processes and their CPU in the same samples
    (None where no sample of a task's process has a wait)."""
    nothing = [None] * len(ends)
    if proc is None or RUN_DELAY not in proc.schema.names:
        return nothing, nothing
    known = proc.filter(pc.and_(pc.is_valid(proc.column("task_id")), pc.is_valid(proc.column(RUN_DELAY))))
    if known.num_rows == 0:
        return nothing, nothing
    # Summed in ns (integers: exact, whatever the rows' order), then ms.
    per_interval = _per_interval(known, {"wait": known.column(RUN_DELAY), "cpu": _cpu_ms(known)})
    spread = {name: _spread(starts, ends, Spans(spans.start, spans.end, spans.value / 1e6 if name == "wait" else spans.value)).tolist()
              for name, spans in per_interval}  # fmt: skip
    # An interval none of whose samples had a wait says nothing (rather than "no wait").
    [(_, seen)] = _per_interval(known, {"one": pa.array([1] * known.num_rows, pa.int64())})
    present = _spread(starts, ends, seen).tolist()
    return ([w if p else None for w, p in zip(spread["wait"], present)],
            [c if p else None for c, p in zip(spread["cpu"], present)])  # fmt: skip


def _rounded(values: list[float | None]) -> pa.Array:
    """As Python's round(v, DIGITS) gives them, a column at a time."""
    return round_like_python(pa.array(values, pa.float64()), DIGITS)


def _figures(node: str, source: str, busy_pct: list[float], cpus: list[int], other: list[float],
             task_ms: list[float], wait_ms: list, waited_cpu_ms: list) -> dict[str, Any]:  # fmt: skip
    """The audit's figures for the node: shares of the tasks' time (weighted by how many ran)."""
    task_total = sum(task_ms)
    saturated = [pct >= SATURATED_BUSY_PCT for pct in busy_pct]
    contended = [s and n > 0 and o >= OTHER_SHARE * n for s, n, o in zip(saturated, cpus, other)]

    def share(flags: list[bool]) -> float | None:
        return round(sum(t for t, f in zip(task_ms, flags) if f) / task_total, DIGITS) if task_total else None

    waits = [(w, c) for w, c in zip(wait_ms, waited_cpu_ms) if w is not None]
    waited = sum(w for w, _ in waits)
    runnable = waited + sum(c for _, c in waits)
    figures = {
        "source": source,
        "intervals": len(busy_pct),
        "cpus": max(cpus, default=0),
        "task_time_s": round(task_total / 1000, DIGITS),
        "saturated_task_share": share(saturated),
        "contended_task_share": share(contended),
        "other_cores_mean": round(sum(t * o for t, o in zip(task_ms, other)) / task_total, DIGITS)
        if task_total else None,
        "task_run_delay_share": round(waited / runnable, DIGITS) if runnable > 0 else None,
    }
    figures["note"] = note(node, figures)
    return figures


def note(node: str, figures: dict[str, Any]) -> str | None:
    """The audit's note on a node whose tasks were contended NOTED_TASK_SHARE of their time or more."""
    share = figures["contended_task_share"]
    if share is None or share < NOTED_TASK_SHARE:
        return None
    text = (f"{node}: tasks shared saturated CPUs with other work for {share:.0%} of their time (other work: "
            f"{figures['other_cores_mean']:.1f} cores on average while they ran")  # fmt: skip
    if figures["task_run_delay_share"] is not None:
        text += f"; their processes waited for a CPU {figures['task_run_delay_share']:.0%} of their runnable time"
    if figures["source"] == "process_samples":
        text += "; the run's CPU from its process samples: its tasks had no cgroups of their own"
    return text + "): their durations are longer than on a node of their own"


def sharing_cpus(node_records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """node -> the other nodes on its CPUs: the same machine (boot_id) and CPU sets that overlap (as the
    OpenDC export makes them one host)."""
    shared: dict[str, list[str]] = {}
    for record in node_records:
        cpus, boot = set(record.get("cpus") or ()), record.get("boot_id")
        shared[record["node"]] = [other["node"] for other in node_records if other is not record and boot
                                  and other.get("boot_id") == boot and cpus & set(other.get("cpus") or ())]  # fmt: skip
    return shared


def _node_tables(cctf_dir: Path, record: dict[str, Any], wait_too: bool) -> tuple[pa.Table | None, pa.Table | None]:
    """The node's task_metrics (None: its tasks had no cgroups) and, when needed, proc_metrics (the bulk
    table: only the columns used)."""
    node = record["node"]
    in_cgroups = bool((record.get("task_cgroups") or {}).get("available"))
    tasks = cctf.read_table(cctf_dir, "task_metrics", ["ts_ms", "dt_ms", "cpu_ms"], nodes=[node]) if in_cgroups else None
    delay_known = wait_too and RUN_DELAY in PROC_METRICS.names
    if in_cgroups and not delay_known:
        return tasks, None
    columns = ["ts_ms", "dt_ms", "task_id", "cpu_user_ms", "cpu_system_ms", *([RUN_DELAY] if delay_known else [])]
    return tasks, cctf.read_table(cctf_dir, "proc_metrics", columns, nodes=[node])


def write_node_contention(cctf_dir: Path, record: dict[str, Any], task_times: list[tuple[int, int]],
                          neighbours: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """cctf_dir/contention/<node>.parquet of one node (its host_metrics, task_metrics and proc_metrics, and
    those of ``neighbours``, the run's other nodes on its CPUs: sharing_cpus, already there); its figures for
    the audit. ``task_times``: its invocations' (ts_start, ts_end). One job per node: parse runs them in its
    worker processes, each as soon as the tables it reads are in place."""
    node = record["node"]
    beside = Spans.joined(run_cpu(*_node_tables(cctf_dir, other, wait_too=False)) for other in neighbours)
    host = cctf.read_table(cctf_dir, "host_metrics", nodes=[node])
    tasks, proc = _node_tables(cctf_dir, record, wait_too=True)
    dated = [{"ts_start": start, "ts_end": end} for start, end in task_times]
    result = node_contention(node, host, dated, tasks, proc, record.get("cores_usable"), beside)
    cctf.write_table(cctf.node_file(cctf_dir, "contention", node), "contention", result.table)
    return result.figures
