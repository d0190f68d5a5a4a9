"""parse's output check samples every JSON Lines file: the first lines,
lines spread evenly over the whole file, and the last line."""

from tracekit.trace import validate


def test_samples_cover_the_start_the_middle_and_the_end(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(b'{"i":%d}\n' % i for i in range(100_000)))
    sampled = list(validate.sampled_lines(path))
    numbers = [int(line[5:-2]) if line.endswith(b"\n") else int(line[5:-1]) for _, line in sampled]
    assert numbers[: validate.FIRST_LINES] == list(range(validate.FIRST_LINES))
    assert [n for n, _ in sampled[: validate.FIRST_LINES]] == list(range(1, validate.FIRST_LINES + 1))
    spread = numbers[validate.FIRST_LINES :]
    assert len(spread) == validate.SPREAD_LINES + 1 and spread[-1] == 99_999
    assert spread == sorted(spread) and max(b - a for a, b in zip(spread, spread[1:])) < 2_000


def test_short_files_are_checked_once(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"i":1}\n{"i":2}\n')
    assert [n for n, _ in validate.sampled_lines(path)] == [1, 2]
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"")
    assert list(validate.sampled_lines(empty)) == []
