"""Send the schedule's requests on time: ``LoadSpec -> LoadRun`` (one Result per scheduled request).

input:  a LoadSpec (target URL, method, body, headers, rate plan, arrival,
        warm-up, in-flight limit, time-out)
output: a LoadRun: per request its intended and actual send time, end,
        status, bytes, error and trace ids; what was interrupted

Each request is sent at its intended time whatever the earlier ones are
doing (open loop); when ``max_in_flight`` requests are open, a due request
is dropped (recorded, never hidden). Latency is measured from the actual
send and from the intended time, so a generator or server that falls
behind cannot hide it (no coordinated omission). Each request carries a
new ``traceparent``: the server's event for it has this trace id and, as
parent, this request's span id. The load ends on time: after the last send,
open requests get at most the time-out, then they are cut off.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tracekit.tracecontext import new_span_id, new_trace_id
from tracekit.errors import UsageError
from tracekit.load import client
from tracekit.load.plan import Schedule, Step, build_schedule

LEAD_NS = 50_000_000  # the first send is this far after set-up, so that set-up does not make it late
MIN_SLEEP_NS = 1_000_000
FD_MARGIN = 64  # open files besides the requests' sockets (results, the event loop, stdio)
SWEEP_S = 0.05  # how often open requests are checked against the time-out
PROGRESS_S = 5.0
USER_AGENT = "tracekit-load"


@dataclass(frozen=True)
class LoadSpec:
    urls: tuple[str, ...]  # requests go to them in turn (round robin), as vegeta's targets
    plan: list[Step]
    arrival: str = "constant"
    seed: int | None = None
    warmup_ns: int = 0
    method: str = "GET"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    max_in_flight: int = 1024
    timeout_ns: int = 30_000_000_000
    attack: str = ""  # vegeta's attack name, copied into every result


@dataclass
class Result:
    seq: int
    intended_ns: int  # after the start (perf counter)
    warmup: bool
    target: int = 0  # index into LoadSpec.urls
    trace_id: str = ""
    span_id: str = ""
    send_ns: int | None = None  # None: never sent (dropped)
    end_ns: int | None = None
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    error: str | None = None


@dataclass
class LoadRun:
    spec: LoadSpec
    schedule: Schedule
    start_wall_ns: int  # epoch ns of offset 0
    results: list[Result] = field(default_factory=list)  # in schedule order, only those that were due
    interrupted: bool = False


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    request_target: str  # path and query, as sent
    host_header: str


def parse_target(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port  # urlsplit checks the port only when it is read
    except ValueError as exc:  # 'http://[::1' (an unclosed IPv6 address), 'http://x:99999/'
        raise UsageError(f"--url {url!r} is not a URL ({exc}): give e.g. http://127.0.0.1:8080/work") from None
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"--url {url!r}: give an http:// URL with a host, e.g. http://127.0.0.1:8080/work")
    if port == 0:
        raise UsageError(f"--url {url!r}: the port is not a number from 1 to 65535")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        # They would end the request line early: the server would read another request than meant.
        raise UsageError(f"--url {url!r} has a space or control character: percent-encode it (%20)")
    return Target(parts.hostname, port or 80, target, parts.netloc)


def parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or any(c in name for c in " \t\r\n") or "\n" in value or "\r" in value:
        raise UsageError(f"--header {text!r} is not 'Name: value'")
    return name.strip(), value.strip()


class _RequestBytes:
    """The bytes of each request: one prebuilt head, a new traceparent each time."""

    def __init__(self, spec: LoadSpec, target: Target) -> None:
        lines = [f"{spec.method} {target.request_target} HTTP/1.1", f"Host: {target.host_header}",
                 f"User-Agent: {USER_AGENT}"]  # fmt: skip
        lines += [f"{name}: {value}" for name, value in spec.headers if name.lower() != "traceparent"]
        if spec.body or spec.method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(spec.body)}")
        self.head = ("\r\n".join(lines) + "\r\ntraceparent: 00-").encode("latin-1")
        self.body = spec.body

    def make(self, trace_id: str, span_id: str) -> bytes:
        return b"".join((self.head, f"{trace_id}-{span_id}-01\r\n\r\n".encode(), self.body))


class _Attack:
    def __init__(self, spec: LoadSpec, schedule: Schedule, progress: Callable[[dict], None] | None) -> None:
        self.spec, self.schedule, self.progress = spec, schedule, progress
        if not spec.urls:
            raise UsageError("give at least one --url")
        self.targets = [parse_target(url) for url in spec.urls]
        self.requests = [_RequestBytes(spec, target) for target in self.targets]
        self.results: list[Result] = []
        self.open: dict[int, tuple[Result, object]] = {}  # seq -> (result, its connection or connecting task)
        self.stop = False
        self.all_sent = False
        self.stop_waiting = False  # set once the load has ended: what is still open is cut off
        self.drained: asyncio.Event | None = None
        self.counts = {"sent": 0, "ok": 0, "errors": 0, "dropped": 0}

    async def run(self) -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.pools = [client.Pool(loop, target.host, target.port) for target in self.targets]
        self.drained = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupt)
        sweeper = loop.create_task(self._sweep())
        self.start = time.perf_counter_ns() + LEAD_NS
        start_wall_ns = time.time_ns() + LEAD_NS
        try:
            await self._send_all()
            self.all_sent = True
            if self.open:
                await self._wait_open()
        finally:
            self.stop_waiting = True
            sweeper.cancel()
            connecting = [handle for _, handle in self.open.values() if isinstance(handle, asyncio.Task)]
            for task in connecting:
                task.cancel()
            await asyncio.gather(*connecting, return_exceptions=True)
            for pool in self.pools:
                pool.close_all(client.UNFINISHED)
            for seq in list(self.open):
                self._end_unfinished(seq, client.UNFINISHED)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return start_wall_ns, self.stop

    def _interrupt(self) -> None:
        self.stop = True

    async def _send_all(self) -> None:
        # The schedule is drawn as it is sent: nothing here is kept per request not yet due.
        sends, limit, targets = self.schedule.sends(), self.spec.max_in_flight, len(self.targets)
        next_progress = time.perf_counter_ns() + int(PROGRESS_S * 1e9)
        seq = 0
        upcoming = next(sends, None)
        while upcoming is not None and not self.stop:
            offset, warmup = upcoming
            due = self.start + offset
            now = time.perf_counter_ns()
            if due > now:
                # Never shorter than the loop's timer resolution (1 ms in uvloop): shorter sleeps
                # return at once and the loop would spin. What falls due meanwhile goes out together.
                await asyncio.sleep(max(due - now, MIN_SLEEP_NS) / 1e9)
                continue
            result = Result(seq, offset, warmup, seq % targets)
            self.results.append(result)
            if len(self.open) >= limit:
                result.error = f"{client.DROPPED}: {limit} requests in flight (--max-in-flight)"
                self.counts["dropped"] += 1
            else:
                self._launch(result)
            seq += 1
            upcoming = next(sends, None)
            if self.progress is not None and now >= next_progress:
                next_progress = now + int(PROGRESS_S * 1e9)
                self.progress({**self.counts, "in_flight": len(self.open), "elapsed_s": (now - self.start) / 1e9,
                               "scheduled": self.schedule.count})  # fmt: skip

    def _launch(self, result: Result) -> None:
        result.trace_id, result.span_id = new_trace_id(), new_span_id()
        requests, pool = self.requests[result.target], self.pools[result.target]
        request = requests.make(result.trace_id, result.span_id)
        result.bytes_out = len(requests.body)
        outcome = client.Outcome(lambda o, r=result: self._finished(r, o))
        result.send_ns = time.perf_counter_ns() - self.start
        self.counts["sent"] += 1
        connection = pool.take_idle()
        if connection is not None:
            self.open[result.seq] = (result, connection)
            connection.send(request, outcome)
        else:
            task = self.loop.create_task(self._connect_and_send(pool, result, request, outcome))
            self.open[result.seq] = (result, task)

    async def _connect_and_send(self, pool: client.Pool, result: Result, request: bytes, outcome: client.Outcome) -> None:
        try:
            connection = await pool.connect()
        except OSError as exc:
            outcome.finish(f"{client.CONNECT}: {exc.strerror or exc}")
            return
        except asyncio.CancelledError:
            ending = self.stop_waiting
            outcome.finish(f"{client.UNFINISHED}: still connecting when the load ended" if ending
                           else f"{client.TIMEOUT}: no connection within --timeout")  # fmt: skip
            raise
        if result.seq in self.open:
            self.open[result.seq] = (result, connection)
            connection.send(request, outcome)
        else:
            connection.close()

    def _finished(self, result: Result, outcome: client.Outcome) -> None:
        result.end_ns = outcome.end_ns - self.start
        result.status, result.bytes_in = outcome.status, outcome.bytes_in
        if outcome.error is not None:
            result.error = outcome.error if ":" in outcome.error else f"{outcome.error}: {_describe(outcome.error)}"
            self.counts["errors"] += 1
        else:
            self.counts["ok"] += 1
        self.open.pop(result.seq, None)
        if self.all_sent and not self.open and self.drained is not None:
            self.drained.set()

    async def _sweep(self) -> None:
        """End open requests older than the time-out (their connection can carry no other request)."""
        while True:
            await asyncio.sleep(SWEEP_S)
            oldest_allowed = time.perf_counter_ns() - self.start - self.spec.timeout_ns
            for seq, (result, handle) in list(self.open.items()):
                if result.send_ns is not None and result.send_ns < oldest_allowed:
                    self._abandon(handle, client.TIMEOUT)

    def _abandon(self, handle: object, error: str) -> None:
        if isinstance(handle, client.Connection):
            handle.abandon(error)
        elif isinstance(handle, asyncio.Task):
            handle.cancel()

    async def _wait_open(self) -> None:
        """Open requests get the time-out after the last send (the sweeper ends each), not longer."""
        try:
            await asyncio.wait_for(self.drained.wait(), self.spec.timeout_ns / 1e9 + 2 * SWEEP_S)
        except TimeoutError:
            pass

    def _end_unfinished(self, seq: int, error: str) -> None:
        result, _ = self.open.pop(seq)
        result.end_ns = time.perf_counter_ns() - self.start
        result.error = f"{error}: still open when the load ended"
        self.counts["errors"] += 1


def _describe(kind: str) -> str:
    return {
        client.RESET: "the connection closed before the response was complete",
        client.TIMEOUT: "no complete response within --timeout",
        client.UNFINISHED: "still open when the load ended",
        client.BAD_RESPONSE: "the response is not HTTP/1.1",
    }.get(kind, kind)


def _allow_sockets(count: int) -> None:
    """Raise this process's open-file limit to ``count`` if it is lower (up to the hard limit):
    every request in flight holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        ceiling = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        if ceiling < count:
            raise UsageError(f"--max-in-flight {count - FD_MARGIN} needs {count} open files; this process may open "
                             f"{hard} (ulimit -Hn): give a lower --max-in-flight")  # fmt: skip


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (its loop costs less per request than asyncio's), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_load(spec: LoadSpec, progress: Callable[[dict], None] | None = None) -> LoadRun:
    """Send ``spec``'s load and wait for it to end; SIGINT/SIGTERM end it early (what was sent is kept)."""
    if spec.max_in_flight < 1:
        raise UsageError(f"--max-in-flight {spec.max_in_flight} must be at least 1")
    if spec.timeout_ns <= 0:
        raise UsageError("--timeout must be above 0")
    _allow_sockets(spec.max_in_flight + FD_MARGIN)
    schedule = build_schedule(spec.plan, spec.arrival, spec.seed, spec.warmup_ns)
    attack = _Attack(spec, schedule, progress)
    loop = new_event_loop()
    try:
        start_wall_ns, interrupted = loop.run_until_complete(attack.run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return LoadRun(spec, schedule, start_wall_ns, attack.results, interrupted)

