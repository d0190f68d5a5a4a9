"""tracekit report on a real captured run, on runs with missing pieces, and in a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape
from matplotlib import image

from tests.helpers import tracekit_cmd
from tests.integration.test_pipeline import BURNER, _capture_node
from tracekit.adapters.ffmpeg import generate_clips
from tracekit.errors import RunFolderError
from tracekit.report import make_report, plots
from tracekit.trace.export.opendc import export_opendc
from tracekit.trace.parse import parse_run

SECTIONS = ["summary", "timelines", "gantt", "queue", "longest"]


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Path:
    """Two nodes captured for real (ffmpeg, a CPU burner, a failing command), parsed and exported."""
    root = tmp_path_factory.mktemp("report")
    [clip] = generate_clips(root / "inputs", count=1, durations_s=[2], size="320x180", seed=3)
    ffmpeg = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-re", "-i", str(clip)]
    cloud1 = _capture_node(root, "cloud1", [([*ffmpeg, str(root / "a.mp4")], "ffmpeg", "t-ffmpeg"),
                                            (["sh", "-c", "sleep 0.3; exit 3"], "fail", "t-fail")])  # fmt: skip
    cloud2 = _capture_node(root, "cloud2", [([sys.executable, "-c", BURNER], "burn", "t-burn")])
    run = root / "run"
    shutil.copytree(cloud1, run / "nodes" / "cloud1")
    shutil.copytree(cloud2, run / "nodes" / "cloud2")
    parse_run(run)
    export_opendc(run, run / "opendc")
    return run


@pytest.fixture
def run(captured, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(captured, copy)
    return copy


class _Page(HTMLParser):
    """The ids of the page's sections, its image sources and every URL it refers to."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.references: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        self.references += [value for name, value in attrs.items() if name in ("src", "href") and value]


def notes(page: str) -> list[str]:
    """Each note's text (a section's notes are on one line of the page)."""
    return re.findall(r'<p class="note">(.*?)</p>', page)


def test_a_captured_run_gives_every_section_with_its_figure(run, capsys):
    assert subprocess.run(tracekit_cmd("report", str(run)), capture_output=True, text=True).returncode == 0
    index = run / "report" / "index.html"
    text = index.read_text()
    page = _Page(text)
    assert page.sections == SECTIONS  # not an HTTP run: no HTTP section
    # Every figure is in the page itself and beside it; the page refers to nothing outside itself.
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(ref.startswith(("#", "data:")) for ref in page.references), page.references
    for name in ("timelines", "gantt", "queue", "longest"):
        assert (run / "report" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "could not be drawn" not in text
    # The summary's figures come from the trace: 2 tasks done and 1 failed, both nodes' rows.
    assert "<td>tasks in the trace: ok / failed</td><td>2 / 1</td>" in text
    assert "<td>cloud1</td>" in text and "<td>cloud2</td>" in text
    audit = json.loads((run / "cctf" / "audit.json").read_text())
    assert f"of {audit['invocations']} ({audit['invocations_with_samples_pct']} %)" in text
    # Contention, a row per node; this machine is shared with other tests, so its note may or may not be there.
    assert "<th>… beside other work (contended)</th>" in text
    section = audit["contention"]["nodes"]
    assert set(section) == {"cloud1", "cloud2"}
    assert [n for n in notes(text) if "shared saturated CPUs" in n] == [
        escape(n["note"]) for _, n in sorted(section.items()) if n["note"]]
    # The only other note: a run by hand has no dispatcher, hence no placements.
    others = [n for n in notes(text) if "shared saturated CPUs" not in n]
    assert len(others) == 1 and "no placement events" in others[0]


def test_the_longest_tasks_show_their_fragments_next_to_the_host_samples(run):
    from tracekit.report.data import load_run

    view = load_run(run)
    assert [d.invocation["task_id"] for d in view.longest][:1] == [max(
        (t for t in view.tasks if t["ok"]), key=lambda t: t["ts_end"] - t["ts_start"])["task_id"]]  # fmt: skip
    for demand in view.longest:
        # The fragments cover the task exactly (one more edge than fragments) and demand what it used.
        assert len(demand.fragment_start_ms) == len(demand.fragment_cores) + 1
        task = demand.invocation
        assert demand.fragment_start_ms[0] == task["ts_start"] and demand.fragment_start_ms[-1] == task["ts_end"]
        assert len(demand.host_ts_ms) > 0 and (demand.host_busy_cores >= 0).all()
    burn = next(d for d in view.longest if d.invocation["task_id"] == "t-burn")
    # The burner kept a core busy, unless its node's CPUs were shared with other work (other tests on this
    # machine): its demand is then the CPU it got, and the trace says so.
    cloud2 = json.loads((run / "cctf" / "audit.json").read_text())["contention"]["nodes"]["cloud2"]
    assert burn.fragment_cores.max() > 0.5 or cloud2["contended_task_share"] > 0, cloud2


@pytest.mark.parametrize("missing", ["host samples", "a node's folder", "the OpenDC export", "a successful task"])
def test_missing_pieces_give_notes_never_a_failure(run, missing):
    if missing == "host samples":
        for path in run.glob("nodes/*/host*.csv"):
            path.unlink()
        shutil.rmtree(run / "cctf")
        parse_run(run)
    elif missing == "a node's folder":
        shutil.rmtree(run / "nodes" / "cloud2")
        shutil.rmtree(run / "cctf")
        shutil.rmtree(run / "opendc")
        parse_run(run)
        export_opendc(run, run / "opendc")
    elif missing == "the OpenDC export":
        shutil.rmtree(run / "opendc")
    else:  # every task failed
        invocations = run / "cctf" / "invocations.jsonl"
        records = [json.loads(line) for line in invocations.read_text().splitlines()]
        invocations.write_text("".join(json.dumps({**r, "ok": False, "status": 1}) + "\n" for r in records))
    result = make_report(run)
    text = result.index.read_text()
    assert _Page(text).sections == SECTIONS and "could not be drawn" not in text
    found = " ".join(notes(text))
    if missing == "host samples":
        assert "holds no host samples" in found and "timelines" not in [p.stem for p in result.figures]
    elif missing == "a node's folder":
        assert "<td>cloud2</td>" not in text and "<td>cloud1</td>" in text and len(result.figures) == 4
    elif missing == "the OpenDC export":
        assert "opendc/ is missing" in found and "longest" not in [p.stem for p in result.figures]
    else:
        assert "no task finished successfully" in found and "<td>tasks in the trace: ok / failed</td><td>0 / 3</td>" in text


def test_a_figure_that_fails_costs_only_that_figure(run, monkeypatch, capsys):
    def broken(view, out):
        raise ValueError("no good")

    monkeypatch.setattr(plots, "gantt", broken)
    result = make_report(run)
    text = result.index.read_text()
    assert "this figure could not be drawn: ValueError: no good" in text and len(result.figures) == 3
    assert "Tasks per worker: this figure could not be drawn" in capsys.readouterr().err


def test_a_run_that_was_not_parsed_is_one_line_error(tmp_path):
    (tmp_path / "r1" / "nodes").mkdir(parents=True)
    with pytest.raises(RunFolderError, match="run 'tracekit parse"):
        make_report(tmp_path / "r1")
    done = subprocess.run(tracekit_cmd("report", str(tmp_path / "r1")), capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "has no cctf/ folder" in done.stderr


# -- in a real browser --------------------------------------------------------
# The browser's own background requests (updates, time) are switched off, and whatever is left goes to a
# proxy on a closed loopback port: nothing leaves the machine. The page's own requests are told apart by
# their initiator (the browser's are "not an origin").
CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--no-pings", "--proxy-server=127.0.0.1:9"]  # fmt: skip


def chromium(tmp_path: Path, page: Path, *mode: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Open ``page`` in headless Chromium; (the run, the URLs the page itself requested)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is not installed (make test installs it: apt-get install -y chromium)"
    net_log = tmp_path / f"net-{len(list(tmp_path.glob('net-*')))}.json"
    argv = [binary, *CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={net_log}", *mode, page.as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = [e["params"]["url"] for e in log["events"]
                 if e["type"] == start_job and "url" in e.get("params", {})
                 and e["params"].get("initiator") != "not an origin"]  # fmt: skip
    return done, requested


def test_the_page_in_headless_chromium_has_its_sections_is_not_blank_and_fetches_nothing(run, tmp_path):
    index = make_report(run).index
    dumped, requested = chromium(tmp_path, index, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    rendered = _Page(dumped.stdout)
    assert rendered.sections == SECTIONS and len(rendered.images) == 4
    assert requested == []
    shot = tmp_path / "shot.png"
    taken, requested = chromium(tmp_path, index, "--window-size=1200,2400", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    assert requested == []
    pixels = image.imread(shot)[..., :3]
    # Not blank: text and plots give many colours and a good share of non-white pixels.
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50 and (pixels.min(axis=2) < 0.9).mean() > 0.02


def test_the_network_check_sees_a_page_that_fetches(tmp_path):
    # The check above must be able to fail: a page with a remote image is caught (the proxy refuses it).
    page = tmp_path / "fetching.html"
    page.write_text('<html><body><img src="http://192.0.2.1/x.png"><p>x</p></body></html>')
    done, requested = chromium(tmp_path, page, "--dump-dom")
    assert done.returncode == 0 and requested == ["http://192.0.2.1/x.png"]
