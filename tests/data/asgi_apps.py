"""Bare ASGI apps (no framework) behind tracekit's middleware, for tests/integration/test_http_middleware.py."""

from __future__ import annotations

import asyncio
import os

from tracekit.adapters.http import TracingMiddleware, current_span


async def plain(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":  # reads the whole body, answers with it
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":  # three chunks, no Content-Length
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"a" * 1000, b"b" * 2000, b"c" * 3000):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/fail":
        raise RuntimeError("the handler failed")
    elif path == "/fail-midstream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("failed after the first chunk")
    elif path == "/span":
        span = current_span()
        text = f"{span.trace_id} {span.span_id} {span.parent_span_id} {span.tracestate}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": text})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})


app = TracingMiddleware(plain, run_folder=os.environ["TEST_RUN_FOLDER"], node="cloud1")
