"""Where a run's files live: ``<logs dir>/<RUN_ID>/`` and the names inside it.

Every command that reads or writes a run folder resolves it here, so the
``--logs-dir`` flag, the ``TRACEKIT_LOGS_DIR`` variable and the file names are
decided in one place.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

from tracekit.errors import RunFolderError, UsageError

LOGS_DIR_ENV = "TRACEKIT_LOGS_DIR"
RUN_ID_ENV = "TRACEKIT_RUN_ID"
# The node id: a default for --node-id, and with the run id (RUN_ID_ENV) the
# mark every process Tracekit starts for a node's run carries, so that
# collectors of nodes sharing one machine, and of runs sharing a node id,
# tell their processes apart (tracekit.collect.process).
NODE_ID_ENV = "TRACEKIT_NODE_ID"
DEFAULT_LOGS_DIR = "logs"

# Raw files one node writes into its run folder.
NODE_FACTS = "node.json"  # topology: node facts and interfaces
HOST_SAMPLES = "host.csv"  # host samples, cumulative counters: one row per tick
HOST_CPU_SAMPLES = "host_cpus.csv"  # ... per tick and CPU
HOST_NET_SAMPLES = "host_net.csv"  # ... per tick and network interface
PROC_SAMPLES = "proc.csv"  # process samples, cumulative counters (CSV: the bulk of a run)
PROCESSES = "processes.jsonl"  # one record per tracked process
CGROUP_SAMPLES = "cgroup.csv"  # live task cgroups (a worker's, tracekit.taskcgroup), cumulative: one row per tick and task
COLLECTOR_EVENTS = "collector.jsonl"  # collector lifecycle and own CPU/RSS
COLLECTOR_LOG = "collector.log"
COLLECTOR_PIDFILE = "collector.pid"
PID_DIR = "pids"  # wrappers register their children here
CLOCK = "clock.json"  # this node's clock offset to the controller (tracekit clock)
TASK_CGROUPS = "task_cgroups.json"  # the worker's: the cgroups its tasks are born in, or why none (tracekit.taskcgroup)
CONTAINERS_DIR = "containers"  # a container task's id file while it runs (tracekit.container)
# Written by the dispatcher into the controller's run folder.
PLACEMENT_EVENTS = "placement_events.jsonl"  # every placement, with the state it was decided on
TERMINAL_RECORDS = "terminal_records.jsonl"  # each task's terminal record as received: what ran
DISPATCH_SUMMARY = "dispatch.json"  # counts, makespan, per-node busy time
REJECTED_ENTRIES = "rejected.jsonl"  # queue entries a worker deleted unrun: not signed by the run's dispatcher
# Written by the load generator (tracekit load --run-id) into the controller's run folder.
LOAD_RESULTS = "load/results.jsonl"  # one line per request (vegeta's JSON fields and more)
LOAD_SUMMARY = "load/summary.json"

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_name(value: str, flag: str) -> str:
    """A node id or label: a safe file-name part (it names folders and Redis keys)."""
    if not _NAME_RE.match(value):
        raise UsageError(f"{flag} {value!r} is invalid: use letters, digits, '.', '_' and '-' (e.g. cloud1)")
    return value


def validate_run_id(run_id: str | None) -> str:
    """Return ``run_id`` if it is a safe folder name; raise UsageError if not."""
    if run_id is None:
        raise UsageError(
            f"no run id: pass --run-id or set {RUN_ID_ENV} (letters, digits, '.', '_', '-')"
        )
    if run_id == "":
        raise UsageError("run id '' is empty: give letters, digits, '.', '_' and '-', e.g. 20261125T101500Z")
    if not _RUN_ID_RE.match(run_id) or ".." in run_id:
        raise UsageError(
            f"run id {run_id!r} is not a safe folder name: use letters, digits, '.', '_' "
            "and '-' (no '/', no '..', at most 128 characters), e.g. 20261125T101500Z"
        )
    return run_id


def run_id_or_env(run_id: str | None) -> str:
    """The run id given on the command line (even an empty one: an error), else the one in the environment."""
    if run_id is not None:
        return validate_run_id(run_id)
    return validate_run_id(os.environ.get(RUN_ID_ENV) or None)


def logs_dir(logs_dir_arg: str | os.PathLike | None = None) -> Path:
    """The logs folder: the argument, else ``$TRACEKIT_LOGS_DIR``, else ``./logs``."""
    chosen = logs_dir_arg or os.environ.get(LOGS_DIR_ENV) or DEFAULT_LOGS_DIR
    return Path(chosen)


def run_dir(run_id: str, logs_dir_arg: str | os.PathLike | None = None) -> Path:
    """The run folder of ``run_id`` (not created)."""
    return logs_dir(logs_dir_arg) / validate_run_id(run_id)


def ensure_writable_dir(path: Path, what: str = "folder") -> Path:
    """Create ``path`` if needed and prove that files can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise RunFolderError(
            f"cannot write {what} {str(path)!r}: {exc.strerror or exc}; "
            f"pass --logs-dir or set {LOGS_DIR_ENV} to a writable folder"
        ) from None
    return path


def default_node_id() -> str:
    """``$TRACEKIT_NODE_ID``, else the host name."""
    return os.environ.get(NODE_ID_ENV) or socket.gethostname()


def node_environment(node_id: str, run_id: str | None = None) -> dict[str, str]:
    """This process's environment with the mark of ``node_id`` (and of ``run_id``), for a child started for them."""
    environment = {**os.environ, NODE_ID_ENV: node_id}
    if run_id is not None:
        environment[RUN_ID_ENV] = run_id
    return environment


def events_file(run_folder: Path, module: str) -> Path:
    """The invocation events of one adapter module (``events.ffmpeg.jsonl``)."""
    if not re.match(r"^[A-Za-z0-9_-]+$", module):
        raise UsageError(
            f"module name {module!r} is invalid: use letters, digits, '_' or '-' (e.g. ffmpeg)"
        )
    return run_folder / f"events.{module}.jsonl"
