"""Small helpers for tests (imported as tests.helpers)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def named_binary(tmp_path: Path, name: str, target: str = "sleep") -> str:
    """A symlink to ``target`` named ``name``: its processes have comm == name."""
    link = tmp_path / "bin" / name
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(shutil.which(target))
    return str(link)


def ended(pid: int) -> bool:
    """Is the process gone, or a zombie (ended, not yet reaped)?"""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_until(predicate, timeout_s: float = 15.0, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (never asserts on time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def tracekit_cmd(*args: str) -> list[str]:
    """argv of the installed ``tracekit`` console script (a real subprocess)."""
    return [str(VENV_BIN / "tracekit"), *args]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def followed_processes(path: Path) -> list[dict]:
    """The collector's processes.jsonl as parse reads it: one record per process (pid and start time), its
    last line (a process's line is written again when its name or command line changed at an exec)."""
    records = read_jsonl(path) if path.exists() else []
    return list({(r["pid"], r["create_time_ms"]): r for r in records}.values())


def csv_records(lines: list[str]) -> list[dict]:
    """Rows of a raw CSV file (header first) as dicts: ints, floats and strings as written, None for empty fields."""
    if not lines:
        return []
    rows = list(csv.reader(lines))

    def value(text: str):
        if text == "":
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    return [{name: value(text) for name, text in zip(rows[0], row)} for row in rows[1:]]


def read_csv(path: Path) -> list[dict]:
    """A raw CSV file of the collector (proc.csv, host.csv, ...) as dicts."""
    return csv_records(path.read_text().splitlines())


def read_proc_csv(path: Path) -> list[dict]:
    """proc.csv rows as dicts of ints (None for empty fields)."""
    return read_csv(path)


class ProcessTableWatch:
    """Samples every process's command line and environment, in a thread, for secrets.

    ``secrets`` is called at each round (a secret may appear during the run,
    e.g. a file the runner generates); ``seen`` collects (secret's name, what
    held it) for every sighting. Use as a context manager around the work.
    """

    def __init__(self, secrets, interval_s: float = 0.01):
        import threading

        self.secrets = secrets
        self.interval_s = interval_s
        self.seen: list[tuple[str, str]] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="process-table-watch", daemon=True)

    def __enter__(self) -> "ProcessTableWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        import os

        while not self._stop.is_set():
            wanted = {name: value.encode() for name, value in (self.secrets() or {}).items() if value}
            if wanted:
                self.rounds += 1
                for pid in os.listdir("/proc"):
                    if not pid.isdigit():
                        continue
                    for part in ("cmdline", "environ"):
                        data = _read_proc_file(f"/proc/{pid}/{part}")
                        for name, secret in wanted.items():
                            if secret in data:
                                shown = data.replace(b"\0", b" ").replace(secret, b"<" + name.encode() + b">")
                                self.seen.append((name, f"/proc/{pid}/{part}: {shown[:300].decode(errors='replace')}"))
            self._stop.wait(self.interval_s)


def _read_proc_file(path: str) -> bytes:
    """The whole file (empty once its process is gone). os.open and os.read: a third less CPU than open(),
    and the watch reads two files of every process each round (its thread took an eighth of the machine
    during a watched run, time the run itself then lacked)."""
    import os

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except OSError:
        pass
    finally:
        os.close(fd)
    return data


def file_secret(path: Path):
    """A callable for ProcessTableWatch: the text of ``path`` once it has some (kept after it is removed).

    A file read between its creation and its write is empty: read again (kept empty, a whole run
    went unwatched once, rounds 0).
    """
    seen: dict[str, str] = {}

    def secrets() -> dict[str, str]:
        if "value" not in seen:
            try:
                value = path.read_text().strip()
            except OSError:
                return {}
            if not value:
                return {}
            seen["value"] = value
        return {path.name: seen["value"]}

    return secrets


def processes_under(root: Path, redis_port: int | None = None) -> list[str]:
    """Live processes whose command line names ``root`` (collectors, workers) or the run's Redis port."""
    import os

    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        line = " ".join(proc.info["cmdline"] or [])
        if str(root) in line or (redis_port is not None and f":{redis_port}" in line and "redis-server" in line):
            if proc.info["pid"] != os.getpid():
                found.append(f"{proc.info['pid']} {line[:150]}")
    return found


def kill_processes_under(root: Path, redis_port: int | None = None) -> None:
    import os
    import signal

    for entry in processes_under(root, redis_port):
        try:
            os.kill(int(entry.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def make_wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A pure-Python wheel of one module, made here (no build backend, no index): ``name`` imports as
    ``name`` and holds ``module_text``. For requirements that only a local folder can resolve."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": module_text,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tracekit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def docs_samples():
    """docs/make_samples.py as a module: the manual's sample outputs and how they are checked."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "make_samples.py"
    spec = importlib.util.spec_from_file_location("make_samples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
