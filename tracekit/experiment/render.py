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

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from tracekit.cpuset import format_cpu_list, parse_cpu_list
from tracekit.errors import InventoryError, SetupError, UsageError
from tracekit.experiment.spec import Experiment, FfmpegWorkload, HttpWorkload
from tracekit.experiment.wheelhouse import find_checkout

PHASES = ("prepare", "start", "run", "stop", "fetch", "parse")
RELEASE = "release"  # not a phase: playbooks/release.yml frees the nodes after an attempt that ended before stop
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
    for phase in (*PHASES, RELEASE):
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


def generated_inputs_name(experiment: Experiment) -> str | None:
    """Folder name of the generated clips: the same clips get the same folder on every run."""
    if not isinstance(experiment.workload, FfmpegWorkload):
        return None
    generate = experiment.workload.generate
    if generate is None:
        return None
    key = json.dumps([generate.count, list(generate.durations), generate.size, generate.seed])
    return f"clips-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def task_count(experiment: Experiment) -> int | None:
    """How many tasks the dispatcher will plan (None: one per file of a folder not visible here, or no dispatcher)."""
    workload = experiment.workload
    if not isinstance(workload, FfmpegWorkload):
        return None
    if workload.total is not None:
        return workload.total
    if workload.generate is not None:
        return workload.generate.count
    folder = Path(workload.inputs or "")
    if folder.is_dir():
        return sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return None


def extravars(
    experiment: Experiment,
    run_id: str,
    run_dir: Path,
    wheelhouse: Path,
    secret_file: Path,
    python: str,
    inventory: Inventory,
    checkout: Path | None = None,
) -> dict[str, Any]:
    workload = experiment.workload
    resolved = experiment.as_dict()
    workload_vars = dict(resolved["workload"])
    http_vars = None
    if isinstance(workload, HttpWorkload):
        http_vars = http_services(experiment, inventory, checkout or find_checkout())
    else:
        if workload.inputs is not None and not Path(workload.inputs).is_absolute():
            raise UsageError(
                f"{experiment.source}: workload.ffmpeg.inputs: {workload.inputs!r} must be an absolute path "
                "(the same folder on every node)"
            )
        workload_vars["generated_name"] = generated_inputs_name(experiment)
    return {
        "tracekit_run_workload_kind": experiment.kind,
        "tracekit_run_http": http_vars,
        "tracekit_run_id": run_id,
        "tracekit_run_dir": str(run_dir),
        "tracekit_run_wheelhouse": str(wheelhouse),
        "tracekit_run_secret_file": str(secret_file),
        "tracekit_run_python": python,
        "tracekit_run_collectors": resolved["collectors"],
        "tracekit_run_workload": workload_vars,
        "tracekit_run_dispatch": resolved["dispatch"],
        "tracekit_run_parallel": experiment.parallel,
        "tracekit_run_export": {
            "opendc": experiment.export_opendc,
            "include_failed": experiment.include_failed,
            "jsonl": experiment.export_jsonl,
        },
        # Per node: which processes its collector may follow (node where nodes share a machine).
        "tracekit_run_node_scopes": {host: inventory.scope(host) for host in inventory.hosts},
    }


def http_address(host: str, values: dict[str, Any]) -> str:
    """Where the controller reaches a node's service: tracekit_http_address, else 127.0.0.1 on this
    machine, else the node's ansible_host."""
    if values.get("tracekit_http_address"):
        return str(values["tracekit_http_address"])
    if machine_of(host, values) == THIS_MACHINE:
        return "127.0.0.1"
    return str(values.get("ansible_host") or host)


def service_nodes(workload: HttpWorkload, inventory: Inventory) -> list[str]:
    """The nodes that run an HTTP workload's service, in order: those it names, else every worker."""
    return list(workload.on or inventory.workers)


def http_services(experiment: Experiment, inventory: Inventory, checkout: Path) -> dict[str, Any]:
    """The HTTP workload's services, where each listens, its next hop, and the load's targets."""
    workload = experiment.workload
    nodes = service_nodes(workload, inventory)
    unknown = [n for n in nodes if n not in inventory.hosts]
    if unknown:
        raise InventoryError(
            f"{experiment.source}: workload.http.on: {', '.join(unknown)} not in {inventory.path} "
            f"(its hosts: {', '.join(inventory.hosts)})"
        )
    service = Path(workload.service) if Path(workload.service).is_absolute() else checkout / workload.service
    module = workload.app.partition(":")[0].replace(".", "/") + ".py"
    if not (service / module).is_file():
        raise UsageError(f"{experiment.source}: workload.http.service: {service} has no {module} (for app {workload.app})")
    query = urlencode(workload.load.params)
    services: dict[str, dict[str, Any]] = {}
    for index, node in enumerate(nodes):
        values = inventory.hostvars[node]
        port = int(values.get("tracekit_http_port") or workload.port + index)
        address = http_address(node, values)
        cpus = inventory.cpus(node)
        services[node] = {"host": address, "port": port, "cpus": format_cpu_list(cpus) if cpus else "",
                          "url": f"http://{address}:{port}{workload.load.endpoint}" + (f"?{query}" if query else "")}  # fmt: skip
    targets = [services[n]["url"] for n in nodes]
    for index, node in enumerate(nodes):
        services[node]["next_url"] = targets[index + 1] if workload.chain and index + 1 < len(nodes) else None
    return {
        "service_src": str(service.resolve()),
        "app": workload.app,
        "factory": workload.factory,
        "workers": workload.workers,
        "nodes": services,
        "targets": targets[:1] if workload.chain else targets,
        "load": {**experiment.as_dict()["workload"]["load"], "rate": str(workload.load.rate)},
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
            *(self._http_lines() if self.experiment.kind == "http" else self._ffmpeg_lines()),
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

    def _ffmpeg_lines(self) -> list[str]:
        tasks = task_count(self.experiment)
        workload = self.experiment.workload
        source = (
            f"{workload.generate.count} generated clips ({workload.generate.size}, durations "
            f"{','.join(map(str, workload.generate.durations))} s)"
            if workload.generate
            else f"inputs from {workload.inputs}"
        )
        dispatch = self.experiment.dispatch
        return [
            f"workload: {tasks if tasks is not None else 'one per input'} tasks from {source}, "
            f"transcode {workload.transcode.scale} {workload.transcode.preset} crf {workload.transcode.crf}"
            + (f", mix {workload.mix}" if workload.mix else ""),
            f"dispatch: policy {dispatch.policy}, batch {dispatch.batch_size}, dribble {dispatch.dribble_interval} s, "
            f"backlog limit {dispatch.backlog_limit}, timeout {dispatch.timeout:g} s; "
            f"{self.experiment.parallel} slot(s) per worker",
        ]

    def _http_lines(self) -> list[str]:
        workload = self.experiment.workload
        load = workload.load
        nodes = service_nodes(workload, self.inventory)
        shape = " -> ".join(nodes) + " (a chain)" if workload.chain else ", ".join(nodes)
        return [
            f"workload: HTTP service {workload.service} ({workload.app}, {workload.workers} worker(s)) on {shape}",
            f"load: {load.rate} req/s" + (f" for {load.duration}" if load.duration else "")
            + (f" after {load.warmup} of warm-up" if load.warmup else "")
            + f", {load.arrival} arrivals, {load.method} {load.endpoint} {load.params or ''}".rstrip(),
        ]

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
