"""``run_sweep``: an experiment with a sweep -> one complete run folder per point and repetition.

input:  experiments/X.yaml with a ``sweep`` section (or --matrix / --zip / --repeat), -e overrides, an
        inventory; or --resume SWEEP_ID
output: <logs dir>/<SWEEP_ID>/ experiment.yaml (as given), sweep.json (the plan: axes, points, the
        runs in order and each one's state), points/<run id>/ (a complete run folder each, made by
        tracekit.experiment.runner, resumable alone with --logs-dir <SWEEP_ID>/points), and the table
        and page of tracekit.sweep.summary

The runs go one after the other. Each is a whole run: its own collectors and workers (so that no run's
samples or processes enter another's trace), its own task key and Redis keys (tk:<RUN_ID>:, so that no
run's queue enters another's), started and stopped, fetched and parsed. What they share: the nodes
are held from the first run to the end under the sweep's id (no other experiment slips in between two
points), and prepared once (Tracekit's venv, Redis, the workload's packages, files, venv and inputs);
again only before a run whose preparation differs (another workload's files, packages or inputs).
Redis stays up from the first run's start to the sweep's end (an idle server between two runs; each
tracekit-run of the sweep gives it a new password, so a resumed sweep's Redis starts empty). A run
that fails is recorded and the sweep goes on; Ctrl-C ends the current run as a run ends (stop and
fetch run) and the sweep there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit import runfolder, workloads
from tracekit.errors import RunError, TracekitError, UsageError
from tracekit.experiment.run_dir import RunDir, now
from tracekit.experiment.runner import RunResult, SharedNodes, free_shared_nodes, run_experiment, run_hosts
from tracekit.experiment.spec import Experiment, load_experiment
from tracekit.sweep.points import SweepPlan, plan_sweep, with_command_line

SWEEP_FILE = "sweep.json"
POINTS = "points"
DONE = ("succeeded", "warning")  # a run that counts in the summary


@dataclass
class SweepResult:
    sweep_id: str
    sweep_dir: Path
    state: str  # succeeded, warning, failed, interrupted, planned (dry run)
    lines: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"succeeded": 0, "planned": 0, "warning": 3, "interrupted": 130}.get(self.state, 1)


def is_sweep(logs_dir: str | Path | None, run_id: str) -> bool:
    """Is <logs dir>/<run_id> a sweep's folder (for --resume)?"""
    return (Path(runfolder.logs_dir(logs_dir)) / run_id / SWEEP_FILE).is_file()


def preparation(experiment: Experiment) -> str:
    """What the prepare phase makes of an experiment: two runs with the same need the nodes prepared once."""
    kind = workloads.kind(experiment.kind)
    made = {"kind": experiment.kind, "needs": repr(kind.node_needs(experiment.workload, experiment.source)),
            "own": kind.prepared_from(experiment.section)}  # fmt: skip
    return json.dumps(made, sort_keys=True, default=str)


def run_sweep(
    experiment_path: str | Path | None = None,
    *,
    inventory: str | Path | None = None,
    sweep_id: str | None = None,
    dry_run: bool = False,
    resume: str | None = None,
    overrides: list[str] | None = None,
    matrix: list[str] | None = None,
    zipped: list[str] | None = None,
    repeat: int | None = None,
    verbose: bool = False,
    logs_dir: str | Path | None = None,
    out: Callable[[str], None] = print,
    lock_wait: int = 0,
) -> SweepResult:
    """Run (or plan, or resume) a sweep; a failed run does not raise (see SweepResult.state)."""
    logs = Path(runfolder.logs_dir(logs_dir)).resolve()
    if resume is not None:
        if experiment_path is not None or overrides or matrix or zipped or repeat is not None:
            raise UsageError(f"--resume {resume} continues the sweep as it was planned; give no experiment file, "
                             "-e, --matrix, --zip or --repeat with it")  # fmt: skip
        record = _read_record(logs / resume)
        experiment_path, overrides, sweep = logs / resume / "experiment.yaml", record["overrides"], record["sweep"]
        inventory = inventory or record.get("inventory_path")
        sweep_id = resume
    elif experiment_path is None:
        raise UsageError("give an experiment file (e.g. experiments/policies.yaml) or --resume SWEEP_ID")
    else:
        base = load_experiment(experiment_path, overrides)
        sweep = with_command_line(base.sweep, matrix or [], zipped or [], repeat)
        if sweep is None:
            raise UsageError(f"{experiment_path}: no sweep section, --matrix, --zip or --repeat: nothing to sweep")
        sweep_id = runfolder.validate_run_id(sweep_id or f"{base.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    overrides = list(overrides or [])
    plan, experiments = plan_sweep(experiment_path, overrides, sweep)
    hosts = []  # each point's: checked against the inventory too, before anything runs
    for point, experiment in zip(plan.points, experiments):
        try:
            hosts.append(frozenset(run_hosts(experiment, inventory)))
        except TracekitError as exc:
            problem = str(exc).removeprefix(f"{experiment.source}: ")
            raise type(exc)(f"{experiment.source}: sweep point {point.index} ({point.label}): {problem}") from None
    if dry_run:
        lines = [f"sweep {sweep_id}: {experiment_path}", *plan.lines()]
        for line in lines:
            out(line)
        return SweepResult(sweep_id, logs / sweep_id, "planned", lines)

    sweep_dir = logs / sweep_id
    holder = RunDir(logs, sweep_id)  # the sweep's own lock (one tracekit-run a sweep) and node-lock token
    with holder.hold():
        if resume is None:
            _create(sweep_dir, Path(experiment_path), overrides, sweep, plan, inventory)
        record = _read_record(sweep_dir)
        if [r["run_id"] for r in record["runs"]] != [r.run_id for r in plan.runs]:
            raise RunError(f"{sweep_dir / SWEEP_FILE}: its runs are not those its experiment plans now; start a new sweep")
        shared_token = holder.lock_token()
        redis_password = holder.make_secret(renew=True)  # this tracekit-run's: its runs' Redis restarts empty
        needs = [(preparation(experiment), hosts[point]) for point, experiment in enumerate(experiments)]
        try:
            state = _Sweep(sweep_dir, record, plan, needs, inventory, verbose, lock_wait, shared_token, redis_password,
                           out).run()  # fmt: skip
        finally:  # its Redis is stopped (or, if not, the next tracekit-run of the sweep gives it a new password)
            holder.secret_file.unlink(missing_ok=True)
            holder.task_key_file.unlink(missing_ok=True)
        table = _summarize(sweep_dir, out)
    return SweepResult(sweep_id, sweep_dir, state, table + _summary_lines(sweep_dir, state))


def _summarize(sweep_dir: Path, out: Callable[[str], None]) -> list[str]:
    """The sweep's table and page (tracekit.sweep.compare) of the runs that succeeded so far; their lines."""
    from tracekit.sweep.compare import summarize_sweep

    out(f"sweep {sweep_dir.name}: summarizing its runs")
    try:
        summary = summarize_sweep(sweep_dir)
    except (OSError, TracekitError) as exc:
        return [f"sweep {sweep_dir.name}: no summary ({exc}); make it later with 'tracekit compare {sweep_dir}'"]
    return [*summary.lines, f"  table:  {summary.markdown} (and .csv, .parquet)", f"  report: {summary.page}"]


def write_record(path: Path, record: dict[str, Any]) -> None:
    """sweep.json, atomically (a reader sees all or nothing), its keys in their order: the axes' order is the
    plots' (the first swept key is their x axis), not the alphabet's."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(partial, path)


def _read_record(sweep_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((sweep_dir / SWEEP_FILE).read_text())
    except FileNotFoundError:
        raise UsageError(f"{sweep_dir}: no sweep of that id here ({SWEEP_FILE} is missing); check the id and --logs-dir") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{sweep_dir / SWEEP_FILE}: cannot be read ({exc}); the runs' own folders are under {sweep_dir / POINTS}") from None
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list):
        raise RunError(f"{sweep_dir / SWEEP_FILE}: not a sweep record; the runs' own folders are under {sweep_dir / POINTS}")
    return record


def _create(sweep_dir: Path, experiment_path: Path, overrides: list[str], sweep: dict[str, Any], plan: SweepPlan,
            inventory: str | Path | None) -> None:  # fmt: skip
    if (sweep_dir / SWEEP_FILE).exists():
        raise RunError(f"{sweep_dir} already exists; resume it with 'tracekit-run --resume {sweep_dir.name}' or pick another --run-id")
    (sweep_dir / POINTS).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(experiment_path, sweep_dir / "experiment.yaml")
    write_record(sweep_dir / SWEEP_FILE, {
        "sweep_id": sweep_dir.name,
        "created": now(),
        "experiment": str(experiment_path),
        "overrides": overrides,
        "inventory_path": str(Path(inventory).resolve()) if inventory else None,
        "sweep": sweep,
        "axes": plan.axes,
        "repeat": plan.repeat,
        "order": plan.order,
        "seed": plan.seed,
        "points": [{"point": p.index, "values": p.values, "label": p.label} for p in plan.points],
        "runs": [{"point": r.point, "repetition": r.repetition, "run_id": r.run_id, "folder": f"{POINTS}/{r.run_id}",
                  "state": "pending"} for r in plan.runs],  # fmt: skip
    })


class _Sweep:
    def __init__(self, sweep_dir: Path, record: dict[str, Any], plan: SweepPlan, needs: list[tuple[str, frozenset[str]]],
                 inventory: str | Path | None, verbose: bool, lock_wait: int, token: str, redis_password: Path,
                 out: Callable[[str], None]):  # fmt: skip
        self.sweep_dir = sweep_dir
        self.points_dir = sweep_dir / POINTS
        self.record = record
        self.plan = plan
        self.needs = needs  # per point: its preparation (preparation()) and its hosts
        self.inventory = inventory
        self.verbose = verbose
        self.lock_wait = lock_wait
        self.token = token
        self.redis_password = redis_password
        self.redis_up = False  # a run of this tracekit-run started the sweep's Redis, and none failed since
        self.out = out
        # The run folder that prepared the nodes, for what (preparation), and which nodes: on --resume, the
        # last run of the sweep that prepared them (as a resumed run does not prepare again what it prepared).
        self.prepared: tuple[Path, str, frozenset[str]] | None = None
        for entry in record["runs"]:
            if entry["state"] != "pending" and self._prepared_itself(self.points_dir / entry["run_id"]):
                self.prepared = (self.points_dir / entry["run_id"], *self._needs(entry))
        self.last_run: str | None = None  # the last run that took the nodes: it frees them at the end
        self.held: frozenset[str] = frozenset()  # nodes a run of this tracekit-run took (they stay held)
        self.touched: frozenset[str] = frozenset()  # nodes its runs had: freed at the end

    def run(self) -> str:
        interrupted = False
        try:
            for number, entry in enumerate(self.record["runs"], 1):
                if entry["state"] in DONE:
                    continue
                result = self._one(number, entry)
                if result.state == "interrupted":
                    interrupted = True
                    break
        except KeyboardInterrupt:  # between two runs: nothing of a run is left going
            interrupted = True
        finally:
            if self.last_run is None and self.record.get("nodes_freed") is False:
                # Every run was done, but an earlier tracekit-run of the sweep could not free the nodes.
                self.last_run = self.record["runs"][-1]["run_id"]
                self.touched = frozenset().union(*(self._needs(entry)[1] for entry in self.record["runs"]))
            self._free_nodes()
        states = [entry["state"] for entry in self.record["runs"]]
        if interrupted:
            return "interrupted"
        if any(state not in DONE for state in states):
            return "failed"
        return "warning" if "warning" in states else "succeeded"

    @staticmethod
    def _prepared_itself(run_dir: Path) -> bool:
        try:
            status = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            return False
        return (status.get("phases", {}).get("prepare") or {}).get("state") == "succeeded"

    def _needs(self, entry: dict[str, Any]) -> tuple[str, frozenset[str]]:
        """What a run's preparation is (preparation()), and on which nodes."""
        return self.needs[entry["point"]]

    def _one(self, number: int, entry: dict[str, Any]) -> RunResult:
        point = self.plan.points[entry["point"]]
        need, hosts = self._needs(entry)
        prepared_by = None
        if self.prepared is not None and self.prepared[1] == need and hosts <= self.prepared[2]:
            prepared_by = self.prepared[0]  # (workers.count 2 after 1: the second worker is not prepared yet)
        self.out(f"sweep {self.sweep_dir.name}: run {number}/{len(self.record['runs'])}: {entry['run_id']} "
                 f"({point.label or 'the experiment as it is'})")  # fmt: skip
        self._set(entry, "running", started=now(), prepared_by=prepared_by.name if prepared_by else entry["run_id"])
        folder = self.points_dir / entry["run_id"]
        shared = SharedNodes(self.sweep_dir.name, self.token, prepared_by, held=hosts <= self.held,
                             redis_password_file=self.redis_password, redis_up=self.redis_up)  # fmt: skip
        self.touched |= hosts
        self.last_run = entry["run_id"]
        common = dict(logs_dir=self.points_dir, verbose=self.verbose, lock_wait=self.lock_wait, shared=shared)
        try:
            if (folder / "status.json").exists():  # an earlier try of this run: continued where it stopped
                result = run_experiment(resume=entry["run_id"], inventory=self.inventory, **common)
            else:
                result = run_experiment(self.sweep_dir / "experiment.yaml", run_id=entry["run_id"], inventory=self.inventory,
                                        overrides=[*self.record["overrides"], *point.overrides], **common)  # fmt: skip
        except KeyboardInterrupt:
            self._set(entry, "interrupted", ended=now())
            raise
        except Exception as exc:  # noqa: BLE001 - a run that could not start is this point's failure, not the sweep's
            self._set(entry, "failed", ended=now(), error=str(exc))
            self.out(f"  {entry['run_id']}: failed: {exc}")
            return RunResult(entry["run_id"], folder, "failed")
        phases = result.status.get("phases", {})
        if (phases.get("prepare") or {}).get("state") == "succeeded":
            self.prepared = (folder, need, hosts)
        # Taken by its prepare or start, kept by its stop (keep_nodes): the next runs need not take them again.
        if any((phases.get(p) or {}).get("state") == "succeeded" for p in ("prepare", "start")):
            self.held |= hosts
        # After a run that did not succeed, the next start looks at Redis again (and starts it if it is gone).
        self.redis_up = result.state in DONE
        self._set(entry, result.state, ended=now(), error=result.status.get("error"))
        for line in result.summary:
            self.out(line)
        return result

    def _set(self, entry: dict[str, Any], state: str, **values: Any) -> None:
        entry.update(state=state, **{k: v for k, v in values.items() if v is not None})
        if state in DONE:
            entry.pop("error", None)
        write_record(self.sweep_dir / SWEEP_FILE, self.record)

    def _free_nodes(self) -> None:
        """The nodes the runs kept between them, freed once, and the sweep's Redis stopped (through the last
        run's folder)."""
        if self.last_run is None:
            return
        try:
            freed = free_shared_nodes(self.last_run, self.points_dir,
                                      SharedNodes(self.sweep_dir.name, self.token, redis_password_file=self.redis_password),
                                      inventory=self.inventory, hosts=tuple(sorted(self.touched)), verbose=self.verbose)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - said, and the sweep's own state stands
            freed, reason = False, str(exc)
        else:
            reason = "see its ansible/ folder"
        self.record["nodes_freed"] = freed
        write_record(self.sweep_dir / SWEEP_FILE, self.record)
        if not freed:
            self.out(f"sweep {self.sweep_dir.name}: could not free its nodes ({reason}); free them with "
                     f"'tracekit-run --resume {self.sweep_dir.name}' once they are reachable")  # fmt: skip


def _summary_lines(sweep_dir: Path, state: str) -> list[str]:
    record = _read_record(sweep_dir)
    runs = record["runs"]
    counts: dict[str, int] = {}
    for entry in runs:
        counts[entry["state"]] = counts.get(entry["state"], 0) + 1
    said = ", ".join(f"{n} {state_}" for state_, n in sorted(counts.items()))
    lines = [f"sweep {sweep_dir.name}: {state} ({len(runs)} runs: {said})"]
    for entry in runs:
        if entry["state"] not in DONE:
            lines.append(f"  {entry['run_id']}: {entry['state']}" + (f" ({entry['error']})" if entry.get("error") else ""))
    lines.append(f"  sweep folder: {sweep_dir}")
    if state not in ("succeeded", "warning"):
        lines.append(f"  resume with: tracekit-run --resume {sweep_dir.name}" +
                     (f" --logs-dir {sweep_dir.parent}" if sweep_dir.parent != Path(runfolder.logs_dir()).resolve() else ""))
    return lines
