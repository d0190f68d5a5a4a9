"""The run's task key: the dispatcher signs what it places, workers run only what it signed.

input:  a key file (``--task-key-file``) or ``$TRACEKIT_TASK_KEY``; payloads
output: HMAC-SHA256 signatures (hex) of queue entries and terminal records

Anyone who can write to Redis (its password is one secret among several on
a node) could otherwise add a task with an argv of their own, which a
worker, running as root, would run. The key is a second per-run secret that
never crosses Redis: tracekit-run hands it to each node in a root-only file.
A worker runs a queue entry only if its signature verifies under the key and
for its own node; anything else is rejected, counted and reported. The
dispatcher likewise takes only terminal records its workers signed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from tracekit.errors import UsageError

TASK_KEY_ENV = "TRACEKIT_TASK_KEY"
KEY_BYTES = 32
MIN_KEY_CHARS = 32  # a key given by hand: at least this much text


class TaskSigner:
    """Signs and verifies under one run's key. What is signed names its kind (and a task its node):
    a signed task is not a valid record, and a task placed on one node does not run on another."""

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_CHARS:
            raise UsageError(f"the task key holds {len(key)} bytes; give at least {MIN_KEY_CHARS}")
        self._key = key

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "\n".join(parts).encode(), hashlib.sha256).hexdigest()

    def sign_task(self, node: str, payload: str) -> str:
        return self._mac("task", node, payload)

    def task_is_signed(self, node: str, payload: str, signature: str | None) -> bool:
        return _same(self.sign_task(node, payload), signature)

    def sign_record(self, payload: str) -> str:
        return self._mac("record", payload)

    def record_is_signed(self, payload: str, signature: str | None) -> bool:
        return _same(self.sign_record(payload), signature)


def _same(expected: str, given: str | None) -> bool:
    """A signature as given (any text someone put in Redis) equals the expected one; compared as bytes:
    compare_digest refuses str with non-ASCII characters by raising."""
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def read_task_key(key_file: str | Path | None) -> TaskSigner:
    """The signer of ``key_file``, else of ``$TRACEKIT_TASK_KEY``; a one-line error when neither holds a key."""
    if key_file is not None:
        try:
            text = Path(key_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --task-key-file {key_file}: {exc.strerror}") from None
        where = f"--task-key-file {key_file}"
    else:
        text = os.environ.get(TASK_KEY_ENV, "").strip()
        where = f"${TASK_KEY_ENV}"
        if not text:
            raise UsageError(
                f"no task key: give --task-key-file FILE or ${TASK_KEY_ENV}: one secret per run, the same for the "
                "dispatcher and its workers (e.g. python3 -c 'import secrets; print(secrets.token_hex(32))')"
            )
    if len(text) < MIN_KEY_CHARS:
        raise UsageError(f"{where} holds {len(text)} characters; a task key needs at least {MIN_KEY_CHARS}")
    return TaskSigner(text.encode())


def new_key_text() -> str:
    return secrets.token_hex(KEY_BYTES)


def write_new_key(path: Path) -> Path:
    """A new key in a root-only file (kept if the file exists: a resumed run keeps its key)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(new_key_text())
    return path
