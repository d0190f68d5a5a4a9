"""Dispatch throughput: Tracekit's task queue + workers vs. python-rq, no-op tasks.

Same work for both, a real process per task (``true``), on one private
redis-server (127.0.0.1, free port, password in its config file), in turn:

* tracekit: a command workload of N tasks ``{"argv": ["true"], "count": N}``
  planned by its kind and placed round-robin by the real dispatcher
  (``tracekit.sched.dispatcher.dispatch``: signing, placement events,
  terminal records followed, exactly as ``tracekit dispatch --workload``),
  run by 2 live ``tracekit worker`` processes with --parallel 1, 2 and 4
  (fresh run id each), each task in a cgroup of its own (the default, where
  the machine has cgroups), and once more at --parallel 4 with
  --no-task-cgroups (the price of that cgroup: one more exec per task);
  done when the dispatcher returns (N terminal records).
  Latency: ``ts_start`` of the start record - the task's ``ts_enqueue``.
* rq: N jobs of ``run_true`` (``subprocess.run(["true"])``) enqueued into 2
  queues with ``Queue.enqueue_many`` (one pipeline per queue and batch of
  PLACE_BATCH), drained by 2 ``rq.SimpleWorker(...).work(burst=True)`` processes,
  released once all is enqueued (a burst worker quits on an empty queue).
  Latency: ``started_at - enqueued_at``.
* ceiling: 2 processes that only spawn and reap ``true`` (no queue at all).

end-to-end tasks/s = N / (first enqueue -> last terminal record); drain =
N / (first start -> last terminal record); latency is mostly queue wait (all
N are enqueued at once). CPU ms/task: rusage of the workers (with the children
they reaped) and of redis-server, from "workers ready" to exit. When Tracekit
misses a target, a worker is profiled (thread CPU time per slot) and Redis
commands per task are counted.

    .venv/bin/python bench/dispatch_throughput.py --quick   # 500 tasks, ~30 s
    .venv/bin/python bench/dispatch_throughput.py           # 5,000 tasks, ~2-3 min

Needs redis-server and rq (``pip install -e '.[bench]'``). Prints Markdown, exits 0
whatever the numbers; every process it starts is ended, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

import psutil
import redis
from _load import LoadWatch, load_average
from _load import add_arguments as add_load_arguments

NODES = ("bench1", "bench2")
PARALLEL = (1, 2, 4)
TARGET_TPS, TARGET_VS_RQ = 1000.0, 5.0
STALL_S = 60.0  # give up when no task finishes for this long
NAN = float("nan")


def run_true() -> int:
    """The rq job: one real process, like a Tracekit argv task."""
    return subprocess.run(["true"], check=True).returncode


# -- processes (also used by policy_comparison.py) ----------------------------------------


class RedisServer:
    """A private redis-server on a free 127.0.0.1 port; the password lives in its config file."""

    def __init__(self, folder: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder, self.password = folder, secrets.token_hex(16)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.password_file = folder / "redis.password"
        self.password_file.write_text(self.password + "\n")
        self.task_key = secrets.token_hex(32)  # the run's task key: tracekit signs its tasks with it
        self.task_key_file = folder / "task.key"
        self.task_key_file.write_text(self.task_key)
        (folder / "redis.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass {self.password}\n"
            f'save ""\nappendonly no\ndir {folder}\nlogfile {folder / "redis.log"}\n'
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(["redis-server", str(self.folder / "redis.conf")], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: see {self.folder / 'redis.log'}") from None
                time.sleep(0.05)

    def client(self, decode: bool = True) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, decode_responses=decode)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def cpu_s(pid: int) -> float:
    """CPU seconds of a live process and the children it reaped."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class Children:
    """Every process this script starts; ``stop`` ends one (and its children), ``stop_all`` the rest."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        self.started.append(subprocess.Popen(argv, **kwargs))
        return self.started[-1]

    def stop(self, process: subprocess.Popen, grace_s: float = 15.0) -> None:
        """SIGTERM (a worker finishes what runs, then exits), SIGKILL after ``grace_s``."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(process.pid).children(recursive=True):
                        child.kill()
                process.kill()
                process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.started:
            self.stop(process, grace_s=5.0)


def interrupt_on_sigterm() -> None:
    """SIGTERM ends the script like Ctrl-C: through the ``finally`` clean-ups."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def machine() -> str:
    cpu = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    mem_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    return (f"{platform.node()}: {cpu[0] if cpu else '?'}, {os.cpu_count()} CPUs, {mem_gib:.1f} GiB, "
            f"{platform.platform()}, Python {platform.python_version()}, redis-server {redis_v[2:]}")  # fmt: skip


def load() -> str:
    return "load average " + load_average()


def start_workers(children: Children, server: RedisServer, run_id: str, parallel: int, tmp: Path,
                  prefix: list[str] | None = None, own_cpus: bool = False,
                  task_cgroups: bool = True) -> list[subprocess.Popen]:  # fmt: skip
    """2 real ``tracekit worker`` processes (password in $REDIS_PASSWORD), stderr to files in ``tmp``.

    ``own_cpus``: each worker and its tasks on a CPU of its own (two nodes of one machine, as the
    local inventory has them), when there are 2.
    """
    env, workers = {**os.environ, "REDIS_PASSWORD": server.password, "TRACEKIT_TASK_KEY": server.task_key}, []
    cpus = sorted(os.sched_getaffinity(0))
    for index, node in enumerate(NODES):
        argv = [*(prefix or [sys.executable, "-m", "tracekit"]), "worker", "--node-id", node, "--run-id", run_id,
                "--redis-url", server.url, "--parallel", str(parallel), "--outputs", str(tmp / "outputs"),
                "--logs-dir", str(tmp / "logs")]  # fmt: skip
        if own_cpus and len(cpus) >= len(NODES):
            argv += ["--cpus", str(cpus[index])]
        if not task_cgroups:
            argv.append("--no-task-cgroups")
        with open(tmp / f"{run_id}.{node}.stderr", "w") as err:
            workers.append(children.start(argv, env=env, stdout=subprocess.DEVNULL, stderr=err))
    return workers


def start_ready(children: Children, server: RedisServer, args: list[str], tmp: Path) -> tuple[list, float]:
    """2 helper copies of this script (``args`` + node), ready and waiting for "go"; their CPU seconds so far."""
    env, helpers = {**os.environ, "REDIS_PASSWORD": server.password}, []
    for node in NODES:
        with open(tmp / f"{args[0].strip('-')}.{node}.stderr", "w") as err:
            helpers.append(children.start([sys.executable, __file__, *args, node, "--port", str(server.port)], env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True))  # fmt: skip
    ready = [helper.stdout.readline().split() for helper in helpers]
    if any(line[:1] != ["ready"] for line in ready):
        raise RuntimeError(f"a helper ({' '.join(args)}) did not start; see {tmp}")
    return helpers, sum(float(line[1]) for line in ready)


def go(helpers: list[subprocess.Popen]) -> tuple[list[tuple[float, float]], float]:
    """Release the helpers; wait for their (start, end) and their total CPU seconds."""
    for helper in helpers:
        print("go", file=helper.stdin, flush=True)
    done = [tuple(map(float, helper.stdout.readline().split())) for helper in helpers]
    if any(len(line) != 3 for line in done):
        raise RuntimeError("a helper failed; see its .stderr file")
    return [line[:2] for line in done], sum(line[2] for line in done)


def row(system, n, t0, t_enq, t_first, t_last, latency, failed, worker_cpu, redis_cpu) -> dict:  # noqa: ANN001
    ordered = sorted(latency)
    pct = lambda q: ordered[max(0, -(-q * len(ordered) // 100) - 1)] if ordered else NAN  # noqa: E731 - nearest rank
    return {"system": system, "tasks": n, "failed": failed, "enqueue_tps": n / (t_enq - t0) if t_enq else NAN,
            "e2e_tps": n / (t_last - t0), "drain_tps": n / (t_last - t_first), "p50_ms": pct(50), "p99_ms": pct(99),
            "worker_cpu_ms": worker_cpu * 1000 / n, "redis_cpu_ms": redis_cpu * 1000 / n if redis_cpu else NAN}  # fmt: skip


# -- the systems ------------------------------------------------------------------------------


def run_tracekit(server: RedisServer, children: Children, n: int, parallel: int, tmp: Path,
                 prefix: list[str] | None = None, task_cgroups: bool = True) -> dict:  # fmt: skip
    import json

    from tracekit.sched.dispatcher import DispatchConfig, dispatch
    from tracekit.sched.protocol import RunKeys
    from tracekit.sched.queue import TaskQueue
    from tracekit.sched.signing import TaskSigner
    from tracekit.workloads import PlanContext, tasks_of

    run_id = f"tput-p{parallel}-{secrets.token_hex(3)}"
    queue = TaskQueue(server.client(), RunKeys(run_id), server.url, TaskSigner(server.task_key.encode()))
    workers = start_workers(children, server, run_id, parallel, tmp, prefix, task_cgroups=task_cgroups)
    os.environ.update(REDIS_PASSWORD=server.password, TRACEKIT_TASK_KEY=server.task_key)  # as the dispatcher reads them
    try:
        config = DispatchConfig(run_id=run_id, redis_url=server.url, nodes=NODES, policy="round-robin", timeout_s=STALL_S * 10,
                                worker_wait_s=60, logs_dir=tmp / "dispatcher", node_id="bench0")  # fmt: skip
        cpu0, redis0 = sum(cpu_s(w.pid) for w in workers), cpu_s(server.process.pid)
        t0 = time.time()
        tasks = tasks_of({"kind": "command", "section": {"argv": ["true"], "count": n}}, PlanContext(run_id), "bench")
        result = dispatch(config, tasks)
        if result.summary["done"] + result.summary["failed"] != n:
            raise RuntimeError(f"tracekit p{parallel}: {result.summary}; see {tmp}")
        redis_cpu = cpu_s(server.process.pid) - redis0
        placed = {}
        with open(tmp / "dispatcher" / run_id / "placement_events.jsonl") as events:
            for line in events:
                event = json.loads(line)
                placed.setdefault(event["task_id"], event["ts_ms"])
        starts, ends = {}, []
        for _, fields in queue.client.xrange(queue.keys.starts):
            start = json.loads(fields["record"])
            starts.setdefault(start["task_id"], start["ts_start"])
        ends = [int(entry_id.split("-")[0]) for entry_id, _ in queue.client.xrange(queue.keys.results)]
        t_enq = max(placed.values()) / 1000
        latency = [starts[t] - placed[t] for t in placed if t in starts]
        worker_cpu = sum(cpu_s(w.pid) for w in workers) - cpu0  # nearly all of it: the workers are idle now
        t_last = max(ends) / 1000  # a stream entry id is Redis' clock in ms
        label = f"tracekit --parallel {parallel}" + ("" if task_cgroups else " --no-task-cgroups")
        return {**row(label, n, t0, t_enq, min(starts.values()) / 1000, t_last, latency,
                      result.summary["failed"], worker_cpu, redis_cpu), "parallel": parallel}  # fmt: skip
    finally:
        for worker in workers:
            children.stop(worker)
        queue.cleanup()


def run_rq(server: RedisServer, children: Children, n: int, tmp: Path) -> dict:
    from rq import Queue
    from rq.job import Job

    epoch = lambda d: (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()  # noqa: E731 - rq: UTC
    client, name = server.client(decode=False), f"tkbench-{secrets.token_hex(3)}"  # rq stores pickles
    queues = [Queue(f"{name}-{node}", connection=client) for node in NODES]
    workers, cpu0 = start_ready(children, server, ["--rq-worker", name], tmp)
    try:
        from tracekit.sched.queue import PLACE_BATCH

        redis0, job_ids, t0 = cpu_s(server.process.pid), [], time.time()
        for start in range(0, n, PLACE_BATCH):  # rq's batch enqueue (one pipeline), like Tracekit's
            for k, queue in enumerate(queues):
                count = sum(1 for i in range(start, min(n, start + PLACE_BATCH)) if i % len(queues) == k)
                jobs = queue.enqueue_many([Queue.prepare_data(f"{Path(__file__).stem}.run_true") for _ in range(count)])
                job_ids += [job.id for job in jobs]
        t_enq = time.time()
        _, cpu = go(workers)
        redis_cpu = cpu_s(server.process.pid) - redis0
        jobs = [j for i in range(0, n, 1000) for j in Job.fetch_many(job_ids[i : i + 1000], connection=client)]
        done = [j for j in jobs if j is not None and j.ended_at is not None]
        latency = [(epoch(j.started_at) - epoch(j.enqueued_at)) * 1000 for j in done]
        return row("rq SimpleWorker", n, t0, t_enq, min(epoch(j.started_at) for j in done),
                   max(epoch(j.ended_at) for j in done), latency, n - sum(j.is_finished for j in done), cpu - cpu0,
                   redis_cpu)  # fmt: skip
    finally:
        for worker in workers:
            children.stop(worker)
        for key in client.scan_iter(match=f"*{name}*", count=500):
            client.unlink(key)


def run_ceiling(server: RedisServer, children: Children, n: int, tmp: Path) -> dict:
    loops, cpu0 = start_ready(children, server, ["--spawn-loop", str(n // len(NODES))], tmp)
    spans, cpu = go(loops)
    t0 = min(s for s, _ in spans)
    return row("ceiling: spawn + reap `true`, no queue", n, t0, None, t0, max(e for _, e in spans), [], 0, cpu - cpu0, 0)


def helper_main(args: argparse.Namespace) -> int:
    """Internal: ``--rq-worker NAME NODE`` (a SimpleWorker) or ``--spawn-loop K NODE`` (spawn ``true`` K times).

    Prints "ready CPU", runs on a "go" line, prints "START END CPU" (CPU seconds, reaped children included).
    """
    cpu = lambda: sum(os.times()[:4])  # noqa: E731 - user, system, children user, children system
    if args.rq_worker:
        from rq import Queue, SimpleWorker

        __import__(Path(__file__).stem)  # the job's module, imported before the clock starts
        client = redis.Redis(port=args.port, password=os.environ["REDIS_PASSWORD"])
        worker = SimpleWorker([Queue("-".join(args.rq_worker), connection=client)], connection=client)
    print("ready", cpu(), flush=True)
    sys.stdin.readline()
    start = time.time()
    if args.rq_worker:
        stdout = os.dup(1)
        os.dup2(2, 1)  # rq logs every job on stdout
        worker.work(burst=True)
        os.dup2(stdout, 1)
    else:
        for _ in range(int(args.spawn_loop[0])):
            subprocess.Popen(["true"]).wait()
    print(start, time.time(), cpu(), flush=True)
    return 0


# -- profiling a worker --------------------------------------------------------------------------


def profiled_worker_main(out: str, argv: list[str]) -> int:
    """Internal (``--profiled-worker OUT -- worker ...``): a worker with a CPU-time cProfile per slot thread."""
    import cProfile

    from tracekit.cli import main
    from tracekit.sched import worker

    original, profiles = worker.Worker._slot, []

    def slot(self, consumer: str) -> None:
        profiles.append((consumer, profile := cProfile.Profile(time.thread_time)))  # CPU, not waiting
        profile.runcall(original, self, consumer)

    worker.Worker._slot = slot
    try:
        return main(argv)
    finally:
        for consumer, profile in profiles:
            profile.dump_stats(f"{out}.{consumer}.prof")


def profile_tracekit(server: RedisServer, children: Children, n: int, tmp: Path) -> str:
    import io
    import pstats

    server.client().config_resetstat()
    result = run_tracekit(server, children, n, 1, tmp, [sys.executable, __file__, "--profiled-worker", str(tmp / "prof"), "--"])
    commands = {k.removeprefix("cmdstat_"): v["calls"] / n for k, v in server.client().info("commandstats").items()}
    stats = pstats.Stats(*map(str, sorted(tmp.glob("prof.*.prof"))), stream=(text := io.StringIO()))
    stats.strip_dirs().sort_stats("tottime").print_stats(12)
    stats.sort_stats("cumulative").print_callees(r"\(_run\)|\(run_invocation\)|\(_slot\)")
    body = "\n".join(line for line in text.getvalue().splitlines() if ".prof" not in line).strip()
    per_task = ", ".join(f"{k} {v:.2f}" for k, v in sorted(commands.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    return (f"Redis commands per task (all clients, incl. this script's enqueue and result reads): {per_task}\n\n"
            f"cProfile (thread CPU time) of both workers' slot threads, {n} tasks, --parallel 1 "
            f"({result['e2e_tps']:,.0f} tasks/s under the profiler):\n\n```\n{body}\n```")  # fmt: skip


# -- main ---------------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    lines = ["| system | tasks | failed | enqueue tasks/s | end-to-end tasks/s | drain tasks/s | p50 latency ms "
             "| p99 latency ms | worker CPU ms/task | redis CPU ms/task |", "|---|" + "---:|" * 9]  # fmt: skip
    for r in rows:
        cells = [r["system"], r["tasks"], r["failed"]] + [
            "-" if r[k] != r[k] else format(r[k], ".2f" if "cpu" in k else ",.0f")
            for k in ("enqueue_tps", "e2e_tps", "drain_tps", "p50_ms", "p99_ms", "worker_cpu_ms", "redis_cpu_ms")]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="500 tasks instead of 5,000")
    add_load_arguments(parser)
    parser.add_argument("--tasks", type=int, help="number of tasks (default: 5000, --quick 500)")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="profile a worker when Tracekit misses a target (default), always or never")  # fmt: skip
    parser.add_argument("--rq-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--spawn-loop", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--profiled-worker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.rq_worker or args.spawn_loop:
        return helper_main(args)
    if args.profiled_worker:
        return profiled_worker_main(args.profiled_worker, rest[1:] if rest[:1] == ["--"] else rest)
    n = args.tasks or (500 if args.quick else 5000)
    interrupt_on_sigterm()
    watch = LoadWatch.from_args(args)
    print(f"# Dispatch throughput: {n:,} no-op tasks (`true`), 2 workers\n\n{machine()}\n\n{watch.start_line()}\n")
    children = Children()
    with tempfile.TemporaryDirectory(prefix="tkbench-dispatch-") as name:
        server = RedisServer(tmp := Path(name))
        try:
            server.start()
            rows = []
            for parallel in PARALLEL:
                rows.append(run_tracekit(server, children, n, parallel, tmp))
                watch.note()
                print(f"- tracekit --parallel {parallel}: {rows[-1]['e2e_tps']:,.0f} tasks/s ({load()})", file=sys.stderr)
            # The price of a cgroup per task (one more exec: tracekit.taskcgroup), at the widest setting.
            rows.append(run_tracekit(server, children, n, PARALLEL[-1], tmp, task_cgroups=False))
            print(f"- tracekit --parallel {PARALLEL[-1]} --no-task-cgroups: {rows[-1]['e2e_tps']:,.0f} tasks/s", file=sys.stderr)
            best = max(rows[: len(PARALLEL)], key=lambda r: r["e2e_tps"])
            rows += [rq := run_rq(server, children, n, tmp), run_ceiling(server, children, n, tmp)]
            print(table(rows) + f"\n\n{watch.end_line()}\n")
            checks = [(f">= {TARGET_TPS:,.0f} tasks/s end to end", best["e2e_tps"] >= TARGET_TPS, f"{best['e2e_tps']:,.0f}")]
            for kind in ("e2e", "drain"):
                ratio = best[f"{kind}_tps"] / rq[f"{kind}_tps"]
                checks.append((f">= {TARGET_VS_RQ:.0f}x rq ({kind} rate)", ratio >= TARGET_VS_RQ, f"{ratio:.2f}x"))
            for what, ok, value in checks:
                print(f"- {watch.verdict(ok)}: {best['system']} {what}: {value}")
            if any(r["failed"] for r in rows):
                print("- WARNING: some tasks failed; see the failed column")
            if args.profile == "always" or (args.profile == "auto" and not all(ok for _, ok, _ in checks)):
                print("\n" + profile_tracekit(server, children, min(n, 2000), tmp))
        except KeyboardInterrupt:
            print("interrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
