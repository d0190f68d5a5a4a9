"""``tracekit compare`` and the end of a sweep: run or sweep folders -> the summary table and page.

input:  one sweep folder (its sweep.json), or any run folders and sweep folders
output: in the output folder: summary.parquet, summary.csv, summary.md and report/index.html (with a
        PNG per figure); a SummaryResult (the paths, summary.md's lines for the terminal, the counts)

The output folder: a sweep's own folder when one sweep is compared (what a sweep does at its end),
else the one given, else ./compare-<YYYYmmdd-HHMMSS>/ in the current folder (a new one each time,
never over an earlier comparison).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from tracekit import runfolder
from tracekit.experiment.results import read_json_object
from tracekit.sweep.grouping import COUNTED, SWEEP_FILE, comparison_of
from tracekit.sweep.summary import Summary, markdown_lines, summarize, write_markdown, write_table
from tracekit.sweep.sweep_report import write_page

SHOWN_INPUTS = 5  # inputs named on the page's first line


@dataclass(frozen=True)
class SummaryResult:
    out_dir: Path
    parquet: Path
    csv: Path
    markdown: Path
    page: Path
    figures: list[Path]  # the page's PNGs
    lines: list[str]  # summary.md's lines (what tracekit compare prints)
    points: int
    runs_counted: int
    runs_failed: int  # failed or interrupted: a sweep with any exits 1
    notes: list[str]


def default_out_dir(paths: list[Path], now: dt.datetime | None = None) -> Path:
    if len(paths) == 1 and (paths[0] / SWEEP_FILE).is_file():
        return paths[0]
    return Path(f"compare-{(now or dt.datetime.now()):%Y%m%d-%H%M%S}")


def _title(paths: list[Path], summary_runs: int) -> str:
    if len(paths) == 1 and (paths[0] / SWEEP_FILE).is_file():
        sweep_id = (read_json_object(paths[0] / SWEEP_FILE) or {}).get("sweep_id")
        return f"Sweep {sweep_id or paths[0].name}"
    return f"Comparison of {summary_runs} run(s)"


def _source(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:SHOWN_INPUTS])
    return shown + (f" and {len(paths) - SHOWN_INPUTS} more" if len(paths) > SHOWN_INPUTS else "")


def compare(paths: list[Path], out_dir: Path | None = None) -> SummaryResult:
    """The summary of ``paths`` (run folders and/or sweep folders) written into ``out_dir``
    (default: see the module's docstring)."""
    paths = [Path(p) for p in paths]
    comparison = comparison_of(paths)
    runs = [run for point in comparison.points for run in point.runs]
    summary: Summary = summarize(comparison, _title(paths, len(runs)))
    out = runfolder.ensure_writable_dir(Path(out_dir) if out_dir else default_out_dir(paths), "output folder")
    parquet, csv = write_table(summary, out)
    markdown = write_markdown(summary, out)
    page, pngs = write_page(summary, out, _source(paths))
    return SummaryResult(out, parquet, csv, markdown, page, pngs, markdown_lines(summary), len(comparison.points),
                         sum(run.state in COUNTED for run in runs), summary.failed_runs, list(summary.notes))  # fmt: skip


def summarize_sweep(sweep_dir: Path) -> SummaryResult:
    """A sweep's summary in its own folder (summary.*, report/index.html): what a sweep does after its last point."""
    return compare([Path(sweep_dir)], Path(sweep_dir))
