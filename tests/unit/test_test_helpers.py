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


def test_the_run_s_redis_client_waits_for_its_password_to_be_written(tmp_path):
    # Read between the secret file's creation and its write, the password was "": the attacker thread of
    # test_run_safety polled a client that Redis refused for 300 s and missed the run (seen under load).
    from tests.integration.test_run_safety import run_redis

    secrets = tmp_path / ".secrets"
    assert run_redis(tmp_path, "r1", 6379) is None
    secrets.mkdir()
    (secrets / "r1.redis").write_text("")
    assert run_redis(tmp_path, "r1", 6379) is None
    (secrets / "r1.redis").write_text("s3cret\n")
    client = run_redis(tmp_path, "r1", 6379)
    assert client is not None and client.connection_pool.connection_kwargs["password"] == "s3cret"


def test_the_process_table_watch_sees_a_secret_in_a_process_s_arguments_and_in_one_s_environment():
    # Every "no process showed the password" of the end-to-end tests rests on it; the environment is longer
    # than one read of the watch's (the secret after 100 kB).
    import secrets
    import subprocess

    from tests.helpers import ProcessTableWatch, wait_until

    in_argv, in_environ = secrets.token_hex(16), secrets.token_hex(16)
    holders = [subprocess.Popen(["sh", "-c", "sleep 60", "sh", in_argv]),
               subprocess.Popen(["sleep", "60"], env={"PADDING": "x" * 100_000, "TK_VALUE": in_environ})]  # fmt: skip
    try:
        with ProcessTableWatch(lambda: {"argv": in_argv, "environ": in_environ}) as watch:
            wait_until(lambda: {name for name, _ in watch.seen} == {"argv", "environ"}, what="both sightings")
        where = {name: held.split(":")[0] for name, held in watch.seen}
        assert where == {"argv": f"/proc/{holders[0].pid}/cmdline", "environ": f"/proc/{holders[1].pid}/environ"}
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
