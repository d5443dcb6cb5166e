"""Stream time: per-partition max event time, watermark = max - grace, close on end <= watermark."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tables.stream_time import StreamTime
from tables.windows import Window


def test_fresh_stream_time_has_no_watermark_and_closes_nothing() -> None:
    clock = StreamTime(grace_ms=0)
    assert clock.max_event_ms is None
    assert clock.watermark is None
    assert not clock.is_closed(Window(-(10**15), -(10**15) + 1))


def test_watermark_is_max_event_time_minus_grace() -> None:
    clock = StreamTime(grace_ms=10)
    clock.observe(100)
    assert clock.max_event_ms == 100
    assert clock.watermark == 90


def test_zero_grace_watermark_is_the_max_event_time() -> None:
    clock = StreamTime(grace_ms=0)
    clock.observe(42)
    assert clock.watermark == 42


def test_out_of_order_events_do_not_move_the_watermark_back() -> None:
    clock = StreamTime(grace_ms=5)
    clock.observe(100)
    clock.observe(50)
    assert clock.max_event_ms == 100
    clock.observe(101)
    assert clock.watermark == 96


def test_negative_and_zero_event_times_are_observed() -> None:
    clock = StreamTime(grace_ms=0)
    clock.observe(-50)  # a first observation below zero must still set the max
    assert clock.max_event_ms == -50
    clock.observe(-60)
    assert clock.max_event_ms == -50
    clock.observe(0)
    assert clock.max_event_ms == 0
    clock.observe(-1)  # 0 is a real max, not "unset"
    assert clock.max_event_ms == 0


def test_window_closes_when_end_reaches_the_watermark() -> None:
    clock = StreamTime(grace_ms=10)
    clock.observe(100)  # watermark 90
    assert clock.is_closed(Window(80, 90))  # end == watermark: closed
    assert clock.is_closed(Window(0, 1))
    assert not clock.is_closed(Window(81, 91))  # end one past the watermark: open
    assert not clock.is_closed(Window(90, 100))


def test_grace_keeps_windows_open_past_their_end() -> None:
    clock = StreamTime(grace_ms=30)
    clock.observe(110)  # watermark 80
    assert not clock.is_closed(Window(0, 100))
    clock.observe(130)  # watermark 100
    assert clock.is_closed(Window(0, 100))


@settings(max_examples=200, deadline=None)
@given(
    grace=st.integers(0, 10**6),
    seen=st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=30),
    end=st.integers(-(10**12), 10**12),
)
def test_watermark_tracks_max_seen_and_closing_is_monotone(
    grace: int, seen: list[int], end: int
) -> None:
    clock = StreamTime(grace_ms=grace)
    window = Window(end - 1, end)
    was_closed = False
    for i, ts in enumerate(seen):
        clock.observe(ts)
        assert clock.max_event_ms == max(seen[: i + 1])
        assert clock.watermark == max(seen[: i + 1]) - grace
        closed = clock.is_closed(window)
        assert closed == (end <= max(seen[: i + 1]) - grace)
        assert closed or not was_closed  # once closed, never reopened
        was_closed = closed
