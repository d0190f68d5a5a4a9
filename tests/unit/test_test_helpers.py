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
