"""tracekit.sweep.figures: a run's headline figures, from results.json or, for older runs, from its files."""

from __future__ import annotations

import json

from tests.run_folders import make_run_folder, tasks_of
from tracekit.sweep.figures import FIGURES, run_figures

# The load's summary.json as tracekit.load.results writes it (the fields results.py reads).
LOAD = {"requests": 500, "rate": 49.8, "throughput": 49.5, "success_ratio": 0.994, "errors": {"timeout": 3},
        "dropped": 0, "latency_from_intended_ms": {"min": 3.1, "mean": 7.0, "p50": 6.2, "p90": 9.0, "p99": 18.5,
                                                   "p99.9": 40.25, "max": 51.0}}  # fmt: skip


def test_an_http_run_has_the_load_figures_and_no_task_figures(tmp_path):
    figures = run_figures(make_run_folder(tmp_path / "h", load=LOAD))
    assert (figures["http_rate_per_s"], figures["http_success_ratio"]) == (49.8, 0.994)
    assert (figures["http_latency_p50_ms"], figures["http_latency_p99_ms"], figures["http_latency_p99.9_ms"]) == (
        6.2, 18.5, 40.25)
    assert figures["makespan_s"] is None and figures["busy_balance"] is None and figures["tasks_failed"] is None
    assert list(figures) == [f.name for f in FIGURES]


def test_results_json_is_read_when_it_has_every_part_and_made_again_when_it_is_older(tmp_path):
    run = make_run_folder(tmp_path / "r", tasks=tasks_of({"cloud1": [100, 300]}), results=True)
    results = json.loads((run / "results.json").read_text())
    results["tasks"]["makespan_s"] = 9.0  # what results.json says is what counts (the files may be gone)
    (run / "results.json").write_text(json.dumps(results))
    assert run_figures(run)["makespan_s"] == 9.0
    for later in ("collectors", "contended_task_share"):  # results.json of an earlier version
        del results[later]
    del results["tasks"]["duration_s"]
    (run / "results.json").write_text(json.dumps(results))
    figures = run_figures(run)
    assert figures["makespan_s"] == 0.4 and figures["task_duration_p99_s"] == 0.3  # made from the files


def test_a_flag_or_a_text_is_no_figure(tmp_path):
    run = make_run_folder(tmp_path / "r", tasks=tasks_of({"cloud1": [100]}), results=True)
    results = json.loads((run / "results.json").read_text())
    results["tasks"]["failed"], results["tasks"]["makespan_s"] = True, "0.1"
    (run / "results.json").write_text(json.dumps(results))
    figures = run_figures(run)
    assert figures["tasks_failed"] is None and figures["makespan_s"] is None
