"""The sweep report: one page comparing the points, ``Summary -> <out>/report/index.html``.

input:  a Summary (tracekit.sweep.summary): the points, their runs and every figure's statistics
output: report/index.html, self-contained like a run's report (images embedded, nothing fetched), and
        one PNG per figure beside it

Per figure measured by some run: the figure's mean against the first swept key's values, the 95%
confidence interval as error bars (none where a point has one run), one line per combination of
the other keys' values (a key that moves with the first, as zipped keys do, makes no lines of its
own), and its table. Then every run with a link to its own report, where it has one.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

os.environ.setdefault("MPLBACKEND", "Agg")  # before matplotlib is imported: no display is ever needed

import jinja2
from matplotlib.figure import Figure as PlotFigure

from tracekit.sweep.figures import Figure
from tracekit.sweep.grouping import COUNTED, Point, value_text
from tracekit.sweep.summary import Summary, figure_table, runs_table

REPORT = "report"
DPI = 100
PALETTE = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
LABEL_CHARS = 24  # a value on the x axis or in the legend, shortened past this
LEGEND_CHARS = 70  # a line's legend entry (the other keys' values), shortened past this


def _numeric(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _short(value: Any) -> str:
    text = value_text(value)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def line_axes(points: tuple[Point, ...], axes: tuple[str, ...]) -> list[str]:
    """The keys after the first whose values make lines of their own: not those that take one value per
    value of the first key (zipped with it)."""
    if not axes:
        return []
    x_axis = axes[0]
    lines = []
    for axis in axes[1:]:
        seen: dict[str, set[str]] = {}
        for point in points:
            seen.setdefault(value_text(point.values.get(x_axis)), set()).add(value_text(point.values.get(axis)))
        if any(len(values) > 1 for values in seen.values()):
            lines.append(axis)
    return lines


def plot_figure(summary: Summary, figure: Figure, path: Path) -> Path | None:
    """The figure's mean per point against the first key, CI bars, a line per value of the other keys."""
    comparison = summary.comparison
    rows = [row for row in summary.rows if row.figure is figure and row.spread.n > 0]
    if not rows:
        return None
    x_axis = comparison.axes[0] if comparison.axes else None
    grouping = line_axes(comparison.points, comparison.axes)
    x_values = [point.values.get(x_axis) for point in comparison.points] if x_axis else [None]
    numeric = _numeric(x_values)
    categories = list(dict.fromkeys(value_text(v) for v in x_values))

    def x_of(point: Point) -> float:
        """The point's place on the x axis: its value of the first key, or the position of that value."""
        value = point.values.get(x_axis)
        return value if numeric else categories.index(value_text(value))

    groups: dict[tuple[str, ...], list[Any]] = {}
    for row in rows:
        groups.setdefault(tuple(value_text(row.point.values.get(a)) for a in grouping), []).append(row)
    plot = PlotFigure(figsize=(8, 4.2))
    ax = plot.subplots()
    for g, (key, members) in enumerate(groups.items()):
        members.sort(key=lambda r: x_of(r.point))
        # Categories: each line a little aside, so that bars of equal x do not hide each other.
        dodge = 0.0 if numeric or len(groups) == 1 else (g - (len(groups) - 1) / 2) * 0.06
        xs = [x_of(r.point) + dodge for r in members]
        colour = PALETTE[g % len(PALETTE)]
        label = ", ".join(f"{axis}={_short(v)}" for axis, v in zip(grouping, key))
        label = (label if len(label) <= LEGEND_CHARS else label[: LEGEND_CHARS - 1] + "…") or None
        ax.plot(xs, [r.spread.mean for r in members], marker="o", color=colour, label=label)
        bars = [(x, r.spread) for x, r in zip(xs, members) if r.spread.ci95_low is not None]  # none for n = 1
        if bars:
            ax.errorbar([x for x, _ in bars], [s.mean for _, s in bars],
                        yerr=[[s.mean - s.ci95_low for _, s in bars], [s.ci95_high - s.mean for _, s in bars]],
                        fmt="none", ecolor=colour, capsize=4)  # fmt: skip
    if not numeric:
        ax.set_xticks(range(len(categories)), [_short(c) if x_axis else "all runs" for c in categories])
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(x_axis or "")
    ax.set_ylabel(figure.unit)  # the title names the figure
    ax.set_title(f"{figure.title}: mean and 95% CI per point")
    ax.grid(True, alpha=0.3)
    if grouping:
        ax.legend(fontsize="small")
    plot.tight_layout()
    plot.savefig(path, dpi=DPI)
    return path


def _run_rows(summary: Summary, out: Path) -> list[dict[str, Any]]:
    rows = []
    for point in summary.comparison.points:
        for run in point.runs:
            report = run.folder / REPORT / "index.html"
            rows.append({"point": point.index, "label": point.label, "repetition": run.repetition,
                         "run_id": run.run_id, "state": run.state or "?", "counted": run.state in COUNTED,
                         "link": quote(os.path.relpath(report, out)) if report.is_file() else None})  # fmt: skip
    return rows


def write_page(summary: Summary, out_dir: Path, source: str) -> tuple[Path, list[Path]]:
    """<out_dir>/report/index.html and its PNGs; (the page, the PNGs)."""
    out = out_dir / REPORT
    out.mkdir(parents=True, exist_ok=True)
    sections, pngs = [], []
    for figure in summary.figures:
        header, rows = figure_table(summary, figure)
        section = {"id": figure.name, "title": f"{figure.title} ({figure.unit})", "name": figure.name,
                   "header": header, "rows": rows, "image": None, "notes": []}  # fmt: skip
        try:
            path = plot_figure(summary, figure, out / f"{figure.name}.png")
        except Exception as exc:  # noqa: BLE001 - the rest of the page is still worth having
            message = f"this figure could not be drawn: {type(exc).__name__}: {exc}"
            print(f"tracekit compare: {figure.name}: {message}", file=sys.stderr)
            section["notes"].append(message)
            path = None
        if path is not None:
            pngs.append(path)
            section["image"] = base64.b64encode(path.read_bytes()).decode()
        sections.append(section)
    for figure in summary.unmeasured:  # an earlier summary's plot of a figure no run measures now
        (out / f"{figure.name}.png").unlink(missing_ok=True)
    header, rows = runs_table(summary.comparison)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True)
    page = environment.get_template("sweep_report.html.j2").render(
        title=summary.title, source=source, made=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        points_header=header, points_rows=rows, sections=sections, runs=_run_rows(summary, out),
        notes=summary.notes,
    )  # fmt: skip
    index = out / "index.html"
    staged = out / ".index.html.tmp"
    staged.write_text(page)
    staged.replace(index)
    return index, pngs
