"""A sweep's cost per run beyond its dispatch, against the same runs made one tracekit-run at a time.

On the local inventory (3 nodes on this machine, node roots and clips in a bench folder, Redis on a free
port), with experiments/smoke.yaml swept over ``dispatch.policy`` (lpt, round-robin) x --repeat:

1. **first run**: one run that makes the node venvs and the clips (reported apart: every later run
   reuses them, as a researcher's second run does);
2. **one at a time** (the baseline: a shell loop of ``tracekit-run -e dispatch.policy=...``): each run
   of the sweep's plan as a run_experiment of its own (prepare, start, run, stop, fetch, parse);
3. **sweep**: the same runs as one run_sweep (the nodes held and prepared once, the summary at the end).

per run beyond its dispatch = (the wall time of all the runs - the sum of their ``run`` phases) / runs;
for the sweep the wall time includes its summary. Target (issue 26): <= 8 s per run for the sweep.
Where the time goes: each phase's median over the runs of each way.

    PYTHONPATH=$PWD .venv/bin/python bench/sweep_overhead.py              # 2 points x 2 runs: ~6-8 min
    PYTHONPATH=$PWD .venv/bin/python bench/sweep_overhead.py --repeat 3
    PYTHONPATH=$PWD .venv/bin/python bench/sweep_overhead.py --keep /tmp/tks

Prints Markdown; exits 0 whatever the numbers are. Every collector, worker and redis-server it starts is
ended at the end (also on Ctrl-C): processes whose command line names the bench folder, and the
redis-server on the bench's port.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.inventories, and this checkout's tracekit before an installed one

from dispatch_throughput import load, machine  # noqa: E402

from tests.helpers import kill_processes_under  # noqa: E402
from tests.inventories import local_inventory  # noqa: E402
from tests.sshd import free_port  # noqa: E402
from tracekit.experiment.progress import Progress  # noqa: E402
from tracekit.experiment.render import PHASES  # noqa: E402
from tracekit.experiment.runner import run_experiment  # noqa: E402
from tracekit.sweep.points import plan_sweep, with_command_line  # noqa: E402
from tracekit.sweep.run import run_sweep  # noqa: E402
from _load import LoadWatch
from _load import add_arguments as add_load_arguments

SMOKE = REPO / "experiments" / "smoke.yaml"
MATRIX = ["dispatch.policy=[lpt, round-robin]"]
TARGET_S = 8.0
DISPATCH = "run"


def _quiet() -> Progress:
    return Progress(PHASES, open(os.devnull, "w"))  # noqa: SIM115 - for the process's life


def _phases(run_dir: Path) -> dict[str, float]:
    status = json.loads((run_dir / "status.json").read_text())
    return {p: (status["phases"].get(p) or {}).get("duration_s") or 0.0 for p in PHASES}


def _state(run_dir: Path) -> str:
    return json.loads((run_dir / "status.json").read_text()).get("state", "?")


def _row(label: str, wall_s: float, runs: list[dict[str, float]], states: list[str]) -> list[str]:
    dispatch = sum(r[DISPATCH] for r in runs)
    per_run = (wall_s - dispatch) / len(runs)
    medians = " | ".join(f"{statistics.median(r[p] for r in runs):.1f}" for p in PHASES)
    bad = [s for s in states if s not in ("succeeded", "warning")]
    return [f"| {label} | {len(runs)} | {wall_s:.1f} | {dispatch:.1f} | **{per_run:.1f}** | {medians} |"
            + (f" {len(bad)} run(s) not succeeded: {', '.join(bad)}" if bad else ""), f"{per_run:.3f}"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per point (default 2; 2 points)")
    parser.add_argument("--keep", type=Path, help="bench folder to keep (default: a temporary one, removed)")
    add_load_arguments(parser)
    args = parser.parse_args()
    watch = LoadWatch.from_args(args)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tk-sweep-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (folder / "site").mkdir(exist_ok=True)
    inventory = local_inventory(folder / "site", port)
    print("# A sweep's cost per run beyond its dispatch\n")
    print(f"- {machine()}; at start: {load()}")
    sweep = with_command_line(None, MATRIX, [], args.repeat)
    plan, _ = plan_sweep(SMOKE, [], sweep)
    print(f"- experiments/smoke.yaml, --matrix {MATRIX[0]!r} --repeat {args.repeat}: {len(plan.runs)} runs each way; "
          "local inventory, node venvs and clips made by a first run\n")  # fmt: skip
    try:
        started = time.monotonic()
        first = run_experiment(SMOKE, inventory=inventory, run_id="first", logs_dir=folder / "first", progress=_quiet())
        print(f"- first run (node venvs, clips): {time.monotonic() - started:.1f} s, {first.state}\n")

        started = time.monotonic()
        alone = []
        for run in plan.runs:
            result = run_experiment(SMOKE, inventory=inventory, run_id=run.run_id, logs_dir=folder / "alone",
                                    overrides=plan.points[run.point].overrides, progress=_quiet())  # fmt: skip
            alone.append(result.run_dir)
        alone_wall = time.monotonic() - started

        started = time.monotonic()
        swept = run_sweep(SMOKE, inventory=inventory, sweep_id="sweep", matrix=MATRIX, repeat=args.repeat,
                          logs_dir=folder / "sweeps", out=lambda _line: None)  # fmt: skip
        sweep_wall = time.monotonic() - started
        record = json.loads((swept.sweep_dir / "sweep.json").read_text())
        swept_dirs = [swept.sweep_dir / r["folder"] for r in record["runs"]]

        print("| way | runs | wall s | dispatch s (run phases) | **per run beyond dispatch, s** | "
              + " | ".join(f"{p} s" for p in PHASES) + " |")  # fmt: skip
        print("|---|---:|---:|---:|---:|" + "---:|" * len(PHASES))
        row_alone, per_alone = _row("one tracekit-run a run", alone_wall, [_phases(d) for d in alone], [_state(d) for d in alone])
        row_sweep, per_sweep = _row("one sweep", sweep_wall, [_phases(d) for d in swept_dirs], [_state(d) for d in swept_dirs])
        print(row_alone)
        print(row_sweep)
        print(f"\nPhase columns: medians over the runs (prepare 0.0: skipped). The sweep's wall time includes its "
              f"summary (table and page).\n\nsweep / one at a time, per run beyond dispatch: {float(per_sweep) / float(per_alone):.2f}x")  # fmt: skip
        print("\n" + watch.end_line())
        verdict = watch.verdict(float(per_sweep) <= TARGET_S)
        print(f"\n- {verdict}: a sweep's run costs {float(per_sweep):.1f} s beyond its dispatch (target <= {TARGET_S:.0f} s)")
    finally:
        kill_processes_under(folder, port)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
