"""Ansible roles run for real with ansible-runner on this machine (local connection):
they do their job, a second run changes nothing, their argument specs agree
with their defaults."""

from __future__ import annotations

import secrets
import socket
import sys
from pathlib import Path

import ansible_runner
import psutil
import pytest
import redis
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())


def run_role(tmp_path: Path, role: str, variables: dict, ident: str) -> ansible_runner.Runner:
    """Include ``role`` from a user's playbook on localhost, as the role's README shows."""
    playbook = [{"hosts": "localhost", "gather_facts": False,
                 "tasks": [{"ansible.builtin.include_role": {"name": role}, "vars": variables}]}]  # fmt: skip
    data = tmp_path / "runner"
    (data / "project").mkdir(parents=True, exist_ok=True)
    (data / "project" / "play.yml").write_text(yaml.safe_dump(playbook))
    inventory = f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    return ansible_runner.run(
        private_data_dir=str(data), playbook="play.yml", inventory=inventory, ident=ident, quiet=True,
        envvars={"ANSIBLE_ROLES_PATH": str(REPO / "roles"), "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip


def changed(runner: ansible_runner.Runner) -> int:
    return sum(runner.stats.get("changed", {}).values())


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_agree_with_defaults(role):
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults), role
    for name, option in options.items():
        assert name.startswith(f"{role}_"), name  # role-prefixed variables
        if not option.get("required"):
            assert option.get("default") == defaults[name], name
    assert (REPO / "roles" / role / "README.md").exists()


def test_redis_role_starts_a_protected_server_and_is_idempotent(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = secrets.token_hex(16)
    variables = {"tracekit_redis_dir": str(tmp_path / "redis"), "tracekit_redis_port": port,
                 "tracekit_redis_password": password, "tracekit_redis_install": False}  # fmt: skip
    try:
        first = run_role(tmp_path, "tracekit_redis", variables, "first")
        assert first.rc == 0, first.stdout.read()
        assert changed(first) > 0
        client = redis.Redis(port=port, password=password)
        assert client.ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
        second = run_role(tmp_path, "tracekit_redis", variables, "second")
        assert second.rc == 0 and changed(second) == 0  # idempotent
        assert (tmp_path / "redis" / "redis.conf").stat().st_mode & 0o077 == 0  # root only
        for process in psutil.process_iter(["cmdline"]):
            assert password not in " ".join(process.info["cmdline"] or [])
        for artifact in (tmp_path / "runner" / "artifacts").rglob("*"):
            if artifact.is_file():
                assert password not in artifact.read_text(errors="replace"), artifact  # no_log held
    finally:
        try:
            redis.Redis(port=port, password=password).shutdown(nosave=True)
        except redis.ConnectionError:
            pass
