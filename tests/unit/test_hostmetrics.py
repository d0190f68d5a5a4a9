"""Host samples: the vectorised reader and differencing, through the JSON
Lines copy, give byte for byte what the per-record version gave (kept here
as the reference), on samples with the awkward cases: counters that go
back, a clock that steps back, cores and interfaces that come and go, no
disk, idle intervals; and bad rows are skipped and named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tracekit import runfolder
from tracekit.collect.host import HOST_CPUS_CSV_COLUMNS, HOST_CSV_COLUMNS, HOST_NET_CSV_COLUMNS, NET_COUNTERS, HostSample
from tracekit.errors import RunFolderError, TracekitError
from tracekit.jsonl import dumps
from tracekit.trace.arrowjson import jsonl_lines
from tracekit.trace.hostmetrics import build_host_metrics
from tracekit.trace.rawrun import BadLines, read_host_samples
from tracekit.trace.records import HOST_METRICS, LINK_METRICS

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
            "disk_read_bytes_per_s": None if disk_read is None else _rate(disk_read, dt_ms),
            "disk_write_bytes_per_s": None if disk_write is None else _rate(disk_write, dt_ms),
        }  # fmt: skip
        host_lines.append(dumps(host) + "\n")
        for iface, counters in sorted(now["net"].items()):
            previous = before["net"].get(iface)
            if previous is None or iface == "lo":
                continue
            rx = max(0, counters["rx_bytes"] - previous["rx_bytes"])
            tx = max(0, counters["tx_bytes"] - previous["tx_bytes"])
            link = {"ts_ms": ts_ms, "node": node, "iface": iface, "dt_ms": dt_ms, "rx_bytes": rx, "tx_bytes": tx,
                    "rx_bits_per_s": _rate(rx * 8, dt_ms), "tx_bits_per_s": _rate(tx * 8, dt_ms)}  # fmt: skip
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


def host_sample(record: dict) -> HostSample:
    """A record of the shape above as the collector's sample."""
    disk = record["disk"]
    return HostSample(
        record["ts_ms"],
        tuple(record["cpu_ms"][mode] for mode in MODES),
        tuple((cpu, tuple(core[mode] for mode in MODES)) for cpu, core in enumerate(record["cpu_ms_per_core"])),
        {name: record[name] for name in ("mem_total_kb", "mem_available_kb", "mem_used_kb", "mem_free_kb", "swap_used_kb")},
        (record["load1"], record["load5"], record["load15"]),
        {nic: tuple(counters[name] for name in NET_COUNTERS) for nic, counters in sorted(record["net"].items())},
        None if disk is None else tuple(disk[name] for name in ("read_bytes", "write_bytes", "read_count", "write_count", "busy_ms")),
    )


def csv_files(records) -> dict[str, list[str]]:
    """The three files' lines, as the collector writes them."""
    files = {
        runfolder.HOST_SAMPLES: [",".join(HOST_CSV_COLUMNS)],
        runfolder.HOST_CPU_SAMPLES: [",".join(HOST_CPUS_CSV_COLUMNS)],
        runfolder.HOST_NET_SAMPLES: [",".join(HOST_NET_CSV_COLUMNS)],
    }
    for record in records:
        sample = host_sample(record)
        files[runfolder.HOST_SAMPLES].append(sample.host_row())
        files[runfolder.HOST_CPU_SAMPLES] += sample.cpu_rows()
        files[runfolder.HOST_NET_SAMPLES] += sample.net_rows()
    return files


def _write(folder: Path, records) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in csv_files(records).items():
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def _lines(node, folder, offset, bad=None):
    host, links = build_host_metrics(node, read_host_samples(folder, bad or BadLines()), offset)
    assert host.schema.equals(HOST_METRICS) and links.schema.equals(LINK_METRICS)
    return "".join(jsonl_lines(host).to_pylist()), "".join(jsonl_lines(links).to_pylist())


def test_same_bytes_as_the_per_record_version(tmp_path):
    records = awkward_samples()
    folder = _write(tmp_path / "node", records)
    host, links = _lines("edge01", folder, -37)
    assert (host, links) == reference("edge01", records, -37)
    assert host.count("\n") > 200 and links.count('"iface":"wlan0"') > 0 and '"iface":"lo"' not in links


@pytest.mark.parametrize("count", [0, 1, 2])
def test_too_few_samples_give_no_interval(tmp_path, count):
    folder = _write(tmp_path / "node", awkward_samples(count))
    assert _lines("n", folder, 0) == reference("n", awkward_samples(count), 0)


def test_no_files_give_nothing(tmp_path):
    assert _lines("n", tmp_path, 0) == ("", "")


def test_an_interface_name_with_a_comma_is_quoted_and_read_back(tmp_path):
    records = awkward_samples(3)
    for record in records:
        record["net"]['we,ird"0'] = record["net"].pop("eth0")
    folder = _write(tmp_path / "node", records)
    _, links = _lines("n", folder, 0)
    assert links == reference("n", records, 0)[1] and '"iface":"we,ird\\"0"' in links


def test_bad_rows_are_skipped_and_named(tmp_path):
    records = awkward_samples(60)
    # A sample whose host.csv row is lost keeps its host_cpus.csv rows; they are
    # known by its time, so the garbled rows here are of samples with a time of their own.
    times = [r["ts_ms"] for r in records]
    assert all(times.count(times[i]) == 1 for i in (11, 21, 31, 40))
    folder = _write(tmp_path / "node", records)
    path = folder / runfolder.HOST_SAMPLES
    lines = path.read_text().splitlines()  # line 1 is the header, sample i is line i + 2
    lines[12] = lines[12].replace(",", ",,", 1)  # a field too many
    lines[22] = "garbled"
    fields = lines[32].split(",")
    fields[11] = "lots"  # mem_used_kb: a wrong type
    lines[32] = ",".join(fields)
    fields = lines[41].split(",")
    fields[14] = ""  # load1: a required field empty
    lines[41] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n" + lines[-1][:25])  # and a crash mid-write
    bad = BadLines()
    host, links = _lines("n", folder, 0, bad)
    assert [(b.path.name, b.line_no) for b in bad.lines] == [("host.csv", n) for n in (13, 23, 33, 42, 62)]
    assert bad.lines[2].reason.startswith("mem_used_kb: ") and bad.lines[3].reason == "empty required field"
    assert bad.lines[4].reason == "truncated last line"
    kept = [r for i, r in enumerate(records) if i not in (11, 21, 31, 40)]
    assert (host, links) == reference("n", kept, 0)
    with pytest.raises(TracekitError, match=r"host.csv:13: Expected 22 columns, got 23"):
        read_host_samples(folder, BadLines(strict=True))


def test_a_last_row_without_its_newline_is_reported_not_guessed(tmp_path):
    # "123,45" may be "123,456" cut short: a row is whole only with its newline.
    folder = _write(tmp_path / "node", awkward_samples(5))
    path = folder / runfolder.HOST_SAMPLES
    path.write_text(path.read_text().removesuffix("\n"))
    bad = BadLines()
    samples = read_host_samples(folder, bad)
    assert samples.host.num_rows == 4 and [(b.line_no, b.reason) for b in bad.lines] == [(6, "truncated last line")]


def test_a_foreign_header_is_refused(tmp_path):
    (tmp_path / runfolder.HOST_SAMPLES).write_text("a,b\n1,2\n")
    with pytest.raises(TracekitError, match="host.csv: unexpected header"):
        read_host_samples(tmp_path, BadLines())


def test_host_samples_of_an_older_collector_are_named_not_dropped(tmp_path):
    (tmp_path / "host.jsonl").write_text('{"ts_ms": 1}\n')
    with pytest.raises(RunFolderError, match="host.jsonl: host samples in the JSON Lines layout of an older collector"):
        read_host_samples(tmp_path, BadLines())
