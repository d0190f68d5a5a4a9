"""A task or service in a container: ``ContainerSpec + argv -> the engine's run command``.

input:  a workload's ``container:`` section (schemas/container.schema.json:
        engine, image or rootfs, runtime, options), the task's argv, its
        cgroup (tracekit.taskcgroup), the folders it reads and writes
output: the argv a worker (or the service role) runs instead of the task's:
        ``ENGINE [--runtime R] [--cgroup-manager cgroupfs] run --rm --name
        tk-<run>-<node>-<task>-<attempt> --cidfile F --network host ...
        (IMAGE | --rootfs PATH:O) ARGV``, every value one literal argument

The container's cgroup is made by the engine below the task's own
(``--cgroup-parent``): the task cgroup's counters hold the container's
processes, and conmon's, however they were started (the engine's client,
which the worker waits for, is only a small part of it). Environment values
never reach the engine's command line: ``--env NAME`` takes each from the
client's environment. The task's folders ({outputs}, {files}) are mounted at
the same paths, so paths in its argv hold inside; with ``rootfs`` the host's
tree is an overlay (``:O``) whose writes elsewhere are dropped with it.

Names are ``tk-<run>-<node>-...``: what a killed worker left is found and
removed by that prefix (``remove_leftovers``), by the stop phase.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracekit.errors import ExperimentError

ENGINES = ("podman", "docker")
NAME_PREFIX = "tk"
# Options Tracekit sets itself: a container given them would run elsewhere than the trace says.
RESERVED_OPTIONS = ("--rm", "--name", "--cidfile", "--cgroup-parent", "--cgroupns", "--cgroups", "--rootfs",
                    "--detach", "-d", "--env-file", "--pid", "--entrypoint")  # fmt: skip
# An OCI runtime sets the container's rlimits to the engine's defaults (1,048,576 open files for root), which
# the kernel refuses above the runtime's own hard limit without CAP_SYS_RESOURCE (a sandboxed root has it
# not), and `--ulimit host` does not help in podman 4: the container gets the worker's own limits instead,
# its processes at most podman's own (conmon runs with 32,768; root is not held to it anyway).
_RLIMITS = {"nofile": (resource.RLIMIT_NOFILE, None), "nproc": (resource.RLIMIT_NPROC, 32768)}
# How the engine client reports its own failure (podman and docker alike), not the command's.
ENGINE_FAILED = 125
# How long the engine's monitor may take, once the client returned, to remove the container and end.
SETTLE_S = 15.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class ContainerSpec:
    """What container a workload's tasks (or service) run in."""

    engine: str
    image: str | None = None
    rootfs: str | None = None
    runtime: str | None = None  # the engine's OCI runtime (podman --runtime), e.g. runc on hybrid cgroups
    options: tuple[str, ...] = ()

    @classmethod
    def from_section(cls, section: dict[str, Any] | None, where: str) -> ContainerSpec | None:
        """A validated ``container:`` section (schema checked) -> the spec; the rules the schema cannot say."""
        if not section:
            return None
        options = tuple(str(option) for option in section.get("options") or ())
        for option in options:
            flag = option.split("=", 1)[0]
            if flag in RESERVED_OPTIONS:
                raise ExperimentError(f"{where}.options: {flag} is set by Tracekit (the container's name, cgroup "
                                      "and removal are what the trace relies on); leave it out")  # fmt: skip
        if section.get("runtime") and section["engine"] != "podman":
            raise ExperimentError(f"{where}.runtime: only for engine podman (docker's runtime is its daemon's)")
        return cls(section["engine"], section.get("image"), section.get("rootfs"), section.get("runtime"), options)

    def as_message(self) -> dict[str, Any]:
        """How a task message carries it (JSON, signed with the task)."""
        return {k: v for k, v in (("engine", self.engine), ("image", self.image), ("rootfs", self.rootfs),
                                  ("runtime", self.runtime), ("options", list(self.options))) if v}  # fmt: skip

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> ContainerSpec:
        engine = data.get("engine")
        if engine not in ENGINES or bool(data.get("image")) == bool(data.get("rootfs")):
            raise ValueError(f"a task's container names no known engine and one image or rootfs: {data!r}"[:300])
        return cls(engine, data.get("image"), data.get("rootfs"), data.get("runtime"),
                   tuple(str(o) for o in data.get("options") or ()))  # fmt: skip

    def debian_packages(self) -> tuple[str, ...]:
        """What prepare installs on its nodes: podman (and the runtime asked for); docker is the user's."""
        if self.engine != "podman":
            return ()
        return ("podman", *((self.runtime,) if self.runtime in ("runc", "crun") else ()))

    def describe(self) -> str:
        """One line for the plan: ``in podman containers (rootfs /, runtime runc)``."""
        extras = [f"image {self.image}" if self.image else f"rootfs {self.rootfs}",
                  *([f"runtime {self.runtime}"] if self.runtime else []), *([" ".join(self.options)] if self.options else [])]  # fmt: skip
        return f"in {self.engine} containers ({', '.join(extras)})"

    @property
    def what(self) -> str:
        """The image, or ``rootfs:<path>``, for events and reports."""
        return self.image if self.image else f"rootfs:{self.rootfs}"


def container_name(run_id: str, node_id: str, task: str) -> str:
    """``tk-<run>-<node>-<task>``, in the characters engines allow (a hash where the ids held others)."""
    raw = f"{run_id}-{node_id}-{task}"
    safe = _UNSAFE.sub("_", raw)
    if safe != raw:
        safe = f"{safe[:100]}.{hashlib.sha256(raw.encode()).hexdigest()[:10]}"
    return f"{NAME_PREFIX}-{safe}"


def run_prefix(run_id: str, node_id: str) -> str:
    """What every container of a run's node is named with (container_name's start)."""
    return container_name(run_id, node_id, "")


def _rlimit_options(options: tuple[str, ...]) -> list[str]:
    given = {o.split("=", 1)[1].split("=", 1)[0] for o in options if o.startswith("--ulimit=")}
    given |= {options[i + 1].split("=", 1)[0] for i, o in enumerate(options[:-1]) if o == "--ulimit"}
    argv = []
    for name, (which, at_most) in _RLIMITS.items():
        if name in given:
            continue
        soft, hard = resource.getrlimit(which)
        if at_most is not None:
            soft, hard = (at_most if v == resource.RLIM_INFINITY else min(v, at_most) for v in (soft, hard))
        elif resource.RLIM_INFINITY in (soft, hard):
            continue  # nothing to stay under
        argv += ["--ulimit", f"{name}={soft}:{hard}"]
    return argv


def run_argv(
    spec: ContainerSpec,
    argv: list[str],
    *,
    name: str,
    cidfile: Path,
    cgroup_parent: str | None,
    env_names: list[str],
    cwd: str | None,
    mounts: list[str],
) -> list[str]:
    """The engine's command that runs ``argv`` in the container (every value one literal argument).

    ``cgroup_parent``: the task cgroup's path from its hierarchy's root (the container's cgroup is made
    below it). ``env_names``: variables the container takes from the client's environment. ``mounts``:
    folders mounted at the same path (read-write), those missing here skipped.
    """
    engine = [spec.engine]
    if spec.engine == "podman":
        if spec.runtime:
            engine += ["--runtime", spec.runtime]
        if cgroup_parent is not None:
            engine += ["--cgroup-manager", "cgroupfs"]  # a path as the parent, not a systemd slice
    command = [*engine, "run", "--rm", "--name", name, "--cidfile", str(cidfile), "--network", "host"]
    if cgroup_parent is not None:
        command += ["--cgroup-parent", cgroup_parent]
    command += _rlimit_options(spec.options)
    for variable in env_names:
        command += ["--env", variable]
    for folder in dict.fromkeys(mounts):  # each once, in order
        if folder and os.path.isdir(folder):
            command += ["--volume", f"{folder}:{folder}"]
    if cwd:
        command += ["--workdir", cwd]
    command += list(spec.options)
    # The image (or --rootfs and its path) last: an engine takes every argument after it as the command's.
    if spec.image:
        command.append(spec.image)
    else:
        command += ["--rootfs", f"{spec.rootfs}:O" if spec.engine == "podman" else spec.rootfs]
    return [*command, *argv]


def read_cidfile(path: Path) -> str | None:
    """The container id the engine wrote, or None (it failed before making one)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{12,128}", text) else None


def remove(engine: str, name: str, timeout_s: float = 60.0) -> None:
    """Remove the container ``name`` (running or not), when it is there: what a killed client left."""
    try:
        subprocess.run([engine, "rm", "--force", name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout_s, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        pass


def remove_leftovers(run_id: str, node_id: str, engines: tuple[str, ...] = ENGINES) -> list[str]:
    """Remove the containers of this run's node still there (a killed worker's): the names removed."""
    prefix = run_prefix(run_id, node_id)
    removed = []
    for engine in engines:
        if shutil.which(engine) is None:
            continue
        try:
            listing = subprocess.run([engine, "ps", "--all", "--format", "{{.Names}}", "--filter", f"name=^{prefix}"],
                                     stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        names = [n for n in listing.stdout.split() if n.startswith(prefix)] if listing.returncode == 0 else []
        for name in names:
            remove(engine, name)
            removed.append(f"{engine}:{name}")
    return removed
