"""The tests' own helpers that a test's verdict depends on."""

from __future__ import annotations

from tests.helpers import file_secret


def test_a_secret_file_is_read_once_it_holds_text_and_kept_after_it_is_gone(tmp_path):
    # Read between its creation and its write, the file was empty, and that emptiness was kept:
    # the whole run's process table went unwatched (ProcessTableWatch.rounds 0, seen on a fresh machine).
    path = tmp_path / "run.redis"
    secrets = file_secret(path)
    assert secrets() == {}
    path.write_text("")
    assert secrets() == {}
    path.write_text("s3cret\n")
    assert secrets() == {"run.redis": "s3cret"}
    path.unlink()
    assert secrets() == {"run.redis": "s3cret"}


def test_a_collector_a_failed_test_left_is_killed_by_its_pidfile(tmp_path):
    # A collector's pidfile holds "PID CREATE_TIME": read as one number it was skipped, and the collector of
    # every failed collector test ran on (two were found after a suite, still sampling).
    import subprocess

    from tests.conftest import _stop_collectors

    left = subprocess.Popen(["sleep", "300"])
    try:
        (tmp_path / "r1").mkdir()
        (tmp_path / "r1" / "collector.pid").write_text(f"{left.pid} 1796596600000\n")
        _stop_collectors(tmp_path)
        assert left.wait(timeout=10) == -9
    finally:
        left.kill()
        left.wait()
