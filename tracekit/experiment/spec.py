"""Experiment files: ``experiments/X.yaml -> Experiment`` (validated, defaults applied, frozen).

input:  a YAML file and optional ``-e key.path=value`` overrides
output: an immutable ``Experiment``; or one ExperimentError line naming the
        file, the path in the YAML (``dispatch.policy``) and what is allowed

The file and each -e value are read strictly (strict_yaml: no anchors,
aliases or tags) and checked by validate against the experiment schema
(schemas/experiment.schema.json, the workload kind's part from
schemas/workloads/: tracekit.workloads.experiment_schema); its defaults fill
what the file leaves out, so the resolved experiment (``Experiment.as_dict``)
states every value a run used. The workload's section becomes its kind's
spec (``Experiment.kind``, ``Experiment.workload``).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tracekit import workloads
from tracekit.errors import ExperimentError, UsageError
from tracekit.experiment import strict_yaml, validate
from tracekit.experiment.validate import Unquoted
from tracekit.schemas import with_defaults

if TYPE_CHECKING:
    from tracekit.experiment.render import Inventory


@dataclass(frozen=True)
class Collectors:
    interval_ms: int
    match: str | None
    match_cmdline: str | None
    host: bool


@dataclass(frozen=True)
class Dispatch:
    policy: str
    batch_size: int
    dribble_interval: float
    backlog_limit: int
    timeout: float


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    inventory: str | None
    collectors: Collectors
    kind: str  # the workload's kind: a module of tracekit.workloads
    workload: Any  # that kind's spec
    section: dict[str, Any]  # its section as validated, defaults applied (what the resolved experiment states)
    dispatch: Dispatch
    parallel: int
    export_formats: tuple[str, ...]  # tracekit.trace.export's, in the order given
    include_failed: bool
    # Each format's own options (export.options), converted and checked by the format: {name: {keyword: value}}.
    export_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    export_jsonl: bool = False
    tags: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    workers_count: int | None = None  # the inventory's first N workers only (None: all)
    keep_outputs: bool = False  # the tasks' output files stay on the workers after the fetch
    sweep: dict[str, Any] | None = None  # its sweep section, defaults applied (tracekit.sweep); None: one run

    def as_dict(self) -> dict[str, Any]:
        """The resolved experiment: every value the run used; the workload as its section (defaults applied)."""
        resolved = asdict(self)
        del resolved["section"]
        if resolved["sweep"] is None:
            del resolved["sweep"]  # a run (a sweep's point too) is one run
        resolved["workload"] = copy.deepcopy(self.section)
        return resolved


# -- loading ----------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``dispatch.policy=lpt`` -> (["dispatch", "policy"], "lpt"); the value is read as YAML."""
    return _read_override(text)[:2]


def _read_override(text: str) -> tuple[list[str], Any, dict[strict_yaml.KeyPath, str]]:
    """The key path, the value, and the value's unquoted scalars YAML did not read as text."""
    path, found, value = text.partition("=")
    if not found or not path.strip():
        raise ExperimentError(f"-e {text!r}: write KEY=VALUE with a dotted key, e.g. -e dispatch.policy=lpt")
    keys = [key.strip() for key in path.split(".")]
    if not all(keys):
        raise ExperimentError(f"-e {text!r}: the key has an empty part; write a dotted key, e.g. -e dispatch.policy=lpt")
    if not value.strip():
        return keys, "", {}
    try:
        document, unquoted = strict_yaml.load(value)
    except strict_yaml.StrictYamlError as exc:
        raise ExperimentError(f"-e {text!r}: {exc}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        quoted = f"-e \"{'.'.join(keys)}='{value}'\"" if "'" not in value and '"' not in value else "quotes around the value"
        raise ExperimentError(f"-e {text!r}: the value is not valid YAML ({problem}); quote it for text: {quoted}") from None
    return keys, document, unquoted


def apply_overrides(document: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    return _apply_overrides(document, {}, overrides)[0]


def _apply_overrides(
    document: dict[str, Any], unquoted: Unquoted, overrides: list[str]
) -> tuple[dict[str, Any], Unquoted]:
    """The document and its unquoted non-text scalars, each -e applied in turn."""
    result, unquoted = copy.deepcopy(document), dict(unquoted)
    for text in overrides:
        keys, value, value_unquoted = _read_override(text)
        target = result
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ExperimentError(f"-e {text!r}: {key} is not a section")
        target[keys[-1]] = value
        replaced = tuple(keys)
        unquoted = {path: written for path, written in unquoted.items() if path[: len(replaced)] != replaced}
        for path, written in value_unquoted.items():
            unquoted[(*replaced, *path)] = (written, None if path else ".".join(keys))
    return result, unquoted


def _read_text(path: Path) -> str:
    """The file's text; at most strict_yaml.MAX_CHARS are read (a path to /dev/zero must not hang)."""
    try:
        with path.open("rb") as file:
            data = file.read(strict_yaml.MAX_CHARS * 4 + 1)  # UTF-8: up to 4 bytes a character
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read the experiment ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExperimentError(f"{path}: not UTF-8 text (byte {exc.start}); an experiment is a YAML text file") from None


def _read_yaml(path: Path) -> tuple[Any, dict[strict_yaml.KeyPath, str]]:
    try:
        return strict_yaml.load(_read_text(path))
    except strict_yaml.StrictYamlError as exc:
        raise ExperimentError(f"{path}{f':{exc.line}' if exc.line else ''}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ExperimentError(f"{path}{where}: not valid YAML: {problem}") from None


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    path = Path(path)
    document, unquoted = _read_yaml(path)
    if not isinstance(document, dict):
        raise ExperimentError(f"{path}: an experiment is a YAML mapping with at least 'name' and 'workload'")
    document, written = _apply_overrides(document, {p: (text, None) for p, text in unquoted.items()}, overrides or [])
    workload = document.get("workload")
    if isinstance(workload, dict) and len(workload) > 1:
        kinds = "; ".join(f"'{name}' ({kind.describes})" for name, kind in workloads.kinds().items())
        raise ExperimentError(f"{path}: workload: give exactly one kind, not {len(workload)}: {kinds}")
    problem = validate.schema_problem(document, written)
    if problem is None:
        schema = workloads.experiment_schema()
        sweep = document.pop("sweep", None)
        document = with_defaults(schema, document)
        document["sweep"] = None if sweep is None else with_defaults(schema["properties"]["sweep"], sweep)
        problem = validate.value_problem(document)
    if problem is not None:
        raise ExperimentError(f"{path}: {problem}")
    return build(document, str(path))


def build(document: dict[str, Any], source: str) -> Experiment:
    """A valid document (defaults applied: see load_experiment) -> Experiment."""
    [(kind, section)] = document["workload"].items()
    collectors, dispatch, export = document["collectors"], document["dispatch"], document["export"]
    return Experiment(
        name=document["name"],
        description=document["description"],
        inventory=document.get("inventory"),
        collectors=Collectors(**collectors),
        kind=kind,
        workload=workloads.kind(kind).spec(section),
        section=section,
        dispatch=Dispatch(**dispatch),
        parallel=document["workers"]["parallel"],
        export_formats=(formats := export_formats(export, source, host_samples=collectors["host"])),
        include_failed=export["include_failed"],
        export_options=export_options(export.get("options") or {}, formats, source),
        export_jsonl=export["jsonl"],
        tags=dict(document["tags"]),
        source=source,
        workers_count=document["workers"].get("count"),
        keep_outputs=document["workers"].get("keep_outputs", False),
        sweep=document.get("sweep"),
    )


def export_formats(export: dict[str, Any], source: str, host_samples: bool = True) -> tuple[str, ...]:
    """export.formats (default [opendc]), with export.opendc, the older key, still read: true adds opendc,
    false leaves it out; each format known to tracekit.trace.export."""
    from tracekit.trace.export import get, names

    opendc = export.get("opendc")
    if "formats" not in export:
        return () if opendc is False else ("opendc",)
    formats = list(export["formats"])
    unknown = [name for name in formats if name not in names()]
    if unknown:
        raise ExperimentError(f"{source}: export.formats: unknown format {unknown[0]!r}; known: {', '.join(names())}")
    if opendc is False and "opendc" in formats:
        raise ExperimentError(f"{source}: export.opendc is false but export.formats lists opendc; keep one of them")
    if opendc is True and "opendc" not in formats:
        formats.append("opendc")
    if not host_samples:  # a format whose tables come from the nodes' host samples cannot be written without them
        needing = [name for name in formats if getattr(get(name), "NEEDS_HOST_SAMPLES", False)]
        if needing:
            raise ExperimentError(f"{source}: export.formats: {needing[0]} needs the nodes' host samples, which "
                                  "collectors.host: false leaves out; set collectors.host: true or leave it out")  # fmt: skip
    return tuple(formats)


def export_options(options: dict[str, dict[str, Any]], formats: tuple[str, ...],
                   source: str) -> dict[str, dict[str, Any]]:  # fmt: skip
    """export.options: each listed format's own options as its flags take them (tracekit.trace.export)."""
    from tracekit.trace.export import option_values

    for name in options:
        if name not in formats:
            raise ExperimentError(f"{source}: export.options.{name}: {name} is not among export.formats "
                                  f"({', '.join(formats) or 'none'}); list it there or leave its options out")  # fmt: skip
    try:
        return {name: option_values(name, given, f"{source}: export.options.{name}") for name, given in options.items()}
    except UsageError as exc:
        raise ExperimentError(str(exc)) from None


def check_here(experiment: Experiment, inventory: Inventory) -> None:
    """What this machine can check of the experiment before any node is touched (the kind decides)."""
    workloads.kind(experiment.kind).check_here(experiment.workload, inventory, experiment.source)
