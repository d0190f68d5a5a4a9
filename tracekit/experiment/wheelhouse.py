"""The wheels a node installs Tracekit from, built once per checkout state.

input:  the Tracekit checkout this runs from, the installed versions of what
        the node pieces import (collector, wrap, worker, dispatcher)
output: ``<cache>/<id>/wheelhouse.tar`` (the wheels and a requirements.txt
        pinning each) and ``wheelhouse.id``; the tracekit_node role installs
        from it with ``pip --no-index``, so nodes need no package index

Nodes get only what the node pieces need (pyarrow for the node's part of
the parse, no Ansible: export and verify run on the machine that ran
tracekit-run), which keeps a node install to seconds. The id hashes the sources and the pinned versions, so an edited
checkout is reinstalled and an unchanged one is not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tracekit.errors import TracekitError

# What `tracekit collect|wrap|worker|dispatch|clock|inputs|parse --node-part|serve|load` import on
# a node (serve: the HTTP service on uvicorn, FastAPI for the example, aiohttp for its next hops).
# pip is there to run from its wheel: the node venv is made --without-pip (ensurepip is slow).
NODE_DISTRIBUTIONS = ("pip", "psutil", "redis", "hiredis", "pyyaml", "jsonschema", "pyarrow",
                      "fastapi", "uvicorn", "uvloop", "httptools", "aiohttp", "orjson")  # fmt: skip
ID_FILE = "wheelhouse.id"
ARCHIVE = "wheelhouse.tar"


def find_checkout() -> Path:
    """The source checkout Tracekit runs from (the folder with pyproject.toml, tracekit/, roles/)."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "roles").is_dir() and (root / "tracekit").is_dir():
        return root
    raise TracekitError(
        f"tracekit-run runs from a source checkout (it builds the nodes' wheels from it); {root} is not one: "
        "clone the repository and run its .venv/bin/tracekit-run"
    )


def _pins() -> list[str]:
    pins = []
    for name in NODE_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise TracekitError(f"{name} is not installed here; reinstall Tracekit ('make venv')") from None
    return pins


def _source_files(checkout: Path) -> list[Path]:
    files = [checkout / "pyproject.toml"]
    for folder in ("tracekit", "schemas"):
        files += sorted(p for p in (checkout / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def wheelhouse_id(checkout: Path) -> str:
    digest = hashlib.sha256()
    digest.update(f"python {sys.version_info.major}.{sys.version_info.minor}\n".encode())
    for pin in _pins():
        digest.update(pin.encode() + b"\n")
    for path in _source_files(checkout):
        digest.update(str(path.relative_to(checkout)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _pip_wheel(args: list[str], where: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", str(where), *args],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise TracekitError(f"building the nodes' wheels failed (pip wheel {' '.join(args)}): {tail}")


def _requirement(wheel: Path) -> str:
    name, version = wheel.name.split("-")[:2]
    return f"{name}=={version}"


def build_wheelhouse(cache_dir: Path, checkout: Path | None = None) -> Path:
    """The wheelhouse folder for this checkout, built if not cached yet."""
    checkout = checkout or find_checkout()
    key = wheelhouse_id(checkout)
    final = cache_dir / key
    if (final / ID_FILE).is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".building-") as tmp:
        wheels = Path(tmp) / "wheels"
        _pip_wheel(["--no-deps", str(checkout)], wheels)
        _pip_wheel(_pins(), wheels)
        built = sorted(wheels.glob("*.whl"))
        (wheels / "requirements.txt").write_text("".join(f"{_requirement(w)}\n" for w in built))
        staged = Path(tmp) / "staged"
        staged.mkdir()
        with tarfile.open(staged / ARCHIVE, "w") as tar:
            for path in sorted(wheels.iterdir()):
                tar.add(path, arcname=path.name)
        (staged / ID_FILE).write_text(key)
        try:
            os.replace(staged, final)
        except OSError:  # built meanwhile by a concurrent run
            if not (final / ID_FILE).is_file():
                raise
    _prune(cache_dir, keep=final)
    return final


def _prune(cache_dir: Path, keep: Path, kept: int = 3) -> None:
    """Keep the few newest wheelhouses; an old checkout's are rebuilt if ever needed."""
    houses = sorted((p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for old in houses[:-kept]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


# -- a workload's own Python packages ---------------------------------------------------------

WORKLOAD_ID = "wheels.id"
WORKLOAD_ARCHIVE = "wheels.tar"
WORKLOAD_REQUIREMENTS = "requirements.txt"


def build_workload_wheels(requirements: Path, into: Path, with_tracekit: bool, where: str) -> Path:
    """The wheels of a workload's requirements file, resolved here once (nodes reach no package index).

    ``into`` (in the run folder: the run keeps the exact packages it used)
    gets ``wheels.tar``, a ``requirements.txt`` pinning each wheel and
    ``wheels.id`` (a hash of the wheels: the nodes' venv of these wheels is
    named by it and made once). ``with_tracekit``: the packages must live
    beside Tracekit's own (an ASGI app Tracekit wraps in its process), so
    Tracekit's pinned versions constrain the resolution. A requirement pip
    cannot resolve is a TracekitError of one line, ``where`` first. Built
    anew each time (what ``into`` held is replaced once the new ones are there).
    """
    into.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into.parent, prefix=".building-wheels-") as tmp:
        wheels = Path(tmp) / "wheels"
        args = ["--requirement", str(requirements)]
        if with_tracekit:
            constraints = Path(tmp) / "tracekit-pins.txt"
            constraints.write_text("".join(f"{pin}\n" for pin in _pins() if not pin.startswith("pip==")))
            args += ["--constraint", str(constraints)]
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", str(wheels), *args],
            capture_output=True, text=True, cwd=requirements.parent,
        )  # fmt: skip
        if result.returncode != 0:
            raise TracekitError(f"{where}: pip cannot resolve {requirements} into wheels: {_pip_problem(result.stderr)}")
        built = sorted(wheels.glob("*.whl"))
        digest = hashlib.sha256()
        for wheel in built:
            digest.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
        staged = Path(tmp) / "staged"
        staged.mkdir()
        (staged / WORKLOAD_REQUIREMENTS).write_text("".join(f"{_requirement(w)}\n" for w in built))
        with tarfile.open(staged / WORKLOAD_ARCHIVE, "w") as tar:
            for wheel in built:
                tar.add(wheel, arcname=wheel.name)
        (staged / WORKLOAD_ID).write_text(digest.hexdigest()[:16])
        if into.exists():
            shutil.rmtree(into)
        os.replace(staged, into)
    return into


def _pip_problem(stderr: str) -> str:
    """pip's own words for what it could not resolve: the line naming the package, else its last ERROR."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for marker in ("No matching distribution found for", "Could not find a version that satisfies", "ResolutionImpossible",
                   "conflict"):  # fmt: skip
        found = next((line for line in lines if marker in line), None)
        if found:
            return found.removeprefix("ERROR: ")[:300]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors[-1] if errors else (lines[-1] if lines else "pip wheel failed")).removeprefix("ERROR: ")[:300]
