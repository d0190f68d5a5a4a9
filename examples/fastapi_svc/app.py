"""The example HTTP service: FastAPI on uvicorn, traced by tracekit's ASGI middleware.

Run it with ``make run`` (this folder's Makefile), or
``uvicorn --factory app:create_app --app-dir examples/fastapi_svc``.
Every request becomes a line of ``<logs dir>/<run id>/events.http.jsonl``.

Endpoints (parameters as query string, or as a JSON object body on POST):

- ``/work`` (GET, POST; async) and ``/work/sync`` (GET, POST; a thread-pool
  handler): ``cpu_ms`` of busy CPU (on the thread's own CPU clock, so a
  busy machine does not shorten it), ``sleep_ms`` of waiting, a response of
  ``resp_kb`` KiB, and ``call_url``: a next hop to call first (also the
  ``X-Next-Url`` header, else ``$DEFAULT_NEXT_URL``). The call carries the
  request's ``traceparent``, so a chain of services is one trace. Only the
  next hops configured are called: ``$DEFAULT_NEXT_URL``'s endpoint and the
  URL prefixes in ``$NEXT_URL_ALLOWED`` (comma-separated); any other is
  refused with 403. The answer says the next hop's status and time, never
  its body (the service is no relay to whatever its callers name).
- POST ``/json/validate``: is the body a JSON document; its type, size, depth.
- POST ``/blob/gzip``, ``/blob/gunzip``: the body compressed, decompressed.
- POST ``/hash/sha256``: the body's SHA-256.
- POST ``/kv/set/{key}``, GET ``/kv/get/{key}``: a key-value store in SQLite
  (``kv.sqlite3`` in the run folder).
- GET ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tracekit import runfolder
from tracekit.adapters.http import TracingMiddleware, current_span, outgoing_headers, traced_thread

NEXT_URL_HEADER = "x-next-url"
DEFAULT_NEXT_URL_ENV = "DEFAULT_NEXT_URL"
NEXT_URL_ALLOWED_ENV = "NEXT_URL_ALLOWED"
NEXT_HOP_TIMEOUT_S = 30
_DEFAULT_PORTS = {"http": 80, "https": 443}


def burn_cpu(ms: float) -> float:
    """Busy for ``ms`` of this thread's CPU time; the CPU ms actually used."""
    started = time.thread_time_ns()
    end = started + int(ms * 1e6)
    x = 0
    while time.thread_time_ns() < end:
        for i in range(200):
            x += i
    return (time.thread_time_ns() - started) / 1e6


def _url_parts(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of an http(s) URL; ValueError for anything else.

    Refused: another scheme (file:// would read this machine's files), user info (``http://a@b``
    names host b), dot segments (``/work/../admin`` leaves the prefix once a client normalizes it),
    spaces and control characters (a client would send another request line than was checked).
    """
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("spaces and control characters are not allowed (percent-encode them)")
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("user info in a URL is not allowed")
    if any(segment in (".", "..") for segment in unquote(parts.path).replace("\\", "/").split("/")):
        raise ValueError("'.' and '..' path segments are not allowed")
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    return parts.scheme, parts.hostname.lower(), port, parts.path + (f"?{parts.query}" if parts.query else "")


class NextHops:
    """The next hops this service may call: ``$DEFAULT_NEXT_URL``'s endpoint (its scheme, host, port
    and path, any query) and the URL prefixes of ``$NEXT_URL_ALLOWED`` (comma-separated).

    Why: ``call_url`` and ``X-Next-Url`` come from whoever sends a request; calling any URL they
    name would let them reach, through this service, whatever it can reach (SSRF).
    """

    def __init__(self, default_url: str | None, allowed: str | None) -> None:
        self.default_url = default_url or None
        self.prefixes: list[tuple[str, str, int, str]] = []
        for entry in (allowed or "").split(","):
            if entry.strip():
                try:
                    self.prefixes.append(_url_parts(entry.strip()))
                except ValueError as exc:
                    raise ValueError(f"{NEXT_URL_ALLOWED_ENV}: {entry.strip()!r}: {exc}") from None
        if self.default_url:
            try:
                scheme, host, port, target = _url_parts(self.default_url)
            except ValueError:
                pass  # called as it is (and failing as it will: a 502 that says so), nothing more
            else:
                self.prefixes.append((scheme, host, port, target.partition("?")[0]))

    @classmethod
    def from_environment(cls) -> NextHops:
        return cls(os.environ.get(DEFAULT_NEXT_URL_ENV), os.environ.get(NEXT_URL_ALLOWED_ENV))

    def refusal(self, url: str) -> str | None:
        """None if ``url`` may be called; else why not, in a few words."""
        if url == self.default_url:
            return None
        shown = url if len(url) <= 200 else url[:200] + "..."
        try:
            scheme, host, port, target = _url_parts(url)
        except ValueError as exc:
            return f"next hop {shown!r} refused: {exc}"
        for allowed_scheme, allowed_host, allowed_port, prefix in self.prefixes:
            if (scheme, host, port) == (allowed_scheme, allowed_host, allowed_port) and target.startswith(prefix):
                return None
        return (f"next hop {shown!r} refused: not {DEFAULT_NEXT_URL_ENV}'s endpoint nor under a prefix "
                f"in {NEXT_URL_ALLOWED_ENV}")  # fmt: skip


class WorkParams:
    """cpu_ms, sleep_ms, resp_kb, call_url from the query string or a JSON body."""

    def __init__(self, values: dict[str, Any], next_url: str | None, hops: NextHops) -> None:
        try:
            self.cpu_ms = float(values.get("cpu_ms", 0))
            self.sleep_ms = float(values.get("sleep_ms", 0))
            self.resp_kb = int(values.get("resp_kb", 0))
        except (TypeError, ValueError) as exc:
            raise HTTPException(422, f"cpu_ms, sleep_ms and resp_kb are numbers: {exc}") from None
        if min(self.cpu_ms, self.sleep_ms, self.resp_kb) < 0:
            raise HTTPException(422, "cpu_ms, sleep_ms and resp_kb must not be negative")
        call_url = values.get("call_url")
        if call_url is not None and not isinstance(call_url, str):
            raise HTTPException(422, "call_url is a URL (a string)")
        self.call_url = call_url or next_url or hops.default_url
        refusal = hops.refusal(self.call_url) if self.call_url else None
        if refusal is not None:
            raise HTTPException(403, refusal)


async def work_params(request: Request, hops: NextHops) -> WorkParams:
    values: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        body = await request.body()
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                raise HTTPException(422, "the body is not JSON") from None
            if not isinstance(parsed, dict):
                raise HTTPException(422, "the body is a JSON object of parameters")
            values.update(parsed)
    return WorkParams(values, request.headers.get(NEXT_URL_HEADER), hops)


def work_response(params: WorkParams, cpu_used_ms: float, next_hop: dict | None) -> Response:
    span = current_span()
    payload = {
        "trace_id": span.trace_id if span else None,
        "span_id": span.span_id if span else None,
        "cpu_ms": round(cpu_used_ms, 3),
        "sleep_ms": params.sleep_ms,
        "next": next_hop,
    }
    body = json.dumps(payload).encode()
    padding = params.resp_kb * 1024 - len(body)
    if padding > 0:
        body += b" " * padding  # trailing whitespace: still the same JSON document
    status = 502 if next_hop is not None and next_hop.get("error") else 200
    return Response(body, status_code=status, media_type="application/json")


_session: aiohttp.ClientSession | None = None


@contextlib.asynccontextmanager
async def _close_next_hop_session(app: FastAPI):
    yield
    if _session is not None and not _session.closed:
        await _session.close()


# What a next hop's answer gives back: its status and how long it took (its body is read to the
# end, so that the call is whole and its connection reusable, and dropped: never passed on).


def _hop(url: str, status: int, started: float) -> dict:
    return {"url": url, "status": status, "ms": round((time.perf_counter() - started) * 1000, 3)}


async def call_next_async(url: str) -> dict:
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=NEXT_HOP_TIMEOUT_S))
    started = time.perf_counter()
    try:
        # No redirects: a next hop's Location would lead the call past the allowed hops.
        async with _session.get(url, headers=outgoing_headers(), allow_redirects=False) as reply:
            await reply.read()
            return _hop(url, reply.status, started)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"url": url, "status": None, "error": f"{type(exc).__name__}: {exc}"}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None  # the 3xx is the next hop's answer (an HTTPError below), its Location not followed


# No redirects, and no proxy from the environment (aiohttp's session uses none either).
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def call_next_sync(url: str) -> dict:
    request = urllib.request.Request(url, headers=outgoing_headers())
    started = time.perf_counter()
    try:
        with _opener.open(request, timeout=NEXT_HOP_TIMEOUT_S) as reply:
            reply.read()
            return _hop(url, reply.status, started)
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(OSError):
            exc.read()
        return _hop(url, exc.code, started)
    except (urllib.error.URLError, OSError) as exc:
        return {"url": url, "status": None, "error": f"{type(exc).__name__}: {exc}"}


class KeyValueStore:
    """SQLite in the run folder, one connection per thread (the thread pool's handlers share none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def set(self, key: str, value: bytes) -> None:
        with self._connect() as db:
            db.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (key, value))  # fmt: skip

    def get(self, key: str) -> bytes | None:
        row = self._connect().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None


def create_untraced_app() -> FastAPI:
    """The same service without the middleware (bench/http_service.py measures what the middleware costs)."""
    return create_app(traced=False)


def create_app(run_folder: str | os.PathLike | None = None, node: str | None = None, traced: bool = True) -> FastAPI:
    """The service, writing its events into ``run_folder`` (default: TRACEKIT_LOGS_DIR/TRACEKIT_RUN_ID)."""
    if run_folder is None:
        run_folder = runfolder.run_dir(runfolder.run_id_or_env(None))
    run_folder = runfolder.ensure_writable_dir(Path(run_folder), "run folder")
    hops = NextHops.from_environment()  # a bad NEXT_URL_ALLOWED stops the start, saying which entry
    app = FastAPI(title="tracekit example service", lifespan=_close_next_hop_session)
    if traced:
        app.add_middleware(TracingMiddleware, run_folder=run_folder, node=node)
    store = KeyValueStore(run_folder / "kv.sqlite3")

    @app.api_route("/work", methods=["GET", "POST"])
    async def work(request: Request) -> Response:
        params = await work_params(request, hops)
        next_hop = await call_next_async(params.call_url) if params.call_url else None
        if params.sleep_ms:
            await asyncio.sleep(params.sleep_ms / 1000)
        used = burn_cpu(params.cpu_ms) if params.cpu_ms else 0.0
        return work_response(params, used, next_hop)

    @traced_thread
    def work_in_thread(params: WorkParams) -> Response:
        next_hop = call_next_sync(params.call_url) if params.call_url else None
        if params.sleep_ms:
            time.sleep(params.sleep_ms / 1000)
        used = burn_cpu(params.cpu_ms) if params.cpu_ms else 0.0
        return work_response(params, used, next_hop)

    @app.api_route("/work/sync", methods=["GET", "POST"])
    async def work_sync(request: Request) -> Response:
        params = await work_params(request, hops)  # the body is read on the loop, the work done in the pool
        return await run_in_threadpool(work_in_thread, params)

    @app.post("/json/validate")
    async def json_validate(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            document = json.loads(body)
        except ValueError as exc:
            return JSONResponse({"valid": False, "error": str(exc), "bytes": len(body)}, status_code=422)
        return JSONResponse({"valid": True, "type": type(document).__name__, "bytes": len(body),
                             "depth": _depth(document)})  # fmt: skip

    @app.post("/blob/gzip")
    async def blob_gzip(request: Request) -> Response:
        return Response(gzip.compress(await request.body(), compresslevel=6), media_type="application/gzip")

    @app.post("/blob/gunzip")
    async def blob_gunzip(request: Request) -> Response:
        try:
            data = gzip.decompress(await request.body())
        except (OSError, EOFError) as exc:
            raise HTTPException(422, f"the body is not gzip data: {exc}") from None
        return Response(data, media_type="application/octet-stream")

    @app.post("/hash/sha256")
    async def hash_sha256(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)})

    @app.post("/kv/set/{key}")
    async def kv_set(key: str, request: Request) -> JSONResponse:
        value = await request.body()
        await run_in_threadpool(traced_thread(store.set), key, value)
        return JSONResponse({"key": key, "bytes": len(value)})

    @app.get("/kv/get/{key}")
    @traced_thread
    def kv_get(key: str) -> Response:
        value = store.get(key)
        if value is None:
            raise HTTPException(404, f"no key {key!r}")
        return Response(value, media_type="application/octet-stream")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "pid": os.getpid()}

    return app


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
