"""The export seam (tracekit.trace.export) and the small files of cctf/ (tracekit.trace.cctf)."""

from __future__ import annotations

import json

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
    with pytest.raises(UsageError, match=r"unknown export format 'wtf'; known: alibaba, google, opendc, wta"):
        export.get("wtf")
    with pytest.raises(SystemExit) as exited:
        cli.main(["export", "wtf", "logs/r1", "-o", "out"])
    assert exited.value.code == 2
    assert "invalid choice: 'wtf' (choose from 'alibaba', 'google', 'opendc', 'wta')" in capsys.readouterr().err


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
