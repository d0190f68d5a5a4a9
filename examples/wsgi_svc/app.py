"""A service that is not an ASGI app: a WSGI app on the standard library's server, writing an
nginx-format access log (the "extended" format of tracekit.adapters.nginx: with each request's
size, duration and trace id). experiments/http-command.yaml runs it as a command service:

    python3 app.py --host 127.0.0.1 --port 8080 --access-log access.log

GET /work?cpu_ms=4&sleep_ms=2 burns that much CPU and waits that long; GET /health answers ok.
"""

from __future__ import annotations

import argparse
import threading
import time
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

LOCK = threading.Lock()


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:  # the access log below is the log
        pass


def burn(ms: float) -> None:
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        sum(i * i for i in range(200))


def make_app(access_log: str):
    log = open(access_log, "a", buffering=1)  # noqa: SIM115 - open for the server's life

    def app(environ, start_response):
        started = time.time()
        path, query = environ.get("PATH_INFO", "/"), parse_qs(environ.get("QUERY_STRING", ""))
        if path == "/work":
            burn(float(query.get("cpu_ms", ["0"])[0]))
            time.sleep(float(query.get("sleep_ms", ["0"])[0]) / 1000)
            status, body = "200 OK", b'{"ok": true}'
        elif path == "/health":
            status, body = "200 OK", b"ok"
        else:
            status, body = "404 Not Found", b"not found"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        ended = time.time()
        request = f"{environ['REQUEST_METHOD']} {path}{'?' + environ['QUERY_STRING'] if environ.get('QUERY_STRING') else ''} HTTP/1.1"
        traceparent = environ.get("HTTP_TRACEPARENT", "")
        trace_id = traceparent.split("-")[1] if traceparent.count("-") == 3 else "-"
        line = (f'{environ.get("REMOTE_ADDR", "-")} - - [{time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(ended))}] '
                f'"{request}" {status.split()[0]} {len(body)} "-" "{environ.get("HTTP_USER_AGENT", "-")}" '
                f'{int(environ.get("CONTENT_LENGTH") or 0)} {ended - started:.3f} "{trace_id}"\n')
        with LOCK:
            log.write(line)
        return [body]

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--access-log", default="access.log")
    args = parser.parse_args()
    make_server(args.host, args.port, make_app(args.access_log), server_class=Server, handler_class=Quiet).serve_forever()


if __name__ == "__main__":
    main()
