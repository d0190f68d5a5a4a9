"""``tracekit report``: one page a person can look at after a run.

input:  a parsed run folder (RUN_DIR/cctf/, and RUN_DIR/opendc/ when exported)
output: RUN_DIR/report/ (or ``out_dir``): index.html, self-contained (its
        images embedded, nothing fetched: it reads offline), and the PNGs
        beside it (timelines, gantt, queue, longest, http)

Sections: summary (the run, per-node tasks, busy time and CPU, the parse
audit's coverage and clock offsets, per node its tasks' time on CPUs
saturated beside other work, with the audit's contention notes), per-node CPU and memory timelines
with the tasks over them, a Gantt chart per worker, queue backlog and
placements, the longest tasks' CPU demand per fragment next to the host
samples, and HTTP requests when the run has them. A missing piece gives
its section a note, never a failure.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")  # before matplotlib is imported: no display is ever needed

import jinja2

from tracekit import runfolder
from tracekit.report import plots, summary
from tracekit.report.data import RunView, load_run

REPORT = "report"


@dataclass
class Section:
    id: str
    title: str
    caption: str = ""
    tables: list[dict[str, Any]] = field(default_factory=list)
    image: str | None = None  # base64 PNG
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportResult:
    index: Path
    figures: list[Path]
    sections: list[str]
    notes: int  # notes on the page (missing pieces)
    seconds: float


def make_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                reuse_figures: bool = False) -> ReportResult:  # fmt: skip
    """``reuse_figures``: take the PNGs already in the report folder instead of drawing them again (the
    page made anew after the run's end, with its final state: tracekit-run)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    view = load_run(run_dir)
    out = runfolder.ensure_writable_dir(Path(out_dir) if out_dir else run_dir / REPORT, "report folder")
    sections = [_summary(view)]
    figures: list[Path] = []
    for section_id, title, caption, empty in _FIGURES:
        if section_id == "http" and view.requests is None and not any(i.get("module") == "http" for i in view.invocations):
            continue  # not an HTTP run
        if section_id == "queue" and not view.placements and summary.is_http_run(view):
            continue  # a service under load: no dispatcher, no queue
        section = Section(section_id, title, caption, notes=list(view.notes.get(section_id, [])))
        drawn = out / f"{section_id}.png"
        path = drawn if reuse_figures and drawn.exists() else _draw(getattr(plots, section_id), view, out, section)
        if path is not None:
            figures.append(path)
            section.image = base64.b64encode(path.read_bytes()).decode()
        elif not section.notes:
            section.notes.append(empty)
        sections.append(section)
    index = out / "index.html"
    index.write_text(_page(view, sections))
    notes = sum(len(s.notes) for s in sections)
    return ReportResult(index, figures, [s.id for s in sections], notes, time.perf_counter() - started)


def _draw(draw: Callable[[RunView, Path], Path | None], view: RunView, out: Path, section: Section) -> Path | None:
    """One figure; an error in it costs that figure (said on the page and on stderr), not the report."""
    try:
        return draw(view, out)
    except Exception as exc:  # noqa: BLE001 - the rest of the report is still worth having
        message = f"this figure could not be drawn: {type(exc).__name__}: {exc}"
        print(f"tracekit report: {section.title}: {message}", file=sys.stderr)
        section.notes.append(message)
        return None


# (section id = the plots function that draws it, title, caption, the note when there is nothing to draw)
_FIGURES = (
    ("timelines", "CPU and memory per node", "Host samples (averaged to the page's width), the node's tasks as "
     "shaded spans (green ok, red failed) and the count of invocations running.",
     "No host samples: the collectors' host sampling was off or its files are missing."),
    ("gantt", "Tasks per worker", "Each bar a task from its start to its end, coloured by profile, failed tasks "
     "edged red; a row per worker slot (or, where the trace does not name it, per task running at once).", "No task with a start and an end."),
    ("queue", "Queue backlog and placements", "Tasks placed but not started, tasks running, and each placement "
     "decision of the dispatcher (cctf/placement_events.jsonl).",
     "No placement events and no queued tasks (a run by hand has no dispatcher)."),
    ("longest", "The longest tasks: CPU demand per fragment", "What the OpenDC export gives the simulator (each "
     "fragment's demand, in cores) next to what the node's host samples measured in the same window.",
     "No long task to show."),
    ("http", "HTTP requests", "Rate sent and answered, latency percentiles from the intended send time, and each "
     "request's client-observed latency against its server time.",
     "No client results (cctf/requests.jsonl): the run had no tracekit load."),
)  # fmt: skip


def _summary(view: RunView) -> Section:
    section = Section("summary", "Summary", notes=list(view.notes.get("summary", [])))
    section.tables.append({"header": None, "rows": summary.run_rows(view)})
    nodes = summary.node_rows(view)
    if nodes:
        keys = ("node", "role", "cores", "tasks", "failed", "busy", "busy_pct", "task_cpu", "host_cpu", "clock")
        header = ("node", "role", "cores", "tasks", "failed", "busy (≥ 1 task)", "busy share of the makespan",
                  "task CPU (own records)", "host CPU (mean)", "clock offset")  # fmt: skip
        section.tables.append({"header": header, "rows": [[row[k] for k in keys] for row in nodes]})
    containers = summary.container_rows(view)
    if containers:
        header = ("container", "node", "what", "image", "CPU (its cgroup)", "memory peak", "CPU (process samples)")
        section.tables.append({"header": header, "rows": containers})
    audit = summary.audit_rows(view)
    if audit:
        section.tables.append({"header": None, "rows": audit})
    contention = summary.contention_rows(view)
    if contention:
        header = ("node", "the run's CPU from", "tasks' time on saturated CPUs", "… beside other work (contended)",
                  "other work while tasks ran (cores)", "tasks' run-queue wait")  # fmt: skip
        section.tables.append({"header": header, "rows": contention})
        section.notes += summary.contention_notes(view)
    if view.bad_lines:
        section.notes.append(f"{len(view.bad_lines)} unreadable line(s) skipped, the first: "
                             f"{view.bad_lines[0].path}:{view.bad_lines[0].line_no} ({view.bad_lines[0].reason})")  # fmt: skip
    return section


def _page(view: RunView, sections: list[Section]) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return environment.get_template("index.html.j2").render(
        name=view.name, run_id=view.run_id, run_dir=str(view.run_dir), sections=sections,
        made=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )  # fmt: skip
