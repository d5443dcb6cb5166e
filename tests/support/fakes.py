"""Stand-ins for unit tests that run without a broker: a clock the test sets, and a fetched
record that has only what the batch buffer and the consumer's bookkeeping read."""

from __future__ import annotations

from dataclasses import dataclass


class ManualClock:
    """A monotonic clock (s) that moves only when the test sets `now`."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Msg:
    partition: int
    offset: int
