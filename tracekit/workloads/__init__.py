"""Workload kinds: what an experiment runs. One module per kind, found here by name.

Each module of this package (but ``base``) holds ``KIND``, a
``tracekit.workloads.base.WorkloadKind``; adding a kind is adding a module
(with its schema part and, if it needs them, its playbook task files): the
registry, the experiment schema and the playbooks find it. ``experiment_schema``
is schemas/experiment.schema.json with every kind's part under ``workload``.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from functools import cache
from typing import Any

from tracekit.errors import ExperimentError
from tracekit.schemas import load_schema, with_defaults
from tracekit.taskspec import TaskSpec
from tracekit.workloads.base import NodeNeeds, PlanContext, WorkloadKind

__all__ = ["NodeNeeds", "PlanContext", "TaskSpec", "WorkloadKind", "experiment_schema", "kind", "kinds", "tasks_of"]


@cache
def kinds() -> dict[str, WorkloadKind]:
    """Every kind, by name, in name order."""
    found: dict[str, WorkloadKind] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base" or module.name.startswith("_"):
            continue
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        instance = getattr(loaded, "KIND", None)
        if not isinstance(instance, WorkloadKind) or instance.name != module.name:
            raise TypeError(f"tracekit.workloads.{module.name} must define KIND, a WorkloadKind named {module.name!r}")
        found[instance.name] = instance
    return dict(sorted(found.items()))


def kind(name: str) -> WorkloadKind:
    try:
        return kinds()[name]
    except KeyError:
        raise ExperimentError(f"unknown workload kind {name!r}: use one of {', '.join(kinds())}") from None


@cache
def experiment_schema() -> dict[str, Any]:
    """schemas/experiment.schema.json with each kind's part as ``workload.<kind>`` (exactly one of them)."""
    schema = copy.deepcopy(load_schema("experiment"))
    workload = schema["properties"]["workload"]
    # Each part as a plain subschema: its own $schema, $id and title are the part file's, not the whole's.
    workload["properties"] = {name: {k: v for k, v in kind.schema().items() if k not in ("$schema", "$id", "title")}
                              for name, kind in kinds().items()}  # fmt: skip
    return schema


def tasks_of(document: Any, context: PlanContext, where: str) -> list[TaskSpec]:
    """A workload as the dispatcher gets it, ``{"kind": ..., "section": {...}}``, -> its kind's tasks.

    The section is checked against its kind's schema part (defaults filled in)
    and rules: one written by hand gets the same checks as an experiment's. A
    member that is null is taken as absent (a resolved section writes every
    member, those not given as null).
    """
    if not isinstance(document, dict) or not isinstance(document.get("section"), dict):
        raise ExperimentError(f"{where}: a workload is a JSON object {{\"kind\": ..., \"section\": {{...}}}}")
    workload_kind = kind(str(document.get("kind")))
    schema = {k: v for k, v in workload_kind.schema().items() if k not in ("$schema", "$id")}
    section = _given(document["section"])
    from tracekit.experiment.validate import schema_problem

    # Checked as an experiment's workload section is, so that its errors read alike (workload.<kind>.<key>).
    wrapper = {"type": "object", "properties": {"workload": {"type": "object", "properties": {workload_kind.name: schema}}}}
    problem = schema_problem({"workload": {workload_kind.name: section}}, {}, wrapper)
    if problem:
        raise ExperimentError(f"{where}: {problem}")
    section = with_defaults(schema, section)
    problem = workload_kind.problem(section)
    if problem:
        raise ExperimentError(f"{where}: {problem}")
    return workload_kind.tasks(workload_kind.spec(section), context)


def _given(value: Any) -> Any:
    """``value`` without its null members, at every depth of its mappings."""
    if isinstance(value, dict):
        return {key: _given(member) for key, member in value.items() if member is not None}
    return value
