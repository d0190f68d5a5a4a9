"""Host samples: cumulative ``host.jsonl`` records -> ``host_metrics`` and ``link_metrics``.

input:  one node's host samples (rawrun.read_host_samples: RAW_HOST + net,
        in file order), the node's clock offset
output: the JSON Lines of host_metrics (one per interval between consecutive
        samples) and link_metrics (one per interval and network interface)

Vectorised: every interval is a pair of rows (previous, current), and each
figure is an Arrow kernel over all pairs at once. The arithmetic is the
same, operation by operation, as the per-record version it replaced
(``100.0 * delta / total``, rounded like ``round(x, 3)``), so the output is
too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.trace.arrowjson import float_text, json_text, object_lines
from tracekit.trace.records import CPU_MODES

# Time the CPU spent doing nothing; everything else counts as busy.
_IDLE_MODES = ("idle", "iowait")
_SHARES = ("user", "system", "iowait", "idle")  # per-mode shares written to host_metrics
DIGITS = 3  # percentages and rates are rounded to 3 decimals


@dataclass
class NodeHostMetrics:
    host_lines: pa.Array  # host_metrics.jsonl, one line per interval
    link_lines: pa.Array  # link_metrics.jsonl, per interval its interfaces in name order


def _empty() -> NodeHostMetrics:
    empty = pa.array([], pa.string())
    return NodeHostMetrics(empty, empty)


def _field(struct: pa.Array, name: str) -> pa.Array:
    return pc.struct_field(struct, [name])


def _as_float(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.float64(), safe=False)  # int -> float as Python's float(int) does


def _busy_pct(now: pa.Array, before: pa.Array, shares: bool = True) -> tuple[pa.Array, dict[str, pa.Array]]:
    """Busy % and the share of each mode (if ``shares``), from two arrays of per-mode CPU ms structs.

    A pair whose total did not grow gives 0.0 everywhere.
    """
    delta = {mode: pc.subtract(_field(now, mode), _field(before, mode)) for mode in CPU_MODES}
    total = delta[CPU_MODES[0]]
    for mode in CPU_MODES[1:]:
        total = pc.add(total, delta[mode])
    grew = pc.greater(total, 0)
    total_ms = _as_float(total)

    def pct(part: pa.Array) -> pa.Array:
        return pc.if_else(grew, pc.divide(pc.multiply(_as_float(part), 100.0), total_ms), 0.0)

    busy = pct(pc.subtract(pc.subtract(total, delta[_IDLE_MODES[0]]), delta[_IDLE_MODES[1]]))
    return busy, {mode: pct(delta[mode]) for mode in _SHARES} if shares else {}


def _rate(delta: pa.Array, dt_ms: pa.Array) -> pa.Array:
    """Per second, from a delta over ``dt_ms``: ``delta * 1000.0 / dt_ms``."""
    return pc.divide(pc.multiply(_as_float(delta), 1000.0), _as_float(dt_ms))


def _grown(now: pa.Array, before: pa.Array) -> pa.Array:
    """now - before, at least 0 (a counter that went back adds nothing); null stays null."""
    return pc.max_element_wise(pc.subtract(now, before), 0, skip_nulls=False)


def _per_core_text(samples: pa.Table, now_rows: pa.Array, before_rows: pa.Array) -> pa.Array:
    """``[u0,u1,...]``: busy % per core, for the cores present in both samples of a pair."""
    per_core = samples.column("cpu_ms_per_core").combine_chunks()
    starts, lengths = per_core.offsets, pc.list_value_length(per_core)  # combined: offset 0
    cores = pc.min_element_wise(pc.take(lengths, now_rows), pc.take(lengths, before_rows))
    bounds = pa.concat_arrays([pa.array([0], pa.int32()), pc.cast(pc.cumulative_sum(cores), pa.int32())])
    count = bounds[-1].as_py()
    pair = pa.ListArray.from_arrays(bounds, pa.nulls(count, pa.int8())).value_parent_indices()
    core = pc.subtract(pa.array(range(count), pa.int64()), pc.take(pc.cast(bounds, pa.int64()), pair))

    def elements(rows: pa.Array) -> pa.Array:
        first = pc.cast(pc.take(pc.cast(starts, pa.int64()), pc.take(rows, pair)), pa.int64())
        return pc.take(per_core.values, pc.add(first, core))

    busy, _ = _busy_pct(elements(now_rows), elements(before_rows), shares=False)
    joined = pc.binary_join(pa.ListArray.from_arrays(bounds, float_text(busy, DIGITS)), ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


def build_host_metrics(node: str, samples: pa.Table, clock_offset_ms: int) -> NodeHostMetrics:
    """host_metrics and link_metrics lines of one node.

    Samples come in time order (the collector writes them so); one that goes
    back in time (a collector restarted with a stepped clock) starts a new
    series instead of giving a negative interval.
    """
    if samples.num_rows < 2:
        return _empty()
    samples = samples.combine_chunks()
    ts = samples.column("ts_ms").chunk(0)
    later = pc.greater(ts.slice(1), ts.slice(0, len(ts) - 1))
    now_rows = pc.add(pc.indices_nonzero(later), 1)
    if len(now_rows) == 0:
        return _empty()
    before_rows = pc.subtract(now_rows, 1)

    def now(name: str) -> pa.Array:
        return pc.take(samples.column(name), now_rows)

    def before(name: str) -> pa.Array:
        return pc.take(samples.column(name), before_rows)

    ts_now = now("ts_ms")
    dt_ms = pc.subtract(ts_now, before("ts_ms"))
    ts_text = json_text(pc.add(ts_now, clock_offset_ms))
    dt_text = json_text(dt_ms)
    busy, shares = _busy_pct(now("cpu_ms"), before("cpu_ms"))
    disk_now, disk_before = now("disk"), before("disk")
    both = pc.and_(pc.is_valid(disk_now), pc.is_valid(disk_before))
    disk = {}
    for name in ("read_bytes", "write_bytes"):
        grown = _grown(_field(disk_now, name), _field(disk_before, name))
        disk[name] = pc.if_else(both, grown, pa.scalar(None, grown.type))
    host_lines = object_lines(
        [
            ("ts_ms", ts_text),
            ("node", json.dumps(node)),
            ("dt_ms", dt_text),
            ("cpu_util_pct", float_text(busy, DIGITS)),
            *((f"cpu_{mode}_pct", float_text(shares[mode], DIGITS)) for mode in _SHARES),
            ("per_core_util_pct", _per_core_text(samples, now_rows, before_rows)),
            *((name, json_text(now(name))) for name in ("mem_total_kb", "mem_available_kb", "mem_used_kb")),
            ("swap_used_kb", json_text(now("swap_used_kb"))),
            *((name, float_text(now(name))) for name in ("load1", "load5", "load15")),
            ("disk_read_bytes", json_text(disk["read_bytes"])),
            ("disk_write_bytes", json_text(disk["write_bytes"])),
            ("disk_read_bps", float_text(_rate(disk["read_bytes"], dt_ms), DIGITS)),
            ("disk_write_bps", float_text(_rate(disk["write_bytes"], dt_ms), DIGITS)),
        ]
    )
    return NodeHostMetrics(host_lines, _link_lines(node, samples, now_rows, before_rows, ts_text, dt_text, dt_ms))


def _link_lines(node, samples, now_rows, before_rows, ts_text, dt_text, dt_ms) -> pa.Array:
    """Per interval, one line per interface present in both samples (not lo), in name order."""
    net = samples.column("net").chunk(0) if "net" in samples.column_names else None
    if net is None or not pa.types.is_struct(net.type):
        return _empty().link_lines
    pieces, order = [], []
    ifaces = sorted(field.name for field in net.type if field.name != "lo")
    for rank, iface in enumerate(ifaces):
        counters = _field(net, iface)
        now, before = pc.take(counters, now_rows), pc.take(counters, before_rows)
        both = pc.and_(pc.is_valid(now), pc.is_valid(before))
        if not pc.any(both).as_py():
            continue
        rx = pc.filter(_grown(_field(now, "rx_bytes"), _field(before, "rx_bytes")), both)
        tx = pc.filter(_grown(_field(now, "tx_bytes"), _field(before, "tx_bytes")), both)
        dt = pc.filter(dt_ms, both)
        pieces.append(
            object_lines(
                [
                    ("ts_ms", pc.filter(ts_text, both)),
                    ("node", json.dumps(node)),
                    ("iface", json.dumps(iface)),
                    ("dt_ms", pc.filter(dt_text, both)),
                    ("rx_bytes", json_text(rx)),
                    ("tx_bytes", json_text(tx)),
                    ("rx_bps", float_text(_rate(pc.multiply(rx, 8), dt), DIGITS)),
                    ("tx_bps", float_text(_rate(pc.multiply(tx, 8), dt), DIGITS)),
                ]
            )
        )
        order.append(pa.table({"pair": pc.indices_nonzero(both), "rank": pc.fill_null(pa.nulls(len(rx), pa.int32()), rank)}))
    if not pieces:
        return _empty().link_lines
    lines = pa.concat_arrays(pieces)
    if len(pieces) == 1:
        return lines
    keys = pa.concat_tables(order)
    return pc.take(lines, pc.sort_indices(keys, sort_keys=[("pair", "ascending"), ("rank", "ascending")]))
