"""verify_opendc: a valid workload passes; every broken rule is reported.

Each case writes a small workload with pyarrow (schemas from records.py,
topology from experiment_json) and changes exactly one thing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracekit import cli
from tracekit.errors import RunFolderError
from tracekit.trace.export.opendc import experiment_json
from tracekit.trace.records import OPENDC_FRAGMENTS, OPENDC_TASKS
from tracekit.trace.verify import verify_opendc

MHZ = 2000.0
NODE = {"node": "n1", "cores_logical": 4, "cpu_mhz": MHZ, "mem_kb": 8192 * 1024}  # one host: 4 cores, 8192 MiB


def _task(id, duration, cpu_count, submission_time=0, **extra):
    row = dict(id=id, submission_time=submission_time, duration=duration, cpu_count=cpu_count,
               cpu_capacity=MHZ * cpu_count, mem_capacity=1_000_000, name=f"t{id}")  # fmt: skip
    return row | extra


TASKS = [_task(0, 3000, 1), _task(1, 2000, 2, submission_time=500), _task(2, 1500, 4, submission_time=900)]
# (id, duration ms, cpu_usage MHz), grouped by task
FRAGMENTS = [(0, 1000, 1000.0), (0, 1000, 2000.0), (0, 1000, 500.0),
             (1, 1000, 4000.0), (1, 1000, 3000.0),
             (2, 1000, 8000.0), (2, 500, 6000.0)]  # fmt: skip


def schema_with(base: pa.Schema, **changes) -> pa.Schema:
    """base with fields replaced (a DataType keeps name and nullability, a Field replaces it),
    dropped (None) or appended (names not in base)."""
    fields = []
    for f in base:
        change = changes.pop(f.name, f)
        if change is None:
            continue
        fields.append(change if isinstance(change, pa.Field) else pa.field(f.name, change, nullable=f.nullable))
    fields += [c if isinstance(c, pa.Field) else pa.field(name, c) for name, c in changes.items()]
    return pa.schema(fields)


def write_workload(out: Path, *, tasks=None, fragments=None, task_columns=None, fragment_columns=None,
                   experiment: object = "default") -> Path:  # fmt: skip
    """A valid 3-task workload in out, with the given overrides; returns out."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = TASKS if tasks is None else tasks
    fragments = FRAGMENTS if fragments is None else fragments
    task_schema = schema_with(OPENDC_TASKS, **(task_columns or {}))
    fragment_schema = schema_with(OPENDC_FRAGMENTS, **(fragment_columns or {}))
    pq.write_table(pa.Table.from_pylist(tasks, schema=task_schema), out / "tasks.parquet")
    rows = [dict(id=i, duration=d, cpu_usage=u) for i, d, u in fragments]
    pq.write_table(pa.Table.from_pylist(rows, schema=fragment_schema), out / "fragments.parquet")
    if experiment == "default":
        experiment = json.dumps(experiment_json("test", [NODE]))
    if experiment is not None:
        (out / "experiment.json").write_text(experiment)
    return out


def replace_task(index: int, **values) -> list[dict]:
    return [t | values if i == index else t for i, t in enumerate(TASKS)]


def replace_fragment(index: int, **values) -> list[tuple]:
    rows = [dict(id=i, duration=d, cpu_usage=u) for i, d, u in FRAGMENTS]
    rows[index] |= values
    return [(r["id"], r["duration"], r["cpu_usage"]) for r in rows]


LIST32, LIST64 = pa.list_(pa.int32()), pa.list_(pa.int64())
DAG = dict(parents=[], children=[1, 2]), dict(parents=[0], children=[2]), dict(parents=[0, 1], children=[])
DAG_COLUMNS = dict(parents=LIST32, children=LIST32)


def dag_tasks(changes: dict[int, dict] | None = None) -> list[dict]:
    """TASKS as the workflow 0 -> 1 -> 2, 0 -> 2, with per-task changes."""
    return [t | d | (changes or {}).get(i, {}) for i, (t, d) in enumerate(zip(TASKS, DAG))]


VALID = {
    "plain": {},
    "submission_time TIMESTAMP(ms, UTC)": dict(task_columns=dict(submission_time=pa.timestamp("ms", tz="UTC"))),
    "parents/children LIST<INT32>": dict(tasks=dag_tasks(), task_columns=DAG_COLUMNS),
    "only parents": dict(tasks=dag_tasks(), task_columns=dict(parents=LIST32)),
    "memory exactly the host's": dict(tasks=replace_task(2, mem_capacity=8192 * 1000)),
    "no name column": dict(task_columns=dict(name=None)),
    "no topology": dict(experiment=None),
    # More CPU than its capacity over its whole time (times cut to the ms): kept, above it, where it is.
    "a task above its cores in its whole time": dict(fragments=[(0, 1000, 2500.0), (0, 1000, 2500.0), (0, 1000, 2500.0),
                                                                *FRAGMENTS[3:]]),
}


@pytest.mark.parametrize("overrides", VALID.values(), ids=VALID.keys())
def test_valid_workload_passes(tmp_path, overrides):
    result = verify_opendc(write_workload(tmp_path / "out", **overrides))
    assert result.violations == []
    assert result.ok
    assert (result.tasks, result.fragments) == (len(overrides.get("tasks", TASKS)), len(FRAGMENTS))


# case id -> (builder overrides, distinctive substring of the expected violation)
BROKEN = {
    "tasks: missing cpu_count": (dict(task_columns=dict(cpu_count=None)), "required column 'cpu_count' is missing"),
    "tasks: missing submission_time": (
        dict(task_columns=dict(submission_time=None)), "tasks.parquet: required column 'submission_time' is missing"),
    "tasks: missing mem_capacity": (
        dict(task_columns=dict(mem_capacity=None)), "required column 'mem_capacity' is missing"),
    "fragments: missing cpu_usage": (
        dict(fragment_columns=dict(cpu_usage=None)), "fragments.parquet: required column 'cpu_usage' is missing"),
    "fragments: missing duration": (
        dict(fragment_columns=dict(duration=None)), "fragments.parquet: required column 'duration' is missing"),
    "fragments: missing id": (dict(fragment_columns=dict(id=None)), "fragments.parquet: required column 'id'"),
    "tasks: id INT64": (dict(task_columns=dict(id=pa.int64())), "tasks.parquet: column 'id' is INT64, OpenDC needs"),
    "fragments: id INT64": (dict(fragment_columns=dict(id=pa.int64())), "fragments.parquet: column 'id' is INT64"),
    "mem_capacity DOUBLE": (dict(task_columns=dict(mem_capacity=pa.float64())), "'mem_capacity' is DOUBLE"),
    "cpu_count INT64": (dict(task_columns=dict(cpu_count=pa.int64())), "'cpu_count' is INT64"),
    "tasks: nullable duration": (
        dict(task_columns=dict(duration=pa.field("duration", pa.int64(), nullable=True))), "'duration' is nullable"),
    "fragments: nullable cpu_usage": (
        dict(fragment_columns=dict(cpu_usage=pa.field("cpu_usage", pa.float64(), nullable=True))),
        "fragments.parquet: column 'cpu_usage' is nullable"),
    "submission_time TIMESTAMP(us)": (
        dict(task_columns=dict(submission_time=pa.timestamp("us", tz="UTC"))), "timeUnit=microseconds"),
    "submission_time TIMESTAMP(ns)": (
        dict(task_columns=dict(submission_time=pa.timestamp("ns", tz="UTC"))), "timeUnit=nanoseconds"),
    "duplicate task ids": (dict(tasks=TASKS + [TASKS[0]]), "1 duplicate task ids"),
    "cpu_count 0": (dict(tasks=replace_task(1, cpu_count=0)), "task 1: cpu_count 0 is below 1"),
    "task duration 0": (dict(tasks=replace_task(1, duration=0)), "tasks.parquet: task 1: duration 0 is not positive"),
    "cpu_capacity 0": (dict(tasks=replace_task(0, cpu_capacity=0.0)), "cpu_capacity 0.0 is not a positive number"),
    "mem_capacity negative": (dict(tasks=replace_task(0, mem_capacity=-1)), "mem_capacity -1 is negative"),
    "fragment duration 0": (dict(fragments=replace_fragment(3, duration=0)), "row 3: task 1: duration 0 is not"),
    "fragment duration negative": (
        dict(fragments=replace_fragment(3, duration=-5)), "row 3: task 1: duration -5 is not positive"),
    "cpu_usage NaN": (dict(fragments=replace_fragment(0, cpu_usage=math.nan)), "row 0: task 0: cpu_usage nan"),
    "cpu_usage negative": (dict(fragments=replace_fragment(1, cpu_usage=-1.0)), "row 1: task 0: cpu_usage -1.0"),
    "cpu_usage inf": (dict(fragments=replace_fragment(2, cpu_usage=math.inf)), "row 2: task 0: cpu_usage inf"),
    "orphan fragment": (dict(fragments=FRAGMENTS + [(7, 100, 1.0)]), "task 7 does not exist (OpenDC drops it"),
    "task without fragments": (dict(fragments=[f for f in FRAGMENTS if f[0] != 2]), "task 2 has no fragments"),
    "fragments not contiguous": (
        dict(fragments=FRAGMENTS[1:3] + FRAGMENTS[3:] + FRAGMENTS[:1]), "fragments of task 0 are not contiguous"),
    "fragments not in task order": (
        dict(fragments=FRAGMENTS[3:5] + FRAGMENTS[:3] + FRAGMENTS[5:]),
        "row 2: fragments of task 0 come after those of task 1, which is below it in tasks.parquet"),
    "cpu_usage above cpu_capacity": (
        dict(fragments=replace_fragment(1, cpu_usage=2500.0)),
        "row 1: task 0: cpu_usage 2500 MHz is above its cpu_capacity 2000 MHz"),
    "empty workload": (dict(tasks=[], fragments=[]), "no tasks (an empty workload crashes OpenDC)"),
    "tasks not in submission order": (
        dict(tasks=replace_task(2, submission_time=-1)), "task 2 was submitted before task 1 above it: tasks are not in"),
    "parents LIST<INT64>": (
        dict(tasks=dag_tasks(), task_columns=dict(parents=LIST64, children=LIST32)),
        "column 'parents' must be a standard 3-level LIST<INT32>"),
    "children LIST<INT64>": (
        dict(tasks=dag_tasks(), task_columns=dict(parents=LIST32, children=LIST64)),
        "column 'children' must be a standard 3-level LIST<INT32>"),
    "parent does not exist": (
        dict(tasks=replace_task(1, parents=[9]), task_columns=dict(parents=LIST32)), "task 1: parent 9 does not exist"),
    "child does not exist": (
        dict(tasks=replace_task(1, children=[9]), task_columns=dict(children=LIST32)), "task 1: child 9 does not"),
    "parent does not name child": (
        dict(tasks=dag_tasks({0: dict(children=[2])}), task_columns=DAG_COLUMNS),
        "task 1 names parent 0, which does not name it as a child"),
    "child does not name parent": (
        dict(tasks=dag_tasks({2: dict(parents=[1])}), task_columns=DAG_COLUMNS),
        "task 0 names child 2, which does not name it as a parent"),
    "too many cores for any host": (
        dict(tasks=replace_task(2, cpu_count=8, cpu_capacity=8 * MHZ)), "task 2 (8 cores, 1000000 kB) fits no host"),
    "too much memory for any host": (
        dict(tasks=replace_task(0, mem_capacity=8193 * 1000)), "task 0 (1 cores, 8193000 kB) fits no host"),
    "topology not JSON": (dict(experiment="{not json"), "experiment.json: not a usable topology (JSONDecodeError"),
    "topology without hosts": (
        dict(experiment=json.dumps({"topologies": [{"clusters": [{"name": "C01"}]}]})), "usable topology (KeyError"),
    "memory in a unit OpenDC does not read": (
        dict(experiment=json.dumps({"topologies": [{"clusters": [{"name": "C01", "hosts": [
            {"name": "h", "count": 1, "cpu": {"coreCount": 4, "coreSpeed": "2 GHz"}, "memory": {"size": "8 furlongs"}}]}]}]})),
        "usable topology (ValueError: memory size '8 furlongs' is not a number of KiB, MiB, GiB or TiB)"),
}


def test_the_experiment_is_opendc_s_sdk_shape_with_its_units_written_out():
    """As OpenDC's own example (opendc-cli's tiny-experiment.json): hosts inline, "3.0 GHz", "16 GiB"; the
    workload the experiment's folder (a trace source named ".", resolved against the file's folder)."""
    experiment = experiment_json("t", [NODE])
    [host] = experiment["topologies"][0]["clusters"][0]["hosts"]
    assert host["cpu"] == {"coreCount": 4, "coreSpeed": "2000 MHz"} and host["memory"] == {"size": "8192 MiB"}
    assert experiment["workloads"] == [{"type": "trace", "source": {"type": "named", "name": "."}}]
    assert experiment["allocationPolicies"] == [{"type": "prefab", "prefabName": "Mem"}]


@pytest.mark.parametrize(("size", "mib"), [(8192, 8192.0), ("8192 MiB", 8192.0), ("16 GiB", 16384.0), (" 512 kib ", 0.5)])
def test_memory_sizes_as_opendc_reads_them(size, mib):
    from tracekit.trace.verify import memory_mib

    assert memory_mib(size) == mib


@pytest.mark.parametrize(("overrides", "expected"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_rule_is_reported(tmp_path, overrides, expected):
    result = verify_opendc(write_workload(tmp_path / "out", **overrides))
    assert not result.ok
    assert len(result.violations) == 1 and expected in result.violations[0], result.violations


def test_null_in_nullable_required_column_is_reported_not_crashed_on(tmp_path):
    nullable = pa.field("cpu_count", pa.int32(), nullable=True)
    out = write_workload(tmp_path / "out", tasks=replace_task(1, cpu_count=None), task_columns=dict(cpu_count=nullable))
    assert verify_opendc(out).violations == [
        "tasks.parquet: column 'cpu_count' is nullable; OpenDC needs it written as required",
        "tasks.parquet: task 1: cpu_count None is below 1",
    ]


def test_given_topology_that_does_not_exist(tmp_path):
    out = write_workload(tmp_path / "out")
    result = verify_opendc(out, topology=tmp_path / "nowhere.json")
    assert len(result.violations) == 1
    assert "nowhere.json: not a usable topology (FileNotFoundError" in result.violations[0]


@pytest.mark.parametrize("name", ["tasks.parquet", "fragments.parquet"])
def test_missing_parquet_raises(tmp_path, name):
    out = write_workload(tmp_path / "out")
    (out / name).unlink()
    with pytest.raises(RunFolderError, match=name):
        verify_opendc(out)


# -- conservation against a run folder ----------------------------------------------------


def fake_run(tmp_path: Path, *, cpu_factor=None, duration_shift=None) -> tuple[Path, Path]:
    """OUT (the valid workload + task_ids.jsonl) and RUN/cctf whose invocations conserve it,
    except task 1's CPU times cpu_factor and its ts_end + duration_shift ms."""
    out, run = write_workload(tmp_path / "out"), tmp_path / "run"
    (run / "cctf").mkdir(parents=True)
    (run / "cctf" / "nodes.json").write_text(json.dumps([NODE]))
    invocations, mapping = [], []
    for task in TASKS:
        parts = [(d, u) for i, d, u in FRAGMENTS if i == task["id"]]
        cpu_ms = sum(u / MHZ * d for d, u in parts)
        start = 10_000 + task["submission_time"]
        end = start + sum(d for d, _ in parts)
        if task["id"] == 1:
            cpu_ms *= cpu_factor or 1.0
            end += duration_shift or 0
        invocations.append(dict(node="n1", task_id=task["name"], attempt=0, ts_start=start, ts_end=end,
                                cpu_user_ms=cpu_ms * 0.75, cpu_system_ms=cpu_ms * 0.25))  # fmt: skip
        mapping.append(dict(id=task["id"], task_id=task["name"], trace_id="tr", node="n1", pid=100 + task["id"],
                            attempt=0, ok=True))  # fmt: skip
    (run / "cctf" / "invocations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in invocations))
    (out / "task_ids.jsonl").write_text("".join(json.dumps(m) + "\n" for m in mapping))
    return out, run


def test_conserving_workload_passes(tmp_path):
    out, run = fake_run(tmp_path)
    result = verify_opendc(out, against=run)
    assert result.violations == []
    assert result.checked_conservation == len(TASKS)


def test_cpu_time_two_percent_off_is_reported(tmp_path):
    out, run = fake_run(tmp_path, cpu_factor=1.02)
    result = verify_opendc(out, against=run)
    assert len(result.violations) == 1
    assert "task 1 (t1): fragments hold 3500.0 CPU-ms, measured 3570.0 CPU-ms" in result.violations[0]


def test_half_percent_off_is_within_tolerance(tmp_path):
    out, run = fake_run(tmp_path, cpu_factor=1.005)
    assert verify_opendc(out, against=run).ok


def test_fragment_durations_not_summing_to_invocation_is_reported(tmp_path):
    out, run = fake_run(tmp_path, duration_shift=5)
    result = verify_opendc(out, against=run)
    assert result.violations == ["task 1 (t1): fragments last 2000 ms, the invocation 2005 ms"]


def test_conservation_without_mapping_raises(tmp_path):
    out, run = fake_run(tmp_path)
    (out / "task_ids.jsonl").unlink()
    with pytest.raises(RunFolderError, match="task_ids.jsonl"):
        verify_opendc(out, against=run)


# -- CLI ---------------------------------------------------------------------------------


def test_cli_valid_workload_prints_one_ok_line(tmp_path, capsys):
    out = write_workload(tmp_path / "out")
    assert cli.main(["verify", "opendc", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "OK" in lines[0] and "3 tasks, 7 fragments" in lines[0]


def test_cli_against_reports_conservation(tmp_path, capsys):
    out, run = fake_run(tmp_path)
    assert cli.main(["verify", "opendc", str(out), "--against", str(run)]) == 0
    assert "conservation checked for 3 tasks" in capsys.readouterr().out


def test_cli_broken_workload_prints_one_line_per_violation(tmp_path, capsys):
    out = write_workload(tmp_path / "out", fragments=replace_fragment(0, cpu_usage=math.nan),
                         tasks=replace_task(1, cpu_count=0))  # fmt: skip
    assert cli.main(["verify", "opendc", str(out)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines == verify_opendc(out).violations and len(lines) == 2
    assert "2 violations" in captured.err


def test_cli_missing_workload_is_an_error(tmp_path, capsys):
    assert cli.main(["verify", "opendc", str(tmp_path / "empty")]) == 1
    assert "tasks.parquet not found" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["bytes overwritten", "cut short", "not Parquet"])
@pytest.mark.parametrize("name", ["tasks.parquet", "fragments.parquet"])
def test_cli_unreadable_parquet_file_is_one_line_naming_it(tmp_path, capsys, name, damage):
    out = write_workload(tmp_path / "out")
    path = out / name
    data = bytearray(path.read_bytes())
    if damage == "bytes overwritten":
        middle = len(data) // 2
        data[middle : middle + 50] = b"\xff" * 50
    elif damage == "cut short":
        data = data[:100]
    else:
        data = bytearray(b"id,duration\n1,2\n")
    path.write_bytes(bytes(data))
    assert cli.main(["verify", "opendc", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"tracekit verify: error: {path}: not a readable Parquet file (")
    assert captured.err.count("\n") == 1 and "export again" in captured.err
    with pytest.raises(RunFolderError, match=name):
        verify_opendc(out)


def node(name: str, boot_id: str | None, cpus: list[int], cores_logical: int = 4) -> dict:
    return {"node": name, "cores_logical": cores_logical, "cores_usable": len(cpus), "cpus": cpus,
            "boot_id": boot_id, "cpu_mhz": MHZ, "mem_kb": 8192 * 1024}  # fmt: skip


def hosts_of(nodes: list[dict]) -> list[tuple[str, int, int]]:
    experiment = experiment_json("t", nodes)
    return [(h["name"], h["count"], h["cpu"]["coreCount"]) for h in experiment["topologies"][0]["clusters"][0]["hosts"]]


def test_the_topology_claims_the_cores_the_nodes_had():
    # Machines of their own, identical: one group of 2 hosts.
    assert hosts_of([node("a", "m1", [0, 1, 2, 3]), node("b", "m2", [0, 1, 2, 3])]) == [("a+b", 2, 4)]
    # One machine, a CPU each: 2 hosts of 1 core, not 2 of 4.
    assert hosts_of([node("a", "m1", [0]), node("b", "m1", [1])]) == [("a+b", 2, 1)]
    # One machine, the same CPUs: one host of their union.
    assert hosts_of([node("a", "m1", [0, 1]), node("b", "m1", [1, 2]), node("c", "m2", [0])]) == [
        ("a&b", 1, 3), ("c", 1, 1)]
    # Nodes that recorded no CPUs (older collectors) keep the machine's cores.
    assert hosts_of([{k: v for k, v in node("a", None, [0]).items() if k not in ("cpus", "cores_usable")}]) == [
        ("a", 1, 4)]
