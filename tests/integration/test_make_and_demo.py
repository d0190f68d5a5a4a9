"""The seed's make habits and the single-node demo, run for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import read_csv, read_jsonl

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "-C", str(REPO), f"VENV={VENV}", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("via", ["command line", "environment"])
def test_proc_match_reaches_the_collector_intact(logs_dir, via):
    pattern = "^ffmpeg$|^ffprobe$"  # the seed lost its '$|' to make
    args = ["RUN_ID=mk1", "NODE_ID=cloud1", "STAGE=edge", "PROC_INTERVAL_MS=250", f"LOGS_DIR={logs_dir}"]
    if via == "command line":
        started = make("collect", *args, f"PROC_MATCH={pattern}")
    else:
        started = make("start-collect", *args, env={"PROC_MATCH": pattern})
    assert started.returncode == 0, started.stderr
    try:
        start = read_jsonl(logs_dir / "mk1" / "collector.jsonl")[0]
        assert start["match"] == pattern
        assert start["interval_ms"] == 250
        facts = json.loads((logs_dir / "mk1" / "node.json").read_text())
        assert (facts["node"], facts["stage"]) == ("cloud1", "edge")
    finally:
        stopped = make("stop-collect", "RUN_ID=mk1", f"LOGS_DIR={logs_dir}")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout


def test_proc_pid_dir_is_honoured(logs_dir, tmp_path):
    pid_dir = tmp_path / "my pids"
    started = make("collect", "RUN_ID=mk2", f"LOGS_DIR={logs_dir}", f"PROC_PID_DIR={pid_dir}")
    assert started.returncode == 0, started.stderr
    make("stop-collect", "RUN_ID=mk2", f"LOGS_DIR={logs_dir}")
    assert read_jsonl(logs_dir / "mk2" / "collector.jsonl")[0]["pid_dir"] == str(pid_dir)


def test_make_collect_on_a_run_already_collected_is_refused_unless_appended(logs_dir):
    """A run id reused by mistake: its stopped collection is not given a second session unasked."""
    args = ["RUN_ID=mk3", f"LOGS_DIR={logs_dir}"]
    assert make("collect", *args).returncode == 0
    assert make("stop-collect", *args).returncode == 0
    again = make("collect", *args)
    assert again.returncode != 0 and again.stderr.count("\n") <= 2, again.stderr  # its line, make's own
    assert f"{logs_dir / 'mk3'} already holds a collection of run mk3" in again.stderr
    assert "give another --run-id, or --append" in again.stderr
    assert [r["event"] for r in read_jsonl(logs_dir / "mk3" / "collector.jsonl")] == ["start", "stop"]
    appended = make("collect", *args, "APPEND=1")
    assert appended.returncode == 0, appended.stderr
    make("stop-collect", *args)
    assert [r["event"] for r in read_jsonl(logs_dir / "mk3" / "collector.jsonl")] == ["start", "stop", "start", "stop"]


def test_make_parse_is_tracekit_parse_of_the_run_folder(logs_dir):
    shutil.copytree(REPO / "tests" / "data" / "golden-run" / "nodes", logs_dir / "mk3" / "nodes")
    parsed = make("parse", "RUN_ID=mk3", "NODE_ID=cloud1", "STAGE=cloud", f"LOGS_DIR={logs_dir}")
    assert parsed.returncode == 0, parsed.stderr
    assert f"{logs_dir / 'mk3' / 'cctf'}: 5 invocations" in parsed.stdout
    assert (logs_dir / "mk3" / "cctf" / "proc_metrics" / "cloud2.parquet").is_file()
    missing = make("parse", f"LOGS_DIR={logs_dir}")
    assert missing.returncode != 0 and "RUN_ID=... is required" in missing.stderr
    # make report is tracekit report of the same folder.
    reported = make("report", "RUN_ID=mk3", f"LOGS_DIR={logs_dir}")
    assert reported.returncode == 0, reported.stderr
    assert reported.stdout.startswith(f"{logs_dir / 'mk3' / 'report' / 'index.html'}: 5 sections")
    missing = make("report", f"LOGS_DIR={logs_dir}")
    assert missing.returncode != 0 and "RUN_ID=... is required" in missing.stderr


def test_make_load_is_tracekit_load_on_the_example_service(logs_dir, tmp_path):
    from tests.httpserve import example_service

    with example_service(tmp_path / "svc" / "s1", "cloud1", tmp_path / "svc.log") as server:
        port = server.url.rsplit(":", 1)[1]
        loaded = make("load", "VM_IP=127.0.0.1", f"SVC_PORT={port}", "ENDPOINT=/work?cpu_ms=1", "RATE=20",
                      "DURATION=1s", "RUN_ID=ml1", f"LOGS_DIR={logs_dir}", "LOAD_ARGS=--quiet")  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert "Status Codes  [code:count]                      200:20" in loaded.stdout
    assert len(read_jsonl(logs_dir / "ml1" / "load" / "results.jsonl")) == 20


def test_single_node_demo(tmp_path):
    env = {
        **os.environ,
        "TRACEKIT": str(VENV / "bin" / "tracekit"),
        "RUN_ID": "demo-test",
        "DEMO_DIR": str(tmp_path / "demo"),
        "LOGS_DIR": str(tmp_path / "logs"),
    }
    result = subprocess.run(
        ["bash", str(REPO / "examples" / "single-node-demo.sh")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "logs" / "demo-test"
    assert f"run demo-test captured in {folder}" in result.stdout
    events = read_jsonl(folder / "events.ffmpeg.jsonl")
    assert len(events) == 3 and all(e["status"] == 0 for e in events)
    assert read_csv(folder / "host.csv")
    assert read_jsonl(folder / "collector.jsonl")[-1]["event"] == "stop"
