"""Every Arrow schema of Tracekit, declared once.

Writers, readers and the verifier all take their schemas from here; the
JSON Schemas in ``schemas/`` describe the same records, and a test asserts
that both agree (names, order where it matters, nullability).
"""

from __future__ import annotations

import pyarrow as pa

from tracekit.collect.process import PROC_CSV_COLUMNS


def _field(name: str, kind: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, kind, nullable=nullable)


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
RAW_PROC = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("pid", pa.int64()),
        _field("create_time_ms", pa.int64()),
        *_PROC_COUNTERS,
    ]
)
assert tuple(RAW_PROC.names) == PROC_CSV_COLUMNS

# -- raw: host.jsonl written by the collector (cumulative counters) ------------
# `net` is left out: its fields are the node's interface names (each a
# struct of the counters in schemas/raw/host_sample), so the reader infers it.
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
RAW_DISK_FIELDS = ("read_bytes", "write_bytes", "read_count", "write_count", "busy_ms")
_CPU_MS = pa.struct([_field(mode, pa.int64()) for mode in CPU_MODES])
RAW_HOST = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("cpu_ms", _CPU_MS),
        _field("cpu_ms_per_core", pa.list_(_field("item", _CPU_MS))),
        _field("mem_total_kb", pa.int64()),
        _field("mem_available_kb", pa.int64()),
        _field("mem_used_kb", pa.int64()),
        _field("mem_free_kb", pa.int64()),
        _field("swap_used_kb", pa.int64()),
        _field("load1", pa.float64()),
        _field("load5", pa.float64()),
        _field("load15", pa.float64()),
        # null when the kernel exposes no disk; the reader cannot require
        # fields inside a nullable struct (rawrun checks read/write_bytes).
        _field("disk", pa.struct([_field(name, pa.int64(), nullable=True) for name in RAW_DISK_FIELDS]), nullable=True),
    ]
)
# Every host sample has these (the reader refuses a line without one: skipped and reported).
RAW_HOST_REQUIRED = (*(f.name for f in RAW_HOST if not f.nullable), "net")

# -- cctf: proc_metrics (JSONL, and a Parquet copy for fast readers) ------------
# Leading columns are constant per process (formatted once per process).
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
    ]
)
assert tuple(PROC_METRICS.names[: len(PROC_METRICS_PER_PROCESS)]) == PROC_METRICS_PER_PROCESS
# The narrow seed-compatible files: the per-process lead, then these.
PROC_NARROW_PER_PROCESS = ("node", "pid", "create_time_ms")
PROC_CPU_COLUMNS = ("ts_ms", "dt_ms", "cpu_ms")
PROC_RSS_COLUMNS = ("ts_ms", "dt_ms", "rss_kb")

# -- OpenDC workload format (current `workload` reader, see TRACE-FORMAT.md) ----
# Required columns must be non-nullable with exactly these physical types.
OPENDC_TASKS = pa.schema(
    [
        _field("id", pa.int32()),
        _field("submission_time", pa.int64()),
        _field("duration", pa.int64()),
        _field("cpu_count", pa.int32()),
        _field("cpu_capacity", pa.float64()),
        _field("mem_capacity", pa.int64()),
        _field("name", pa.string(), nullable=True),
    ]
)
OPENDC_FRAGMENTS = pa.schema(
    [
        _field("id", pa.int32()),
        _field("duration", pa.int64()),
        _field("cpu_usage", pa.float64()),
    ]
)
OPENDC_TASKS_REQUIRED = ("id", "submission_time", "duration", "cpu_count", "cpu_capacity", "mem_capacity")
OPENDC_FRAGMENTS_REQUIRED = ("id", "duration", "cpu_usage")
