"""Inventories for tests and benchmarks: inventory/local.yml moved into a folder of one's own.

Node roots, generated inputs and the Redis port change; everything else
(connection, interpreter, groups) is the committed inventory's, so the tests
run what `tracekit-run` runs by default.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.sshd import free_port

REPO = Path(__file__).resolve().parents[1]


def local_inventory(folder: Path, redis_port: int, unreachable: str | None = None) -> Path:
    """inventory/local.yml with node roots and inputs under ``folder`` and Redis on ``redis_port``.

    ``unreachable`` names a host made an SSH node on a loopback port where nothing listens.
    """
    document = yaml.safe_load((REPO / "inventory" / "local.yml").read_text())
    document["all"]["vars"].update(tracekit_inputs_root=str(folder / "inputs"), tracekit_inputs_shared=True)
    for group in document["all"]["children"].values():
        for name, values in group["hosts"].items():
            values["tracekit_node_root"] = str(folder / "nodes" / name)
            if name == unreachable:
                values.update(ansible_connection="ssh", ansible_host="127.0.0.1", ansible_port=free_port(),
                              ansible_user="root", ansible_ssh_common_args="-o BatchMode=yes -o ConnectTimeout=3")  # fmt: skip
    controller = document["all"]["children"]["controller"]["hosts"]
    next(iter(controller.values())).update(tracekit_redis_bind="127.0.0.1", tracekit_redis_port=redis_port)
    path = folder / f"inventory-{redis_port}.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def ssh_inventory(sshd_nodes, redis_port: int, path: Path | None = None, **all_vars) -> Path:
    """The sshd nodes' inventory with the controller's Redis on ``redis_port`` (and ``all_vars``), written to
    ``path`` (a test's own, when the nodes are the session's) or beside the nodes."""
    inventory = sshd_nodes.inventory(path)
    document = yaml.safe_load(inventory.read_text())
    document["all"]["children"]["controller"]["hosts"]["cloud0"].update(tracekit_redis_port=redis_port,
                                                                         tracekit_redis_bind="127.0.0.1")  # fmt: skip
    document["all"].setdefault("vars", {}).update(all_vars)
    inventory.write_text(yaml.safe_dump(document))
    return inventory
