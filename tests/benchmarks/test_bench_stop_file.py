"""The harness tells its observer children to stop through a file; a half-written one must
neither kill a child nor be taken for a whole one."""

from __future__ import annotations

from pathlib import Path

from benchmarks.latency import write_stop_file
from benchmarks.tailer import read_targets


def test_a_missing_or_half_written_stop_file_is_not_yet_a_stop(tmp_path: Path) -> None:
    stop = tmp_path / "tail.stop"
    assert read_targets(stop) is None
    stop.write_text("")
    assert read_targets(stop) is None
    stop.write_text('{"0": 12, "1"')
    assert read_targets(stop) is None


def test_a_whole_stop_file_names_the_last_offset_per_partition(tmp_path: Path) -> None:
    stop = tmp_path / "tail.stop"
    write_stop_file(stop, '{"0": 12, "3": 7}')
    assert read_targets(stop) == {0: 12, 3: 7}
    assert [p.name for p in tmp_path.iterdir()] == ["tail.stop"]
