"""ASGI middleware: one invocation event per HTTP request ``-> events.http.jsonl``.

input:  any ASGI application (FastAPI, Starlette, a bare ASGI callable); the
        run folder from ``run_folder`` or TRACEKIT_LOGS_DIR / TRACEKIT_RUN_ID,
        the node from ``node`` or TRACEKIT_NODE_ID
output: ``<run folder>/events.http.jsonl``, one line per request, appended
        with one ``write()`` each (O_APPEND: the processes of a multi-worker
        server share the file); ``tracekit parse`` merges it like any
        adapter's events

Times (epoch ms, the node's clock): ``ts_enqueue`` when the request reached
the application, ``ts_start`` when its body had been read (the arrival
again if the application never read it), ``ts_end`` when the last body
byte was handed to the server (rounded up to the next ms, so that the span
is never shorter than the request was; ``server_us`` is the exact time from
arrival to that byte). ``bytes_in`` and ``bytes_out`` count the body bytes
actually received and sent, not Content-Length.

A client that leaves before the response is complete (it closed the
connection before reading the answer, or before sending all of its body) is
``aborted``: status 499 (nginx's "client closed request"), ``status_sent``
what the application answered, ``complete`` false. Servers drop what is
sent after a disconnect without telling the application, so the middleware
asks, without waiting, just before the last body byte (``_client_gone``).

CPU (``cpu_ms``, with ``cpu_measured`` saying how): every step of the
request's coroutine, the middleware's own work for it included, is timed on
the thread's CPU clock, so CPU that other requests' steps use in between is
not counted ("coroutine-steps"). A sync
handler runs in a thread pool, out of the coroutine's sight: decorate it
with ``traced_thread`` and its thread's CPU is added ("+thread"). Work the
application starts in other tasks (background tasks, task groups) and the
server's own HTTP parsing are not a request's.

Trace context (tracekit.tracecontext): a valid ``traceparent``
continues its trace with the caller's span as parent, ``X-Trace-Id`` is
accepted as an alias, anything else starts a new trace. The application
finds the request's span in ``current_span()`` (and in
``scope["state"]["tracekit_span"]``, i.e. Starlette's ``request.state``), and
``outgoing_headers()`` gives the headers for a call to the next hop.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import orjson

from tracekit import runfolder
from tracekit.tracecontext import TRACE_ID_ALIAS, TRACEPARENT, TRACESTATE, SpanContext, span_for_request
from tracekit.jsonl import dumps

MODULE = "http"
CLIENT_CLOSED = 499  # the status of a request whose client left first (nginx's "client closed request")
ABORTED = "client disconnected before the response was complete"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestCpu:
    """CPU time one request used, in nanoseconds of thread CPU clocks."""

    __slots__ = ("steps_ns", "thread_ns", "threads", "open_ns")

    def __init__(self) -> None:
        self.steps_ns = 0  # its coroutine's steps, on the event loop's thread
        self.thread_ns = 0  # traced_thread functions, on the pool's threads
        self.threads = 0
        # The thread CPU clock when the step now running began: the middleware's own work before
        # the application's first step and after its last is in the same step, and the request's.
        self.open_ns: int | None = time.thread_time_ns()

    def close_step(self) -> None:
        if self.open_ns is not None:
            self.steps_ns += time.thread_time_ns() - self.open_ns
            self.open_ns = None

    @property
    def ms(self) -> float:
        return round((self.steps_ns + self.thread_ns) / 1e6, 3)

    @property
    def measured(self) -> str:
        return "coroutine-steps+thread" if self.threads else "coroutine-steps"


_current_span: ContextVar[SpanContext | None] = ContextVar("tracekit_span", default=None)
_current_cpu: ContextVar[RequestCpu | None] = ContextVar("tracekit_request_cpu", default=None)


def current_span() -> SpanContext | None:
    """The span of the request being handled (None outside a traced request)."""
    return _current_span.get()


def outgoing_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for a call from the current request to the next hop."""
    span = _current_span.get()
    return span.outgoing_headers() if span is not None else {}


def traced_thread(func: Callable[..., Any]) -> Callable[..., Any]:
    """Count the CPU of a sync handler's thread toward its request (the thread pool runs it with the
    request's context, so the request is known there)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        account = _current_cpu.get()
        if account is None:
            return func(*args, **kwargs)
        started = time.thread_time_ns()
        try:
            return func(*args, **kwargs)
        finally:
            account.thread_ns += time.thread_time_ns() - started
            account.threads += 1

    return wrapper


class _TimedSteps:
    """Awaits a coroutine step by step, adding each step's thread CPU to ``account``."""

    __slots__ = ("coroutine", "account")

    def __init__(self, coroutine: Any, account: RequestCpu) -> None:
        self.coroutine, self.account = coroutine, account

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, account = self.coroutine, self.account
        value: Any = None
        error: BaseException | None = None
        while True:
            if account.open_ns is None:
                account.open_ns = time.thread_time_ns()
            try:
                yielded = coroutine.send(value) if error is None else coroutine.throw(error)
            except StopIteration as done:  # (an exception goes up the same way): the step goes
                return done.value  # on in the middleware, which ends it (close_step)
            account.close_step()
            try:
                value, error = (yield yielded), None
            except BaseException as thrown:  # cancellation and the like go into the coroutine
                value, error = None, thrown


_WANTED = (TRACEPARENT.encode(), TRACESTATE.encode(), TRACE_ID_ALIAS.encode())


def _headers(scope: Scope) -> dict[bytes, list[str]]:
    """The trace headers' values (ASGI gives header names in lowercase bytes)."""
    wanted: dict[bytes, list[str]] = {name: [] for name in _WANTED}
    for name, value in scope.get("headers", ()):
        if name in wanted:
            wanted[name].append(value.decode("latin-1"))
    return wanted


def _line(record: dict[str, Any]) -> bytes:
    """One JSON line; a path or header that is not valid UTF-8 (a lone surrogate) takes the escaping encoder."""
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (dumps(record) + "\n").encode()


class _EventFile:
    """The run folder's events.http.jsonl, opened once per process (a forked worker opens its own)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0
        self._warned = False

    def write(self, record: dict[str, Any]) -> None:
        data = _line(record)
        try:
            if self._pid != os.getpid():
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._pid = os.getpid()
            os.write(self._fd, data)
        except OSError as exc:
            # The request was served; losing its record must not fail it, but must not be silent.
            if not self._warned:
                print(f"tracekit: cannot write {self.path}: {exc.strerror}; request events are lost",
                      file=sys.stderr)  # fmt: skip
                self._warned = True

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._pid = None, 0  # a later event opens the file again


class TracingMiddleware:
    """Wraps an ASGI app: ``app = TracingMiddleware(app)``, or FastAPI's ``app.add_middleware(TracingMiddleware)``."""

    def __init__(
        self,
        app: ASGIApp,
        run_folder: str | os.PathLike | None = None,
        node: str | None = None,
        logs_dir: str | os.PathLike | None = None,
        run_id: str | None = None,
    ) -> None:
        self.app = app
        if run_folder is None:
            run_folder = runfolder.run_dir(runfolder.run_id_or_env(run_id), logs_dir)
        self.run_folder = runfolder.ensure_writable_dir(Path(run_folder), "run folder")
        self.node = runfolder.validate_name(node or runfolder.default_node_id(), "node id")
        self.events = _EventFile(runfolder.events_file(self.run_folder, MODULE))
        self._process: tuple[int, int | None] | None = None

    def _process_key(self) -> tuple[int, int | None]:
        """(pid, create_time_ms) of the serving process, as the collector keys it."""
        pid = os.getpid()
        if self._process is None or self._process[0] != pid:
            from tracekit.registration import process_identity

            try:
                self._process = (pid, process_identity(pid).create_time_ms)
            except OSError:
                self._process = (pid, None)
        return self._process

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        await _Request(self, scope, receive, send).serve()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.events.close()


class _Request:
    """One request on its way through the middleware, and what its event records."""

    __slots__ = ("middleware", "scope", "_receive", "_send", "arrived_wall_ns", "started", "body_read", "ended",
                 "bytes_in", "bytes_out", "status", "error", "aborted", "unread", "cpu", "span")  # fmt: skip

    def __init__(self, middleware: TracingMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.middleware, self.scope, self._receive, self._send = middleware, scope, receive, send
        # One wall-clock reading; later moments are the monotonic clock's distance from it.
        self.arrived_wall_ns = time.time_ns()
        self.started = time.perf_counter_ns()
        self.body_read: int | None = None  # perf counter when the body had been read
        self.ended: int | None = None  # ... at the last body byte
        self.bytes_in = self.bytes_out = 0
        self.status: int | None = None
        self.error: str | None = None
        self.aborted = False  # the client left before the response was complete
        # What _client_gone received that the app has not asked for yet (a message, or the awaitable
        # of a receive() it could not run by hand).
        self.unread: Message | Awaitable[Message] | None = None
        self.cpu = RequestCpu()
        traceparent, tracestate, alias = _headers(scope).values()
        self.span = span_for_request(traceparent, tracestate, alias[0] if alias else None)

    async def receive(self) -> Message:
        if self.unread is None:
            message = await self._receive()
        else:
            message, self.unread = self.unread, None
            if not isinstance(message, dict):
                message = await message
        return self._seen(message)

    def _seen(self, message: Message) -> Message:
        if message["type"] == "http.request":
            self.bytes_in += len(message.get("body", b""))
            if not message.get("more_body", False) and self.body_read is None:
                self.body_read = time.perf_counter_ns()
        elif message["type"] == "http.disconnect" and self.ended is None:
            self._abort()
        return message

    def _abort(self) -> None:
        self.aborted = True
        self.error = self.error or ABORTED

    def _client_gone(self) -> bool:
        """Has the client left? Asked just before the last body byte is handed over, without waiting.

        Servers drop what is sent after a disconnect without a word (uvicorn does), so a handler
        that never reads ``receive`` would look answered. The server's ``receive()`` coroutine is
        run up to its first wait, here, in this step (no task, no turn of the loop: next to
        nothing per request): a message it has at once is taken (``http.disconnect`` if the
        client has left); where it would wait for the client, the client is there and the call is
        closed. Body the app has not read, taken on the way, is kept for it.
        """
        if self.aborted:
            return True
        if self.unread is not None:
            return False
        asking = self._receive()
        if not inspect.iscoroutine(asking):  # another kind of awaitable: not to be run by hand
            self.unread = asking  # the app's next receive() awaits it
            return False
        try:
            asking.send(None)
        except StopIteration as ready:
            message = ready.value
        except Exception:  # the server's receive failed: the app's own next call will say so
            return False
        else:
            asking.close()  # it waits for the client: still there
            return False
        if message["type"] == "http.disconnect":
            self._seen(message)
        else:
            self.unread = message  # counted when the app asks for it (or never: then it was not read)
        return self.aborted

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
        elif kind == "http.response.body":
            body = message.get("body", b"")
            last = not message.get("more_body", False)
            if last and self.ended is None:
                self._client_gone()
            # Read before the hand-over: a process preempted right after its write would otherwise
            # read the clock after the client already had the response.
            handed = time.perf_counter_ns()
            await self._hand_over(message)
            if not self.aborted:
                self.bytes_out += len(body)
            if last:
                self.ended = handed
            return
        await self._hand_over(message)

    async def _hand_over(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError:  # ASGI 2.4 servers raise it for a send after the client left
            self._abort()
            raise

    async def serve(self) -> None:
        self.scope.setdefault("state", {})["tracekit_span"] = self.span
        span_token, cpu_token = _current_span.set(self.span), _current_cpu.set(self.cpu)
        try:
            await _TimedSteps(self.middleware.app(self.scope, self.receive, self.send), self.cpu)
        except BaseException as exc:
            self.error = type(exc).__name__
            raise
        finally:
            _current_span.reset(span_token)
            _current_cpu.reset(cpu_token)
            self.middleware.events.write(self.event())

    def event(self) -> dict[str, Any]:
        self.cpu.close_step()  # the middleware's own work for the request, up to here
        complete = self.ended is not None and not self.aborted
        ended = self.ended or time.perf_counter_ns()
        # Whole ms, the end rounded up: the span in ms never comes out shorter than the request
        # was (its CPU never claims more than a core for lack of a millisecond).
        ts_enqueue = self.arrived_wall_ns // 1_000_000
        ts_start = (self.arrived_wall_ns + (self.body_read or self.started) - self.started) // 1_000_000
        ts_end = -(-(self.arrived_wall_ns + ended - self.started) // 1_000_000)
        if self.aborted:
            status = CLIENT_CLOSED  # whatever the application answered, no one got it
        else:
            status = self.status if complete and self.status is not None else 500  # a response that never finished
        pid, create_time_ms = self.middleware._process_key()
        scope = self.scope
        route = scope.get("route")
        client = scope.get("client")
        span = self.span
        return {
            "task_id": span.span_id,
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "trace_origin": span.origin,
            "node": self.middleware.node,
            "module": MODULE,
            "attempt": 1,
            "pid": pid,
            "create_time_ms": create_time_ms,
            "process_shared": True,  # the server's process serves many requests: its samples are no one request's
            "ts_enqueue": ts_enqueue,
            "ts_start": ts_start,
            "ts_end": ts_end,
            "server_us": (ended - self.started) // 1000,
            "status": status,
            "status_sent": self.status,
            "complete": complete,
            "aborted": self.aborted,
            "error": self.error if self.error or complete else "response not finished",
            "method": scope.get("method"),
            "route": getattr(route, "path", None),
            "path": scope.get("path"),
            "query": scope.get("query_string", b"").decode("latin-1") or None,
            "client": f"{client[0]}:{client[1]}" if client else None,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "cpu_ms": self.cpu.ms,
            "cpu_measured": self.cpu.measured,
            "cpu_user_ms": None,
            "cpu_system_ms": None,
            "max_rss_kb": None,
        }
