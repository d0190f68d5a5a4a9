"""Experiment + inventory -> what the playbooks need (extravars) and the plan a person reads.

input:  an ``Experiment`` (tracekit.experiment.spec), an inventory file
output: ``extravars`` for playbooks/experiment.yml (no secret: the Redis
        password travels as the path of a root-only file) and their text for
        ansible-playbook's ``-e @file`` (``extravars_yaml``: every string
        marked ``!unsafe``), and a ``Plan`` (phases, hosts, task count,
        policy) that --dry-run prints

The inventory is read with Ansible's own parser, so a broken inventory fails
here, before any node is touched, with the file named.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tracekit.cpuset import format_cpu_list, parse_cpu_list
from tracekit.errors import InventoryError, SetupError, UsageError
from tracekit import workloads
from tracekit.experiment.spec import Experiment
from tracekit.experiment.wheelhouse import WORKLOAD_ID, find_checkout

PHASES = ("prepare", "start", "run", "stop", "fetch", "parse")
RELEASE = "release"  # not a phase: playbooks/release.yml frees the nodes after an attempt that ended before stop
CLEAN = "clean"  # not a phase: playbooks/clean.yml removes finished runs' folders from the nodes (tracekit-run --clean)
PHASE_HOSTS = {
    "prepare": "controller:workers",
    "start": "controller:workers",
    "run": "controller",
    "stop": "controller:workers",
    "fetch": "controller:workers",
    "parse": "localhost",  # the controller's play, its tasks delegated to this machine
}


def play_phases(playbooks: Path) -> dict[str, str]:
    """Play name -> phase, from playbooks/<phase>.yml.

    tracekit-run runs the phases in one ansible-playbook call and follows
    them by the plays that start, so play names are unique across phases.
    """
    phase_of: dict[str, str] = {}
    for phase in (*PHASES, RELEASE, CLEAN):
        for play in yaml.safe_load((playbooks / f"{phase}.yml").read_text()):
            name = play["name"]
            if name in phase_of:
                raise SetupError(f"{playbooks}: play {name!r} is in both {phase_of[name]}.yml and {phase}.yml")
            phase_of[name] = phase
    return phase_of


class _UnsafeDumper(yaml.SafeDumper):
    """YAML with every string that could hold a template tagged ``!unsafe``."""


def could_be_template(text: str) -> bool:
    """What ansible-core evaluates as a template: a string holding '{{', '{%' or '{#' (anything with a '{'
    here), or one that begins with a '#jinja2:' header, which may set delimiters of its own."""
    return "{" in text or text.startswith(JINJA2_HEADER)


JINJA2_HEADER = "#jinja2:"


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    # Only a string that could be a template is tagged; others stay plain:
    # ansible-core 2.19 reads !unsafe '50' as the integer 50 and !unsafe 'on' as true.
    if could_be_template(text):
        return dumper.represent_scalar("!unsafe", text, style="'")
    return dumper.represent_str(text)


_UnsafeDumper.add_representer(str, _represent_text)


def extravars_yaml(variables: dict[str, Any]) -> str:
    """The extravars as ansible-playbook reads them from ``-e @file``: data, never templates.

    Ansible evaluates any '{{ }}' or '{% %}' in a trusted string of its
    variables (a lookup('pipe', ...) runs a command on the controller).
    Values of the experiment, of -e overrides and of the inventory are the
    user's data: every string that could be a template, key or value, is
    tagged !unsafe, so Ansible uses it as it is wherever it lands, for every
    key now and to come.
    """
    plain = json.loads(json.dumps(variables))  # Ansible's tagged str and int subclasses as plain values
    return "# tracekit-run's extravars: strings with a '{' are data (!unsafe), never templates.\n" + yaml.dump(
        plain, Dumper=_UnsafeDumper, sort_keys=True, allow_unicode=True, default_flow_style=False, width=10_000
    )


THIS_MACHINE = "this machine"
SCOPES = ("machine", "node")


def machine_of(host: str, values: dict[str, Any]) -> str:
    """Which machine an inventory host runs on, as far as the inventory tells.

    The local connection and loopback addresses are this machine; any other
    address names a machine of its own (two names of one machine are not
    detected: set tracekit_node_scope: node on them).
    """
    if values.get("ansible_connection") == "local":
        return THIS_MACHINE
    address = str(values.get("ansible_host") or host)
    if address in ("localhost", "::1") or address.startswith("127."):
        return THIS_MACHINE
    return address


@dataclass(frozen=True)
class Inventory:
    path: Path
    controller: str
    workers: tuple[str, ...]
    hostvars: dict[str, dict[str, Any]]

    @property
    def hosts(self) -> tuple[str, ...]:
        return (self.controller, *self.workers)

    def sharing(self, host: str) -> tuple[str, ...]:
        """The other hosts on ``host``'s machine."""
        machine = machine_of(host, self.hostvars[host])
        return tuple(h for h in self.hosts if h != host and machine_of(h, self.hostvars[h]) == machine)

    def scope(self, host: str) -> str:
        """'node' where the host shares its machine (or the inventory says so), else 'machine'.

        With 'node', its collector follows only processes started for it
        (tracekit.collect.process), never another node's on the same machine.
        """
        return self.hostvars[host].get("tracekit_node_scope") or ("node" if self.sharing(host) else "machine")

    def cpus(self, host: str) -> tuple[int, ...] | None:
        """The host's own CPUs (tracekit_node_cpus), or None."""
        text = self.hostvars[host].get("tracekit_node_cpus")
        return parse_cpu_list(text, "tracekit_node_cpus") if text not in (None, "") else None

    def first_workers(self, count: int | None, source: str) -> Inventory:
        """This inventory with only its first ``count`` workers (workers.count; None: all of them)."""
        if count is None or count == len(self.workers):
            return self
        if count > len(self.workers):
            raise InventoryError(
                f"{source}: workers.count is {count} but {self.path} has {len(self.workers)} worker(s) "
                f"({', '.join(self.workers)}); give at most {len(self.workers)} or add workers to the inventory"
            )
        return dataclasses.replace(self, workers=self.workers[:count])

    def redis_address(self) -> tuple[str, int] | None:
        """The controller's Redis host and port when the inventory states them plainly."""
        values = self.hostvars.get(self.controller, {})
        bind, port = values.get("tracekit_redis_bind", "127.0.0.1"), values.get("tracekit_redis_port", 6379)
        if "{{" in str(bind) or "{{" in str(port):
            return None
        return str(bind), int(port)


def _inventory_manager(path: Path) -> Any:
    return _ansible_inventory(path)[0]


def _ansible_inventory(path: Path) -> tuple[Any, Callable[[Any], dict[str, Any]]]:
    """Ansible's own reading of the inventory, and a host's variables as a play sees them from it: its
    own, its groups', and those of group_vars/ and host_vars/ beside the inventory file (vars plugins)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.utils.display import Display
    from ansible.vars.manager import VariableManager

    Display().verbosity = 0
    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=manager)
    return manager, lambda host: dict(variables.get_vars(host=host, include_hostvars=False))


# Inventory variables whose values are kept out of the run folder.
SECRET_NAME = re.compile(r"pass(word)?|secret|token|_key$", re.IGNORECASE)
REMOVED = "(removed)"


def inventory_without_secrets(path: Path) -> str:
    """The inventory as Ansible read it (YAML, INI, a flow mapping: any format it reads), as YAML,
    with every password-like value removed: what the run folder keeps as inventory.yml."""
    manager = _inventory_manager(path)

    def plain(value: Any, key: str = "") -> Any:
        if SECRET_NAME.search(key) or type(value).__name__ == "AnsibleVaultEncryptedUnicode":
            return REMOVED
        if isinstance(value, dict):
            return {str(k): plain(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        for kind in (bool, int, float):  # Ansible's tagged subclasses, as plain values
            if isinstance(value, kind):
                return kind(value)
        return None if value is None else str(value)

    def own_vars(host: Any) -> dict[str, Any]:
        return {k: v for k, v in host.vars.items() if k not in ("inventory_file", "inventory_dir")}  # Ansible's own

    def group_document(group: Any) -> dict[str, Any]:
        document: dict[str, Any] = {}
        if group.vars:
            document["vars"] = plain(dict(group.vars))
        if group.hosts:
            document["hosts"] = {str(host.name): plain(own_vars(host)) or None for host in group.hosts}
        children = {str(child.name): group_document(child) for child in sorted(group.child_groups, key=lambda g: g.name)}
        children = {name: child for name, child in children.items() if child}  # 'ungrouped', when empty
        if children:
            document["children"] = children
        return document

    header = f"# The inventory of this run as Ansible read it from {path}; password-like values removed.\n"
    return header + yaml.safe_dump({"all": group_document(manager.groups["all"])}, sort_keys=False)


def read_inventory(path: Path) -> Inventory:
    """Parse with Ansible; require one controller and at least one worker, each with a node root."""
    if not path.is_file():
        raise InventoryError(f"{path}: no such inventory file; give -i inventory/local.yml or a copy of inventory/cluster.example.yml")
    manager, host_variables = _ansible_inventory(path)
    groups = manager.get_groups_dict()
    if not manager.hosts and not [h for g in groups.values() for h in g]:
        raise InventoryError(f"{path}: Ansible found no host in it; check its YAML (groups 'controller' and 'workers')")
    controllers, workers = groups.get("controller", []), groups.get("workers", [])
    if len(controllers) != 1:
        raise InventoryError(
            f"{path}: group 'controller' must hold exactly one host (found {len(controllers)}: {', '.join(controllers) or 'none'})"
        )
    if not workers:
        raise InventoryError(f"{path}: group 'workers' holds no host; add at least one worker node")
    if controllers[0] in workers:
        raise InventoryError(f"{path}: {controllers[0]} is both the controller and a worker; give it one role")
    hostvars = {}
    for name in (*controllers, *workers):
        values = host_variables(manager.get_host(name))
        if not values.get("tracekit_node_root"):
            raise InventoryError(f"{path}: host {name} has no tracekit_node_root (the node's own folder); set it in the inventory")
        _refuse_templates(path, name, values)
        _check_host_values(path, name, values)
        hostvars[name] = values
    inventory = Inventory(path.resolve(), controllers[0], tuple(workers), hostvars)
    _check_cpus_of_shared_machines(path, inventory)
    return inventory


_TEMPLATE_MARK = re.compile(r"\{\{|\{%|\{#")


def _is_template(text: str) -> bool:
    return text.startswith(JINJA2_HEADER) or bool(_TEMPLATE_MARK.search(text))


def _refuse_templates(path: Path, host: str, values: dict[str, Any]) -> None:
    """An inventory value is data: one that Ansible would evaluate as a template is refused.

    Ansible evaluates '{{ }}', '{% %}' in any variable of the inventory when a
    play uses it (a lookup('pipe', ...) runs a command on the controller).
    A value tagged !unsafe in the inventory is Ansible's own mark of data:
    kept as it is, never evaluated.
    """

    from ansible.template import is_trusted_as_template  # ansible-core 2.19: what it would evaluate

    def templates(value: Any, key: str) -> str | None:
        if isinstance(value, str):
            return key if is_trusted_as_template(value) and _is_template(value) else None
        if isinstance(value, dict):
            return next((k for k2, v in value.items() if (k := templates(v, f"{key}.{k2}"))), None)
        if isinstance(value, (list, tuple)):
            return next((k for i, v in enumerate(value) if (k := templates(v, f"{key}[{i}]"))), None)
        return None

    for name, value in values.items():
        where = templates(value, name)
        if where:
            raise InventoryError(
                f"{path}: host {host}: {where} holds a template ('{{{{', '{{%', '{{#' or a '#jinja2:' header); "
                "tracekit-run takes inventory "
                "values as data: write the value itself, or tag it !unsafe to keep the braces as text"
            )


def _check_host_values(path: Path, host: str, values: dict[str, Any]) -> None:
    """The Tracekit variables of one host, checked before any node is touched."""
    port = values.get("tracekit_redis_port")
    if port is not None and "{{" not in str(port):
        if not (str(port).isdigit() and 1 <= int(port) <= 65535):
            raise InventoryError(f"{path}: host {host}: tracekit_redis_port {port!r} is not a TCP port (1 to 65535)")
    scope = values.get("tracekit_node_scope")
    if scope is not None and scope not in SCOPES:
        raise InventoryError(f"{path}: host {host}: tracekit_node_scope {scope!r} is not one of {', '.join(SCOPES)}")
    cpus = values.get("tracekit_node_cpus")
    if cpus not in (None, ""):
        try:
            parse_cpu_list(cpus, "tracekit_node_cpus")
        except UsageError as exc:
            raise InventoryError(f"{path}: host {host}: {exc}") from None


def _check_cpus_of_shared_machines(path: Path, inventory: Inventory) -> None:
    """Nodes on one machine that were given CPUs must not be given the same ones."""
    for host in inventory.hosts:
        mine = set(inventory.cpus(host) or ())
        for other in inventory.sharing(host):
            common = mine & set(inventory.cpus(other) or ())
            if common and inventory.hosts.index(other) > inventory.hosts.index(host):
                raise InventoryError(
                    f"{path}: {host} and {other} share a machine and both have CPU {format_cpu_list(common)} "
                    "in tracekit_node_cpus; give each node CPUs of its own"
                )


def task_count(experiment: Experiment) -> int | None:
    """How many tasks the dispatcher will plan (None: not known here, or no tasks)."""
    kind = workloads.kind(experiment.kind)
    return kind.task_count(experiment.workload) if kind.has_tasks else None


def extravars(
    experiment: Experiment,
    run_id: str,
    run_dir: Path,
    wheelhouse: Path,
    secret_file: Path,
    python: str,
    inventory: Inventory,
    checkout: Path | None = None,
    workload_wheels: Path | None = None,
) -> dict[str, Any]:
    kind = workloads.kind(experiment.kind)
    resolved = experiment.as_dict()
    section = resolved["workload"]
    return {
        # What the workload's nodes need, which the generic prepare gives them (roles/tracekit_workload).
        "tracekit_run_needs": {**needs_variables(kind.node_needs(experiment.workload, experiment.source), workload_wheels),
                               "hosts": kind.nodes(experiment.workload, inventory)},
        # The workload's kind, its resolved section and what its task files read
        # (playbooks/workloads/<kind>/<phase>.yml, for the phases it has one).
        "tracekit_run_workload_kind": experiment.kind,
        "tracekit_run_workload": section,
        "tracekit_run_kind": kind.variables(experiment.workload, inventory, checkout or find_checkout(), experiment.source),
        "tracekit_run_kind_task_files": list(kind.task_files),
        # A kind with tasks: the workers and the dispatcher run, which plans from this (on the controller).
        "tracekit_run_has_tasks": kind.has_tasks,
        "tracekit_run_dispatch_workload": {"kind": experiment.kind,
                                           "section": kind.dispatch_section(section, experiment.workload, inventory)}
        if kind.has_tasks else None,
        "tracekit_run_id": run_id,
        # The nodes are held (tracekit_lock) and prepared under these ids: the run's own, or its sweep's.
        "tracekit_run_lock_id": run_id,
        "tracekit_run_prepared_id": run_id,
        # The workers the dispatcher places on (the inventory's, or its first workers.count).
        "tracekit_run_workers": list(inventory.workers),
        "tracekit_run_dir": str(run_dir),
        "tracekit_run_wheelhouse": str(wheelhouse),
        "tracekit_run_secret_file": str(secret_file),
        "tracekit_run_python": python,
        "tracekit_run_collectors": resolved["collectors"],
        "tracekit_run_dispatch": resolved["dispatch"],
        "tracekit_run_parallel": experiment.parallel,
        "tracekit_run_keep_outputs": experiment.keep_outputs,
        "tracekit_run_export": {
            "formats": list(experiment.export_formats),
            "include_failed": experiment.include_failed,
            "jsonl": experiment.export_jsonl,
            # Each format's own options as parse's arguments (numbers and switches the format has checked).
            "option_args": [f"--export-option={name}.{key}={value}" for name, given in experiment.export_options.items()
                            for key, value in given.items()],  # fmt: skip
        },
        # Per node: which processes its collector may follow (node where nodes share a machine).
        "tracekit_run_node_scopes": {host: inventory.scope(host) for host in inventory.hosts},
    }


def needs_variables(needs: workloads.NodeNeeds, wheels: Path | None) -> dict[str, Any]:
    """A kind's NodeNeeds as the prepare and start plays read them; ``wheels``: its requirements built
    (tracekit.experiment.wheelhouse.build_workload_wheels), when it has some (stop and fetch need none)."""
    built = needs.requirements is not None and wheels is not None
    return {
        "packages": list(needs.debian_packages),
        "files_src": str(needs.files) if needs.files else None,
        "setup": list(needs.setup) if needs.setup else None,
        "wheels": str(wheels) if built else None,
        "venv_id": (wheels / WORKLOAD_ID).read_text().strip() if built else None,
        "with_tracekit": needs.with_tracekit,
    }


@dataclass(frozen=True)
class Plan:
    run_id: str
    experiment: Experiment
    inventory: Inventory
    phases: tuple[str, ...]

    def lines(self) -> list[str]:
        lines = [
            f"run {self.run_id}: experiment {self.experiment.name!r} ({self.experiment.source})",
            f"inventory {self.inventory.path}: controller {self.inventory.controller}, "
            f"workers {', '.join(self.inventory.workers)}",
            *self._workload_lines(),
            *self._sharing_lines(),
            "phases:",
        ]
        for phase in self.phases:
            hosts = PHASE_HOSTS[phase]
            named = {
                "controller:workers": ", ".join(self.inventory.hosts),
                "controller": self.inventory.controller,
                "localhost": "this machine",
            }[hosts]
            lines.append(f"  {phase:<8} {named}")
        return lines

    def _workload_lines(self) -> list[str]:
        """The kind's own lines; for a kind with tasks, how the dispatcher places them."""
        experiment = self.experiment
        kind = workloads.kind(experiment.kind)
        lines = kind.plan_lines(experiment.workload, self.inventory)
        if kind.has_tasks:
            dispatch = experiment.dispatch
            lines.append(f"dispatch: policy {dispatch.policy}, batch {dispatch.batch_size}, dribble "
                         f"{dispatch.dribble_interval} s, backlog limit {dispatch.backlog_limit}, timeout "
                         f"{dispatch.timeout:g} s; {experiment.parallel} slot(s) per worker")  # fmt: skip
        return lines

    def _sharing_lines(self) -> list[str]:
        """Nodes that share a machine: their collectors' scope and their CPUs."""
        inventory = self.inventory
        shared = [h for h in inventory.hosts if inventory.sharing(h)]
        if not shared:
            return []
        cpus = ", ".join(
            f"{h} {format_cpu_list(inventory.cpus(h))}" if inventory.cpus(h) else f"{h} any" for h in shared
        )
        return [
            f"nodes sharing a machine: {', '.join(shared)}; each collector follows its own node's processes; CPUs: {cpus}"
        ]
