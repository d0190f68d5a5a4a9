"""The http workload: a service on some nodes (uvicorn, traced by tracekit.adapters.http) under an open-loop load.

input:  ``workload.http`` (schemas/workloads/http.schema.json): the service's
        folder and app, its nodes (a chain or each on its own), the load
output: no tasks; the services (where each listens, its next hop) and the
        load's targets, which its playbook task files (playbooks/workloads/
        http/) start, send to and stop
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tracekit.cpuset import format_cpu_list
from tracekit.container import ContainerSpec
from tracekit.errors import ExperimentError, InventoryError, UsageError
from tracekit.workloads.base import NodeNeeds, WorkloadKind

MAX_LOAD_S = 7 * 24 * 3600  # an HTTP load's plan
MAX_WARMUP_S = 24 * 3600
MAX_REQUEST_TIMEOUT_S = 3600
MIN_RATE = 0.001  # requests per second: one every 17 minutes
MAX_PLAN_STEPS = 100
# Every request is a line of the results: a bound on the requests bounds them.
MAX_REQUESTS = 10_000_000


@dataclass(frozen=True)
class HttpLoad:
    rate: float | str  # requests per second, or a plan (tracekit.load.plan)
    duration: str | None
    arrival: str
    seed: int
    warmup: str | None
    endpoint: str
    params: dict[str, Any]
    method: str
    max_in_flight: int
    timeout: str


@dataclass(frozen=True)
class CommandService:
    """A service that is not an ASGI app Tracekit wraps: its command, its health path, its access log."""

    command: tuple[str, ...]  # {host}, {port}, {files} filled in on the node
    files: str | None
    port: int | None
    health: str
    access_log: str | None
    access_log_format: str


@dataclass(frozen=True)
class HttpWorkload:
    service: str | CommandService  # folder of the ASGI app (relative as the command kind's files, or absolute)
    app: str
    factory: bool
    workers: int
    port: int
    on: tuple[str, ...] | None  # None: every worker
    chain: bool
    load: HttpLoad
    requirements: str | None = None
    container: ContainerSpec | None = None  # the service runs in one (tracekit.container)


def http_address(host: str, values: dict[str, Any]) -> str:
    """Where the controller reaches a node's service: tracekit_http_address, else 127.0.0.1 on this
    machine, else the node's ansible_host."""
    from tracekit.experiment.render import THIS_MACHINE, machine_of

    if values.get("tracekit_http_address"):
        return str(values["tracekit_http_address"])
    if machine_of(host, values) == THIS_MACHINE:
        return "127.0.0.1"
    return str(values.get("ansible_host") or host)


def service_nodes(spec: HttpWorkload, inventory: Any) -> list[str]:
    """The nodes that run the service, in order: those it names, else every worker."""
    return list(spec.on or inventory.workers)


class Http(WorkloadKind):
    name = "http"
    describes = "a service under an open-loop load"
    task_files = ("prepare", "start", "run", "stop")
    containers = True

    def prepared_from(self, section: dict[str, Any]) -> Any:
        """Its prepare copies the service's folder to the nodes it runs on; the load is not prepared."""
        return {key: section.get(key) for key in ("service", "app", "on")}

    def problem(self, section: dict[str, Any]) -> str | None:
        try:
            problem = _load_problem(section["load"])
        except UsageError as exc:
            return str(exc)
        if problem:
            return problem
        if section.get("chain") and len(section.get("on") or ()) < 2:
            return "workload.http.chain: a chain needs at least two nodes in workload.http.on, in order"
        if section.get("chain") and isinstance(section.get("service"), dict):
            return "workload.http.chain: a chain needs the ASGI service (its next hops); a command service has none"
        try:
            container = self.container(section)
        except ExperimentError as exc:
            return str(exc)
        if container is not None and container.image and not isinstance(section.get("service"), dict):
            return ("workload.http.container: an ASGI app runs from each node's Tracekit venv, which an image does not "
                    "hold: give rootfs: / (the host's tree as an overlay), or run the service as a command")  # fmt: skip
        return None

    def spec(self, section: dict[str, Any]) -> HttpWorkload:
        load, service = section["load"], section["service"]
        if isinstance(service, dict):
            service = CommandService(tuple(str(a) for a in service["command"]), service.get("files"), service.get("port"),
                                     service.get("health", "/"), service.get("access_log"),
                                     service.get("access_log_format", "combined"))  # fmt: skip
        return HttpWorkload(
            service=service, app=section["app"], factory=section["factory"], workers=section["workers"],
            port=section["port"], on=tuple(section["on"]) if section.get("on") else None, chain=section["chain"],
            load=HttpLoad(**{**load, "params": dict(load["params"])}), requirements=section.get("requirements"),
            container=self.container(section),
        )  # fmt: skip

    def check_here(self, spec: HttpWorkload, inventory: Any, source: str) -> None:
        """The service's folder and the requirements file are on this machine."""
        from tracekit.errors import ExperimentError
        from tracekit.workloads.base import project_path

        command = spec.service if isinstance(spec.service, CommandService) else None
        if command is not None and command.files is not None and not project_path(command.files, source).is_dir():
            raise ExperimentError(f"{source}: workload.http.service.files: {project_path(command.files, source)} is not a "
                                  "folder on this machine")  # fmt: skip
        if spec.requirements is not None and not project_path(spec.requirements, source).is_file():
            raise ExperimentError(f"{source}: workload.http.requirements: {project_path(spec.requirements, source)} is "
                                  "not a file on this machine; give a pip requirements file")  # fmt: skip
        if command is not None:
            from tracekit.adapters.http_service import COMMAND_PLACEHOLDERS
            from tracekit.taskspec import render

            values = {name: "" for name in COMMAND_PLACEHOLDERS}
            for index, arg in enumerate(command.command):
                render(arg, values, f"{source}: workload.http.service.command[{index}]")
            if command.access_log:
                render(command.access_log, values, f"{source}: workload.http.service.access_log")

    def node_needs(self, spec: HttpWorkload, source: str) -> NodeNeeds:
        """Its requirements, in a venv of the service nodes; with Tracekit's packages for an ASGI app (the
        middleware runs in its process, uvicorn from that venv)."""
        from tracekit.workloads.base import project_path

        packages = spec.container.debian_packages() if spec.container is not None else ()
        if spec.requirements is None:
            return NodeNeeds(debian_packages=packages)
        return NodeNeeds(debian_packages=packages, requirements=project_path(spec.requirements, source),
                         with_tracekit=not isinstance(spec.service, CommandService))  # fmt: skip

    def variables(self, spec: HttpWorkload, inventory: Any, checkout: Path, source: str) -> dict[str, Any]:
        """The services, where each listens, its next hop, and the load's targets."""
        from tracekit.workloads.base import project_path

        nodes = service_nodes(spec, inventory)
        unknown = [n for n in nodes if n not in inventory.hosts]
        if unknown:
            raise InventoryError(f"{source}: workload.http.on: {', '.join(unknown)} not in {inventory.path} "
                                 f"(its hosts: {', '.join(inventory.hosts)})")  # fmt: skip
        command = spec.service if isinstance(spec.service, CommandService) else None
        if command is None:
            service = Path(spec.service) if Path(spec.service).is_absolute() else checkout / spec.service
            module = spec.app.partition(":")[0].replace(".", "/") + ".py"
            if not (service / module).is_file():
                raise UsageError(f"{source}: workload.http.service: {service} has no {module} (for app {spec.app})")
            service_src: str | None = str(service.resolve())
        else:
            service_src = str(project_path(command.files, source).resolve()) if command.files else None
        query = urlencode(spec.load.params)
        base_port = command.port if command is not None and command.port else spec.port
        services: dict[str, dict[str, Any]] = {}
        for index, node in enumerate(nodes):
            values = inventory.hostvars[node]
            port = int(values.get("tracekit_http_port") or base_port + index)
            address = http_address(node, values)
            cpus = inventory.cpus(node)
            services[node] = {"host": address, "port": port, "cpus": format_cpu_list(cpus) if cpus else "",
                              "url": f"http://{address}:{port}{spec.load.endpoint}" + (f"?{query}" if query else "")}  # fmt: skip
        targets = [services[n]["url"] for n in nodes]
        for index, node in enumerate(nodes):
            services[node]["next_url"] = targets[index + 1] if spec.chain and index + 1 < len(nodes) else None
        load = spec.load
        return {
            "service_src": service_src,
            "service_dir_name": Path(service_src).name if service_src else "none",
            "command": list(command.command) if command else None,
            "health": command.health if command else None,
            "access_log": command.access_log if command else None,
            "access_log_format": command.access_log_format if command else None,
            "app": spec.app,
            "factory": spec.factory,
            "workers": spec.workers,
            "nodes": services,
            "targets": targets[:1] if spec.chain else targets,
            "container": spec.container.as_message() if spec.container is not None else None,
            "load": {**load.__dict__, "rate": str(load.rate)},
        }

    def nodes(self, spec: HttpWorkload, inventory: Any) -> list[str]:
        return service_nodes(spec, inventory)

    def plan_lines(self, spec: HttpWorkload, inventory: Any) -> list[str]:
        load = spec.load
        nodes = service_nodes(spec, inventory)
        shape = " -> ".join(nodes) + " (a chain)" if spec.chain else ", ".join(nodes)
        what = (f"HTTP service {' '.join(spec.service.command)[:100]!r} (a command)" if isinstance(spec.service, CommandService)
                else f"HTTP service {spec.service} ({spec.app}, {spec.workers} worker(s))")  # fmt: skip
        return [
            f"workload: {what} on {shape}" + (f"; requirements {spec.requirements}" if spec.requirements else "")
            + (f"; {spec.container.describe()}" if spec.container else ""),
            f"load: {load.rate} req/s" + (f" for {load.duration}" if load.duration else "")
            + (f" after {load.warmup} of warm-up" if load.warmup else "")
            + f", {load.arrival} arrivals, {load.method} {load.endpoint} {load.params or ''}".rstrip(),
        ]


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} day{'s' if seconds != 86400 else ''}" if seconds >= 86400 else f"{seconds / 3600:g} h"


def _duration_s(text: str, key: str, above_zero: bool, maximum_s: float) -> float:
    """Seconds of a duration such as 30s or 1h; UsageError naming the key and the allowed range."""
    from tracekit.load.plan import parse_duration_ns

    try:
        seconds = parse_duration_ns(text, key) / 1e9
    except (ValueError, OverflowError):  # inf, nan: a float to round() that is none
        raise UsageError(f"{key} {text!r} is not a duration: use e.g. 60s, 500ms, 1m30s") from None
    if seconds > maximum_s or (above_zero and seconds <= 0):
        low = "above 0 and " if above_zero else ""
        raise UsageError(f"{key}: {text} is out of range: use {low}at most {_days(maximum_s)}")
    return seconds


def _load_problem(load: dict[str, Any]) -> str | None:
    """The load's own rules, checked now rather than when the run reaches its load (UsageError or a line)."""
    from tracekit.load.plan import MAX_RATE, parse_rate_plan

    at = "workload.http.load"
    if load["duration"] is not None:
        _duration_s(load["duration"], f"{at}.duration", True, MAX_LOAD_S)
    rate_text = str(load["rate"])
    try:
        plan = parse_rate_plan(rate_text, load["duration"], f"{at}.rate", f"{at}.duration")
    except (ValueError, OverflowError):  # a step's duration of inf or nan
        return f"{at}.rate {rate_text!r}: a step's duration is not a duration: use e.g. 50@30s,100@30s"
    if len(plan) > MAX_PLAN_STEPS:
        return f"{at}.rate: a plan of {len(plan)} steps; at most {MAX_PLAN_STEPS}"
    slowest = min(step.rate for step in plan)
    if slowest < MIN_RATE:
        return f"{at}.rate: {slowest:g} is out of range: use {MIN_RATE:g} to {MAX_RATE:,} requests/s"
    plan_s = sum(step.duration_ns for step in plan) / 1e9
    if plan_s > MAX_LOAD_S:
        return f"{at}.rate: the plan lasts {plan_s / 86400:.1f} days; at most {_days(MAX_LOAD_S)}"
    warmup_s = _duration_s(load["warmup"], f"{at}.warmup", False, MAX_WARMUP_S) if load["warmup"] is not None else 0.0
    _duration_s(load["timeout"], f"{at}.timeout", True, MAX_REQUEST_TIMEOUT_S)
    requests = warmup_s * plan[0].rate + sum(step.rate * step.duration_ns / 1e9 for step in plan)
    if requests > MAX_REQUESTS:
        return (f"{at}: {requests:,.0f} requests (rate times duration, warm-up included); at most "
                f"{MAX_REQUESTS:,} in a run: lower the rate or the duration")  # fmt: skip
    return None


KIND = Http()
