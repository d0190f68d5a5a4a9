"""The README's quick start, run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import read_jsonl

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_block() -> str:
    text = README.read_text()
    marker = text.index("<!-- The block below is run by tests/integration/test_readme.py. -->")
    return re.search(r"```bash\n(.*?)```", text[marker:], re.S).group(1)


def test_quick_start_runs_as_written(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("TRACEKIT_LOGS_DIR", None)
    env.pop("TRACEKIT_RUN_ID", None)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quick_start_block()],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "logs" / "test001"
    assert "is running" in result.stdout and "stopped" in result.stdout
    events = read_jsonl(folder / "events.ffmpeg.jsonl")
    assert [e["status"] for e in events] == [0, 0] and events[1]["task_id"] == "t-2"
    assert read_jsonl(folder / "host.jsonl")
    assert "OK: 2 tasks" in result.stdout  # parse, export and verify ran on the capture
    assert (folder / "cctf" / "invocations.jsonl").exists()
    assert (tmp_path / "outputs" / "a.mp4").stat().st_size > 0
