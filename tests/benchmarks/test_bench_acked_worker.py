"""The live worker's log of when each orders batch was written (acknowledged)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.acked_worker import read_acks


def test_the_log_is_read_as_forwards_are_and_a_cut_last_line_is_left_out(tmp_path: Path) -> None:
    log = tmp_path / "acks.log"
    log.write_text("0 41 1795391802.5\n3 7 1795391802.75\n2 19 17953")  # killed mid-line
    assert read_acks(str(log)) == [[0.0, 41.0, 1795391802.5], [3.0, 7.0, 1795391802.75]]
    assert read_acks(str(tmp_path / "none.log")) == []
