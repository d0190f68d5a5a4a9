"""Every Arrow schema of Tracekit, declared once.

Writers, readers and the verifier all take their schemas from here; the
JSON Schemas in ``schemas/`` describe the same records, and a test asserts
that both agree (names, order where it matters, nullability).
"""

from __future__ import annotations

import pyarrow as pa


def _field(name: str, kind: pa.DataType, nullable: bool = False, unit: str | None = None,
           description: str | None = None) -> pa.Field:  # fmt: skip
    """A column; one of an export with its unit and what it holds (cctf's take theirs from their JSON Schema)."""
    described = {"unit": unit or "", "description": description} if description else None
    return pa.field(name, kind, nullable=nullable, metadata=described)


# The process counters, cumulative in proc.csv and per interval in proc_metrics.
_PROC_COUNTERS = [
    _field("cpu_user_ms", pa.int64()),
    _field("cpu_system_ms", pa.int64()),
    _field("rss_kb", pa.int64()),
    _field("num_threads", pa.int64()),
    _field("read_bytes", pa.int64(), nullable=True),
    _field("write_bytes", pa.int64(), nullable=True),
    _field("ctx_voluntary", pa.int64(), nullable=True),
    _field("ctx_involuntary", pa.int64(), nullable=True),
]

# -- raw: proc.csv written by the collector (cumulative counters) ---------------
# The last three came later: empty (null) in files of older collectors, whose header lacks them.
RAW_PROC = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("pid", pa.int64()),
        _field("create_time_ms", pa.int64()),
        *_PROC_COUNTERS,
        _field("cpu_ns", pa.int64(), nullable=True),
        _field("run_delay_ns", pa.int64(), nullable=True),
        _field("children_unseen_cpu_ns", pa.int64(), nullable=True),
    ]
)

# -- raw: host.csv, host_cpus.csv, host_net.csv written by the collector --------
# Cumulative counters, one host.csv row per tick (the node's CPUs summed),
# one host_cpus.csv row per tick and CPU, one host_net.csv row per tick and
# network interface: flat tables that Arrow's CSV reader takes at full speed.
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
RAW_DISK_FIELDS = ("read_bytes", "write_bytes", "read_count", "write_count", "busy_ms")
RAW_NET_FIELDS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")
RAW_HOST = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        *(_field(f"cpu_{mode}_ms", pa.int64()) for mode in CPU_MODES),
        _field("mem_total_kb", pa.int64()),
        _field("mem_available_kb", pa.int64()),
        _field("mem_used_kb", pa.int64()),
        _field("mem_free_kb", pa.int64()),
        _field("swap_used_kb", pa.int64()),
        _field("load1", pa.float64()),
        _field("load5", pa.float64()),
        _field("load15", pa.float64()),
        # Empty when the kernel exposes no disk (busy_ms also when it has no such counter).
        *(_field(f"disk_{name}", pa.int64(), nullable=True) for name in RAW_DISK_FIELDS),
    ]
)
RAW_HOST_CPUS = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("cpu", pa.int64()),  # the CPU's number
        *(_field(f"{mode}_ms", pa.int64()) for mode in CPU_MODES),
    ]
)
RAW_HOST_NET = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("iface", pa.string()),
        *(_field(name, pa.int64()) for name in RAW_NET_FIELDS),
    ]
)

# -- raw: cgroup.csv written by the collector: each live task cgroup per tick (cumulative) --
# cgroup: its folder name (tracekit.taskcgroup.cgroup_name of the task id and attempt). The counters are
# tracekit.taskcgroup.COUNTERS (a test keeps them in agreement); empty where the cgroup has no such file.
RAW_CGROUP = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("cgroup", pa.string()),
        _field("cpu_us", pa.int64()),
        _field("cpu_user_us", pa.int64()),
        _field("cpu_system_us", pa.int64()),
        _field("memory_bytes", pa.int64(), nullable=True),
        _field("memory_peak_bytes", pa.int64(), nullable=True),
        _field("pids", pa.int64(), nullable=True),
        _field("io_read_bytes", pa.int64(), nullable=True),
        _field("io_write_bytes", pa.int64(), nullable=True),
    ]
)

# -- cctf: the per-sample tables, Parquet (tracekit.trace.cctf) -----------------
# proc_metrics: one row per followed process and interval. Its leading columns
# are constant per process (the JSON Lines copy formats them once per process).
PROC_METRICS_PER_PROCESS = ("node", "pid", "create_time_ms", "comm", "cgroup", "container_id", "task_id")
PROC_METRICS = pa.schema(
    [
        _field("node", pa.string()),
        _field("pid", pa.int64()),
        _field("create_time_ms", pa.int64()),
        _field("comm", pa.string(), nullable=True),
        _field("cgroup", pa.string(), nullable=True),
        _field("container_id", pa.string(), nullable=True),
        _field("task_id", pa.string(), nullable=True),
        _field("ts_ms", pa.int64()),
        _field("dt_ms", pa.int64()),
        *_PROC_COUNTERS,
        # The interval's run-queue wait (/proc/<pid>/schedstat, the main thread's); null in older traces.
        _field("run_delay_ns", pa.int64(), nullable=True),
    ]
)
# The narrow seed-compatible files: the per-process lead, then these.
PROC_NARROW_PER_PROCESS = ("node", "pid", "create_time_ms")
PROC_CPU_COLUMNS = ("ts_ms", "dt_ms", "cpu_ms")
PROC_RSS_COLUMNS = ("ts_ms", "dt_ms", "rss_kb")

# host_metrics: one row per node and interval between consecutive host samples.
HOST_SHARES = ("user", "system", "iowait", "idle")  # the CPU modes with a share of their own
HOST_METRICS = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("node", pa.string()),
        _field("dt_ms", pa.int64()),
        _field("cpu_util_pct", pa.float64()),
        *(_field(f"cpu_{mode}_pct", pa.float64()) for mode in HOST_SHARES),
        # The node's CPUs present in both samples, in CPU number order.
        _field("per_core_util_pct", pa.list_(_field("item", pa.float64()))),
        _field("mem_total_kb", pa.int64()),
        _field("mem_available_kb", pa.int64()),
        _field("mem_used_kb", pa.int64()),
        _field("swap_used_kb", pa.int64()),
        _field("load1", pa.float64()),
        _field("load5", pa.float64()),
        _field("load15", pa.float64()),
        _field("disk_read_bytes", pa.int64(), nullable=True),
        _field("disk_write_bytes", pa.int64(), nullable=True),
        _field("disk_read_bytes_per_s", pa.float64(), nullable=True),
        _field("disk_write_bytes_per_s", pa.float64(), nullable=True),
    ]
)
# link_metrics: one row per node, interval and network interface (not lo).
LINK_METRICS = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("node", pa.string()),
        _field("iface", pa.string()),
        _field("dt_ms", pa.int64()),
        _field("rx_bytes", pa.int64()),
        _field("tx_bytes", pa.int64()),
        _field("rx_bits_per_s", pa.float64()),
        _field("tx_bits_per_s", pa.float64()),
    ]
)
# task_metrics: one row per task (attempt) and interval between its cgroup's samples, the first from the
# task's start: its whole process tree's CPU (ms in the interval), memory now and peak, processes now, I/O bytes.
TASK_METRICS = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("node", pa.string()),
        _field("task_id", pa.string()),
        _field("attempt", pa.int64()),
        _field("dt_ms", pa.int64()),
        _field("cpu_ms", pa.float64()),
        _field("cpu_user_ms", pa.float64()),
        _field("cpu_system_ms", pa.float64()),
        _field("memory_bytes", pa.int64(), nullable=True),
        _field("memory_peak_bytes", pa.int64(), nullable=True),
        _field("pids", pa.int64(), nullable=True),
        _field("io_read_bytes", pa.int64(), nullable=True),
        _field("io_write_bytes", pa.int64(), nullable=True),
    ]
)
# contention: one row per node and host interval: the node's busy CPU, the run's share of it (its task cgroups
# or, where its tasks had none, its followed processes' samples: source) and the rest, other work
# (tracekit.trace.contention), in cores; the node's tasks' time in the interval; their run-queue wait share.
CONTENTION = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("node", pa.string()),
        _field("dt_ms", pa.int64()),
        _field("cpus", pa.int64()),
        _field("busy_cores", pa.float64()),
        _field("run_cores", pa.float64()),
        _field("other_cores", pa.float64()),
        _field("source", pa.string()),
        _field("task_ms", pa.float64()),
        _field("task_run_delay_share", pa.float64(), nullable=True),
    ]
)

# task_slices: one row per invocation and slice of its time (tracekit.trace.slices): its CPU and memory in each,
# the CPU summing to the invocation's exact total; every export format is built from it.
TASK_SLICES = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("node", pa.string()),
        _field("task_id", pa.string()),
        _field("attempt", pa.int64()),
        _field("dt_ms", pa.int64()),
        _field("cpu_ms", pa.float64()),
        _field("rss_kb", pa.int64(), nullable=True),
    ]
)


def described(schema: pa.Schema, json_schema: str) -> pa.Schema:
    """``schema`` with each field's unit and description, as its JSON Schema (``schemas/<json_schema>``)
    declares them, in the field's metadata: every Parquet file written with it says what its columns hold."""
    from tracekit.schemas import load_schema

    properties = load_schema(json_schema)["properties"]
    return pa.schema([field.with_metadata({"unit": properties[field.name].get("unit", ""),
                                           "description": properties[field.name].get("description", "")})
                      for field in schema])  # fmt: skip


# The tables of cctf/ kept as Parquet, one file per node: <name>/<node>.parquet; each column's unit and
# description come from schemas/cctf/<name>.schema.json, where every cctf field is described once.
PROC_METRICS, HOST_METRICS, LINK_METRICS, TASK_METRICS, TASK_SLICES, CONTENTION = (
    described(schema, f"cctf/{name}") for schema, name in ((PROC_METRICS, "proc_metrics"), (HOST_METRICS, "host_metrics"),
                                                           (LINK_METRICS, "link_metrics"), (TASK_METRICS, "task_metrics"),
                                                           (TASK_SLICES, "task_slices"), (CONTENTION, "contention")))  # fmt: skip
CCTF_TABLES = {"proc_metrics": PROC_METRICS, "host_metrics": HOST_METRICS, "link_metrics": LINK_METRICS,
               "task_metrics": TASK_METRICS, "task_slices": TASK_SLICES, "contention": CONTENTION}  # fmt: skip
# Their sort order within a node's file (the node is the file).
CCTF_SORT_KEYS = {
    "proc_metrics": ("ts_ms", "pid", "create_time_ms"),
    "host_metrics": ("ts_ms",),
    "link_metrics": ("ts_ms", "iface"),
    "task_metrics": ("ts_ms", "task_id", "attempt"),
    "task_slices": ("task_id", "attempt", "ts_ms"),  # a task's slices together, in time order
    "contention": ("ts_ms",),
}

# -- cctf/audit.json: its fields, in order (schemas/cctf/audit.schema.json says what each holds) --
AUDIT_FIELDS = (
    "run_dir", "run_id", "nodes", "tasks_run", "tasks_in_trace", "tasks_in_trace_pct", "tasks_missing_from_trace",
    "invocations", "invocations_ok", "invocations_failed", "failed_task_ids", "invocations_duplicate",
    "invocations_with_samples", "invocations_with_samples_pct", "fragments_per_task", "tasks_with_interior_samples",
    "processes_followed", "proc_samples", "proc_samples_outside_tasks", "proc_samples_wrong_node",
    "cpu_ms_by_source", "cgroup_accounting", "bad_lines", "bad_lines_listed", "rejected", "rejected_listed", "clock_offsets_ms",
    "requests", "service_overhead", "nodes_without_clock_offset", "collectors_died", "foreign_processes", "queue_entries_rejected",
    "contention", "per_node", "notes",
)  # fmt: skip
# What parse may refuse to use as it is (audit.json's rejected_listed[].kind), and what it does instead.
REJECTED_KINDS = {
    "node_folder": "a node folder of another run: left out of the trace",
    "node_part": "a node's cctf-part/ that is damaged or of another run: the node's raw files parsed instead",
    "invocation": "an invocation event of another run, or a second, different one of the same task and attempt: left out",
    "clock_offset": "a clock.json offset that is no number or past belief: the node's timestamps left unshifted",
    "empty_file": "an empty raw file: read as missing",
    "task_cgroups": "a worker's task_cgroups.json that is no JSON object with 'available': read as missing",
}


def parquet_write_options(schema: pa.Schema) -> dict:
    """How cctf's Parquet files are written (``pq.ParquetWriter`` keywords).

    zstd; strings dictionary-encoded (names, cgroups and task ids repeat);
    integers delta-encoded (timestamps and counters change little from row
    to row): writing took half the time of Arrow's default encodings, for
    the same size.
    """
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    integers = [f.name for f in schema if pa.types.is_integer(f.type)]
    return {
        "compression": "zstd",
        "use_dictionary": strings,
        "column_encoding": {name: "DELTA_BINARY_PACKED" for name in integers},
    }


# -- a sweep's summary (tracekit.sweep.summary): summary.parquet / summary.csv, one row per point and figure --
# The point's swept keys are columns too, one per key (named by the dotted key, typed by its values), placed
# after `label` (tracekit.sweep.summary.summary_schema); schemas/sweep/summary_row.schema.json says what each
# of these holds.
SWEEP_SUMMARY = pa.schema(
    [
        _field("point", pa.int64()),
        _field("label", pa.string()),
        _field("figure", pa.string()),
        _field("unit", pa.string()),
        _field("n", pa.int64()),
        _field("n_warning", pa.int64()),
        _field("n_failed", pa.int64()),
        _field("mean", pa.float64(), nullable=True),
        _field("sd", pa.float64(), nullable=True),
        _field("ci95_low", pa.float64(), nullable=True),
        _field("ci95_high", pa.float64(), nullable=True),
        _field("min", pa.float64(), nullable=True),
        _field("max", pa.float64(), nullable=True),
    ]
)
SWEEP_SUMMARY_AXES_AFTER = "label"  # the swept keys' columns come after this one


# -- OpenDC workload format (current `workload` reader, see TRACE-FORMAT.md) ----
# Required columns must be non-nullable with exactly these physical types.
OPENDC_TASKS = pa.schema(
    [
        _field("id", pa.int32(), unit="id", description="0..N-1 by submission time (task_ids.jsonl maps it to the task)"),
        _field("submission_time", pa.int64(), unit="ms since the epoch", description="when the task was queued (controller clock)"),
        _field("duration", pa.int64(), unit="ms", description="from its start to its end (at least 1)"),
        _field("cpu_count", pa.int32(), unit="cores", description="the cores it asked for, else the most one of its slices used, rounded up"),
        _field("cpu_capacity", pa.float64(), unit="MHz", description="cpu_count times its node's core speed"),
        _field("mem_capacity", pa.int64(), unit="kB",
               description="its peak memory (OpenDC's loader reads kB); 0 for an HTTP request, whose memory is its server's"),
        _field("name", pa.string(), nullable=True, unit="", description="node/task_id#attempt: the invocation in the trace"),
        # OpenDC's workflows (its workload format's optional columns): the tasks a task waits for and the ones
        # that wait for it, by id. An HTTP chain's requests; empty for independent tasks.
        _field("parents", pa.list_(pa.int32()), nullable=True, unit="id", description="the tasks it waits for: the request that called it"),
        _field("children", pa.list_(pa.int32()), nullable=True, unit="id", description="the tasks that wait for it: the requests it called"),
    ]
)
OPENDC_FRAGMENTS = pa.schema(
    [
        _field("id", pa.int32(), unit="id", description="the task's id, fragments in task then time order"),
        _field("duration", pa.int64(), unit="ms", description="the slice's length: a sampling interval inside the task, or its tail"),
        _field("cpu_usage", pa.float64(), unit="MHz", description="the task's CPU in the slice: CPU-seconds per second times its node's core MHz"),
    ]
)
OPENDC_TASKS_REQUIRED = ("id", "submission_time", "duration", "cpu_count", "cpu_capacity", "mem_capacity")
OPENDC_FRAGMENTS_REQUIRED = ("id", "duration", "cpu_usage")
