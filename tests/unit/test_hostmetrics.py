"""Host samples: the vectorised reader and differencing give, byte for byte,
what the per-record version gave (kept here as the reference), on samples
with the awkward cases: counters that go back, a clock that steps back,
cores and interfaces that come and go, no disk, idle intervals; and bad
lines are skipped and named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tracekit.errors import TracekitError
from tracekit.jsonl import dumps
from tracekit.trace.hostmetrics import build_host_metrics
from tracekit.trace.rawrun import BadLines, read_host_samples

MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


# -- the reference: the per-record implementation this module replaced -----------


def _busy_pct(now, before):
    delta = {mode: now[mode] - before[mode] for mode in now}
    total = sum(delta.values())
    if total <= 0:
        return 0.0, {mode: 0.0 for mode in delta}
    shares = {mode: round(100.0 * value / total, 3) for mode, value in delta.items()}
    busy = 100.0 * (total - sum(delta[mode] for mode in ("idle", "iowait"))) / total
    return round(busy, 3), shares


def _rate(delta, dt_ms):
    return round(delta * 1000.0 / dt_ms, 3)


def reference(node, records, offset):
    host_lines, link_lines = [], []
    before = None
    for now in records:
        if before is None or now["ts_ms"] <= before["ts_ms"]:
            before = now
            continue
        dt_ms = now["ts_ms"] - before["ts_ms"]
        ts_ms = now["ts_ms"] + offset
        busy, shares = _busy_pct(now["cpu_ms"], before["cpu_ms"])
        per_core = [_busy_pct(a, b)[0] for a, b in zip(now["cpu_ms_per_core"], before["cpu_ms_per_core"])]
        disk_now, disk_before = now.get("disk"), before.get("disk")
        disk_read = disk_write = None
        if disk_now and disk_before:
            disk_read = max(0, disk_now["read_bytes"] - disk_before["read_bytes"])
            disk_write = max(0, disk_now["write_bytes"] - disk_before["write_bytes"])
        host = {
            "ts_ms": ts_ms, "node": node, "dt_ms": dt_ms, "cpu_util_pct": busy,
            "cpu_user_pct": shares["user"], "cpu_system_pct": shares["system"],
            "cpu_iowait_pct": shares["iowait"], "cpu_idle_pct": shares["idle"], "per_core_util_pct": per_core,
            "mem_total_kb": now["mem_total_kb"], "mem_available_kb": now["mem_available_kb"],
            "mem_used_kb": now["mem_used_kb"], "swap_used_kb": now["swap_used_kb"], "load1": now["load1"],
            "load5": now["load5"], "load15": now["load15"], "disk_read_bytes": disk_read,
            "disk_write_bytes": disk_write,
            "disk_read_bps": None if disk_read is None else _rate(disk_read, dt_ms),
            "disk_write_bps": None if disk_write is None else _rate(disk_write, dt_ms),
        }  # fmt: skip
        host_lines.append(dumps(host) + "\n")
        for iface, counters in sorted(now["net"].items()):
            previous = before["net"].get(iface)
            if previous is None or iface == "lo":
                continue
            rx = max(0, counters["rx_bytes"] - previous["rx_bytes"])
            tx = max(0, counters["tx_bytes"] - previous["tx_bytes"])
            link = {"ts_ms": ts_ms, "node": node, "iface": iface, "dt_ms": dt_ms, "rx_bytes": rx, "tx_bytes": tx,
                    "rx_bps": _rate(rx * 8, dt_ms), "tx_bps": _rate(tx * 8, dt_ms)}  # fmt: skip
            link_lines.append(dumps(link) + "\n")
        before = now
    return "".join(host_lines), "".join(link_lines)


# -- awkward samples ------------------------------------------------------------


def _counters(rng, scale):
    return {name: rng.randrange(0, scale) for name in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets",
                                                        "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")}  # fmt: skip


def awkward_samples(count=400, seed=7):
    rng = random.Random(seed)
    cores = [[rng.randrange(0, 10**6) for _ in MODES] for _ in range(4)]
    net = {"eth0": _counters(rng, 10**9), "lo": _counters(rng, 10**6)}
    disk = {"read_bytes": 10**9, "write_bytes": 10**9, "read_count": 5, "write_count": 5, "busy_ms": 7}
    ts = 1_795_600_000_000
    records = []
    for k in range(count):
        ts += rng.choice([1000, 1000, 999, 1003, 1, 250, 0, -2000])  # repeats and steps back
        if k % 50 == 17:  # a core goes offline for a while, or comes back
            cores = cores[:-1] if len(cores) > 2 else cores + [[0] * len(MODES)]
        for core in cores:
            for m in range(len(MODES)):
                step = rng.choice([0, 0, 10, 30, 7, 333, 1]) if k % 13 else 0  # idle intervals: total 0
                core[m] = max(0, core[m] + (step if rng.random() > 0.02 else -50))  # a counter going back
        if k % 37 == 5:
            net.pop("wlan0", None) if "wlan0" in net else net.update(wlan0=_counters(rng, 10**5))
        for counters in net.values():
            for name in counters:
                counters[name] += rng.choice([0, 1, 1500, 10**7, 10**10, -7])
        disk = None if k % 29 == 3 else {**(disk or {"read_count": 1, "write_count": 1, "busy_ms": None}),
                                         "read_bytes": rng.randrange(0, 10**12),
                                         "write_bytes": rng.randrange(0, 10**12)}  # fmt: skip
        total = [sum(core[m] for core in cores) for m in range(len(MODES))]
        records.append({
            "ts_ms": ts, "cpu_ms": dict(zip(MODES, total)),
            "cpu_ms_per_core": [dict(zip(MODES, core)) for core in cores],
            "mem_total_kb": 16_000_000, "mem_available_kb": rng.randrange(0, 16_000_000),
            "mem_used_kb": rng.randrange(0, 16_000_000), "mem_free_kb": 5, "swap_used_kb": 0,
            "load1": rng.choice([0.0, 1.0, 0.07, 12.34, 3.0]), "load5": rng.random() * 8, "load15": 0.5,
            "net": json.loads(json.dumps(net)), "disk": disk,
        })  # fmt: skip
    return records


def _write(path: Path, records) -> Path:
    path.write_text("".join(dumps(r) + "\n" for r in records))
    return path


def _lines(node, path, offset, bad=None):
    metrics = build_host_metrics(node, read_host_samples(path, bad or BadLines()), offset)
    return "".join(metrics.host_lines.to_pylist()), "".join(metrics.link_lines.to_pylist())


def test_same_bytes_as_the_per_record_version(tmp_path):
    records = awkward_samples()
    path = _write(tmp_path / "host.jsonl", records)
    host, links = _lines("edge01", path, -37)
    assert (host, links) == reference("edge01", records, -37)
    assert host.count("\n") > 200 and links.count('"iface":"wlan0"') > 0 and '"iface":"lo"' not in links


@pytest.mark.parametrize("count", [0, 1, 2])
def test_too_few_samples_give_no_interval(tmp_path, count):
    path = _write(tmp_path / "host.jsonl", awkward_samples(count))
    assert _lines("n", path, 0) == reference("n", awkward_samples(count), 0)


def test_no_file_gives_nothing(tmp_path):
    assert _lines("n", tmp_path / "missing.jsonl", 0) == ("", "")


def test_bad_lines_are_skipped_and_named(tmp_path):
    records = awkward_samples(60)
    lines = [dumps(r) for r in records]
    no_load = dict(records[10])
    del no_load["load1"]
    lines[10] = dumps(no_load)  # a required field missing
    lines[20] = "{garbled"
    lines[30] = dumps({**records[30], "mem_used_kb": "lots"})  # a wrong type: Arrow refuses it
    lines[40] = dumps({**records[40], "cpu_ms_per_core": [{"user": 1}]})  # a nested field missing
    path = tmp_path / "host.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[-1][:25])  # and a crash mid-write
    bad = BadLines()
    host, links = _lines("n", path, 0, bad)
    assert [(b.line_no, b.reason.split(":")[0]) for b in bad.lines] == [
        (11, "missing load1"), (21, "Expecting property name enclosed in double quotes"),
        (31, bad.lines[2].reason.split(":")[0]), (41, bad.lines[3].reason.split(":")[0]), (61, "truncated last line"),
    ]  # fmt: skip
    kept = [r for i, r in enumerate(records) if i not in (10, 20, 30, 40)]
    assert (host, links) == reference("n", kept, 0)
    with pytest.raises(TracekitError, match=r"host.jsonl:11: missing load1"):
        read_host_samples(path, BadLines(strict=True))


def test_a_last_line_without_its_newline_is_kept(tmp_path):
    records = awkward_samples(5)
    path = tmp_path / "host.jsonl"
    path.write_text("\n".join(dumps(r) for r in records))  # complete, only the newline is missing
    bad = BadLines()
    assert read_host_samples(path, bad).num_rows == 5 and bad.lines == []
