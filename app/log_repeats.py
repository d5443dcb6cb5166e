"""Repeated client errors, said once per interval instead of once per attempt.

While the broker is away, aiokafka logs an ERROR line for every connection, fetch, metadata and
heartbeat attempt: about 1,900 lines in 40 s from one worker, which bury whatever else was said.
Each kind of warning or error line (its logger and message template) now passes once per
`interval_s`; the next one after that says how many like it were held back. INFO and DEBUG
lines are untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPEAT_INTERVAL_S = 30.0


class RepeatLimiter(logging.Filter):
    """Passes a kind of record at most once per `interval_s` (clock in s)."""

    def __init__(
        self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._kinds: dict[tuple[str, object], tuple[float, int]] = {}  # → (passed at, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:  # a rebalance's "Joined group" lines, and the like
            return True
        kind = (record.name, record.msg)
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self.interval_s:
            self._kinds[kind] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            held, since = seen[1], now - seen[0]
            record.msg = f"{record.getMessage()} ({held} more like this in the last {since:.0f}s)"
            record.args = ()  # not None: mode's formatter would make it (None,)
        self._kinds[kind] = (now, 0)
        return True


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
