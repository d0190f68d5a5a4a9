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


# -- raw: proc.csv written by the collector (cumulative counters) ---------------
RAW_PROC = pa.schema(
    [
        _field("ts_ms", pa.int64()),
        _field("pid", pa.int64()),
        _field("create_time_ms", pa.int64()),
        _field("cpu_user_ms", pa.int64()),
        _field("cpu_system_ms", pa.int64()),
        _field("rss_kb", pa.int64()),
        _field("num_threads", pa.int64()),
        _field("read_bytes", pa.int64(), nullable=True),
        _field("write_bytes", pa.int64(), nullable=True),
        _field("ctx_voluntary", pa.int64(), nullable=True),
        _field("ctx_involuntary", pa.int64(), nullable=True),
    ]
)
assert tuple(RAW_PROC.names) == PROC_CSV_COLUMNS

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
        _field("cpu_user_ms", pa.int64()),
        _field("cpu_system_ms", pa.int64()),
        _field("rss_kb", pa.int64()),
        _field("num_threads", pa.int64()),
        _field("read_bytes", pa.int64(), nullable=True),
        _field("write_bytes", pa.int64(), nullable=True),
        _field("ctx_voluntary", pa.int64(), nullable=True),
        _field("ctx_involuntary", pa.int64(), nullable=True),
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
