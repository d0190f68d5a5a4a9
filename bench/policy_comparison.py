"""Placement policies compared: makespan and load balance of one transcode workload.

The same inputs, 12 clips of varied length (``generate_clips(count=12,
durations_s=[2, 4, 8], size="640x360", seed=3)``, made once), are transcoded
(scale 640:360, preset veryfast) under each policy: round-robin,
least-loaded, lpt and duration-online (the latter with batch_size=1,
dribble_interval_s=0.5, backlog_limit=1, as the seed ran it; the others place
everything in one round). Each policy gets a fresh run id on one private
redis-server (127.0.0.1, free port, password in its config file) and 2 real
``tracekit worker`` processes with --parallel 1, started for that run;
``tracekit.sched.dispatcher.dispatch(DispatchConfig(...), tasks)`` runs in this
process. Each worker and its tasks run on a CPU of their own (``--cpus``,
as on the local inventory). Makespan and per-node busy time come from the
DispatchResult summary (``makespan_ms``, on the controller's clock;
``per_node[node]["busy_ms"]``); imbalance is max/min busy time; the lower
bound of the makespan is the larger of total busy time / 2 and the longest
task (from terminal_records.jsonl).

    .venv/bin/python bench/policy_comparison.py --quick   # 4 inputs, ~40 s
    .venv/bin/python bench/policy_comparison.py           # 12 inputs, ~1-2 min

Busy times are real ffmpeg run times on this machine, so other load skews them
(the load average is printed). Prints Markdown to stdout; exits 0 unless a
task failed or timed out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from dispatch_throughput import NODES, Children, RedisServer, interrupt_on_sigterm, load, machine, start_workers

POLICIES = ("round-robin", "least-loaded", "lpt", "duration-online")
DURATIONS_S = [2, 4, 8]
SEED = 3


def run_policy(policy: str, server: RedisServer, children: Children, inputs: Path, tmp: Path) -> dict:
    import secrets

    from tracekit.adapters.ffmpeg_argv import TranscodeSettings
    from tracekit.sched.dispatcher import DispatchConfig, dispatch
    from tracekit.sched.protocol import RunKeys
    from tracekit.sched.queue import TaskQueue
    from tracekit.workloads.ffmpeg import plan_transcodes

    run_id = f"pol-{policy}-{secrets.token_hex(3)}"
    queue = TaskQueue(server.client(), RunKeys(run_id), server.url)
    queue.create(list(NODES), {"run_id": run_id, "policy": policy})  # a worker quits when its run is not live
    online = {"batch_size": 1, "dribble_interval_s": 0.5, "backlog_limit": 1} if policy == "duration-online" else {}
    workers = start_workers(children, server, run_id, 1, tmp, own_cpus=True)
    try:
        config = DispatchConfig(run_id=run_id, redis_url=server.url, nodes=NODES,
                                password_file=server.password_file, task_key_file=server.task_key_file,
                                policy=policy, logs_dir=tmp / "logs", timeout_s=1800, **online)  # fmt: skip
        summary = dispatch(config, plan_transcodes(inputs, TranscodeSettings("640:360", "veryfast"))).summary
    finally:
        for worker in workers:
            children.stop(worker)
        queue.cleanup()
    busy = {node: summary["per_node"].get(node, {}).get("busy_ms", 0) / 1000 for node in NODES}
    tasks = {node: summary["per_node"].get(node, {}).get("done", 0) for node in NODES}
    records = [json.loads(line) for line in (tmp / "logs" / run_id / "terminal_records.jsonl").read_text().splitlines()]
    longest_s = max((r["ts_end"] - r["ts_start"]) / 1000 for r in records)
    return {"policy": policy, "makespan_s": summary["makespan_ms"] / 1000, "busy_s": busy, "tasks": tasks,
            "imbalance": max(busy.values()) / min(busy.values()) if min(busy.values()) > 0 else float("inf"),
            "bound_s": max(sum(busy.values()) / len(NODES), longest_s), "elapsed_s": summary["elapsed_s"],
            "ok": summary["done"] == summary["tasks"], "summary": summary}  # fmt: skip


def table(rows: list[dict]) -> str:
    head = " | ".join(f"busy s {node} (tasks)" for node in NODES)
    lines = [f"| policy | makespan s | {head} | imbalance max/min | lower bound s | makespan / bound | dispatch s |",
             "|---|" + "---:|" * (5 + len(NODES))]  # fmt: skip
    for r in rows:
        busy = " | ".join(f"{r['busy_s'][node]:.1f} ({r['tasks'][node]})" for node in NODES)
        lines.append(f"| {r['policy']} | {r['makespan_s']:.1f} | {busy} | {r['imbalance']:.2f} | {r['bound_s']:.1f} | "
                     f"{r['makespan_s'] / r['bound_s']:.2f} | {r['elapsed_s']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="4 inputs instead of 12")
    parser.add_argument("--clips", type=Path, help="keep the generated clips here (reused when present)")
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated (default: {','.join(POLICIES)})")
    args = parser.parse_args()
    count = 4 if args.quick else 12
    interrupt_on_sigterm()
    children = Children()
    with tempfile.TemporaryDirectory(prefix="tkbench-policy-") as name:
        tmp = Path(name)
        server = RedisServer(tmp)
        try:
            from tracekit.adapters.ffmpeg import generate_clips, probe_duration_s

            inputs = (args.clips or tmp / "clips") / f"{count}-clips-seed{SEED}"
            clips = generate_clips(inputs, count=count, durations_s=DURATIONS_S, size="640x360", seed=SEED)
            lengths = ", ".join(f"{probe_duration_s(c):.0f}" for c in clips)
            print(f"# Placement policies: {count} clips (640x360, seconds: {lengths}), 2 workers x --parallel 1\n\n"
                  f"{machine()}\n\nstart: {load()}\n")  # fmt: skip
            server.start()
            rows = []
            for policy in args.policies.split(","):
                rows.append(run_policy(policy.strip(), server, children, inputs, tmp))
                print(f"- {policy}: makespan {rows[-1]['makespan_s']:.1f} s ({load()})", file=sys.stderr)
            print(table(rows) + f"\n\nend: {load()}\n")
            best = min(rows, key=lambda r: r["makespan_s"])
            print(f"- shortest makespan: {best['policy']} ({best['makespan_s']:.1f} s)")
            for r in rows:
                if not r["ok"]:
                    s = r["summary"]
                    print(f"- WARNING: {r['policy']}: {s['done']}/{s['tasks']} done, failed {s['failed_task_ids']}, "
                          f"timed out {s['timed_out_task_ids']}")  # fmt: skip
            return 0 if all(r["ok"] for r in rows) else 1
        except KeyboardInterrupt:
            print("interrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            children.stop_all()
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
