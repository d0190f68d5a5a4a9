"""The export seam (tracekit.trace.export) and the small files of cctf/ (tracekit.trace.cctf)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracekit import cli
from tracekit.errors import RunFolderError, UsageError
from tracekit.trace import cctf, export


def test_every_format_is_a_module_that_declares_what_the_seam_needs():
    assert "opendc" in export.names()
    for name in export.names():
        module = export.get(name)
        assert module.NAME == name and module.TITLE and module.MAIN_FILES and module.HELP and module.DESCRIPTION
        for function in ("add_arguments", "export", "add_verify_arguments", "verify"):
            assert callable(getattr(module, function)), (name, function)
        assert module.verify.__doc__, name  # tracekit verify NAME --help says what it checks
        assert module.TABLES and all(isinstance(name, str) for name in module.TABLES), name


def test_an_unknown_format_is_refused_with_the_known_ones(capsys):
    assert {"alibaba", "google", "opendc", "wta"} <= set(export.names())  # a new one is a module, no edit here
    with pytest.raises(UsageError, match=rf"unknown export format 'wtf'; known: {', '.join(export.names())}$"):
        export.get("wtf")
    with pytest.raises(SystemExit) as exited:
        cli.main(["export", "wtf", "logs/r1", "-o", "out"])
    assert exited.value.code == 2
    choices = ", ".join(repr(name) for name in export.names())
    assert f"invalid choice: 'wtf' (choose from {choices})" in capsys.readouterr().err


def test_an_earlier_export_of_the_same_run_is_replaced_anything_else_only_with_force(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    out.mkdir()
    (out / export.SUMMARY).write_text(json.dumps({"format": "opendc", "run_dir": str(run)}))
    (out / "tasks.parquet").write_text("old")
    export.prepare_out_dir(out, False, run, "opendc")  # its own earlier export: replaced
    assert out.is_dir() and not any(out.iterdir())
    (out / "notes.txt").write_text("mine")
    for other_run, other_format in ((tmp_path / "another-run", "opendc"), (run, "wta")):
        (out / export.SUMMARY).write_text(json.dumps({"format": other_format, "run_dir": str(other_run)}))
        with pytest.raises(UsageError, match=f"output folder {out} exists and is not an earlier opendc export of {run}; "
                                             "pass --force to replace it"):  # fmt: skip
            export.prepare_out_dir(out, False, run, "opendc")
    assert (out / "notes.txt").read_text() == "mine"
    export.prepare_out_dir(out, True, run, "opendc")
    assert not any(out.iterdir())


def test_force_never_deletes_the_run_and_a_file_is_no_output_folder(tmp_path):
    run = tmp_path / "run"
    (run / cctf.CCTF).mkdir(parents=True)
    (run / cctf.CCTF / cctf.NODES).write_text("{}")
    for out in (run, tmp_path, run / cctf.CCTF):
        with pytest.raises(UsageError, match=rf"output folder {out} (holds the run folder|is part of the run folder)"):
            export.prepare_out_dir(out, True, run, "opendc")
    assert (run / cctf.CCTF / cctf.NODES).read_text() == "{}"
    export.prepare_out_dir(run / "mine", True, run, "opendc")  # a new folder of its own in the run's is fine
    (tmp_path / "out.parquet").write_text("x")
    with pytest.raises(RunFolderError, match=r"output folder .*out.parquet is a file"):
        export.prepare_out_dir(tmp_path / "out.parquet", True, run, "opendc")
    other = tmp_path / "logs" / "another-run"  # another run, or a folder of runs: --force would delete them
    (other / "nodes" / "cloud1").mkdir(parents=True)
    for out in (other, other.parent):
        with pytest.raises(UsageError, match=rf"output folder {out} holds a run"):
            export.prepare_out_dir(out, True, run, "opendc")
    assert (other / "nodes" / "cloud1").is_dir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_text("x")
    (run / "opendc").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match=r"output folder .*opendc is a symbolic link"):
        export.prepare_out_dir(run / "opendc", True, run, "opendc")
    assert (tmp_path / "elsewhere" / "x").exists()


def test_an_earlier_export_is_known_from_any_folder_and_after_the_run_moved(tmp_path, monkeypatch):
    from tests.unit.test_export_wta import hand_made_run

    run = hand_made_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    wta = export.get("wta")
    wta.export(Path(run.name), Path(run.name) / "wta")  # as typed: relative to here
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    wta.export(run, run / "wta")  # the same run, named from another folder: replaced
    wta.export(run, tmp_path / "apart")
    wta.export(Path("..") / run.name, tmp_path / "apart")
    moved = tmp_path / "moved"
    run.rename(moved)
    wta.export(moved, moved / "wta")  # its own RUN_DIR/wta, though its export.json names the old place
    with pytest.raises(UsageError, match="is not an earlier wta export"):
        wta.export(moved, tmp_path / "apart")  # that one names the old place: another run, for all it says
    (moved / "opendc").mkdir()
    (moved / "opendc" / export.SUMMARY).write_text(json.dumps({"run_dir": "r1"}))  # an OpenDC export of before
    export.prepare_out_dir(moved / "opendc", False, moved, "opendc")  # the seam wrote no format: replaced
    (moved / "opendc" / export.SUMMARY).write_text(json.dumps({"run_dir": str(moved)}))
    with pytest.raises(UsageError, match="is not an earlier wta export"):  # but as no other format's
        export.prepare_out_dir(moved / "opendc", False, moved, "wta")


def test_the_small_files_of_cctf_are_read_by_name_through_one_module(tmp_path):
    trace = tmp_path / "run" / cctf.CCTF
    trace.mkdir(parents=True)
    assert not cctf.has_trace(trace.parent) and cctf.read_records(trace, cctf.PLACEMENTS) == []
    cctf.write_records(trace, cctf.INVOCATIONS, [{"task_id": "t1", "node": "cloud1"}])
    cctf.write_json(trace, cctf.NODES, [{"node": "cloud1", "cpu_mhz": 2000}])
    assert cctf.has_trace(trace.parent) and cctf.read_records(trace, cctf.INVOCATIONS) == [{"task_id": "t1", "node": "cloud1"}]
    assert cctf.read_nodes(trace) == {"cloud1": {"node": "cloud1", "cpu_mhz": 2000}}
    assert cctf.records_table(trace, cctf.INVOCATIONS).num_rows == 1 and cctf.records_table(trace, cctf.REQUESTS).num_rows == 0
    with open(trace / cctf.INVOCATIONS, "a") as f:
        f.write('{"task_id": "t2"\n{"task_id": "t3"}\n')
    with pytest.raises(RunFolderError, match=rf"{trace / cctf.INVOCATIONS}:2: not a JSON record; parse the run again"):
        cctf.read_records(trace, cctf.INVOCATIONS)
    noted: list = []
    assert [r["task_id"] for r in cctf.read_records(trace, cctf.INVOCATIONS, noted)] == ["t1", "t3"] and len(noted) == 1
    (trace / cctf.NODES).write_text("{not json")
    with pytest.raises(RunFolderError, match=rf"{trace / cctf.NODES}: not readable as JSON"):
        cctf.read_nodes(trace)
    with pytest.raises(ValueError, match="not a JSON file of cctf/: proc.csv"):
        cctf.read_json(trace, "proc.csv")


def test_a_task_s_peak_memory_is_the_larger_measure_at_most_its_node_s():
    from tracekit.trace import slices

    node = {"mem_kb": 8000}
    assert slices.peak_memory_kb({"max_rss_kb": 3000}, {"peak_rss_kb": 5000}, node) == 5000  # a tree's sum
    assert slices.peak_memory_kb({"max_rss_kb": 3000}, {"peak_rss_kb": 0}, node) == 3000
    # Summed RSS counts pages its processes share once per process: never more than the node had.
    assert slices.peak_memory_kb({"max_rss_kb": 3000}, {"peak_rss_kb": 12000}, node) == 8000
    assert slices.peak_memory_kb({}, {"peak_rss_kb": None}, {}) == 0


def test_a_table_file_of_an_older_trace_reads_with_its_missing_column_as_nulls(tmp_path):
    """A collector before run_delay_ns wrote no such column: the table reads with it null, read file by file
    or through a filter."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tracekit.trace.records import PROC_METRICS

    trace = tmp_path / cctf.CCTF
    row = {f.name: 0 for f in PROC_METRICS if pa.types.is_integer(f.type)} | {"node": "cloud1", "pid": 7, "task_id": "t1"}
    older = pa.Table.from_pylist([row], schema=PROC_METRICS).drop_columns(["run_delay_ns"])
    path = cctf.node_file(trace, "proc_metrics", "cloud1")
    path.parent.mkdir(parents=True)
    pq.write_table(older, path)
    for where in (None, pc.field("pid") == 7):
        table = cctf.read_table(trace, "proc_metrics", ["pid", "run_delay_ns"], where=where)
        assert table.to_pylist() == [{"pid": 7, "run_delay_ns": None}]
    assert cctf.read_table(trace, "proc_metrics").column("run_delay_ns").to_pylist() == [None]


def test_slices_are_cut_for_any_attempt_number(tmp_path):
    """Attempts are told apart by their numbers whatever they are (a key of node, task and attempt must not
    overflow), and the export takes the attempts it is given."""
    from tracekit.trace import slices
    from tracekit.trace.records import PROC_METRICS

    trace = tmp_path / cctf.CCTF
    for node in ("cloud1", "cloud2"):
        cctf.write_table(cctf.node_file(trace, "proc_metrics", node), "proc_metrics", PROC_METRICS.empty_table())
    base = {"node": "cloud1", "task_id": "t1", "cpu_user_ms": 30.0, "cpu_system_ms": 0.0}
    tasks = [{**base, "attempt": 1, "ts_start": 0, "ts_end": 100},
             {**base, "attempt": 2**62, "ts_start": 200, "ts_end": 250, "cpu_user_ms": 10.0},
             {**base, "task_id": "t2", "attempt": 3, "ts_start": 300, "ts_end": 320, "cpu_user_ms": 5.0},
             {**base, "node": "cloud2", "task_id": "u1", "attempt": 0, "ts_start": 0, "ts_end": 10, "cpu_user_ms": 1.0}]  # fmt: skip
    cut = slices.cut(tasks, trace)
    assert cut.slices.to_pylist() == [{"id": 0, "end_ms": 100, "duration": 100, "cpu_ms": 30.0, "rss_kb": None},
                                      {"id": 1, "end_ms": 250, "duration": 50, "cpu_ms": 10.0, "rss_kb": None},
                                      {"id": 2, "end_ms": 320, "duration": 20, "cpu_ms": 5.0, "rss_kb": None},
                                      {"id": 3, "end_ms": 10, "duration": 10, "cpu_ms": 1.0, "rss_kb": None}]  # fmt: skip
    assert slices.cut(tasks[1:2], trace).slices.column("duration").to_pylist() == [50]


def _process_rows(task_id: str, rows: list[tuple[int, float, int, int]]):
    """PROC_METRICS rows of one process of ``task_id``: (ts_ms, CPU ms in the interval, rss_kb, num_threads)."""
    import pyarrow as pa

    from tracekit.trace.records import PROC_METRICS

    return pa.Table.from_pylist([{f.name: None for f in PROC_METRICS} | {
        "node": "cloud1", "pid": 7, "create_time_ms": 0, "task_id": task_id, "ts_ms": ts, "dt_ms": 10,
        "cpu_user_ms": cpu, "cpu_system_ms": 0.0, "rss_kb": rss, "num_threads": threads}
        for ts, cpu, rss, threads in rows], schema=PROC_METRICS)  # fmt: skip


def test_an_rss_of_0_is_no_memory_sample():
    """A process sampled at its exit (its memory released: rss_kb 0) or its last row made from its rusage says
    nothing of its memory: its slice has no RSS (a 0 halved the task's mean memory in every export)."""
    from tracekit.trace import slices

    task = {"node": "cloud1", "task_id": "t1", "attempt": 1, "ts_start": 0, "ts_end": 100, "cpu_user_ms": 100.0,
            "cpu_system_ms": 0.0}  # fmt: skip
    rows = _process_rows("t1", [(40, 40.0, 5000, 3), (90, 50.0, 0, 1), (100, 10.0, 0, 0)])
    cut = slices.node_slices("cloud1", [task], None, rows, cores=2)
    assert cut.column("rss_kb").to_pylist() == [5000, None, None]
    assert cut.column("cpu_ms").to_pylist() == [40.0, 50.0, 10.0]


def test_no_slice_holds_more_cpu_than_its_node_s_cores_in_its_time():
    """The CPU a task's samples missed (counters in 10 ms ticks) lands on its last slice, here 2 ms long: it
    is spread over the task's other slices as far as they have room, the task's total kept."""
    from tracekit.trace import slices

    task = {"node": "cloud1", "task_id": "t1", "attempt": 1, "ts_start": 0, "ts_end": 100, "cpu_user_ms": 110.0,
            "cpu_system_ms": 0.0}  # fmt: skip
    rows = _process_rows("t1", [(50, 50.0, 5000, 1), (98, 40.0, 5000, 1)])
    cut = slices.node_slices("cloud1", [task], None, rows, cores=2).to_pylist()
    assert [r["dt_ms"] for r in cut] == [50, 48, 2]
    assert sum(r["cpu_ms"] for r in cut) == pytest.approx(110.0, rel=1e-12)
    assert all(r["cpu_ms"] <= 2 * r["dt_ms"] * (1 + 1e-9) for r in cut), cut
    assert cut[2]["cpu_ms"] == pytest.approx(4.0)  # full, the rest where there was room
    # Where the other slices are full too (more CPU than the cores had in the task's time), nothing moves.
    busy = _process_rows("t1", [(50, 100.0, 5000, 1), (98, 96.0, 5000, 1)])
    crowded = slices.node_slices("cloud1", [{**task, "cpu_user_ms": 216.0}], None, busy, cores=2).to_pylist()
    assert [r["cpu_ms"] for r in crowded] == [100.0, 96.0, 20.0]
    # Without the node's cores known, the slices are as cut.
    assert slices.node_slices("cloud1", [task], None, rows, cores=None).column("cpu_ms").to_pylist() == [50.0, 40.0, 20.0]


def test_no_format_is_named_as_a_folder_of_the_run_itself():
    """A run's exports go to RUN_DIR/<format>, replaced at each parse: a format named as one of the run's own
    files or folders (its trace, its nodes' files, its report) would delete it."""
    from tracekit import runfolder
    from tracekit.report import REPORT

    own = {cctf.CCTF, "nodes", REPORT} | {value.split("/")[0].split(".")[0] for name, value in vars(runfolder).items()
                                          if name.isupper() and isinstance(value, str)}  # fmt: skip
    assert {"cctf", "nodes", "load", "pids"} <= own
    assert not own & set(export.names())


def test_a_task_measured_under_a_millisecond_lasts_1_ms_in_every_format(tmp_path):
    """One rule for all formats (OpenDC needs positive durations, a usage window a length): WTA and Google
    wrote 0 ms where OpenDC and Alibaba wrote 1 ms."""
    from tests.round_trip import assert_round_trip
    from tests.unit.test_export_alibaba import with_host_samples
    from tests.unit.test_export_wta import hand_made_run, invocation

    run = hand_made_run(tmp_path)
    invocations = cctf.read_records(run / cctf.CCTF, cctf.INVOCATIONS)
    cctf.write_records(run / cctf.CCTF, cctf.INVOCATIONS, [*invocations, invocation("quick", 1200, 1200)])
    with_host_samples(run, "cloud1", [10.0, 50.0, 80.0, 20.0], rx_bytes=1000)
    with_host_samples(run, "cloud2", [5.0, 5.0, 5.0], rx_bytes=4000)
    for name in export.names():
        out = tmp_path / name
        export.get(name).export(run, out)
        checked = export.get(name).verify(out, run)
        assert checked.ok, (name, checked.violations)
        assert assert_round_trip(run, name, out) == 7, name


def test_no_module_but_cctf_names_a_file_of_the_trace():
    """Every file of cctf/ is read and written through tracekit.trace.cctf: no path joined to one of its names
    and no name written out elsewhere (runfolder names the raw run's files, one of which shares a name)."""
    import re

    package = Path(cctf.__file__).resolve().parents[1]
    names = "|".join(re.escape(n) for n in (*cctf.RECORD_FILES, *cctf.JSON_FILES, *cctf.TEXT_FILES))
    joined = re.compile(r"/ cctf\.(NODES|LINKS|AUDIT|AUDIT_TEXT|INVOCATIONS|PLACEMENTS|REQUESTS)\b")
    literal = re.compile(rf"""(["'])({names})\1""")
    found = [f"{path.relative_to(package)}:{number}: {line.strip()}"
             for path in sorted(package.rglob("*.py")) if path.name != "cctf.py" and path.name != "runfolder.py"
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if joined.search(line) or literal.search(line)]  # fmt: skip
    assert not found, "\n".join(found)


def test_a_node_missing_from_nodes_json_asks_for_a_parse_in_every_format(tmp_path):
    """(OpenDC said to restart the node's collector with --cpu-mhz, which would not bring its facts back.)"""
    from tests.unit.test_export_wta import hand_made_run
    from tracekit.errors import TracekitError

    run = hand_made_run(tmp_path)
    nodes = cctf.read_json(run / cctf.CCTF, cctf.NODES)
    cctf.write_json(run / cctf.CCTF, cctf.NODES, [n for n in nodes if n["node"] != "cloud2"])
    for name in export.names():
        with pytest.raises(TracekitError, match=r"nodes.json (has no facts|lacks the memory) of node cloud2; parse the run again"):
            export.get(name).export(run, tmp_path / name)


def test_a_task_above_its_cores_in_its_whole_time_keeps_its_cpu_and_verifies_in_every_format(tmp_path):
    """Times cut to the ms: a task using both cores of its node for 1.75 ms shows 3.5 ms of CPU in 1 ms. No slice
    can take the excess; every format keeps the CPU (its total is measured) and its verify accepts it."""
    from tests.unit.test_export_alibaba import with_host_samples
    from tests.unit.test_export_wta import hand_made_run, invocation

    run = hand_made_run(tmp_path)
    invocations = cctf.read_records(run / cctf.CCTF, cctf.INVOCATIONS)
    cctf.write_records(run / cctf.CCTF, cctf.INVOCATIONS,
                       [*invocations, invocation("full", 1200, 1201) | {"cpu_user_ms": 3.5}])  # fmt: skip
    with_host_samples(run, "cloud1", [10.0, 50.0, 80.0, 20.0], rx_bytes=1000)
    with_host_samples(run, "cloud2", [5.0, 5.0, 5.0], rx_bytes=4000)
    for name in export.names():
        result = export.get(name).export(run, tmp_path / name)
        checked = export.get(name).verify(tmp_path / name, run)
        assert checked.ok, (name, checked.violations)
    assert result.summary["format"] == "wta"
    assert json.loads((tmp_path / "opendc" / export.SUMMARY).read_text())["tasks_above_their_cores"] == 1
