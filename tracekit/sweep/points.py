"""A sweep's points: an experiment's ``sweep`` section -> its points and the order their runs go in.

input:  the experiment file, its -e overrides, and its sweep section (Experiment.sweep: matrix, zip,
        repeat, order, seed) with what the command line adds (--matrix, --zip, --repeat)
output: SweepPlan: the axes (dotted key -> values, as given), the points (a value of each axis, and the
        -e overrides that make the point's experiment from the file), the runs in order (point,
        repetition, run id); every point's experiment is loaded, so validated, before anything runs

The points are the cartesian product of the matrix axes (the first key varies slowest) times the rows
of the zip axes (lists of one length, taken element-wise). Runs go in rounds: each round runs every
point once, repeat rounds; with ``order: shuffled`` each round's order is shuffled with the seed, so
that a drift of the machine over time (a warming disk, another tenant) does not line up with one point.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracekit.errors import ExperimentError
from tracekit.experiment.spec import Experiment, load_experiment, parse_override
from tracekit.schemas import with_defaults
from tracekit.workloads import experiment_schema

NO_SWEEP = "sweep=null"  # the override that makes a point's experiment one run, not a sweep again
_SLUG_MAX = 72  # a run id has at most 128 characters


@dataclass(frozen=True)
class Point:
    index: int
    values: dict[str, Any]  # dotted key -> its value at this point, in the axes' order

    @property
    def label(self) -> str:
        """``dispatch.policy=lpt,collectors.interval_ms=200``: the point as a person reads it."""
        return ",".join(f"{key}={_text(value)}" for key, value in self.values.items())

    @property
    def overrides(self) -> list[str]:
        """The -e values that make this point's experiment (values as JSON: YAML reads them back as they are)."""
        return [NO_SWEEP] + [f"{key}={json.dumps(value)}" for key, value in self.values.items()]

    def run_id(self, repetition: int) -> str:
        """``3-policy-lpt_interval_ms-200-r2``: the point's run folder and run id (folder-name characters only)."""
        slug = "_".join(f"{key.rsplit('.', 1)[-1]}-{_slug(value)}" for key, value in self.values.items())
        return f"{self.index}-{slug[:_SLUG_MAX].strip('-_.') or 'point'}-r{repetition}"


@dataclass(frozen=True)
class PlannedRun:
    point: int
    repetition: int  # 1..repeat
    run_id: str


@dataclass(frozen=True)
class SweepPlan:
    axes: dict[str, list[Any]]
    points: list[Point]
    repeat: int
    order: str
    seed: int
    runs: list[PlannedRun]

    def lines(self) -> list[str]:
        """What --dry-run prints: the points, then the runs in their order."""
        lines = [f"{len(self.points)} point(s) x {self.repeat} repetition(s) = {len(self.runs)} run(s), "
                 f"order {self.order}" + (f" (seed {self.seed})" if self.order == "shuffled" else "")]  # fmt: skip
        lines += [f"  point {p.index}: {p.label or '(the experiment as it is)'}" for p in self.points]
        lines.append("runs, in order:")
        lines += [f"  {n + 1:>3}. {run.run_id}" for n, run in enumerate(self.runs)]
        return lines


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", _text(value)).strip("-.") or "x"


def with_command_line(sweep: dict[str, Any] | None, matrix: list[str], zipped: list[str], repeat: int | None) -> dict[str, Any] | None:
    """The experiment's sweep section with --matrix KEY=[...], --zip KEY=[...] and --repeat N added."""
    if not matrix and not zipped and repeat is None:
        return sweep
    section = with_defaults(experiment_schema()["properties"]["sweep"], sweep or {})  # the schema's defaults
    section["matrix"], section["zip"] = dict(section.get("matrix") or {}), dict(section.get("zip") or {})
    for flag, given, into in (("--matrix", matrix, section["matrix"]), ("--zip", zipped, section["zip"])):
        for text in given:
            keys, value = parse_override(text)
            if not isinstance(value, list):
                raise ExperimentError(f"{flag} {text!r}: give the values as a list, e.g. {flag} 'dispatch.policy=[lpt, round-robin]'")
            if not value:
                raise ExperimentError(f"{flag} {text!r}: the list is empty; give at least one value")
            into[".".join(keys)] = value
    if repeat is not None:
        if repeat < 1:
            raise ExperimentError(f"--repeat {repeat}: give the runs per point, 1 or more")
        section["repeat"] = repeat
    return section


def _check_axes(source: str, matrix: dict[str, list[Any]], zipped: dict[str, list[Any]]) -> None:
    for key in [*matrix, *zipped]:
        if key == "name" or key.split(".")[0] == "sweep":
            raise ExperimentError(f"{source}: sweep: {key!r} cannot be swept (the points share the name; a sweep does not nest)")
    both = sorted(set(matrix) & set(zipped))
    if both:
        raise ExperimentError(f"{source}: sweep: {both[0]} is in both matrix and zip; give it in one of them")
    lengths = {key: len(values) for key, values in zipped.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{key} {n}" for key, n in lengths.items())
        raise ExperimentError(f"{source}: sweep.zip: the lists have different lengths ({shown}); give each as many values")
    for key, values in [*matrix.items(), *zipped.items()]:
        if not values:
            raise ExperimentError(f"{source}: sweep: {key} has no values; give at least one")


def point_values(matrix: dict[str, list[Any]], zipped: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point's values: the matrix's product (first key slowest) times the zip's rows."""
    rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] if zipped else [{}]
    return [{**dict(zip(matrix, combination)), **row}
            for combination in itertools.product(*matrix.values()) for row in rows]  # fmt: skip


def run_order(points: int, repeat: int, order: str, seed: int) -> list[tuple[int, int]]:
    """(point, repetition) in the order to run: rounds of every point once; shuffled per round with the seed."""
    shuffler = random.Random(seed)
    runs = []
    for repetition in range(1, repeat + 1):
        round_ = list(range(points))
        if order == "shuffled":
            shuffler.shuffle(round_)
        runs += [(point, repetition) for point in round_]
    return runs


def plan_sweep(experiment_path: str | Path, overrides: list[str], sweep: dict[str, Any]) -> tuple[SweepPlan, list[Experiment]]:
    """The sweep's plan and each point's experiment (loaded: an invalid point is an error naming it)."""
    source = str(experiment_path)
    matrix, zipped = dict(sweep.get("matrix") or {}), dict(sweep.get("zip") or {})
    _check_axes(source, matrix, zipped)
    points = [Point(index, values) for index, values in enumerate(point_values(matrix, zipped))]
    experiments = []
    for point in points:
        try:
            experiments.append(load_experiment(experiment_path, [*overrides, *point.overrides]))
        except ExperimentError as exc:
            problem = str(exc).removeprefix(f"{source}: ")
            raise ExperimentError(f"{source}: sweep point {point.index} ({point.label}): {problem}") from None
    order = [PlannedRun(p, r, points[p].run_id(r)) for p, r in run_order(len(points), sweep["repeat"], sweep["order"], sweep["seed"])]
    plan = SweepPlan({**matrix, **zipped}, points, sweep["repeat"], sweep["order"], sweep["seed"], order)
    return plan, experiments
