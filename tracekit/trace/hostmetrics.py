"""Host samples: cumulative ``host.csv``, ``host_cpus.csv``, ``host_net.csv`` -> ``host_metrics`` and ``link_metrics``.

input:  one node's host samples (rawrun.read_host_samples, in file order),
        the node's clock offset
output: a HOST_METRICS table (one row per interval between consecutive
        samples) and a LINK_METRICS table (one row per interval and network
        interface but lo, interfaces in name order), controller clock

Vectorised: every interval is a pair of samples (previous, current), and
each figure is an Arrow kernel over all pairs at once. A CPU or an
interface counts in an interval when both samples have it. Shares are
``100.0 * delta / total`` and rates ``delta * 1000.0 / dt_ms``, rounded
like Python's ``round(x, 3)``, so the JSON Lines copy is what a per-record
implementation would write.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace.arrowjson import round_like_python, row_numbers, shifted_down
from tracekit.trace.rawrun import HostSamples
from tracekit.trace.records import CPU_MODES, HOST_METRICS, HOST_SHARES, LINK_METRICS

# Time the CPU spent doing nothing; everything else counts as busy.
_IDLE_MODES = ("idle", "iowait")
DIGITS = 3  # percentages and rates are rounded to 3 decimals


def _as_float(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.float64(), safe=False)  # int -> float as Python's float(int) does


def _busy_pct(now: dict[str, pa.Array], before: dict[str, pa.Array]) -> tuple[pa.Array, dict[str, pa.Array]]:
    """Busy % and the share of each HOST_SHARES mode, from per-mode cumulative CPU ms.

    A pair whose total did not grow gives 0.0 everywhere.
    """
    delta = {mode: pc.subtract(now[mode], before[mode]) for mode in CPU_MODES}
    total = delta[CPU_MODES[0]]
    for mode in CPU_MODES[1:]:
        total = pc.add(total, delta[mode])
    grew = pc.greater(total, 0)
    total_ms = _as_float(total)

    def pct(part: pa.Array) -> pa.Array:
        return round_like_python(pc.if_else(grew, pc.divide(pc.multiply(_as_float(part), 100.0), total_ms), 0.0), DIGITS)

    busy = pct(pc.subtract(pc.subtract(total, delta[_IDLE_MODES[0]]), delta[_IDLE_MODES[1]]))
    return busy, {mode: pct(delta[mode]) for mode in HOST_SHARES}


def _rate(delta: pa.Array, dt_ms: pa.Array) -> pa.Array:
    """Per second, from a delta over ``dt_ms``: ``delta * 1000.0 / dt_ms``, rounded."""
    return round_like_python(pc.divide(pc.multiply(_as_float(delta), 1000.0), _as_float(dt_ms)), DIGITS)


def _grown(now: pa.Array, before: pa.Array) -> pa.Array:
    """now - before, at least 0 (a counter that went back adds nothing); null stays null."""
    return pc.max_element_wise(pc.subtract(now, before), 0, skip_nulls=False)


def _occurrence(values: pa.Array) -> pa.Array:
    """For each value, how many earlier ones are equal to it (0 for the first of a value)."""
    order = pc.sort_indices(values)  # stable: equal values keep their order
    ordered = pc.take(values, order)
    position = row_numbers(len(values))
    starts = pc.fill_null(pc.not_equal(ordered, shifted_down(ordered)), True)
    first_of_value = pc.fill_null_forward(pc.if_else(starts, position, pa.scalar(None, pa.int64())))
    return pc.take(pc.subtract(position, first_of_value), pc.inverse_permutation(pc.cast(order, pa.int64())))


def _sample_keys(table: pa.Table, key: str) -> pa.Table:
    """``table`` with ``occurrence``: (ts_ms, occurrence) names the host sample a row belongs to.

    A clock that steps back can give two samples the same ts_ms. The rows
    of one sample are written together, ``key`` (CPU number, interface
    name) rising, so a new sample starts where ts_ms changes or ``key``
    does not rise. The samples of one ts_ms are told apart by their order,
    as host.csv's rows are (``_occurrence`` of its ts_ms).
    """
    table = table.combine_chunks()
    ts = _array(table.column("ts_ms"))
    if len(ts) == 0:
        return table.append_column("occurrence", pa.array([], pa.int64()))
    column = _array(table.column(key))
    starts = pc.fill_null(pc.or_(pc.not_equal(ts, shifted_down(ts)), pc.less_equal(column, shifted_down(column))), True)
    sample_of_row = pc.subtract(pc.cumulative_sum(pc.cast(starts, pa.int64())), 1)
    occurrence = pc.take(_occurrence(pc.filter(ts, starts)), sample_of_row)
    return table.append_column("occurrence", occurrence)


def _intervals(host_ts: pa.Array) -> pa.Table:
    """The pairs of consecutive samples: pair, ts_ms of the current sample, before_ts of the
    previous one, their rows in host.csv.

    Samples come in time order (the collector writes them so); one that goes
    back in time (a collector restarted with a stepped clock) starts a new
    series instead of giving a negative interval.
    """
    if len(host_ts) < 2:
        rows = pa.array([], pa.int64())
    else:
        rows = pc.add(pc.indices_nonzero(pc.greater(host_ts.slice(1), host_ts.slice(0, len(host_ts) - 1))), 1)
    before_rows = pc.subtract(rows, 1)
    return pa.table(
        {
            "pair": row_numbers(len(rows)),
            "ts_ms": pc.take(host_ts, rows),
            "before_ts": pc.take(host_ts, before_rows),
            "row": rows,
            "before_row": before_rows,
        }
    )


def _paired(samples: pa.Table, intervals: pa.Table, key: str, values: tuple[str, ...], host_ts: pa.Array) -> pa.Table:
    """Rows of ``samples`` (ts_ms, key, values) present in both samples of an interval.

    Columns: pair, ``key``, each value now and ``before_<value>``; ordered by (pair, key).
    """
    samples = samples.select(["ts_ms", key, *values]).combine_chunks()
    regular = _regular_layout(samples, key, host_ts)
    if regular is not None:
        return _paired_by_position(samples, intervals, key, values, regular)
    keyed = _sample_keys(samples, key)
    occurrence = _occurrence(host_ts)
    intervals = intervals.append_column("occurrence", pc.take(occurrence, intervals.column("row")))
    intervals = intervals.append_column("before_occurrence", pc.take(occurrence, intervals.column("before_row")))
    now = keyed.join(
        intervals.select(["pair", "ts_ms", "occurrence", "before_ts", "before_occurrence"]),
        ["ts_ms", "occurrence"], join_type="inner", use_threads=False,
    )  # fmt: skip
    before = keyed.rename_columns(["before_ts", key, *(f"before_{name}" for name in values), "before_occurrence"])
    both = now.join(before, ["before_ts", "before_occurrence", key], join_type="inner", use_threads=False)
    return both.sort_by([("pair", "ascending"), (key, "ascending")])


def _regular_layout(samples: pa.Table, key: str, host_ts: pa.Array) -> int | None:
    """Rows per sample when every host sample has the same ``key``s, in the same order, in
    the same places (the usual case: a fixed set of CPUs, of interfaces); else None."""
    if len(host_ts) == 0 or samples.num_rows == 0 or samples.num_rows % len(host_ts):
        return None
    per_sample = samples.num_rows // len(host_ts)
    row = row_numbers(samples.num_rows)
    sample = pc.divide(row, per_sample)  # integer division
    place = pc.subtract(row, pc.multiply(sample, per_sample))
    keys = _array(samples.column(key))
    first = keys.slice(0, per_sample)
    same_time = pc.all(pc.equal(_array(samples.column("ts_ms")), pc.take(host_ts, sample))).as_py()
    if not same_time or not pc.all(pc.equal(keys, pc.take(first, place))).as_py():
        return None
    if per_sample > 1 and not pc.all(pc.greater(first.slice(1), first.slice(0, per_sample - 1))).as_py():
        return None  # a key twice in one sample
    return per_sample


def _paired_by_position(
    samples: pa.Table, intervals: pa.Table, key: str, values: tuple[str, ...], per_sample: int
) -> pa.Table:
    """``_paired`` for a regular layout: sample k's rows are rows k * per_sample ... (k + 1) * per_sample - 1."""
    count = intervals.num_rows * per_sample
    element = row_numbers(count)
    pair = pc.divide(element, per_sample)
    place = pc.subtract(element, pc.multiply(pair, per_sample))
    now_rows = pc.add(pc.multiply(pc.take(intervals.column("row"), pair), per_sample), place)
    before_rows = pc.add(pc.multiply(pc.take(intervals.column("before_row"), pair), per_sample), place)
    columns = {"pair": pair, "ts_ms": pc.take(samples.column("ts_ms"), now_rows),
               "before_ts": pc.take(samples.column("ts_ms"), before_rows), key: pc.take(samples.column(key), now_rows)}  # fmt: skip
    for name in values:
        columns[name] = pc.take(samples.column(name), now_rows)
        columns[f"before_{name}"] = pc.take(samples.column(name), before_rows)
    return pa.table(columns)


def _per_core_pct(cpus: pa.Table, intervals: pa.Table, host_ts: pa.Array) -> pa.Array:
    """Per interval, the busy % of each CPU present in both samples, in CPU number order."""
    modes = tuple(f"{mode}_ms" for mode in CPU_MODES)
    both = _paired(cpus, intervals, "cpu", modes, host_ts)
    busy, _ = _busy_pct(
        {mode: both.column(f"{mode}_ms") for mode in CPU_MODES},
        {mode: both.column(f"before_{mode}_ms") for mode in CPU_MODES},
    )
    # Offsets of each interval's CPUs (intervals without any get an empty list).
    counts = pa.table({"pair": both.column("pair")}).group_by("pair", use_threads=False).aggregate([("pair", "count")])
    per_pair = pc.fill_null(
        pc.take(counts.column("pair_count"), pc.index_in(intervals.column("pair"), value_set=counts.column("pair"))), 0
    )
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), _array(pc.cumulative_sum(pc.cast(per_pair, pa.int32())))])
    values = _array(busy)
    return pa.ListArray.from_arrays(offsets, values, type=HOST_METRICS.field("per_core_util_pct").type)


def build_host_metrics(node: str, samples: HostSamples, clock_offset_ms: int) -> tuple[pa.Table, pa.Table]:
    """(HOST_METRICS, LINK_METRICS) of one node."""
    host = samples.host.combine_chunks()
    host_ts = _array(host.column("ts_ms"))
    intervals = _intervals(host_ts)
    count = intervals.num_rows
    now_rows, before_rows = intervals.column("row"), intervals.column("before_row")

    def now(name: str) -> pa.Array:
        return pc.take(host.column(name), now_rows)

    def before(name: str) -> pa.Array:
        return pc.take(host.column(name), before_rows)

    dt_ms = pc.subtract(intervals.column("ts_ms"), intervals.column("before_ts"))
    busy, shares = _busy_pct(
        {mode: now(f"cpu_{mode}_ms") for mode in CPU_MODES}, {mode: before(f"cpu_{mode}_ms") for mode in CPU_MODES}
    )
    disk = {}
    for name in ("read_bytes", "write_bytes"):
        column = f"disk_{name}"
        disk[name] = _grown(now(column), before(column))  # null where either sample had no disk
    columns = {
        "ts_ms": pc.add(intervals.column("ts_ms"), clock_offset_ms),
        "node": pa.array([node] * count, pa.string()),
        "dt_ms": dt_ms,
        "cpu_util_pct": busy,
        **{f"cpu_{mode}_pct": shares[mode] for mode in HOST_SHARES},
        "per_core_util_pct": _per_core_pct(samples.cpus, intervals, host_ts),
        **{name: now(name) for name in ("mem_total_kb", "mem_available_kb", "mem_used_kb", "swap_used_kb")},
        **{name: now(name) for name in ("load1", "load5", "load15")},
        "disk_read_bytes": disk["read_bytes"],
        "disk_write_bytes": disk["write_bytes"],
        "disk_read_bytes_per_s": _rate(disk["read_bytes"], dt_ms),
        "disk_write_bytes_per_s": _rate(disk["write_bytes"], dt_ms),
    }
    host_table = pa.table([_typed(columns[f.name], f.type) for f in HOST_METRICS], schema=HOST_METRICS)
    return host_table, _link_metrics(node, samples.net, intervals, host_ts, clock_offset_ms)


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _typed(values: pa.Array | pa.ChunkedArray, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
    return values if values.type == kind else values.cast(kind)


def _link_metrics(node: str, net: pa.Table, intervals: pa.Table, host_ts: pa.Array, clock_offset_ms: int) -> pa.Table:
    """Per interval, one row per interface present in both samples (not lo), in name order."""
    net = net.filter(pc.not_equal(net.column("iface"), "lo"))
    both = _paired(net, intervals, "iface", ("rx_bytes", "tx_bytes"), host_ts)
    dt_ms = pc.subtract(both.column("ts_ms"), both.column("before_ts"))
    rx = _grown(both.column("rx_bytes"), both.column("before_rx_bytes"))
    tx = _grown(both.column("tx_bytes"), both.column("before_tx_bytes"))
    columns = {
        "ts_ms": pc.add(both.column("ts_ms"), clock_offset_ms),
        "node": pa.array([node] * both.num_rows, pa.string()),
        "iface": both.column("iface"),
        "dt_ms": dt_ms,
        "rx_bytes": rx,
        "tx_bytes": tx,
        "rx_bits_per_s": _rate(pc.multiply(rx, 8), dt_ms),
        "tx_bits_per_s": _rate(pc.multiply(tx, 8), dt_ms),
    }
    return pa.table([_typed(columns[f.name], f.type) for f in LINK_METRICS], schema=LINK_METRICS)
