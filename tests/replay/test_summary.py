"""The replay's summary line: printed by each process, read back and summed over processes."""

from __future__ import annotations

from agents.base import BatchCounts
from replay.summary import ReplaySummary


def test_the_line_reads_back_as_the_same_summary() -> None:
    summary = ReplaySummary(3, events=22_000, windows=16_690, provisional=97, late=200, dlq=200)
    summary.seconds = 1.4
    line = summary.line()
    assert line == (
        "replay v3: 22,000 events, 16,690 windows closed, 97 provisional, 200 late, 200 DLQ "
        "in 1.4 s (15,714 events/s)"
    )
    assert ReplaySummary.parse(f"some output\n{line} across 2 processes\n") == summary
    assert ReplaySummary.parse("replay v3: nothing to do") is None


def test_closed_and_provisional_windows_are_counted_apart() -> None:
    summary = ReplaySummary(2)
    summary.add(BatchCounts(events=5, windows_closed=2))
    summary.add(BatchCounts(windows_provisional=3))
    other = ReplaySummary(2, events=1, windows=1, provisional=1, late=1, dlq=1, seconds=9.0)
    summary.add_summary(other)
    assert (summary.events, summary.windows, summary.provisional) == (6, 3, 4)
    assert (summary.late, summary.dlq, summary.seconds) == (1, 1, 0.0)


def test_a_resumed_replay_says_its_counts_are_this_runs_only() -> None:
    """A replay killed and run again counted only what the second run read, without a word."""
    summary = ReplaySummary(7, events=170_516, seconds=2.0, resumed=True)
    line = summary.line(" across 2 processes")
    assert line.endswith(
        "(85,258 events/s) across 2 processes; resumed: these count only what this run read"
    )
    assert ReplaySummary.parse(line) == summary
    fresh = ReplaySummary(7, events=1)
    fresh.add_summary(summary)
    assert fresh.resumed
