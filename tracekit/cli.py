"""Command line: argv -> one API call -> exit code. No logic lives here.

Every error the library raises (TracekitError) becomes one line on stderr,
``tracekit <command>: error: <what and how to fix>``, and its exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tracekit import __version__, runfolder
from tracekit.errors import TracekitError, UsageError

EPILOG_ENV = (
    "environment: TRACEKIT_LOGS_DIR (default logs folder), TRACEKIT_RUN_ID (default run id), "
    "TRACEKIT_NODE_ID (default node id)"
)


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers, e.g. 5,10,20") from None


def _cpu_list(text: str) -> tuple[int, ...]:
    from tracekit.cpuset import parse_cpu_list

    try:
        return parse_cpu_list(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", help="run id; the run folder is <logs dir>/<RUN_ID> (default: $TRACEKIT_RUN_ID)")
    parser.add_argument("--logs-dir", help="folder holding the run folders (default: $TRACEKIT_LOGS_DIR, else ./logs)")


def _add_clock_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--clock-redis-url", metavar="URL", help=f"the controller's redis://HOST:PORT/DB: {what}")
    parser.add_argument("--redis-password-file", type=Path, help="file holding the Redis password (else $REDIS_PASSWORD)")


REDIS_EPILOG = (
    "The Redis password is read from --redis-password-file or $REDIS_PASSWORD, never from the URL "
    "(command lines are visible to every user). " + EPILOG_ENV
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracekit",
        description="Capture traces of real workloads: collectors, traced invocations, test inputs.",
        epilog=EPILOG_ENV,
    )
    parser.add_argument("--version", action="version", version=f"tracekit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # One function per command, in the order `tracekit --help` lists them.
    for add in (_add_collect, _add_wrap, _add_ffmpeg, _add_inputs, _add_parse, _add_adapt, _add_export,
                _add_verify, _add_show, _add_report, _add_compare, _add_worker, _add_setup, _add_dispatch, _add_clock, _add_load, _add_serve):  # fmt: skip
        add(commands)
    return parser


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true",
        help="print one JSON object instead of text: {\"changed\": true|false, ...} (what the Ansible roles read)",
    )  # fmt: skip


def _answer(args: argparse.Namespace, text: str, changed: bool, **facts: object) -> None:
    """The outcome of a start or stop: ``text`` for a person, or with --json one JSON object on stdout
    whose ``changed`` says whether anything was started, stopped or written (roles decide "changed" from it)."""
    if getattr(args, "json", False):
        print(json.dumps({"changed": changed, **facts, "message": text}, default=str))
    else:
        print(text)


def _add_collect(commands: argparse._SubParsersAction) -> None:
    collect = commands.add_parser(
        "collect",
        help="the per-node collector daemon (host, process and topology samples)",
        description="Start, stop or query the collector of a run on this node. Raw samples go to "
        "<logs dir>/<RUN_ID>/ (node.json, host.csv, host_cpus.csv, host_net.csv, proc.csv, processes.jsonl, "
        "collector.jsonl).",
        epilog=EPILOG_ENV,
    )
    actions = collect.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (
        ("start", "start a detached collector (does nothing if one already runs for the run)"),
        ("run", "run the collector in the foreground until SIGINT/SIGTERM (or --duration)"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text, epilog=EPILOG_ENV)
        _add_run_args(action)
        action.add_argument("--node-id", default=None, help="node id (default: $TRACEKIT_NODE_ID, else the host name)")
        action.add_argument("--stage", default="cloud", help="stage label recorded in node.json (default: cloud)")
        action.add_argument("--role", default=None, help="role recorded in node.json (controller, worker)")
        action.add_argument("--interval-ms", type=int, default=1000, help="sampling interval, 100 or more (default: 1000)")
        action.add_argument("--match", metavar="REGEX", help="follow processes whose name matches, e.g. '^ffmpeg$|^ffprobe$'")
        action.add_argument("--match-cmdline", metavar="REGEX", help="follow processes whose command line matches")
        action.add_argument(
            "--pid-dir", type=Path, help="folder where 'tracekit wrap' registers PIDs (default: <run folder>/pids)"
        )
        action.add_argument("--no-host", action="store_true", help="do not record host samples")
        action.add_argument(
            "--no-process-events", action="store_true",
            help="find processes by polling /proc at each tick, not by the kernel's process events (the "
            "fallback where those cannot be had: no CAP_NET_ADMIN, no kernel support); recorded in node.json",
        )  # fmt: skip
        action.add_argument("--cpu-mhz", type=float, help="nominal core speed to record, overriding detection")
        action.add_argument(
            "--scope", choices=("machine", "node"), default="machine",
            help="which processes --match/--match-cmdline may follow: any on this machine (default), or only "
            "those started for this node (TRACEKIT_NODE_ID=<node id> in their environment: what the worker, "
            "dispatcher and wrap set), for nodes that share one machine",
        )  # fmt: skip
        action.add_argument(
            "--cpus", type=_cpu_list, metavar="LIST",
            help="the node's own CPUs (e.g. 1 or 0-3,6) where nodes share a machine: recorded in node.json, "
            "host CPU samples from them only (default: the CPUs this process may use)",
        )  # fmt: skip
        action.add_argument("--append", action="store_true", help="add this session to a run folder whose "
                            "collector was stopped (default: refused, as a run id reused by mistake; one that died "
                            "may be started again)")
        if name == "start":
            _add_clock_args(action, "then measure this node's clock offset to the controller (as 'tracekit clock --moment start')")
            _add_json(action)
        if name == "run":
            action.add_argument("--duration", type=float, metavar="SECONDS", help="stop by itself after this long")
            # Set by 'start': stderr already goes to collector.log, so log only there.
            action.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)
    for name, help_text in (
        ("stop", "stop the run's collector: final sample, flush (a notice if none runs)"),
        ("status", "say whether a collector runs for the run (exit 0 running, 3 not running)"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text, epilog=EPILOG_ENV)
        _add_run_args(action)
        if name == "stop":
            _add_clock_args(
                action,
                "then measure this node's clock offset to the controller again (as 'tracekit clock --moment end'; "
                "when Redis cannot be reached, a warning: parse uses the start measurement)",
            )
            _add_json(action)


def _add_wrap(commands: argparse._SubParsersAction) -> None:
    wrap = commands.add_parser(
        "wrap",
        help="run a command as a traced invocation",
        description="Run CMD as a child, register its PID for the collector, forward SIGINT/SIGTERM, "
        "and append one event (timestamps, exit status, exact CPU time and peak RSS from wait4) to "
        "<run folder>/events.<module>.jsonl. Exits with the command's exit code.",
        epilog="example: tracekit wrap --run-id r1 -- ffmpeg -nostdin -y -i in.mp4 out.mp4\n" + EPILOG_ENV,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(wrap)
    wrap.add_argument("--module", help="event file name part (default: the command's name, e.g. ffmpeg)")
    wrap.add_argument("--task-id", help="task id (default: a new UUID)")
    wrap.add_argument("--trace-id", help="trace id (default: a new W3C trace id)")
    wrap.add_argument("--ts-enqueue", type=int, metavar="MS", help="when the task was queued, epoch ms (default: start)")
    wrap.add_argument("--node-id", help="node id (default: $TRACEKIT_NODE_ID, else the host name)")
    wrap.add_argument("--attempt", type=int, default=1, help="attempt number (default: 1)")
    wrap.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...", help="the command to run")


def _add_ffmpeg(commands: argparse._SubParsersAction) -> None:
    ffmpeg = commands.add_parser(
        "ffmpeg",
        help="transcode one file with ffmpeg, traced (the seed's ffmpeg_wrapper.sh)",
        description="Transcode INPUT to OUTPUT with libx264 (always -nostdin -y) through 'wrap', so the "
        "task is an invocation event of the run.",
        epilog=EPILOG_ENV,
    )
    _add_run_args(ffmpeg)
    ffmpeg.add_argument("input", metavar="INPUT")
    ffmpeg.add_argument("output", metavar="OUTPUT")
    ffmpeg.add_argument("--scale", default="1280:720", help="WIDTH:HEIGHT (default: 1280:720)")
    ffmpeg.add_argument("--preset", default="veryfast", help="x264 preset (default: veryfast)")
    ffmpeg.add_argument("--crf", type=int, default=28, help="x264 quality, 0-51 (default: 28)")
    ffmpeg.add_argument("--threads", type=int, help="encoder threads (default: ffmpeg decides)")
    ffmpeg.add_argument("--task-id", help="task id (default: a new UUID)")
    ffmpeg.add_argument("--trace-id", help="trace id (default: a new W3C trace id)")
    ffmpeg.add_argument("--node-id", help="node id (default: $TRACEKIT_NODE_ID, else the host name)")


def _add_inputs(commands: argparse._SubParsersAction) -> None:
    inputs = commands.add_parser("inputs", help="test inputs made with ffmpeg's lavfi sources")
    inputs_actions = inputs.add_subparsers(dest="action", metavar="ACTION", required=True)
    generate = inputs_actions.add_parser(
        "generate",
        help="generate varied test clips (testsrc2, mandelbrot, life, noise, ...)",
        description="Generate COUNT clips with ffmpeg's built-in sources; nothing is downloaded. "
        "The same seed gives the same plan; clips already in DIR are kept.",
    )
    generate.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="where the clips go")
    generate.add_argument("--count", type=int, default=3, help="number of clips (default: 3)")
    generate.add_argument("--durations", type=_csv_ints, default=[5, 10, 20], help="seconds to pick from (default: 5,10,20)")
    generate.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (default: 1280x720)")
    generate.add_argument("--fps", type=int, default=25, help="frames per second (default: 25)")
    generate.add_argument("--seed", type=int, default=0, help="random seed of the plan (default: 0)")
    _add_json(generate)


def _add_parse(commands: argparse._SubParsersAction) -> None:
    from tracekit.trace import export as formats

    parse = commands.add_parser(
        "parse",
        help="raw node files of a run -> the normalized trace cctf/",
        description="Read RUN_DIR (one node's raw files, or nodes/<node>/ folders) and write RUN_DIR/cctf/:\n"
        "process, task, host and link metrics as Parquet (a file per node under proc_metrics/,\n"
        "task_metrics/, host_metrics/, link_metrics/, contention/), each task's slices (task_slices/: what\n"
        "every export is made from), invocations, nodes, links, placement events, audit. A node's part made on the\n"
        "node (--node-part) is taken as it is while it matches the node's raw files. Garbled lines are\n"
        "skipped and listed in the audit (with --strict they are fatal). The same input gives\n"
        "byte-identical output.",
        epilog="examples: tracekit parse logs/test001\n"
        "          tracekit parse --node-part logs/test001   (on a node: its part, in logs/test001/cctf-part/)\n"
        "          tracekit parse logs/test001 --export opendc --report   (what tracekit-run's parse phase does)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parse.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder, e.g. logs/<RUN_ID>")
    parse.add_argument("--strict", action="store_true", help="fail on the first garbled or truncated line")
    parse.add_argument("--jsonl", action="store_true", help="also write the per-sample tables as JSON Lines "
                       "(proc_metrics.jsonl, proc_cpu.jsonl, proc_rss.jsonl, host_metrics.jsonl, link_metrics.jsonl, "
                       "task_metrics.jsonl)")
    parse.add_argument("--node-part", action="store_true", help="RUN_DIR is one node's folder: write only its part "
                       "of the trace, RUN_DIR/cctf-part/ (Parquet tables and part.json), for a later parse of the run")
    # tracekit-run's parse phase: one process for the four steps (each a Python start and an Ansible task less).
    parse.add_argument("--export", action="append", default=[], choices=formats.names(), metavar="FORMAT",
                       help="then export the run into RUN_DIR/<FORMAT>/ (replaced) and verify it against the run, "
                       f"as 'tracekit export' and 'tracekit verify' do (repeatable; formats: {', '.join(formats.names())})")
    parse.add_argument("--include-failed", action="store_true", help="with --export: export failed invocations too")
    parse.add_argument("--export-option", action="append", default=[], metavar="FORMAT.OPTION=VALUE",
                       help="with --export: one of a format's own options, by its flag's keyword (repeatable), "
                       "e.g. google.window_s=60 for 'tracekit export google --window-s 60'")  # fmt: skip
    parse.add_argument("--report", action="store_true", help="then write RUN_DIR/report/, as 'tracekit report' does")
    _add_json(parse)


def _add_adapt(commands: argparse._SubParsersAction) -> None:
    adapt = commands.add_parser("adapt", help="turn logs of existing services into invocation events")
    adapters = adapt.add_subparsers(dest="adapter", metavar="ADAPTER", required=True)
    nginx = adapters.add_parser(
        "nginx",
        help="nginx access log -> events.nginx.jsonl",
        description="Read an nginx access log (format 'combined', or 'extended' = combined + "
        "$request_length $request_time \"$http_x_trace_id\") and write one invocation event per request. "
        "$time_local is when a request ended. Write the output into a run folder as events.nginx.jsonl so "
        "that 'tracekit parse' merges it.",
        epilog="example: tracekit adapt nginx --input /var/log/nginx/access.log "
        "--output logs/test001/events.nginx.jsonl --format extended",
    )
    nginx.add_argument("--input", required=True, type=Path, metavar="LOG")
    nginx.add_argument("--output", required=True, type=Path, metavar="FILE")
    nginx.add_argument("--format", default="combined", choices=["combined", "extended"], help="(default: combined)")
    nginx.add_argument("--node", help="node id of the nginx host (default: $TRACEKIT_NODE_ID, else the host name)")
    nginx.add_argument("--strict", action="store_true", help="fail on the first line that is not a log line")


def _add_export(commands: argparse._SubParsersAction) -> None:
    from tracekit.trace import export as formats

    export = commands.add_parser(
        "export", help="export a parsed run to a simulator's or an archive's format",
        description=f"Write a parsed run (RUN_DIR/cctf/) in FORMAT: {', '.join(formats.names())}. "
        "'tracekit export FORMAT --help' says what it writes and its own flags.",
        epilog="example: tracekit export opendc logs/test001 -o logs/test001/opendc",
    )  # fmt: skip
    export.add_argument("format", choices=formats.names(), metavar="FORMAT")
    export.add_argument("format_args", nargs=argparse.REMAINDER, metavar="RUN_DIR -o OUT_DIR ...")


def _export_parser(module: Any) -> tuple[argparse.ArgumentParser, list[str]]:
    """``tracekit export NAME``'s own parser (built once the format is known: only its module is loaded)."""
    parser = argparse.ArgumentParser(prog=f"tracekit export {module.NAME}", description=module.DESCRIPTION,
                                     epilog=f"example: tracekit export {module.NAME} logs/test001 -o logs/test001/{module.NAME}")  # fmt: skip
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder with cctf/ (run 'tracekit parse')")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT_DIR")
    parser.add_argument("--include-failed", action="store_true", help="export failed invocations too")
    parser.add_argument("--force", action="store_true",
                        help="replace OUT_DIR when it holds anything but an earlier export of this run in this format")  # fmt: skip
    return parser, _own_flags(parser, module.add_arguments)


def _own_flags(parser: argparse.ArgumentParser, add: Any) -> list[str]:
    """The dests of the flags ``add`` gives ``parser``: the format's own keywords."""
    before = {action.dest for action in parser._actions}
    add(parser)
    return [action.dest for action in parser._actions if action.dest not in before]


def _add_verify(commands: argparse._SubParsersAction) -> None:
    from tracekit.trace import export as formats

    verify = commands.add_parser(
        "verify", help="check an exported workload",
        description=f"Check an export in FORMAT ({', '.join(formats.names())}) as its readers would, and with "
        "--against RUN_DIR against the run it came from. Prints one line per violation and exits 1, or one summary "
        "line. 'tracekit verify FORMAT --help' gives its own flags.",
        epilog="example: tracekit verify opendc logs/test001/opendc --against logs/test001",
    )  # fmt: skip
    verify.add_argument("format", choices=formats.names(), metavar="FORMAT")
    verify.add_argument("format_args", nargs=argparse.REMAINDER, metavar="OUT_DIR [--against RUN_DIR] ...")


def _verify_parser(module: Any) -> tuple[argparse.ArgumentParser, list[str]]:
    parser = argparse.ArgumentParser(prog=f"tracekit verify {module.NAME}", description=module.verify.__doc__)
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--against", type=Path, metavar="RUN_DIR", help="check conservation against this run")
    return parser, _own_flags(parser, module.add_verify_arguments)


TASK_KEY_HELP = (
    "file holding the run's task key (else $TRACEKIT_TASK_KEY): the dispatcher signs every task with it and a "
    "worker runs only what verifies; one secret per run, the same for the dispatcher and its workers, never "
    "sent through Redis"
)


def _add_worker(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser(
        "worker",
        help="run the tasks the dispatcher places on this node",
        description="Consume this node's task queue on Redis with K parallel slots: run each task (the argv "
        "its workload planned, signed by the run's dispatcher) as a traced invocation in a process group of "
        "its own (ended at its time-out), send heartbeats, write one terminal record per task. SIGINT/SIGTERM: "
        "finish the running tasks and exit; a second signal stops them and hands them back.",
        epilog=REDIS_EPILOG,
    )
    _add_run_args(worker)
    worker.add_argument("--node-id", help="this node's id (default: $TRACEKIT_NODE_ID, else the host name)")
    worker.add_argument("--redis-url", help="redis://HOST:PORT/DB (no password); required unless --stop")
    worker.add_argument("--redis-password-file", type=Path, help="file holding the Redis password")
    worker.add_argument("--task-key-file", type=Path, help=TASK_KEY_HELP)
    worker.add_argument("--parallel", type=int, default=1, help="tasks run at once (default: 1)")
    worker.add_argument("--outputs", type=Path, default=Path("outputs"), help="where outputs go, {outputs} in a task (default: outputs)")
    worker.add_argument("--files", type=Path, help="the node's copy of the workload's files, {files} in a task")
    worker.add_argument("--venv", type=Path, help="the workload's own Python environment: its bin/ first on the tasks' PATH")
    worker.add_argument("--grace", type=float, default=60.0, metavar="S", help="after a stop signal, how long running tasks may finish (default: 60)")
    worker.add_argument(
        "--cpus", type=_cpu_list, metavar="LIST",
        help="keep the worker and every task on these CPUs (e.g. 1 or 0-3,6): the node's own where nodes share a "
        "machine (default: the CPUs it may use)",
    )  # fmt: skip
    worker.add_argument(
        "--no-task-cgroups", dest="task_cgroups", action="store_false",
        help="run tasks in the worker's own cgroups: each task then has its rusage and its processes' samples "
        "only (default: each in a cgroup of its own, counting every process it starts; one more exec per task)",
    )  # fmt: skip
    worker_mode = worker.add_mutually_exclusive_group()
    worker_mode.add_argument(
        "--detach", action="store_true",
        help="run in the background (pidfile worker.pid and console log worker.out in the run folder); "
        "does nothing when this run's worker already runs",
    )
    worker_mode.add_argument(
        "--stop", action="store_true",
        help="stop this run's background worker (SIGTERM: running tasks finish within --grace) and wait for its exit",
    )
    _add_json(worker)


def _add_setup(commands: argparse._SubParsersAction) -> None:
    setup = commands.add_parser(
        "setup",
        help="run a workload's setup command once on this node (tracekit-run's prepare)",
        description="Run COMMAND ARG... (no shell; {files} and {outputs} in an argument are replaced by the "
        "folders given) in the files folder with the workload's venv first on PATH, unless this very setup "
        "already ran on these files (a marker .tracekit-setup.json there; --again runs it anyway). Its output "
        "goes to .tracekit-setup.log there; a failure is one line with its exit status and last stderr line.",
    )
    setup.add_argument("--files", type=Path, help="the node's copy of the workload's files ({files}; the command runs there)")
    setup.add_argument("--outputs", type=Path, required=True, help="the run's outputs folder on this node ({outputs})")
    setup.add_argument("--venv", type=Path, help="the workload's own Python environment: its bin/ first on PATH")
    setup.add_argument("--again", action="store_true", help="run it even if it ran on these files already")
    setup.add_argument("setup_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ARG...", help="the setup command")
    _add_json(setup)


def _add_dispatch(commands: argparse._SubParsersAction) -> None:
    dispatch = commands.add_parser(
        "dispatch",
        help="place a workload's tasks on worker nodes and wait until all are done",
        description="Plan the tasks of a workload (--workload FILE: any kind, e.g. command; or transcodes of "
        "--inputs: one task per input, or --total tasks from a weighted --mix of profiles), place them on the "
        "nodes' queues with a placement policy, follow completions, requeue tasks of silent workers, and exit "
        "0 only when every task is done (1 with a summary when some failed or timed out). "
        "Policies: round-robin, least-loaded, lpt, duration-online (aliases rr3, duration-greedy, lpt-duration, "
        "online-duration). Profiles for --mix: 360p-ultrafast, 480p-veryfast, 720p-veryfast, 720p-medium, "
        "1080p-veryfast.",
        epilog=REDIS_EPILOG,
    )
    _add_run_args(dispatch)
    dispatch.add_argument("--node-id", help="this (the controller's) node id, marked on the processes it starts "
                          "(default: $TRACEKIT_NODE_ID, else the host name)")
    dispatch.add_argument("--redis-url", help="redis://HOST:PORT/DB (no password); required unless --stop")
    dispatch.add_argument("--redis-password-file", type=Path, help="file holding the Redis password")
    dispatch.add_argument("--task-key-file", type=Path, help=TASK_KEY_HELP)
    dispatch.add_argument("--nodes", help="worker nodes, comma-separated, e.g. cloud1,cloud2")
    dispatch.add_argument(
        "--workload", type=Path, metavar="FILE",
        help='what to run: a JSON file {"kind": ..., "section": {...}} with a workload section as an experiment '
        "has it (tracekit-run writes one); else transcodes of --inputs",
    )  # fmt: skip
    dispatch.add_argument("--inputs", type=Path, help="transcodes: folder of input videos (the options below apply)")
    dispatch.add_argument("--policy", default="duration-online", help="placement policy (default: duration-online)")
    dispatch.add_argument("--scale", default="1280:720", help="WIDTH:HEIGHT (default: 1280:720)")
    dispatch.add_argument("--preset", default="veryfast", help="x264 preset (default: veryfast)")
    dispatch.add_argument("--crf", type=int, default=28, help="x264 quality (default: 28)")
    dispatch.add_argument("--threads", type=int, help="encoder threads per task (default: ffmpeg decides)")
    dispatch.add_argument("--batch-size", type=int, default=0, help="placements per round (default: 0, no limit)")
    dispatch.add_argument("--dribble-interval", type=float, default=0.0, metavar="S", help="seconds between rounds (default: 0)")
    dispatch.add_argument("--backlog-limit", type=int, default=0, help="max queued + running per node (default: 0, no limit)")
    dispatch.add_argument("--mix", help="weighted profiles, e.g. 720p-veryfast=3,360p-ultrafast=1 (needs --total)")
    dispatch.add_argument("--total", type=int, help="number of tasks (default: one per input)")
    dispatch.add_argument("--seed", type=int, default=0, help="seed of the plan (default: 0)")
    dispatch.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="give up after (default: 3600)")
    dispatch.add_argument("--worker-wait", type=float, default=30.0, metavar="S", help="wait this long for every node's worker (default: 30)")
    dispatch.add_argument("--cleanup", action="store_true", help="delete the run's Redis keys and exit")
    dispatch.add_argument("--stop", action="store_true", help="stop this run's dispatcher if one still runs (idempotent)")
    _add_json(dispatch)


def _add_clock(commands: argparse._SubParsersAction) -> None:
    clock = commands.add_parser(
        "clock",
        help="measure this node's clock offset to the controller (Redis TIME) into clock.json",
        description="Probe the controller's Redis TIME a few times and record the offset with the smallest "
        "round trip (offset = server time - midpoint, uncertainty = RTT/2) under 'start' or 'end' in the run "
        "folder's clock.json. 'tracekit parse' adds offset_ms to this node's timestamps.",
        epilog=REDIS_EPILOG,
    )
    _add_run_args(clock)
    clock.add_argument("--redis-url", required=True, help="the controller's redis://HOST:PORT/DB (no password)")
    clock.add_argument("--redis-password-file", type=Path, help="file holding the Redis password")
    clock.add_argument("--moment", choices=("start", "end"), default="start", help="which measurement this is (default: start)")


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="start or stop a run's HTTP service (uvicorn, in the background, with a pidfile)",
        description="Start an ASGI service (e.g. examples/fastapi_svc, traced by tracekit.adapters.http) for a run "
        "in the background, and return once its port accepts connections; or --stop it. The service writes "
        "its request events into <logs dir>/<RUN_ID>/events.http.jsonl; its pidfile and console log are "
        "http_service.pid and http_service.log there.",
        epilog=EPILOG_ENV,
    )
    _add_run_args(serve)
    serve.add_argument("--stop", action="store_true", help="stop the run's service (idempotent)")
    _add_json(serve)
    serve.add_argument("--app-dir", type=Path, help="folder of the app (e.g. examples/fastapi_svc)")
    serve.add_argument("--app", default="app:create_app", help="MODULE:ATTRIBUTE (default: app:create_app)")
    serve.add_argument("--no-factory", action="store_true", help="the attribute is the app itself, not a function making it")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default: 1)")
    serve.add_argument("--node-id", help="node id (default: $TRACEKIT_NODE_ID, else the host name)")
    serve.add_argument("--next-url", help="the next hop of work requests that name none (DEFAULT_NEXT_URL)")
    serve.add_argument("--cpus", type=_cpu_list, metavar="LIST", help="keep the service and its workers on these CPUs (e.g. 1 or 0-3)")
    serve.add_argument("--venv", type=Path, help="a venv of the service's own packages: its bin/ first on PATH")
    command = serve.add_argument_group(
        "any service as a command (not an ASGI app: a WSGI app, nginx, any binary)",
        "tracekit serve --run-id R --port 8081 --health /health --files DIR --command -- python3 {files}/app.py "
        "--port {port}: {host}, {port}, {files} and {run_dir} (the run folder) in its arguments are filled in (no shell); it runs in --files; "
        "ready once GET --health answers. Its process tree is followed by the node's collector (TRACEKIT_NODE_ID).",
    )
    command.add_argument("--command", dest="as_command", action="store_true", help="the arguments after -- are the service's command")
    command.add_argument("--files", type=Path, help="the service's folder ({files}; the command runs there)")
    command.add_argument("--health", default="/", help="path whose GET answers once it is up (default: /)")
    command.add_argument("--access-log", help="an nginx-format access log it writes (placeholders filled in): its "
                         "requests become server-side spans (events.nginx.jsonl) when it stops")  # fmt: skip
    command.add_argument("--access-log-format", choices=("combined", "extended"), default="combined",
                         help="the access log's format (tracekit adapt nginx; default: combined)")  # fmt: skip
    command.add_argument("service_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ARG...")
    boxed = serve.add_argument_group(
        "in a container (tracekit.container)",
        "ENGINE run --rm --name tk-<run>-<node>-service --network host ...: the run folder (and --files, the "
        "venv) mounted at their own paths, its environment passed by name. An ASGI app needs this node's "
        "Tracekit venv inside: give --container-rootfs / (an overlay of the host's tree).",
    )
    boxed.add_argument("--container", choices=("podman", "docker"), help="the container engine")
    boxed.add_argument("--container-image", help="the image (present on the node)")
    boxed.add_argument("--container-rootfs", help="instead of an image: a folder as its root, e.g. /")
    boxed.add_argument("--container-runtime", help="podman's OCI runtime, e.g. runc")
    boxed.add_argument("--container-option", action="append", default=[], metavar="ARG",
                       help="one more argument of ENGINE run (repeat it; --container-option=--memory=512m)")  # fmt: skip


def _add_load(commands: argparse._SubParsersAction) -> None:
    load = commands.add_parser(
        "load",
        help="open-loop HTTP load: requests at fixed intended times, vegeta-style results and summary",
        description="Send requests to --url at intended times fixed in advance (open loop: a slow server "
        "does not slow the sender). Latency is measured from the actual send and from the intended time; "
        "requests sent late or dropped (at --max-in-flight) are counted. Each request carries a new W3C "
        "traceparent, so the server's events join the results on trace id. Results: one JSON line per "
        "request with vegeta's fields (encode --to json) plus intended, latency_intended, send_lag, trace_id; "
        "a summary like 'vegeta report' is printed and written as JSON. Ctrl-C ends the load early and "
        "keeps what was sent.",
        epilog="examples: tracekit load --url http://127.0.0.1:8080/work?cpu_ms=5 --rate 100 --duration 30s; "
        "tracekit load --url URL --rate 50@30s,200@30s --arrival poisson --seed 1 --run-id r1",
    )
    load.add_argument("--url", required=True, action="append",
                      help="the target, http://HOST[:PORT]/PATH[?QUERY]; repeat it for several, sent to in turn")  # fmt: skip
    load.add_argument("--rate", required=True, help="requests per second (0.001 to 1,000,000), or a plan: 50@30s,100@30s; "
                      "warm-up and plan last 168 h (7 days) at most")
    load.add_argument("--duration", help="how long to send (60s, 500ms, 1m30s; not needed with a plan)")
    load.add_argument("--method", default="GET", help="HTTP method (default: GET)")
    load.add_argument("--body", help="request body; @FILE reads it from FILE")
    load.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="a request header (repeatable)")
    load.add_argument("--arrival", choices=("constant", "poisson"), default="constant",
                      help="evenly spaced sends, or Poisson arrivals (default: constant)")  # fmt: skip
    load.add_argument("--seed", type=int, help="seed of the Poisson arrivals (same seed, same schedule)")
    load.add_argument("--warmup", help="send at the first rate this long first, left out of the summary (e.g. 5s)")
    load.add_argument("--max-in-flight", type=int, default=1024,
                      help="open requests at most; a request due beyond it is dropped and counted (default: 1024)")  # fmt: skip
    load.add_argument("--timeout", default="30s", help="per request; also how long open requests get after the last send (default: 30s)")
    load.add_argument("--name", default="", help="the attack name in every result (vegeta's 'attack')")
    load.add_argument("--output", type=Path, help="results file, JSON lines (default with --run-id: <run folder>/load/results.jsonl)")
    load.add_argument("--summary", type=Path, help="summary file, JSON (default: beside the results, summary.json)")
    _add_run_args(load)
    load.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


# -- command handlers: each turns arguments into one API call -------------------


def _collector_config(args: argparse.Namespace):
    from tracekit.collect.daemon import CollectorConfig

    return CollectorConfig(
        run_id=runfolder.run_id_or_env(args.run_id),
        node_id=args.node_id or runfolder.default_node_id(),
        stage=args.stage,
        interval_ms=args.interval_ms,
        match_name=args.match,
        match_cmdline=args.match_cmdline,
        pid_dir=args.pid_dir,
        host=not args.no_host,
        logs_dir=runfolder.logs_dir(args.logs_dir),
        cpu_mhz=args.cpu_mhz,
        role=args.role,
        scope=args.scope,
        cpus=args.cpus,
        process_events=not args.no_process_events,
    )


def _cmd_collect(args: argparse.Namespace) -> int:
    from tracekit.collect import daemon

    if args.action == "start":
        config = _collector_config(args)
        status, started = daemon.start_collector(config, append=args.append)
        clock = _measure_clock(config.run_id, args.clock_redis_url, args, "start") if args.clock_redis_url else None
        _answer(args, ("started: " if started else "already running: ") + status.describe() + (f"\n{clock}" if clock else ""),
                started, pid=status.pid)  # fmt: skip
        return 0
    if args.action == "run":
        config = _collector_config(args)
        if not (args.append or args.detached):  # detached: its 'start' decided
            daemon.refuse_an_earlier_session(config)
        final = daemon.run_collector(config, stop_after_s=args.duration, log_to_stderr=not args.detached)
        return 0 if final else 1
    run_id = runfolder.run_id_or_env(args.run_id)
    if args.action == "stop":
        result = daemon.stop_collector(run_id, args.logs_dir)
        clock = None
        if args.clock_redis_url:
            import redis

            try:
                clock = _measure_clock(run_id, args.clock_redis_url, args, "end")
            except (TracekitError, redis.RedisError) as exc:  # e.g. Redis already gone after a failed run
                print(f"tracekit collect: warning: clock offset at the end not measured ({exc}); "
                      "parse uses the start measurement", file=sys.stderr)
        _answer(args, result.message + (f"\n{clock}" if clock else ""), result.was_running, died=result.died)
        return 0
    status = daemon.collector_status(run_id, args.logs_dir)
    print(status.describe())
    return 0 if status.running else 3


def _cmd_wrap(args: argparse.Namespace) -> int:
    from tracekit.adapters.ffmpeg_argv import guess_io_paths
    from tracekit.invocation import Invocation, run_invocation, shell_exit_code

    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    invocation = Invocation(
        argv=argv,
        run_id=runfolder.run_id_or_env(args.run_id),
        logs_dir=args.logs_dir,
        module=args.module,
        task_id=args.task_id,
        trace_id=args.trace_id,
        ts_enqueue=args.ts_enqueue,
        node_id=args.node_id,
        attempt=args.attempt,
        io=guess_io_paths(argv),  # an ffmpeg command's input and output files (bytes in, out)
    )
    event = run_invocation(invocation)
    if event.get("registration_error"):
        print(f"tracekit wrap: warning: {event['registration_error']}; its event holds its exact totals",
              file=sys.stderr)  # fmt: skip
    return shell_exit_code(event["status"])


def _cmd_ffmpeg(args: argparse.Namespace) -> int:
    from tracekit.adapters.ffmpeg import transcode
    from tracekit.adapters.ffmpeg_argv import TranscodeSettings
    from tracekit.invocation import shell_exit_code

    settings = TranscodeSettings(args.scale, args.preset, args.crf, args.threads)
    event = transcode(
        args.input,
        args.output,
        settings,
        run_id=runfolder.run_id_or_env(args.run_id),
        logs_dir=args.logs_dir,
        task_id=args.task_id,
        trace_id=args.trace_id,
        node_id=args.node_id,
    )
    if event["status"] != 0:
        print(f"tracekit ffmpeg: {args.input}: {event['error']}", file=sys.stderr)
    return shell_exit_code(event["status"])


def _cmd_inputs(args: argparse.Namespace) -> int:
    from tracekit.adapters.ffmpeg import generate_clips, plan_clips

    planned = [args.output / spec.file_name for spec in plan_clips(args.count, args.durations, args.size, args.seed, args.fps)]
    there = {p for p in planned if p.is_file() and p.stat().st_size > 0}
    clips = generate_clips(args.output, args.count, args.durations, args.size, args.seed, args.fps)
    made = [clip for clip in clips if clip not in there]
    _answer(args, "\n".join(map(str, clips)), bool(made), made=len(made), kept=len(clips) - len(made))
    return 0


def _cmd_parse(args: argparse.Namespace) -> int:
    from tracekit.trace.parse import parse_run

    if args.node_part:
        from tracekit.trace.nodeparse import check_part_folder, write_part

        if args.jsonl or args.export or args.report or args.export_option:
            raise UsageError("--jsonl, --export and --report are for the whole run's parse; a node's part is Parquet only")
        part, written = write_part(check_part_folder(args.run_dir), strict=args.strict)
        _answer(args, f"{part}: {'written' if written else 'up to date (it matches the raw files)'}", written, part=part)
        return 0
    options = _export_options(args.export_option, args.export)  # checked before the parse's work
    result = parse_run(args.run_dir, strict=args.strict, jsonl=args.jsonl)
    audit = result.audit
    print(
        f"{result.cctf_dir}: {audit['invocations']} invocations ({audit['invocations_failed']} failed), "
        f"{audit['proc_samples']} process samples on {audit['nodes']} node(s), "
        f"{audit['invocations_with_samples_pct']}% of invocations sampled, {audit['bad_lines']} skipped lines"
    )
    from tracekit.jsonl import printable

    for note in audit["notes"]:  # what was skipped or refused among them: node data may hold any bytes
        print(f"note: {printable(note)}")
    from tracekit.trace import export as formats

    # Every format is written and verified; one that cannot be (a table it needs is missing, its export does not
    # verify) is one error line and the exit status, never the end of the others.
    failed = []
    for format_name in args.export:
        out_dir = args.run_dir / format_name
        try:
            print(formats.get(format_name).export(args.run_dir, out_dir, include_failed=args.include_failed, force=True,
                                                  **options.get(format_name, {})).line)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one format's failure, whatever it is, is not the others'
            said = str(exc) if isinstance(exc, TracekitError) else f"{type(exc).__name__}: {exc}"
            print(f"tracekit parse: error: no {format_name} export: {said}", file=sys.stderr)
            failed.append(format_name)
            continue
        if _verified(format_name, out_dir, args.run_dir, prog="tracekit parse") != 0:
            failed.append(format_name)
    if failed:
        return 1  # no report over a trace some export could not hold
    if args.report:
        _reported(args.run_dir, None)
    return 0


def _export_options(given: list[str], exported: list[str]) -> dict[str, dict[str, Any]]:
    """--export-option FORMAT.OPTION=VALUE ... -> {format: {option: value}}, each converted and checked by its
    format; an error for one that is malformed or of a format not exported."""
    from tracekit.trace import export as formats

    raw: dict[str, dict[str, str]] = {}
    for text in given:
        name, dot, rest = text.partition(".")
        key, equals, value = rest.partition("=")
        if not (dot and equals and key):
            raise UsageError(f"--export-option {text!r}: give FORMAT.OPTION=VALUE, e.g. google.window_s=60")
        if name not in exported:
            raise UsageError(f"--export-option {text!r}: {name} is not exported here (--export {name})")
        raw.setdefault(name, {})[key] = value
    return {name: formats.option_values(name, values, f"--export-option {name}") for name, values in raw.items()}


def _cmd_adapt(args: argparse.Namespace) -> int:
    from tracekit.adapters.nginx import adapt_nginx_log

    report = adapt_nginx_log(args.input, args.output, args.format, args.node or runfolder.default_node_id(), args.strict)
    print(f"{args.output}: {report.events} events from {report.lines} lines of {args.input}")
    for line_no, reason in report.bad_lines[:10]:
        print(f"skipped {args.input}:{line_no}: {reason}", file=sys.stderr)
    if len(report.bad_lines) > 10:
        print(f"... and {len(report.bad_lines) - 10} more skipped lines", file=sys.stderr)
    return 0


def _add_show(commands: argparse._SubParsersAction) -> None:
    show = commands.add_parser(
        "show", help="the first rows of a trace's or an export's table, with each column's unit and meaning",
        description="Print a table's row count and its first rows, one line per column: its value, its unit and "
        "what it holds (from the columns' declarations: every table of cctf/ and of an export carries them). "
        "FILE: a Parquet file of cctf/ or of an export, or a CSV file of an export.",
        epilog="examples: tracekit show logs/test001/opendc/tasks.parquet\n"
        "          tracekit show --table --rows 5 --columns id,duration,cpu_count logs/test001/opendc/tasks.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    show.add_argument("file", type=Path, metavar="FILE")
    show.add_argument("--rows", type=int, default=1, metavar="N", help="rows to show (default 1)")
    show.add_argument("--columns", type=_column_list, metavar="A,B,...", help="only these columns, in this order")
    show.add_argument("--table", action="store_true",
                      help="the columns side by side under their names and units, one line per row")  # fmt: skip


def _cmd_show(args: argparse.Namespace) -> int:
    from tracekit.trace.show import show_lines

    print("\n".join(show_lines(args.file, args.rows, args.columns, args.table)))
    return 0


def _column_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give column names separated by commas, e.g. id,duration")
    return names


def _add_report(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="one HTML page (with PNGs) showing what happened in a parsed run",
        description="Write RUN_DIR/report/index.html: a self-contained page (images embedded, nothing fetched, "
        "readable offline) with a summary (tasks, makespan, per-node busy time and CPU, the trace audit's "
        "coverage and clock offsets), per-node CPU and memory timelines with the tasks, a Gantt chart per worker, "
        "queue backlog and placements, the longest tasks' CPU demand per OpenDC fragment next to the host "
        "samples, and HTTP request rate and latency when the run has them; the PNGs are written beside it. "
        "A missing piece gets a note in its section.",
        epilog="example: tracekit report logs/test001   (then open logs/test001/report/index.html)",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder with cctf/ (run 'tracekit parse')")
    report.add_argument("-o", "--output", type=Path, metavar="DIR", help="where to write it (default: RUN_DIR/report)")


def _cmd_report(args: argparse.Namespace) -> int:
    _reported(args.run_dir, args.output)
    return 0


def _reported(run_dir: Path, output: Path | None) -> None:
    from tracekit.report import make_report

    result = make_report(run_dir, output)
    missing = f"; {result.notes} note(s) on missing pieces" if result.notes else ""
    print(f"{result.index}: {len(result.sections)} sections, {len(result.figures)} figures "
          f"in {result.seconds:.1f} s{missing}")  # fmt: skip


def _add_compare(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="one table and page comparing runs: mean, SD and 95%% CI of each figure per point",
        description="Group the runs into points by the experiment values that differ between them (a sweep "
        "folder: its sweep.json's points), and write summary.parquet, summary.csv, summary.md (per point and "
        "figure: n, mean, sample SD, Student's t 95% confidence interval, min, max; failed runs counted apart) "
        "and report/index.html (a plot per figure against the first swept key, CI bars, links to every run's "
        "report). Figures: makespan, done tasks' duration p50/p99, busy-time balance, tasks failed, HTTP rate, "
        "success ratio and latency p50/p99/p99.9, collector CPU, contended task share; each from the run's "
        "results.json, or from its files for runs of earlier versions. Prints summary.md.",
        epilog="examples: tracekit compare logs/policies-20261207-101500   (a sweep: written into its folder); "
        "tracekit compare logs/rr-1 logs/rr-2 logs/lpt-1 logs/lpt-2 -o cmp/policies",
    )  # fmt: skip
    compare.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_SWEEP",
                         help="run folders (logs/<RUN_ID>) and/or sweep folders (logs/<SWEEP_ID>)")  # fmt: skip
    compare.add_argument("-o", "--output", type=Path, metavar="DIR",
                         help="where to write (default: the sweep's folder for one sweep folder, else a new "
                         "./compare-<YYYYmmdd-HHMMSS>/)")  # fmt: skip


def _cmd_compare(args: argparse.Namespace) -> int:
    from tracekit.sweep.compare import compare

    result = compare(args.paths, args.output)
    print("\n".join(result.lines))
    print(f"\n{result.markdown}, {result.csv.name}, {result.parquet.name}; page {result.page}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tracekit.trace import export as formats

    module = formats.get(args.format)
    parser, own = _export_parser(module)
    given = parser.parse_args(args.format_args)
    result = module.export(given.run_dir, given.output, include_failed=given.include_failed, force=given.force,
                           **{name: getattr(given, name) for name in own})  # fmt: skip
    print(result.line)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from tracekit.trace import export as formats

    parser, own = _verify_parser(formats.get(args.format))
    given = parser.parse_args(args.format_args)
    return _verified(args.format, given.out_dir, given.against, **{name: getattr(given, name) for name in own})


def _verified(format_name: str, out_dir: Path, against: Path | None, prog: str = "tracekit verify", **options: Any) -> int:
    """Verify an export; 0, or 1 after one line per violation and the error line."""
    from tracekit.trace import export as formats

    result = formats.get(format_name).verify(out_dir, against, **options)
    for violation in result.violations:
        print(violation)
    if not result.ok:
        print(f"{prog}: error: {len(result.violations)} violations in {out_dir} "
              f"(first: {result.violations[0]})", file=sys.stderr)
        return 1
    print(result.line)
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    from tracekit.node_setup import run_setup

    argv = args.setup_argv[1:] if args.setup_argv[:1] == ["--"] else args.setup_argv
    if not argv:
        raise UsageError("setup needs the command after --, e.g. tracekit setup --outputs DIR -- python3 make.py")
    ran = run_setup(argv, args.files, args.outputs, args.venv, args.again)
    _answer(args, f"setup {'ran' if ran else 'already ran on these files'}: {' '.join(argv)}", ran)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from tracekit import detach
    from tracekit.sched.worker import WorkerConfig, run_worker, stop_worker

    run_id = runfolder.run_id_or_env(args.run_id)
    folder = runfolder.run_dir(run_id, runfolder.logs_dir(args.logs_dir))
    if args.stop:
        stopped, ended = stop_worker(folder, run_id, args.grace, args.node_id)
        removed = [what for what in ended if what.startswith("container ")]
        left = f"; ended {sum(map(len, ended.values()))} processes its tasks left in their cgroups" if ended else ""
        left += f"; removed {len(removed)} containers its tasks left" if removed else ""
        _answer(args, f"worker of run {run_id} {'stopped' if stopped else 'was not running'}{left}",
                stopped is not None or bool(ended))  # fmt: skip
        return 0
    if not args.redis_url:
        raise UsageError("worker needs --redis-url redis://HOST:PORT/DB")
    config = WorkerConfig(
        node_id=args.node_id or runfolder.default_node_id(),
        run_id=runfolder.run_id_or_env(args.run_id),
        redis_url=args.redis_url,
        password_file=args.redis_password_file,
        task_key_file=args.task_key_file,
        parallel=args.parallel,
        outputs=args.outputs,
        files=args.files,
        venv=args.venv,
        logs_dir=runfolder.logs_dir(args.logs_dir),
        grace_s=args.grace,
        cpus=args.cpus,
        task_cgroups=args.task_cgroups,
    )
    if args.detach:
        from tracekit.redis_client import connect
        from tracekit.sched.signing import read_task_key

        # A wrong URL, password or key fails here, not in the background.
        connect(config.redis_url, config.password_file)
        read_task_key(config.task_key_file)
        runfolder.ensure_writable_dir(folder, "run folder")
        argv = [sys.executable, "-m", "tracekit", *[a for a in args.argv if a != "--detach"]]
        argv = [a for a in argv if a != "--json"]
        running, started = detach.start_worker(folder, run_id, argv)
        state = "started" if started else "already running"
        _answer(args, f"worker of run {run_id} on node {config.node_id} {state} (pid {running.pid}); log: {folder}",
                started, pid=running.pid)  # fmt: skip
        return 0
    return run_worker(config)


def _cmd_dispatch(args: argparse.Namespace) -> int:
    from tracekit import detach
    from tracekit.sched.dispatcher import DispatchConfig, cleanup, dispatch

    run_id = runfolder.run_id_or_env(args.run_id)
    folder = runfolder.run_dir(run_id, runfolder.logs_dir(args.logs_dir))
    if args.stop:
        stopped = detach.stop_dispatcher(folder, run_id)
        _answer(args, f"dispatcher of run {run_id} {'stopped' if stopped else 'was not running'}", stopped is not None)
        return 0
    if not args.redis_url:
        raise UsageError("dispatch needs --redis-url redis://HOST:PORT/DB")
    if args.cleanup:
        print(f"deleted {cleanup(run_id, args.redis_url, args.redis_password_file)} keys of run {run_id}")
        return 0
    if not args.nodes or (args.inputs is None) == (args.workload is None):
        raise UsageError("dispatch needs --nodes (e.g. cloud1,cloud2) and what to run: --workload FILE, "
                         "or --inputs DIR (transcodes)")  # fmt: skip
    node_id = args.node_id or runfolder.default_node_id()
    config = DispatchConfig(
        run_id=run_id,
        redis_url=args.redis_url,
        password_file=args.redis_password_file,
        task_key_file=args.task_key_file,
        nodes=tuple(n.strip() for n in args.nodes.split(",") if n.strip()),
        policy=args.policy,
        batch_size=args.batch_size,
        dribble_interval_s=args.dribble_interval,
        backlog_limit=args.backlog_limit,
        timeout_s=args.timeout,
        worker_wait_s=args.worker_wait,
        logs_dir=runfolder.logs_dir(args.logs_dir),
        node_id=node_id,
    )
    tasks = _dispatch_tasks(args, run_id, node_id)
    runfolder.ensure_writable_dir(folder, "run folder")
    with detach.dispatcher_pidfile(folder, run_id):
        result = dispatch(config, tasks)
    summary = result.summary
    unfinished = (f"{summary['unfinished']} unfinished (stopped by {summary['stopped_by']})" if summary["stopped_by"]
                  else f"{summary['timed_out']} timed out")  # fmt: skip
    notes = summary.get("notes") or []
    print(
        f"{summary['done']}/{summary['tasks']} tasks done, {summary['failed']} failed, {unfinished}; "
        f"makespan {summary['makespan_ms'] / 1000:.1f} s with {summary['policy']}"
        + (f"; {'; '.join(notes[:3])}" if notes else "")
        + (f"; {summary['rejected_records']} results entries not signed by this run's workers, ignored"
           if summary.get("rejected_records") else "")
    )
    for node, counts in sorted(summary["per_node"].items()):
        print(f"  {node}: {counts['done']} done, {counts['failed']} failed, busy {counts['busy_ms'] / 1000:.1f} s")
    return 0 if result.ok else 1


def _dispatch_tasks(args: argparse.Namespace, run_id: str, node_id: str) -> list:
    """What to dispatch: a workload file's tasks (tracekit-run writes one), or transcodes of --inputs."""
    from tracekit.workloads import PlanContext, tasks_of
    from tracekit.workloads.ffmpeg import parse_mix, plan_transcodes

    if args.workload is not None:
        try:
            document = json.loads(args.workload.read_text())
        except OSError as exc:
            raise UsageError(f"cannot read --workload {args.workload}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"--workload {args.workload}: not JSON ({exc})") from None
        return tasks_of(document, PlanContext(run_id, node_id), f"--workload {args.workload}")
    from tracekit.adapters.ffmpeg_argv import TranscodeSettings

    if args.mix and args.total is None:
        raise UsageError("--mix needs --total N (how many tasks to draw from the mix)")
    return plan_transcodes(args.inputs, TranscodeSettings(args.scale, args.preset, args.crf, args.threads),
                           parse_mix(args.mix) if args.mix else None, args.total, args.seed, node_id)  # fmt: skip


def _measure_clock(run_id: str, redis_url: str, args: argparse.Namespace, moment: str) -> str:
    """Measure and record this node's clock offset; the line that says it."""
    from tracekit.collect.clock import record_clock

    clock = record_clock(run_id, redis_url, args.redis_password_file, moment, runfolder.logs_dir(args.logs_dir))
    probe = clock[moment]
    return f"clock offset {probe['offset_ms']:+.3f} ms ± {probe['uncertainty_ms']:.3f} ms (rtt {probe['rtt_ms']:.3f} ms)"


def _cmd_clock(args: argparse.Namespace) -> int:
    print(_measure_clock(runfolder.run_id_or_env(args.run_id), args.redis_url, args, args.moment))
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    from tracekit.load.generator import LoadSpec, parse_header
    from tracekit.load.plan import parse_duration_ns, parse_rate_plan
    from tracekit.load.results import run_and_write, summary_text

    results_path, summary_path = args.output, args.summary
    if args.run_id is not None:
        folder = runfolder.run_dir(runfolder.validate_run_id(args.run_id), args.logs_dir)
        results_path = results_path or folder / runfolder.LOAD_RESULTS
        summary_path = summary_path or folder / runfolder.LOAD_SUMMARY
    if summary_path is None and results_path is not None:
        summary_path = results_path.with_name("summary.json")
    body = b""
    if args.body is not None:
        if args.body.startswith("@"):
            try:
                body = Path(args.body[1:]).read_bytes()
            except OSError as exc:
                raise UsageError(f"--body {args.body}: cannot read {args.body[1:]}: {exc.strerror}") from None
        else:
            body = args.body.encode()
    spec = LoadSpec(
        urls=tuple(args.url),
        plan=parse_rate_plan(args.rate, args.duration),
        arrival=args.arrival,
        seed=args.seed,
        warmup_ns=parse_duration_ns(args.warmup, "--warmup") if args.warmup else 0,
        method=args.method.upper(),
        body=body,
        headers=tuple(parse_header(h) for h in args.header),
        max_in_flight=args.max_in_flight,
        timeout_ns=parse_duration_ns(args.timeout, "--timeout"),
        attack=args.name,
    )

    def progress(counts: dict) -> None:
        print(f"tracekit load: {counts['elapsed_s']:.0f} s, {counts['sent']} sent, {counts['ok']} answered, "
              f"{counts['errors']} errors, {counts['dropped']} dropped, {counts['in_flight']} in flight",
              file=sys.stderr, flush=True)  # fmt: skip

    run, summary = run_and_write(spec, results_path, summary_path, None if args.quiet else progress)
    print(summary_text(summary))
    for path in (results_path, summary_path):
        if path is not None:
            print(f"written: {path}")
    if run.interrupted:
        return 130
    if not summary["sent"]:  # a plan that drew no request (Poisson arrivals at a low rate): never a silent 0
        raise TracekitError(f"no request was sent: --rate {args.rate} drew none in the load's time "
                            f"({summary['warmup_requests']} of warm-up); raise --rate or --duration")  # fmt: skip
    if not summary["status_codes"]:
        first_error = next(r.error for r in run.results if r.error and not r.warmup)
        raise TracekitError(f"no request to {', '.join(args.url)} got a response ({first_error}); is the service running there?")
    return 0


def _container_option(args: argparse.Namespace):
    """serve's --container* options as a ContainerSpec (None: on the host)."""
    from tracekit.container import ContainerSpec
    from tracekit.errors import ExperimentError

    given = (args.container_image, args.container_rootfs, args.container_runtime, args.container_option)
    if args.container is None:
        if any(given):
            raise UsageError("--container-image, --container-rootfs, --container-runtime and --container-option "
                             "need --container ENGINE")  # fmt: skip
        return None
    if bool(args.container_image) == bool(args.container_rootfs):
        raise UsageError("--container needs one of --container-image NAME and --container-rootfs PATH")
    section = {"engine": args.container, "image": args.container_image, "rootfs": args.container_rootfs,
               "runtime": args.container_runtime, "options": args.container_option}  # fmt: skip
    try:
        return ContainerSpec.from_section({k: v for k, v in section.items() if v}, "--container")
    except ExperimentError as exc:
        raise UsageError(str(exc).replace("--container.options", "--container-option")) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from tracekit.adapters.http_service import CommandService, ServiceSpec, start_command_service, start_service, stop_service

    run_id = runfolder.run_id_or_env(args.run_id)
    logs = runfolder.logs_dir(args.logs_dir)
    if args.stop:
        stopped = stop_service(run_id, logs)
        _answer(args, f"HTTP service of run {run_id}: {'stopped' if stopped else 'was not running'}", bool(stopped))
        return 0
    node_id = args.node_id or runfolder.default_node_id()
    container = _container_option(args)
    argv = args.service_argv[1:] if args.service_argv[:1] == ["--"] else args.service_argv
    if args.as_command:
        if not argv:
            raise UsageError("--command needs the service's command after --, e.g. -- python3 {files}/app.py --port {port}")
        command = CommandService(tuple(argv), run_id, logs.resolve(), node_id, args.port, args.host,
                                 args.files.resolve() if args.files else None, args.health,
                                 args.venv.resolve() if args.venv else None, args.access_log, args.access_log_format,
                                 args.cpus, container)  # fmt: skip
        running, started = start_command_service(command)
        _answer(args, f"HTTP service of run {run_id}: {'started' if started else 'already running'} (pid {running.pid}) "
                f"on http://{args.host}:{args.port}", started, pid=running.pid)  # fmt: skip
        return 0
    if argv:
        raise UsageError(f"arguments after the options ({' '.join(argv)}) need --command")
    if args.app_dir is None:
        raise UsageError("--app-dir is required to start a service (e.g. --app-dir examples/fastapi_svc), or --command")
    spec = ServiceSpec(app_dir=args.app_dir.resolve(), run_id=run_id, logs_dir=logs.resolve(),
                       node_id=node_id, port=args.port, host=args.host,
                       app=args.app, factory=not args.no_factory, workers=args.workers, next_url=args.next_url,
                       cpus=args.cpus, container=container)  # fmt: skip
    running, started = start_service(spec)
    state = "started" if started else "already running"
    _answer(args, f"HTTP service of run {run_id}: {state} (pid {running.pid}) on http://{spec.host}:{spec.port}",
            started, pid=running.pid)  # fmt: skip
    return 0


_HANDLERS = {
    "collect": _cmd_collect,
    "wrap": _cmd_wrap,
    "ffmpeg": _cmd_ffmpeg,
    "inputs": _cmd_inputs,
    "parse": _cmd_parse,
    "adapt": _cmd_adapt,
    "export": _cmd_export,
    "report": _cmd_report,
    "show": _cmd_show,
    "compare": _cmd_compare,
    "verify": _cmd_verify,
    "worker": _cmd_worker,
    "setup": _cmd_setup,
    "dispatch": _cmd_dispatch,
    "clock": _cmd_clock,
    "load": _cmd_load,
    "serve": _cmd_serve,
}


# What a shell reports for a command that SIGPIPE ended (128 + 13): its reader went away.
EXIT_READER_GONE = 141


def reader_gone() -> int:
    """stdout's reader went away (``| head``): the rest has nowhere to go, and no traceback says so."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush writes there
    except (AttributeError, OSError, ValueError):
        pass  # not a file (a test's capture)
    return EXIT_READER_GONE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # --detach re-runs it without the flag
    prog = f"tracekit {args.command}"
    try:
        code = _HANDLERS[args.command](args)
        sys.stdout.flush()  # here, where a reader that went away is caught, not at the interpreter's exit
        return code
    except BrokenPipeError:
        return reader_gone()
    except TracekitError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
