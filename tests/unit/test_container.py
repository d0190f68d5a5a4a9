"""A task or service in a container: the engine's command, the experiment's key, what a worker is sent."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from tracekit import workloads
from tracekit.container import ContainerSpec, container_name, read_cidfile, run_argv, run_prefix
from tracekit.errors import ExperimentError
from tracekit.experiment.spec import load_experiment
from tracekit.workloads import PlanContext

REPO = Path(__file__).resolve().parents[2]


def _argv(spec: ContainerSpec, argv: list[str], tmp_path: Path, **given) -> list[str]:
    options = {"name": "tk-r1-cloud1-t1-1", "cidfile": tmp_path / "c.cid", "cgroup_parent": "/tracekit/r1/cloud1.ab/t1-1",
               "env_names": ["OMP_NUM_THREADS", "TRACEKIT_NODE_ID"], "cwd": str(tmp_path), "mounts": [str(tmp_path)]}  # fmt: skip
    options.update(given)
    return run_argv(spec, argv, **options)


def test_the_engine_command_holds_every_value_as_one_argument_and_the_image_last(tmp_path):
    spec = ContainerSpec("podman", rootfs="/", runtime="runc", options=("--memory", "512m"))
    task = ["sh", "-c", "echo $HOME; rm -rf /", "{{ lookup('pipe', 'id') }}"]
    argv = _argv(spec, task, tmp_path)
    assert argv[:6] == ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "run"]
    # The task's argv after the root, untouched: an engine takes everything after it as the command.
    assert argv[-len(task):] == task and argv[-len(task) - 2:-len(task)] == ["--rootfs", "/:O"]
    assert argv[argv.index("--name") + 1] == "tk-r1-cloud1-t1-1" and "--rm" in argv
    assert argv[argv.index("--cgroup-parent") + 1] == "/tracekit/r1/cloud1.ab/t1-1"
    assert argv[argv.index("--cidfile") + 1] == str(tmp_path / "c.cid")
    assert argv[argv.index("--workdir") + 1] == str(tmp_path)
    assert argv[argv.index("--volume") + 1] == f"{tmp_path}:{tmp_path}"
    assert argv.index("--memory") < argv.index("--rootfs")  # the user's options are the engine's, not the task's
    # Environment variables by name only: their values never reach a command line.
    names = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert names == ["OMP_NUM_THREADS", "TRACEKIT_NODE_ID"] and not any("=" in n for n in names)


def test_an_image_is_the_last_argument_before_the_task_and_docker_gets_no_podman_options(tmp_path):
    argv = _argv(ContainerSpec("docker", image="localhost/ff:1"), ["ffmpeg", "-version"], tmp_path)
    assert argv[:2] == ["docker", "run"] and argv[-3:] == ["localhost/ff:1", "ffmpeg", "-version"]
    assert "--cgroup-manager" not in argv and "--rootfs" not in argv


def test_the_container_gets_the_worker_s_own_limits_unless_its_options_give_them(tmp_path):
    argv = _argv(ContainerSpec("podman", rootfs="/"), ["true"], tmp_path)
    limits = [argv[i + 1] for i, a in enumerate(argv) if a == "--ulimit"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if resource.RLIM_INFINITY not in (soft, hard):
        assert f"nofile={soft}:{hard}" in limits
    nproc = [limit for limit in limits if limit.startswith("nproc=")]
    assert len(nproc) == 1 and all(int(v) <= 32768 for v in nproc[0].split("=")[1].split(":"))
    given = _argv(ContainerSpec("podman", rootfs="/", options=("--ulimit", "nofile=64:64")), ["true"], tmp_path)
    assert [a for a in given if a.startswith("nofile=")] == ["nofile=64:64"]


def test_missing_mounts_and_no_cgroup_are_left_out(tmp_path):
    argv = _argv(ContainerSpec("podman", rootfs="/"), ["true"], tmp_path, cgroup_parent=None,
                 mounts=[str(tmp_path / "absent"), str(tmp_path), str(tmp_path)])  # fmt: skip
    assert "--cgroup-parent" not in argv and "--cgroup-manager" not in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"] == [f"{tmp_path}:{tmp_path}"]


def test_names_are_what_engines_allow_and_share_the_run_s_prefix():
    assert container_name("r1", "cloud1", "t00000-1") == "tk-r1-cloud1-t00000-1"
    odd = container_name("r1", "cloud1", "a task/with spaces-1")
    assert odd.startswith(run_prefix("r1", "cloud1")) and " " not in odd and "/" not in odd
    assert odd != container_name("r1", "cloud1", "a task_with spaces-1")  # a hash keeps them apart


def test_a_cid_file_gives_the_container_s_id_or_none(tmp_path):
    cid = tmp_path / "c.cid"
    assert read_cidfile(cid) is None
    cid.write_text("f" * 64)
    assert read_cidfile(cid) == "f" * 64
    cid.write_text("$(reboot)")
    assert read_cidfile(cid) is None


def test_a_task_message_carries_the_container_and_a_bad_one_is_refused():
    spec = ContainerSpec("podman", image="localhost/x:1", options=("--memory=1g",))
    assert ContainerSpec.from_message(spec.as_message()) == spec
    for bad in ({"engine": "sh", "image": "x"}, {"engine": "podman"}, {"engine": "podman", "image": "x", "rootfs": "/"}):
        with pytest.raises(ValueError):
            ContainerSpec.from_message(bad)


def _experiment(tmp_path: Path, container: str, kind: str = "command"):
    section = {
        "command": "{argv: [python3, -c, 'pass'], container: %s}" % container,
        "ffmpeg": "{generate: {count: 1, durations: [1], size: 64x64}, container: %s}" % container,
        "http": "{load: {rate: 1, duration: 1s}, container: %s}" % container,
    }[kind]
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: c\nworkload:\n  {kind}: {section}\n")
    return load_experiment(path)


@pytest.mark.parametrize("kind", ["command", "ffmpeg", "http"])
def test_every_kind_that_runs_processes_takes_a_container(tmp_path, kind):
    spec = _experiment(tmp_path, "{engine: podman, rootfs: /, runtime: runc}", kind)
    assert spec.workload.container == ContainerSpec("podman", rootfs="/", runtime="runc")
    needs = workloads.kind(kind).node_needs(spec.workload, str(tmp_path / "exp.yaml"))
    assert {"podman", "runc"} <= set(needs.debian_packages)


def test_a_command_task_is_sent_with_its_container(tmp_path):
    spec = _experiment(tmp_path, "{engine: podman, image: localhost/app:1}")
    (task,) = workloads.kind("command").tasks(spec.workload, PlanContext("r1"))
    assert task.container == ContainerSpec("podman", image="localhost/app:1")
    lines = workloads.kind("command").plan_lines(spec.workload, None)
    assert "in podman containers (image localhost/app:1)" in lines[0]


@pytest.mark.parametrize(("container", "kind", "says"), [
    ("{engine: lxc, image: x}", "command", "workload.command.container.engine"),
    ("{engine: podman}", "command", "workload.command.container: give {engine: podman, image: NAME}"),
    ("{engine: podman, image: x, rootfs: /}", "command", "workload.command.container: give"),
    ("{engine: podman, rootfs: relative}", "command", "workload.command.container.rootfs"),
    ("{engine: podman, image: x, options: [--rm]}", "command", "--rm is set by Tracekit"),
    ("{engine: podman, image: x, options: ['--cgroup-parent=/x']}", "ffmpeg", "--cgroup-parent is set by Tracekit"),
    ("{engine: docker, image: x, runtime: runc}", "command", "only for engine podman"),
    ("{engine: podman, image: x, network: host}", "command", "network"),
    ("{engine: podman, image: localhost/app:1}", "http", "an ASGI app runs from each node's Tracekit venv"),
])  # fmt: skip
def test_a_bad_container_is_one_line_naming_its_key(tmp_path, container, kind, says):
    with pytest.raises(ExperimentError) as caught:
        _experiment(tmp_path, container, kind)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_committed_container_experiment_is_valid():
    spec = load_experiment(REPO / "experiments" / "container.yaml")
    assert spec.workload.container == ContainerSpec("podman", rootfs="/", runtime="runc")
