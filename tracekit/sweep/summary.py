"""A comparison's table: ``Comparison -> summary.parquet, summary.csv, summary.md``.

input:  a Comparison (tracekit.sweep.grouping: points, their runs and states) and each counted run's
        headline figures (tracekit.sweep.figures)
output: one row per point and figure (tracekit.trace.records.SWEEP_SUMMARY, with a column per swept
        key after ``label``): n, n_warning, n_failed, mean, sd, 95% CI, min, max; written as Parquet
        and CSV (the same table), and summary.md for a person

summary.md has one table per figure, the points as rows: every statistic fits (n, mean, SD, the
interval, min and max) in columns that stay narrow however many figures and keys there are, and a
point's failed runs are said in its row. A figure no run measured (HTTP figures of a task workload)
has no rows and no table; the notes say which.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tracekit.jsonl import printable
from tracekit.sweep.figures import FIGURES, Figure, run_figures
from tracekit.sweep.grouping import COUNTED, FAILED, Comparison, Point, value_text
from tracekit.sweep.stats import Spread, spread
from tracekit.trace.records import SWEEP_SUMMARY, SWEEP_SUMMARY_AXES_AFTER

PARQUET = "summary.parquet"
CSV = "summary.csv"
MARKDOWN = "summary.md"


@dataclass(frozen=True)
class SummaryRow:
    point: Point
    figure: Figure
    n_warning: int  # of the runs counted for this figure, those in state warning
    n_failed: int
    spread: Spread


@dataclass(frozen=True)
class Summary:
    comparison: Comparison
    title: str
    rows: tuple[SummaryRow, ...]
    figures: tuple[Figure, ...]  # the figures some run measured, in FIGURES' order
    unmeasured: tuple[Figure, ...]  # ... and those none did
    run_values: dict[Path, dict[str, float | None]]  # each counted run's figures
    notes: tuple[str, ...]

    @property
    def failed_runs(self) -> int:
        return sum(len(point.failed()) for point in self.comparison.points)


def summarize(comparison: Comparison, title: str) -> Summary:
    """The statistics of every figure at every point, over the point's counted runs."""
    notes = list(comparison.notes)
    run_values: dict[Path, dict[str, float | None]] = {}
    for point in comparison.points:
        for run in point.counted():
            if not run.folder.is_dir():
                notes.append(f"point {point.index} ({point.label}): run {run.run_id} is {run.state} but its folder "
                             f"{run.folder} is missing: no figures from it")  # fmt: skip
            run_values[run.folder] = run_figures(run.folder)
    measured = tuple(f for f in FIGURES if any(values[f.name] is not None for values in run_values.values()))
    unmeasured = tuple(f for f in FIGURES if f not in measured)
    rows = []
    for point in comparison.points:
        counted = point.counted()
        for figure in measured:
            taken = [run for run in counted if run_values[run.folder][figure.name] is not None]
            stats = spread(run_values[run.folder][figure.name] for run in taken)
            warned = sum(1 for run in taken if run.state == "warning")
            rows.append(SummaryRow(point, figure, warned, len(point.failed()), stats))
    if unmeasured and run_values:
        notes.append("not measured by any run: " + ", ".join(f.name for f in unmeasured))
    return Summary(comparison, title, tuple(rows), measured, unmeasured, run_values, tuple(notes))


# -- the table: Parquet and CSV ------------------------------------------------------------------


def _axis_column(values: list[Any]) -> pa.Array:
    """A swept key's values as one typed column: integers, numbers, booleans, else text (a list or a
    mapping as its JSON)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else value_text(v) for v in values], pa.string())


def summary_schema(axis_fields: Iterable[pa.Field]) -> pa.Schema:
    """SWEEP_SUMMARY with the swept keys' columns after ``label``."""
    fields = list(SWEEP_SUMMARY)
    at = SWEEP_SUMMARY.get_field_index(SWEEP_SUMMARY_AXES_AFTER) + 1
    return pa.schema(fields[:at] + list(axis_fields) + fields[at:])


def summary_table(summary: Summary) -> pa.Table:
    rows = summary.rows
    axes = {axis: _axis_column([row.point.values.get(axis) for row in rows]) for axis in summary.comparison.axes}
    columns: dict[str, Any] = {
        "point": [row.point.index for row in rows],
        "label": [row.point.label for row in rows],
        **axes,
        "figure": [row.figure.name for row in rows],
        "unit": [row.figure.unit for row in rows],
        "n": [row.spread.n for row in rows],
        "n_warning": [row.n_warning for row in rows],
        "n_failed": [row.n_failed for row in rows],
        **{name: [getattr(row.spread, name) for row in rows]
           for name in ("mean", "sd", "ci95_low", "ci95_high", "min", "max")},
    }  # fmt: skip
    schema = summary_schema(pa.field(axis, column.type, nullable=True) for axis, column in axes.items())
    return pa.table(columns, schema=schema)


def write_table(summary: Summary, out_dir: Path) -> tuple[Path, Path]:
    """summary.parquet and summary.csv in ``out_dir`` (each written whole, then moved into place)."""
    table = summary_table(summary)
    parquet, csv = out_dir / PARQUET, out_dir / CSV
    staged = out_dir / f".{PARQUET}.tmp"
    pq.write_table(table, staged, compression="zstd")
    staged.replace(parquet)
    staged = out_dir / f".{CSV}.tmp"
    pa_csv.write_csv(table, staged)
    staged.replace(csv)
    return parquet, csv


# -- summary.md -------------------------------------------------------------------------------------


def number(value: float | None) -> str:
    """A figure as a table shows it: 4 significant digits (one decimal from 100 up), '-' for none."""
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"


def cell(text: str) -> str:
    """A value from an experiment as a Markdown table cell: printable, its pipes escaped."""
    return printable(text).replace("|", "\\|").replace("\n", " ")


def _n_cell(row: SummaryRow) -> str:
    marks = [f"{row.n_warning} warning"] if row.n_warning else []
    marks += [f"{row.n_failed} failed"] if row.n_failed else []
    return f"{row.spread.n} ({', '.join(marks)})" if marks else str(row.spread.n)


def _ci_cell(stats: Spread) -> str:
    return "-" if stats.ci95_low is None else f"{number(stats.ci95_low)} to {number(stats.ci95_high)}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table of plain texts."""
    def line(texts: list[str]) -> str:
        return "| " + " | ".join(map(cell, texts)) + " |"

    return [line(header), "|" + "---|" * len(header), *map(line, rows)]


def point_cells(point: Point, axes: tuple[str, ...]) -> list[str]:
    return [str(point.index), *(value_text(point.values.get(axis)) for axis in axes)]


def runs_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Per point: its runs, counted, with a warning, failed, other (pending, running, stopped)."""
    header = ["point", *comparison.axes, "runs", "counted", "warning", "failed", "other"]
    rows = []
    for point in comparison.points:
        states = [run.state for run in point.runs]
        rows.append([*point_cells(point, comparison.axes), str(len(states)), str(sum(s in COUNTED for s in states)),
                     str(states.count("warning")), str(sum(s in FAILED for s in states)),
                     str(sum(s not in COUNTED + FAILED for s in states))])  # fmt: skip
    return header, rows


def figure_table(summary: Summary, figure: Figure) -> tuple[list[str], list[list[str]]]:
    axes = summary.comparison.axes
    header = ["point", *axes, "n", "mean", "sd", "95% CI", "min", "max"]
    rows = [[*point_cells(row.point, axes), _n_cell(row), number(row.spread.mean), number(row.spread.sd),
             _ci_cell(row.spread), number(row.spread.min), number(row.spread.max)]
            for row in summary.rows if row.figure is figure]  # fmt: skip
    return header, rows


def markdown_lines(summary: Summary) -> list[str]:
    """summary.md, line by line (what tracekit compare prints too)."""
    comparison = summary.comparison
    runs = [run for point in comparison.points for run in point.runs]
    counted = sum(run.state in COUNTED for run in runs)
    lines = [f"# {cell(summary.title)}", "",
             f"{len(comparison.points)} point(s), {len(runs)} run(s): {counted} counted "
             f"({sum(run.state == 'warning' for run in runs)} with warnings), {summary.failed_runs} failed. "
             "Per figure: n runs that measured it, mean, sample SD, the mean's 95% confidence interval (Student's t), "
             "min and max; SD and interval need 2 runs.", "",
             *_table(*runs_table(comparison))]  # fmt: skip
    for figure in summary.figures:
        lines += ["", f"## {figure.title} ({figure.unit}): `{figure.name}`", "", *_table(*figure_table(summary, figure))]
    if summary.notes:
        lines += ["", "Notes:", *(f"- {cell(note)}" for note in summary.notes)]
    return lines


def write_markdown(summary: Summary, out_dir: Path) -> Path:
    path = out_dir / MARKDOWN
    staged = out_dir / f".{MARKDOWN}.tmp"
    staged.write_text("\n".join(markdown_lines(summary)) + "\n")
    staged.replace(path)
    return path

