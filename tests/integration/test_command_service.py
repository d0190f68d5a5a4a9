"""`tracekit serve --command`: any service as a command (here the WSGI example), ready on its health
path, followed by its run's collectors, its nginx-format access log turned into server-side spans."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from tests.helpers import read_jsonl, tracekit_cmd
from tests.sshd import free_port

REPO = Path(__file__).resolve().parents[2]
WSGI = REPO / "examples" / "wsgi_svc"


def serve(logs: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(tracekit_cmd("serve", "--run-id", "cs1", "--logs-dir", str(logs), *args), capture_output=True, text=True)


def test_a_command_service_starts_once_answers_and_leaves_its_spans(tmp_path):
    logs, port = tmp_path / "logs", free_port()
    command = ["--port", str(port), "--node-id", "cloud1", "--files", str(WSGI), "--health", "/health",
               "--access-log", "{run_dir}/access.log", "--access-log-format", "extended", "--json", "--command", "--",
               "python3", "{files}/app.py", "--port", "{port}", "--access-log", "{run_dir}/access.log"]  # fmt: skip
    try:
        started = serve(logs, *command)
        assert started.returncode == 0 and json.loads(started.stdout)["changed"] is True, started.stderr
        again = serve(logs, *command)  # the same run's service runs: nothing to do
        assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
        request = urllib.request.Request(f"http://127.0.0.1:{port}/work?cpu_ms=2",
                                         headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
        # Another service on the same port is refused with one line.
        taken = subprocess.run(tracekit_cmd("serve", "--run-id", "cs2", "--logs-dir", str(logs), "--port", str(port),
                                            "--command", "--", "true"), capture_output=True, text=True)  # fmt: skip
        assert taken.returncode != 0 and f"127.0.0.1:{port} is already in use" in taken.stderr
    finally:
        stopped = serve(logs, "--stop", "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["changed"] is True
    events = read_jsonl(logs / "cs1" / "events.nginx.jsonl")
    work = [e for e in events if e["path"] == "/work"]
    assert len(work) == 1 and work[0]["trace_id"] == "ab" * 16 and work[0]["node"] == "cloud1" and work[0]["status"] == 200
    assert {e["path"] for e in events} == {"/health", "/work"}  # the health check is a request too
    description = json.loads((logs / "cs1" / "http_service.json").read_text())
    assert description["kind"] == "command" and description["adapted"]["invocations"] == len(events)
    assert json.loads(serve(logs, "--stop", "--json").stdout)["changed"] is False


def test_a_command_service_that_cannot_start_says_why(tmp_path):
    logs = tmp_path / "logs"
    missing = serve(logs, "--port", str(free_port()), "--command", "--", "no-such-server", "{port}")
    assert missing.returncode != 0 and "no-such-server: not found on this node" in missing.stderr
    exits = serve(logs, "--port", str(free_port()), "--command", "--", "sh", "-c", "echo bad config >&2; exit 3")
    assert exits.returncode != 0 and "did not start: bad config" in exits.stderr
    unknown = serve(logs, "--port", str(free_port()), "--command", "--", "server", "{nope}")
    assert unknown.returncode != 0 and "unknown placeholder {nope}" in unknown.stderr
