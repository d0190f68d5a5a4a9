"""Connecting to Redis: URL + password from a file or the environment (every client of Tracekit's).

The password never travels on a command line (it would show in ``ps``):
``--redis-url`` carries host, port and database only; the password comes
from ``--redis-password-file`` or ``$REDIS_PASSWORD``. Errors name the URL
(without any password) and say what to check.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import redis

from tracekit.errors import RedisUnavailable, UsageError

PASSWORD_ENV = "REDIS_PASSWORD"
CONNECT_TIMEOUT_S = 3.0


def read_password(password_file: str | Path | None) -> str | None:
    if password_file is not None:
        try:
            return Path(password_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --redis-password-file {password_file}: {exc.strerror}") from None
    return os.environ.get(PASSWORD_ENV) or None


def safe_url(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def connect(url: str, password_file: str | Path | None = None, check: bool = True, *,
            connect_timeout_s: float = CONNECT_TIMEOUT_S, timeout_s: float = 30.0) -> redis.Redis:  # fmt: skip
    """A client for ``url``; with ``check`` it must answer PING within seconds."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise UsageError(f"--redis-url {safe_url(url)!r} must look like redis://HOST:PORT/DB")
    if parts.password:
        raise UsageError(
            f"--redis-url {safe_url(url)} carries a password: command lines are visible to every user; "
            f"put it in a file for --redis-password-file or in ${PASSWORD_ENV}"
        )
    client = redis.Redis.from_url(
        url,
        password=read_password(password_file),
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s,
        decode_responses=True,
        # Bytes that are no UTF-8 (anyone with the password can write them) become U+FFFD: the entry is then
        # refused by its signature, not a UnicodeDecodeError in the middle of a worker or the dispatcher.
        encoding_errors="replace",
        health_check_interval=10,
    )
    if check:
        ping(client, url)
    return client


def ping(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except redis.AuthenticationError:
        raise RedisUnavailable(
            f"{safe_url(url)}: authentication failed; check --redis-password-file or ${PASSWORD_ENV}"
        ) from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc):
            raise RedisUnavailable(
                f"{safe_url(url)}: the server wants a password; give --redis-password-file or ${PASSWORD_ENV}"
            ) from None
        raise RedisUnavailable(f"{safe_url(url)}: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(f"cannot reach {safe_url(url)}: {exc}; is redis-server running there?") from None


T = TypeVar("T")


def retrying(call: Callable[[], T], url: str, outage_timeout_s: float) -> T:
    """Run a Redis call, riding out a connection outage of up to ``outage_timeout_s``."""
    deadline = time.monotonic() + outage_timeout_s
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"lost the connection to {safe_url(url)} for {outage_timeout_s:.0f} s ({exc})"
                ) from None
            time.sleep(0.5)
