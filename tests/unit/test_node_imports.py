"""A node's venv holds only tracekit.experiment.wheelhouse.NODE_DISTRIBUTIONS: the commands a node runs must
not import anything else (numpy, scipy, matplotlib, rich, jinja2, Ansible), or they fail there alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Importable here (the controller's venv), absent from a node's.
CONTROLLER_ONLY = ("numpy", "scipy", "matplotlib", "rich", "jinja2", "ansible", "ansible_runner", "pandas")
BLOCKER = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {CONTROLLER_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in a node's venv)")
        return None
sys.meta_path.insert(0, Absent())
sys.argv = ["tracekit", *sys.argv[1:]]
from tracekit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def node_command(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, *argv], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_a_node_makes_its_part_of_the_trace_without_the_controller_s_packages(tmp_path):
    node = tmp_path / "cloud1"
    shutil.copytree(REPO / "tests" / "data" / "golden-run" / "nodes" / "cloud1", node)
    done = node_command("parse", "--node-part", str(node))
    assert done.returncode == 0, done.stderr
    assert (node / "cctf-part" / "proc_metrics.parquet").is_file()


def test_the_blocker_blocks_what_a_node_lacks():
    assert node_command("--version").returncode == 0
    blocked = subprocess.run([sys.executable, "-c", BLOCKER.replace("from tracekit.cli import main", "import numpy")],
                             capture_output=True, text=True)  # fmt: skip
    assert blocked.returncode != 0 and "No module named 'numpy' (not in a node's venv)" in blocked.stderr
