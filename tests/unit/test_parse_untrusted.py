"""tracekit parse does not trust what the nodes hand it (issue 23).

Each case breaks a copy of the committed real capture (tests/data/golden-run:
cloud1 and cloud2 of run p1, cloud2's clock 5 s off) the way a bad disk, a
broken copy or a mixed-up folder would, and checks that parse keeps what is
sound, leaves out or redoes what is not, says so in the audit (and on the
command line), and never shows a traceback.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, tracekit_cmd
from tracekit import cli
from tracekit.errors import RunFolderError
from tracekit.trace import nodeparse
from tracekit.trace.parse import parse_run

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden-run"
RUN_ID = "p1"  # what the golden run's events record
TASKS = {"t-ffmpeg-1", "t-burn", "t-quick", "t-ffmpeg-2", "t-fail"}
CLOUD2_OFFSET_MS = 5000
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def golden(tmp_path: Path, name: str = "run") -> Path:
    """A private copy of the golden run, in a run folder called ``name``."""
    run = tmp_path / name
    shutil.copytree(GOLDEN / "nodes", run / "nodes")
    return run


def of_another_run(folder: Path, node: str, run_id: str = "p9") -> Path:
    """``folder`` made into node ``node`` of run ``run_id``: its facts and its events say so."""
    facts = json.loads((folder / "node.json").read_text())
    facts["node"] = node
    (folder / "node.json").write_text(json.dumps(facts))
    for events in folder.glob("events.*.jsonl"):
        lines = [{**r, "run_id": run_id, "node": node} for r in read_jsonl(events)]
        events.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def trace(run: Path) -> dict[str, bytes]:
    """The trace's files but the audit (which says what was rejected), with the run folder's path as RUN."""
    cctf = run / "cctf"
    return {
        str(p.relative_to(cctf)): p.read_bytes().replace(str(run).encode(), b"RUN")
        for p in sorted(cctf.rglob("*"))
        if p.is_file() and not p.name.startswith("audit.")
    }


def rejected(audit: dict, kind: str) -> list[tuple[str, int | None]]:
    return [(r["path"], r["line"]) for r in audit["rejected_listed"] if r["kind"] == kind]


def invocations(run: Path) -> dict[str, dict]:
    return {r["task_id"]: r for r in read_jsonl(run / "cctf" / "invocations.jsonl")}


@pytest.fixture
def plain(tmp_path) -> Path:
    """The golden run parsed as it is: what a damaged copy must still give."""
    run = golden(tmp_path, "plain")
    parse_run(run)
    return run


# -- node parts and node folders --------------------------------------------------------


@pytest.mark.parametrize("damage", ["bytes overwritten", "cut short"])
def test_a_damaged_part_is_made_again_from_the_raw_files_and_reported(tmp_path, plain, damage, capsys):
    run = golden(tmp_path)
    part, _ = nodeparse.write_part(run / "nodes" / "cloud1")
    table = part / "proc_metrics.parquet"
    data = bytearray(table.read_bytes())
    if damage == "bytes overwritten":
        data[100:200] = b"\0" * 100
    else:
        data = data[: len(data) // 2]
    table.write_bytes(bytes(data))
    assert cli.main(["parse", str(run)]) == 0
    out = capsys.readouterr().out
    assert trace(run) == trace(plain)
    audit = json.loads((run / "cctf" / "audit.json").read_text())
    assert rejected(audit, "node_part") == [("nodes/cloud1/cctf-part", None)]
    assert "proc_metrics.parquet is not the file written" in audit["rejected_listed"][0]["reason"]
    assert "note: node parts not taken as they were: 1 (nodes/cloud1/cctf-part: proc_metrics.parquet" in out
    # --node-part sees it too: the part is made again there.
    assert cli.main(["parse", "--node-part", str(run / "nodes" / "cloud1")]) == 0
    assert capsys.readouterr().out.endswith(": written\n")


def test_a_node_folder_of_another_run_is_left_out_and_named(tmp_path, plain, capsys):
    run = golden(tmp_path)
    of_another_run(shutil.copytree(run / "nodes" / "cloud2", run / "nodes" / "cloud3"), "cloud3")
    assert cli.main(["parse", str(run)]) == 0
    out = capsys.readouterr().out
    assert set(invocations(run)) == TASKS
    assert trace(run) == trace(plain)
    audit = json.loads((run / "cctf" / "audit.json").read_text())
    assert audit["run_id"] == RUN_ID and audit["nodes"] == 2
    assert rejected(audit, "node_folder") == [("nodes/cloud3", None)]
    assert audit["rejected_listed"][0]["reason"] == "of run 'p9', not of 'p1': left out of the trace"
    assert "note: node folders of another run: 1 (nodes/cloud3: of run 'p9', not of 'p1'" in out


@pytest.mark.parametrize("how", ["folder named after the run", "resolved.json"])
def test_a_node_swapped_for_another_runs_is_left_out(tmp_path, how):
    """Half the nodes of each run: the run folder's name, or tracekit-run's resolved.json, says which run it is."""
    run = golden(tmp_path, RUN_ID if how == "folder named after the run" else "renamed")
    if how == "resolved.json":
        (run / "resolved.json").write_text(json.dumps({"run_id": RUN_ID}))
    of_another_run(run / "nodes" / "cloud2", "cloud2")
    audit = parse_run(run).audit
    assert set(invocations(run)) == {"t-ffmpeg-1", "t-burn", "t-quick"}
    assert [n["node"] for n in json.loads((run / "cctf" / "nodes.json").read_text())] == ["cloud1"]
    assert rejected(audit, "node_folder") == [("nodes/cloud2", None)]


def test_node_folders_of_two_runs_and_nothing_to_tell_which_is_one_line(tmp_path, capsys):
    run = golden(tmp_path)
    of_another_run(run / "nodes" / "cloud2", "cloud2")
    assert cli.main(["parse", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "record different runs" in err and "p1: cloud1; p9: cloud2" in err
    assert not (run / "cctf").exists()


def test_a_valid_part_of_another_run_is_left_out_with_its_node_folder(tmp_path, plain):
    """A node folder of another run that comes with the part made of it: neither is merged."""
    other = of_another_run(shutil.copytree(GOLDEN / "nodes" / "cloud2", tmp_path / "p9" / "cloud3"), "cloud3")
    nodeparse.write_part(other)
    run = golden(tmp_path)
    shutil.copytree(other, run / "nodes" / "cloud3")
    audit = parse_run(run).audit
    assert trace(run) == trace(plain)
    assert rejected(audit, "node_folder") == [("nodes/cloud3", None)]


def test_a_part_of_another_run_beside_this_runs_raw_files_is_made_again(tmp_path, plain):
    other = of_another_run(shutil.copytree(GOLDEN / "nodes" / "cloud2", tmp_path / "p9" / "cloud2"), "cloud2")
    part, _ = nodeparse.write_part(other)
    run = golden(tmp_path)
    shutil.copytree(part, run / "nodes" / "cloud2" / nodeparse.PART_DIR)
    audit = parse_run(run).audit
    assert trace(run) == trace(plain)
    assert rejected(audit, "node_part") == [("nodes/cloud2/cctf-part", None)]
    assert audit["rejected_listed"][0]["reason"] == "a part of run 'p9', not of 'p1': made again from the node's raw files"


def test_a_run_folder_named_after_its_run_takes_parts_made_in_it(tmp_path, plain):
    """The runner's flow: parts made in logs/<RUN_ID> on the nodes, resolved.json on the controller."""
    run = golden(tmp_path, RUN_ID)
    (run / "resolved.json").write_text(json.dumps({"run_id": RUN_ID}))
    for node in ("cloud1", "cloud2"):
        nodeparse.write_part(run / "nodes" / node)
    audit = parse_run(run).audit
    assert trace(run) == trace(plain)
    assert audit["rejected"] == 0 and audit["run_id"] == RUN_ID


# -- invocation events ------------------------------------------------------------------


@pytest.mark.parametrize("parts", [False, True], ids=["parsed here", "parts made on the nodes"])
def test_a_copied_events_file_counts_each_invocation_once(tmp_path, plain, parts, capsys):
    run = golden(tmp_path)
    events = run / "nodes" / "cloud1" / "events.ffmpeg.jsonl"
    shutil.copyfile(events, events.with_name("events.ffmpeg2.jsonl"))
    if parts:
        for node in ("cloud1", "cloud2"):
            nodeparse.write_part(run / "nodes" / node)
    assert cli.main(["parse", str(run)]) == 0
    assert "1 invocation events were identical copies of others" in capsys.readouterr().out
    assert trace(run) == trace(plain)  # so the same CPU-seconds, the same tasks
    audit = json.loads((run / "cctf" / "audit.json").read_text())
    assert audit["invocations"] == 5 and audit["invocations_duplicate"] == 1 and audit["rejected"] == 0
    assert audit["cpu_ms_by_source"] == json.loads((plain / "cctf" / "audit.json").read_text())["cpu_ms_by_source"]


def test_a_different_event_of_the_same_task_and_attempt_is_left_out_and_named(tmp_path, plain):
    run = golden(tmp_path)
    [event] = read_jsonl(run / "nodes" / "cloud1" / "events.quick.jsonl")
    later = {**event, "ts_end": event["ts_end"] + 60_000, "cpu_user_ms": 99_999}
    (run / "nodes" / "cloud1" / "events.zz.jsonl").write_text(json.dumps(event) + "\n" + json.dumps(later) + "\n")
    audit = parse_run(run).audit
    assert trace(run) == trace(plain)
    assert audit["invocations_duplicate"] == 1
    assert rejected(audit, "invocation") == [("nodes/cloud1/events.zz.jsonl", 2)]
    assert audit["rejected_listed"][0]["reason"] == (
        "task 't-quick' attempt 1 again, different from events.quick.jsonl:1: the first kept"
    )


def test_an_event_of_another_run_is_left_out(tmp_path, plain):
    run = golden(tmp_path)
    [event] = read_jsonl(run / "nodes" / "cloud1" / "events.quick.jsonl")
    (run / "nodes" / "cloud1" / "events.other.jsonl").write_text(json.dumps({**event, "run_id": "p9", "task_id": "x"}) + "\n")
    audit = parse_run(run).audit
    assert trace(run) == trace(plain)
    assert rejected(audit, "invocation") == [("nodes/cloud1/events.other.jsonl", 1)]


def test_an_event_with_fields_of_the_wrong_type_is_a_skipped_line(tmp_path):
    run = golden(tmp_path)
    [event] = read_jsonl(run / "nodes" / "cloud1" / "events.quick.jsonl")
    bad = [{**event, "task_id": ["t"]}, {**event, "task_id": "t-2", "ts_start": "soon"}, {**event, "task_id": "t-3", "attempt": 1.5},
           {**event, "task_id": "t-4", "attempt": None}, {**event, "task_id": "t-5", "attempt": 0}]  # fmt: skip
    (run / "nodes" / "cloud1" / "events.bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    audit = parse_run(run).audit
    assert set(invocations(run)) == TASKS
    assert [(b["line"], b["reason"]) for b in audit["bad_lines_listed"]] == [
        (1, "task_id is not a string"), (2, "ts_start is not a whole number"), (3, "attempt is not a whole number"),
        (4, "attempt is not a whole number"), (5, "attempt is below 1"),
    ]  # fmt: skip


def test_a_bad_line_of_a_collector_s_records_is_counted_once(tmp_path):
    # Parse read collector.jsonl once for a dead collector and again for the processes it left alone:
    # each bad line of it was counted twice.
    run = golden(tmp_path)
    with open(run / "nodes" / "cloud1" / "collector.jsonl", "a") as records:
        records.write("{not json\n")
    audit = parse_run(run).audit
    assert [b["file"] for b in audit["bad_lines_listed"]] == ["nodes/cloud1/collector.jsonl"]


# -- clock offsets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset, reason",
    [
        ("1e15", "offset_ms 1000000000000000.0 is beyond +-60000 ms"),
        ("3600000", "offset_ms 3600000 is beyond +-60000 ms"),
        ('"abc"', "offset_ms 'abc' is not a number"),
        ("NaN", "offset_ms nan is not a number"),
        ("true", "offset_ms True is not a number"),
        ("[5000]", "offset_ms [5000] is not a number"),
    ],
)
def test_a_clock_offset_past_belief_is_refused_and_the_node_left_unshifted(tmp_path, offset, reason):
    run = golden(tmp_path)
    clock = run / "nodes" / "cloud2" / "clock.json"
    clock.write_text(f'{{"offset_ms": {offset}, "uncertainty_ms": 0.5, "reference": "cloud0", "rtt_ms": 0.2}}')
    [raw] = read_jsonl(run / "nodes" / "cloud2" / "events.ffmpeg.jsonl")
    audit = parse_run(run).audit
    parsed = invocations(run)["t-ffmpeg-2"]
    assert (parsed["ts_start"], parsed["ts_end"]) == (raw["ts_start"], raw["ts_end"])
    assert rejected(audit, "clock_offset") == [("nodes/cloud2/clock.json", None)]
    assert audit["rejected_listed"][0]["reason"].startswith(reason)
    assert audit["rejected_listed"][0]["reason"].endswith(": node not shifted")
    assert audit["clock_offsets_ms"]["cloud2"] is None and "cloud2" in audit["nodes_without_clock_offset"]
    [cloud2] = [n for n in json.loads((run / "cctf" / "nodes.json").read_text()) if n["node"] == "cloud2"]
    assert cloud2["clock_offset_ms"] is None and cloud2["clock_uncertainty_ms"] == 0.5


def test_an_offset_that_is_not_what_was_measured_is_refused(tmp_path):
    run = golden(tmp_path)
    measured = {"offset_ms": 12.0, "uncertainty_ms": 0.4, "rtt_ms": 0.8, "ts_ms": 1}
    clock = {"offset_ms": 40_000, "uncertainty_ms": 0.4, "rtt_ms": 0.8, "reference": "c", "start": measured, "end": measured}
    (run / "nodes" / "cloud2" / "clock.json").write_text(json.dumps(clock))
    audit = parse_run(run).audit
    assert audit["clock_offsets_ms"]["cloud2"] is None
    assert "is not what was measured (start/end 12..12 ms)" in audit["rejected_listed"][0]["reason"]


def test_a_measured_offset_is_applied(tmp_path):
    """What tracekit.collect.clock writes: the mean of the start and end measurements."""
    run = golden(tmp_path)
    start = {"offset_ms": CLOUD2_OFFSET_MS - 0.25, "uncertainty_ms": 0.1, "rtt_ms": 0.2, "ts_ms": 1}
    end = {"offset_ms": CLOUD2_OFFSET_MS + 0.25, "uncertainty_ms": 0.1, "rtt_ms": 0.2, "ts_ms": 2}
    clock = {"offset_ms": CLOUD2_OFFSET_MS, "uncertainty_ms": 0.1, "rtt_ms": 0.2, "reference": "c", "start": start, "end": end}
    (run / "nodes" / "cloud2" / "clock.json").write_text(json.dumps(clock))
    [raw] = read_jsonl(run / "nodes" / "cloud2" / "events.ffmpeg.jsonl")
    audit = parse_run(run).audit
    assert audit["rejected"] == 0 and audit["clock_offsets_ms"]["cloud2"] == CLOUD2_OFFSET_MS
    assert invocations(run)["t-ffmpeg-2"]["ts_start"] == raw["ts_start"] + CLOUD2_OFFSET_MS


# -- empty files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["proc.csv", "host.csv", "host_cpus.csv", "host_net.csv", "clock.json"])
def test_an_empty_raw_file_is_read_as_missing_with_a_note(tmp_path, name, capsys):
    run = golden(tmp_path)
    (run / "nodes" / "cloud2" / name).write_bytes(b"")
    missing = golden(tmp_path, "missing")
    (missing / "nodes" / "cloud2" / name).unlink()
    assert cli.main(["parse", str(run)]) == 0
    assert f"note: empty raw files: 1 (nodes/cloud2/{name}: empty: read as missing" in capsys.readouterr().out
    parse_run(missing)
    assert trace(run) == trace(missing)
    audit = json.loads((run / "cctf" / "audit.json").read_text())
    assert rejected(audit, "empty_file") == [(f"nodes/cloud2/{name}", None)]


# -- garbage bytes ----------------------------------------------------------------------


def test_garbage_bytes_are_skipped_lines_without_a_traceback_and_escaped_in_audit_md(tmp_path):
    run = golden(tmp_path)
    garbage = random.Random(23).randbytes(3000) + b"\x1b[31m\x07\x00\r\n"
    events = run / "nodes" / "cloud1" / "events.ffmpeg.jsonl"
    proc = run / "nodes" / "cloud1" / "proc.csv"
    good_proc_lines = proc.read_bytes().count(b"\n")
    for path in (events, proc):
        with open(path, "ab") as f:
            f.write(garbage)
    done = subprocess.run(tracekit_cmd("parse", str(run)), capture_output=True, text=True, errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert set(invocations(run)) == TASKS
    audit = json.loads((run / "cctf" / "audit.json").read_text())
    where = {(b["file"], b["line"]) for b in audit["bad_lines_listed"]}
    assert ("nodes/cloud1/events.ffmpeg.jsonl", 2) in where  # the first line after the good one
    assert ("nodes/cloud1/proc.csv", good_proc_lines + 1) in where
    markdown = (run / "cctf" / "audit.md").read_text()
    assert not CONTROL.search(markdown) and "nodes/cloud1/proc.csv:" in markdown
    assert not CONTROL.search(done.stdout)


# -- the audit's fields -----------------------------------------------------------------


def test_the_audit_has_the_declared_fields(plain):
    from tracekit.trace.records import AUDIT_FIELDS

    audit = json.loads((plain / "cctf" / "audit.json").read_text())
    assert tuple(audit) == AUDIT_FIELDS
    assert audit["run_id"] == RUN_ID and audit["rejected"] == 0 and audit["invocations_duplicate"] == 0
    assert not math.isnan(audit["cpu_ms_by_source"]["rusage"])


def test_every_node_folder_of_another_run_is_one_line(tmp_path, capsys):
    run = golden(tmp_path)
    (run / "resolved.json").write_text(json.dumps({"run_id": "p9"}))
    assert cli.main(["parse", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "every node folder is of another run than 'p9'" in err
    with pytest.raises(RunFolderError):
        parse_run(run)


def test_a_node_folder_with_more_events_of_another_run_than_of_its_own_keeps_its_own(tmp_path, plain):
    """The run folder's name says which of the runs a node's events name is its own."""
    run = golden(tmp_path, RUN_ID)
    [event] = read_jsonl(run / "nodes" / "cloud1" / "events.quick.jsonl")
    foreign = [{**event, "run_id": "p9", "task_id": f"x{i}"} for i in range(5)]
    (run / "nodes" / "cloud1" / "events.other.jsonl").write_text("".join(json.dumps(r) + "\n" for r in foreign))
    audit = parse_run(run).audit
    assert set(invocations(run)) == TASKS
    assert rejected(audit, "invocation") == [("nodes/cloud1/events.other.jsonl", line) for line in range(1, 6)]
