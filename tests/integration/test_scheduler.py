"""The Redis scheduler against a real redis-server and real ffmpeg: placement,
exactly-once terminal records, crashed workers, a restarted Redis, failing
tasks, bad connections."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, tracekit_cmd, wait_until
from tracekit import cli
from tracekit.adapters.ffmpeg import generate_clips
from tracekit.adapters.ffmpeg_argv import TranscodeSettings
from tracekit.sched.dispatcher import DispatchConfig, Dispatcher, dispatch
from tracekit.sched.protocol import RunKeys
from tracekit.workloads.ffmpeg import plan_transcodes
from tracekit.redis_client import connect, retrying
from tracekit.sched.queue import SlotConnection, Taken, TaskMessage, TaskQueue, TerminalRecord
from tracekit.sched.signing import TaskSigner


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    generate_clips(folder, count=4, durations_s=[1, 2], size="320x180", seed=5)
    return folder


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """One clip whose transcode (veryslow) takes seconds: long enough to be killed mid-task."""
    folder = tmp_path_factory.mktemp("long")
    generate_clips(folder, count=1, durations_s=[6], size="640x360", seed=2)
    return folder


def start_worker(children, redis_server, root: Path, node: str, run_id: str = "s1", parallel: int = 1):
    """A worker subprocess in its own session (so its ffmpeg can be killed with it)."""
    argv = tracekit_cmd("worker", "--node-id", node, "--run-id", run_id, "--redis-url", redis_server.url,
                        "--parallel", str(parallel), "--outputs", str(root / node / "outputs"),
                        "--logs-dir", str(root / node / "logs"), "--grace", "30")  # fmt: skip
    log = open(root / f"{node}.stderr", "ab")  # noqa: SIM115 - closed with the process
    return children(argv, stderr=log, start_new_session=True, env={**os.environ, "REDIS_PASSWORD": redis_server.password})


def config(redis_server, inputs: Path, root: Path, settings: TranscodeSettings = TranscodeSettings("160:90", "ultrafast", 30),
           mix: dict | None = None, total: int | None = None, **overrides) -> tuple[DispatchConfig, list]:  # fmt: skip
    """A dispatch of the transcodes of ``inputs`` (the ffmpeg kind's tasks): its config and its tasks."""
    values = dict(run_id="s1", redis_url=redis_server.url, nodes=("cloud1", "cloud2"), logs_dir=root / "cloud0" / "logs",
                  worker_wait_s=20, timeout_s=120)  # fmt: skip
    values.update(overrides)
    return DispatchConfig(**values), plan_transcodes(inputs, settings, mix, total)


def results(redis_server, run_id: str = "s1") -> list[dict]:
    entries = redis_server.client().xrange(RunKeys(run_id).results)
    return [json.loads(fields["record"]) for _, fields in entries]


@pytest.mark.parametrize("policy", ["round-robin", "least-loaded", "lpt", "duration-online"])
def test_two_workers_run_every_task_once(redis_server, clips, tmp_path, children, policy):
    for node in ("cloud1", "cloud2"):
        start_worker(children, redis_server, tmp_path, node)
    result = dispatch(*config(redis_server, clips, tmp_path, policy=policy, batch_size=2, backlog_limit=2))
    assert result.ok and result.summary["done"] == 4 and result.summary["failed"] == 0
    records = results(redis_server)
    assert sorted(r["task_id"] for r in records) == sorted(f"t{i:05d}-{p.stem}" for i, p in enumerate(sorted(clips.iterdir())))
    assert all(r["state"] == "done" and r["attempt"] == 1 for r in records)
    placements = read_jsonl(tmp_path / "cloud0" / "logs" / "s1" / "placement_events.jsonl")
    assert len(placements) == 4 and {p["policy"] for p in placements} == {policy}
    assert all("backlog" in p and "expected_outstanding_ms" in p for p in placements)
    # Each worker wrote its invocations in its own node's run folder, with the dispatcher's ids.
    events = [e for node in ("cloud1", "cloud2") for e in _events(tmp_path, node)]
    by_task = {e["task_id"]: e for e in events}
    for placement in placements:
        event = by_task[placement["task_id"]]
        assert event["node"] == placement["node"] and event["ts_enqueue"] == placement["ts_ms"]
        assert event["ts_enqueue_given"] is True and event["status"] == 0


def _events(root: Path, node: str) -> list[dict]:
    path = root / node / "logs" / "s1" / "events.ffmpeg.jsonl"
    return read_jsonl(path) if path.exists() else []


def test_killed_worker_task_is_rerun_once_on_restart(redis_server, long_clip, tmp_path, children):
    worker = start_worker(children, redis_server, tmp_path, "cloud1")
    cfg, _tasks = config(redis_server, long_clip, tmp_path, nodes=("cloud1",), settings=TranscodeSettings("640:360", "veryslow", 18))
    dispatcher = children(
        tracekit_cmd("dispatch", "--run-id", "s1", "--redis-url", redis_server.url, "--nodes", "cloud1",
                     "--inputs", str(long_clip), "--scale", "640:360", "--preset", "veryslow", "--crf", "18",
                     "--logs-dir", str(cfg.logs_dir), "--timeout", "180"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    starts = RunKeys("s1").starts
    wait_until(lambda: redis_server.client().xlen(starts) >= 1, timeout_s=60, what="the task to start")
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its ffmpeg, mid-task
    worker.wait()
    start_worker(children, redis_server, tmp_path, "cloud1")
    out, err = dispatcher.communicate(timeout=180)
    assert dispatcher.returncode == 0, err
    [record] = results(redis_server)
    assert record["state"] == "done" and record["attempt"] == 2
    attempts = sorted(e["attempt"] for e in _events(tmp_path, "cloud1"))
    assert attempts == [2]  # attempt 1 died with its wrapper; only attempt 2 finished


def test_silent_worker_task_is_reclaimed_by_the_dispatcher(redis_server, long_clip, tmp_path, children):
    doomed = start_worker(children, redis_server, tmp_path, "cloud1")
    start_worker(children, redis_server, tmp_path, "cloud2")
    cfg, tasks = config(redis_server, long_clip, tmp_path, policy="round-robin", lease_ms=1000,
                        settings=TranscodeSettings("640:360", "veryslow", 18), timeout_s=180)  # fmt: skip
    import threading

    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", dispatch(cfg, tasks)))
    thread.start()
    starts = RunKeys("s1").starts
    wait_until(lambda: redis_server.client().xlen(starts) >= 1, timeout_s=60, what="the task to start")
    first = json.loads(redis_server.client().xrange(starts)[0][1]["record"])
    victim = doomed if first["node"] == "cloud1" else None
    if victim is None:
        pytest.skip("round-robin placed the only task on cloud2")  # never with nodes in name order
    os.killpg(victim.pid, signal.SIGKILL)
    thread.join(240)
    result = outcome["result"]
    assert result.ok
    [record] = results(redis_server)
    assert record["state"] == "done" and record["node"] == "cloud2" and record["attempt"] == 2
    placements = read_jsonl(cfg.logs_dir / "s1" / "placement_events.jsonl")
    assert [p["reason"] for p in placements] == ["placed", "reclaimed"]


def test_failing_tasks_get_one_failed_record_and_the_run_goes_on(redis_server, clips, tmp_path, children, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for clip in sorted(clips.iterdir())[:2]:
        (inputs / clip.name).symlink_to(clip)
    (inputs / "broken.mp4").write_bytes(b"not a video at all")
    start_worker(children, redis_server, tmp_path, "cloud1")
    result = dispatch(*config(redis_server, inputs, tmp_path, nodes=("cloud1",)))
    assert not result.ok and result.summary["done"] == 2 and result.summary["failed"] == 1
    [failed] = [r for r in results(redis_server) if r["state"] == "failed"]
    assert "broken" in failed["task_id"] and failed["reason"].startswith("ffmpeg exit status")
    # The dispatcher's account names the file and why (what tracekit-run's failure line shows).
    folder = tmp_path / "cloud0" / "logs" / "s1"
    [account] = [r for r in read_jsonl(folder / "terminal_records.jsonl") if r["state"] == "failed"]
    assert f"input {inputs / 'broken.mp4'}: not a readable video" in account["reason"]
    summary = json.loads((folder / "dispatch.json").read_text())
    assert summary["notes"] == [f"input {inputs / 'broken.mp4'}: not a readable video (ffprobe: Invalid data found "
                                "when processing input)"]  # what the ffmpeg kind knew before it ran
    log = (tmp_path / "cloud0" / "logs" / "s1" / "dispatcher.log").read_text()
    assert f"input {inputs / 'broken.mp4'}: not a readable video (ffprobe: Invalid data found" in log


def test_missing_input_is_a_failed_record(redis_server, tmp_path, children):
    client = redis_server.client()
    queue = TaskQueue(client, RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1"], {"run_id": "s1"})
    queue.place("cloud1", TaskMessage("t-missing", "0" * 32, ["cat", str(tmp_path / "nope.mp4")], 1,
                                      inputs=[str(tmp_path / "nope.mp4")]))  # fmt: skip
    start_worker(children, redis_server, tmp_path, "cloud1")
    wait_until(lambda: results(redis_server), what="a terminal record")
    [record] = results(redis_server)
    assert record["state"] == "failed" and record["reason"] == f"input not found: {tmp_path / 'nope.mp4'}"


def test_restarted_redis_makes_dispatcher_and_worker_exit_non_zero(redis_server, long_clip, tmp_path, children):
    worker = start_worker(children, redis_server, tmp_path, "cloud1")
    dispatcher = children(
        tracekit_cmd("dispatch", "--run-id", "s1", "--redis-url", redis_server.url, "--nodes", "cloud1",
                     "--inputs", str(long_clip), "--scale", "640:360", "--preset", "veryslow",
                     "--logs-dir", str(tmp_path / "cloud0"), "--timeout", "300"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_until(lambda: redis_server.client().xlen(RunKeys("s1").starts) >= 1, timeout_s=60, what="a start")
    redis_server.restart()  # no persistence: the run's queues are gone
    _, err = dispatcher.communicate(timeout=60)
    assert dispatcher.returncode == 1 and "no longer holds run s1" in err
    assert worker.wait(timeout=90) == 1
    assert "no longer holds run s1" in (tmp_path / "cloud1.stderr").read_text()


def test_bad_connections_fail_fast_with_one_line(redis_server, tmp_path, capsys, monkeypatch):
    run_args = ["--run-id", "s1", "--logs-dir", str(tmp_path)]
    monkeypatch.setenv("REDIS_PASSWORD", "wrong")
    assert cli.main(["worker", *run_args, "--node-id", "cloud1", "--redis-url", redis_server.url]) == 1
    err = capsys.readouterr().err
    assert "authentication failed" in err and redis_server.url in err and "wrong" not in err
    monkeypatch.setenv("REDIS_PASSWORD", redis_server.password)
    assert cli.main(["worker", *run_args, "--redis-url", "redis://127.0.0.1:1/0"]) == 1
    assert "cannot reach redis://127.0.0.1:1/0" in capsys.readouterr().err
    url_with_password = f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    assert cli.main(["worker", *run_args, "--redis-url", url_with_password]) == 2
    err = capsys.readouterr().err
    assert "carries a password" in err and redis_server.password not in err


def test_unknown_policy_and_node(redis_server, clips, tmp_path, capsys, children):
    base = ["dispatch", "--run-id", "s1", "--redis-url", redis_server.url, "--inputs", str(clips), "--logs-dir", str(tmp_path)]
    assert cli.main([*base, "--nodes", "cloud1", "--policy", "fastest"]) == 2
    err = capsys.readouterr().err
    assert "unknown policy 'fastest'" in err and "duration-online" in err
    start_worker(children, redis_server, tmp_path, "cloud1")
    assert cli.main([*base, "--nodes", "cloud1,cloud9", "--worker-wait", "3"]) == 2
    err = capsys.readouterr().err
    assert "no worker answers for node(s) cloud9" in err and "workers seen: cloud1" in err


def test_cleanup_removes_every_key(redis_server, tmp_path, capsys):
    queue = TaskQueue(redis_server.client(), RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1", "cloud2"], {"run_id": "s1"})
    assert cli.main(["dispatch", "--cleanup", "--run-id", "s1", "--redis-url", redis_server.url]) == 0
    assert "deleted 3 keys" in capsys.readouterr().out
    assert redis_server.client().keys("tk:s1:*") == []


def _one_long_task(redis_server, long_clip, tmp_path, children):
    """A worker on cloud1 running one slow transcode placed straight on its queue."""
    queue = TaskQueue(redis_server.client(), RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1"], {"run_id": "s1"})
    [task] = plan_transcodes(long_clip, TranscodeSettings("640:360", "veryslow"))
    queue.place("cloud1", TaskMessage("t-long", "1" * 32, list(task.argv), 1, module="ffmpeg", inputs=list(task.inputs),
                                      outputs=list(task.outputs)))  # fmt: skip
    worker = start_worker(children, redis_server, tmp_path, "cloud1")
    wait_until(lambda: redis_server.client().xlen(RunKeys("s1").starts) >= 1, timeout_s=60, what="the task to start")
    return worker, queue


def test_sigterm_lets_the_running_task_finish(redis_server, long_clip, tmp_path, children):
    worker, _ = _one_long_task(redis_server, long_clip, tmp_path, children)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0
    [record] = results(redis_server)
    assert record["state"] == "done" and record["attempt"] == 1


def test_second_sigterm_hands_the_task_back(redis_server, long_clip, tmp_path, children):
    worker, queue = _one_long_task(redis_server, long_clip, tmp_path, children)
    worker.send_signal(signal.SIGTERM)
    # Two signals sent at once may merge into one: wait until the first is seen.
    log = tmp_path / "cloud1.stderr"
    wait_until(lambda: "finishing running tasks" in log.read_text(), what="the first SIGTERM")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert results(redis_server) == []  # not finished, not lost:
    [(_, fields)] = redis_server.client().xrange(RunKeys("s1").queue("cloud1"))
    assert TaskMessage.decode(fields).attempt == 2  # back on the queue for the next attempt
    start_worker(children, redis_server, tmp_path, "cloud1")
    wait_until(lambda: results(redis_server), timeout_s=120, what="the handed-back task to finish")
    [record] = results(redis_server)
    assert record["state"] == "done" and record["attempt"] == 2


def test_a_slot_reads_the_queue_once_per_task(redis_server, tmp_path, children):
    # Regression: a busy slot re-read its own (empty) pending list before every
    # task, two reads per task instead of one.
    client = redis_server.client()
    queue = TaskQueue(client, RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1"], {"run_id": "s1"})
    for index in range(20):
        queue.place("cloud1", TaskMessage(f"t{index}", "2" * 32, ["true"], 1))
    client.config_resetstat()
    worker = start_worker(children, redis_server, tmp_path, "cloud1")
    wait_until(lambda: len(results(redis_server)) == 20, timeout_s=60, what="20 terminal records")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    reads = client.info("commandstats")["cmdstat_xreadgroup"]["calls"]
    assert reads <= 20 + 6  # one per task, the start-up check, a few idle polls


def test_a_busy_slot_finishes_and_takes_in_one_round_trip(redis_server, tmp_path, children):
    client = redis_server.client()
    queue = TaskQueue(client, RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1"], {"run_id": "s1"})
    for index in range(20):
        queue.place("cloud1", TaskMessage(f"t{index}", "3" * 32, ["true"], 1))
    queue.place("cloud1", TaskMessage("t-fails", "3" * 32, ["false"], 1))
    client.config_resetstat()
    worker = start_worker(children, redis_server, tmp_path, "cloud1")
    wait_until(lambda: len(results(redis_server)) == 21, timeout_s=60, what="21 terminal records")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    stats = client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] <= 21 + 1  # finish + next take + its start, per task
    # Every task: one start record, written where its terminal record says it ran, in the usual shape.
    starts = [json.loads(fields["record"]) for _, fields in client.xrange(RunKeys("s1").starts)]
    assert sorted(s["task_id"] for s in starts) == sorted(r["task_id"] for r in results(redis_server))
    for start in starts:
        assert list(start) == ["v", "task_id", "node", "consumer", "attempt", "ts_start", "entry_id"]
        assert (start["node"], start["consumer"], start["attempt"]) == ("cloud1", "cloud1-0", 1)
    assert [r["state"] for r in results(redis_server)] == ["done"] * 20 + ["failed"]
    log = (tmp_path / "cloud1" / "logs" / "s1" / "worker.log").read_text()
    assert "t-fails failed (attempt 1): false exit status 1" in log and "t0 " not in log  # failures only


def test_a_slot_connection_rides_out_a_script_flush_and_a_dropped_connection(redis_server):
    client = redis_server.client()
    queue = TaskQueue(client, RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1"], {"run_id": "s1"})
    for index in range(3):
        queue.place("cloud1", TaskMessage(f"t{index}", "4" * 32, ["true"], 1))
    connection = SlotConnection(connect(redis_server.url, redis_server.password_file))

    def finish_and_take(taken):
        record = taken and TerminalRecord(taken.message.task_id, "cloud1", "cloud1-0", 1, "done", 0, None, 1, 2)
        return queue.finish_and_take("cloud1", "cloud1-0", taken, record, 1, connection)

    _, taken = finish_and_take(None)
    client.script_flush()  # as after a Redis restart: EVALSHA finds no script
    finished, taken = finish_and_take(taken)
    assert finished and taken.message.task_id == "t1"
    client.client_kill_filter(_type="normal", skipme=True)  # drops the slot's connection
    finished, taken = retrying(lambda: finish_and_take(taken), redis_server.url, 5)
    assert finished and taken.message.task_id == "t2"
    connection.close()
    assert [r["task_id"] for r in results(redis_server)] == ["t0", "t1"]


def test_place_many_places_each_task_on_its_node_in_order(redis_server):
    queue = TaskQueue(redis_server.client(), RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1", "cloud2"], {"run_id": "s1"})
    batch = [(f"cloud{1 + i % 2}", TaskMessage(f"t{i}", "5" * 32, ["true"], i)) for i in range(7)]
    assert len(queue.place_many(batch)) == 7
    for node in ("cloud1", "cloud2"):
        placed = [TaskMessage.decode(fields) for _, fields in redis_server.client().xrange(RunKeys("s1").queue(node))]
        assert placed == [message for n, message in batch if n == node]


def test_finish_and_take_retried_after_a_lost_reply_strands_no_task(redis_server):
    # Regression: the client retries a call whose reply was lost; the retry
    # took yet another task, and the one the lost reply carried stayed
    # pending for the slot, never run (its heartbeat kept it from reclaim).
    client = redis_server.client()
    queue = TaskQueue(client, RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1"], {"run_id": "s1"})
    for index in range(3):
        queue.place("cloud1", TaskMessage(f"t{index}", "6" * 32, ["true"], 1))
    _, first = queue.finish_and_take("cloud1", "cloud1-0", None, None, 1)
    record = TerminalRecord("t0", "cloud1", "cloud1-0", 1, "done", 0, None, 1, 2)
    queue.finish_and_take("cloud1", "cloud1-0", first, record, 2)  # its reply is "lost"
    finished, taken = queue.finish_and_take("cloud1", "cloud1-0", first, record, 2)  # the retry
    assert not finished and (taken.message.task_id, taken.attempt) == ("t1", 1)
    assert [r["task_id"] for r in results(redis_server)] == ["t0"]  # one terminal record
    starts = [json.loads(fields["record"])["task_id"] for _, fields in client.xrange(RunKeys("s1").starts)]
    assert starts == ["t0", "t1"]  # t1's start was recorded once, by the call that took it


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to give a node one of them")
def test_a_worker_keeps_itself_and_its_tasks_on_its_cpus_marked_with_its_node(redis_server, tmp_path, children):
    cpu = max(os.sched_getaffinity(0))
    client = redis_server.client()
    queue = TaskQueue(client, RunKeys("s1"), signer=redis_server.signer())
    queue.create(["cloud1"], {"run_id": "s1"})
    probe = ("import os, sys; print(sorted(os.sched_getaffinity(0)), os.environ.get('TRACEKIT_NODE_ID'),"
             " os.environ.get('TRACEKIT_RUN_ID'), file=open(sys.argv[1], 'w'))")  # fmt: skip
    out = tmp_path / "task.out"
    queue.place("cloud1", TaskMessage("t-probe", "4" * 32, [sys.executable, "-c", probe, str(out)], 1))
    argv = tracekit_cmd("worker", "--node-id", "cloud1", "--run-id", "s1", "--redis-url", redis_server.url,
                        "--logs-dir", str(tmp_path / "logs"), "--cpus", str(cpu))  # fmt: skip
    env = {**os.environ, "REDIS_PASSWORD": redis_server.password}
    env.pop("TRACEKIT_NODE_ID", None)
    env["TRACEKIT_RUN_ID"] = "another-run"  # the worker's run marks its tasks, whatever it inherited
    worker = children(argv, env=env)
    wait_until(lambda: results(redis_server), timeout_s=60, what="the probe task's terminal record")
    import psutil

    threads = {t.id for t in psutil.Process(worker.pid).threads()}
    assert all(os.sched_getaffinity(tid) == {cpu} for tid in threads)  # heartbeat and slot threads too
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert out.read_text() == f"[{cpu}] cloud1 s1\n"  # marked with its node and its run


def test_the_dispatcher_marks_its_probes_with_its_node(tmp_path, monkeypatch):
    from tracekit.workloads.ffmpeg import plan_transcodes

    inputs, bin_dir = tmp_path / "inputs", tmp_path / "bin"
    inputs.mkdir(), bin_dir.mkdir()
    (inputs / "a.mp4").write_bytes(b"x")
    marks = tmp_path / "marks"
    fake = bin_dir / "ffprobe"  # answers like ffprobe, and says which node it was started for
    fake.write_text(f'#!/bin/sh\necho "$TRACEKIT_NODE_ID" >> {marks}\necho \'{{"format": {{"duration": "2.5"}}}}\'\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    [planned] = plan_transcodes(inputs, TranscodeSettings(), node_id="cloud0")
    assert planned.size == 2.5 and marks.read_text() == "cloud0\n"


class SkewedWorker(threading.Thread):
    """A worker for one node whose clock runs ``skew_ms`` ahead: it records each task done after ~50 ms."""

    def __init__(self, redis_server, node: str, skew_ms: int):
        super().__init__(daemon=True)
        self.queue = TaskQueue(redis_server.client(), RunKeys("s1"), signer=redis_server.signer())
        self.node, self.skew_ms, self.stop = node, skew_ms, threading.Event()

    def run(self) -> None:
        import redis as redis_lib

        consumer = f"{self.node}-0"
        while not self.stop.is_set():
            self.queue.heartbeat(self.node, [consumer], 3000)
            try:
                taken = self.queue.take(self.node, consumer, 100, own_pending_first=False)
            except redis_lib.ResponseError:  # NOGROUP: the dispatcher has not made the run yet
                time.sleep(0.05)
                continue
            if taken is None:
                continue
            start = int(time.time() * 1000) + self.skew_ms
            self.queue.started(self.node, consumer, taken, start)
            time.sleep(0.05)
            record = TerminalRecord(taken.message.task_id, self.node, consumer, taken.attempt, "done", 0, None,
                                    start, int(time.time() * 1000) + self.skew_ms)  # fmt: skip
            self.queue.finish(self.node, taken, record)


def test_makespan_is_measured_on_one_clock(redis_server, clips, tmp_path):
    # cloud2's clock is an hour ahead: its own timestamps must not stretch the makespan.
    workers = [SkewedWorker(redis_server, "cloud1", 0), SkewedWorker(redis_server, "cloud2", 3_600_000)]
    for worker in workers:
        worker.start()
    try:
        result = dispatch(*config(redis_server, clips, tmp_path, policy="round-robin"))
    finally:
        for worker in workers:
            worker.stop.set()
            worker.join(5)
    summary = result.summary
    assert result.ok and summary["per_node"]["cloud2"]["done"] == 2
    assert 0 < summary["makespan_ms"] <= summary["elapsed_s"] * 1000 + 100, summary
    assert summary["per_node"]["cloud2"]["busy_ms"] < 1000  # durations on one node's clock are fine


def test_a_reclaimed_task_that_finished_meanwhile_is_no_placement(redis_server, clips, tmp_path, monkeypatch):
    # The dispatcher decides to requeue a silent slot's task; the slot finishes it just before
    # the requeue. The trace must keep the placement that happened, not one that did not.
    from tracekit.sched.dispatcher import Dispatcher

    dispatcher = Dispatcher(*config(redis_server, clips, tmp_path, lease_ms=0))
    dispatcher.prepare()
    progress = next(iter(dispatcher.tasks.values()))
    dispatcher.queue.place_many([("cloud1", dispatcher._place(progress, "cloud1", {}))])
    taken = dispatcher.queue.take("cloud1", "cloud1-0", 100)  # a slot takes it, then sends no heartbeat
    dispatcher.queue.heartbeat("cloud2", ["cloud2-0"], 10_000)  # cloud2 is alive: the target
    real_requeue = dispatcher.queue.requeue

    def finished_just_before(from_node, entry_id, to_node, message):
        record = TerminalRecord(taken.message.task_id, "cloud1", "cloud1-0", 1, "done", 0, None, 1, 2)
        assert dispatcher.queue.finish("cloud1", taken, record)
        return real_requeue(from_node, entry_id, to_node, message)

    monkeypatch.setattr(dispatcher.queue, "requeue", finished_just_before)
    dispatcher._reclaim()
    dispatcher.events.close()
    placements = read_jsonl(tmp_path / "cloud0" / "logs" / "s1" / "placement_events.jsonl")
    assert [(p["reason"], p["node"], p["attempt"]) for p in placements] == [("placed", "cloud1", 1)]
    assert (progress.node, progress.attempt, progress.state) == ("cloud1", 1, "queued")
    assert redis_server.client().xlen(RunKeys("s1").queue("cloud2")) == 0


def test_a_stopped_dispatcher_writes_its_summary(redis_server, clips, tmp_path, children):
    # 'tracekit dispatch --stop' (SIGTERM) and Ctrl-C end a dispatch early, not its record.
    logs = tmp_path / "cloud0" / "logs"
    argv = tracekit_cmd("dispatch", "--run-id", "s1", "--redis-url", redis_server.url, "--nodes", "cloud1",
                        "--inputs", str(clips), "--logs-dir", str(logs), "--worker-wait", "120")  # fmt: skip
    dispatcher = children(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = logs / "s1" / "dispatcher.log"
    wait_until(lambda: (logs / "s1" / "dispatcher.pid").exists() and redis_server.client().exists(RunKeys("s1").meta),
               timeout_s=60, what="the dispatcher waiting for its worker")  # fmt: skip
    stop = subprocess.run(tracekit_cmd("dispatch", "--stop", "--run-id", "s1", "--logs-dir", str(logs)),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert stop.returncode == 0 and "stopped" in stop.stdout
    out, _ = dispatcher.communicate(timeout=30)
    assert dispatcher.returncode == 1
    assert "0/4 tasks done, 0 failed, 4 unfinished (stopped by SIGTERM)" in out
    summary = json.loads((logs / "s1" / "dispatch.json").read_text())
    assert (summary["stopped_by"], summary["unfinished"], summary["timed_out"]) == ("SIGTERM", 4, 0)
    assert "SIGTERM: stopping the dispatch" in log.read_text()


def test_the_plan_is_deterministic_and_a_mix_keeps_the_threads(clips):
    from tracekit.sched.dispatcher import Planned

    settings = TranscodeSettings("160:90", "ultrafast", 30, threads=2)
    mix = {"360p-ultrafast": 1, "720p-veryfast": 1}
    first = plan_transcodes(clips, settings, mix, total=6, seed=3)
    assert first == plan_transcodes(clips, settings, mix, total=6, seed=3)
    assert all(task.argv[task.argv.index("-threads") + 1] == "2" for task in first)  # --threads: every profile
    assert {task.profile for task in first} == set(mix)
    in_r1, in_r2 = [Planned.of(t, "r1") for t in first], [Planned.of(t, "r2") for t in first]
    assert in_r1 == [Planned.of(t, "r1") for t in first]  # trace ids too
    assert not {p.trace_id for p in in_r2} & {p.trace_id for p in in_r1}  # a new run, new traces
    assert all(len(p.trace_id) == 32 and int(p.trace_id, 16) for p in in_r1)


def test_a_worker_runs_only_what_the_run_s_dispatcher_signed(redis_server, clips, tmp_path, children):
    """Anyone with the Redis password can add entries to a node's queue: a worker runs none of them."""
    marker = tmp_path / "ran-as-root"
    client = redis_server.client()
    keys = RunKeys("s1")
    signer = redis_server.signer()
    evil = TaskMessage("t-evil", "0" * 32, ["/bin/sh", "-c", f"id > {marker}"], 1).payload()
    other_run = TaskSigner(b"another run's key, 32 chars long!")
    forged = [
        {"task": evil},  # not signed
        {"task": evil, "sig": "00" * 32},  # a signature that does not verify
        {"task": evil, "sig": other_run.sign_task("cloud1", evil)},  # another run's key
        {"task": evil, "sig": signer.sign_task("cloud2", evil)},  # signed for another node
        {"task": "not json at all", "sig": "x"},
        {"other": "field"},
        {"task": evil, "sig": "\u00e9" * 64},  # a signature of non-ASCII characters
    ]
    TaskQueue(client, keys, signer=signer).ensure_group("cloud1")
    for fields in forged:
        client.xadd(keys.queue("cloud1"), fields)
    raw = redis_server.client(decode=False)  # bytes that are no UTF-8, where text is expected
    raw.xadd(keys.queue("cloud1"), {b"task": b'{"v":1,"task_id":"\xff\xfe"}', b"sig": b"\xff"})
    forged.append("bytes")
    # Streams and keys the dispatcher reads, written by someone else.
    client.xadd(keys.starts, {"record": "not a start record"})
    raw.xadd(keys.starts.encode(), {b"record": b'{"v":1,"task_id":"\xff"}'})
    raw.set(keys.heartbeat("cloud1", "x").encode().replace(b"cloud1", b"\xff"), b"1", px=60_000)
    # A terminal record nobody of the run signed, claiming the first task is done.
    first_task = f"t00000-{sorted(clips.iterdir())[0].stem}"
    client.xadd(keys.results, {"record": TerminalRecord(first_task, "cloud1", "cloud1-0", 1, "done", 0, None, 1, 2).encode()})
    for node in ("cloud1", "cloud2"):
        start_worker(children, redis_server, tmp_path, node)
    result = dispatch(*config(redis_server, clips, tmp_path, policy="round-robin"))
    # Every real task ran, the forged record counted for nothing, no forged entry ran.
    assert result.ok and result.summary["done"] == 4 and result.summary["rejected_records"] == 3
    assert not marker.exists()
    assert sum(1 for e in _events(tmp_path, "cloud1") if e["task_id"] == first_task) == 1  # it did run
    rejected = read_jsonl(tmp_path / "cloud1" / "logs" / "s1" / "rejected.jsonl")
    assert len(rejected) == len(forged) and {r["node"] for r in rejected} == {"cloud1"}
    assert {r["reason"] for r in rejected} >= {"not signed", "signature does not verify for node cloud1 under this run's key"}
    assert any("id >" in r["payload"] for r in rejected)
    assert client.xlen(keys.queue("cloud1")) == 0  # deleted, never to be taken again
    assert not (tmp_path / "cloud2" / "logs" / "s1" / "rejected.jsonl").exists()


def test_a_copy_of_a_signed_entry_is_not_run_twice(redis_server, tmp_path, children):
    """Someone with the password copies an entry the dispatcher signed: it verifies, and still runs once."""
    log = tmp_path / "ran"
    client = redis_server.client()
    keys = RunKeys("s1")
    queue = TaskQueue(client, keys, signer=redis_server.signer())
    queue.create(["cloud1"], {"run_id": "s1"})
    queue.place("cloud1", TaskMessage("t-once", "0" * 32, ["/bin/sh", "-c", f"echo ran >> {log}"], 1,
                                      nonce="n1"))  # fmt: skip
    [(_entry_id, fields)] = client.xrange(keys.queue("cloud1"))
    client.xadd(keys.queue("cloud1"), fields)  # the copy
    start_worker(children, redis_server, tmp_path, "cloud1")
    rejected = tmp_path / "cloud1" / "logs" / "s1" / "rejected.jsonl"
    wait_until(lambda: rejected.exists() and results(redis_server), what="the task's record and the copy's refusal")
    assert log.read_text() == "ran\n" and len(results(redis_server)) == 1
    [copy] = read_jsonl(rejected)
    assert copy["reason"].startswith("a copy of entry ") and "t-once" in copy["payload"]


def _placements(cfg) -> list[dict]:
    return read_jsonl(cfg.logs_dir / "s1" / "placement_events.jsonl")


def test_tasks_waiting_on_a_node_without_workers_move_to_live_nodes_and_come_back(redis_server, clips, tmp_path):
    """A node is live while one of its slots' heartbeat keys exists (workers refresh them; here the test does)."""
    client = redis_server.client()
    keys = RunKeys("s1")
    cfg, tasks = config(redis_server, clips, tmp_path, policy="round-robin")
    dispatcher = Dispatcher(cfg, tasks)
    beat = lambda node: client.set(keys.heartbeat(node, f"{node}-0"), "1", px=60_000)  # noqa: E731
    try:
        beat("cloud1"), beat("cloud2")
        dispatcher.prepare()
        dispatcher.policy.plan([p.planned.task for p in dispatcher.tasks.values()], list(cfg.nodes))
        assert dispatcher.place_round() == 4
        on = lambda node: sorted(t for t, p in dispatcher.tasks.items() if p.node == node)  # noqa: E731
        first_on_cloud1, second_on_cloud1 = on("cloud1")
        # A slot of cloud1 took its first task: that one is a slot's now, not waiting.
        reply = client.xreadgroup("workers", "cloud1-0", {keys.queue("cloud1"): ">"}, count=1)
        assert TaskMessage.decode(reply[0][1][0][1]).task_id == first_on_cloud1
        client.delete(keys.heartbeat("cloud1", "cloud1-0"))  # cloud1's worker is gone
        dispatcher.follow_liveness()
        assert dispatcher.tasks[second_on_cloud1].node == "cloud2"
        assert dispatcher.tasks[first_on_cloud1].node == "cloud1"  # taken: the lease decides (reclaim)
        # The moved task waits on cloud2, signed for cloud2: a cloud2 slot runs it.
        moved = dispatcher.queue.undelivered("cloud2")
        assert [found.message.task_id for _, found in moved][-1] == second_on_cloud1
        assert all(isinstance(found, Taken) for _, found in moved)
        beat("cloud1")  # the worker is back
        dispatcher.follow_liveness()
        assert dispatcher.tasks[second_on_cloud1].node == "cloud1"
        assert second_on_cloud1 not in [f.message.task_id for _, f in dispatcher.queue.undelivered("cloud2")]
        assert [f.message.task_id for _, f in dispatcher.queue.undelivered("cloud1")] == [second_on_cloud1]
        dispatcher.events.flush()
        events = [(p["task_id"], p["node"], p["reason"]) for p in _placements(cfg) if p["task_id"] == second_on_cloud1]
        assert events == [(second_on_cloud1, "cloud1", "placed"), (second_on_cloud1, "cloud2", "moved"),
                          (second_on_cloud1, "cloud1", "returned")]  # fmt: skip
    finally:
        dispatcher.events.close()
        dispatcher.terminal_records.close()


def test_a_killed_worker_s_queue_is_run_by_the_live_nodes(redis_server, clips, tmp_path, children):
    doomed = start_worker(children, redis_server, tmp_path, "cloud1")
    start_worker(children, redis_server, tmp_path, "cloud2")
    cfg, tasks = config(redis_server, clips, tmp_path, policy="round-robin", lease_ms=1000, timeout_s=600,
                        mix={"360p-ultrafast": 1}, total=12)  # fmt: skip
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", dispatch(cfg, tasks)))
    thread.start()
    queue = RunKeys("s1").queue("cloud1")
    wait_until(lambda: redis_server.client().exists(queue) and redis_server.client().xlen(queue) >= 3,
               timeout_s=60, what="tasks queued on cloud1")  # fmt: skip
    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its task, with tasks still waiting on its node
    doomed.wait()
    thread.join(600)
    result = outcome["result"]
    # Nothing waited for the timeout: every task ran, those of cloud1 on cloud2.
    assert result.ok and result.summary["done"] == 12 and result.summary["timed_out"] == 0
    assert len({r["task_id"] for r in results(redis_server)}) == 12
    moved = [p for p in _placements(cfg) if p["reason"] in ("moved", "reclaimed")]
    assert moved and {p["node"] for p in moved} == {"cloud2"}
    assert all(p["moved_from"] == "cloud1" for p in moved if p["reason"] == "moved")
