"""Which runs are repetitions of which point: from a sweep's sweep.json, or from any run folders.

input:  a sweep folder (sweep.json: its axes, points and runs with their states), or run folders
        (resolved.json: every value of the experiment a run used; status.json: its state), or both
output: a ``Comparison``: the axes (the dotted keys whose values differ between points), the points
        with their values and their runs; notes on what was left out

Run folders are grouped by the experiment values that differ between them: each run's resolved
experiment is flattened to dotted keys (``dispatch.policy``, ``workload.http.load.rate``: the keys
``-e`` takes), the keys whose values differ across the runs are the axes, and runs with equal values
are repetitions of one point. Only succeeded runs (and warning ones: counted, and marked) give
figures; failed and interrupted runs are counted as failed; pending and running ones not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit.errors import UsageError
from tracekit.experiment.results import read_json_object

SWEEP_FILE = "sweep.json"
RESOLVED_FILE = "resolved.json"  # tracekit.experiment.run_dir.RESOLVED_FILE (not imported: it pulls in Ansible)
STATUS_FILE = "status.json"
COUNTED = ("succeeded", "warning")  # runs whose figures count (n)
FAILED = ("failed", "interrupted")  # runs that ended without figures to count (n_failed)
# Keys of a resolved experiment that change nothing a run measures: where its file was read from, its prose.
NOT_VALUES = frozenset({"source", "description"})
ALL_RUNS = "all runs"  # the label of the one point of runs that do not differ


@dataclass(frozen=True)
class RunEntry:
    folder: Path
    run_id: str
    state: str | None  # the run's final state (succeeded, warning, failed, interrupted, ...)
    repetition: int


@dataclass(frozen=True)
class Point:
    index: int
    label: str
    values: dict[str, Any]  # axis -> value
    runs: tuple[RunEntry, ...]

    def counted(self) -> list[RunEntry]:
        return [run for run in self.runs if run.state in COUNTED]

    def failed(self) -> list[RunEntry]:
        return [run for run in self.runs if run.state in FAILED]


@dataclass(frozen=True)
class Comparison:
    axes: tuple[str, ...]  # the first is the x axis of the plots
    points: tuple[Point, ...]
    sweep_dir: Path | None = None  # one sweep's folder (its sweep.json gave the points)
    notes: tuple[str, ...] = field(default_factory=tuple)


def value_text(value: Any) -> str:
    """A value as a label shows it: text as it is, anything else as JSON (a list, a number, null)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


def point_label(values: dict[str, Any]) -> str:
    return ",".join(f"{key}={value_text(value)}" for key, value in values.items()) or ALL_RUNS


def is_sweep_folder(path: Path) -> bool:
    return (path / SWEEP_FILE).is_file()


def is_run_folder(path: Path) -> bool:
    return (path / RESOLVED_FILE).is_file()


def check_folder(path: Path) -> None:
    """A run folder or a sweep folder; else one line naming the path."""
    if not path.is_dir():
        what = "not a folder" if path.exists() else "no such folder"
        raise UsageError(f"{path}: {what}; give run folders (logs/<RUN_ID>) or sweep folders (logs/<SWEEP_ID>)")
    if not is_sweep_folder(path) and not is_run_folder(path):
        raise UsageError(f"{path}: not a run folder (no {RESOLVED_FILE}) nor a sweep folder (no {SWEEP_FILE}); "
                         "give folders tracekit-run made")  # fmt: skip


# -- one sweep: its sweep.json ------------------------------------------------------------------


def _sweep_json(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / SWEEP_FILE
    sweep = read_json_object(path)
    if sweep is None:
        raise UsageError(f"{path}: not a JSON object; is the sweep folder complete?")
    for key, kind in (("axes", dict), ("points", list), ("runs", list)):
        if not isinstance(sweep.get(key), kind):
            raise UsageError(f"{path}: '{key}' is missing or not a {'mapping' if kind is dict else 'list'}")
    return sweep


def read_sweep(sweep_dir: Path) -> Comparison:
    """The points of one sweep and their runs, as its sweep.json records them (a run given twice, after a
    resume, counts as its last record says)."""
    sweep = _sweep_json(sweep_dir)
    axes = tuple(str(key) for key in sweep["axes"])
    latest: dict[tuple[Any, Any], dict[str, Any]] = {}
    for run in sweep["runs"]:
        if isinstance(run, dict):
            latest[(run.get("point"), run.get("repetition"))] = run
    points = []
    for position, point in enumerate(p for p in sweep["points"] if isinstance(p, dict)):
        index = point.get("point", position)
        values = point.get("values") if isinstance(point.get("values"), dict) else {}
        runs = sorted((r for (p, _), r in latest.items() if p == index), key=lambda r: _number(r.get("repetition")))
        entries = tuple(
            RunEntry(sweep_dir / str(run.get("folder")), str(run.get("run_id") or run.get("folder")), run.get("state"),
                     _number(run.get("repetition")))
            for run in runs
        )  # fmt: skip
        label = point.get("label") if isinstance(point.get("label"), str) else point_label(values)
        points.append(Point(int(_number(index)), label, {axis: values.get(axis) for axis in axes}, entries))
    return Comparison(axes, tuple(points), sweep_dir=sweep_dir)


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def sweep_run_folders(sweep_dir: Path) -> list[tuple[Path, str | None]]:
    """A sweep's run folders and their states (for a comparison with other runs)."""
    return [(run.folder, run.state) for point in read_sweep(sweep_dir).points for run in point.runs]


# -- any run folders: grouped by the values that differ ------------------------------------------


def flatten_experiment(experiment: dict[str, Any]) -> dict[str, Any]:
    """A resolved experiment as dotted keys -> values (lists are values); its workload section under
    ``workload.<kind>``, as the experiment file and ``-e`` name it."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, member in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), member)
        else:
            flat[prefix] = value

    for key, value in experiment.items():
        if key in NOT_VALUES:
            continue
        kind = experiment.get("kind")
        walk(f"workload.{kind}" if key == "workload" and isinstance(kind, str) else key, value)
    return flat


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers in their order, then text, then anything else (as JSON), then no value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (3, "") if value is None else (2, _canonical(value))


def _read_run(folder: Path, state: str | None) -> tuple[dict[str, Any], str | None]:
    resolved = read_json_object(folder / RESOLVED_FILE)
    if resolved is None or not isinstance(resolved.get("experiment"), dict):
        raise UsageError(f"{folder / RESOLVED_FILE}: no 'experiment' object in it; is it a tracekit-run folder?")
    if state is None:
        state = (read_json_object(folder / STATUS_FILE) or {}).get("state")
    return flatten_experiment(resolved["experiment"]), state


def group_runs(runs: list[tuple[Path, str | None]], notes: list[str] | None = None) -> Comparison:
    """Runs (folder, state; None: read its status.json) grouped into points by the values that differ."""
    read = [(folder, *_read_run(folder, state)) for folder, state in runs]
    keys: dict[str, None] = {}
    for _, values, _ in read:
        keys.update(dict.fromkeys(values))
    axes = [key for key in keys if len({_canonical(values.get(key)) for _, values, _ in read}) > 1]
    # A numeric axis first: it is the x axis of the plots, where a line through numbers means something.
    axes.sort(key=lambda key: not all(_sort_key(values.get(key))[0] == 0 for _, values, _ in read))
    grouped: dict[tuple[str, ...], list[tuple[Path, dict[str, Any], str | None]]] = {}
    for entry in read:
        grouped.setdefault(tuple(_canonical(entry[1].get(axis)) for axis in axes), []).append(entry)
    ordered = sorted(grouped.values(), key=lambda group: [_sort_key(group[0][1].get(axis)) for axis in axes])
    points = []
    for index, group in enumerate(ordered):
        values = {axis: group[0][1].get(axis) for axis in axes}
        entries = tuple(RunEntry(folder, _run_id(folder), state, repetition)
                        for repetition, (folder, _, state) in enumerate(group, start=1))  # fmt: skip
        points.append(Point(index, point_label(values), values, entries))
    return Comparison(tuple(axes), tuple(points), notes=tuple(notes or ()))


def _run_id(folder: Path) -> str:
    return str((read_json_object(folder / STATUS_FILE) or {}).get("run_id") or folder.name)


def comparison_of(paths: list[Path]) -> Comparison:
    """One sweep folder: its points. Anything else (run folders, several sweeps, both): every run
    grouped by the values that differ."""
    if not paths:
        raise UsageError("give at least one run folder or sweep folder")
    for path in paths:
        check_folder(path)
    if len(paths) == 1 and is_sweep_folder(paths[0]):
        return read_sweep(paths[0])
    runs: list[tuple[Path, str | None]] = []
    notes: list[str] = []
    seen: set[Path] = set()
    for path in paths:
        found = sweep_run_folders(path) if is_sweep_folder(path) else [(path, None)]
        for folder, state in found:
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            if is_run_folder(folder):
                runs.append((folder, state))
            elif state not in (None, "pending", "running"):
                notes.append(f"{folder}: no {RESOLVED_FILE}, so its values are unknown: left out")
    if not runs:
        raise UsageError(f"{', '.join(map(str, paths))}: no run folder in it; run the sweep or the runs first")
    return group_runs(runs, notes)
