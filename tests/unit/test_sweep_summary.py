"""tracekit.sweep.summary and sweep_report: a sweep's table (its schema, its statistics) and its page."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tests.run_folders import make_sweep_folder
from tracekit.sweep.compare import summarize_sweep
from tracekit.sweep.figures import BY_NAME
from tracekit.sweep.grouping import Comparison, Point, read_sweep
from tracekit.sweep.summary import summarize, summary_schema
from tracekit.sweep.sweep_report import line_axes
from tracekit.trace.records import SWEEP_SUMMARY

AXES = {"workload.command.count": [10, 20], "dispatch.policy": ["lpt", "round-robin"]}
# (point, repetition) -> makespan in s. Point 0 (10, lpt): 1, 2, 3. Point 1 (10, round-robin): 4, its
# second run failed, 6. Point 2 (20, lpt): 7 (a warning run), one pending, one interrupted. Point 3
# (20, round-robin): every run failed.
MAKESPAN_S = {(0, 1): 1, (0, 2): 2, (0, 3): 3, (1, 1): 4, (1, 3): 6, (2, 1): 7}
STATES = {(1, 2): "failed", (2, 1): "warning", (2, 2): "pending", (2, 3): "interrupted",
          (3, 1): "failed", (3, 2): "failed", (3, 3): "failed"}  # fmt: skip
POINT_OF = {(10, "lpt"): 0, (10, "round-robin"): 1, (20, "lpt"): 2, (20, "round-robin"): 3}


def _run_files(values, repetition):
    point = POINT_OF[(values["workload.command.count"], values["dispatch.policy"])]
    seconds = MAKESPAN_S.get((point, repetition), 1)
    return {"tasks": [("cloud1", "done", 0, 1000 * seconds)], "workers": ("cloud1",),
            "makespan_ms": 1000 * seconds, "report": repetition != 3}  # fmt: skip


@pytest.fixture
def sweep(tmp_path):
    return make_sweep_folder(tmp_path / "policies-1", AXES, 3, _run_files, STATES)


def _rows(table: pa.Table, figure: str) -> dict[int, dict]:
    return {row["point"]: row for row in table.to_pylist() if row["figure"] == figure}


def test_the_table_has_the_declared_schema_and_a_typed_column_per_swept_key(sweep):
    result = summarize_sweep(sweep)
    table = pq.read_table(result.parquet)
    axes = [pa.field("workload.command.count", pa.int64()), pa.field("dispatch.policy", pa.string())]
    assert table.schema.equals(summary_schema(axes))
    assert [f for f in table.schema if f.name not in AXES] == list(SWEEP_SUMMARY)
    assert table.schema.names[2:4] == list(AXES)  # right after `label`, in the sweep's order
    from_csv = pa_csv.read_csv(result.csv)
    assert from_csv.column_names == table.column_names and from_csv.num_rows == table.num_rows


def test_statistics_per_point_with_failed_warning_and_pending_runs(sweep):
    table = pq.read_table(summarize_sweep(sweep).parquet)
    makespan = _rows(table, "makespan_s")
    # Point 0: 1, 2, 3 s: mean 2, sd 1, half-interval t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138.
    p0 = makespan[0]
    assert (p0["n"], p0["n_warning"], p0["n_failed"], p0["mean"], p0["sd"], p0["min"], p0["max"]) == (3, 0, 0, 2, 1, 1, 3)
    assert (p0["ci95_low"], p0["ci95_high"]) == (pytest.approx(-0.484138, abs=1e-6), pytest.approx(4.484138, abs=1e-6))
    assert (p0["label"], p0["workload.command.count"], p0["dispatch.policy"]) == (
        "workload.command.count=10,dispatch.policy=lpt", 10, "lpt")
    # Point 1: 4 and 6 s (the failed run not counted): mean 5, sd sqrt(2) = 1.414214, half 12.706205 * 1.414214 /
    # sqrt(2) = 12.706205.
    p1 = makespan[1]
    assert (p1["n"], p1["n_failed"], p1["mean"]) == (2, 1, 5)
    assert p1["sd"] == pytest.approx(1.414214, abs=1e-6)
    assert (p1["ci95_low"], p1["ci95_high"]) == (pytest.approx(-7.706205, abs=1e-6), pytest.approx(17.706205, abs=1e-6))
    # Point 2: one warning run (counted, marked), one pending (not counted at all), one interrupted (failed).
    p2 = makespan[2]
    assert (p2["n"], p2["n_warning"], p2["n_failed"], p2["mean"], p2["min"], p2["max"]) == (1, 1, 1, 7, 7, 7)
    assert p2["sd"] is None and p2["ci95_low"] is None and p2["ci95_high"] is None  # one run: unknown, not 0
    # Point 3: no run counted.
    p3 = makespan[3]
    assert (p3["n"], p3["n_failed"], p3["mean"], p3["sd"], p3["min"]) == (0, 3, None, None, None)
    assert _rows(table, "task_duration_p50_s")[0]["mean"] == 2  # one task per run: its duration is the makespan
    assert _rows(table, "tasks_failed")[0]["mean"] == 0


def test_figures_no_run_measured_have_no_rows_and_a_note(sweep):
    result = summarize_sweep(sweep)
    figures = set(pq.read_table(result.parquet).column("figure").to_pylist())
    assert figures == {"makespan_s", "task_duration_p50_s", "task_duration_p99_s", "busy_balance", "tasks_failed"}
    assert any(note.startswith("not measured by any run: http_rate_per_s") for note in result.notes)
    page = result.page.read_text()
    assert 'id="makespan_s"' in page and 'id="http_latency_p99_ms"' not in page
    assert "not measured by any run: http_rate_per_s" in page


def test_the_markdown_has_a_table_per_figure_with_failed_runs_marked(sweep):
    result = summarize_sweep(sweep)
    text = result.markdown.read_text()
    assert text.splitlines() == result.lines
    assert result.lines[0] == "# Sweep policies-1"
    assert "| point | workload.command.count | dispatch.policy | runs | counted | warning | failed | other |" in text
    assert "| 2 | 20 | lpt | 3 | 1 | 1 | 1 | 1 |" in text  # the pending run is "other"
    section = text.split("## makespan (s): `makespan_s`")[1].split("##")[0]
    assert "| point | workload.command.count | dispatch.policy | n | mean | sd | 95% CI | min | max |" in section
    assert "| 1 | 10 | round-robin | 2 (1 failed) | 5 | 1.414 | -7.706 to 17.71 | 4 | 6 |" in section
    assert "| 2 | 20 | lpt | 1 (1 warning, 1 failed) | 7 | - | - | 7 | 7 |" in section
    assert "| 3 | 20 | round-robin | 0 (3 failed) | - | - | - | - | - |" in section
    assert "http" not in text.split("Notes:")[0]
    assert (result.points, result.runs_counted, result.runs_failed) == (4, 6, 5)


def test_the_page_is_self_contained_with_a_plot_per_figure_and_links_to_the_runs_reports(sweep):
    result = summarize_sweep(sweep)
    assert result.page == sweep / "report" / "index.html"
    page = result.page.read_text()
    assert page.count("data:image/png;base64,") == 5 and len(result.figures) == 5
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)  # nothing fetched
    links = re.findall(r'href="(\.\./points/[^"]+)"', page)
    # Every run with a report (repetitions 1 and 2 of each point, not the pending one): 7 of 12.
    assert len(links) == 7
    for link in links:
        assert (result.page.parent / unquote(link)).is_file()
    assert page.count("no report") == 5


def test_the_markdown_escapes_a_value_with_a_pipe(tmp_path):
    sweep = make_sweep_folder(tmp_path / "s", {"tags.note": ["a|b", "c"]}, 1,
                              lambda values, repetition: {"tasks": [("cloud1", "done", 0, 500)]})  # fmt: skip
    text = summarize_sweep(sweep).markdown.read_text()
    assert "| 0 | a\\|b |" in text


def test_a_key_zipped_with_the_first_makes_no_lines_of_its_own():
    def point(i, rate, duration, policy):
        return Point(i, "", {"rate": rate, "duration": duration, "policy": policy}, ())

    points = (point(0, 50, "20s", "lpt"), point(1, 100, "10s", "lpt"), point(2, 50, "20s", "rr"), point(3, 100, "10s", "rr"))
    assert line_axes(points, ("rate", "duration", "policy")) == ["policy"]
    assert line_axes(points, ("rate",)) == [] and line_axes(points, ()) == []


def test_a_comparison_without_runs_has_no_figures(tmp_path):
    summary = summarize(Comparison(("x",), (Point(0, "x=1", {"x": 1}, ()),)), "empty")
    assert summary.rows == () and summary.figures == () and len(summary.unmeasured) == len(BY_NAME)
    assert summary.notes == ()


def test_a_counted_run_whose_folder_is_missing_is_noted(sweep):
    import shutil

    folder = read_sweep(sweep).points[0].runs[0].folder
    shutil.rmtree(folder)
    result = summarize_sweep(sweep)
    assert any("run policies-1.p0-r1 is succeeded but its folder" in note for note in result.notes)
    assert _rows(pq.read_table(result.parquet), "makespan_s")[0]["n"] == 2
