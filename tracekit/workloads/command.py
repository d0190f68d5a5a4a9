"""The command workload: batch tasks of any program, from a command template and parameters.

input:  ``workload.command`` (schemas/workloads/command.schema.json): an argv
        template and params (one task per combination, times count), or an
        explicit list of tasks; files, setup and requirements for the nodes
output: TaskSpecs the dispatcher places with any policy and any worker runs
        (argv, env, cwd, time-out, profile, size); what the nodes need

Placeholders ``{name}`` are replaced as plain text inside single argv
elements (and env values, cwd, profile, expect_ms): a value never becomes a
second argument, a shell word or a template, whatever it holds. Known names:
the params, ``{files}`` and ``{outputs}`` (the worker's own folders, filled in
on the node), ``{task_id}``, ``{index}`` (the task's place in the product)
and ``{repeat}`` (0 to count-1); ``{{`` and ``}}`` are literal braces, and
braces around anything else stay as they are. An unknown name is an error at
validation, before any node is touched.

Combinations come in the order of the params' names, the last name varying
fastest (an order that survives any serialization of the section); task ids
follow it (``t00000`` ...), and ``order: shuffled`` shuffles the plan with
``seed``, ids unchanged. The same section and seed give the same tasks.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from tracekit.container import ContainerSpec
from tracekit.errors import ExperimentError, UsageError
from tracekit.taskspec import WORKER_PLACEHOLDERS, TaskSpec, placeholders, render, worker_path
from tracekit.workloads.base import NodeNeeds, PlanContext, WorkloadKind, project_path

MAX_TASKS = 100_000
PROFILE_CHARS = 200  # a default profile (the argv template) is cut to this
DEFAULT_GUESS_MS = 1000.0  # a task's duration before duration-online has seen its profile, without expect_ms
TASK_NAMES = ("task_id", "index", "repeat")  # placeholders of every task beside the params


@dataclass(frozen=True)
class TaskTemplate:
    """One explicit task, or the template every combination of params fills in."""

    argv: tuple[str, ...]
    expect_ms: float | str | None = None
    profile: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    timeout: float | str | None = None


@dataclass(frozen=True)
class CommandWorkload:
    name: str
    files: str | None
    setup: tuple[str, ...] | None
    template: TaskTemplate | None  # argv + params, or
    tasks: tuple[TaskTemplate, ...] | None  # each task given
    params: tuple[tuple[str, tuple[Any, ...]], ...]  # in name order
    count: int
    requirements: str | None
    packages: tuple[str, ...]
    order: str
    seed: int
    container: ContainerSpec | None = None


def as_text(value: Any) -> str:
    """A YAML value as a task gets it: numbers as written by Python, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _duration_s(value: float | str, where: str) -> float:
    from tracekit.load.plan import parse_duration_ns

    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        try:
            seconds = parse_duration_ns(value, where) / 1e9
        except UsageError as exc:
            raise ExperimentError(str(exc)) from None
        except (ValueError, OverflowError):
            raise ExperimentError(f"{where} {value!r} is not a duration: use e.g. 60s, 500ms, 5m") from None
    if not (math.isfinite(seconds) and 0 < seconds <= 7 * 24 * 3600):
        raise ExperimentError(f"{where}: {value!r} is out of range: above 0 and at most 7 days")
    return seconds


def _template(section: dict[str, Any]) -> TaskTemplate:
    return TaskTemplate(
        argv=tuple(as_text(a) for a in section["argv"]),
        expect_ms=section.get("expect_ms"),
        profile=section.get("profile"),
        env=tuple(sorted((k, as_text(v)) for k, v in (section.get("env") or {}).items())),
        cwd=section.get("cwd"),
        timeout=section.get("timeout"),
    )


class Command(WorkloadKind):
    name = "command"
    containers = True
    describes = "batch tasks of any command through the dispatcher"
    has_tasks = True

    def problem(self, section: dict[str, Any]) -> str | None:
        """Every task planned once, here: a bad placeholder, expect_ms or time-out is found before any node."""
        try:
            spec = self.spec(section)
            self.tasks(spec, PlanContext("check"))
        except ExperimentError as exc:
            return str(exc)
        if spec.setup is not None:
            for index, arg in enumerate(spec.setup):
                try:
                    self._check_worker_only(arg, spec, f"workload.command.setup[{index}]")
                except ExperimentError as exc:
                    return str(exc)
        if spec.tasks is not None and len({task.expect_ms is None for task in spec.tasks}) > 1:
            return ("workload.command.tasks: expect_ms is on some tasks only; give it on every task or on none "
                    "(duration-online then learns their durations)")  # fmt: skip
        return None

    def spec(self, section: dict[str, Any]) -> CommandWorkload:
        explicit = section.get("tasks")
        params = section.get("params") or {}
        return CommandWorkload(
            name=section["name"],
            files=section.get("files"),
            setup=tuple(as_text(a) for a in section["setup"]) if section.get("setup") else None,
            template=None if explicit else _template(section),
            tasks=tuple(_template(t) for t in explicit) if explicit else None,
            params=tuple((name, tuple(params[name])) for name in sorted(params)),
            count=section["count"],
            requirements=section.get("requirements"),
            packages=tuple(section["packages"]),
            order=section["order"],
            seed=section["seed"],
            container=self.container(section),
        )

    def tasks(self, spec: CommandWorkload, context: PlanContext) -> list[TaskSpec]:
        if spec.tasks is not None:
            plan = [(template, {}, 0, f"workload.command.tasks[{i}]") for i, template in enumerate(spec.tasks)]
        else:
            names = [name for name, _ in spec.params]
            combinations = list(itertools.product(*(values for _, values in spec.params))) if names else [()]
            total = len(combinations) * spec.count
            if total > MAX_TASKS:
                raise ExperimentError(f"workload.command: {total:,} tasks (params' combinations times count); "
                                      f"at most {MAX_TASKS:,} in a run")  # fmt: skip
            plan = [(spec.template, dict(zip(names, combination)), repeat, "workload.command")
                    for combination in combinations for repeat in range(spec.count)]  # fmt: skip
        tasks = [self._task(spec, index, template, params, repeat, where)
                 for index, (template, params, repeat, where) in enumerate(plan)]  # fmt: skip
        if spec.order == "shuffled":
            random.Random(spec.seed).shuffle(tasks)
        return tasks

    def _task(self, spec: CommandWorkload, index: int, template: TaskTemplate, params: dict[str, Any], repeat: int,
              where: str) -> TaskSpec:  # fmt: skip
        task_id = f"t{index:05d}"
        values = {name: as_text(value) for name, value in params.items()}
        values.update(task_id=task_id, index=str(index), repeat=str(repeat))
        for placeholder in WORKER_PLACEHOLDERS:
            values[placeholder] = worker_path(placeholder)
        self._check_files_given(template, spec, where)
        argv = tuple(render(arg, values, f"{where}.argv[{i}]") for i, arg in enumerate(template.argv))
        env = tuple((name, render(value, values, f"{where}.env.{name}")) for name, value in template.env)
        cwd = render(template.cwd, values, f"{where}.cwd") if template.cwd else worker_path("outputs")
        if not (cwd.startswith("/") or cwd.startswith("\0")):
            raise ExperimentError(f"{where}.cwd: {template.cwd!r} is relative; give an absolute path or one "
                                  "under {files} or {outputs}")  # fmt: skip
        for text, at in ((" ".join(argv), "argv"), (cwd, "cwd"), *((v, f"env.{n}") for n, v in env)):
            if "\0" in text.replace("\0files\0", "").replace("\0outputs\0", ""):
                raise ExperimentError(f"{where}.{at}: a value holds a NUL byte, which no argument can")
        profile_template = template.profile or " ".join(template.argv)[:PROFILE_CHARS]
        profile = render(profile_template, values, f"{where}.profile") if template.profile else profile_template
        if template.expect_ms is None:
            size, unit_ms = 1.0, DEFAULT_GUESS_MS
        else:
            size, unit_ms = self._expect_ms(template.expect_ms, values, f"{where}.expect_ms", task_id), 1.0
        timeout_s = _duration_s(template.timeout, f"{where}.timeout") if template.timeout is not None else None
        return TaskSpec(
            task_id=task_id, argv=argv, profile=profile, size=size, unit_ms=unit_ms, env=env, cwd=cwd,
            timeout_s=timeout_s, module=spec.name, container=spec.container,
            params=(*sorted(params.items()), *((("repeat", repeat),) if spec.count > 1 else ())),
        )  # fmt: skip

    @staticmethod
    def _expect_ms(value: float | str, values: dict[str, str], where: str, task_id: str) -> float:
        text = render(value, values, where) if isinstance(value, str) else value
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and 0 <= number <= 1e12):
            raise ExperimentError(f"{where}: {value!r} gives {text!r} for task {task_id}: not a number of "
                                  "milliseconds (0 or more)")  # fmt: skip
        return number

    @staticmethod
    def _check_files_given(template: TaskTemplate, spec: CommandWorkload, where: str) -> None:
        if spec.files is not None:
            return
        texts = [*template.argv, template.cwd or "", *(v for _, v in template.env)]
        if any("files" in placeholders(text) for text in texts):
            raise ExperimentError(f"{where}: uses {{files}}, but workload.command.files names no folder to copy")

    def _check_worker_only(self, text: str, spec: CommandWorkload, where: str) -> None:
        """setup runs once per node, before any task: only the node's folders are known to it."""
        render(text, {name: "" for name in WORKER_PLACEHOLDERS}, where)
        if "files" in placeholders(text) and spec.files is None:
            raise ExperimentError(f"{where}: uses {{files}}, but workload.command.files names no folder to copy")

    def check_here(self, spec: CommandWorkload, inventory: Any, source: str) -> None:
        """The files folder and the requirements file are on this machine: there, and readable."""
        if spec.files is not None:
            folder = project_path(spec.files, source)
            if not folder.is_dir():
                raise ExperimentError(f"{source}: workload.command.files: {folder} is not a folder on this machine; "
                                      "give the folder of your task's files")  # fmt: skip
        if spec.requirements is not None:
            requirements = project_path(spec.requirements, source)
            if not requirements.is_file():
                raise ExperimentError(f"{source}: workload.command.requirements: {requirements} is not a file on "
                                      "this machine; give a pip requirements file")  # fmt: skip

    def task_count(self, spec: CommandWorkload) -> int | None:
        if spec.tasks is not None:
            return len(spec.tasks)
        return math.prod(len(values) for _, values in spec.params) * spec.count

    def node_needs(self, spec: CommandWorkload, source: str) -> NodeNeeds:
        return NodeNeeds(
            debian_packages=(*spec.packages, *(spec.container.debian_packages() if spec.container else ())),
            files=project_path(spec.files, source) if spec.files else None,
            requirements=project_path(spec.requirements, source) if spec.requirements else None,
            setup=spec.setup,
        )

    def plan_lines(self, spec: CommandWorkload, inventory: Any) -> list[str]:
        count = self.task_count(spec)
        if spec.tasks is not None:
            what = f"{count} tasks as given"
        else:
            params = ", ".join(f"{name} ({len(values)})" for name, values in spec.params) or "no params"
            what = (f"{count} tasks of {' '.join(spec.template.argv)[:120]!r}: {params}"
                    + (f", {spec.count} each" if spec.count > 1 else ""))  # fmt: skip
        extras = [f"files {spec.files}" if spec.files else "", f"setup {' '.join(spec.setup)[:80]!r}" if spec.setup else "",
                  f"requirements {spec.requirements}" if spec.requirements else "",
                  f"order shuffled (seed {spec.seed})" if spec.order == "shuffled" else "",
                  spec.container.describe() if spec.container else ""]  # fmt: skip
        return [f"workload: {what}" + "".join(f"; {e}" for e in extras if e)]


KIND = Command()
