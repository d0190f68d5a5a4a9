"""Export formats: a parsed run (cctf/) -> a workload format, one module per format in this package.

input:  a format's name (``tracekit export FORMAT``, ``tracekit parse --export FORMAT``, the experiment's
        ``export.formats``)
output: its module, found here by name: a new format is one module in this package and nothing else

A format's module (named as the format) declares:

    NAME: str                    the name on the command line and in export.formats
    TITLE, MAIN_FILES            how tracekit-run's summary names it and its main files
    TABLES: {file: pa.Schema}    its tables, every column with its unit and description (``column``):
                                 docs/columns.md and ``tracekit show`` read them
    NEEDS_HOST_SAMPLES (optional) True: it cannot be written without the nodes' host samples (the experiment
                                 refuses it with collectors.host: false)
    HELP: str                    one line for ``tracekit export --help``
    DESCRIPTION: str             what it writes, for ``tracekit export NAME --help``
    add_arguments(parser)        its own flags of ``tracekit export NAME`` (their dests: export's keywords)
    export(run_dir, out_dir, *, include_failed=False, force=False, **its flags) -> ExportResult
    add_verify_arguments(parser) its own flags of ``tracekit verify NAME``
    verify(out_dir, against=None, **its flags) -> Checked

Each reads the trace through tracekit.trace.cctf and, for a task's CPU and memory over time, through
tracekit.trace.slices (the format-neutral part every export shares). ``tracekit parse --export NAME``
(tracekit-run's parse phase) writes RUN_DIR/<NAME>/ and verifies it against the run.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from tracekit.errors import RunFolderError, UsageError


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    summary: dict[str, Any]  # what the format wrote (export.json in its folder)
    line: str  # one line for a person: what was written


@dataclass
class Checked:
    """A format's verification of an export: every violation, and the line an export without any gets."""

    violations: list[str] = field(default_factory=list)
    line: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


@cache
def names() -> list[str]:
    """Every format of this package: its modules' names (found without importing them: a command line
    that names no format does not pay for loading every exporter)."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The format ``name``; an error listing the known ones."""
    if name not in names():
        raise UsageError(f"unknown export format {name!r}; known: {', '.join(names())}")
    module = importlib.import_module(f"{__name__}.{name}")
    assert module.NAME == name, (module.__name__, module.NAME)
    return module


SUMMARY = "export.json"  # in every export's folder: the format, the run and what was written


def option_values(name: str, given: dict[str, Any], where: str) -> dict[str, Any]:
    """A format's own options (the flags its add_arguments declares, by their keyword: ``window_s`` for
    ``--window-s``) from an experiment's export.options.<name> or ``tracekit parse --export-option``, each
    converted as its flag converts it and checked by the format (its check_options, where it has one); an error
    naming ``where`` and the option for one it does not know or a value it refuses."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    module = get(name)
    module.add_arguments(parser)
    actions = {action.dest: action for action in parser._actions}
    values: dict[str, Any] = {}
    for key, value in given.items():
        action = actions.get(key)
        if action is None:
            raise UsageError(f"{where}: {name} has no option {key!r}; its options: {', '.join(actions) or 'none'}")
        if action.nargs == 0:  # a switch
            if not isinstance(value, bool) and str(value).lower() not in ("true", "false"):
                raise UsageError(f"{where}.{key}: give true or false, not {value!r}")
            values[key] = value if isinstance(value, bool) else str(value).lower() == "true"
            continue
        try:
            values[key] = action.type(str(value)) if action.type else str(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}.{key}: {value!r} is not a value of {action.option_strings[0]}") from None
    check = getattr(module, "check_options", None)
    if check is not None:
        try:
            check(values)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
    return values


def prepare_out_dir(out_dir: Path, force: bool, run_dir: Path, format_name: str) -> None:
    """An empty ``out_dir``. One that holds files is replaced when it is an earlier export of the same run
    in the same format (its export.json says so, or it is the run's own ``RUN_DIR/<format>``), else only with
    ``force``; never when it is the run folder, holds it, or is one of the run's own folders (its trace, its
    nodes' files): ``force`` would delete the run."""
    out, run = out_dir.resolve(), run_dir.resolve()
    if out == run or out in run.parents:
        raise UsageError(f"output folder {out_dir} holds the run folder {run_dir}: write the export into "
                         f"{run_dir}/{format_name} or a folder of its own")  # fmt: skip
    if out_dir.is_symlink():
        raise UsageError(f"output folder {out_dir} is a symbolic link: give the folder it leads to, or another")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"output folder {out_dir} is a file: give a folder (it is made if missing)")
    if out_dir.exists() and any(out_dir.iterdir()):
        if out.is_relative_to(run) and out.relative_to(run).parts[0] not in names():
            raise UsageError(f"output folder {out_dir} is part of the run folder {run_dir} ({run_dir}/"
                             f"{out.relative_to(run).parts[0]}), not an export: write the export into "
                             f"{run_dir}/{format_name} or a folder of its own")  # fmt: skip
        if _holds_a_run(out_dir):
            raise UsageError(f"output folder {out_dir} holds a run (a cctf/ or nodes/ folder), which --force would "
                             "delete: write the export into a folder of its own")  # fmt: skip
        if not force and not _earlier_export(out_dir, run_dir, format_name):
            raise UsageError(f"output folder {out_dir} exists and is not an earlier {format_name} export of "
                             f"{run_dir}; pass --force to replace it")  # fmt: skip
        shutil.rmtree(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot write output folder {out_dir}: {exc.strerror}") from None


def _holds_a_run(folder: Path) -> bool:
    """Whether ``folder`` is a run folder or holds one (a logs folder): a trace or nodes' files in it or in a
    folder of it."""
    marks = ("cctf", "nodes")
    if any((folder / mark).is_dir() for mark in marks):
        return True
    return any(child.is_dir() and not child.is_symlink() and any((child / mark).is_dir() for mark in marks)
               for child in folder.iterdir())  # fmt: skip


def _earlier_export(out_dir: Path, run_dir: Path, format_name: str) -> bool:
    """Whether ``out_dir`` holds an export of ``run_dir`` in ``format_name``: its export.json names the format
    and the run (an absolute path; an older export's relative one is taken from here), or it is the run's own
    ``RUN_DIR/<format>`` (a run folder moved with its exports)."""
    try:
        summary = json.loads((out_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return False
    # An export.json without a format is an OpenDC export made before there were others.
    if not isinstance(summary, dict) or summary.get("format", "opendc") != format_name:
        return False
    own_folder = out_dir.resolve() == (run_dir / format_name).resolve()
    recorded = summary.get("run_dir")
    return own_folder or (isinstance(recorded, str) and Path(recorded).resolve() == run_dir.resolve())


# -- what the format modules share (pyarrow imported where used: the command line lists formats without it) --


def column(name: str, kind: Any, unit: str, description: str, nullable: bool = False) -> Any:
    """A declared column of a format's table: its unit and what it holds in the Parquet field metadata."""
    import pyarrow as pa

    return pa.field(name, kind, nullable=nullable, metadata={"unit": unit, "description": description})


def read_trace(run_dir: Path) -> tuple[Path, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """A parsed run's cctf/ folder, its invocations and its nodes' facts; an error naming the command when
    the run is not parsed."""
    from tracekit.trace import cctf

    if not cctf.has_trace(run_dir):
        raise RunFolderError(f"{run_dir} has no cctf/ trace; run 'tracekit parse {run_dir}' first")
    trace = run_dir / cctf.CCTF
    return trace, cctf.read_records(trace, cctf.INVOCATIONS), cctf.read_nodes(trace)


def read_exported(run_dir: Path, include_failed: bool, why: str = "") -> tuple[Path, list[dict], list[dict], dict[str, dict]]:
    """A parsed run's cctf/ folder, its invocations, those every format exports (tracekit.trace.slices.exported)
    and its nodes' facts; an error when there is none to export (``why`` says what an empty export would do) or
    an exported invocation's node has no facts."""
    from tracekit.errors import TracekitError
    from tracekit.trace import cctf, slices

    trace, invocations, nodes = read_trace(run_dir)
    chosen = slices.exported(invocations, include_failed)
    if not chosen:
        raise TracekitError(f"{run_dir}: no {'invocations' if include_failed else 'successful invocations'} to "
                            f"export, warm-up left out ({len(invocations)} in the trace){why}")  # fmt: skip
    missing = sorted({r["node"] for r in chosen} - set(nodes))
    if missing:
        raise TracekitError(f"{trace}/{cctf.NODES} has no facts of node {missing[0]}; parse the run again "
                            f"(tracekit parse {run_dir})")  # fmt: skip
    return trace, invocations, chosen, nodes


def read_csv(path: Path, schema: Any) -> Any:
    """An export's CSV table without a header (Alibaba's), read as its declared columns and types."""
    import pyarrow.csv as pacsv

    return pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=schema.names),
                          convert_options=pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True))  # fmt: skip


def read_tables(out_dir: Path, declared: dict[str, Any], format_name: str, what: str, checked: Checked) -> dict[str, Any]:
    """An export's Parquet tables (file -> its declared schema), each compared with its declared columns and
    types (``what`` names them in a violation); {} after a file it cannot read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = {}
    for name, schema in declared.items():
        try:
            tables[name] = pq.read_table(out_dir / name)
        except (OSError, pa.ArrowException) as exc:
            checked.violations.append(f"{out_dir / name}: not readable as Parquet ({str(exc).splitlines()[0][:200]}); "
                                      f"export again (tracekit export {format_name} --force)")  # fmt: skip
            return {}
        found = tables[name].schema.remove_metadata()
        if [(f.name, f.type) for f in found] != [(f.name, f.type) for f in schema]:
            checked.violations.append(f"{out_dir / name}: columns differ from {what}: {found}")
    return tables


def exported_by(run_dir: Path, out_dir: Path, checked: Checked) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """For --against: the run's invocations the export in ``out_dir`` should hold (its export.json says
    whether failed ones were asked for), and that export.json; None, noted, when the run is not parsed."""
    from tracekit.trace import cctf, slices

    if not cctf.has_trace(run_dir):
        checked.violations.append(f"--against needs {run_dir / cctf.CCTF}/{cctf.INVOCATIONS} (parse, then export)")
        return None
    summary = json.loads((out_dir / SUMMARY).read_text()) if (out_dir / SUMMARY).is_file() else {}
    invocations = cctf.read_records(run_dir / cctf.CCTF, cctf.INVOCATIONS)
    return slices.exported(invocations, bool(summary.get("include_failed"))), summary
