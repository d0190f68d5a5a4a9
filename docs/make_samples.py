"""The sample outputs of README.md and docs/*.md, written from real runs so that they cannot go stale.

    .venv/bin/python docs/make_samples.py          # as root, from the checkout: rewrites every sample block

A sample block is a ```text block after a line ``<!-- sample of SOURCE ... -->``: SOURCE is ``the quick start``
(the marked block of docs/by-hand.md that starts RUN_ID=test001, run as written in a scratch folder, then the
``tracekit export|verify|show`` commands its samples show beyond it, on the same run) or
``tracekit-run`` (``tracekit-run experiments/smoke.yaml`` on inventory/local.yml with node roots and a Redis
port of its own). The block is a transcript: ``$ COMMAND`` lines, each followed by what it printed. To show
another command of a source, add its ``$`` line and run this script. tests/integration/test_readme.py runs
the same sources and checks each block against what they print (measured values masked, counts kept).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
PAGES = [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]
RUN_MARKER = "<!-- The block below is run by tests/integration/test_readme.py. -->"
SAMPLE = re.compile(r"(<!-- sample of (the quick start|tracekit-run) [^\n]*-->\n```text\n)(.*?)(```)", re.S)
_MARK = "@@tracekit-sample-line "
# What a real run measures (times, sizes, rates, samples, shares) changes from run to run; the counts of
# what it ran do not. A number followed by one of these is kept, any other masked.
_COUNTED = r"(?:/\d+)? (?:invocations?|tasks?|failed|nodes?|node\(s\)|workers?|done)\b"
# A measured value may be missing (null: a task too short for a sample): it is masked as a number is.
_NUMBER = re.compile(r"\bnull\b|\d+(?:\.\d+)?(?:e[-+]?\d+)?(?!\.?\d)(?!" + _COUNTED + r")")


def marked_blocks() -> list[tuple[Path, str]]:
    """Every bash block after a RUN_MARKER in the pages, with its page."""
    found = []
    for page in PAGES:
        for part in page.read_text().split(RUN_MARKER)[1:]:
            found.append((page, re.search(r"```bash\n(.*?)```", part, re.S).group(1)))
    return found


def block_of(run_id: str) -> str:
    """The marked block whose first line sets RUN_ID=<run_id>."""
    [block] = [b for _page, b in marked_blocks() if re.match(rf"RUN_ID={re.escape(run_id)}\s", b)]
    return block


def block_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a block runs in: this venv first on PATH, no run of the caller's."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(extra or {})}
    for name in ("TRACEKIT_LOGS_DIR", "TRACEKIT_RUN_ID", "REDIS_PASSWORD"):
        env.pop(name, None)
    return env


def transcript(block: str, cwd: Path, env: dict[str, str], timeout_s: float = 240) -> tuple[int, dict[str, str]]:
    """Run ``block`` in one bash (-euo pipefail) in ``cwd``: its exit status and, per command line (with
    $RUN_ID written out), what it printed on stdout and stderr, in order. Output goes to a file, not a pipe:
    a background process the block left would hold a pipe open."""
    run_id = re.match(r"RUN_ID=(\S+)", block)
    lines = [line for line in block.splitlines() if line.strip()]
    script = "exec 2>&1\n" + "".join(f"echo '{_MARK}{i}'\n{line}\n" for i, line in enumerate(lines))
    out = cwd / ".transcript"
    with open(out, "w") as stdout:
        code = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, stdout=stdout,
                              stderr=subprocess.STDOUT, env=env, timeout=timeout_s).returncode  # fmt: skip
    printed: dict[str, str] = {}
    current = None
    for text in out.read_text().splitlines(keepends=True):
        if text.startswith(_MARK):
            line = lines[int(text[len(_MARK):])]
            current = line.replace("$RUN_ID", run_id[1]) if run_id else line
            current = re.sub(r"\s+#.*$", "", current)  # the block's comments are not part of the command
            printed[current] = ""
        elif current is not None:
            printed[current] += text
    return code, printed


def fill(sample: str, printed: dict[str, str]) -> str:
    """The sample's ``$`` lines with what each printed (a line the source does not run: an error)."""
    commands = [line[2:] for line in sample.splitlines() if line.startswith("$ ")]
    missing = [c for c in commands if c not in printed]
    if missing:
        raise KeyError(f"not a command of its source: {missing}")
    return "".join(f"$ {c}\n{printed[c]}" for c in commands)


def masked(text: str) -> str:
    """``text`` with what a run measures masked (numbers not counting tasks, nodes, ...) and runs of spaces
    made one (columns aligned to a measured value's width), for comparison."""
    return re.sub(r" +", " ", _NUMBER.sub("#", text))


# Lines a real run prints or not depending on timing and the machine's load: notes and warnings (a task
# shorter than a sampling interval, no process seen by a collector that polls, contention beside the tasks)
# and tracekit-run's contention line.
_OPTIONAL = re.compile(r"^ *(note|warning): |saturated CPUs")


def stale(sample: str, printed: dict[str, str]) -> str | None:
    """How ``sample`` differs from what its source printed (measured values masked, lines that depend on the
    machine's load left out), as a diff; None when it does not."""
    import difflib

    def compared(text: str) -> list[str]:
        return [masked(line) for line in text.splitlines() if not _OPTIONAL.search(line)]

    expected, actual = compared(sample), compared(fill(sample, printed))
    if expected == actual:
        return None
    return "\n".join(difflib.unified_diff(expected, actual, "the sample", "what it printed", lineterm=""))


def samples(page_text: str) -> list[tuple[str, str]]:
    """(source, transcript) of each sample block of a page."""
    return [(m[2], m[3]) for m in SAMPLE.finditer(page_text)]


def rewrite(sources: dict[str, dict[str, str]]) -> list[Path]:
    """Every sample block that is stale filled from ``sources`` (source -> command -> output); the pages changed."""
    changed = []
    for page in PAGES:
        text = page.read_text()
        # A block still true (measured values aside) stays as it is: no churn from run to run.
        new = SAMPLE.sub(lambda m: m[0] if stale(m[3], sources[m[2]]) is None else m[1] + fill(m[3], sources[m[2]]) + m[4],
                         text)  # fmt: skip
        if new != text:
            page.write_text(new)
            changed.append(page)
    return changed


# -- the sources ---------------------------------------------------------------------------------------


# Commands a quick start sample may show beyond its block: more of the same run (other formats, a table's rows).
_FOLLOW_UPS = ("tracekit export ", "tracekit verify ", "tracekit show ")


def quick_start_transcript(folder: Path) -> tuple[int, dict[str, str]]:
    """The quick start's block run in ``folder``, then the commands its samples show that the block does not
    run (each page's, in order: another export of the same run, a table's first rows), in one bash after it."""
    code, printed = transcript(block_of("test001"), folder, block_env())
    if code != 0:
        return code, printed
    more: list[str] = []
    for page in PAGES:
        for source, sample in samples(page.read_text()):
            for command in (line[2:] for line in sample.splitlines() if line.startswith("$ ")):
                if source == "the quick start" and command not in printed and command not in more:
                    if not command.startswith(_FOLLOW_UPS) or re.search(r"[;&|$`<>()\\\n]", command):
                        raise KeyError(f"{page.name}: a quick start sample shows {command!r}, which its block does not "
                                       "run (only a plain tracekit export|verify|show of the same run may follow it)")  # fmt: skip
                    more.append(command)
    if more:  # exports first, then their checks, then tables' rows (the README shows rows of every format)
        more.sort(key=lambda command: [command.startswith(prefix) for prefix in _FOLLOW_UPS].index(True))
        code, after = transcript("\n".join(more), folder, block_env())
        printed.update(after)
    return code, printed


def quick_start(folder: Path) -> dict[str, str]:
    code, printed = quick_start_transcript(folder)
    if code != 0:
        raise SystemExit(f"the quick start failed (exit {code}):\n" + "".join(printed.values()))
    return printed


def smoke_run(folder: Path) -> dict[str, str]:
    """tracekit-run experiments/smoke.yaml on the local inventory moved into ``folder`` (a free Redis port)."""
    sys.path.insert(0, str(CHECKOUT))
    from tests.inventories import local_inventory

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inventory = local_inventory(folder, port)
    logs = folder / "logs"
    run_id = "smoke-20261207-101500"
    argv = ["tracekit-run", "experiments/smoke.yaml", "-i", str(inventory), "--logs-dir", str(logs), "--run-id", run_id]
    done = subprocess.run([str(Path(sys.executable).parent / argv[0]), *argv[1:]], cwd=CHECKOUT, capture_output=True,
                          text=True, env=block_env(), timeout=900)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"tracekit-run failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return {"tracekit-run experiments/smoke.yaml": as_logs(done.stdout, logs)}


def as_logs(output: str, logs: Path) -> str:
    """A run's output with its logs folder written as the default one, ./logs."""
    return output.replace(f"{logs}/", "logs/")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tracekit-samples-") as scratch:
        root = Path(scratch)
        (root / "quick").mkdir()
        (root / "site").mkdir()
        sources = {"the quick start": quick_start(root / "quick"), "tracekit-run": smoke_run(root / "site")}
        try:
            changed = rewrite(sources)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print("\n".join(f"rewrote {p.relative_to(CHECKOUT)}" for p in changed) or "every sample was up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
