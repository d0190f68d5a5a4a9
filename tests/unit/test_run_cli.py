"""tracekit-run's arguments and the experiment file, end to end through --dry-run (no node is touched)."""

from pathlib import Path

import pytest

from tracekit.experiment import cli

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"


def dry_run(capsys, *argv: str) -> tuple[int, str, str]:
    """tracekit-run ARGV --dry-run in this process: (exit code, stdout, stderr)."""
    code = cli.main([*argv, "--dry-run"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    assert err.startswith("tracekit-run: error: ") and err.count("\n") == 1, err
    return err.removeprefix("tracekit-run: error: ").rstrip("\n")


def test_the_committed_experiment_plans(capsys):
    code, out, err = dry_run(capsys, str(SMOKE))
    assert code == 0 and "workload: 2 tasks" in out and err == ""


def test_a_billion_laughs_is_refused_at_its_first_anchor(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    levels = "".join(f"  {name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))
    bomb.write_text("name: bomb\nworkload:\n  ffmpeg:\n    generate: {count: 2}\ntags:\n"
                    '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + levels)  # fmt: skip
    assert len(bomb.read_bytes()) < 700
    code, out, err = dry_run(capsys, str(bomb))
    assert code == 2 and out == ""
    assert one_error_line(err) == (f"{bomb}:6: &a: YAML anchors and aliases are not allowed in an experiment; "
                                   "write each value out")  # fmt: skip


def test_an_override_that_is_not_yaml_is_one_line(capsys):
    code, out, err = dry_run(capsys, str(SMOKE), "-e", "collectors.match=[unclosed")
    assert code == 2 and out == ""
    assert one_error_line(err).startswith("-e 'collectors.match=[unclosed': the value is not valid YAML")


@pytest.mark.parametrize(("flag", "message"), [
    ("--run-id", "--run-id '': give a run id (letters, digits, '.', '_', '-') or leave the flag out for "
                 "<experiment name>-<date>-<time>"),
    ("--resume", "--resume '': give the RUN_ID of the run to continue"),
    ("-i", "-i '': give an inventory file or leave the flag out for the experiment's (else inventory/local.yml)"),
    ("--logs-dir", "--logs-dir '': give a folder or leave the flag out for $TRACEKIT_LOGS_DIR (else ./logs)"),
    ("--limit", "--limit '': give an Ansible host pattern (e.g. cloud1) or leave the flag out for every host"),
])  # fmt: skip
def test_an_empty_value_is_an_error_not_the_default(capsys, flag, message):
    code, out, err = dry_run(capsys, str(SMOKE), flag, "")
    assert code == 2 and out == ""
    assert one_error_line(err) == message


@pytest.mark.parametrize("run_id", ["../x", "a b", "x" * 129, " "])
def test_an_unsafe_run_id_is_refused_before_the_experiment_is_read(capsys, run_id):
    code, out, err = dry_run(capsys, "no-such-file.yaml", "--run-id", run_id)
    assert code == 2 and one_error_line(err).startswith(f"--run-id {run_id!r}")


def test_an_empty_experiment_path(capsys):
    code, out, err = dry_run(capsys, "")
    assert code == 2 and one_error_line(err) == "the experiment file is '': give one, e.g. experiments/ffmpeg.yaml"


def test_the_api_refuses_an_empty_run_id_too():
    from tracekit.errors import UsageError
    from tracekit.experiment.runner import run_experiment

    with pytest.raises(UsageError, match="run id '' is empty"):
        run_experiment(SMOKE, run_id="", dry_run=True, out=lambda line: None)


@pytest.mark.parametrize(("override", "message"), [
    ("workload.ffmpeg.generate.size=0x0", "workload.ffmpeg.generate.size: 0x0 is read by YAML as the number 0, not as text; "
                                          "quote it: -e \"workload.ffmpeg.generate.size='0x0'\""),
    ("collectors.match='[unclosed'", "collectors.match: '[unclosed' is not a valid regular expression (Python re): "
                                     "unterminated character set at position 0"),
    ("workload.ffmpeg.generate.count=1000000000", "workload.ffmpeg.generate.count: 1000000000 is out of range: use 1 to 1,000"),
    ("dispatch.timeout=.inf", "dispatch.timeout: .inf is out of range: use 0.001 to 604,800 s"),
    ("collectors.interval_ms=1000.0", "collectors.interval_ms: 1000.0 is not a whole number"),
])  # fmt: skip
def test_bad_values_are_refused_by_the_dry_run(capsys, override, message):
    code, out, err = dry_run(capsys, str(SMOKE), "-e", override)
    assert code == 2 and out == "" and one_error_line(err) == f"{SMOKE}: {message}"


def test_an_inputs_folder_without_files_is_refused_before_anything_starts(tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / ".hidden").write_text("")
    (inputs / "sub").mkdir()
    code, out, err = dry_run(capsys, str(SMOKE), "-e", "workload.ffmpeg={inputs: " + str(inputs) + "}")
    assert code == 2 and out == ""
    assert one_error_line(err) == (
        f"{SMOKE}: workload.ffmpeg.inputs: {inputs} holds no files (hidden ones aside); put the input videos in it "
        f"(e.g. tracekit inputs generate -o {inputs}) or use workload.ffmpeg.generate")
    code, out, err = dry_run(capsys, str(SMOKE), "-e", "workload.ffmpeg={inputs: " + str(tmp_path / "none") + "}")
    assert code == 2 and one_error_line(err) == (
        f"{SMOKE}: workload.ffmpeg.inputs: {tmp_path / 'none'} is not a folder on this machine, where the controller "
        "(cloud0) reads it; make it and put the input videos in it, or use workload.ffmpeg.generate")
    (inputs / "a.mp4").write_bytes(b"")
    code, out, err = dry_run(capsys, str(SMOKE), "-e", "workload.ffmpeg={inputs: " + str(inputs) + "}")
    assert code == 0 and f"workload: 1 tasks from inputs from {inputs}" in out


def test_an_inputs_folder_is_checked_only_where_the_controller_reads_it(tmp_path):
    from tracekit.experiment.render import Inventory
    from tracekit.experiment.spec import check_here, load_experiment

    experiment = load_experiment(SMOKE, ["workload.ffmpeg={inputs: " + str(tmp_path / "none") + "}"])
    elsewhere = Inventory(tmp_path / "inventory.yml", "cloud0", ("cloud1",),
                          {"cloud0": {"ansible_host": "192.0.2.10"}, "cloud1": {"ansible_host": "192.0.2.11"}})  # fmt: skip
    check_here(experiment, elsewhere)  # not visible from here: the dispatcher checks it there
    here = Inventory(tmp_path / "inventory.yml", "cloud0", ("cloud1",),
                     {"cloud0": {"ansible_connection": "local"}, "cloud1": {"ansible_host": "192.0.2.11"}})  # fmt: skip
    with pytest.raises(Exception, match="is not a folder on this machine"):
        check_here(experiment, here)
