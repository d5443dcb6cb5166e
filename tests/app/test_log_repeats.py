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
