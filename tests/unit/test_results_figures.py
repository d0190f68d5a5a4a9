"""tracekit.experiment.results: the headline figures a sweep compares, from a run folder's own files."""

from __future__ import annotations

import json

from tests.run_folders import make_run_folder
from tracekit.experiment.results import busy_balance, headline, summary_lines, write_results

# cloud1 ran three done tasks of 100, 300 and 200 ms; cloud2 one done task of 400 ms and a failed one of 1000 ms.
TASKS = [("cloud1", "done", 0, 100), ("cloud1", "done", 100, 400), ("cloud1", "done", 400, 600),
         ("cloud2", "done", 0, 400), ("cloud2", "failed", 400, 1400)]  # fmt: skip
# node -> (ts_ms, cpu_user_ms, cpu_system_ms, pid); cloud2's collector was started again (another pid).
COLLECTORS = {
    "cloud1": [(1000, 100, 10, 10), (2000, 105, 12, 10), (11000, 130, 20, 10)],
    "cloud2": [(1000, 100, 0, 20), (6000, 110, 0, 20), (7000, 90, 5, 21), (12000, 95, 10, 21)],
}


def test_task_durations_balance_collector_cpu_and_contention_from_the_files(tmp_path):
    run = make_run_folder(tmp_path / "r1", tasks=TASKS, collectors=COLLECTORS,
                          contention={"cloud1": (0.5, 2.0), "cloud2": (0.0, 6.0), "cloud3": (None, 0.0)})  # fmt: skip
    figures = headline(run)
    tasks = figures["tasks"]
    # Done durations sorted: 100, 200, 300, 400 ms (the failed task's 1000 ms is left out).
    # Nearest rank: p50 = the ceil(0.50 * 4) = 2nd = 200 ms; p99 = the ceil(0.99 * 4) = 4th = 400 ms.
    assert tasks["duration_s"] == {"p50": 0.2, "p99": 0.4}
    # Busy (the dispatcher's: every finished task's run time): cloud1 100+300+200 = 600 ms, cloud2 400+1000 =
    # 1400 ms; mean 1000 ms; busiest / mean = 1400 / 1000 = 1.4.
    assert tasks["busy_balance"] == 1.4
    # cloud1: (130+20) - (100+10) = 40 ms of CPU over 11000 - 1000 = 10000 ms: 0.4 % of a core.
    # cloud2: pid 20 110 - 100 = 10 ms over 5000 ms, pid 21 105 - 95 = 10 ms over 5000 ms: 20/10000 = 0.2 %.
    # Mean over nodes: (0.4 + 0.2) / 2 = 0.3 %.
    assert figures["collectors"]["per_node"]["cloud1"] == {"cpu_s": 0.04, "wall_s": 10.0, "cpu_pct_of_core": 0.4}
    assert figures["collectors"]["per_node"]["cloud2"]["cpu_pct_of_core"] == 0.2
    assert figures["collectors"]["cpu_pct_of_core"] == 0.3
    # Weighted by the nodes' task time: (0.5 * 2 + 0.0 * 6) / (2 + 6) = 0.125; cloud3 has no share.
    assert figures["contended_task_share"] == 0.125


def test_every_earlier_key_stays_and_the_summary_shows_the_new_figures(tmp_path):
    run = make_run_folder(tmp_path / "r1", tasks=TASKS, collectors=COLLECTORS)
    written = write_results(run)
    assert json.loads((run / "results.json").read_text()) == written
    assert {"run_id", "state", "warnings", "tasks", "requests", "contention"} <= set(written)
    assert {"policy", "planned", "done", "failed", "timed_out", "unfinished", "makespan_s", "per_node"} <= set(
        written["tasks"])
    lines = summary_lines(written)
    assert lines[0] == "  tasks: 4/5 done, 1 failed; makespan 1.4 s (round-robin)"
    assert "    done tasks' durations: p50 0.2 s, p99 0.4 s; busy balance (busiest / mean) 1.4" in lines
    assert "  collectors: 0.3% of a core on average per node (their own CPU, start to stop)" in lines


def test_a_figure_whose_file_is_missing_is_null(tmp_path):
    run = make_run_folder(tmp_path / "bare")  # status.json and resolved.json only
    figures = headline(run)
    assert figures["tasks"] is None and figures["requests"] is None
    assert figures["collectors"] is None and figures["contended_task_share"] is None
    assert summary_lines(figures) == []


def test_no_done_task_has_no_duration_and_a_garbled_collector_line_is_skipped(tmp_path):
    run = make_run_folder(tmp_path / "r1", tasks=[("cloud1", "failed", 0, 50)], collectors={"cloud1": COLLECTORS["cloud1"]})
    with open(run / "nodes" / "cloud1" / "collector.jsonl", "a") as out:
        out.write('{"ts_ms": 99999, "cpu_user_ms": 1')  # a truncated last line
    figures = headline(run)
    assert figures["tasks"]["duration_s"] == {"p50": None, "p99": None}
    assert figures["collectors"]["cpu_pct_of_core"] == 0.4
    assert not [line for line in summary_lines(figures) if "durations" in line]


def test_busy_balance_of_even_idle_and_single_workers():
    assert busy_balance([2.0, 2.0]) == 1.0
    assert busy_balance([3.0, 0.0]) == 2.0  # one worker did everything: twice an even share
    assert busy_balance([5.0]) == 1.0
    assert busy_balance([0.0, 0.0]) is None and busy_balance([]) is None
