"""``tracekit-run --clean``: finished runs removed from their nodes, then from the controller.

input:  RUN_IDs (a run's or a sweep's folder under <logs dir>), or an age (``--older-than 7d``: every run
        and sweep folder under <logs dir> last written before it); each run's resolved.json (its inventory
        and hosts; ``inventory`` replaces that inventory)
output: removed: on each of the run's nodes (playbooks/clean.yml, role tracekit_clean) logs/<RUN_ID>/ and
        its attempts, the packed copy, outputs/, redis/, files/ and secrets of the run; then on the
        controller <logs dir>/<RUN_ID>/ with its .secrets/<RUN_ID>.* and .locks/<RUN_ID>. A CleanResult:
        one line per run, the exit code.

Never a run in use: its tracekit-run holds the run folder's lock (held here too while the run is
cleaned, so that no --resume starts meanwhile), its status says it did not end (its tracekit-run died:
``tracekit-run --stop`` first), or a node says so (its lock names the run, a process carries the run's
mark, its Redis runs). A run some node could not be cleaned on keeps its controller folder, so that the
clean can be given again: nothing the controller knows is dropped while a node still holds its part.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tracekit import runfolder
from tracekit.errors import RunError, TracekitError, UsageError
from tracekit.experiment.phases import PhaseOutcome, PhaseRunner
from tracekit.experiment.progress import make_progress
from tracekit.experiment.render import CLEAN, read_inventory
from tracekit.experiment.run_dir import LOCK_DIR, RESOLVED_FILE, SECRET_DIR, STATUS_FILE, RunDir

SWEEP_FILE = "sweep.json"  # tracekit.sweep.run's (not imported: the sweep runner imports the runner)
POINTS = "points"
NODE_TASK = "Remove the runs' folders from the node (a run in use is left whole)"  # roles/tracekit_clean
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_IN_USE = re.compile(r"^(\S+) is in use: (.*)$")


def parse_age(text: str) -> float:
    """'7d' -> seconds (s, m, h, d, w)."""
    match = _AGE.match(text.strip())
    if not match:
        raise UsageError(f"--older-than {text!r}: give a number and a unit, s m h d or w (e.g. 7d, 12h)")
    return float(match[1]) * _UNIT_S[match[2]]


@dataclass
class Run:
    """One run folder: where it is, the ids its nodes know it by, its inventory and hosts."""

    folder: RunDir
    node_ids: list[str]
    inventory: Path | None
    hosts: tuple[str, ...]


@dataclass
class Target:
    """What one named id removes: a run, or a sweep with all its runs (and its Redis, under its own id)."""

    run_id: str
    path: Path
    runs: list[Run]
    is_sweep: bool = False
    kept: list[str] = field(default_factory=list)  # why it stays, per host or cause
    node_kb: dict[str, int] = field(default_factory=dict)  # host -> KB removed there
    controller_kb: int = 0


@dataclass
class CleanResult:
    lines: list[str]
    removed: list[str]
    kept: list[str]

    @property
    def exit_code(self) -> int:
        return 1 if self.kept else 0


def clean_runs(
    run_ids: list[str],
    *,
    older_than: str | None = None,
    logs_dir: str | Path | None = None,
    inventory: str | Path | None = None,
    dry_run: bool = False,
    verbose: bool = False,
) -> CleanResult:
    """Remove the named runs (and, with ``older_than``, every run and sweep last written before that age)
    from their nodes and the controller; a run in use stays whole and is named with why."""
    logs = Path(runfolder.logs_dir(logs_dir)).resolve()
    names = [runfolder.validate_run_id(r) for r in run_ids]
    if older_than is not None:
        names += [name for name in _older_than(logs, parse_age(older_than)) if name not in names]
    if not names:
        return CleanResult([f"nothing to clean: no run or sweep under {logs} last written more than {older_than} ago"], [], [])
    targets = [_target(logs, name, Path(inventory) if inventory else None) for name in names]
    if dry_run:
        return CleanResult([_planned(t) for t in targets], [], [])
    with contextlib.ExitStack() as held:
        for target in targets:
            _hold(target, held)
        _clean_nodes([t for t in targets if not t.kept], verbose)
        for target in targets:
            if not target.kept:
                _remove_from_controller(target)
    lines = [_outcome(t) for t in targets]
    return CleanResult(lines, [t.run_id for t in targets if not t.kept], [t.run_id for t in targets if t.kept])


# -- what is there ---------------------------------------------------------------------------------


def _older_than(logs: Path, age_s: float) -> list[str]:
    """Run and sweep folders under ``logs`` whose record (status.json, sweep.json) was last written before age."""
    cutoff = time.time() - age_s
    found = []
    for path in sorted(logs.iterdir()) if logs.is_dir() else []:
        record = path / SWEEP_FILE if (path / SWEEP_FILE).is_file() else path / STATUS_FILE
        if path.name.startswith(".") or not path.is_dir() or not (record.is_file() or (path / RESOLVED_FILE).is_file()):
            continue
        written = (record if record.is_file() else path).stat().st_mtime
        if written < cutoff:
            found.append(path.name)
    return found


def _target(logs: Path, name: str, inventory: Path | None) -> Target:
    path = logs / name
    if (path / SWEEP_FILE).is_file():
        points = path / POINTS
        runs = [_run(points, p.name, inventory) for p in sorted(points.iterdir()) if p.is_dir() and not p.name.startswith(".")] \
            if points.is_dir() else []  # fmt: skip
        runs.append(Run(RunDir(logs, name), [name], runs[-1].inventory if runs else inventory,
                        runs[-1].hosts if runs else ()))  # the sweep's own Redis folder: redis/<SWEEP_ID>  # fmt: skip
        return Target(name, path, runs, is_sweep=True)
    if not path.is_dir():
        raise RunError(f"{path}: no such run or sweep folder; check the RUN_ID and --logs-dir (or $TRACEKIT_LOGS_DIR)")
    return Target(name, path, [_run(logs, name, inventory)])


def _run(logs: Path, name: str, inventory: Path | None) -> Run:
    folder = RunDir(logs, name)
    try:
        resolved = folder.read_resolved()
    except RunError:
        resolved = {}  # a run that failed before its folder was whole: its nodes were never touched
    path = inventory or (Path(resolved["inventory_path"]) if resolved.get("inventory_path") else None)
    return Run(folder, [name], path, tuple(resolved.get("hosts") or ()))


def _hold(target: Target, held: contextlib.ExitStack) -> None:
    """Hold each run's lock while it is cleaned; a run held by its tracekit-run, or one that did not end, is kept."""
    for run in target.runs:
        try:
            held.enter_context(run.folder.hold())
        except TracekitError as exc:
            target.kept.append(str(exc))
            return
        state = run.folder.load_status().get("state")
        if state == "running":
            target.kept.append(
                f"run {run.folder.run_id} did not end (its tracekit-run was killed): stop what it left first with "
                f"tracekit-run --stop {run.folder.run_id}" + (f" --logs-dir {run.folder.logs}" if target.is_sweep else "")
            )
            return


# -- the nodes ---------------------------------------------------------------------------------------


def _clean_nodes(targets: list[Target], verbose: bool) -> None:
    """One playbooks/clean.yml call per inventory and hosts, with every run id cleaned there."""
    groups: dict[tuple[Path, tuple[str, ...]], list[tuple[Target, str]]] = {}
    for target in targets:
        for run in target.runs:
            if run.inventory is None or not run.hosts:
                continue  # never reached its nodes (no inventory resolved): the controller's folder only
            if not run.inventory.is_file():
                target.kept.append(f"its inventory {run.inventory} is gone: give the inventory of its nodes with -i")
                continue
            groups.setdefault((run.inventory, run.hosts), []).extend((target, i) for i in run.node_ids)
    for (inventory_path, hosts), members in groups.items():
        ids = sorted({i for _t, i in members})
        outcome = _call_clean(inventory_path, hosts, ids, verbose)
        for target in {id(t): t for t, _i in members}.values():
            _take_outcome(target, {i for t, i in members if t is target}, outcome)


def _call_clean(inventory_path: Path, hosts: tuple[str, ...], ids: list[str], verbose: bool) -> PhaseOutcome:
    try:
        inventory = read_inventory(inventory_path)
    except TracekitError as exc:
        return PhaseOutcome("failed", {}, str(exc))
    progress = make_progress((CLEAN,), verbose)
    with tempfile.TemporaryDirectory(prefix="tracekit-clean-") as private, progress:
        runner = PhaseRunner(Path(private), inventory, {"tracekit_run_clean_ids": ids}, progress.host_event,
                             lambda: False, verbose, ",".join(hosts), progress.say, keep_results_of=NODE_TASK)  # fmt: skip
        outcome = runner.run([CLEAN], lambda _p: None, lambda _p, _o: None).get(CLEAN)
    return outcome or PhaseOutcome("failed", {}, "ansible-playbook did not run playbooks/clean.yml")


def _take_outcome(target: Target, ids: set[str], outcome: PhaseOutcome) -> None:
    """What the nodes said of ``ids`` (the target's): KB removed per host, and why any stays."""
    for host, entry in sorted(outcome.hosts.items()):
        result = entry.get("result") or {}
        for line in result.get("stdout_lines") or []:
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "removed" and _belongs(parts[2], ids):
                target.node_kb[host] = target.node_kb.get(host, 0) + int(parts[1] or 0)
        in_use = [m for m in map(_IN_USE.match, result.get("stderr_lines") or []) if m and m[1] in ids]
        target.kept += [f"{host}: {m[1]} is in use: {m[2]}" for m in in_use]
        # Exit 3: some run of the call was in use there, the others' folders removed.
        if entry.get("state") != "ok" and not in_use and result.get("rc") != 3:
            target.kept.append(f"{host}: {entry.get('error')}")
    if outcome.state != "succeeded" and not outcome.hosts:
        target.kept.append(outcome.error or f"the clean of the nodes {outcome.state}")


def _belongs(path: str, ids: set[str]) -> bool:
    name = Path(path).name
    return any(name in (i, f".{i}.tgz", f".{i}.sha256", f"{i}.redis", f"{i}.taskkey") or name.startswith(f"{i}.attempt")
               for i in ids)  # fmt: skip


# -- the controller ----------------------------------------------------------------------------------


def _remove_from_controller(target: Target) -> None:
    target.controller_kb = folder_kb(target.path)
    for run in target.runs:
        secrets = run.folder.logs / SECRET_DIR
        for suffix in ("redis", "taskkey", "owner"):
            (secrets / f"{run.folder.run_id}.{suffix}").unlink(missing_ok=True)
        (run.folder.logs / LOCK_DIR / run.folder.run_id).unlink(missing_ok=True)  # held: gone with this process's hold
    shutil.rmtree(target.path, ignore_errors=False)


def folder_kb(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total // 1024


def _size(kb: float) -> str:
    return f"{kb / 1024:.1f} MB" if kb >= 1024 else f"{kb:.0f} KB"


def _planned(target: Target) -> str:
    kind = "sweep" if target.is_sweep else "run"
    hosts = sorted({h for run in target.runs for h in run.hosts})
    where = f"; its nodes: {', '.join(hosts)}" if hosts else ""
    return f"would clean {kind} {target.run_id}: {target.path} ({_size(folder_kb(target.path))}){where}"


def _outcome(target: Target) -> str:
    kind = "sweep" if target.is_sweep else "run"
    if target.kept:
        return f"kept {kind} {target.run_id}: " + "; ".join(target.kept)
    nodes = ", ".join(f"{h} {_size(kb)}" for h, kb in sorted(target.node_kb.items())) or "nothing on the nodes"
    return f"cleaned {kind} {target.run_id}: {target.path} ({_size(target.controller_kb)}); on its nodes: {nodes}"
