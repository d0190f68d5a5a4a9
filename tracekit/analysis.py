"""``open_run``: a run folder -> its trace as Arrow tables, its OpenDC export and its headline figures.

input:  a run folder parsed by ``tracekit parse`` (what tracekit-run's parse phase does): cctf/, and
        where the run has them opendc/, results.json, status.json, resolved.json
output: a ``Run``; every table a ``pyarrow.Table`` (``.to_pandas()`` with the ``analysis`` extra,
        ``pip install 'tracekit[analysis]'``; polars and DuckDB read Arrow as it is)

    >>> import tracekit
    >>> run = tracekit.open_run("logs/test001")
    >>> run.invocations.num_rows, run.figures["makespan_s"]
    >>> run.proc_metrics.to_pandas().groupby("task_id")["cpu_user_ms"].sum()

Tables are read when first asked for, once. A table the run did not record (no dispatcher: no
placements; no load: no requests) is an empty table; a run folder without cctf/ is an error
naming the command that makes it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.errors import RunFolderError
from tracekit.trace import cctf

OPENDC = "opendc"


@dataclass(frozen=True)
class OpenDCExport:
    """tracekit export opendc's files: the tasks, their fragments and the topology (experiment.json)."""

    path: Path
    tasks: pa.Table
    fragments: pa.Table
    experiment: dict[str, Any]


class Run:
    """One parsed run folder (``open_run``)."""

    def __init__(self, path: Path):
        self.path = path
        self.cctf_dir = path / cctf.CCTF

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def run_id(self) -> str:
        return self.path.name

    @functools.cached_property
    def status(self) -> dict[str, Any]:
        """tracekit-run's status.json ({} for a run made by hand): its state, phases, attempts."""
        return _json_object(self.path / "status.json") or {}

    @property
    def state(self) -> str | None:
        """succeeded, warning, failed, interrupted; None for a run made by hand."""
        return self.status.get("state")

    @functools.cached_property
    def experiment(self) -> dict[str, Any] | None:
        """The resolved experiment (resolved.json's ``experiment``), None for a run made by hand."""
        resolved = _json_object(self.path / "resolved.json")
        return resolved.get("experiment") if resolved else None

    @functools.cached_property
    def audit(self) -> dict[str, Any]:
        """How far to trust the trace (cctf/audit.json): counts, coverage, what was skipped and why."""
        return cctf.read_json(self.cctf_dir, cctf.AUDIT) or {}

    @functools.cached_property
    def nodes(self) -> list[dict[str, Any]]:
        """Each node's facts (cctf/nodes.json): CPUs, memory, clock offset, role."""
        return list(cctf.read_nodes(self.cctf_dir).values())

    @functools.cached_property
    def invocations(self) -> pa.Table:
        """One row per task invocation or request (cctf/invocations.jsonl)."""
        return cctf.records_table(self.cctf_dir, cctf.INVOCATIONS)

    @functools.cached_property
    def placements(self) -> pa.Table:
        """The dispatcher's placement decisions (cctf/placement_events.jsonl); empty without a dispatcher."""
        return cctf.records_table(self.cctf_dir, cctf.PLACEMENTS)

    @functools.cached_property
    def requests(self) -> pa.Table:
        """The load generator's requests (cctf/requests.jsonl); empty without tracekit load."""
        return cctf.records_table(self.cctf_dir, cctf.REQUESTS)

    def table(self, name: str, nodes: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
        """A per-node table of cctf/ (proc_metrics, host_metrics, link_metrics, task_metrics, task_slices,
        contention),
        of every node or of ``nodes``, its ``columns`` or all of them."""
        return cctf.read_table(self.cctf_dir, name, columns=columns, nodes=nodes)

    @functools.cached_property
    def proc_metrics(self) -> pa.Table:
        """Per process and sampling interval: CPU, memory, I/O, its task."""
        return self.table("proc_metrics")

    @functools.cached_property
    def host_metrics(self) -> pa.Table:
        """Per node and interval: CPU shares, memory, disk and network totals."""
        return self.table("host_metrics")

    @functools.cached_property
    def link_metrics(self) -> pa.Table:
        """Per node, interval and network interface."""
        return self.table("link_metrics")

    @functools.cached_property
    def task_metrics(self) -> pa.Table:
        """Per task in a cgroup of its own and interval: every process the task started, counted."""
        return self.table("task_metrics")

    @functools.cached_property
    def opendc(self) -> OpenDCExport:
        """The OpenDC workload tracekit-run exported (opendc/): an error naming the command when there is none."""
        folder = self.path / OPENDC
        if not (folder / "tasks.parquet").is_file():
            raise RunFolderError(f"{self.path} has no OpenDC export ({folder}/tasks.parquet); make it with "
                                 f"'tracekit export opendc {self.path} -o {folder}'")  # fmt: skip
        return OpenDCExport(folder, pq.read_table(folder / "tasks.parquet"), pq.read_table(folder / "fragments.parquet"),
                            _json_object(folder / "experiment.json") or {})  # fmt: skip

    @functools.cached_property
    def headline(self) -> dict[str, Any]:
        """The run's headline figures as tracekit-run's summary and results.json have them."""
        from tracekit.sweep.figures import run_headline

        return run_headline(self.path)

    @functools.cached_property
    def figures(self) -> dict[str, float | None]:
        """The figures a sweep compares (makespan_s, task_duration_p50_s, http_latency_p99_ms, ...; the catalogue
        is tracekit.sweep.figures.FIGURES): name -> value, None where the run did not measure it."""
        from tracekit.sweep.figures import run_figures

        return run_figures(self.path)


def open_run(path: str | Path) -> Run:
    """The run folder at ``path`` (logs/<RUN_ID>), parsed: its trace, export and figures."""
    folder = Path(path)
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a folder (a run folder is logs/<RUN_ID>)")
    if not cctf.has_trace(folder):
        raise RunFolderError(f"{folder} has no parsed trace ({folder / cctf.CCTF}/{cctf.INVOCATIONS}); make it with "
                             f"'tracekit parse {folder}'")  # fmt: skip
    return Run(folder)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: not readable as JSON ({exc})") from None


def _json_object(path: Path) -> dict[str, Any] | None:
    value = _json(path)
    return value if isinstance(value, dict) else None
