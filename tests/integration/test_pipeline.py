"""The trace pipeline on a real captured two-node run: parse -> cctf/,
export -> OpenDC, verify -> conservation; plus the bad-input paths."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import named_binary, read_jsonl
from tracekit import cli, runfolder
from tracekit.adapters.ffmpeg import generate_clips
from tracekit.invocation import Invocation, run_invocation
from tracekit.jsonl import write_json
from tracekit.taskcgroup import TaskCgroups
from tracekit.collect import daemon
from tracekit.collect.daemon import CollectorConfig
from tracekit.errors import RunFolderError, TracekitError, UsageError
from tracekit.jsonl import dumps
from tracekit.trace import cctf as cctf_layout
from tracekit.trace import nodeparse
from tracekit.trace.jsonl_copy import COPIED_TABLES
from tracekit.trace.export.opendc import export_opendc
from tracekit.trace.parse import parse_run
from tracekit.trace.records import CCTF_SORT_KEYS, CCTF_TABLES, OPENDC_FRAGMENTS, OPENDC_TASKS
from tracekit.trace.verify import verify_opendc

CLOUD2_OFFSET_MS = 5000
# Burns CPU in itself and in a child it waits for (a descendant).
BURNER = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'x = 0\\nfor i in range(4_000_000): x += i'])\n"
    "x = 0\n"
    "for i in range(4_000_000): x += i\n"
    "child.wait()\n"
)


def _capture_node(root: Path, node: str, tasks) -> Path:
    """The node's tasks in cgroups of their own, as a worker runs them (the collector samples those too)."""
    cfg = CollectorConfig(run_id="p1", node_id=node, interval_ms=100, match_name="^ffmpeg$", logs_dir=root / node)
    daemon.start_collector(cfg)
    cgroups = TaskCgroups.detect("p1", node, cfg.run_folder)
    write_json(cfg.run_folder / runfolder.TASK_CGROUPS, {"node": node, "run_id": "p1", **cgroups.describe()})
    try:
        for argv, module, task_id in tasks:
            try:
                run_invocation(
                    Invocation(argv=argv, run_id="p1", logs_dir=root / node, module=module, task_id=task_id, node_id=node),
                    cgroups=cgroups,
                )
            except TracekitError:
                pass
    finally:
        daemon.stop_collector("p1", root / node)
        cgroups.close()
    return cfg.run_folder


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Path:
    """A run folder with nodes/cloud1 and nodes/cloud2, captured for real."""
    root = tmp_path_factory.mktemp("capture")
    [clip] = generate_clips(root / "inputs", count=1, durations_s=[2], size="320x180", seed=1)
    ffmpeg = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-re", "-i", str(clip)]
    cloud1 = _capture_node(root, "cloud1", [
        ([*ffmpeg, str(root / "a.mp4")], "ffmpeg", "t-ffmpeg-1"),
        ([sys.executable, "-c", BURNER], "burn", "t-burn"),
        (["true"], "quick", "t-quick"),
    ])  # fmt: skip
    cloud2 = _capture_node(root, "cloud2", [
        ([*ffmpeg, str(root / "b.mp4")], "ffmpeg", "t-ffmpeg-2"),
        (["sh", "-c", "exit 3"], "fail", "t-fail"),
    ])  # fmt: skip
    run = root / "run"
    shutil.copytree(cloud1, run / "nodes" / "cloud1")
    shutil.copytree(cloud2, run / "nodes" / "cloud2")
    (run / "nodes" / "cloud2" / "clock.json").write_text(
        json.dumps({"offset_ms": CLOUD2_OFFSET_MS, "uncertainty_ms": 0.5, "reference": "cloud0", "rtt_ms": 0.2})
    )
    return run


def rows(cctf: Path, table: str = "proc_metrics") -> list[dict]:
    """Every row of one of the trace's Parquet tables."""
    return cctf_layout.read_table(cctf, table).to_pylist()


def every_file(folder: Path, run: Path | None = None) -> dict[str, bytes]:
    """Each file's bytes by its path in ``folder`` (the run folder's own path, which audit.json names, as RUN)."""
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    if run is not None:
        files = {name: data.replace(str(run).encode(), b"RUN") for name, data in files.items()}
    return files


@pytest.fixture
def run(captured, tmp_path) -> Path:
    """A private copy of the captured run, to parse (and break) at will."""
    copy = tmp_path / "run"
    shutil.copytree(captured, copy)
    return copy


def test_parse_builds_the_whole_trace(run):
    result = parse_run(run)
    cctf = result.cctf_dir
    for name in ["invocations.jsonl", "nodes.json", "links.json", "audit.json", "audit.md",
                 *(f"{table}/{node}.parquet" for table in CCTF_TABLES for node in ("cloud1", "cloud2"))]:  # fmt: skip
        assert (cctf / name).exists(), name
    assert not list(cctf.glob("*_metrics.jsonl"))  # the JSON Lines copy only when asked for
    invocations = {r["task_id"]: r for r in read_jsonl(cctf / "invocations.jsonl")}
    assert set(invocations) == {"t-ffmpeg-1", "t-burn", "t-quick", "t-ffmpeg-2", "t-fail"}
    assert invocations["t-fail"]["ok"] is False and invocations["t-fail"]["status"] == 3
    assert invocations["t-ffmpeg-2"]["node"] == "cloud2"
    # ffmpeg ran for ~2 s (-re) at 100 ms: sampled; the burner and its child too.
    assert invocations["t-ffmpeg-1"]["samples"] >= 5 and invocations["t-burn"]["samples"] >= 2
    metrics = rows(cctf)
    burn_pids = {m["pid"] for m in metrics if m["task_id"] == "t-burn"}
    assert len(burn_pids) == 2  # the wrapped python and the child it waited for
    audit = result.audit
    assert audit["invocations"] == 5 and audit["invocations_failed"] == 1 and audit["bad_lines"] == 0
    closing = [m for m in metrics if m["num_threads"] == 0 and m["read_bytes"] is None]  # from a task's rusage
    assert audit["proc_samples"] == len(metrics) - len(closing)
    nodes = {n["node"]: n for n in json.loads((cctf / "nodes.json").read_text())}
    assert nodes["cloud2"]["clock_offset_ms"] == CLOUD2_OFFSET_MS and nodes["cloud1"]["clock_offset_ms"] is None
    assert nodes["cloud1"]["cpu_mhz"] > 0
    assert any("no clock offset for cloud1" in note for note in audit["notes"])
    # What a researcher checks first: no scheduler here (by hand), nothing on the wrong node,
    # the fragments export will cut, the samples that belong to no task.
    assert audit["tasks_run"] is None and audit["proc_samples_wrong_node"] == 0
    assert audit["fragments_per_task"]["min"] >= 1 and audit["fragments_per_task"]["max"] >= 6
    assert audit["tasks_with_interior_samples"] >= 2
    assert audit["proc_samples_outside_tasks"] == sum(1 for m in metrics if m["task_id"] is None)


def _capture_together(root: Path, scope: str) -> Path:
    """cloud1 and cloud2 collecting at once on this machine, matching ffmpeg; cloud1 runs one transcode.

    The ffmpeg has a name of its own: a machine-scope collector follows every process of its name, and
    tests run beside this one run ffmpeg too.
    """
    [clip] = generate_clips(root / "inputs", count=1, durations_s=[2], size="320x180", seed=1)
    ffmpeg = named_binary(root, "tk-p2-ffmpeg", target="ffmpeg")
    configs = [CollectorConfig(run_id="p2", node_id=node, interval_ms=100, match_name="^tk-p2-ffmpeg$", scope=scope,
                               logs_dir=root / node) for node in ("cloud1", "cloud2")]  # fmt: skip
    for cfg in configs:
        daemon.start_collector(cfg)
    try:
        argv = [ffmpeg, "-nostdin", "-y", "-loglevel", "error", "-re", "-i", str(clip), str(root / "out.mp4")]
        run_invocation(Invocation(argv=argv, run_id="p2", logs_dir=root / "cloud1", task_id="t-1", node_id="cloud1"))
    finally:
        for cfg in configs:
            daemon.stop_collector("p2", cfg.logs_dir)
    run = root / "run"
    for cfg in configs:
        shutil.copytree(cfg.run_folder, run / "nodes" / cfg.node_id)
    return run


@pytest.mark.parametrize("scope", ["machine", "node"])
def test_a_node_holding_another_nodes_task_processes_is_counted_and_fails_verification(tmp_path, scope):
    run = _capture_together(tmp_path, scope)
    audit = parse_run(run).audit
    export_opendc(run, run / "opendc")
    violations = verify_opendc(run / "opendc", against=run).violations
    if scope == "machine":  # cloud2's collector followed cloud1's ffmpeg by its name
        assert audit["per_node"]["cloud2"]["proc_samples_wrong_node"] >= 5
        assert audit["proc_samples_wrong_node"] == audit["per_node"]["cloud2"]["proc_samples"]
        assert any("process samples of another node's tasks: cloud2" in note for note in audit["notes"])
        assert [v for v in violations if "holds" in v] == [
            f"{run / 'cctf'}: node cloud2 holds {audit['proc_samples_wrong_node']} process samples of another "
            "node's tasks (the nodes share a machine; collect with --scope node)"]
    else:  # each collector kept to its own node: cloud2 followed nothing
        assert audit["proc_samples_wrong_node"] == 0 and audit["per_node"]["cloud2"]["proc_samples"] == 0
        assert audit["per_node"]["cloud1"]["proc_samples"] >= 5
        assert violations == []


def test_a_topology_claiming_more_cores_than_the_machines_had_fails_verification(run, tmp_path):
    parse_run(run)
    out = tmp_path / "opendc"
    export_opendc(run, out)
    experiment = json.loads((out / "experiment.json").read_text())
    [host] = experiment["topologies"][0]["clusters"][0]["hosts"]
    host["count"] = 2  # one host per node, each with all of this machine's cores: what the old export wrote
    (out / "experiment.json").write_text(json.dumps(experiment))
    cores = len(os.sched_getaffinity(0))
    violations = verify_opendc(out, against=run).violations
    assert violations == [f"experiment.json: the hosts claim {2 * cores} cores, the machines of nodes cloud1, cloud2 "
                          f"had {os.cpu_count()} (nodes sharing a machine need CPUs of their own: inventory "
                          "tracekit_node_cpus)"]  # fmt: skip


def test_clock_offset_moves_a_node_to_the_controller_clock(run):
    raw = read_jsonl(run / "nodes" / "cloud2" / "events.ffmpeg.jsonl")[0]
    cctf = parse_run(run).cctf_dir
    [parsed] = [r for r in read_jsonl(cctf / "invocations.jsonl") if r["task_id"] == "t-ffmpeg-2"]
    assert parsed["ts_start"] == raw["ts_start"] + CLOUD2_OFFSET_MS
    assert parsed["ts_end"] == raw["ts_end"] + CLOUD2_OFFSET_MS
    samples = [m for m in rows(cctf) if m["task_id"] == "t-ffmpeg-2"]
    # A first sample can fall in the millisecond the task started (ms clocks on both sides).
    assert samples and all(parsed["ts_start"] <= m["ts_ms"] <= parsed["ts_end"] + 200 for m in samples)


def test_parse_is_byte_identical_and_parquet_matches_jsonl(run):
    first = parse_run(run, jsonl=True).cctf_dir
    snapshot = every_file(first)
    second = parse_run(run, jsonl=True).cctf_dir
    assert every_file(second) == snapshot
    assert set(CCTF_TABLES) - set(COPIED_TABLES) == {"task_slices"}  # cut from the others: not copied
    for table in COPIED_TABLES:
        parquet = cctf_layout.read_table(second, table)
        assert parquet.schema.equals(CCTF_TABLES[table])
        lines = read_jsonl(second / f"{table}.jsonl")
        assert len(lines) == parquet.num_rows > 0, table
        key = json.dumps
        assert sorted(map(key, parquet.to_pylist())) == sorted(map(key, lines)), table
    # Parquet is sorted by node and time; the JSON Lines copy by node and process, as the seed's was.
    proc = rows(second)
    assert proc == sorted(proc, key=lambda r: (r["node"], r["ts_ms"], r["pid"], r["create_time_ms"]))
    lines = read_jsonl(second / "proc_metrics.jsonl")
    assert lines == sorted(lines, key=lambda r: (r["node"], r["pid"], r["create_time_ms"], r["ts_ms"]))
    cpu = read_jsonl(second / "proc_cpu.jsonl")
    assert [r["cpu_ms"] for r in cpu] == [r["cpu_user_ms"] + r["cpu_system_ms"] for r in lines]


def test_proc_csv_rows_in_any_order_give_the_same_trace(run, tmp_path):
    """The collector writes proc.csv in (ts, pid) order and parse then moves no rows; rows in another
    order (an older collector, a file put together by hand) are sorted first: the same trace."""
    in_order = tmp_path / "in-order"
    shutil.copytree(run, in_order)
    expected = every_file(parse_run(in_order).cctf_dir, in_order)
    for node in ("cloud1", "cloud2"):
        path = run / "nodes" / node / "proc.csv"
        header, *lines = path.read_text().splitlines(keepends=True)
        # In time order; PID order within a tick (a process event's sample may share a millisecond with a
        # tick's, in either PID order: parse sorts such rows).
        assert len(lines) > 10 and lines == sorted(lines, key=lambda line: int(line.split(",")[0]))
        path.write_text(header + "".join(reversed(lines)))
    assert every_file(parse_run(run).cctf_dir, run) == expected


def test_the_jsonl_copy_is_what_parse_wrote_before_parquet(tmp_path):
    """A committed run (captured by the collector, its host samples in today's CSV layout) and the
    JSON Lines parse wrote for it when those files were the trace (commit 72adce7): the same bytes."""
    data = Path(__file__).parent.parent / "data" / "golden-run"
    run = tmp_path / "run"
    shutil.copytree(data / "nodes", run / "nodes")
    assert cli.main(["parse", "--jsonl", str(run)]) == 0
    for expected in sorted((data / "expected").iterdir()):
        assert (run / "cctf" / expected.name).read_bytes() == expected.read_bytes(), expected.name


def test_parts_made_on_the_nodes_give_the_same_trace(run, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    shutil.copytree(run, whole)
    parse_run(whole, jsonl=True)
    for node in ("cloud1", "cloud2"):
        assert cli.main(["parse", "--node-part", str(run / "nodes" / node)]) == 0
        assert capsys.readouterr().out.endswith(": written\n")
        assert cli.main(["parse", "--node-part", str(run / "nodes" / node)]) == 0
        assert "up to date" in capsys.readouterr().out

    def not_here(*_args):
        raise AssertionError("parse made a node's part that the node had made")

    monkeypatch.setattr("tracekit.trace.parse.parse_node_processes", not_here)
    monkeypatch.setattr("tracekit.trace.parse.parse_node_host", not_here)
    merged = parse_run(run, jsonl=True).cctf_dir
    assert every_file(merged, run) == every_file(whole / "cctf", whole)


def test_a_part_that_no_longer_matches_its_raw_files_is_made_again(run, tmp_path):
    nodeparse.write_part(run / "nodes" / "cloud1")
    events = run / "nodes" / "cloud1" / "events.quick.jsonl"
    events.write_text(events.read_text().replace('"t-quick"', '"t-later"'))  # edited after the part was made
    fresh = tmp_path / "fresh"
    shutil.copytree(run, fresh)
    shutil.rmtree(fresh / "nodes" / "cloud1" / nodeparse.PART_DIR)
    assert every_file(parse_run(run).cctf_dir, run) == every_file(parse_run(fresh).cctf_dir, fresh)
    assert "t-later" in (run / "cctf" / "invocations.jsonl").read_text()


@pytest.mark.parametrize("damage", ["another tracekit", "a damaged part.json", "a table file gone"])
def test_a_part_parse_cannot_trust_is_made_again(run, damage):
    expected = every_file(parse_run(run).cctf_dir, run)
    part, _ = nodeparse.write_part(run / "nodes" / "cloud2")
    manifest = json.loads((part / nodeparse.PART_MANIFEST).read_text())
    if damage == "another tracekit":
        manifest["tracekit"] = "0.0.1"
        manifest["invocations"] = []  # what an other parse might have made of the same files
    elif damage == "a damaged part.json":
        del manifest["audit_per_node"]
    else:
        (part / "host_metrics.parquet").unlink()
    (part / nodeparse.PART_MANIFEST).write_text(json.dumps(manifest))
    assert nodeparse.read_part(nodeparse.load_node_folder(run / "nodes" / "cloud2")) is None
    assert every_file(parse_run(run).cctf_dir, run) == expected


def test_parquet_tables_read_as_one_table_by_any_reader(run):
    cctf = parse_run(run).cctf_dir
    for table, schema in CCTF_TABLES.items():
        whole = pq.read_table(cctf / table)  # a folder of one schema: what pandas, polars, DuckDB do too
        assert whole.schema.equals(schema) and whole.num_rows == len(rows(cctf, table))
        assert sorted(set(whole.column("node").to_pylist())) == ["cloud1", "cloud2"]
        for node in ("cloud1", "cloud2"):
            one = pq.read_table(cctf_layout.node_file(cctf, table, node))
            assert set(one.column("node").to_pylist()) <= {node}
            keys = [tuple(r[k] for k in CCTF_SORT_KEYS[table]) for r in one.to_pylist()]
            assert keys == sorted(keys), (table, node)


def test_export_and_verify_conserve_cpu_time(run, tmp_path):
    parse_run(run)
    out = tmp_path / "opendc"
    result = export_opendc(run, out)
    assert result.summary["tasks"] == 4 and result.summary["excluded_failed"] == 1
    tasks = pq.read_table(out / "tasks.parquet")
    fragments = pq.read_table(out / "fragments.parquet")
    assert tasks.schema.equals(OPENDC_TASKS) and fragments.schema.equals(OPENDC_FRAGMENTS)
    verification = verify_opendc(out, against=run)
    assert verification.violations == [] and verification.checked_conservation == 4
    mapping = read_jsonl(out / "task_ids.jsonl")
    assert [m["id"] for m in mapping] == list(range(4))
    quick = next(m for m in mapping if m["task_id"] == "t-quick")
    assert sum(1 for i in fragments.column("id").to_pylist() if i == quick["id"]) >= 1  # from rusage alone
    # Both nodes ran on this machine with every CPU: they had its cores together, not each.
    experiment = json.loads((out / "experiment.json").read_text())
    [host] = experiment["topologies"][0]["clusters"][0]["hosts"]
    assert (host["name"], host["count"], host["cpu"]["coreCount"]) == ("cloud1&cloud2", 1, len(os.sched_getaffinity(0)))
    assert result.summary["nodes_merged_into_one_host"] == [["cloud1", "cloud2"]]
    assert cli.main(["verify", "opendc", str(out), "--against", str(run)]) == 0


def test_export_include_failed_and_merge(run, tmp_path):
    parse_run(run)
    everything = export_opendc(run, tmp_path / "all", include_failed=True)
    assert everything.summary["tasks"] == 5 and everything.summary["excluded_failed"] == 0
    merged = export_opendc(run, tmp_path / "merged", merge_tolerance_pct=50)
    plain = export_opendc(run, tmp_path / "plain")
    assert merged.summary["fragments"] <= plain.summary["fragments"]
    assert verify_opendc(tmp_path / "merged", against=run).ok


def test_the_wta_export_of_a_captured_run_reads_back_as_its_trace(run, tmp_path, capsys):
    """A real capture (no HTTP chain): one workflow of its tasks, one task per successful invocation with its
    runtime; made and verified by tracekit parse --export wta as the parse phase does."""
    assert cli.main(["parse", str(run), "--export", "wta"]) == 0
    said = capsys.readouterr().out
    assert f"{run / 'wta'}: OK:" in said and "runtimes and dependencies checked against the run" in said
    invocations = [r for r in read_jsonl(run / "cctf" / "invocations.jsonl") if r["ok"]]
    tasks = pq.read_table(run / "wta" / "tasks" / "schema-1.0" / "part.0.parquet").to_pylist()
    assert len(tasks) == len(invocations) and {t["workflow_id"] for t in tasks} == {0}
    assert sum(t["runtime"] for t in tasks) == sum(r["ts_end"] - r["ts_start"] for r in invocations)
    assert all(t["parents"] == [] == t["children"] for t in tasks)


def test_the_google_export_of_a_captured_run_holds_every_task_s_cpu_time(run, capsys):
    """A real capture in Google's cluster-data v3 shape, with 1-second windows (the run lasts seconds): every
    task's events, and its usage rows holding its measured CPU time; made and verified by tracekit parse."""
    assert cli.main(["parse", str(run), "--export", "google"]) == 0
    said = capsys.readouterr().out
    assert f"{run / 'google'}: OK:" in said and "CPU time checked against the run" in said
    assert cli.main(["export", "google", str(run), "-o", str(run / "google"), "--window-s", "1"]) == 0
    assert cli.main(["verify", "google", str(run / "google"), "--against", str(run)]) == 0
    invocations = [r for r in read_jsonl(run / "cctf" / "invocations.jsonl") if r["ok"]]
    events = pq.read_table(run / "google" / "instance_events.parquet").to_pylist()
    assert len(events) == 3 * len(invocations)
    usage = pq.read_table(run / "google" / "instance_usage.parquet")
    assert usage.num_rows > len(invocations)  # tasks longer than a second have several windows


def test_the_alibaba_export_of_a_captured_run_reads_back_as_its_trace(run, capsys):
    """A real capture in Alibaba's v2018 shape: one job of its tasks, an instance per successful invocation with
    its runtime and CPU time, every host interval of its machines; made and verified by tracekit parse."""
    assert cli.main(["parse", str(run), "--export", "alibaba"]) == 0
    said = capsys.readouterr().out
    assert f"{run / 'alibaba'}: OK:" in said and "machine usage checked against the run" in said
    invocations = [r for r in read_jsonl(run / "cctf" / "invocations.jsonl") if r["ok"]]
    instances = (run / "alibaba" / "batch_instance.csv").read_text().splitlines()
    assert len(instances) == len(invocations) and {line.split(",")[2] for line in instances} == {"j_1"}
    runtimes = [float(line.split(",")[6]) - float(line.split(",")[5]) for line in instances]
    assert round(sum(runtimes) * 1000) == sum(r["ts_end"] - r["ts_start"] for r in invocations)
    usage = (run / "alibaba" / "machine_usage.csv").read_text().splitlines()
    assert len(usage) == len(rows(run / "cctf", "host_metrics"))


def test_a_format_that_lacks_a_table_is_one_line_and_the_others_are_written(run, capsys):
    """A run whose nodes kept no host samples: the Alibaba export names the missing table, the others are
    written and verified, and the command says it failed (no report)."""
    for node in ("cloud1", "cloud2"):
        (run / "nodes" / node / "host.csv").unlink()
    assert cli.main(["parse", str(run), "--export", "alibaba", "--export", "wta", "--report"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"tracekit parse: error: no alibaba export: {run / 'cctf'}/host_metrics/ has no host samples "
                                    "of node cloud1")
    assert f"{run / 'wta'}: OK:" in captured.out and not (run / "alibaba").exists() and not (run / "report").exists()


def test_export_replaces_its_own_earlier_export_and_refuses_other_folders_and_unwritable_paths(run, tmp_path, capsys):
    parse_run(run)
    out = tmp_path / "o"
    export_opendc(run, out)
    export_opendc(run, out)  # its own earlier export: replaced
    (out / "export.json").unlink()  # now a folder of something else
    with pytest.raises(UsageError, match="is not an earlier opendc export of .*; pass --force"):
        export_opendc(run, out)
    export_opendc(run, out, force=True)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["export", "opendc", str(run), "-o", str(blocker / "sub")]) == 1
    assert "cannot write output folder" in capsys.readouterr().err
    with pytest.raises(RunFolderError, match="run 'tracekit parse"):
        export_opendc(tmp_path / "not-parsed", tmp_path / "x")


def test_garbled_and_truncated_lines_are_counted_and_named(run):
    events = run / "nodes" / "cloud1" / "events.burn.jsonl"
    with open(events, "a") as f:
        f.write("{not json}\n")
    proc = run / "nodes" / "cloud2" / "proc.csv"
    with open(proc, "a") as f:
        f.write("1795600000000,12,17956")  # a crash mid-write
    audit = parse_run(run).audit
    where = {(b["file"], b["line"]) for b in audit["bad_lines_listed"]}
    assert ("nodes/cloud1/events.burn.jsonl", 2) in where
    assert any(file == "nodes/cloud2/proc.csv" for file, _ in where)
    assert audit["bad_lines"] == 2 and audit["invocations"] == 5
    with pytest.raises(TracekitError, match=r"events.burn.jsonl:2"):
        parse_run(run, strict=True)


def test_a_host_sample_without_a_field_is_skipped_and_named(run):
    host = run / "nodes" / "cloud1" / "host.csv"
    lines = host.read_text().splitlines()
    fields = lines[3].split(",")
    fields[1] = ""  # cpu_user_ms: parse used to crash on a sample without CPU times
    lines[3] = ",".join(fields)
    host.write_text("\n".join(lines) + "\n")
    result = parse_run(run)
    audit = result.audit
    assert [(b["file"], b["line"], b["reason"]) for b in audit["bad_lines_listed"]] == [
        ("nodes/cloud1/host.csv", 4, "empty required field")
    ]
    hosts = rows(result.cctf_dir, "host_metrics")
    # One sample fewer: two intervals become one. An interval is a pair of samples later in time
    # (the stop sample can fall in the same millisecond as the last tick: no interval).
    kept = [int(line.split(",")[0]) for index, line in enumerate(lines[1:], start=1) if index != 3]
    intervals = sum(1 for before, now in zip(kept, kept[1:]) if now > before)
    assert intervals >= len(lines) - 4
    assert sum(1 for r in hosts if r["node"] == "cloud1") == intervals


def test_garbled_csv_row_keeps_the_good_rows(run):
    proc = run / "nodes" / "cloud1" / "proc.csv"
    lines = proc.read_text().splitlines()
    lines.insert(3, "this,is,not,a,sample")
    proc.write_text("\n".join(lines) + "\n")
    audit = parse_run(run).audit
    assert [(b["file"], b["line"]) for b in audit["bad_lines_listed"]] == [("nodes/cloud1/proc.csv", 4)]
    assert audit["proc_samples"] == len(lines) - 2 + sum(
        1 for _ in (run / "nodes" / "cloud2" / "proc.csv").read_text().splitlines()[1:]
    )


def test_bad_run_folders_give_one_line(tmp_path, run, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["parse", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "holds no raw files" in err and err.count("\n") == 1
    (run / "nodes" / "cloud2" / "node.json").unlink()
    assert cli.main(["parse", str(run)]) == 1
    err = capsys.readouterr().err
    assert "cloud2: no node.json" in err and err.count("\n") == 1
    assert cli.main(["parse", str(tmp_path / "missing")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_single_node_run_folder_and_cli(tmp_path, captured, capsys):
    single = tmp_path / "p1"
    shutil.copytree(captured / "nodes" / "cloud1", single)
    assert cli.main(["parse", str(single)]) == 0
    assert "3 invocations (0 failed)" in capsys.readouterr().out
    assert cli.main(["export", "opendc", str(single), "-o", str(single / "opendc")]) == 0
    assert cli.main(["verify", "opendc", str(single / "opendc"), "--against", str(single)]) == 0
    assert "OK: 3 tasks" in capsys.readouterr().out


def test_parse_with_export_and_report_is_the_parse_phase_in_one_process(run, capsys):
    """tracekit-run's parse phase: parse, export and verify each format, write the report; the same files as the
    four commands one after the other."""
    assert cli.main(["parse", str(run), "--export", "opendc", "--report"]) == 0
    out = capsys.readouterr().out
    assert f"{run / 'opendc'}: OK: " in out and "conservation checked" in out
    assert (run / "opendc" / "tasks.parquet").is_file() and (run / "report" / "index.html").is_file()
    together = {name: (run / "opendc" / name).read_bytes() for name in ("tasks.parquet", "fragments.parquet")}
    assert cli.main(["export", "opendc", str(run), "-o", str(run / "opendc"), "--force"]) == 0
    assert together == {name: (run / "opendc" / name).read_bytes() for name in together}
    assert cli.main(["parse", "--node-part", str(run / "nodes" / "cloud1"), "--report"]) == 2


def test_parse_with_export_ends_at_a_failed_verification(tmp_path, capsys):
    """Two nodes on one machine, each collector following the other's ffmpeg: the export does not verify, and
    the command ends there (exit 1, one error line, no report over a trace that did not verify)."""
    run = _capture_together(tmp_path, "machine")
    assert cli.main(["parse", str(run), "--export", "opendc", "--report"]) == 1
    captured = capsys.readouterr()
    assert "holds" in captured.out and captured.err.count("\n") == 1
    assert captured.err.startswith(f"tracekit parse: error: 1 violations in {run / 'opendc'} (first: ")
    assert not (run / "report").exists()


def test_open_run_gives_the_trace_its_export_and_figures_as_tables(run, tmp_path):
    """A run made by hand (no tracekit-run): what open_run reads, and the one line where a piece is missing."""
    import tracekit

    with pytest.raises(RunFolderError, match=f"has no parsed trace .*make it with 'tracekit parse {run}'"):
        tracekit.open_run(run)
    with pytest.raises(RunFolderError, match="is not a folder"):
        tracekit.open_run(tmp_path / "missing")
    audit = parse_run(run).audit
    opened = tracekit.open_run(run)
    assert opened.run_id == "run" and opened.state is None and opened.experiment is None
    assert opened.invocations.num_rows == audit["invocations"] > 0
    assert set(opened.invocations.column_names) >= {"task_id", "node", "ts_start", "ts_end", "ok"}
    assert opened.proc_metrics.num_rows > 0 and set(opened.proc_metrics.column("node").to_pylist()) <= {"cloud1", "cloud2"}
    assert set(opened.host_metrics.column("node").to_pylist()) == {"cloud1", "cloud2"}
    assert opened.table("proc_metrics", nodes=["cloud2"], columns=["node"]).column("node").unique().to_pylist() in ([], ["cloud2"])
    assert opened.placements.num_rows == 0 and opened.requests.num_rows == 0  # no dispatcher, no load
    assert sorted(node["node"] for node in opened.nodes) == ["cloud1", "cloud2"]
    with pytest.raises(RunFolderError, match=f"make it with 'tracekit export opendc {run} -o {run / 'opendc'}'"):
        opened.opendc
    export_opendc(run, run / "opendc")
    opened = tracekit.open_run(run)
    ok = opened.invocations.filter(opened.invocations.column("ok")).num_rows
    assert opened.opendc.tasks.num_rows == ok > 0 and opened.opendc.experiment["topologies"]
    from tracekit.sweep.figures import FIGURES

    # Every figure named; none made up where the run measured nothing (no dispatcher: no makespan; no load).
    assert list(opened.figures) == [figure.name for figure in FIGURES]
    assert opened.figures["makespan_s"] is None and opened.figures["http_rate_per_s"] is None
    # As a researcher goes on: pandas (the analysis extra), one task's CPU over its samples.
    frame = opened.proc_metrics.to_pandas()
    frame["cpu_ms"] = frame["cpu_user_ms"] + frame["cpu_system_ms"]
    per_task = frame.groupby("task_id")["cpu_ms"].sum()
    assert set(per_task.index) <= set(opened.invocations.column("task_id").to_pylist()) and per_task["t-burn"] > 0
    assert len(opened.invocations.to_pandas()) == audit["invocations"]


def test_every_file_round_trips(run, tmp_path):
    """Read back every cctf file and both OpenDC files; writing the records
    again gives the same bytes (JSON) or the same records and schema (Parquet)."""
    cctf = parse_run(run).cctf_dir
    for path in sorted(cctf.glob("*.jsonl")):
        records = read_jsonl(path)
        assert "".join(dumps(r) + "\n" for r in records) == path.read_text(), path.name
    for name in ("nodes.json", "links.json", "audit.json"):
        value = json.loads((cctf / name).read_text())
        assert json.dumps(value, indent=2) + "\n" == (cctf / name).read_text(), name
    export_opendc(run, tmp_path / "o")
    out = tmp_path / "o"
    tables = [(out / "tasks.parquet", OPENDC_TASKS), (out / "fragments.parquet", OPENDC_FRAGMENTS)]
    tables += [(path, CCTF_TABLES[name]) for name in CCTF_TABLES for path in cctf_layout.node_files(cctf, name)]
    for path, schema in tables:
        table = pq.read_table(path)
        again = tmp_path / f"again-{path.parent.name}-{path.name}"
        pq.write_table(pa.Table.from_pylist(table.to_pylist(), schema=schema), again)
        reread = pq.read_table(again)
        assert reread.schema.equals(schema) and reread.to_pylist() == table.to_pylist(), path.name


def test_the_slices_parse_cuts_are_those_an_export_would_cut_from_the_samples(run, tmp_path):
    """Parse cuts every invocation's slices once, in its node jobs (cctf's task_slices); a trace without them
    (parsed before they existed) is cut from its samples at export: the same slices, the same facts."""
    from tracekit.trace import slices
    from tracekit.trace.audit import exact_cpu_ms

    trace = parse_run(run).cctf_dir
    invocations = cctf_layout.read_records(trace, cctf_layout.INVOCATIONS)
    from_parse = slices.cut(invocations, trace)
    older = tmp_path / "older" / "cctf"
    shutil.copytree(trace, older)
    shutil.rmtree(older / "task_slices")
    from_samples = slices.cut(invocations, older)
    assert from_parse.slices.equals(from_samples.slices) and from_parse.facts == from_samples.facts
    assert from_parse.slices.num_rows > len(invocations) and any(f["samples"] for f in from_parse.facts)
    # Every invocation's slices cover it and hold its exact CPU.
    by_task = {}
    for row in from_parse.slices.to_pylist():
        by_task.setdefault(row["id"], []).append(row)
    for index, invocation in enumerate(invocations):
        rows = by_task[index]
        assert sum(r["duration"] for r in rows) == max(1, invocation["ts_end"] - invocation["ts_start"])
        assert sum(r["cpu_ms"] for r in rows) == pytest.approx(exact_cpu_ms(invocation) or from_parse.facts[index]["cpu_ms"])


def test_the_audit_counts_the_fragments_the_export_cuts_attempt_by_attempt(run):
    """fragments_per_task is what the export cuts: each invocation's task_slices. A second attempt of a task,
    later and unsampled, is one slice, not the first attempt's samples again (the audit grouped the samples
    by task, not attempt)."""
    import statistics

    from tracekit.trace import slices

    events = run / "nodes" / "cloud1" / "events.burn.jsonl"
    [first] = read_jsonl(events)
    again = {**first, "attempt": 2, "ts_start": first["ts_end"] + 5_000, "ts_end": first["ts_end"] + 6_000, "pid": None,
             "create_time_ms": None}  # fmt: skip
    with open(events, "a") as f:
        f.write(dumps(again) + "\n")
    trace = parse_run(run).cctf_dir
    invocations = [r for r in cctf_layout.read_records(trace, cctf_layout.INVOCATIONS) if r["ok"]]
    cut = slices.cut(invocations, trace)
    counts = [0] * len(invocations)
    for index in cut.slices.column("id").to_pylist():
        counts[index] += 1
    assert counts[[(r["task_id"], r["attempt"]) for r in invocations].index(("t-burn", 2))] == 1
    audit = json.loads((trace / "audit.json").read_text())
    assert audit["fragments_per_task"] == {"median": statistics.median(counts), "min": min(counts), "max": max(counts)}
    assert audit["tasks_with_interior_samples"] == sum(1 for count in counts if count > 1)
