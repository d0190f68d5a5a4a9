"""``tracekit-run``: argv -> run_experiment() -> exit code. No logic lives here."""

from __future__ import annotations

import argparse
import sys

from tracekit import __version__
from tracekit.errors import TracekitError
from tracekit.experiment.runner import run_experiment


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
        "exit status: 0 every phase succeeded and verification passed; 1 a phase failed; 2 bad input; "
        "130 interrupted.\nenvironment: TRACEKIT_LOGS_DIR (default logs folder)",
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
        "-e", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override an experiment value by its dotted path, e.g. -e dispatch.policy=lpt (repeatable)",
    )
    parser.add_argument("--limit", metavar="HOSTS", help="Ansible host pattern to restrict the phases to")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the full Ansible output (plain lines)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.experiment is None and args.resume is None:
        build_parser().error("give an experiment file (e.g. experiments/ffmpeg.yaml) or --resume RUN_ID")
    try:
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
        )
    except TracekitError as exc:
        print(f"tracekit-run: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not args.dry_run:
        print("\n".join(result.summary))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
