"""tracekit.sched.signing: the run's task key, what it signs, and where it is read from."""

from __future__ import annotations

import stat

import pytest

from tracekit.errors import UsageError
from tracekit.sched.signing import TASK_KEY_ENV, TaskSigner, read_task_key, write_new_key

KEY = b"0123456789abcdef" * 4


def test_a_task_verifies_only_for_its_node_and_payload_under_its_key():
    signer = TaskSigner(KEY)
    payload = '{"v":1,"task_id":"t1","argv":["true"]}'
    signature = signer.sign_task("cloud1", payload)
    assert signer.task_is_signed("cloud1", payload, signature)
    assert not signer.task_is_signed("cloud2", payload, signature)  # placed on cloud1, not to run on cloud2
    assert not signer.task_is_signed("cloud1", payload.replace("true", "id"), signature)  # altered
    assert not signer.task_is_signed("cloud1", payload, None)
    assert not signer.task_is_signed("cloud1", payload, "")
    assert not TaskSigner(KEY[::-1]).task_is_signed("cloud1", payload, signature)  # another run's key
    # A signed task is not a signed record, nor the other way round.
    assert not signer.record_is_signed(payload, signature)
    assert signer.record_is_signed(payload, signer.sign_record(payload))
    assert not signer.task_is_signed("cloud1", payload, signer.sign_record(payload))


def test_the_key_comes_from_its_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(TASK_KEY_ENV, raising=False)
    with pytest.raises(UsageError, match=r"no task key: give --task-key-file FILE or \$TRACEKIT_TASK_KEY"):
        read_task_key(None)
    monkeypatch.setenv(TASK_KEY_ENV, KEY.decode())
    payload = "p"
    assert read_task_key(None).sign_task("n", payload) == TaskSigner(KEY).sign_task("n", payload)
    path = write_new_key(tmp_path / "secrets" / "r1.taskkey")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    first = path.read_text()
    assert len(first) == 64 and write_new_key(path).read_text() == first  # kept: a resumed run keeps its key
    assert read_task_key(path).sign_task("n", payload) == TaskSigner(first.encode()).sign_task("n", payload)
    with pytest.raises(UsageError, match="cannot read --task-key-file .*nothing"):
        read_task_key(tmp_path / "nothing")
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(UsageError, match="holds 3 characters; a task key needs at least 32"):
        read_task_key(tmp_path / "short")
