"""tracekit-run --clean on the controller's side: what it picks, what it refuses, what it says.

Runs made by hand (tests.run_folders) whose nodes were never reached: no Ansible call. The nodes' side
is tests/integration/test_clean.py.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.run_folders import make_run_folder, make_sweep_folder
from tracekit.errors import RunError, UsageError
from tracekit.experiment import cli
from tracekit.experiment.clean import clean_runs, parse_age
from tracekit.experiment.run_dir import RunDir


def unreached(path, **kwargs):
    """A run folder whose resolved.json names no hosts (it ended before its nodes were touched)."""
    make_run_folder(path, **kwargs)
    resolved = json.loads((path / "resolved.json").read_text())
    resolved.pop("hosts", None)
    (path / "resolved.json").write_text(json.dumps(resolved))
    return path


def aged(path, days):
    past = time.time() - days * 86400
    os.utime(path / ("sweep.json" if (path / "sweep.json").exists() else "status.json"), (past, past))


def test_ages_read_in_units_and_a_bad_one_says_how():
    assert parse_age("7d") == 7 * 86400 and parse_age("12h") == 43200 and parse_age("1.5m") == 90 and parse_age("2w") == 14 * 86400
    with pytest.raises(UsageError, match=r"--older-than '7 days': give a number and a unit, s m h d or w"):
        parse_age("7 days")


def test_a_finished_run_goes_with_its_secrets_and_lock_and_the_others_stay(tmp_path):
    logs = tmp_path / "logs"
    unreached(logs / "old")
    unreached(logs / "other")
    RunDir(logs, "old").make_secret()
    with RunDir(logs, "old").hold():
        pass
    result = clean_runs(["old"], logs_dir=logs)
    assert result.exit_code == 0 and result.removed == ["old"] and result.kept == []
    assert result.lines == [f"cleaned run old: {logs / 'old'} " + result.lines[0].split(f"{logs / 'old'} ", 1)[1]]
    assert "on its nodes: nothing on the nodes" in result.lines[0]
    assert not (logs / "old").exists() and (logs / "other").is_dir()
    assert sorted(p.name for p in (logs / ".secrets").iterdir()) == [] and not (logs / ".locks" / "old").exists()


def test_a_run_its_tracekit_run_holds_or_that_did_not_end_is_kept_and_named(tmp_path):
    logs = tmp_path / "logs"
    unreached(logs / "busy")
    unreached(logs / "died", state="running")
    with RunDir(logs, "busy").hold():
        result = clean_runs(["busy", "died"], logs_dir=logs)
    assert result.exit_code == 1 and result.kept == ["busy", "died"]
    assert result.lines[0] == f"kept run busy: run busy is being run by tracekit-run pid {os.getpid()}; wait for it to end, or stop it (kill -TERM its pid)"
    assert result.lines[1] == ("kept run died: run died did not end (its tracekit-run was killed): stop what it left "
                               "first with tracekit-run --stop died")  # fmt: skip
    assert (logs / "busy" / "status.json").is_file() and (logs / "died" / "status.json").is_file()


def test_a_run_whose_inventory_is_gone_keeps_its_folder_and_says_to_give_one(tmp_path):
    logs = tmp_path / "logs"
    make_run_folder(logs / "moved")
    resolved = json.loads((logs / "moved" / "resolved.json").read_text())
    resolved.update(hosts=["cloud0", "cloud1"], inventory_path=str(tmp_path / "gone.yml"))
    (logs / "moved" / "resolved.json").write_text(json.dumps(resolved))
    result = clean_runs(["moved"], logs_dir=logs)
    assert result.kept == ["moved"] and (logs / "moved").is_dir()
    assert result.lines == [f"kept run moved: its inventory {tmp_path / 'gone.yml'} is gone: give the inventory of its nodes with -i"]


def test_older_than_picks_runs_and_sweeps_by_when_they_were_last_written(tmp_path, capsys):
    logs = tmp_path / "logs"
    for name, days in (("week-old", 8), ("fresh", 0)):
        aged(unreached(logs / name), days)
    sweep = make_sweep_folder(logs / "sweep-old", {"dispatch.policy": ["lpt"]}, 1, lambda _v, _r: {})
    aged(sweep, 30)
    (logs / "not-a-run").mkdir()  # neither: never touched
    assert cli.main(["--clean", "--older-than", "7d", "--dry-run", "--logs-dir", str(logs)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in said] == ["would clean sweep sweep-old", "would clean run week-old"]
    assert (logs / "week-old").is_dir() and (logs / "sweep-old").is_dir()  # a dry run removes nothing
    result = clean_runs([], older_than="7d", logs_dir=logs)
    assert result.removed == ["sweep-old", "week-old"]
    assert sorted(p.name for p in logs.iterdir() if not p.name.startswith(".")) == ["fresh", "not-a-run"]
    assert clean_runs([], older_than="7d", logs_dir=logs).lines == [
        f"nothing to clean: no run or sweep under {logs} last written more than 7d ago"]


def test_bad_requests_are_refused_before_anything_goes(tmp_path, capsys):
    logs = tmp_path / "logs"
    with pytest.raises(RunError, match=r"no such run or sweep folder; check the RUN_ID and --logs-dir"):
        clean_runs(["absent"], logs_dir=logs)
    for argv, error in (
        (["--clean"], "--clean: name the runs (--clean RUN_ID ...) or give an age (--clean --older-than 7d)"),
        (["--clean", "../x"], "--clean '../x' is not a safe folder name"),
        (["--older-than", "7d"], "--older-than AGE goes with --clean: tracekit-run --clean --older-than 7d"),
        (["--clean", "r1", "--resume", "r1"], "--clean removes finished runs; give no experiment file, --resume"),
    ):
        assert cli.main([*argv, "--logs-dir", str(logs)]) == 2
        assert error in capsys.readouterr().err
