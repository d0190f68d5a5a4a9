"""``tracekit setup``: a workload's setup command, run once on a node before its tasks (prepare).

input:  the setup argv (placeholders {files}, {outputs}: tracekit.taskspec.render),
        the node's copy of the workload's files, its outputs folder, its venv
output: what the command makes (e.g. the tasks' inputs in {files}); a marker
        ``.tracekit-setup.json`` beside its log ``.tracekit-setup.log``, so
        the same setup is not run again on the same files

No shell: each argument is one argv element, whatever it holds. The command
runs in the files folder (else the outputs folder) with the workload's venv
first on PATH, as the tasks do. A command that is not there or exits non-zero
is a TracekitError of one line with its exit status and the last line it
wrote to stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from tracekit.errors import TracekitError
from tracekit.invocation import venv_environment
from tracekit.taskspec import WORKER_PLACEHOLDERS, render

MARKER = ".tracekit-setup.json"
LOG = ".tracekit-setup.log"


def run_setup(argv: list[str], files: Path | None, outputs: Path, venv: Path | None, again: bool = False) -> bool:
    """Run the setup unless this very setup already ran on these files; True when it ran."""
    files, outputs = (files.resolve() if files else None), outputs.resolve()
    folder = files or outputs
    folder.mkdir(parents=True, exist_ok=True)
    outputs.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps([argv, str(venv or "")]).encode()).hexdigest()
    marker = folder / MARKER
    if not again and _recorded(marker) == key:
        return False
    values = {"files": str(files or ""), "outputs": str(outputs)}
    assert set(values) == set(WORKER_PLACEHOLDERS)
    command = [render(arg, values, f"setup argument {index}") for index, arg in enumerate(argv)]
    marker.unlink(missing_ok=True)  # a setup that fails is run again next time
    with (folder / LOG).open("wb") as log:
        try:
            result = subprocess.run(command, cwd=folder, env={**os.environ, **venv_environment(venv)}, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.PIPE)  # fmt: skip
        except FileNotFoundError:
            raise TracekitError(f"setup: {command[0]}: command not found on this node (PATH "
                                f"{venv_environment(venv).get('PATH', os.environ.get('PATH', ''))})") from None  # fmt: skip
        except PermissionError:
            raise TracekitError(f"setup: {command[0]}: not executable on this node") from None
        log.write(result.stderr)
    if result.returncode != 0:
        last = next((line for line in reversed(result.stderr.decode(errors="replace").splitlines()) if line.strip()), "")
        raise TracekitError(f"setup: {' '.join(command)[:200]} exited with status {result.returncode}"
                            + (f": {last.strip()[:300]}" if last else "") + f" (its output: {folder / LOG})")  # fmt: skip
    marker.write_text(json.dumps({"key": key, "argv": argv}) + "\n")
    return True


def _recorded(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None
