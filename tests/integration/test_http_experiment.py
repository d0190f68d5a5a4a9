"""experiments/http.yaml through tracekit-run: real Ansible, uvicorn services on the workers, tracekit load
on the controller, on the local inventory and over SSH (loopback sshd nodes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.helpers import make_wheel, read_jsonl
from tests.integration.test_runner import kill_processes_under, processes_under, run_files
from tests.integration.test_export_round_trip import EVERY_FORMAT
from tests.inventories import ssh_inventory
from tests.round_trip import assert_round_trip
from tests.sshd import free_port
from tracekit.errors import TracekitError
from tracekit.experiment.runner import run_experiment
from tracekit.trace import cctf, export
from tracekit.trace.verify import verify_opendc

REPO = Path(__file__).resolve().parents[2]
HTTP = REPO / "experiments" / "http.yaml"
# Shorter than the committed experiment: 1 s of warm-up at 40/s, then 2 s.
SHORT = ["workload.http.load.rate=40", "workload.http.load.duration=2s", "workload.http.load.warmup=1s",
         "collectors.interval_ms=100"]  # fmt: skip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def with_service_ports(inventory: Path) -> Path:
    """Each worker's service on a free port of its own (the inventory's tracekit_http_port)."""
    document = yaml.safe_load(inventory.read_text())
    for name, values in document["all"]["children"]["workers"]["hosts"].items():
        values["tracekit_http_port"] = free_port()
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))
    return inventory


def assert_http_run(run_dir: Path, result, chain: bool) -> None:
    assert result.state == "succeeded", result.summary
    assert any(line.strip().startswith("requests: 80, ") for line in result.summary), result.summary
    summary = json.loads((run_dir / "nodes" / "cloud0" / "load" / "summary.json").read_text())
    assert (summary["requests"], summary["success_ratio"], summary["dropped"], summary["errors"]) == (80, 1.0, 0, {})
    # The headline figures in one place: the requests, no tasks.
    results = json.loads((run_dir / "results.json").read_text())
    assert results["state"] == "succeeded" and results["tasks"] is None
    assert results["requests"]["requests"] == 80 and results["requests"]["success_ratio"] == 1.0
    assert results["requests"]["rate_per_s"] > 0 and set(results["requests"]["latency_ms"]) == {"p50", "p99", "p99.9"}
    assert all(value > 0 for value in results["requests"]["latency_ms"].values())
    trace = run_dir / "cctf"
    audit = json.loads((trace / "audit.json").read_text())
    hops = 2 if chain else 1
    assert audit["requests"]["requests_joined"] == 120 and audit["invocations"] == 120 * hops
    # Each service process's own work beside its requests' steps (HTTP parsing, the event loop), by name.
    services = audit["service_overhead"]
    assert {s["node"] for s in services.values()} == {"cloud1", "cloud2"}
    assert sum(s["requests"] for s in services.values()) == 120 * hops
    assert all(0 < s["request_cpu_ms"] < s["process_cpu_ms"] for s in services.values()), services
    assert "is the server's own work outside them" in (trace / "audit.md").read_text()
    assert audit["requests"]["http_invocations_from_other_callers"] == 120 * (hops - 1)
    invocations = read_jsonl(trace / "invocations.jsonl")
    by_node = {node: [r for r in invocations if r["node"] == node] for node in ("cloud1", "cloud2")}
    if chain:  # every request went cloud1 -> cloud2: cloud2's event is the child of cloud1's
        first = {r["span_id"]: r for r in by_node["cloud1"]}
        assert len(by_node["cloud2"]) == 120
        for hop in by_node["cloud2"]:
            assert first[hop["parent_span_id"]]["trace_id"] == hop["trace_id"]
    else:  # the load went to the two services in turn
        assert len(by_node["cloud1"]) == len(by_node["cloud2"]) == 60
    # Each node's trace holds only what ran on it: its own service's processes, no one else's.
    samples = cctf.read_table(trace, "proc_metrics").to_pylist()
    servers = {node: {(r["pid"], r["create_time_ms"]) for r in rows} for node, rows in by_node.items()}
    for node in ("cloud1", "cloud2"):
        own = {(s["pid"], s["create_time_ms"]) for s in samples if s["node"] == node}
        assert own and servers[node] <= own, node
        other = "cloud2" if node == "cloud1" else "cloud1"
        assert not own & servers[other]
    assert not [s for s in samples if s["node"] == "cloud0"]
    assert audit["proc_samples_wrong_node"] == 0 and all(s["task_id"] is None for s in samples)
    # The warm-up's requests (40 of the 120: 1 s at 40/s), every hop, are flagged and left out of the exports;
    # each measured request is an OpenDC task that passes verification.
    assert sum(1 for r in invocations if r.get("warmup")) == 40 * hops
    checked = verify_opendc(run_dir / "opendc", topology=run_dir / "opendc" / "experiment.json", against=run_dir)
    assert checked.tasks == 80 * hops
    assert json.loads((run_dir / "opendc" / "export.json").read_text())["excluded_warmup"] == 40 * hops
    # The report has its HTTP section, drawn from the joined requests.
    page = (run_dir / "report" / "index.html").read_text()
    assert '<section id="http">' in page and "could not be drawn" not in page
    # ... with the run's final state, and speaking of requests: no tasks, no queue, no "run by hand".
    assert "<td>state</td><td>succeeded</td>" in page and "<td>end</td><td>–</td>" not in page
    assert "<td>requests sent, achieved rate, success</td><td>80, " in page
    assert "tasks in the trace" not in page and '<section id="queue">' not in page and "by hand" not in page
    assert "by hand" not in (trace / "audit.md").read_text()
    assert (run_dir / "report" / "http.png").is_file()
    config_leak = [name for name, text in run_files(run_dir).items() if "requirepass" in text]
    assert not config_leak


def service_with_a_requirement(tmp_path: Path) -> tuple[Path, Path]:
    """The example service, importing a package that only a local wheel folder holds (no node venv has
    it, no index serves it): (its folder, the requirements file that names it)."""
    import shutil

    service = tmp_path / "svc"
    shutil.copytree(REPO / "examples" / "fastapi_svc", service)
    app = service / "app.py"
    app.write_text(app.read_text().replace("from __future__ import annotations\n",
                                           "from __future__ import annotations\n\nimport tk_extra_dep  # noqa: F401\n", 1))
    make_wheel(tmp_path / "wheels", "tk_extra_dep", "1.0", "MESSAGE = 'from the wheelhouse'\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("--no-index\n--find-links wheels\ntk_extra_dep==1.0\n")
    return service, requirements


def http_site(tmp_path: Path, local_site) -> tuple[Path, Path, int]:
    """The session's local site (its node venvs made once) with service ports of this test's own: (its node
    folders, the inventory, its Redis port)."""
    folder, shared, port = local_site
    return folder, with_service_ports(Path(shutil.copy(shared, tmp_path / "inventory.yml"))), port


def test_http_experiment_on_the_local_inventory(tmp_path, local_site):
    """The committed experiment, its service importing a package that only the run's wheels hold."""
    folder, inventory, port = http_site(tmp_path, local_site)
    logs = tmp_path / "logs"
    service, requirements = service_with_a_requirement(tmp_path)
    try:
        result = run_experiment(HTTP, inventory=inventory, run_id="http-local", logs_dir=logs,
                                overrides=[*SHORT, f"workload.http.service={service}", f"workload.http.requirements={requirements}"])  # fmt: skip
        assert_http_run(logs / "http-local", result, chain=False)
        # The requirement was resolved here (kept with the run) and installed into the workload's venv on
        # the service nodes, beside Tracekit, which runs the service from there.
        assert "tk_extra_dep==1.0" in (logs / "http-local" / "workload-wheels" / "requirements.txt").read_text()
        for node in ("cloud1", "cloud2"):
            # One venv of the node's (the site is the session's: other tests' workloads have theirs) holds it.
            [venv] = [p for p in (folder / "nodes" / node / "venvs").iterdir() if not p.name.endswith(".wheels")
                      and list(p.glob("lib/python3*/site-packages/tk_extra_dep/__init__.py"))]  # fmt: skip
            assert (venv / "bin" / "tracekit").is_file()
        assert processes_under(folder, port) == []
        # A requirement no wheel folder or index can give: one line naming it, before any node is touched.
        requirements.write_text("--no-index\n--find-links wheels\ntk_no_such_dep==9.9\n")
        with pytest.raises(TracekitError, match=r"workload.http.requirements: pip cannot resolve .* No matching distribution "
                                                r"found for tk_no_such_dep==9.9$"):  # fmt: skip
            run_experiment(HTTP, inventory=inventory, run_id="http-missing-dep", logs_dir=logs,
                           overrides=[*SHORT, f"workload.http.service={service}", f"workload.http.requirements={requirements}"])  # fmt: skip
        status = json.loads((logs / "http-missing-dep" / "status.json").read_text())
        assert "workload.http.requirements: pip cannot resolve" in status["error"] and "tk_no_such_dep==9.9" in status["error"]
        assert all(status["phases"][p]["state"] == "pending" for p in ("prepare", "start")), status
    finally:
        kill_processes_under(folder, port)


def test_a_command_service_on_the_local_inventory(tmp_path, local_site):
    """experiments/http-command.yaml: a WSGI service run as a command, its access log its server-side spans."""
    folder, inventory, port = http_site(tmp_path, local_site)
    logs = tmp_path / "logs"
    try:
        result = run_experiment(REPO / "experiments" / "http-command.yaml", inventory=inventory, run_id="http-cmd",
                                logs_dir=logs, overrides=SHORT)  # fmt: skip
        run_dir = logs / "http-cmd"
        assert result.state == "succeeded", result.summary
        results = json.loads((run_dir / "results.json").read_text())
        assert results["requests"]["requests"] == 80 and results["requests"]["success_ratio"] == 1.0
        invocations = read_jsonl(run_dir / "cctf" / "invocations.jsonl")
        served = [i for i in invocations if i["module"] == "nginx" and i.get("path") == "/work"]
        assert len(served) == 120 and {i["node"] for i in served} == {"cloud1", "cloud2"}  # warm-up included
        # The access log carried the load's trace ids: each server span has its request's trace id.
        sent = {r["trace_id"] for r in read_jsonl(run_dir / "cctf" / "requests.jsonl")}
        assert {i["trace_id"] for i in served} == sent
        samples = cctf.read_table(run_dir / "cctf", "proc_metrics").to_pylist()
        assert {s["node"] for s in samples} == {"cloud1", "cloud2"}  # the services' processes, followed
        audit = json.loads((run_dir / "cctf" / "audit.json").read_text())
        assert not [n for n in audit["notes"] if "no server-side spans" in n]
        assert processes_under(folder, port) == []
    finally:
        kill_processes_under(folder, port)


def test_http_chain_over_ssh(tmp_path, ssh_site):
    sshd_nodes, port = ssh_site
    inventory = with_service_ports(ssh_inventory(sshd_nodes, port, tmp_path / "inventory.yml"))
    logs = tmp_path / "logs"
    chain = [*SHORT, "workload.http.on=[cloud1, cloud2]", "workload.http.chain=true", EVERY_FORMAT]
    try:
        result = run_experiment(HTTP, inventory=inventory, run_id="http-ssh", logs_dir=logs, overrides=chain)
        assert_http_run(logs / "http-ssh", result, chain=True)
        # The WTA export (made and verified by the parse phase): each request a workflow of its two hops,
        # cloud2's the child of cloud1's.
        assert any(line.startswith("  WTA:") for line in result.summary), result.summary
        tasks = pq.read_table(logs / "http-ssh" / "wta" / "tasks/schema-1.0/part.0.parquet").to_pylist()
        by_id = {t["id"]: t for t in tasks}
        workflows = {t["workflow_id"] for t in tasks}
        assert len(tasks) == 160 and len(workflows) == 80  # the warm-up's left out
        for task in tasks:
            node = json.loads(task["params"])["node"]
            linked = task["children"] if node == "cloud1" else task["parents"]
            assert len(linked) == 1 and by_id[linked[0]]["workflow_id"] == task["workflow_id"], task
            assert json.loads(by_id[linked[0]]["params"])["node"] == ("cloud2" if node == "cloud1" else "cloud1")
        # The OpenDC export carries the same dependencies (its workload format's parents and children).
        opendc = pq.read_table(logs / "http-ssh" / "opendc" / "tasks.parquet").to_pylist()
        assert len(opendc) == 160 and sum(len(t["children"]) for t in opendc) == 80
        named = {t["id"]: t["name"].split("/")[0] for t in opendc}
        assert all(named[c] == "cloud2" for t in opendc if named[t["id"]] == "cloud1" for c in t["children"])
        # Every format, read back as its readers would: 160 tasks, 80 dependencies where the format has them.
        for name in export.names():
            assert assert_round_trip(logs / "http-ssh", name) == 160, name
        for name in ("cloud1", "cloud2"):
            assert (sshd_nodes.nodes[name].root / "logs" / "http-ssh" / "events.http.jsonl").is_file()
        assert processes_under(sshd_nodes.folder / "nodes", port) == []
    finally:
        kill_processes_under(sshd_nodes.folder / "nodes", port)
