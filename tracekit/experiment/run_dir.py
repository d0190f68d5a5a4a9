"""One run's folder on the controller: its layout, its records and its secret.

input:  <logs dir>, RUN_ID, what the runner learns as it goes (attempts, phases, hosts)
output: <logs dir>/<RUN_ID>/ experiment.yaml, resolved.json, inventory.yml,
        manifest.json, status.json, ansible/ (ansible-runner's private data
        dir), attempts/<n>/ (an earlier attempt's data);
        <logs dir>/.secrets/<RUN_ID>.redis (the Redis password, 0600) and
        <RUN_ID>.taskkey (the key the dispatcher signs tasks with, 0600)

Like ansible-runner's private data dir, one object knows the folder: the
runner asks it for paths and tells it what happened; only it writes
status.json and manifest.json (atomically: a reader never sees half a file).
A status write that fails once the nodes may be running (a full disk) is
noted, never raised: stopping and fetching must go on; the run then ends
failed, its record being incomplete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import importlib.metadata as md
import json
import os
import platform
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tracekit import __version__, runfolder
from tracekit.errors import RunError
from tracekit.jsonl import write_json
from tracekit.experiment.attempts import KEPT_ASIDE
from tracekit.experiment.render import PHASES
from tracekit.experiment.wheelhouse import find_checkout
from tracekit.sched.signing import write_new_key

STATUS_FILE = "status.json"
MANIFEST_FILE = "manifest.json"
RESOLVED_FILE = "resolved.json"
SECRET_DIR = ".secrets"
LOCK_DIR = ".locks"  # <logs dir>/.locks/<RUN_ID>: held by the tracekit-run of the run

WriteJson = Callable[[Path, Any], None]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")




def set_phase(status: dict[str, Any], phase: str, **values: Any) -> None:
    """Update one phase's record in ``status``; its duration once it has a start and an end."""
    record = status.setdefault("phases", {}).setdefault(phase, {})
    record.update(values)
    if record.get("start") and record.get("end"):
        start = dt.datetime.fromisoformat(record["start"])
        end = dt.datetime.fromisoformat(record["end"])
        record["duration_s"] = round((end - start).total_seconds(), 3)


def tool_versions() -> dict[str, Any]:
    """What the manifest records of the controller's software."""

    def command(argv: list[str]) -> str | None:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else None

    checkout = find_checkout()
    commit = command(["git", "-C", str(checkout), "rev-parse", "HEAD"])
    dirty = command(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"])
    return {
        "tracekit": __version__,
        "git_commit": commit,
        "git_dirty": bool(dirty) if commit else None,
        "python": platform.python_version(),
        "ansible_core": md.version("ansible-core"),
        "ansible_runner": md.version("ansible-runner"),
        "redis_server": command(["redis-server", "--version"]),
        "ffmpeg": command(["ffmpeg", "-version"]),
    }


class RunDir:
    """<logs dir>/<RUN_ID>/ and the run's secret beside it.

    ``status`` is status.json as the run goes (load_status, begin_attempt,
    phase_*); ``write_errors`` the records that could not be written;
    ``notify`` is told (once) when the first of them fails.
    """

    def __init__(self, logs: Path, run_id: str, write: WriteJson = write_json):
        self.logs = logs
        self.run_id = run_id
        self.path = logs / run_id
        self.status: dict[str, Any] = {}
        self.write_errors: list[str] = []
        self.notify: Callable[[str], None] = lambda _text: None
        self._write = write

    @property
    def status_file(self) -> Path:
        return self.path / STATUS_FILE

    @property
    def manifest_file(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def ansible_dir(self) -> Path:
        """ansible-runner's private data dir (env/, artifacts/<ident>/)."""
        return self.path / "ansible"

    @property
    def secret_file(self) -> Path:
        """This run's Redis password: outside the run folder, so no copy of the folder carries it."""
        return self.logs / SECRET_DIR / f"{self.run_id}.redis"

    @property
    def task_key_file(self) -> Path:
        """This run's task key (tracekit.sched.signing), beside its password."""
        return self.logs / SECRET_DIR / f"{self.run_id}.taskkey"

    def lock_token(self) -> str:
        """Who holds the run's nodes (tracekit_lock): this run folder, on every attempt. A run of the same
        id from another logs folder or machine has another token, so it does not take them as its own."""
        path = self.logs / SECRET_DIR / f"{self.run_id}.owner"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16))
        return path.read_text().strip()

    # -- what is there -------------------------------------------------------------------

    def read_resolved(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / RESOLVED_FILE).read_text())
        except FileNotFoundError:
            raise RunError(
                f"{self.path}: no resolved.json, so not a tracekit-run folder; check the RUN_ID and --logs-dir"
            ) from None
        except ValueError as exc:
            raise RunError(f"{self.path}/resolved.json: not valid JSON ({exc})") from None

    def load_status(self) -> dict[str, Any]:
        """status.json as the last attempt left it ({} if unreadable: every phase runs again)."""
        try:
            self.status = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            self.status = {}
        return self.status

    def is_taken(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    # -- a new run -------------------------------------------------------------------------

    def create(
        self,
        experiment_file: Path,
        inventory_copy: str,
        resolved: dict[str, Any],
        tags: dict[str, Any],
        versions: Callable[[], dict[str, Any]] = tool_versions,
    ) -> None:
        """A new run's folder (an existing one of the same RUN_ID removed): its inputs, manifest and status."""
        if self.path.exists() and any(self.path.iterdir()):
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(experiment_file, self.path / "experiment.yaml")
        (self.path / "inventory.yml").write_text(inventory_copy)
        self._write(self.path / RESOLVED_FILE, resolved)
        self.status = {"run_id": self.run_id, "state": "running", "phases": {p: {"state": "pending"} for p in PHASES}}
        self._write(self.manifest_file, {"run_id": self.run_id, "start": now(), "tags": tags, "versions": versions()})

    def make_secret(self, renew: bool = False, password_of: Path | None = None) -> Path:
        """This run's Redis password and task key, root-only; returns the password's file.

        Kept by a resumed attempt that does not start the nodes again (its stop
        still speaks to the running Redis); ``renew`` makes new ones (an attempt
        that starts them again gets a new, empty Redis), the password copied from
        ``password_of`` when given (a sweep's runs share its Redis: SharedNodes).
        """
        folder = self.secret_file.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        if renew:
            self.secret_file.unlink(missing_ok=True)
            self.task_key_file.unlink(missing_ok=True)
        if not self.secret_file.exists():
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password_of.read_text() if password_of is not None else secrets.token_urlsafe(32))
        write_new_key(self.task_key_file)
        return self.secret_file

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Held by the tracekit-run working on this run (one at a time): another one is refused, naming it.
        The lock (<logs dir>/.locks/<RUN_ID>) goes with the process, however it ends: a resume then
        knows that the earlier attempt's tracekit-run is gone."""
        folder = self.logs / LOCK_DIR
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / self.run_id, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another tracekit-run"
                raise RunError(
                    f"run {self.run_id} is being run by {holder}; wait for it to end, or stop it (kill -TERM its pid)"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"tracekit-run pid {os.getpid()}".encode())
            yield
        finally:
            os.close(fd)

    # -- status.json -------------------------------------------------------------------------

    def begin_attempt(self, phases: list[str], keep_aside: int | None) -> int:
        """Record a new attempt of ``phases`` (moving attempt ``keep_aside``'s data aside first); its number."""
        self.status["state"] = "running"
        self.status.setdefault("attempts", []).append({"start": now(), "phases": phases})
        if keep_aside is not None:
            self.keep_aside(keep_aside)
        self.write_status()
        return len(self.status["attempts"])

    def keep_aside(self, number: int) -> None:
        """Keep what attempt ``number`` collected under attempts/<n>/ (nodes keep theirs as logs/<RUN_ID>.attempt<n>/)."""
        kept = self.path / "attempts" / str(number)
        for name in KEPT_ASIDE:
            if (self.path / name).exists():
                kept.mkdir(parents=True, exist_ok=True)
                os.replace(self.path / name, kept / name)

    def write_status(self) -> None:
        """Write status.json; an error is raised (nothing runs yet)."""
        self._write(self.status_file, self.status)

    def save_status(self) -> None:
        """Write status.json; an error (a full disk) is noted, never allowed to stop the cleanup."""
        try:
            self._write(self.status_file, self.status)
        except OSError as exc:
            self._note_write_error(self.status_file, exc)

    def _note_write_error(self, path: Path, exc: OSError, say: bool = True) -> None:
        if not self.write_errors and say:
            self.notify(f"cannot write {path} ({exc.strerror or exc}); stopping and fetching go on")
        self.write_errors.append(f"{path}: {exc.strerror or exc}")

    def failed_before_start(self, error: str) -> None:
        self.status["state"] = "failed"
        self.status["error"] = error
        self.write_status()

    def phase_started(self, phase: str) -> None:
        set_phase(self.status, phase, state="running", start=now(), end=None, error=None)
        self.save_status()

    def phase_ended(self, phase: str, state: str, error: str | None, hosts: dict[str, dict[str, Any]]) -> None:
        set_phase(self.status, phase, state=state, end=now(), error=error, hosts=hosts)
        self.save_status()

    def phase_skipped(self, phase: str, reason: str) -> None:
        set_phase(self.status, phase, state="skipped", reason=reason)

    def finish(self, state: str, warnings: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        """The run's end: manifest and status completed, the secret gone after a good run; (final state, manifest).

        A record that could not be written makes the run failed: its own record is incomplete.
        ``warnings`` (what the trace lost or the run refused) make a succeeded run 'warning'.
        """
        if warnings:
            self.status["warnings"] = list(warnings)
            if state == "succeeded":
                state = "warning"
        try:
            manifest = self.finish_manifest()
        except OSError as exc:
            manifest = {}
            self._note_write_error(self.manifest_file, exc, say=False)
        if self.write_errors:
            state = "failed"
            self.status["error"] = f"could not be written: {self.write_errors[0]}"
        self.status["state"] = state
        self.status["end"] = now()
        self.save_status()
        if state in ("succeeded", "warning"):  # every phase done: nothing to resume, the nodes freed
            self.secret_file.unlink(missing_ok=True)  # kept otherwise, for --resume
            self.task_key_file.unlink(missing_ok=True)
            (self.logs / SECRET_DIR / f"{self.run_id}.owner").unlink(missing_ok=True)
        return state, manifest

    def finish_manifest(self) -> dict[str, Any]:
        """manifest.json with the run's end and what each node said of itself."""
        try:
            manifest = json.loads(self.manifest_file.read_text())
        except (OSError, ValueError):
            manifest = {}
        manifest["end"] = now()
        nodes = {}
        for folder in sorted(p for p in (self.path / "nodes").glob("*") if p.is_dir()):
            entry: dict[str, Any] = {}
            for name, key in ((runfolder.NODE_FACTS, "facts"), ("versions.json", "versions"), (runfolder.CLOCK, "clock")):
                try:
                    entry[key] = json.loads((folder / name).read_text())
                except (OSError, ValueError):
                    pass
            nodes[folder.name] = entry
        manifest["nodes"] = nodes
        self._write(self.manifest_file, manifest)
        return manifest
