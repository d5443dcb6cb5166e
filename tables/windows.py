"""Event-time window definitions. All times are epoch milliseconds; windows are [start, end)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True, slots=True)
class Window:
    """A half-open event-time interval [start, end) in epoch ms."""

    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TumblingWindows:
    """Fixed, non-overlapping windows of `size_ms`, aligned to the epoch."""

    size_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"window size must be > 0 ms, got {self.size_ms}")

    @property
    def name(self) -> str:
        """Stable name used to derive store and topic names from the definition."""
        return f"tumbling-{self.size_ms}ms"

    @property
    def step_ms(self) -> int:
        return self.size_ms

    def assign(self, ts: int) -> list[Window]:
        start = ts - (ts % self.size_ms)
        return [Window(start, start + self.size_ms)]


@dataclass(frozen=True, slots=True)
class HoppingWindows:
    """Overlapping windows of `size_ms` starting every `step_ms` (epoch-aligned)."""

    size_ms: int
    step_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.step_ms <= 0:
            raise ValueError("window size and step must be > 0 ms")
        if self.step_ms > self.size_ms:
            raise ValueError("hopping step must not exceed the window size (gaps lose events)")

    @property
    def name(self) -> str:
        return f"hopping-{self.size_ms}ms-{self.step_ms}ms"

    def assign(self, ts: int) -> list[Window]:
        first_start = -(-(ts - self.size_ms + 1) // self.step_ms) * self.step_ms
        return [
            Window(start, start + self.size_ms)
            for start in range(first_start, ts + 1, self.step_ms)
        ]


@dataclass(frozen=True, slots=True)
class WindowsFrom:
    """`windows` without those starting before `since_ms` (a replay's `--since`): the same
    windows, so the same store name."""

    windows: HoppingWindows
    since_ms: int

    @property
    def name(self) -> str:
        return self.windows.name

    def assign(self, ts: int) -> list[Window]:
        return [w for w in self.windows.assign(ts) if w.start >= self.since_ms]

    def covers(self, ts: int) -> bool:
        """Whether any of the event's windows starts at or after `since_ms` (its last one
        starts at the step boundary at or before it)."""
        return ts - ts % self.windows.step_ms >= self.since_ms


WindowSpec = TumblingWindows | HoppingWindows | WindowsFrom
