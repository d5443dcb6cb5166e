"""Repeated client errors, said once per interval instead of once per attempt.

While the broker is away, aiokafka logs an ERROR line for every connection, fetch, metadata and
heartbeat attempt: about 1,900 lines in 40 s from one worker, which bury whatever else was said.
Each kind of warning or error line (its logger and message template) now passes once per
`interval_s`; the next one after that says how many like it were held back. When the trouble
stops, so that no next one comes, a timer says the count (`quiet_s` after the interval). A
process that exits first does not: its last line is then why it stopped, not a count. INFO and
DEBUG lines are untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

REPEAT_INTERVAL_S = 30.0
# How long after a kind's interval, with nothing of that kind passed since, its held-back count
# is said on its own: attempts repeat every second or so while the trouble lasts.
QUIET_S = 5.0
_SUMMARY = "kappa_repeat_summary"  # marks the limiter's own count lines, which always pass

Schedule = Callable[[float, Callable[[], None]], None]  # (delay s, callback)


def _daemon_timer(delay_s: float, callback: Callable[[], None]) -> None:
    timer = threading.Timer(delay_s, callback)
    timer.daemon = True  # never holds a process's exit
    timer.start()


@dataclass(slots=True)
class _Kind:
    passed_at: float  # when a line of this kind last passed
    held: int = 0  # lines held back since
    last_at: float = 0.0  # when the last of them came
    level: int = logging.ERROR
    message: str = ""  # the passed line's text, for a count said on its own


class RepeatLimiter(logging.Filter):
    """Passes a kind of record at most once per `interval_s` (clock in s)."""

    def __init__(
        self,
        interval_s: float = REPEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule = _daemon_timer,
        quiet_s: float = QUIET_S,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.quiet_s = quiet_s
        self.clock = clock
        self._schedule = schedule
        self._kinds: dict[tuple[str, object], _Kind] = {}
        self._lock = threading.Lock()  # the timer's thread and the logging threads
        self._timer_set = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:  # a rebalance's "Joined group" lines, and the like
            return True
        if getattr(record, _SUMMARY, False):
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        kind = (record.name, template)
        with self._lock:  # nothing inside calls out: no record's formatting, no thread start
            now = self.clock()
            seen = self._kinds.get(kind)
            hold = seen is not None and now - seen.passed_at < self.interval_s
            if seen is not None and hold:
                seen.held += 1
                seen.last_at = now
                start_timer, self._timer_set = not self._timer_set, True
            else:
                held, since = (seen.held, now - seen.passed_at) if seen is not None else (0, 0.0)
                passed = self._kinds[kind] = _Kind(now, level=record.levelno)
        if hold:
            if start_timer:
                self._start_timer(self.interval_s + self.quiet_s)
            return False
        passed.message = _text(record)
        if held:
            record.msg = f"{passed.message} ({held} more like this in the last {since:.0f}s)"
            record.args = ()  # not None: mode's formatter would make it (None,)
        return True

    def _start_timer(self, delay_s: float) -> None:
        try:
            self._schedule(delay_s, self.say_held)
        except Exception:  # no thread to be had: the counts go unsaid, the logging goes on
            with self._lock:
                self._timer_set = False

    def say_held(self) -> None:
        """Say the count of each kind held back and then quiet for `quiet_s` past its interval;
        the timer calls this."""
        with self._lock:
            now = self.clock()
            due = [
                (name, kind)
                for (name, _), kind in self._kinds.items()
                if kind.held and now - kind.passed_at >= self.interval_s + self.quiet_s
            ]
            lines = [
                (name, kind.level, kind.message, kind.held, kind.last_at - kind.passed_at)
                for name, kind in due
            ]
            for _, kind in due:
                kind.held = 0
            self._timer_set = again = any(kind.held for kind in self._kinds.values())
        if again:
            self._start_timer(self.interval_s)
        for name, level, message, held, span in lines:
            logging.getLogger(name).log(
                level,
                "%s (%d more like this in the %.0fs after it)",
                message,
                held,
                span,
                extra={_SUMMARY: True},
            )


def _text(record: logging.LogRecord) -> str:
    """The record's message; a record whose arguments do not fit its format stays as logging
    would have it (its handler reports the error), instead of raising here."""
    try:
        return record.getMessage()
    except Exception:
        return str(record.msg)


def limit_repeats(prefix: str = "aiokafka", limiter: RepeatLimiter | None = None) -> None:
    """Put one `RepeatLimiter` on every logger named `prefix` or `prefix.*` that exists now
    (a logger's filters do not apply to its children's records, so each gets it)."""
    limiter = limiter or RepeatLimiter()
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):  # a placeholder: no records of its own
            continue
        if name != prefix and not name.startswith(prefix + "."):
            continue
        if not any(isinstance(f, RepeatLimiter) for f in logger.filters):
            logger.addFilter(limiter)
