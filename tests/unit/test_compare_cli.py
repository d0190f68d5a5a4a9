"""``tracekit compare``: run folders made by hand and sweep folders -> the table and the page."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import quote

import pyarrow.parquet as pq

from tests.helpers import tracekit_cmd
from tests.run_folders import make_run_folder, make_sweep_folder, tasks_of
from tracekit import cli


def _two_runs(tmp_path):
    """Two runs by hand (tracekit-run -e dispatch.policy=...): lpt with its report, round-robin without."""
    lpt = make_run_folder(tmp_path / "logs" / "lpt-1", values={"dispatch.policy": "lpt"}, report=True,
                          tasks=tasks_of({"cloud1": [300, 200], "cloud2": [400]}))  # fmt: skip
    rr = make_run_folder(tmp_path / "logs" / "rr-1", values={"dispatch.policy": "round-robin"},
                         tasks=tasks_of({"cloud1": [300, 400], "cloud2": [200]}))  # fmt: skip
    return lpt, rr


def test_compare_two_runs_made_by_hand(tmp_path):
    lpt, rr = _two_runs(tmp_path)
    out = tmp_path / "cmp"
    done = subprocess.run(tracekit_cmd("compare", str(lpt), str(rr), "-o", str(out)), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"summary.parquet", "summary.csv", "summary.md", "report"}
    assert done.stdout.startswith("# Comparison of 2 run(s)\n")
    assert "| 0 | lpt | 1 | 0.5 | - | - | 0.5 | 0.5 |" in done.stdout  # makespan: lpt 500 ms on cloud1
    assert "| 1 | round-robin | 1 | 0.7 | - | - | 0.7 | 0.7 |" in done.stdout
    assert f"page {out / 'report' / 'index.html'}" in done.stdout
    table = pq.read_table(out / "summary.parquet")
    assert set(table.column("dispatch.policy").to_pylist()) == {"lpt", "round-robin"}
    page = (out / "report" / "index.html").read_text()
    link = quote(os.path.relpath(lpt / "report" / "index.html", out / "report"))
    assert f'href="{link}"' in page and page.count("<a href=") == 1 + page.count('<a href="#')
    assert "rr-1</td><td>succeeded</td><td>no report" in page


def test_a_folder_that_is_no_run_is_one_line_and_exit_2(tmp_path, capsys):
    lpt, _ = _two_runs(tmp_path)
    code = cli.main(["compare", str(lpt), str(tmp_path / "logs")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"tracekit compare: error: {tmp_path / 'logs'}: not a run folder (no resolved.json) nor a sweep "
                   "folder (no sweep.json); give folders tracekit-run made\n")  # fmt: skip


def test_runs_are_written_into_a_new_folder_here_and_a_sweep_into_its_own(tmp_path, monkeypatch, capsys):
    lpt, rr = _two_runs(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", str(lpt), str(rr)]) == 0
    [made] = tmp_path.glob("compare-*")
    assert (made / "summary.md").is_file() and (made / "report" / "index.html").is_file()
    sweep = make_sweep_folder(tmp_path / "sweep", {"collectors.interval_ms": [200, 1000]}, 2,
                              lambda values, repetition: {"tasks": tasks_of({"cloud1": [100 * repetition]})})  # fmt: skip
    capsys.readouterr()
    assert cli.main(["compare", str(sweep)]) == 0
    assert (sweep / "summary.parquet").is_file() and (sweep / "report" / "index.html").is_file()
    assert capsys.readouterr().out.startswith("# Sweep sweep\n")


def test_the_summary_api_does_not_import_ansible():
    code = ("import sys; import tracekit.sweep.compare, tracekit.sweep.sweep_report; "
            "sys.exit(any(name.split('.')[0] in ('ansible', 'ansible_runner') for name in sys.modules))")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
