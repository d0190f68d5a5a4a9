from pathlib import Path

import pytest

from tracekit import runfolder
from tracekit.errors import RunFolderError, UsageError


@pytest.mark.parametrize("good", ["r1", "20261125T101500Z", "demo-20261125T101500Z", "a.b_c-d"])
def test_safe_run_ids(good):
    assert runfolder.validate_run_id(good) == good


@pytest.mark.parametrize("bad", ["", None, "../x", "a/b", "..", "a..b", ".hidden", "-x", "x" * 129, "a b"])
def test_unsafe_run_ids(bad):
    with pytest.raises(UsageError):
        runfolder.validate_run_id(bad)


def test_logs_dir_precedence(monkeypatch):
    monkeypatch.delenv(runfolder.LOGS_DIR_ENV, raising=False)
    assert runfolder.logs_dir() == Path("logs")
    monkeypatch.setenv(runfolder.LOGS_DIR_ENV, "/env/logs")
    assert runfolder.logs_dir() == Path("/env/logs")
    assert runfolder.logs_dir("/flag/logs") == Path("/flag/logs")
    assert runfolder.run_dir("r1") == Path("/env/logs/r1")


def test_run_id_from_environment(monkeypatch):
    monkeypatch.setenv(runfolder.RUN_ID_ENV, "from-env")
    assert runfolder.run_id_or_env(None) == "from-env"
    assert runfolder.run_id_or_env("flag") == "flag"


def test_unwritable_folder_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunFolderError, match="cannot write run folder .*file/sub"):
        runfolder.ensure_writable_dir(blocker / "sub", "run folder")
    assert runfolder.ensure_writable_dir(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"


def test_events_file_names(tmp_path):
    assert runfolder.events_file(tmp_path, "ffmpeg") == tmp_path / "events.ffmpeg.jsonl"
    with pytest.raises(UsageError):
        runfolder.events_file(tmp_path, "../x")


def test_an_empty_run_id_flag_is_not_the_environment_s(monkeypatch):
    monkeypatch.setenv(runfolder.RUN_ID_ENV, "from-env")
    with pytest.raises(UsageError, match="run id '' is empty"):
        runfolder.run_id_or_env("")
    monkeypatch.setenv(runfolder.RUN_ID_ENV, "")
    with pytest.raises(UsageError, match=f"no run id: pass --run-id or set {runfolder.RUN_ID_ENV}"):
        runfolder.run_id_or_env(None)
