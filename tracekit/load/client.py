"""A minimal HTTP/1.1 client for the load generator: keep-alive connections, one request at a time each.

input:  a target (host, port), the bytes of a request
output: per request its status, response body bytes, end time, or an error kind

Why not a general client: at a few thousand requests per second on two
cores, shared with the server under test, what the generator spends per
request is taken from the server. This protocol writes a prebuilt request
to the socket and parses the response with httptools (the C parser uvicorn
uses too). Measured here against the example service's /health for 5 s,
both on uvloop: 0.75 CPU-s at 2,000 req/s and 0.87 at 4,000, where
aiohttp's client used 1.58 and 2.30 (2.1x and 2.6x); httpx is slower than
aiohttp. No pipelining, no TLS, no redirects: what an open-loop benchmark
of one endpoint needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httptools

# Error kinds, as the results and the summary count them.
CONNECT = "connect"  # the connection could not be opened (refused, unreachable)
RESET = "reset"  # the connection broke before the response was complete
TIMEOUT = "timeout"  # no complete response within --timeout
DROPPED = "dropped"  # never sent: --max-in-flight requests were already open
UNFINISHED = "unfinished"  # still open when the load ended (its time out was cut short)
BAD_RESPONSE = "bad-response"  # not HTTP


class Outcome:
    """What became of one request; ``done`` is called once."""

    __slots__ = ("status", "bytes_in", "end_ns", "error", "done")

    def __init__(self, done: Callable[[Outcome], None]) -> None:
        self.status = 0
        self.bytes_in = 0
        self.end_ns = 0
        self.error: str | None = None
        self.done = done

    def finish(self, error: str | None = None) -> None:
        if self.end_ns:
            return
        self.end_ns = time.perf_counter_ns()
        self.error = error
        self.done(self)


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``send`` a request when idle."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.outcome: Outcome | None = None
        self.keep_alive = True
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BAD_RESPONSE)
        except httptools.HttpParserError:
            self._fail(BAD_RESPONSE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.outcome is not None:
            outcome, self.outcome = self.outcome, None
            outcome.finish(RESET)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if self.outcome is not None:
            self.outcome.bytes_in += len(body)

    def on_message_complete(self) -> None:
        outcome, self.outcome = self.outcome, None
        if outcome is None:
            return
        outcome.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        outcome.finish()
        if self.keep_alive and not self.closed:
            self.pool.release(self)
        else:
            self.close()

    def send(self, request: bytes, outcome: Outcome) -> None:
        self.outcome = outcome
        self.transport.write(request)

    def abandon(self, error: str) -> None:
        """End the request in flight with ``error`` and close (a time-out, the end of the load)."""
        self._fail(error)

    def _fail(self, error: str) -> None:
        outcome, self.outcome = self.outcome, None
        self.close()
        if outcome is not None:
            outcome.finish(error)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


class Pool:
    """Idle keep-alive connections to one target, and every open one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        self.loop, self.host, self.port = loop, host, port
        self.idle: list[Connection] = []
        self.open: set[Connection] = set()

    def take_idle(self) -> Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        return None

    async def connect(self) -> Connection:
        _, connection = await self.loop.create_connection(lambda: Connection(self), self.host, self.port)
        self.open.add(connection)
        return connection

    def release(self, connection: Connection) -> None:
        self.idle.append(connection)

    def forget(self, connection: Connection) -> None:
        self.open.discard(connection)

    def close_all(self, error: str) -> None:
        for connection in list(self.open):
            connection.abandon(error)
        self.idle.clear()
