"""A client's error repeated on every attempt is said once per interval, with a count."""

from __future__ import annotations

import logging

import pytest

from app.log_repeats import RepeatLimiter, limit_repeats
from tests.support.fakes import ManualClock


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_kind_passes_once_per_interval_and_then_says_how_many_were_held_back() -> None:
    clock = ManualClock()
    limiter = RepeatLimiter(30.0, clock)
    said = []
    for second in range(0, 65):
        clock.now = float(second)
        record = _record("aiokafka.conn", "Unable connect to node with id %s: %s", 111, "refused")
        if limiter.filter(record):
            said.append(record.getMessage())
            if "more like" in said[-1]:  # not None: mode's formatter turns that into (None,)
                assert record.args == ()
    assert said == [
        "Unable connect to node with id 111: refused",
        "Unable connect to node with id 111: refused (29 more like this in the last 30s)",
        "Unable connect to node with id 111: refused (29 more like this in the last 30s)",
    ]


def test_kinds_are_limited_apart_by_logger_and_template() -> None:
    limiter = RepeatLimiter(30.0, ManualClock())
    kinds = [
        _record("aiokafka.conn", "Unable connect to node with id %s", 1),
        _record("aiokafka.conn", "Unable connect to node with id %s", 2),  # same kind
        _record("aiokafka.client", "Unable connect to node with id %s", 1),
        _record("aiokafka.conn", "Failed fetch messages from %s", 1),
    ]
    assert [limiter.filter(r) for r in kinds] == [True, False, True, True]


def test_every_existing_logger_under_the_prefix_gets_one_limiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A logger's filters do not see its children's records: each logger needs its own."""
    loggers = [logging.getLogger(n) for n in ("kappatest", "kappatest.a.b", "kappatestother")]
    for logger in loggers:
        monkeypatch.setattr(logger, "filters", [])
    limit_repeats("kappatest")
    limit_repeats("kappatest")  # again: not a second one
    counts = [sum(isinstance(f, RepeatLimiter) for f in lg.filters) for lg in loggers]
    assert counts == [1, 1, 0]
    assert not isinstance(logging.root.manager.loggerDict["kappatest.a"], logging.Logger)


def test_info_lines_are_never_held_back() -> None:
    """A second rebalance's "Joined group" within the interval must still be said."""
    limiter = RepeatLimiter(30.0, ManualClock())
    joined = [
        logging.LogRecord("aiokafka.consumer", logging.INFO, __file__, 1, "Joined group", (), None)
        for _ in range(3)
    ]
    assert [limiter.filter(r) for r in joined] == [True, True, True]


class _Timers:
    """The limiter's timer, run by hand: (delay s, callback) as scheduled."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, object]] = []

    def __call__(self, delay_s: float, callback: object) -> None:
        self.pending.append((delay_s, callback))

    def fire(self) -> None:
        _, callback = self.pending.pop(0)
        callback()  # type: ignore[operator]


def _unable(limiter: RepeatLimiter, clock: ManualClock, seconds: range) -> list[bool]:
    passed = []
    for second in seconds:
        clock.now = float(second)
        passed.append(limiter.filter(_record("aiokafka.conn", "Unable connect to %s", "node 1")))
    return passed


def test_a_count_held_back_when_the_trouble_stops_is_said_after_a_quiet_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker came back after 12 s: no 13th line of the kind ever comes to carry the
    count of the 11 held back, so the timer says it, once."""
    clock, timers = ManualClock(), _Timers()
    limiter = RepeatLimiter(30.0, clock, timers, quiet_s=5.0)
    assert _unable(limiter, clock, range(0, 12)) == [True] + [False] * 11
    assert [delay for delay, _ in timers.pending] == [35.0]  # one timer, however many held
    clock.now = 35.0
    with caplog.at_level(logging.WARNING, logger="aiokafka.conn"):
        timers.fire()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "Unable connect to node 1 (11 more like this in the 11s after it)")
    ]
    assert limiter.filter(caplog.records[0])  # the count line itself always passes
    assert not timers.pending  # nothing held any more
    assert _unable(limiter, clock, range(40, 41)) == [True]  # a new outage is said at once


def test_a_count_is_not_said_twice_when_the_trouble_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Still failing at 30 s: that line carries the 29 held back, and the timer says only the
    5 held back after it, once they are followed by quiet."""
    clock, timers = ManualClock(), _Timers()
    limiter = RepeatLimiter(30.0, clock, timers, quiet_s=5.0)
    assert _unable(limiter, clock, range(0, 36)).count(True) == 2  # at 0 s and at 30 s
    clock.now = 36.0
    with caplog.at_level(logging.WARNING, logger="aiokafka.conn"):
        while timers.pending:
            timers.fire()
            clock.now += 30.0
    assert [r.getMessage() for r in caplog.records] == [
        "Unable connect to node 1 (5 more like this in the 5s after it)"
    ]


def test_a_record_whose_arguments_do_not_fit_its_format_is_passed_on_not_raised() -> None:
    """Formatting is the handler's to fail (logging reports it); a filter that raised would
    throw into the client that logged."""
    limiter = RepeatLimiter(30.0, ManualClock())
    assert limiter.filter(_record("aiokafka.conn", "bad %d format", "x"))
    assert limiter.filter(logging.LogRecord("aiokafka.x", logging.ERROR, "", 1, {"a": 1}, (), None))


def test_no_thread_for_the_timer_leaves_logging_going_and_tries_again_later() -> None:
    clock = ManualClock()
    tries: list[float] = []

    def no_thread(delay_s: float, callback: object) -> None:
        tries.append(delay_s)
        raise RuntimeError("can't start new thread")

    limiter = RepeatLimiter(30.0, clock, no_thread, quiet_s=5.0)
    assert _unable(limiter, clock, range(0, 3)) == [True, False, False]
    assert tries == [35.0, 35.0]  # not marked as set when it could not start
