"""What a workload kind is: the contract every module of tracekit.workloads fulfils.

input:  the experiment's ``workload.<kind>`` section (validated against the
        kind's schema part, defaults applied)
output: its frozen spec; for a kind with tasks, kind-neutral ``TaskSpec``s
        the dispatcher places and any worker runs; what its nodes need; its
        lines in the plan; the variables its playbook task files read

A kind is one module here (with ``KIND = <instance>``), its schema part
``schemas/workloads/<kind>.schema.json``, and, when its nodes need more
than the generic phases give, task files ``playbooks/workloads/<kind>/
<phase>.yml`` (prepare, start, run, stop) that the phase playbooks include.
Nothing else names a kind: the scheduler places TaskSpecs, the workers run
argv, the runner asks the kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracekit.container import ContainerSpec
from tracekit.errors import TracekitError
from tracekit.schemas import inline_refs, load_schema
from tracekit.taskspec import TaskSpec


def project_path(text: str, source: str) -> Path:
    """A path an experiment gives, on this machine. A relative one is relative to the project holding
    the experiment file: its git repository, else the Tracekit checkout it is in, else its folder."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    folder = Path(source or ".").resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate / path
    from tracekit.experiment.wheelhouse import find_checkout

    try:
        checkout = find_checkout()
    except TracekitError:
        return folder / path
    return checkout / path if folder.is_relative_to(checkout) else folder / path


@dataclass(frozen=True)
class PlanContext:
    """What planning may use: the run, and the node that plans (its processes are marked with it)."""

    run_id: str
    node_id: str | None = None


@dataclass(frozen=True)
class NodeNeeds:
    """What a kind's nodes need beyond Tracekit itself, installed by the prepare phase."""

    debian_packages: tuple[str, ...] = ()
    files: Path | None = None  # a folder on this machine copied to every worker ({files} there)
    requirements: Path | None = None  # Python packages for the tasks (requirements.txt): the workload's venv
    setup: tuple[str, ...] | None = None  # argv run once per worker in prepare ({files}, {outputs} filled in)
    # The requirements live beside Tracekit's own packages (an ASGI app it wraps in its process), not alone.
    with_tracekit: bool = False


class WorkloadKind:
    """A workload kind. ``name`` is its key under ``workload:``; the methods have defaults a kind overrides."""

    name: str = ""
    describes: str = ""  # a few words: what it runs ("transcoding tasks", "a service under load")
    has_tasks: bool = False  # its work is tasks through the dispatcher and the workers
    task_files: tuple[str, ...] = ()  # phases with a task file of its own (playbooks/workloads/<kind>/<phase>.yml)
    # Its tasks (or service) may run in a container: ``container:`` (schemas/container.schema.json) is a key of
    # its section, read by ``container()``.
    containers: bool = False

    def schema(self) -> dict[str, Any]:
        """Its part of the experiment schema (the value of ``workload.<name>``), references inlined."""
        schema = inline_refs(load_schema(f"workloads/{self.name}"))
        if self.containers:
            part = {k: v for k, v in load_schema("container").items() if k not in ("$schema", "$id", "title")}
            schema["properties"]["container"] = part
        return schema

    def container(self, section: dict[str, Any]) -> ContainerSpec | None:
        """The container its tasks (or service) run in, from its validated section; None: on the host."""
        return ContainerSpec.from_section(section.get("container"), f"workload.{self.name}.container")

    def problem(self, section: dict[str, Any]) -> str | None:
        """What its schema cannot say, on its section with defaults applied: one line, or None."""
        return None

    def spec(self, section: dict[str, Any]) -> Any:
        """Its validated section as a frozen spec."""
        raise NotImplementedError

    def check_here(self, spec: Any, inventory: Any, source: str) -> None:
        """Checks of what this machine can see before any node is touched (raise ExperimentError)."""

    def dispatch_section(self, section: dict[str, Any], spec: Any, inventory: Any) -> dict[str, Any]:
        """The section the dispatcher plans from, on the controller (values only the inventory knows filled in)."""
        return section

    def tasks(self, spec: Any, context: PlanContext) -> list[TaskSpec]:
        """Its tasks, in the order they are planned (the same spec and run give the same tasks)."""
        raise NotImplementedError(f"the {self.name} workload has no tasks")

    def task_count(self, spec: Any) -> int | None:
        """How many tasks it will plan, known without planning (None: not known here)."""
        return None

    def node_needs(self, spec: Any, source: str) -> NodeNeeds:
        """What its nodes need (relative paths of the experiment ``source`` resolved: ``project_path``)."""
        return NodeNeeds()

    def nodes(self, spec: Any, inventory: Any) -> list[str]:
        """The hosts its work runs on, which get its NodeNeeds (default: every worker)."""
        return list(inventory.workers)

    def prepared_from(self, section: dict[str, Any]) -> Any:
        """What of its validated section its own prepare task file reads: two runs (a sweep's points) with
        equal NodeNeeds and equal this need the nodes prepared once. Default: all of it, when it has one."""
        return section if "prepare" in self.task_files else None

    def variables(self, spec: Any, inventory: Any, checkout: Path, source: str) -> dict[str, Any]:
        """What its playbook task files read (``tracekit_run_kind``), beside the resolved section."""
        return {}

    def plan_lines(self, spec: Any, inventory: Any) -> list[str]:
        """Its lines in the plan --dry-run prints."""
        return []
