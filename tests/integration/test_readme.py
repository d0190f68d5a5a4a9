"""The blocks of README.md and docs/*.md, run as written; their sample outputs checked against a real run."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers import docs_samples, read_csv, read_jsonl

README = Path(__file__).resolve().parents[2] / "README.md"
PAGES = [README, *sorted((README.parent / "docs").glob("*.md"))]


samples = docs_samples()
block_of = samples.block_of


def test_every_marked_block_is_run_by_a_test_here():
    """A block marked as run must be one of those the tests below run (found by its RUN_ID)."""
    assert sorted(re.match(r"RUN_ID=(\w+)", b)[1] for _page, b in samples.marked_blocks()) == \
        ["http001", "test001", "two001"]  # fmt: skip


def run_block(block: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = samples.block_env(extra_env)
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


def test_quick_start_runs_as_written_and_prints_its_samples(tmp_path):
    try:
        code, printed = samples.quick_start_transcript(tmp_path)
    finally:
        _kill_leftovers(tmp_path)
    output = "".join(printed.values())
    assert code == 0, output
    folder = tmp_path / "logs" / "test001"
    assert "is running" in output and "stopped" in output
    events = read_jsonl(folder / "events.ffmpeg.jsonl")
    assert [e["status"] for e in events] == [0, 0] and events[1]["task_id"] == "t-2"
    assert read_csv(folder / "host.csv")
    assert "OK: 2 tasks" in output  # parse, export and verify ran on the capture
    assert (folder / "cctf" / "invocations.jsonl").exists()
    assert (tmp_path / "outputs" / "a.mp4").stat().st_size > 0
    assert "could not be drawn" not in (folder / "report" / "index.html").read_text()
    # Every sample of the quick start in the manual is what these commands print.
    checked = [(page.name, stale) for page in PAGES for source, sample in samples.samples(page.read_text())
               if source == "the quick start" for stale in [samples.stale(sample, printed)]]  # fmt: skip
    assert len(checked) >= 3 and not [c for c in checked if c[1]], "\n".join(f"{p}:\n{d}" for p, d in checked if d)


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
    for page in PAGES:
        inside, fences = False, 0
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("```"):
                inside, fences = not inside, fences + 1
                continue
            if not inside:
                assert not re.match(r"\s*(tracekit-run|tracekit|make|\.venv/bin/\S+) [-a-z]", line) or "`" in line, \
                    f"{page.name}:{number}: a command outside a code block: {line!r}"
        assert not inside, f"{page.name}: {fences} fences: one is not closed"


def test_the_readme_is_a_front_door_that_links_every_page_of_the_manual():
    text = README.read_text()
    assert len(text.splitlines()) <= 150, "README.md is the front door: the manual goes into docs/"
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", text))
    assert linked == {p.name for p in PAGES[1:]}, sorted({p.name for p in PAGES[1:]} ^ linked)
    for page in PAGES:  # and every relative link of the manual leads to a file
        for target in re.findall(r"\]\((?!https?:|#)([^)#]+)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: a link to {target}, which does not exist"


def test_the_readmes_own_workload_plans_as_it_says(tmp_path):
    """The README's ten-line workload, saved beside the examples as the README says, plans its six tasks."""
    from tests.inventories import local_inventory
    from tests.sshd import free_port
    from tracekit.experiment.runner import run_experiment

    [yaml_block] = re.findall(r"## Your own workload in ten lines\n\n```yaml\n(.*?)```", README.read_text(), re.S)
    assert len(yaml_block.splitlines()) <= 10
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "burn.yaml").write_text(yaml_block)
    # As in a checkout: files are relative to the git repository holding the experiment.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "examples").symlink_to(README.parent / "examples")
    lines: list[str] = []
    planned = run_experiment(tmp_path / "experiments" / "burn.yaml", inventory=local_inventory(tmp_path, free_port()),
                             dry_run=True, logs_dir=tmp_path / "logs", out=lines.append)  # fmt: skip
    assert planned.state == "planned", lines
    assert "6 tasks" in "\n".join(lines) and "lpt" in "\n".join(lines), lines
