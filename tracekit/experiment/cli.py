"""``tracekit-run``: argv -> run_experiment() -> exit code. No logic lives here."""

from __future__ import annotations

import argparse
import sys

from tracekit import __version__
from tracekit import runfolder
from tracekit.errors import TracekitError, UsageError
from tracekit.experiment.clean import clean_runs
from tracekit.experiment.runner import run_experiment, stop_run
from tracekit.experiment.spec import load_experiment
from tracekit.sweep.run import is_sweep, run_sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracekit-run",
        description="Run a trace-collection experiment from one YAML file: validate it, then run the phases "
        "prepare, start, run, stop, fetch, parse with Ansible against an inventory, and leave a verified run "
        "folder <logs dir>/<RUN_ID>/ (nodes/, cctf/, opendc/, status.json, manifest.json). Stop and fetch run "
        "even after a failure or Ctrl-C, so nothing collected is lost.",
        epilog="examples:\n"
        "  tracekit-run experiments/ffmpeg.yaml                     # all nodes on this machine\n"
        "  tracekit-run experiments/ffmpeg.yaml --dry-run           # validate and print the plan only\n"
        "  tracekit-run experiments/ffmpeg.yaml -i inventory/cluster.yml -e dispatch.policy=lpt\n"
        "  tracekit-run --resume ffmpeg-20261125-101500            # continue from the first unfinished phase\n"
        "  tracekit-run --stop ffmpeg-20261125-101500              # its tracekit-run died: stop what it left\n"
        "  tracekit-run experiments/policies.yaml                   # a sweep: every point of its sweep section\n"
        "  tracekit-run experiments/ffmpeg.yaml --repeat 3 --matrix 'dispatch.policy=[lpt, round-robin]'\n"
        "  tracekit-run --resume policies-20261207-101500           # a sweep: its runs not yet succeeded\n"
        "  tracekit-run --clean ffmpeg-20261125-101500              # remove a run from its nodes and logs/\n"
        "  tracekit-run --clean --older-than 7d --dry-run           # what a clean of week-old runs would remove\n"
        "exit status: 0 every phase succeeded and the trace is whole (--stop: all stopped and fetched); 1 a phase\n"
        "failed; 2 bad input; 3 every phase succeeded but the trace is not whole (tasks or a node's samples\n"
        "missing, a collector that died, queue entries nobody of the run signed: the summary says which);\n"
        "130 interrupted (Ctrl-C, SIGTERM, SIGHUP).\nenvironment: TRACEKIT_LOGS_DIR (default logs folder)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tracekit-run {__version__}")
    parser.add_argument("experiment", nargs="?", help="experiment file, e.g. experiments/ffmpeg.yaml")
    parser.add_argument("-i", "--inventory", help="Ansible inventory (default: the experiment's, else inventory/local.yml)")
    parser.add_argument("--run-id", help="run id (default: <experiment name>-<date>-<time>)")
    parser.add_argument("--logs-dir", help="folder holding run folders (default: $TRACEKIT_LOGS_DIR, else ./logs)")
    parser.add_argument("--dry-run", action="store_true", help="validate, render and print the plan; touch no node")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue RUN_ID from the first phase that did not finish")
    parser.add_argument("--force", action="store_true", help="replace an existing run folder of the same RUN_ID")
    parser.add_argument(
        "--stop", metavar="RUN_ID",
        help="RUN_ID's tracekit-run died (killed, closed terminal): stop what it left running on its nodes, fetch "
        "what it collected and free its nodes; --resume it afterwards to finish it",
    )  # fmt: skip
    clean = parser.add_argument_group(
        "cleaning up", "remove finished runs (and sweeps) from their nodes (logs/, outputs/, redis/, files/ and "
        "secrets below each node's tracekit_node_root), then their run folders; never a run in use (its "
        "tracekit-run runs, it did not end, or a node still runs something of it): that one is kept and named")  # fmt: skip
    clean.add_argument("--clean", nargs="*", metavar="RUN_ID", help="remove these runs or sweeps (with --dry-run: list them)")
    clean.add_argument("--older-than", metavar="AGE",
                       help="with --clean: also every run and sweep last written more than AGE ago (e.g. 7d, 12h, 30m)")  # fmt: skip
    parser.add_argument(
        "--wait", type=int, default=0, metavar="SECONDS",
        help="a node runs one experiment at a time: wait up to SECONDS for nodes another run holds (default: 0, "
        "refuse at once, naming that run)",
    )  # fmt: skip
    parser.add_argument(
        "-e", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override an experiment value by its dotted path, e.g. -e dispatch.policy=lpt (repeatable)",
    )
    parser.add_argument("--limit", metavar="HOSTS", help="Ansible host pattern to restrict the phases to")
    sweep = parser.add_argument_group(
        "sweeps", "run the experiment at several points, each a complete run under <logs dir>/<SWEEP_ID>/points/, "
        "then a table of each figure's mean and 95% confidence interval per point (the experiment's sweep "
        "section does the same from the file; these flags add to it)")  # fmt: skip
    sweep.add_argument(
        "--matrix", action="append", default=[], metavar="KEY=[V1, V2, ...]",
        help="sweep a dotted key over these values; several --matrix: every combination (repeatable)",
    )  # fmt: skip
    sweep.add_argument(
        "--zip", dest="zipped", action="append", default=[], metavar="KEY=[V1, V2, ...]",
        help="sweep keys together: the i-th values of every --zip form one point (lists of one length)",
    )  # fmt: skip
    sweep.add_argument("--repeat", type=int, metavar="N", help="runs per point (default: the sweep section's, else 1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the full Ansible output (plain lines)")
    return parser


# What an empty value of a flag would silently mean, had it not been refused.
_EMPTY = {
    "run_id": "--run-id '': give a run id (letters, digits, '.', '_', '-') or leave the flag out for "
              "<experiment name>-<date>-<time>",
    "resume": "--resume '': give the RUN_ID of the run to continue",
    "stop": "--stop '': give the RUN_ID of the run to stop",
    "inventory": "-i '': give an inventory file or leave the flag out for the experiment's (else inventory/local.yml)",
    "logs_dir": "--logs-dir '': give a folder or leave the flag out for $TRACEKIT_LOGS_DIR (else ./logs)",
    "limit": "--limit '': give an Ansible host pattern (e.g. cloud1) or leave the flag out for every host",
    "experiment": "the experiment file is '': give one, e.g. experiments/ffmpeg.yaml",
}  # fmt: skip


def check_arguments(args: argparse.Namespace) -> None:
    """Values argparse lets through that the run must not take: empty ones (the default would be used
    instead), an unsafe run id (checked before the experiment is read)."""
    for name, message in _EMPTY.items():
        value = getattr(args, name)
        if value is not None and not value.strip():
            raise UsageError(message if value == "" else message.replace("''", repr(value), 1))
    if args.wait < 0:
        raise UsageError(f"--wait {args.wait}: give the seconds to wait for busy nodes, 0 or more")
    if args.stop is not None and (args.experiment or args.resume or args.overrides):
        raise UsageError("--stop RUN_ID stops a run as it was; give no experiment file, --resume or -e with it")
    if args.clean is not None:
        if args.experiment or args.resume or args.stop or args.overrides:
            raise UsageError("--clean removes finished runs; give no experiment file, --resume, --stop or -e with it")
        if not args.clean and args.older_than is None:
            raise UsageError("--clean: name the runs (--clean RUN_ID ...) or give an age (--clean --older-than 7d)")
    elif args.older_than is not None:
        raise UsageError("--older-than AGE goes with --clean: tracekit-run --clean --older-than 7d")
    named = [("--run-id", args.run_id), ("--resume", args.resume), ("--stop", args.stop)]
    for flag, run_id in named + [("--clean", r) for r in args.clean or []]:
        if run_id is not None:
            try:
                runfolder.validate_run_id(run_id)
            except UsageError as exc:
                raise UsageError(str(exc).replace(f"run id {run_id!r}", f"{flag} {run_id!r}", 1)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.experiment is None and args.resume is None and args.stop is None and args.clean is None \
            and args.older_than is None:
        build_parser().error("give an experiment file (e.g. experiments/ffmpeg.yaml), --resume RUN_ID, --stop RUN_ID "
                             "or --clean RUN_ID")
    try:
        check_arguments(args)
        if args.clean is not None:
            cleaned = clean_runs(args.clean, older_than=args.older_than, logs_dir=args.logs_dir,
                                 inventory=args.inventory, dry_run=args.dry_run, verbose=args.verbose)  # fmt: skip
            _print_summary(cleaned.lines)
            return cleaned.exit_code
        if args.stop is not None:
            result = stop_run(args.stop, inventory=args.inventory, logs_dir=args.logs_dir, verbose=args.verbose)
            print("\n".join(result.summary))
            return result.exit_code
        if _is_a_sweep(args):
            swept = run_sweep(
                args.experiment, inventory=args.inventory, sweep_id=args.run_id, dry_run=args.dry_run,
                resume=args.resume, overrides=args.overrides, matrix=args.matrix, zipped=args.zipped,
                repeat=args.repeat, verbose=args.verbose, logs_dir=args.logs_dir, lock_wait=args.wait,
            )  # fmt: skip
            if not args.dry_run:
                _print_summary(swept.lines)
            return swept.exit_code
        result = run_experiment(
            args.experiment,
            inventory=args.inventory,
            run_id=args.run_id,
            dry_run=args.dry_run,
            resume=args.resume,
            force=args.force,
            overrides=args.overrides,
            limit=args.limit,
            verbose=args.verbose,
            logs_dir=args.logs_dir,
            lock_wait=args.wait,
        )
    except TracekitError as exc:
        print(f"tracekit-run: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not args.dry_run:
        _print_summary(result.summary)
    return result.exit_code


def _is_a_sweep(args: argparse.Namespace) -> bool:
    """A sweep's flags, an experiment with a sweep section, or --resume of a sweep's id."""
    if args.resume is not None:
        return is_sweep(args.logs_dir, args.resume)
    if args.matrix or args.zipped or args.repeat is not None:
        return True
    return load_experiment(args.experiment, args.overrides).sweep is not None


def _print_summary(lines: list[str]) -> None:
    try:
        print("\n".join(lines))
    except OSError:  # the terminal or pipe is gone: the run folder's status.json says it all
        pass


if __name__ == "__main__":
    sys.exit(main())
