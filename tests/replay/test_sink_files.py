"""How `kappa sink` names, finishes and resumes its files, without a broker."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from replay.sink_files import (
    NewestFileCheck,
    PartitionFile,
    RollPolicy,
    file_name,
    finished_range,
    last_finished,
    last_line,
    partition_directory,
    partitions_with_files,
    remove_every_unfinished,
    remove_unfinished,
    resume_offset,
)


def test_names_sort_as_the_offsets_they_cover() -> None:
    names = [file_name(0, 9), file_name(10, 99), file_name(100, 2**63 - 1)]
    assert names == sorted(names)
    assert [finished_range(n) for n in names] == [(0, 9), (10, 99), (100, 2**63 - 1)]
    assert finished_range(".00000000000000000000.jsonl.abc.tmp") is None
    assert finished_range("notes.txt") is None


def test_only_partitions_with_a_finished_file_are_said_to_have_files(tmp_path: Path) -> None:
    """What a start compares with the topic's partitions: a partition whose files a sink
    never finished (a temporary file, removed at start) holds nothing of the topic."""
    assert partitions_with_files(tmp_path, "orders.user-totals") == []
    for p in (2, 3, 12):
        partition_directory(tmp_path, "orders.user-totals", p).mkdir(parents=True)
    (partition_directory(tmp_path, "orders.user-totals", 12) / file_name(0, 9)).write_text("")
    (partition_directory(tmp_path, "orders.user-totals", 2) / file_name(0, 0)).write_text("")
    (partition_directory(tmp_path, "orders.user-totals", 3) / ".0.jsonl.x.tmp").write_text("")
    assert partitions_with_files(tmp_path, "orders.user-totals") == [2, 12]  # as numbers
    assert partitions_with_files(tmp_path, "orders.revenue-1m") == []


def test_reading_goes_on_after_the_last_finished_file(tmp_path: Path) -> None:
    assert resume_offset(tmp_path / "missing") == 0
    assert resume_offset(tmp_path) == 0
    for first, last in ((0, 41), (42, 99)):
        (tmp_path / file_name(first, last)).write_bytes(b"{}\n")
    (tmp_path / ".00000000000000000100.jsonl.x.tmp").write_bytes(b"{}\n")  # not finished
    assert resume_offset(tmp_path) == 100


def test_a_stopped_sinks_temporary_files_are_removed_and_finished_ones_kept(
    tmp_path: Path,
) -> None:
    finished = tmp_path / file_name(0, 9)
    finished.write_bytes(b"{}\n")
    (tmp_path / ".00000000000000000010.jsonl.x.tmp").write_bytes(b"{}\n")
    assert remove_unfinished(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [finished.name]
    assert remove_unfinished(tmp_path / "missing") == 0


def test_a_sink_removes_the_unfinished_files_of_outputs_it_no_longer_follows(
    tmp_path: Path,
) -> None:
    followed = partition_directory(tmp_path, "orders.revenue-1m", 0)
    dropped = partition_directory(tmp_path, "orders.user-totals", 3)
    for d in (followed, dropped):
        d.mkdir(parents=True)
        (d / ".00000000000000000000.jsonl.x.tmp").write_bytes(b"{}\n")
        (d / file_name(0, 0)).write_bytes(b"{}\n")
    (tmp_path / "sink.json").write_text("{}")
    assert remove_every_unfinished(tmp_path) == 2
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []
    assert len(list(tmp_path.rglob("*.jsonl"))) == 2  # finished files stay


def test_files_tile_the_log_and_end_at_their_last_line(tmp_path: Path) -> None:
    where = partition_directory(tmp_path, "orders.revenue-1m", 3)
    f = PartitionFile(where, first=0)
    f.add(0, None, now=0.0)  # a window still open: no line, and no file yet
    assert f.finish() is None and not where.exists()
    f.add(1, b'{"a":1}\n', now=0.0)
    f.add(2, b'{"a":2}\n', now=0.0)
    f.add(3, None, now=0.0)  # after the last line: the next file's
    (being_written,) = where.iterdir()
    assert being_written.name.startswith(".")  # hidden
    first = f.finish()
    assert first is not None and (first.first, first.last, first.results) == (0, 2, 2)
    assert first.path == where / file_name(0, 2)
    assert first.path.read_bytes() == b'{"a":1}\n{"a":2}\n'
    f.add(7, b'{"a":3}\n', now=1.0)  # 3 gave no line, 4-6 are gone: in this file's range
    second = f.finish()
    assert second is not None and (second.first, second.last) == (3, 7)
    assert sorted(p.name for p in where.iterdir()) == [file_name(0, 2), file_name(3, 7)]
    assert resume_offset(where) == 8
    assert last_finished(where) == (where / file_name(3, 7), 7)
    assert last_line(second.path) == b'{"a":3}'


def test_the_last_line_is_read_from_the_end_of_a_file_of_any_size(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 50)) for i in range(3000)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert last_line(path, chunk=7) == lines[-1]
    assert last_line(path) == lines[-1]
    path.write_bytes(b"only\n")
    assert last_line(path, chunk=2) == b"only"
    assert last_finished(tmp_path) is None


def test_a_file_is_due_at_its_count_or_its_age_and_never_empty(tmp_path: Path) -> None:
    policy = RollPolicy(max_results=2, max_age_s=10.0)
    f = PartitionFile(tmp_path, first=0)
    assert not f.due(100.0, policy)  # nothing to finish, however long it waited
    f.add(0, b"{}\n", now=5.0)
    assert not f.due(14.9, policy)
    assert f.due(15.0, policy)  # 10 s after its first line
    f.add(1, b"{}\n", now=5.1)
    assert f.due(5.1, policy)  # its count


def test_a_discarded_file_leaves_nothing_and_is_read_again(tmp_path: Path) -> None:
    f = PartitionFile(tmp_path, first=5)
    f.add(5, b"{}\n", now=0.0)
    f.discard()
    assert list(tmp_path.iterdir()) == []
    assert resume_offset(tmp_path) == 0


def test_finished_files_get_the_umasks_permissions(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        f = PartitionFile(tmp_path, first=0)
        f.add(0, b"{}\n", now=0.0)
        done = f.finish()
    finally:
        os.umask(old)
    assert done is not None and stat.S_IMODE(done.path.stat().st_mode) == 0o640


def newest_file(tmp_path: Path, lines: list[bytes], first: int, last: int) -> Path:
    path = tmp_path / file_name(first, last)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_a_topic_read_again_must_give_the_newest_files_lines_over_its_range(
    tmp_path: Path,
) -> None:
    # Offsets 10..14: a result, a record giving none (an open window), two results, the last.
    path = newest_file(tmp_path, [b"a", b"b", b"c", b"d"], 10, 14)
    same = [(10, b"a\n"), (11, None), (12, b"b\n"), (13, b"c\n"), (14, b"d\n")]
    check = NewestFileCheck(path, 10, 14, log_start=0)
    assert (check.start, check.whole) == (10, True)
    assert [check.take(o, line) for o, line in same] == [None] * 5
    assert check.done
    assert check.take(15, b"e\n") is None  # after LAST: the sink's to write, not the check's

    def first_problem(records: list[tuple[int, bytes | None]]) -> str | None:
        check = NewestFileCheck(path, 10, 14, log_start=0)
        problems = [p for o, line in records if (p := check.take(o, line)) is not None]
        check.close()
        return problems[0] if problems else None

    # The same last result as the files, but another before it: a topic made anew.
    assert first_problem([(10, b"a\n"), (12, b"X\n"), (13, b"c\n"), (14, b"d\n")]) == (
        "holds at offset 12 another result than its files"
    )
    assert first_problem([(10, b"a\n"), (12, b"b\n"), (14, b"d\n")]) == (
        "holds at offset 14 another result than its files"
    )
    assert first_problem([(10, b"a\n"), (12, b"b\n"), (13, b"c\n"), (14, None)]) == (
        "gives no result at offset 14, where its files' last line is"
    )
    assert first_problem([(10, b"a\n"), (12, b"b\n"), (13, b"c\n"), (15, b"d\n")]) == (
        "holds no record at offset 14, where its files' last line is"
    )
    assert first_problem([(12, b"b\n"), (13, b"c\n"), (14, b"d\n")]) == (
        "holds at offset 12 another result than its files"  # its first records deleted
    )


def test_a_log_that_starts_inside_the_newest_file_is_checked_at_its_last_line(
    tmp_path: Path,
) -> None:
    path = newest_file(tmp_path, [b"a", b"b", b"c", b"d"], 10, 14)
    check = NewestFileCheck(path, 10, 14, log_start=12)  # retention took 10 and 11
    assert (check.start, check.whole) == (14, False)
    assert check.take(12, b"whatever\n") is None  # before the check's start
    assert check.take(14, b"d\n") is None
    assert check.done
    check = NewestFileCheck(path, 10, 14, log_start=12)
    assert check.take(14, b"e\n") == "holds at offset 14 another result than its files"
    with pytest.raises(ValueError, match="starts at 15, after the file's last offset 14"):
        NewestFileCheck(path, 10, 14, log_start=15)
