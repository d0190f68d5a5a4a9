"""HTTP services: what the tracing middleware costs, how well it counts CPU, how well the load generator sends.

Everything on 127.0.0.1 in one run, the service pinned to CPU 1 and the
load generator (or wrk) to CPU 0 where the machine has two CPUs:

1. **middleware overhead**: the example service (examples/fastapi_svc,
   uvicorn, 1 worker) with and without TracingMiddleware
   (``create_app`` / ``create_untraced_app``), in turn, ROUNDS times each,
   under ``tracekit load`` at 1,000 req/s on ``/work`` (no work): the
   service process's CPU per request (utime + stime of /proc/PID/stat over
   the load) and the p99 latency from the intended send; beside them the
   peer, OpenTelemetry's ASGI instrumentation and SDK (spans batched,
   then discarded), as it comes (3 spans per request) and with the
   server span alone. Targets: the middleware adds at most 1/10 of the
   server CPU per request OpenTelemetry's default adds on ``/work``, at
   most 5 % on ``/work?cpu_ms=0.5``; p99 within 10 %. On ``/work`` also
   the floor under any tracer: the middleware reading only what every
   request's record needs (wall, monotonic and thread CPU clocks, the
   trace headers, traceparent parsed, a span id made) and recording
   nothing.
2. **per-request CPU vs the process's**: the traced service under 500
   req/s of ``/work?cpu_ms=1`` (CPU-bound), followed by a real collector
   (``tracekit collect`` by command line), then parsed: the sum of the
   requests' ``cpu_ms`` against the service process's CPU in its samples
   (cctf/proc_metrics) after its first (which covers the start-up). No
   target: the rest is the server's own work outside request steps (HTTP
   parsing, the event loop), which the audit reports as the service's
   overhead.
3. **the load generator**: against nginx answering 'ok' from its config (so that the
   server is not the limit), ``tracekit load`` at 100, 500, 1,000 and
   2,000 req/s: achieved send rate against the target (target: within 1 %)
   and p99 send lag (target: <= 5 ms); its maximum rate (at 50,000 req/s
   offered: what it sent per second, 0 dropped allowed at --max-in-flight
   4096) next to Debian's wrk on the same URL (closed loop, 1 thread, 32
   connections: its requests per second).

    .venv/bin/python bench/http_service.py            # ~4 min
    .venv/bin/python bench/http_service.py --quick    # ~1 min, shorter runs

Needs nginx and wrk (Debian packages) and, for its OpenTelemetry rows, the
bench extra (``pip install -e '.[bench]'``). Prints Markdown; the exit code is 0
whatever the numbers; every process it starts is ended, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import LoadWatch
from _load import add_arguments as add_load_arguments

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TRACEKIT = str(VENV_BIN / "tracekit")
EXAMPLE = REPO / "examples" / "fastapi_svc"
# A request that does nothing (the worst case for the middleware's share) and one with 0.5 ms of CPU.
OVERHEAD_PATHS = ("/work", "/work?cpu_ms=0.5")
TICKS = os.sysconf("SC_CLK_TCK")
OTEL, OTEL_ONE_SPAN = "otel", "otel-1span"  # the peer's rows (names that make valid run ids)
LABEL = {"traced": "Tracekit middleware", OTEL: "OpenTelemetry (default: 3 spans)", OTEL_ONE_SPAN: "OpenTelemetry (1 span)"}
# Targets (issue 29): the middleware adds at most a tenth of the server CPU per request OpenTelemetry's default
# instrumentation adds on the do-nothing /work, and at most 5% on /work?cpu_ms=0.5.
TARGET_VS_OTEL = 0.10
TARGET_WITH_WORK = 1.05
FLOOR_MODULE = "tracing_floor"
FLOOR_SOURCE = '''"""The least a tracer does per request: TracingMiddleware's reading of the request (clocks, trace
headers, span), nothing recorded (written by bench/http_service.py for its run)."""
from app import create_untraced_app
from tracekit.adapters import http


class ReadsOnly(http.TracingMiddleware):
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            http._Request(self, scope, receive, send)
        await self.app(scope, receive, send)


def create_app():
    app = create_untraced_app()
    app.add_middleware(ReadsOnly)
    return app
'''

OTEL_MODULE = "otel_app"
OTEL_SOURCE = '''"""The example service under OpenTelemetry's ASGI instrumentation and SDK (written by bench/http_service.py
for its run): spans batched by a BatchSpanProcessor, then discarded (an exporter that sends nothing: the
least OpenTelemetry can cost, and nothing leaves the machine)."""
from app import create_untraced_app
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def _provider():
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return provider


def create_app():
    """The default: a server span and a span for each receive and send (3 per request)."""
    return OpenTelemetryMiddleware(create_untraced_app(), tracer_provider=_provider())


def create_app_one_span():
    """The server span alone (receive and send spans excluded)."""
    return OpenTelemetryMiddleware(create_untraced_app(), tracer_provider=_provider(), exclude_spans=["receive", "send"])
'''


def otel_available() -> bool:
    try:
        import opentelemetry.instrumentation.asgi  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401  # pyflakes: ignore
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpus_for(role: str) -> list[str]:
    """taskset prefix: the generator on CPU 0, the server on CPU 1 (nothing on a 1-CPU machine)."""
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", "0" if role == "client" else "1"]


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port}")


@contextlib.contextmanager
def service(work: Path, factory: str, run_id: str):
    """The example service (1 uvicorn worker) on a free port; (url, pid)."""
    port = free_port()
    env = {**os.environ, "TRACEKIT_LOGS_DIR": str(work / "logs"), "TRACEKIT_RUN_ID": run_id, "TRACEKIT_NODE_ID": "bench1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))}  # FLOOR_MODULE
    (work / "logs" / run_id).mkdir(parents=True, exist_ok=True)
    command = [*cpus_for("server"), sys.executable, "-m", "uvicorn", "--factory", factory, "--app-dir", str(EXAMPLE),
               "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, process, f"uvicorn {factory}")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)


@contextlib.contextmanager
def nginx(work: Path):
    port = free_port()
    prefix = work / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"daemon off; worker_processes 1; pid {prefix}/nginx.pid; error_log {prefix}/logs/error.log;\n"
        f"events {{ worker_connections 8192; }}\n"
        f"http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {prefix}/tmp;\n"
        f"  proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ return 200 'ok'; }} }} }}\n"
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([*cpus_for("server"), binary, "-p", str(prefix), "-c", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_for_port(port, process, "nginx")
        yield f"http://127.0.0.1:{port}/ok"
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def load(url: str, rate: float, duration: str, out: Path, extra: list[str] | None = None) -> dict:
    """tracekit load (on the client CPU); its summary."""
    command = [*cpus_for("client"), TRACEKIT, "load", "--url", url, "--rate", str(rate), "--duration", duration,
               "--output", str(out), "--quiet", *(extra or [])]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"tracekit load failed: {done.stderr.strip()[-500:]}")
    return json.loads(out.with_name("summary.json").read_text())


def middleware_overhead(work: Path, rounds: int, duration: str, path: str) -> dict:
    """CPU per request and p99 of the example service with and without the middleware, in turn
    (on the do-nothing ``/work`` also with the middleware that only reads, FLOOR_MODULE)."""
    kinds = {"untraced": "app:create_untraced_app", "traced": "app:create_app"}
    if path == "/work":
        (work / f"{FLOOR_MODULE}.py").write_text(FLOOR_SOURCE)
        kinds["reads-only"] = f"{FLOOR_MODULE}:create_app"
    if otel_available():  # the peer: OpenTelemetry's ASGI instrumentation, as it comes and with one span
        (work / f"{OTEL_MODULE}.py").write_text(OTEL_SOURCE)
        kinds.update({OTEL: f"{OTEL_MODULE}:create_app", OTEL_ONE_SPAN: f"{OTEL_MODULE}:create_app_one_span"})
    figures: dict[str, dict[str, list[float]]] = {kind: {"cpu_us": [], "p99": []} for kind in kinds}
    for r in range(rounds):
        for kind, factory in kinds.items():
            with service(work, factory, f"overhead-{kind}-{r}-{len(path)}") as (url, pid):
                load(url + "/health", 200, "1s", work / f"warm-{kind}-{r}-{len(path)}" / "r.jsonl")  # imports, first requests
                before = process_cpu_s(pid)
                summary = load(url + path, 1000, duration, work / f"overhead-{kind}-{r}-{len(path)}" / "r.jsonl")
                used = process_cpu_s(pid) - before
            answered = sum(summary["status_codes"].values())
            figures[kind]["cpu_us"].append(1e6 * used / max(1, answered))
            figures[kind]["p99"].append(summary["latency_from_intended_ms"]["p99"])
    result = {kind: {name: statistics.median(values) for name, values in f.items()} for kind, f in figures.items()}
    result["cpu_ratio"] = result["traced"]["cpu_us"] / result["untraced"]["cpu_us"]
    result["p99_ratio"] = result["traced"]["p99"] / result["untraced"]["p99"]
    if "reads-only" in result:
        result["floor_ratio"] = result["reads-only"]["cpu_us"] / result["untraced"]["cpu_us"]
    for kind in ("traced", OTEL, OTEL_ONE_SPAN):
        if kind in result:
            result[kind]["added_us"] = result[kind]["cpu_us"] - result["untraced"]["cpu_us"]
    result["rounds"] = figures
    return result


def cpu_accounting(work: Path, duration: str) -> dict:
    """The requests' own cpu_ms against the service process's CPU in the collector's samples."""
    run_id = "accounting"
    logs = work / "logs"
    subprocess.run([TRACEKIT, "collect", "start", "--run-id", run_id, "--logs-dir", str(logs), "--node-id", "bench1",
                    "--match-cmdline", "uvicorn", "--interval-ms", "200"], check=True, capture_output=True)  # fmt: skip
    try:
        with service(work, "app:create_app", run_id) as (url, pid):
            time.sleep(0.5)  # a sample or two first: the first covers the process's start-up, not requests
            summary = load(url + "/work?cpu_ms=1", 500, duration, work / "accounting-load" / "r.jsonl")
    finally:
        subprocess.run([TRACEKIT, "collect", "stop", "--run-id", run_id, "--logs-dir", str(logs)], capture_output=True)
    subprocess.run([TRACEKIT, "parse", str(logs / run_id)], check=True, capture_output=True)
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    samples = pq.read_table(logs / run_id / "cctf" / "proc_metrics" / "bench1.parquet")
    mine = samples.filter(pc.equal(samples.column("pid"), pid)).sort_by("ts_ms").slice(1)  # after start-up
    process_ms = pc.sum(pc.add(mine.column("cpu_user_ms"), mine.column("cpu_system_ms"))).as_py() or 0
    requests = [json.loads(line) for line in (logs / run_id / "events.http.jsonl").read_text().splitlines()]
    request_ms = sum(r["cpu_ms"] for r in requests)
    return {"requests": len(requests), "answered": sum(summary["status_codes"].values()), "request_cpu_ms": request_ms,
            "process_cpu_ms": process_ms, "ratio": request_ms / process_ms if process_ms else float("nan")}  # fmt: skip


def generator(work: Path, duration: str, rates: list[int], ceiling_rates: list[int]) -> dict:
    """The load generator's accuracy at given rates and its maximum, next to wrk's, on nginx."""
    rows = []
    with nginx(work) as url:
        for rate in rates:
            summary = load(url, rate, duration, work / f"gen-{rate}" / "r.jsonl")
            rows.append({"rate": rate, "achieved": summary["rate"], "p99_lag": summary["send_lag_ms"]["p99"],
                         "dropped": summary["dropped"], "errors": sum(summary["errors"].values()),
                         "p99_latency": summary["latency_ms"]["p99"]})  # fmt: skip
        # The highest offered rate it holds: sent within 1 %, every request answered.
        held, ceiling = None, []
        for rate in ceiling_rates:
            summary = load(url, rate, duration, work / f"ceiling-{rate}" / "r.jsonl")
            ok = abs(summary["rate"] / rate - 1) <= 0.01 and summary["success_ratio"] == 1.0
            ceiling.append({"rate": rate, "sent": summary["rate"], "throughput": summary["throughput"],
                            "dropped": summary["dropped"], "p99_lag": summary["send_lag_ms"]["p99"], "held": ok})  # fmt: skip
            if not ok:
                break
            held = rate
        seconds = duration.rstrip("s")
        wrk = subprocess.run([*cpus_for("client"), "wrk", "-t1", "-c32", f"-d{seconds}s", url], capture_output=True, text=True)
        wrk_rate = next((float(line.split()[1]) for line in wrk.stdout.splitlines() if line.startswith("Requests/sec")), float("nan"))
    return {"rows": rows, "ceiling": ceiling, "held": held, "wrk_per_s": wrk_rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (~1 min)")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    watch = LoadWatch.from_args(args)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed: apt-get install -y {tool}")
    duration, rounds = ("5s", 1) if args.quick else ("15s", 2)
    print("# HTTP services benchmark\n")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(watch.start_line())
    print(f"- pinning: {'server on CPU 1, generator on CPU 0' if cpus_for('server') else 'none (one CPU)'}\n")
    with tempfile.TemporaryDirectory(prefix="tkbench-http-") as tmp:
        work = Path(tmp)
        overheads = {path: middleware_overhead(work, rounds, duration, path) for path in OVERHEAD_PATHS}
        accounting = cpu_accounting(work, duration)
        gen = generator(work, duration, [100, 500, 1000, 2000], [4000, 8000, 12000, 16000, 24000, 32000])
    print(f"## Middleware overhead (1,000 req/s, {rounds} round(s) each, medians)\n")
    if not otel_available():
        print("OpenTelemetry is not installed (pip install -e '.[bench]'): its rows are left out.\n")
    print("| endpoint | app | server CPU µs/request | added | p99 latency from intended, ms |\n|---|---|---:|---:|---:|")
    for path, overhead in overheads.items():
        for kind in ("untraced", "reads-only", "traced", OTEL, OTEL_ONE_SPAN):
            if kind not in overhead:
                continue
            added = f"{overhead[kind]['added_us']:+.1f}" if "added_us" in overhead[kind] else ""
            print(f"| `{path}` | {LABEL.get(kind, kind)} | {overhead[kind]['cpu_us']:.1f} | "
                  f"{added} | {overhead[kind]['p99']:.3f} |")  # fmt: skip
    for path, overhead in overheads.items():
        print(f"\n`{path}`: CPU per request {overhead['cpu_ratio']:.3f}x, p99 {overhead['p99_ratio']:.3f}x "
              f"(rounds: {json.dumps(overhead['rounds'])})")  # fmt: skip
        if "floor_ratio" in overhead:
            print(f"\n`{path}`: reading the request alone (clocks, trace headers, span; nothing recorded) costs "
                  f"{overhead['floor_ratio']:.3f}x the untraced CPU per request: the floor under any tracer of this kind")  # fmt: skip
    print()
    print("## Per-request CPU against the process's (500 req/s of /work?cpu_ms=1)\n")
    print(f"- requests: {accounting['requests']} recorded, {accounting['answered']} answered")
    print(f"- sum of the requests' cpu_ms: {accounting['request_cpu_ms']:.0f} ms; the service process in the "
          f"collector's samples: {accounting['process_cpu_ms']:.0f} ms; ratio {accounting['ratio']:.3f}: the rest, "
          f"{1 - accounting['ratio']:.1%}, is the server's own work outside request steps (HTTP parsing, the event "
          "loop), which the audit reports as the service's overhead\n")  # fmt: skip
    print("## Load generator (nginx answering 200 'ok')\n")
    print("| target req/s | sent req/s | off by | p99 send lag ms | dropped | errors | p99 latency ms |\n|---:|---:|---:|---:|---:|---:|---:|")
    for row in gen["rows"]:
        print(f"| {row['rate']} | {row['achieved']:.1f} | {100 * (row['achieved'] / row['rate'] - 1):+.2f}% | "
              f"{row['p99_lag']:.3f} | {row['dropped']} | {row['errors']} | {row['p99_latency']:.3f} |")  # fmt: skip
    print("\nIts ceiling (offered rates in turn, until one is not held: sent within 1 %, every request answered):\n")
    print("| offered req/s | sent req/s | answered req/s | dropped | p99 send lag ms | held |\n|---:|---:|---:|---:|---:|---|")
    for row in gen["ceiling"]:
        print(f"| {row['rate']} | {row['sent']:.0f} | {row['throughput'] or 0:.0f} | {row['dropped']} | "
              f"{row['p99_lag']:.3f} | {'yes' if row['held'] else 'no'} |")  # fmt: skip
    print(f"\nHighest rate held by tracekit load: {gen['held'] or 'none'} req/s; wrk (closed loop, 1 thread, "
          f"32 connections) on the same URL: {gen['wrk_per_s']:.0f} req/s\n")  # fmt: skip
    rate_ok = all(abs(r["achieved"] / r["rate"] - 1) <= 0.01 and r["errors"] == 0 for r in gen["rows"])
    lag_ok = all(r["p99_lag"] <= 5 for r in gen["rows"])
    print(watch.end_line() + "\n")
    print("## Targets\n")
    bare = overheads["/work"]
    if OTEL in bare:
        share = bare["traced"]["added_us"] / bare[OTEL]["added_us"] if bare[OTEL]["added_us"] > 0 else float("nan")
        print(f"- {watch.verdict(share <= TARGET_VS_OTEL)} middleware's added CPU per request on `/work`: "
              f"{bare['traced']['added_us']:+.1f} µs, {share:.3f} of OpenTelemetry's default "
              f"{bare[OTEL]['added_us']:+.1f} µs (target <= {TARGET_VS_OTEL:g})")  # fmt: skip
    else:
        print("- not judged: the middleware against OpenTelemetry (not installed: pip install -e '.[bench]')")
    working = overheads["/work?cpu_ms=0.5"]
    print(f"- {watch.verdict(working['cpu_ratio'] <= TARGET_WITH_WORK)} middleware CPU per request on "
          f"`/work?cpu_ms=0.5` {working['cpu_ratio']:.3f}x untraced (target <= {TARGET_WITH_WORK:g}x)")  # fmt: skip
    for path, overhead in overheads.items():
        print(f"- {watch.verdict(overhead['p99_ratio'] <= 1.10)} middleware p99 on `{path}` {overhead['p99_ratio']:.3f}x (target <= 1.10x)")
    print(f"- {watch.verdict(rate_ok)} achieved rate within 1% of target from 100 to 2,000 req/s")
    print(f"- {watch.verdict(lag_ok)} p99 send lag <= 5 ms at every rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
