"""The README's quick start, run as written."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers import read_csv, read_jsonl

README = Path(__file__).resolve().parents[2] / "README.md"


MARKER = "<!-- The block below is run by tests/integration/test_readme.py. -->"


def readme_blocks() -> list[str]:
    """The bash blocks that follow a MARKER, in README order."""
    text = README.read_text()
    return [re.search(r"```bash\n(.*?)```", part, re.S).group(1) for part in text.split(MARKER)[1:]]


def quick_start_block() -> str:
    return readme_blocks()[0]


def block_of(run_id: str) -> str:
    """The marked block whose first line sets RUN_ID=<run_id>."""
    [block] = [b for b in readme_blocks() if b.startswith(f"RUN_ID={run_id}")]
    return block


def run_block(block: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(extra_env or {})}
    for name in ("TRACEKIT_LOGS_DIR", "TRACEKIT_RUN_ID", "REDIS_PASSWORD"):
        env.pop(name, None)
    # Output goes to files, not pipes: a background process the block left
    # behind would hold a pipe open and hang the wait.
    out, err = cwd / ".block.stdout", cwd / ".block.stderr"
    try:
        with open(out, "w") as stdout, open(err, "w") as stderr:
            code = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, stdout=stdout,
                                  stderr=stderr, env=env, timeout=240).returncode  # fmt: skip
    finally:
        _kill_leftovers(cwd)
    return subprocess.CompletedProcess(block, code, out.read_text(), err.read_text())


def _kill_leftovers(cwd: Path) -> None:
    """Whatever the block started in the background and left running (if it failed midway)."""
    for process in psutil.process_iter(["pid", "cwd"]):
        if process.info["cwd"] and Path(process.info["cwd"]).is_relative_to(cwd) and process.pid != os.getpid():
            try:
                process.kill()
            except psutil.Error:
                pass


def test_quick_start_runs_as_written(tmp_path):
    result = run_block(quick_start_block(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "logs" / "test001"
    assert "is running" in result.stdout and "stopped" in result.stdout
    events = read_jsonl(folder / "events.ffmpeg.jsonl")
    assert [e["status"] for e in events] == [0, 0] and events[1]["task_id"] == "t-2"
    assert read_csv(folder / "host.csv")
    assert "OK: 2 tasks" in result.stdout  # parse, export and verify ran on the capture
    assert (folder / "cctf" / "invocations.jsonl").exists()
    assert (tmp_path / "outputs" / "a.mp4").stat().st_size > 0
    assert "could not be drawn" not in (folder / "report" / "index.html").read_text()


def test_two_workers_step_by_step(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_block(block_of("two001"), tmp_path, {"REDIS_PORT": str(port)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4/4 tasks done, 0 failed, 0 timed out" in result.stdout
    assert "OK: 4 tasks" in result.stdout and "conservation checked for 4 tasks" in result.stdout
    cctf = tmp_path / "logs" / "two001" / "cctf"
    placements = read_jsonl(cctf / "placement_events.jsonl")
    invocations = read_jsonl(cctf / "invocations.jsonl")
    assert len(placements) == 4 and {p["policy"] for p in placements} == {"duration-online"}
    assert {i["node"] for i in invocations} == {"cloud1", "cloud2"}
    for invocation in invocations:  # enqueue time from the dispatcher, start and end from the worker
        [placed] = [p for p in placements if p["task_id"] == invocation["task_id"]]
        assert invocation["ts_enqueue"] == placed["ts_ms"] <= invocation["ts_start"] < invocation["ts_end"]
        assert invocation["node"] == placed["node"]
    assert not (tmp_path / "redis.pid").exists()  # Redis was shut down


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_http_services_block_runs_as_written(tmp_path):
    """The example service traced by hand: started and stopped by tracekit serve, no pkill."""
    (tmp_path / "examples").symlink_to(README.parent / "examples")  # the block runs from the checkout's root
    port = free_port()
    result = run_block(block_of("http001"), tmp_path, {"PORT": str(port)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"on http://127.0.0.1:{port}" in result.stdout and "HTTP service of run http001: stopped" in result.stdout
    events = read_jsonl(tmp_path / "logs" / "http001" / "events.http.jsonl")
    assert len(events) >= 450 and {e["status"] for e in events} == {200} and {e["node"] for e in events} == {"cloud1"}
    assert (tmp_path / "logs" / "http001" / "cctf" / "invocations.jsonl").exists()
    with socket.socket() as probe:  # nothing serves on the port any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_make_start_and_stop_serve_the_example_in_the_background(tmp_path):
    port = free_port()
    args = ["make", "-s", "-C", str(README.parent / "examples" / "fastapi_svc"), f"VENV={Path(sys.executable).parent.parent}",
            "RUN_ID=mkhttp", f"PORT={port}", f"LOGS_DIR={tmp_path / 'logs'}"]  # fmt: skip
    started = subprocess.run([*args, "start"], capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stderr
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        stopped = subprocess.run([*args, "stop"], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_every_command_line_of_the_manual_is_inside_a_code_block():
    """A lost opening fence turns the rest of a page inside out (prose in code, commands in prose): seen once,
    when a section was inserted above the tracekit-run usage block."""
    for page in (README, *sorted((README.parent / "docs").glob("*.md"))):
        inside, fences = False, 0
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("```"):
                inside, fences = not inside, fences + 1
                continue
            if not inside:
                assert not re.match(r"\s*(tracekit-run|tracekit|make|\.venv/bin/\S+) [-a-z]", line) or "`" in line, \
                    f"{page.name}:{number}: a command outside a code block: {line!r}"
        assert not inside, f"{page.name}: {fences} fences: one is not closed"
