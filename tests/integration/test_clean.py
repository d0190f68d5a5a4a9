"""tracekit-run --clean end to end on the local inventory: a real run's folders leave every node and the
controller; a run something of which still runs on a node stays whole, named with what runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import VENV_BIN

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def left_on(nodes: Path, run_id: str) -> list[str]:
    """What a run has below the node roots: its folders, attempts, packed copies, outputs, Redis, files, secrets."""
    patterns = (f"*/logs/{run_id}", f"*/logs/{run_id}.attempt*", f"*/logs/.{run_id}.*", f"*/outputs/{run_id}",
                f"*/redis/{run_id}", f"*/files/{run_id}", f"*/secrets/{run_id}.*")  # fmt: skip
    return sorted(str(p.relative_to(nodes)) for pattern in patterns for p in nodes.glob(pattern))


def test_clean_removes_a_run_from_its_nodes_and_the_controller_and_never_one_in_use(tmp_path, local_site):
    from tracekit.experiment.clean import clean_runs
    from tracekit.experiment.runner import run_experiment

    folder, inventory, _port = local_site
    logs, nodes = tmp_path / "logs", folder / "nodes"
    run = run_experiment(SMOKE, inventory=inventory, run_id="old", logs_dir=logs, overrides=["workers.keep_outputs=true"])
    assert run.state == "succeeded", run.summary
    before = left_on(nodes, "old")
    assert any("/outputs/old" in p for p in before) and any(p.endswith("/logs/old") for p in before), before
    # A second run of the same nodes whose tracekit-run is gone and of which a process still runs on cloud1.
    shutil.copytree(logs / "old", logs / "busy")
    shutil.copytree(nodes / "cloud1" / "logs" / "old", nodes / "cloud1" / "logs" / "busy")
    marked = subprocess.Popen(["sleep", "600"], env={**os.environ, "TRACEKIT_RUN_ID": "busy"})
    try:
        result = clean_runs(["old", "busy"], logs_dir=logs, inventory=None)
    finally:
        marked.kill()
        marked.wait()
    assert result.removed == ["old"] and result.kept == ["busy"], result.lines
    assert result.lines[0].startswith(f"cleaned run old: {logs / 'old'} (") and "cloud1" in result.lines[0]
    assert f"cloud1: busy is in use: its sleep (pid {marked.pid}) still runs" in result.lines[1], result.lines
    assert left_on(nodes, "old") == [] and not (logs / "old").exists()
    assert (logs / "busy" / "resolved.json").is_file() and (nodes / "cloud1" / "logs" / "busy").is_dir()
    # Its process gone, it goes too: from the command line, by age.
    cleaned = subprocess.run([str(VENV_BIN / "tracekit-run"), "--clean", "--older-than", "0s", "--logs-dir", str(logs)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert cleaned.stdout.startswith(f"cleaned run busy: {logs / 'busy'} ("), cleaned.stdout
    assert left_on(nodes, "busy") == [] and not (logs / "busy").exists()
    assert (nodes / "cloud1" / "venv").is_dir()  # what runs share stays
