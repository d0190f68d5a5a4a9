"""Every command has a complete --help; argument errors exit 2."""

import re

import pytest

from tracekit import cli
from tracekit.errors import UsageError

COMMANDS = [
    [], ["collect"], ["collect", "start"], ["collect", "run"], ["collect", "stop"], ["collect", "status"],
    ["wrap"], ["ffmpeg"], ["inputs"], ["inputs", "generate"], ["parse"], ["adapt"], ["adapt", "nginx"],
    ["export"], ["export", "opendc"], ["report"], ["compare"], ["verify"], ["verify", "opendc"], ["worker"], ["dispatch"],
    ["show"], *(["export", name] for name in ("alibaba", "google", "wta")), *(["verify", name] for name in ("alibaba", "google", "wta")),
]  # fmt: skip


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "tracekit")
def test_help(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tracekit")


def test_collect_start_help_names_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["collect", "start", "--help"])
    out = capsys.readouterr().out
    for flag in ["--run-id", "--node-id", "--stage", "--interval-ms", "--match", "--match-cmdline",
                 "--pid-dir", "--no-host", "--logs-dir", "--cpu-mhz", "TRACEKIT_LOGS_DIR"]:  # fmt: skip
        assert flag in out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bogus"])
    assert exit_info.value.code == 2


def test_bad_durations_list(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["inputs", "generate", "-o", "x", "--durations", "5,ten"])
    assert exit_info.value.code == 2
    assert "comma-separated list" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback(tmp_path):
    """tracekit ... | head: the pipe closes before the command writes; exit 141 (as SIGPIPE), no traceback."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "tracekit", "collect", "status", "--run-id", "r1", "--logs-dir", str(tmp_path)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # long before the child's Python has started and written its line
    stderr = child.stderr.read().decode()
    child.stderr.close()
    assert child.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_parse_takes_a_format_s_own_options_checked_before_any_work():
    from tracekit.cli import _export_options

    assert _export_options(["google.window_s=60", "opendc.merge_tolerance_pct=5"], ["opendc", "google"]) == \
        {"google": {"window_s": 60.0}, "opendc": {"merge_tolerance_pct": 5.0}}  # fmt: skip
    for given, said in ((["google.window_s"], "give FORMAT.OPTION=VALUE"), (["window_s=60"], "give FORMAT.OPTION=VALUE"),
                        (["wta.x=1"], "wta is not exported here (--export wta)"),
                        (["google.window_s=0"], "--export-option google: --window-s 0: give a window of whole"),
                        (["google.windows=60"], "google has no option 'windows'; its options: window_s")):  # fmt: skip
        with pytest.raises(UsageError, match=re.escape(said)):
            _export_options(given, ["google"])
